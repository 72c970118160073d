//! Services: the Kubernetes `v1` shape, `type: ClusterIP` only. A Service
//! gives the ready pods its selector matches one stable virtual address
//! (the cluster IP) per port; every node forwards that address to them.
//! Fields that would expose the service outside the cluster (`NodePort`,
//! `LoadBalancer`, `externalIPs`, ...) are refused naming the field rather
//! than ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{ObjectMeta, check_labels, check_name};
use crate::{ObjectError, ProbePort, Protocol};

/// `spec.clusterIP` of a headless service: no virtual address.
pub const CLUSTER_IP_NONE: &str = "None";

/// Longest port name, as Kubernetes' IANA service names.
const MAX_PORT_NAME: usize = 15;

/// A stable address in front of the pods a selector matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `v1`.
    #[serde(default = "core_v1")]
    pub api_version: String,
    /// `Service`.
    #[serde(default = "service_kind")]
    pub kind: String,
    /// Name, project, labels, annotations.
    pub metadata: ObjectMeta,
    /// Selector, ports and address.
    #[serde(default)]
    pub spec: ServiceSpec,
}

/// What a service offers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (the default); other types are refused.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// Labels a pod must carry to back the service; empty selects nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The ports offered on the cluster IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// The virtual address: empty to have one allocated, `None` for a
    /// headless service, or a free address of the service range.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// `None` (the default); `ClientIP` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    /// Refused: no address outside the cluster is forwarded.
    #[serde(default, rename = "externalIPs", skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<String>,
    /// Refused: there is no load balancer.
    #[serde(
        default,
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,
    /// Refused: only cluster traffic is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    /// Refused: `ExternalName` services are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
}

/// One port of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when the service has more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The port on the cluster IP.
    pub port: i64,
    /// The pods' port: a number, or a container port's name resolved per
    /// pod; `port` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<ProbePort>,
    /// Refused: only `ClusterIP` services exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i64>,
}

/// How a service's `clusterIP` is to be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterIpRequest {
    /// Allocate a free address of the service range.
    Allocate,
    /// Headless: no virtual address.
    Headless,
    /// This address, if free and in range.
    Fixed(Ipv4Addr),
}

fn core_v1() -> String {
    "v1".into()
}

fn service_kind() -> String {
    "Service".into()
}

impl Service {
    /// Checks the name, labels, selector and spec, naming the field that
    /// Wharf cannot honour.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        if !self
            .metadata
            .name
            .starts_with(|c: char| c.is_ascii_lowercase())
        {
            return Err(ObjectError::invalid(
                "metadata.name",
                "a service name starts with a letter (it becomes a DNS label)",
            ));
        }
        check_labels("metadata.labels", &self.metadata.labels)?;
        check_labels("spec.selector", &self.spec.selector)?;
        self.spec.validate()
    }

    /// The allocated virtual address; `None` while unallocated or headless.
    pub fn cluster_ip(&self) -> Option<Ipv4Addr> {
        self.spec.cluster_ip.as_deref()?.parse().ok()
    }
}

impl ServiceSpec {
    fn validate(&self) -> Result<(), ObjectError> {
        self.refuse_outside_exposure()?;
        if let Some(affinity) = self.session_affinity.as_deref()
            && affinity != "None"
        {
            return Err(ObjectError::invalid(
                "spec.sessionAffinity",
                format!(
                    "{affinity} is not supported: connections are balanced per connection; use None"
                ),
            ));
        }
        self.cluster_ip_request()?;
        if self.ports.is_empty() && self.cluster_ip_request()? != ClusterIpRequest::Headless {
            return Err(ObjectError::invalid(
                "spec.ports",
                "a service with a cluster IP needs at least one port",
            ));
        }
        self.validate_ports()
    }

