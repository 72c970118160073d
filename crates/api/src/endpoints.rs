//! Endpoints: where a service's traffic goes, in the Kubernetes `v1`
//! shape. [`Endpoints::compute`] is the whole rule — the pods a selector
//! matches, each with its address and its own resolution of named target
//! ports, split by readiness — so the controller only stores its result.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ObjectMeta, ObjectReference, Pod, PodPhase, Protocol, Service, ServicePort};

/// The addresses behind one service, as its controller last saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `v1`.
    #[serde(default = "core_v1")]
    pub api_version: String,
    /// `Endpoints`.
    #[serde(default = "endpoints_kind")]
    pub kind: String,
    /// Same name and project as the service.
    pub metadata: ObjectMeta,
    /// Groups of addresses sharing the same resolved ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<EndpointSubset>,
}

/// Addresses that serve the same ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    /// Ready pods: traffic goes to these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    /// Matching pods that are not ready: no traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// The service's ports, resolved for these pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// One pod behind a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    /// The pod's IP.
    pub ip: String,
    /// The pod's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// A service port as the pods of a subset serve it.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// The service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pods' port.
    pub port: u16,
    /// `TCP` or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

fn core_v1() -> String {
    "v1".into()
}

fn endpoints_kind() -> String {
    "Endpoints".into()
}

impl Endpoints {
    /// The endpoints of `service` among `pods`: pods of its project that
    /// its (non-empty) selector matches, that have an address and are
    /// neither finished nor terminating. A named target port is resolved
    /// in each pod's containers; a pod lacking the name does not serve that
    /// port. Sorted, so an unchanged set compares equal.
    pub fn compute(service: &Service, pods: &[Pod]) -> Endpoints {
        let mut groups: BTreeMap<Vec<EndpointPort>, EndpointSubset> = BTreeMap::new();
        for pod in pods.iter().filter(|p| backs(service, p)) {
            let ports = resolve_ports(service, pod);
            let Some(ip) = pod.status.pod_ip.clone().filter(|_| !ports.is_empty()) else {
                continue;
            };
            let address = EndpointAddress {
                ip,
                node_name: pod.spec.node_name.clone(),
                target_ref: Some(ObjectReference {
                    kind: "Pod".into(),
                    project: pod.metadata.project.clone(),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            };
            let subset = groups.entry(ports.clone()).or_default();
            subset.ports = ports;
            if pod.status.is_ready() {
                subset.addresses.push(address);
            } else {
                subset.not_ready_addresses.push(address);
            }
        }
        let mut subsets: Vec<EndpointSubset> = groups.into_values().collect();
        for subset in &mut subsets {
            subset.addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
            subset.not_ready_addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
        Endpoints {
            api_version: core_v1(),
            kind: endpoints_kind(),
            metadata: ObjectMeta {
                name: service.metadata.name.clone(),
                project: service.metadata.project.clone(),
                labels: service.metadata.labels.clone(),
                ..ObjectMeta::default()
            },
            subsets,
        }
    }

    /// The ready addresses serving service port `port` (same name and
    /// protocol), each with the pod's port.
    pub fn serving(&self, port: &ServicePort) -> Vec<(&str, u16)> {
        let mut serving = Vec::new();
        for subset in &self.subsets {
            let served = subset
                .ports
                .iter()
                .find(|p| p.name == port.name && p.protocol == port.protocol);
            if let Some(served) = served {
                serving.extend(
                    subset
                        .addresses
                        .iter()
                        .map(|a| (a.ip.as_str(), served.port)),
                );
            }
        }
        serving
    }

    /// How many ready addresses there are, over all subsets.
    pub fn ready_count(&self) -> usize {
        self.subsets.iter().map(|s| s.addresses.len()).sum()
    }
}

/// Whether `pod` counts for `service`: same project, matched by a
/// non-empty selector, still running or about to.
fn backs(service: &Service, pod: &Pod) -> bool {
    let selector = &service.spec.selector;
    !selector.is_empty()
        && pod.metadata.project == service.metadata.project
        && !pod.metadata.is_terminating()
        && !matches!(pod.status.phase, PodPhase::Succeeded | PodPhase::Failed)
        && selector
            .iter()
            .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
}

/// The service's ports as `pod` serves them, sorted.
fn resolve_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let container_ports: Vec<_> = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().cloned())
        .collect();
    let mut ports: Vec<EndpointPort> = service
        .spec
        .ports
        .iter()
        .filter_map(|port| {
            Some(EndpointPort {
                name: port.name.clone(),
                port: port.target().resolve(&container_ports)?,
                protocol: port.protocol,
            })
        })
        .collect();
    ports.sort();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContainerPort, PodCondition};

