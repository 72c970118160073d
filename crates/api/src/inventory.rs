//! The inventory above nodes, as operations teams already run their
//! machines: a [`Cluster`] (physical, VM or cloud, in one IDC) holds
//! service [`Pool`]s, a pool holds nodes, and a [`MachineClass`] says what
//! kind of machine a node is (capacity, price, tier). A [`PoolGrant`] lets a
//! project place pods on a pool, within an optional quota.
//!
//! All four are cluster-wide `wharf.io/v1` kinds (no project). A node
//! names its pool, class and cluster with the labels of [`crate::node`]
//! (`wharf.io/pool`, `wharf.io/machine-class`, `wharf.io/cluster-kind`,
//! `wharf.io/idc`), which the scheduler reads like any other label.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::node::Taint;

/// The node label naming the cluster a node belongs to.
pub const LABEL_CLUSTER: &str = "wharf.io/cluster";
/// The node label giving its machine class's tier.
pub const LABEL_TIER: &str = "wharf.io/tier";
/// The node label naming the provider's machine a node runs on (an EC2
/// instance id, or a listed address): how the pool autoscaler matches
/// nodes to the machines it made.
pub const LABEL_INSTANCE_ID: &str = "wharf.io/instance-id";
/// The annotation (on a Deployment, its template, or a project) asking for
/// a tier: pods then need (`tier=core`) or prefer (`tier=core;preferred`)
/// nodes of that tier.
pub const ANNOTATION_TIER: &str = "wharf.io/tier";

fn wharf_v1() -> String {
    "wharf.io/v1".into()
}

/// What a cluster's machines are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterKind {
    /// Machines in racks, listed by address.
    #[default]
    Physical,
    /// Virtual machines on a hypervisor, listed by address.
    Vm,
    /// Instances a provider creates and deletes on demand.
    Cloud,
}

impl ClusterKind {
    /// The value of the `wharf.io/cluster-kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterKind::Physical => "physical",
            ClusterKind::Vm => "vm",
            ClusterKind::Cloud => "cloud",
        }
    }
}

/// A set of machines run one way, in one IDC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `Cluster`.
    #[serde(default = "cluster_kind")]
    pub kind: String,
    /// Name.
    pub metadata: ObjectMeta,
    /// Kind, IDC, provider, default price.
    #[serde(default)]
    pub spec: ClusterSpec,
}

fn cluster_kind() -> String {
    "Cluster".into()
}

/// What a cluster is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// `physical`, `vm` or `cloud`.
    #[serde(default)]
    pub kind: ClusterKind,
    /// The data centre (`wharf.io/idc` on its nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idc: Option<String>,
    /// How machines are made: a static list, or a cloud API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderSpec>,
    /// The price per hour of a node when neither its pool nor its class
    /// sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
}

/// A machine provider and its settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// `static` (machines listed by address) or `ec2`.
    pub driver: String,
    /// Driver settings: for `ec2` the endpoint, region, image and instance
    /// type; never credentials (those are in a sealed Secret, named by
    /// `credentialsSecret`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// The Secret (in project `wharf-system`) holding the driver's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// For `static`: the machines' addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
}

/// A service pool: nodes of one cluster run alike, for some projects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `Pool`.
    #[serde(default = "pool_kind")]
    pub kind: String,
    /// Name (`wharf.io/pool` on its nodes).
    pub metadata: ObjectMeta,
    /// Cluster, node defaults, classes, init profile, price, autoscaling.
    pub spec: PoolSpec,
    /// Set by the cluster.
    #[serde(default)]
    pub status: PoolStatus,
}

fn pool_kind() -> String {
    "Pool".into()
}

/// What a pool gives its nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// The cluster it belongs to.
    pub cluster: String,
    /// Labels every node of the pool gets when it joins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints every node of the pool gets when it joins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Machine classes its nodes may be; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_classes: Vec<String>,
    /// What a node runs before it is schedulable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitProfile>,
    /// Overrides the class's and cluster's price per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
    /// For pools of cloud clusters: machines made and removed on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<PoolAutoscale>,
}

