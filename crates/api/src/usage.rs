//! Resource usage a node measures of its pods' containers: raw cumulative
//! counters, as sampled; whoever reads two samples turns them into rates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One container's counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use less the inactive file cache (what kubelet and
    /// cAdvisor call the working set), in bytes.
    pub memory_working_set_bytes: u64,
}

/// The sampled usage of one running container of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsageSample {
    /// The container's name in the pod.
    pub name: String,
    /// Its counters.
    #[serde(flatten)]
    pub usage: ContainerUsage,
}

/// What a node sampled of one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    /// The pod's project.
    pub project: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid: a sample of an earlier pod of the same name is not
    /// compared with one of the new pod.
    pub uid: String,
    /// When it was sampled, unix milliseconds.
    pub timestamp_ms: u64,
    /// Its running containers.
    pub containers: Vec<ContainerUsageSample>,
}

/// A pod's usage as rates, from two samples (`GET .../pods/{name}/metrics`,
/// what `wharf top pods` shows and the autoscaler reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    /// The pod's project.
    pub project: String,
    /// The pod's name.
    pub name: String,
    /// When the later sample was taken (RFC 3339).
    #[serde(with = "crate::time::millis")]
    #[schemars(with = "String")]
    pub timestamp: u64,
    /// Milliseconds between the two samples the CPU rate is taken over.
    pub window_ms: u64,
    /// Its running containers.
    pub containers: Vec<ContainerMetrics>,
}

/// One container's usage as rates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerMetrics {
    /// The container's name in the pod.
    pub name: String,
    /// CPU used over the window, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Memory working set at the later sample, in bytes.
    pub memory_bytes: u64,
}

impl PodMetrics {
    /// The CPU of all its containers, in millicores.
    pub fn cpu_millicores(&self) -> u64 {
        self.containers.iter().map(|c| c.cpu_millicores).sum()
    }

    /// The memory working set of all its containers, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.containers.iter().map(|c| c.memory_bytes).sum()
    }
}
