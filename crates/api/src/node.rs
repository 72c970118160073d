//! Nodes: the machines containers run on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::node_init::{NodeCondition, NodeInitialization};
use crate::workload::Resources;

/// Label naming a node's service pool.
pub const LABEL_POOL: &str = "wharf.io/pool";
/// Label naming a node's data centre.
pub const LABEL_IDC: &str = "wharf.io/idc";
/// Label saying where a node comes from: `physical`, `vm` or `cloud`.
pub const LABEL_CLUSTER_KIND: &str = "wharf.io/cluster-kind";
/// Label ranking a node's hardware; higher is newer or bigger.
pub const LABEL_MACHINE_CLASS: &str = "wharf.io/machine-class";

/// Kubernetes' well-known label with the node's name.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// Kubernetes' well-known label with the node's operating system (`linux`).
pub const LABEL_OS: &str = "kubernetes.io/os";
/// Kubernetes' well-known label with the node's architecture, as Go names
/// it (`amd64`, `arm64`).
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// The labels the agent sets on its node itself, as the kubelet does; an
/// operator's labels may not set them.
pub const STANDARD_NODE_LABELS: [&str; 3] = [LABEL_HOSTNAME, LABEL_OS, LABEL_ARCH];

/// A machine registered by its agent. Cluster-wide: nodes have no project.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `Node`.
    #[serde(default = "node_kind")]
    pub kind: String,
    /// Name (the agent's `--name`) and labels.
    pub metadata: ObjectMeta,
    /// What the operator decides.
    #[serde(default)]
    pub spec: NodeSpec,
    /// What the agent reports.
    #[serde(default)]
    pub status: NodeStatus,
}

fn wharf_v1() -> String {
    "wharf.io/v1".into()
}

fn node_kind() -> String {
    "Node".into()
}

/// The desired state of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Address the node is reached at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Taints keep pods away unless they tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Cordoned: no new pods are placed here.
    #[serde(default)]
    pub unschedulable: bool,
    /// What an hour of this machine costs, for cost accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_hour: Option<f64>,
}

/// A taint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// What it does to pods that do not tolerate it.
    pub effect: TaintEffect,
    /// When the taint was put (unix milliseconds); `NoExecute` tolerations
    /// with `tolerationSeconds` count from here. Set on the taints the
    /// control plane puts on unreachable nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<u64>,
}

/// Taint effects, as Kubernetes defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    /// New pods are not placed.
    NoSchedule,
    /// New pods avoid the node if they can.
    PreferNoSchedule,
    /// New pods are not placed; running ones are evicted.
    NoExecute,
}

/// The observed state of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// What the machine has.
    #[serde(default)]
    pub capacity: Resources,
    /// Sum of the requests of the pods bound to the node.
    #[serde(default)]
    pub allocated: Resources,
    /// Whether the agent's heartbeat is current.
    #[serde(default)]
    pub ready: bool,
    /// Last sign of life, unix milliseconds: the agent's last status
    /// report, or the node's last return to ready.
    #[serde(default)]
    pub last_heartbeat: u64,
    /// CPU busy over the last minute, `0.0..=1.0`, when the agent reports
    /// it (from `/proc/stat`, or from its pods' cgroups with
    /// `--load-source pods`). Part of the load summary the scheduler's load
    /// score reads; cleared when the node goes not ready, so a report
    /// from before an outage is never taken for a current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_load: Option<f32>,
    /// The 1-minute load average (runnable tasks, not divided by cores),
    /// when the agent reports it; cleared with `cpu_load`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<f32>,
    /// Memory available for new work (`MemAvailable`), in bytes, when the
    /// agent reports it; cleared with `cpu_load`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_bytes: Option<u64>,
    /// Images cached on the node, by the references they were pulled by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<NodeImage>,
    /// Layers in the node's layer cache, for image-locality scheduling
    /// (bytes a pod's image would not have to pull); `None` when the agent
    /// has not reported them (or the report went stale), which the
    /// scheduler scores neutral, unlike an empty cache. Cleared with
    /// `cpu_load`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<CachedLayer>>,
    /// Operating system, architecture, kernel, agent version.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub info: std::collections::BTreeMap<String, String>,
    /// Where the agent serves container logs, e.g. `http://10.0.0.5:7701`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Why the agent says the node cannot run pods although it is alive
    /// (Kubernetes' `Ready=False`, e.g. its container runtime fails); the
    /// control plane then taints it `node.kubernetes.io/not-ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<String>,
    /// The agent's run of its pool's init profile, when the pool has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<NodeInitialization>,
    /// Kubernetes-style conditions the control plane derives from what the
    /// agent reports (`Initialized`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NodeCondition>,
}

/// An image present on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeImage {
    /// Image reference.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// A layer in a node's cache: its blob digest (as image manifests list
/// it) and compressed size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CachedLayer {
    /// Digest of the layer blob, `sha256:...`.
    pub digest: String,
    /// Size of the blob in bytes: what a pull would download.
    pub size_bytes: u64,
}

/// Annotation the scheduler puts on a pod it binds: the node, its score
/// and each score's value, which `wharf describe pod` shows.
pub const ANNOTATION_SCHEDULING_SCORES: &str = "wharf.io/scheduling-scores";

impl NodeStatus {
    /// Forgets the load summary (CPU busy, load average, free memory,
    /// cached layers): what a node reported before it went silent is
    /// stale, so the scheduler scores it neutral until the next report.
    pub fn clear_load_summary(&mut self) {
        self.cpu_load = None;
        self.load_average = None;
        self.memory_available_bytes = None;
        self.layers = None;
    }
}

impl Node {
    /// A node called `name` with `capacity`.
    pub fn new(name: &str, capacity: Resources) -> Node {
        Node {
            api_version: wharf_v1(),
            kind: node_kind(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..ObjectMeta::default()
            },
            spec: NodeSpec::default(),
            status: NodeStatus {
                capacity,
                ..NodeStatus::default()
            },
        }
    }
}
