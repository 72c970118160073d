//! What a node does with the pods bound to it.

use async_trait::async_trait;
use wharf_api::{ContainerState, ContainerStatus, Pod, PodPhase, PodStatus};

/// Runs (or pretends to run) pods.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Makes the node run `pod` as specified; returns its status.
    async fn sync(&self, pod: &Pod) -> PodStatus;
    /// Stops and removes a pod that is no longer bound here.
    async fn remove(&self, project: &str, name: &str);
}

/// Accepts pods without running containers: what a node agent without a
/// container runtime reports, honestly, as `Pending`.
pub struct NoRuntime {
    /// The node's name, for the message.
    pub node: String,
}

#[async_trait]
impl Runtime for NoRuntime {
    async fn sync(&self, pod: &Pod) -> PodStatus {
        PodStatus {
            phase: PodPhase::Pending,
            reason: Some("NoRuntime".into()),
            message: Some(format!(
                "node {} has the pod but runs no containers",
                self.node
            )),
            ..pod.status.clone()
        }
    }

    async fn remove(&self, _project: &str, _name: &str) {}
}

/// Reports every pod as running at once, without containers: hollow nodes
/// for scale work.
pub struct SimulatedRuntime;

#[async_trait]
impl Runtime for SimulatedRuntime {
    async fn sync(&self, pod: &Pod) -> PodStatus {
        let started = pod.status.start_time.unwrap_or_else(now_millis);
        PodStatus {
            phase: PodPhase::Running,
            reason: None,
            message: None,
            start_time: Some(started),
            container_statuses: pod
                .spec
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ready: true,
                    restart_count: 0,
                    state: ContainerState::Running {
                        started_at: started,
                    },
                })
                .collect(),
            ..pod.status.clone()
        }
    }

    async fn remove(&self, _project: &str, _name: &str) {}
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