    fn refuse_outside_exposure(&self) -> Result<(), ObjectError> {
        let unsupported = |field: &str| {
            Err(ObjectError::invalid(
                field,
                "not supported: Wharf services are reachable inside the cluster only (type ClusterIP)",
            ))
        };
        match self.service_type.as_deref() {
            None | Some("ClusterIP") => {}
            Some(other) => {
                return Err(ObjectError::invalid(
                    "spec.type",
                    format!("{other} is not supported; Wharf offers type ClusterIP only"),
                ));
            }
        }
        if !self.external_ips.is_empty() {
            return unsupported("spec.externalIPs");
        }
        if self.load_balancer_ip.is_some() {
            return unsupported("spec.loadBalancerIP");
        }
        if self.external_traffic_policy.is_some() {
            return unsupported("spec.externalTrafficPolicy");
        }
        if self.external_name.is_some() {
            return unsupported("spec.externalName");
        }
        Ok(())
    }

    /// What `clusterIP` asks for.
    pub fn cluster_ip_request(&self) -> Result<ClusterIpRequest, ObjectError> {
        match self.cluster_ip.as_deref().map(str::trim) {
            None | Some("") => Ok(ClusterIpRequest::Allocate),
            Some(CLUSTER_IP_NONE) => Ok(ClusterIpRequest::Headless),
            Some(text) => text.parse().map(ClusterIpRequest::Fixed).map_err(|_| {
                ObjectError::invalid(
                    "spec.clusterIP",
                    format!("{text:?} is not an IPv4 address, empty, or None"),
                )
            }),
        }
    }

    fn validate_ports(&self) -> Result<(), ObjectError> {
        let mut names = BTreeSet::new();
        let mut offered = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let field = format!("spec.ports[{i}]");
            port.validate(&field)?;
            match port.name.as_deref() {
                Some(name) if !names.insert(name) => {
                    return Err(ObjectError::invalid(
                        format!("{field}.name"),
                        format!("{name} names two ports"),
                    ));
                }
                None if self.ports.len() > 1 => {
                    return Err(ObjectError::invalid(
                        format!("{field}.name"),
                        "required when a service has more than one port",
                    ));
                }
                _ => {}
            }
            if !offered.insert((port.port, port.protocol)) {
                return Err(ObjectError::invalid(
                    format!("{field}.port"),
                    format!("{} {:?} is offered twice", port.port, port.protocol),
                ));
            }
        }
        Ok(())
    }
}

impl ServicePort {
    fn validate(&self, field: &str) -> Result<(), ObjectError> {
        if let Some(name) = &self.name {
            check_port_name(&format!("{field}.name"), name)?;
        }
        if self.protocol == Protocol::Sctp {
            return Err(ObjectError::invalid(
                format!("{field}.protocol"),
                "SCTP is not supported; use TCP or UDP",
            ));
        }
        if !(1..=65535).contains(&self.port) {
            return Err(ObjectError::invalid(
                format!("{field}.port"),
                format!("{} is not a port (1-65535)", self.port),
            ));
        }
        match &self.target_port {
            Some(ProbePort::Number(n)) if !(1..=65535).contains(n) => {
                return Err(ObjectError::invalid(
                    format!("{field}.targetPort"),
                    format!("{n} is not a port (1-65535)"),
                ));
            }
            Some(ProbePort::Name(name)) => check_port_name(&format!("{field}.targetPort"), name)?,
            _ => {}
        }
        if self.node_port.is_some() {
            return Err(ObjectError::invalid(
                format!("{field}.nodePort"),
                "not supported: Wharf services are reachable inside the cluster only (type ClusterIP)",
            ));
        }
        Ok(())
    }

    /// The pods' port as given: `targetPort`, else `port`.
    pub fn target(&self) -> ProbePort {
        self.target_port
            .clone()
            .unwrap_or(ProbePort::Number(self.port))
    }
}

