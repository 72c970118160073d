//! Samples the CPU and memory counters of the running containers of the
//! pods the runtime holds, for the agent to report.

use futures_util::future::join_all;
use wharf_api::{ContainerUsageSample, PodUsage};

use super::ContainerRuntime;
use crate::runtime::now_millis;

/// A pod's running containers: (name, runtime id).
struct Running {
    project: String,
    name: String,
    uid: String,
    containers: Vec<(String, String)>,
}

impl ContainerRuntime {
    /// One sample of every running container of the pods held here. A pod
    /// in the middle of a step (its cell locked) is skipped this time
    /// rather than waited for: a step may be a long pull.
    pub(super) async fn sample_usage(&self) -> Vec<PodUsage> {
        let running: Vec<Running> = self
            .cells()
            .iter()
            .filter_map(|(_, cell)| {
                let held = cell.try_lock().ok()?;
                let record = &held.as_ref()?.record;
                let containers: Vec<(String, String)> = record
                    .containers
                    .iter()
                    .filter(|(_, c)| c.running)
                    .map(|(name, c)| (name.clone(), c.id.clone()))
                    .collect();
                (!containers.is_empty()).then(|| Running {
                    project: record.project.clone(),
                    name: record.name.clone(),
                    uid: record.uid.clone(),
                    containers,
                })
            })
            .collect();
        join_all(running.into_iter().map(|pod| self.sample_pod(pod)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn sample_pod(&self, pod: Running) -> Option<PodUsage> {
        let timestamp_ms = now_millis();
        let mut containers = Vec::new();
        for (name, id) in pod.containers {
            if let Some(usage) = self.containers.usage(&id).await {
                containers.push(ContainerUsageSample { name, usage });
            }
        }
        (!containers.is_empty()).then_some(PodUsage {
            project: pod.project,
            name: pod.name,
            uid: pod.uid,
            timestamp_ms,
            containers,
        })
    }
}