/// A cloud pool's autoscaling, as cluster-autoscaler's node group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolAutoscale {
    /// Machines kept at least.
    #[serde(default)]
    pub min: u32,
    /// Machines made at most.
    pub max: u32,
    /// The class of the machines made.
    pub machine_class: String,
    /// How long a node stays idle before it is removed (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_seconds: Option<u64>,
}

/// What a pool's nodes are prepared with, in this order, before they take
/// pods. Every step is idempotent; a change of profile runs it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitProfile {
    /// Debian packages installed with apt-get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Kernel modules loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_modules: Vec<String>,
    /// sysctls set, `net.ipv4.ip_forward: "1"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Files written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InitFile>,
    /// A shell script run last, as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// A file an init profile writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitFile {
    /// An absolute path.
    pub path: String,
    /// The whole content.
    pub content: String,
    /// Octal permission bits, `"0644"` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// What the cluster observed of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Nodes in the pool.
    #[serde(default)]
    pub nodes: u32,
    /// Of which ready.
    #[serde(default)]
    pub ready_nodes: u32,
}

/// How important the work a machine class is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Core, high-traffic services.
    Core,
    /// Everything else.
    #[default]
    General,
    /// Light, non-core or batch work.
    Batch,
}

impl Tier {
    /// The value of the `wharf.io/tier` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Core => "core",
            Tier::General => "general",
            Tier::Batch => "batch",
        }
    }
}

/// A kind of machine: its capacity, price and tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineClass {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `MachineClass`.
    #[serde(default = "machine_class_kind")]
    pub kind: String,
    /// Name (`wharf.io/machine-class` on its nodes), e.g. `std-32c32g`.
    pub metadata: ObjectMeta,
    /// Capacity ranges, price, tier.
    pub spec: MachineClassSpec,
}

fn machine_class_kind() -> String {
    "MachineClass".into()
}

/// Which machines are of a class and what they cost. A node is of a class
/// when it says so (`--class`, the label) or, failing that, when its
/// capacity is within the class's ranges.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineClassSpec {
    /// CPU range, Kubernetes quantities (`"12"`, `"31500m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<QuantityRange>,
    /// Memory range (`"16Gi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<QuantityRange>,
    /// The price of one machine per hour.
    pub price_per_hour: f64,
    /// `core`, `general` (the default) or `batch`.
    #[serde(default)]
    pub tier: Tier,
}

/// An inclusive range of quantities; an end left out is open.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuantityRange {
    /// The least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// The most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// A project's right to place pods on a pool, within an optional quota.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolGrant {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `PoolGrant`.
    #[serde(default = "pool_grant_kind")]
    pub kind: String,
    /// Name: `POOL.PROJECT`, one grant per pair (given by the spec when
    /// a manifest leaves it out).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Pool, project, quota.
    pub spec: PoolGrantSpec,
}

fn pool_grant_kind() -> String {
    "PoolGrant".into()
}

/// Who may use which pool, and how much of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolGrantSpec {
    /// The pool.
    pub pool: String,
    /// The project.
    pub project: String,
    /// The most the project's pods may request on the pool; unlimited
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<GrantQuota>,
}

/// Limits on the sum of a project's pod requests in one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantQuota {
    /// CPU (`"16"`, `"500m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory (`"64Gi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_pools_read_from_yaml_shaped_json() {
        let pool: Pool = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "core"},
            "spec": {
                "cluster": "bj-physical",
                "labels": {"team": "web"},
                "machineClasses": ["std-32c32g"],
                "init": {"sysctls": {"net.ipv4.ip_forward": "1"},
                         "files": [{"path": "/etc/motd", "content": "core\n"}]}
            }
        }))
        .unwrap();
        assert_eq!(pool.api_version, "wharf.io/v1");
        assert_eq!(pool.kind, "Pool");
        let init = pool.spec.init.unwrap();
        assert_eq!(init.sysctls["net.ipv4.ip_forward"], "1");
        let class: MachineClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "legacy-12c16g"},
            "spec": {"cpu": {"max": "12"}, "memory": {"max": "16Gi"},
                     "pricePerHour": 0.12, "tier": "batch"}
        }))
        .unwrap();
        assert_eq!(class.spec.tier, Tier::Batch);
        assert_eq!(class.spec.tier.as_str(), "batch");
    }
}
