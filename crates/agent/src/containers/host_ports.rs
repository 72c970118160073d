//! Pods' `hostPort`s forwarded to their addresses. The node's forwards
//! are one set, kept here and written whole by a [`HostPortDriver`]; each
//! pod's share is also in its record, so a restarted agent rewrites the
//! set from its records at once: rules of pods that are gone disappear.

use std::collections::BTreeMap;
use std::sync::Arc;

use wharf_api::{PodSpec, Protocol};
use wharf_net::{HostPortDriver, HostPortForward, NetError, PortProtocol};

use super::record::Address;

/// The node's host port forwards, by pod id.
pub(crate) struct HostPorts {
    /// `None`: the node forwards no ports, and pods asking are refused.
    driver: Option<Arc<dyn HostPortDriver>>,
    forwards: tokio::sync::Mutex<BTreeMap<String, Vec<HostPortForward>>>,
}

impl HostPorts {
    /// Forwards nothing.
    pub(crate) fn none() -> HostPorts {
        HostPorts {
            driver: None,
            forwards: Default::default(),
        }
    }

    /// Forwards through `driver`, starting from exactly `forwards` (the
    /// pods this node holds), which are written at once.
    pub(crate) async fn open(
        driver: Arc<dyn HostPortDriver>,
        forwards: BTreeMap<String, Vec<HostPortForward>>,
    ) -> Result<HostPorts, NetError> {
        driver.apply(&forwards).await?;
        Ok(HostPorts {
            driver: Some(driver),
            forwards: tokio::sync::Mutex::new(forwards),
        })
    }

    /// Makes `forwards` the pod's; the set is unchanged when that fails.
    pub(crate) async fn set(
        &self,
        pod_id: &str,
        forwards: &[HostPortForward],
    ) -> Result<(), String> {
        let mut all = self.forwards.lock().await;
        if all
            .get(pod_id)
            .map_or(forwards.is_empty(), |f| f == forwards)
        {
            return Ok(());
        }
        let Some(driver) = &self.driver else {
            return Err("this node does not forward host ports".into());
        };
        let mut wanted = all.clone();
        wanted.insert(pod_id.to_string(), forwards.to_vec());
        wanted.retain(|_, f| !f.is_empty());
        driver.apply(&wanted).await.map_err(|e| e.to_string())?;
        *all = wanted;
        Ok(())
    }

    /// Removes the pod's forwards; from the set even if writing it fails,
    /// so the next write (or agent start) leaves them out.
    pub(crate) async fn remove(&self, pod_id: &str) -> Result<(), String> {
        let mut all = self.forwards.lock().await;
        match (all.remove(pod_id), &self.driver) {
            (Some(_), Some(driver)) => driver.apply(&all).await.map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }
}

/// What `spec`'s `hostPort`s forward to the pod at `address`.
pub(crate) fn forwards_of(spec: &PodSpec, address: &Address) -> Vec<HostPortForward> {
    if spec.host_network {
        // The pod listens on the node itself.
        return Vec::new();
    }
    let mut forwards: Vec<HostPortForward> = spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|port| {
            Some(HostPortForward {
                protocol: match port.protocol {
                    Protocol::Tcp => PortProtocol::Tcp,
                    Protocol::Udp => PortProtocol::Udp,
                    Protocol::Sctp => PortProtocol::Sctp,
                },
                host_ip: port.host_ip,
                host_port: port.host_port?,
                pod_ip: address.ip,
                pod_prefix_len: address.prefix_len,
                container_port: port.container_port,
            })
        })
        .collect();
    forwards.sort();
    forwards
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::{Container, ContainerPort};
    use wharf_net::testing::MemoryHostPorts;

    fn address() -> Address {
        Address {
            ip: [10, 88, 0, 5].into(),
            prefix_len: 24,
            gateway: [10, 88, 0, 1].into(),
            pool: None,
        }
    }

    fn spec(ports: Vec<ContainerPort>) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "web".into(),
                ports,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn port(container_port: u16, host_port: Option<u16>, protocol: Protocol) -> ContainerPort {
        ContainerPort {
            container_port,
            host_port,
            protocol,
            ..Default::default()
        }
    }

    #[test]
    fn only_ports_with_a_host_port_are_forwarded() {
        let spec = spec(vec![
            port(80, Some(8080), Protocol::Tcp),
            port(81, None, Protocol::Tcp),
            port(53, Some(5353), Protocol::Udp),
        ]);
        let forwards = forwards_of(&spec, &address());
        let summary: Vec<_> = forwards
            .iter()
            .map(|f| (f.protocol, f.host_port, f.pod_ip, f.container_port))
            .collect();
        let pod = std::net::Ipv4Addr::new(10, 88, 0, 5);
        assert_eq!(
            summary,
            [
                (PortProtocol::Tcp, 8080, pod, 80),
                (PortProtocol::Udp, 5353, pod, 53)
            ]
        );
        let mut on_node = spec.clone();
        on_node.host_network = true;
        assert!(forwards_of(&on_node, &address()).is_empty());
    }

    #[tokio::test]
    async fn opening_rewrites_the_set_and_pods_change_only_their_share() {
        let driver = Arc::new(MemoryHostPorts::default());
        let web = forwards_of(&spec(vec![port(80, Some(8080), Protocol::Tcp)]), &address());
        let kept = BTreeMap::from([("aaa".to_string(), web.clone())]);
        let ports = HostPorts::open(driver.clone(), kept.clone()).await.unwrap();
        assert_eq!(driver.applied(), kept);

        ports.set("bbb", &web).await.unwrap();
        assert_eq!(driver.applied().len(), 2);
        ports.remove("aaa").await.unwrap();
        ports.remove("never-here").await.unwrap();
        assert_eq!(driver.applied(), BTreeMap::from([("bbb".to_string(), web)]));
    }

    #[tokio::test]
    async fn a_node_without_forwarding_refuses_host_ports() {
        let ports = HostPorts::none();
        ports.set("aaa", &[]).await.unwrap();
        ports.remove("aaa").await.unwrap();
        let web = forwards_of(&spec(vec![port(80, Some(8080), Protocol::Tcp)]), &address());
        let err = ports.set("aaa", &web).await.unwrap_err();
        assert!(err.contains("does not forward host ports"), "{err}");
    }
}
