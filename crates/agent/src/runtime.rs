//! What a node does with the pods bound to it.

use std::time::Duration;

use async_trait::async_trait;
use wharf_api::{ContainerState, ContainerStatus, Pod, PodPhase, PodStatus, PodUsage};

use crate::metrics::containers::PodStats;

/// Where a runtime reports status while a step is under way (an image
/// pull's progress, say). The agent sends the latest to the server.
pub type Progress<'a> = &'a (dyn Fn(PodStatus) + Send + Sync);

/// The outcome of one [`Runtime::sync`] step.
#[derive(Clone, Debug, PartialEq)]
pub struct Synced {
    /// The pod's status now.
    pub status: PodStatus,
    /// Look again after this long even if nothing changes (a container may
    /// exit, a back-off ends); `None`: only when the pod changes.
    pub again_in: Option<Duration>,
}

/// Runs (or pretends to run) pods.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Brings the node closer to running `pod` as specified, and says how
    /// it stands. Called again whenever the pod changes and when asked to.
    async fn sync(&self, pod: &Pod, progress: Progress<'_>) -> Synced;
    /// Stops and removes a pod that is no longer bound here: its
    /// containers, mounts, network and address. With `uid`, only if the
    /// pod held is that one (a new pod of the same name may have replaced it).
    async fn remove(&self, project: &str, name: &str, uid: Option<&str>);
    /// Stops pod `project/name` with `uid`, whose deletion was asked,
    /// giving its containers `grace` between SIGTERM and SIGKILL, then
    /// removes it as [`remove`](Runtime::remove) does. By default, a runtime
    /// without containers to signal just removes it.
    async fn terminate(&self, project: &str, name: &str, uid: &str, grace: Duration) {
        let _ = grace;
        self.remove(project, name, Some(uid)).await;
    }
    /// The pods this node holds anything of (after an agent restart, those
    /// no longer bound here are removed).
    async fn pods(&self) -> Vec<(String, String)>;
    /// Removes what the node keeps beyond its pods (claim directories)
    /// once the control plane no longer binds it here. Called now and
    /// then; a runtime that keeps nothing does nothing.
    async fn release_volumes(&self) {}
    /// The CPU and memory counters of the running containers of the pods
    /// held here; a runtime without containers measures none.
    async fn usage(&self) -> Vec<PodUsage> {
        Vec::new()
    }
    /// The layers in the node's image cache, for image-locality
    /// scheduling; `None` for a runtime without one.
    async fn cached_layers(&self) -> Option<Vec<wharf_api::CachedLayer>> {
        None
    }
    /// Whether the runtime can run pods now; why not otherwise (the node
    /// then reports itself not ready). A runtime without containers has
    /// nothing to fail.
    async fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// What monitoring reads of the running containers of the pods held
    /// here (cgroups, the pods' network); none without containers.
    async fn pod_stats(&self) -> Vec<PodStats> {
        Vec::new()
    }

    /// Image bytes pulled since the agent started, by where they came
    /// from (registry, peers, the node's cache); `None` for a runtime
    /// without an image cache.
    fn pull_bytes(&self) -> Option<wharf_image::PullBytes> {
        None
    }

    /// Pulls `image` into the node's cache ahead of any pod (a preheat),
    /// calling `progress` with bytes done and in all; returns the image's
    /// bytes. A runtime without an image cache refuses, saying so.
    async fn preheat(
        &self,
        image: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, String> {
        let _ = progress;
        Err(format!(
            "this node keeps no image cache to preheat {image} into"
        ))
    }
}

/// Accepts pods without running containers: what a node agent without a
/// container runtime reports, honestly, as `Pending`.
pub struct NoRuntime {
    /// The node's name, for the message.
    pub node: String,
}

#[async_trait]
impl Runtime for NoRuntime {
    async fn sync(&self, pod: &Pod, _progress: Progress<'_>) -> Synced {
        Synced {
            status: PodStatus {
                phase: PodPhase::Pending,
                reason: Some("NoRuntime".into()),
                message: Some(format!(
                    "node {} has the pod but runs no containers",
                    self.node
                )),
                ..pod.status.clone()
            },
            again_in: None,
        }
    }

    async fn remove(&self, _project: &str, _name: &str, _uid: Option<&str>) {}

    async fn pods(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Reports every pod as running at once, without containers: hollow nodes
/// for scale work.
pub struct SimulatedRuntime;

impl SimulatedRuntime {
    /// The status of `pod` as if all its containers had started.
    pub fn running(pod: &Pod) -> PodStatus {
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
                    last_state: None,
                })
                .collect(),
            ..pod.status.clone()
        }
    }
}

#[async_trait]
impl Runtime for SimulatedRuntime {
    async fn sync(&self, pod: &Pod, _progress: Progress<'_>) -> Synced {
        Synced {
            status: SimulatedRuntime::running(pod),
            again_in: None,
        }
    }

    async fn remove(&self, _project: &str, _name: &str, _uid: Option<&str>) {}

    async fn pods(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
