//! Per-container samples: what the runtime measured of each running
//! container ([`PodStats`]) under the names of issue 14, tagged
//! `project,pod,container` (the pod's network: `project,pod`).

use std::path::Path;

use super::Batch;
use super::proc::{InterfaceCounters, interfaces};
use crate::usage::CgroupStats;

/// One pod's running containers as the runtime measured them.
#[derive(Clone, Debug, PartialEq)]
pub struct PodStats {
    /// The pod's project.
    pub project: String,
    /// The pod's name.
    pub name: String,
    /// Its running containers.
    pub containers: Vec<ContainerStats>,
    /// Its `eth0`; `None` for pods on the node's network (the node's
    /// `net.if.*` already counts them) or when no process could be read.
    pub network: Option<InterfaceCounters>,
}

/// One running container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerStats {
    /// Its name in the pod.
    pub name: String,
    /// Runs started after the first.
    pub restarts: u32,
    /// What its cgroup says.
    pub cgroup: CgroupStats,
}

/// The pod's `eth0` counters, read in the network namespace of process
/// `pid` (any process of the pod: they share it) under `proc_root`.
/// Blocking.
pub fn pod_interface(proc_root: &Path, pid: u32) -> Option<InterfaceCounters> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("net/dev")).ok()?;
    interfaces(&text).remove("eth0")
}

/// Adds a pod's samples to `batch`.
pub fn add_pod(batch: &mut Batch, pod: &PodStats) {
    for container in &pod.containers {
        let tags = format!(
            "container={},pod={},project={}",
            container.name, pod.name, pod.project
        );
        add_container(batch, &tags, container);
    }
    if let Some(net) = &pod.network {
        let tags = format!("pod={},project={}", pod.name, pod.project);
        batch.counter("container.net.in.bytes", &tags, net.in_bytes as f64);
        batch.counter("container.net.out.bytes", &tags, net.out_bytes as f64);
    }
}

fn add_container(batch: &mut Batch, tags: &str, container: &ContainerStats) {
    let stats = &container.cgroup;
    let seconds = |ns: u64| ns as f64 / 1e9;
    batch.counter(
        "container.cpu.usage_seconds",
        tags,
        seconds(stats.usage.cpu_usage_ns),
    );
    if let Some(ns) = stats.throttled_ns {
        batch.counter("container.cpu.throttled_seconds", tags, seconds(ns));
    }
    if let Some(periods) = stats.throttled_periods {
        batch.counter("container.cpu.throttled_periods", tags, periods as f64);
    }
    if let Some(cores) = stats.cpu_limit_cores {
        batch.gauge("container.cpu.limit_cores", tags, cores);
    }
    batch.gauge(
        "container.mem.working_set",
        tags,
        stats.usage.memory_working_set_bytes as f64,
    );
    if let Some(limit) = stats.memory_limit_bytes {
        batch.gauge("container.mem.limit", tags, limit as f64);
    }
    if let Some(kills) = stats.oom_kills {
        batch.counter("container.oom_kills", tags, kills as f64);
    }
    batch.gauge("container.restarts", tags, f64::from(container.restarts));
}
