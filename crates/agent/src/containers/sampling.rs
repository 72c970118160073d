//! Samples the running containers of the pods the runtime holds: their
//! CPU and memory counters for the agent's usage reports, and everything
//! monitoring reads ([`PodStats`]).

use std::future::Future;
use std::path::Path;

use futures_util::future::join_all;
use wharf_api::{ContainerUsageSample, PodUsage};

use super::{ContainerRuntime, off_worker};
use crate::metrics::containers::{ContainerStats, PodStats, pod_interface};
use crate::runtime::now_millis;

/// A pod's running containers.
struct Running {
    project: String,
    name: String,
    uid: String,
    host_network: bool,
    containers: Vec<RunningContainer>,
}

struct RunningContainer {
    name: String,
    id: String,
    restarts: u32,
}

impl ContainerRuntime {
    /// The pods held here with running containers. A pod in the middle of
    /// a step (its cell locked) is skipped this time rather than waited
    /// for: a step may be a long pull.
    fn running(&self) -> Vec<Running> {
        self.cells()
            .iter()
            .filter_map(|(_, cell)| {
                let held = cell.try_lock().ok()?;
                let record = &held.as_ref()?.record;
                let containers: Vec<RunningContainer> = record
                    .containers
                    .iter()
                    .filter(|(_, c)| c.running)
                    .map(|(name, c)| RunningContainer {
                        name: name.clone(),
                        id: c.id.clone(),
                        restarts: c.restart_count,
                    })
                    .collect();
                (!containers.is_empty()).then(|| Running {
                    project: record.project.clone(),
                    name: record.name.clone(),
                    uid: record.uid.clone(),
                    host_network: record.host_network,
                    containers,
                })
            })
            .collect()
    }

    /// `sample` of each pod with running containers, all at once; pods
    /// it has nothing of are left out.
    async fn each_running<T, F>(&self, sample: impl Fn(Running) -> F) -> Vec<T>
    where
        F: Future<Output = Option<T>>,
    {
        join_all(self.running().into_iter().map(sample))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One sample of every running container of the pods held here.
    pub(super) async fn sample_usage(&self) -> Vec<PodUsage> {
        self.each_running(|pod| self.sample_pod(pod)).await
    }

    async fn sample_pod(&self, pod: Running) -> Option<PodUsage> {
        let timestamp_ms = now_millis();
        let mut containers = Vec::new();
        for container in pod.containers {
            if let Some(usage) = self.containers.usage(&container.id).await {
                containers.push(ContainerUsageSample {
                    name: container.name,
                    usage,
                });
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

    /// What monitoring reads of every running container held here.
    pub(super) async fn sample_stats(&self) -> Vec<PodStats> {
        self.each_running(|pod| self.pod_stats_of(pod)).await
    }

    async fn pod_stats_of(&self, pod: Running) -> Option<PodStats> {
        let mut containers = Vec::new();
        for container in pod.containers {
            if let Some(cgroup) = self.containers.stats(&container.id).await {
                containers.push(ContainerStats {
                    name: container.name,
                    restarts: container.restarts,
                    cgroup,
                });
            }
        }
        let pid = containers.iter().find_map(|c| c.cgroup.pid);
        let network = match pid {
            Some(pid) if !pod.host_network => {
                off_worker(move || Ok(pod_interface(Path::new("/proc"), pid)))
                    .await
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        (!containers.is_empty()).then_some(PodStats {
            project: pod.project,
            name: pod.name,
            containers,
            network,
        })
    }
}
