//! How `get` and `describe` show Services and Endpoints, as kubectl does.

use wharf_api::{Endpoints, ProbePort, Protocol, Service, ServicePort};

use super::objects::none;
use crate::output::age;

/// kubectl's `get endpoints` shows this many addresses, then "+ N more".
const SHOWN_ENDPOINTS: usize = 3;

/// `TCP` or `UDP`.
fn protocol(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// `80/TCP,53/UDP`.
fn ports_text(ports: &[ServicePort]) -> String {
    if ports.is_empty() {
        return none();
    }
    let ports: Vec<String> = ports
        .iter()
        .map(|p| format!("{}/{}", p.port, protocol(p.protocol)))
        .collect();
    ports.join(",")
}

/// `app=web,tier=front`, or `<none>`.
pub fn selector_text(service: &Service) -> String {
    if service.spec.selector.is_empty() {
        return none();
    }
    let terms: Vec<String> = service
        .spec
        .selector
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    terms.join(",")
}

/// `NAME TYPE CLUSTER-IP PORT(S) AGE` and, wide, `SELECTOR`.
pub fn service_row(service: &Service, now_ms: u64) -> Vec<String> {
    vec![
        service.metadata.name.clone(),
        service
            .spec
            .service_type
            .clone()
            .unwrap_or_else(|| "ClusterIP".into()),
        service.spec.cluster_ip.clone().unwrap_or_else(none),
        ports_text(&service.spec.ports),
        age(now_ms, service.metadata.created_at),
        selector_text(service),
    ]
}

/// The ready `ip:port` pairs, in order.
pub fn ready_endpoints(endpoints: &Endpoints) -> Vec<String> {
    endpoints
        .subsets
        .iter()
        .flat_map(|subset| {
            subset.addresses.iter().flat_map(move |address| {
                subset
                    .ports
                    .iter()
                    .map(move |port| format!("{}:{}", address.ip, port.port))
            })
        })
        .collect()
}

/// At most a few endpoints, then how many more: `a:80,b:80 + 2 more...`.
pub fn endpoints_text(list: &[String]) -> String {
    match list.len() {
        0 => none(),
        n if n <= SHOWN_ENDPOINTS => list.join(","),
        n => format!(
            "{} + {} more...",
            list[..SHOWN_ENDPOINTS].join(","),
            n - SHOWN_ENDPOINTS
        ),
    }
}

/// `NAME ENDPOINTS AGE`.
pub fn endpoints_row(endpoints: &Endpoints, now_ms: u64) -> Vec<String> {
    vec![
        endpoints.metadata.name.clone(),
        endpoints_text(&ready_endpoints(endpoints)),
        age(now_ms, endpoints.metadata.created_at),
    ]
}

/// `describe svc`'s lines for one port: its name, the port, the target
/// port, and the endpoints serving it (ready ones only).
pub fn port_lines(port: &ServicePort, endpoints: Option<&Endpoints>) -> Vec<(String, String)> {
    let name = port.name.clone().unwrap_or_else(|| "<unset>".into());
    let target = match port.target() {
        ProbePort::Number(n) => n.to_string(),
        ProbePort::Name(name) => name,
    };
    let serving: Vec<String> = endpoints
        .map(|e| e.serving(port))
        .unwrap_or_default()
        .into_iter()
        .map(|(ip, port)| format!("{ip}:{port}"))
        .collect();
    let proto = protocol(port.protocol);
    vec![
        ("Port".into(), format!("{name} {}/{proto}", port.port)),
        ("TargetPort".into(), format!("{target}/{proto}")),
        ("Endpoints".into(), endpoints_text(&serving)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "createdAt": NOW - 120_000},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]},
        }))
        .unwrap()
    }

    fn endpoints(ips: &[&str]) -> Endpoints {
        let addresses: Vec<_> = ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "createdAt": NOW - 30_000},
            "subsets": [{"addresses": addresses, "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
            ]}],
        }))
        .unwrap()
    }

    #[test]
    fn service_rows_show_type_address_ports_and_selector() {
        assert_eq!(
            service_row(&service(), NOW),
            [
                "web",
                "ClusterIP",
                "10.96.0.10",
                "80/TCP,53/UDP",
                "2m",
                "app=web"
            ]
        );
    }

    #[test]
    fn endpoints_rows_show_a_few_addresses_then_how_many_more() {
        let row = endpoints_row(&endpoints(&["10.0.0.2"]), NOW);
        assert_eq!(row, ["web", "10.0.0.2:8080", "30s"]);
        let many = endpoints(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        assert_eq!(
            endpoints_row(&many, NOW)[1],
            "10.0.0.2:8080,10.0.0.3:8080,10.0.0.4:8080 + 1 more..."
        );
        assert_eq!(endpoints_row(&endpoints(&[]), NOW)[1], "<none>");
    }

    #[test]
    fn describe_names_each_port_with_its_endpoints() {
        let service = service();
        let endpoints = endpoints(&["10.0.0.2"]);
        let http = port_lines(&service.spec.ports[0], Some(&endpoints));
        assert_eq!(http[0].1, "http 80/TCP");
        assert_eq!(http[1].1, "http/TCP");
        assert_eq!(http[2].1, "10.0.0.2:8080");
        let dns = port_lines(&service.spec.ports[1], Some(&endpoints));
        assert_eq!(dns[1].1, "53/UDP");
        assert_eq!(dns[2].1, "<none>");
    }
}