/// A port name: lowercase letters, digits and inner dashes, at most 15.
fn check_port_name(field: &str, name: &str) -> Result<(), ObjectError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_PORT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().any(|b| b.is_ascii_lowercase());
    if valid {
        Ok(())
    } else {
        Err(ObjectError::invalid(
            field,
            format!(
                "{name:?} is not a port name (lowercase letters, digits and dashes, \
                 at most {MAX_PORT_NAME}, with a letter)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        serde_norway::from_str(yaml).unwrap()
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
"#;

    fn error_of(yaml: &str) -> String {
        service(yaml).validate().unwrap_err().to_string()
    }

    #[test]
    fn reads_a_kubernetes_service() {
        let web = service(WEB);
        web.validate().unwrap();
        assert_eq!(web.spec.ports[0].target(), ProbePort::Name("http".into()));
        assert_eq!(web.spec.ports[1].protocol, Protocol::Udp);
        assert_eq!(
            web.spec.cluster_ip_request().unwrap(),
            ClusterIpRequest::Allocate
        );
        let plain = service("metadata: {name: db}\nspec: {ports: [{port: 5432}]}");
        plain.validate().unwrap();
        assert_eq!(plain.spec.ports[0].target(), ProbePort::Number(5432));
    }

    #[test]
    fn cluster_ip_may_be_asked_for_or_headless() {
        let fixed = WEB.replace("  selector:", "  clusterIP: 10.96.0.10\n  selector:");
        assert_eq!(
            service(&fixed).spec.cluster_ip_request().unwrap(),
            ClusterIpRequest::Fixed(Ipv4Addr::new(10, 96, 0, 10))
        );
        let headless = "metadata: {name: db}\nspec: {clusterIP: None, selector: {app: db}}";
        service(headless).validate().unwrap();
        assert_eq!(
            service(headless).spec.cluster_ip_request().unwrap(),
            ClusterIpRequest::Headless
        );
        let bad = WEB.replace("  selector:", "  clusterIP: 10.96.0\n  selector:");
        assert!(error_of(&bad).starts_with("spec.clusterIP:"));
    }

    #[test]
    fn refuses_what_reaches_outside_the_cluster_naming_the_field() {
        for (insert, field) in [
            ("  type: NodePort\n", "spec.type"),
            ("  type: LoadBalancer\n", "spec.type"),
            ("  type: ExternalName\n", "spec.type"),
            ("  externalIPs: [192.0.2.1]\n", "spec.externalIPs"),
            ("  loadBalancerIP: 192.0.2.1\n", "spec.loadBalancerIP"),
            (
                "  externalTrafficPolicy: Local\n",
                "spec.externalTrafficPolicy",
            ),
            ("  sessionAffinity: ClientIP\n", "spec.sessionAffinity"),
        ] {
            let text = WEB.replace("  selector:", &format!("{insert}  selector:"));
            let err = error_of(&text);
            assert!(err.starts_with(&format!("{field}:")), "{insert}: {err}");
        }
        let node_port = WEB.replace("port: 80,", "port: 80, nodePort: 30080,");
        assert!(error_of(&node_port).starts_with("spec.ports[0].nodePort:"));
        let affinity = WEB.replace("  selector:", "  sessionAffinity: None\n  selector:");
        service(&affinity).validate().unwrap();
    }

    #[test]
    fn refuses_bad_ports() {
        for (from, to, field) in [
            ("port: 80,", "port: 0,", "spec.ports[0].port"),
            ("port: 80,", "port: 65536,", "spec.ports[0].port"),
            (
                "targetPort: 5353",
                "targetPort: 70000",
                "spec.ports[1].targetPort",
            ),
            (
                "targetPort: http",
                "targetPort: Http",
                "spec.ports[0].targetPort",
            ),
            ("name: dns", "name: http", "spec.ports[1].name"),
            ("{name: dns, ", "{", "spec.ports[1].name"),
            ("protocol: UDP", "protocol: SCTP", "spec.ports[1].protocol"),
            ("port: 53, protocol: UDP", "port: 80", "spec.ports[1].port"),
        ] {
            let err = error_of(&WEB.replace(from, to));
            assert!(err.starts_with(&format!("{field}:")), "{to}: {err}");
        }
        let no_ports = "metadata: {name: db}\nspec: {selector: {app: db}}";
        assert!(error_of(no_ports).starts_with("spec.ports:"));
        // The same number on TCP and UDP is two ports.
        let both = WEB.replace("port: 53, protocol: UDP", "port: 80, protocol: UDP");
        service(&both).validate().unwrap();
    }

    #[test]
    fn a_service_name_is_a_dns_label() {
        let err = error_of(&WEB.replace("name: web,", "name: 1web,"));
        assert!(err.starts_with("metadata.name:"), "{err}");
    }
}