    fn service() -> Service {
        serde_norway::from_str(
            "metadata: {name: web, project: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 9000}",
        )
        .unwrap()
    }

    fn pod(name: &str, ip: &str, http_port: Option<u16>, ready: bool) -> Pod {
        let mut pod: Pod = serde_norway::from_str(&format!(
            "metadata: {{name: {name}, project: shop, labels: {{app: web}}}}
spec: {{containers: [{{name: web, image: web}}], nodeName: n1}}"
        ))
        .unwrap();
        if let Some(port) = http_port {
            pod.spec.containers[0].ports.push(ContainerPort {
                name: Some("http".into()),
                container_port: port,
                ..ContainerPort::default()
            });
        }
        pod.status.pod_ip = Some(ip.into());
        pod.status.phase = PodPhase::Running;
        pod.status.conditions.push(PodCondition {
            kind: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..PodCondition::default()
        });
        pod
    }

    fn ips(addresses: &[EndpointAddress]) -> Vec<&str> {
        addresses.iter().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_pods_serve_named_ports_resolved_per_pod() {
        let pods = [
            pod("a", "10.0.0.2", Some(8080), true),
            pod("b", "10.0.0.3", Some(8080), false),
            pod("c", "10.0.0.4", Some(8081), true),
            pod("d", "10.0.0.5", None, true),
        ];
        let endpoints = Endpoints::compute(&service(), &pods);
        assert_eq!(endpoints.metadata.name, "web");
        assert_eq!(endpoints.ready_count(), 3);
        let by_http: BTreeMap<Option<u16>, &EndpointSubset> = endpoints
            .subsets
            .iter()
            .map(|s| {
                let http = s.ports.iter().find(|p| p.name.as_deref() == Some("http"));
                (http.map(|p| p.port), s)
            })
            .collect();
        assert_eq!(ips(&by_http[&Some(8080)].addresses), ["10.0.0.2"]);
        assert_eq!(ips(&by_http[&Some(8080)].not_ready_addresses), ["10.0.0.3"]);
        assert_eq!(ips(&by_http[&Some(8081)].addresses), ["10.0.0.4"]);
        // Without the named port, the pod serves only the numbered one.
        assert_eq!(ips(&by_http[&None].addresses), ["10.0.0.5"]);
        assert_eq!(by_http[&None].ports.len(), 1);
        assert_eq!(by_http[&None].ports[0].port, 9000);
        let http = endpoints.serving(&service().spec.ports[0]);
        assert_eq!(http, [("10.0.0.2", 8080), ("10.0.0.4", 8081)]);
        assert_eq!(endpoints.serving(&service().spec.ports[1]).len(), 3);
    }

    #[test]
    fn others_pods_and_pods_going_away_are_left_out() {
        let mut other_project = pod("a", "10.0.0.2", Some(8080), true);
        other_project.metadata.project = Some("other".into());
        let mut other_app = pod("b", "10.0.0.3", Some(8080), true);
        other_app.metadata.labels.insert("app".into(), "db".into());
        let mut terminating = pod("c", "10.0.0.4", Some(8080), true);
        terminating.metadata.deletion_timestamp = Some(1);
        let mut finished = pod("d", "10.0.0.5", Some(8080), true);
        finished.status.phase = PodPhase::Succeeded;
        let mut no_ip = pod("e", "10.0.0.6", Some(8080), true);
        no_ip.status.pod_ip = None;
        let pods = [other_project, other_app, terminating, finished, no_ip];
        assert!(Endpoints::compute(&service(), &pods).subsets.is_empty());
        let mut selects_nothing = service();
        selects_nothing.spec.selector.clear();
        let ready = [pod("a", "10.0.0.2", Some(8080), true)];
        assert!(
            Endpoints::compute(&selects_nothing, &ready)
                .subsets
                .is_empty()
        );
    }

    #[test]
    fn the_order_of_pods_does_not_matter() {
        let a = pod("a", "10.0.0.2", Some(8080), true);
        let b = pod("b", "10.0.0.3", Some(8080), true);
        assert_eq!(
            Endpoints::compute(&service(), &[a.clone(), b.clone()]),
            Endpoints::compute(&service(), &[b, a])
        );
    }
}
