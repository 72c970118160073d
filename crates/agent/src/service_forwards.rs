//! What a node forwards for services: each port of each service with a
//! cluster IP, to the ready endpoints its `Endpoints` lists for that port.
//! Pure, so the agent's rule writer is tested without a cluster.

use std::net::Ipv4Addr;

use wharf_api::{Endpoints, Protocol, Service};
use wharf_net::PortProtocol;
use wharf_net::services::ServiceForward;

/// The forwards of `services`, given the cluster's `endpoints`; sorted,
/// so an unchanged cluster gives the same rules. Headless services and
/// SCTP ports (refused by validation anyway) forward nothing.
pub fn service_forwards(services: &[Service], endpoints: &[Endpoints]) -> Vec<ServiceForward> {
    let mut forwards = Vec::new();
    for service in services {
        let Some(cluster_ip) = service.cluster_ip() else {
            continue;
        };
        let meta = &service.metadata;
        let backing = endpoints
            .iter()
            .find(|e| e.metadata.name == meta.name && e.metadata.project == meta.project);
        for port in &service.spec.ports {
            let protocol = match port.protocol {
                Protocol::Tcp => PortProtocol::Tcp,
                Protocol::Udp => PortProtocol::Udp,
                Protocol::Sctp => continue,
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let mut targets: Vec<(Ipv4Addr, u16)> = backing
                .map(|e| e.serving(port))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(ip, port)| Some((ip.parse().ok()?, port)))
                .collect();
            targets.sort();
            forwards.push(ServiceForward {
                name: format!(
                    "{}/{}:{number}",
                    meta.project.as_deref().unwrap_or_default(),
                    meta.name
                ),
                protocol,
                cluster_ip,
                port: number,
                endpoints: targets,
            });
        }
    }
    forwards.sort();
    forwards
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(cluster_ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "project": "shop"},
            "spec": {"clusterIP": cluster_ip, "selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]},
        }))
        .unwrap()
    }

    fn endpoints() -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "project": "shop"},
            "subsets": [
                {"addresses": [{"ip": "10.95.0.3"}, {"ip": "10.95.0.2"}],
                 "notReadyAddresses": [{"ip": "10.95.0.9"}],
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                           {"name": "dns", "port": 53, "protocol": "UDP"}]},
                {"addresses": [{"ip": "10.95.0.4"}],
                 "ports": [{"name": "http", "port": 8081, "protocol": "TCP"}]},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn each_port_goes_to_the_ready_addresses_serving_it() {
        let forwards = service_forwards(&[service("10.195.0.10")], &[endpoints()]);
        let ip = |last| Ipv4Addr::new(10, 95, 0, last);
        let http = forwards.iter().find(|f| f.port == 80).unwrap();
        assert_eq!(http.protocol, PortProtocol::Tcp);
        assert_eq!(http.name, "shop/web:80");
        assert_eq!(
            http.endpoints,
            [(ip(2), 8080), (ip(3), 8080), (ip(4), 8081)]
        );
        let dns = forwards.iter().find(|f| f.port == 53).unwrap();
        assert_eq!(dns.protocol, PortProtocol::Udp);
        assert_eq!(dns.endpoints, [(ip(2), 53), (ip(3), 53)]);
    }

    #[test]
    fn headless_services_and_services_without_endpoints() {
        assert!(service_forwards(&[service("None")], &[endpoints()]).is_empty());
        let alone = service_forwards(&[service("10.195.0.10")], &[]);
        assert_eq!(alone.len(), 2);
        assert!(alone.iter().all(|f| f.endpoints.is_empty()));
    }
}
