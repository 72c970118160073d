//! What the scheduler knows about a node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::{Resources, Taint};

/// Label naming the service pool a node belongs to.
pub const POOL_LABEL: &str = "wharf.io/pool";
/// Label naming the data centre a node is in; replicas spread over its values.
pub const IDC_LABEL: &str = "wharf.io/idc";
/// Label telling where the machine comes from: `physical`, `vm` or `cloud`.
pub const CLUSTER_KIND_LABEL: &str = "wharf.io/cluster-kind";
/// Label with an integer machine class: higher is newer or bigger; missing is 0.
pub const MACHINE_CLASS_LABEL: &str = "wharf.io/machine-class";

/// Transport protocol of a host port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A port bound on the node's own network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// Protocol; the same number under two protocols does not conflict.
    pub protocol: Protocol,
    /// Port number.
    pub port: u16,
}

impl HostPort {
    /// A TCP host port.
    pub fn tcp(port: u16) -> Self {
        HostPort {
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// A UDP host port.
    pub fn udp(port: u16) -> Self {
        HostPort {
            protocol: Protocol::Udp,
            port,
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        };
        write!(f, "{}/{protocol}", self.port)
    }
}

/// A node as the control plane reports it.
///
/// The usage fields (`allocated`, `host_ports`, `owners`) describe the pods
/// the control plane already counts on the node; pods recorded later with
/// [`Snapshot::assume`](crate::Snapshot::assume) come on top.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Unique node name; ties between equal scores go to the smaller name.
    pub name: String,
    /// Whether the agent reports the node healthy.
    pub ready: bool,
    /// `false` when cordoned: no new pods, running ones stay.
    pub schedulable: bool,
    /// Labels, including the well-known `wharf.io/*` ones.
    pub labels: BTreeMap<String, String>,
    /// Taints, in the order the explanation should name them.
    pub taints: Vec<Taint>,
    /// What the node offers to pods.
    pub capacity: Resources,
    /// Sum of the requests of the pods already on the node.
    pub allocated: Resources,
    /// Host ports in use by the pods already on the node.
    pub host_ports: BTreeSet<HostPort>,
    /// Digests of the layers in the node's cache; `None` when the node has
    /// no current report, which makes its image locality neutral.
    pub layers: Option<BTreeSet<String>>,
    /// Replicas already on the node, per owner (deployment identity).
    pub owners: BTreeMap<String, u32>,
    /// Live cpu busy in `0.0..=1.0`, when the agent reports it.
    pub load: Option<f32>,
    /// The 1-minute load average (not divided by cores), when the agent
    /// reports it; scored per core of `capacity`.
    pub load_average: Option<f32>,
}

impl NodeInfo {
    /// A ready, schedulable, empty node with the given capacity.
    pub fn new(name: impl Into<String>, capacity: Resources) -> Self {
        NodeInfo {
            name: name.into(),
            ready: true,
            schedulable: true,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            capacity,
            allocated: Resources::ZERO,
            host_ports: BTreeSet::new(),
            layers: None,
            owners: BTreeMap::new(),
            load: None,
            load_average: None,
        }
    }

    /// The same node with one more label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The same node with one more taint.
    pub fn with_taint(mut self, taint: Taint) -> Self {
        self.taints.push(taint);
        self
    }

    /// The same node reporting these layers in its cache (added to any
    /// it reported before).
    pub fn with_layers<S: Into<String>>(mut self, digests: impl IntoIterator<Item = S>) -> Self {
        self.layers
            .get_or_insert_with(BTreeSet::new)
            .extend(digests.into_iter().map(Into::into));
        self
    }

    /// The same node reporting cpu busy `load` (`0.0..=1.0`).
    pub fn with_load(mut self, load: f32) -> Self {
        self.load = Some(load);
        self
    }

    /// The service pool (`wharf.io/pool`), if labelled.
    pub fn pool(&self) -> Option<&str> {
        self.labels.get(POOL_LABEL).map(String::as_str)
    }

    /// The data centre (`wharf.io/idc`), if labelled.
    pub fn idc(&self) -> Option<&str> {
        self.labels.get(IDC_LABEL).map(String::as_str)
    }

    /// The machine class (`wharf.io/machine-class`); missing or not an
    /// unsigned integer counts as 0, the oldest class.
    pub fn machine_class(&self) -> u32 {
        self.labels
            .get(MACHINE_CLASS_LABEL)
            .and_then(|class| class.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_class_defaults_to_zero() {
        let node = NodeInfo::new("n", Resources::ZERO);
        assert_eq!(node.machine_class(), 0);
        assert_eq!(
            node.clone()
                .with_label(MACHINE_CLASS_LABEL, "7")
                .machine_class(),
            7
        );
        assert_eq!(
            node.with_label(MACHINE_CLASS_LABEL, "new").machine_class(),
            0
        );
    }

    #[test]
    fn host_port_displays_number_and_protocol() {
        assert_eq!(HostPort::tcp(80).to_string(), "80/tcp");
        assert_eq!(HostPort::udp(53).to_string(), "53/udp");
    }
}
