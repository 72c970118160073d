//! What the scheduler needs to know about a pod.

use std::collections::BTreeMap;

use crate::{HostPort, NodeAffinity, Resources, Toleration};

/// A pod to place, reduced to what placement depends on.
///
/// ```
/// use wharf_scheduler::{PodInfo, Toleration};
/// let pod = PodInfo::new(250, 512 << 20)
///     .with_selector("wharf.io/pool", "web")
///     .with_toleration(Toleration::exists("dedicated"))
///     .with_owner("shop/web")
///     .with_layer("sha256:4f2a...", 30 << 20);
/// assert_eq!(pod.requests.pods, 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    /// Sum of the containers' requests; `pods` is normally 1.
    pub requests: Resources,
    /// Labels a node must carry with exactly these values.
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates.
    pub tolerations: Vec<Toleration>,
    /// Host ports the pod binds.
    pub host_ports: Vec<HostPort>,
    /// The layers of the pod's images (digest, size in bytes), when the
    /// control plane could resolve them; `None` (an image hosted
    /// elsewhere) makes image locality neutral on every node.
    pub layers: Option<Vec<(String, u64)>>,
    /// Deployment identity; replicas of one owner spread over nodes and IDCs.
    pub owner: Option<String>,
    /// Core service: prefers newer machine classes, where others prefer older.
    pub critical: bool,
    /// The one node the pod may go to, if any: where its volumes' data
    /// lives (a claim bound to that node).
    pub required_node: Option<String>,
    /// Labels the pod requires or prefers on its node (node affinity and
    /// the `wharf.io/tier` annotation).
    pub affinity: NodeAffinity,
    /// The project the pod belongs to, for pool grants and quotas.
    pub project: Option<String>,
}

impl PodInfo {
    /// A pod requesting this much cpu and memory and one pod slot.
    pub fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        PodInfo {
            requests: Resources::new(cpu_millis, memory_bytes, 1),
            ..PodInfo::default()
        }
    }

    /// The same pod requiring one more node label.
    pub fn with_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// The same pod with one more toleration.
    pub fn with_toleration(mut self, toleration: Toleration) -> Self {
        self.tolerations.push(toleration);
        self
    }

    /// The same pod binding one more host port.
    pub fn with_host_port(mut self, port: HostPort) -> Self {
        self.host_ports.push(port);
        self
    }

    /// The same pod with one more image layer of `size_bytes`.
    pub fn with_layer(mut self, digest: impl Into<String>, size_bytes: u64) -> Self {
        self.layers
            .get_or_insert_with(Vec::new)
            .push((digest.into(), size_bytes));
        self
    }

    /// The same pod belonging to `owner`.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The same pod allowed only on node `name`.
    pub fn with_required_node(mut self, name: impl Into<String>) -> Self {
        self.required_node = Some(name.into());
        self
    }

    /// The same pod with this node affinity.
    pub fn with_affinity(mut self, affinity: NodeAffinity) -> Self {
        self.affinity = affinity;
        self
    }

    /// The same pod in `project`.
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The same pod marked critical (or not).
    pub fn with_critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }
}
