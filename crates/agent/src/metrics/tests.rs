//! The collector against a fake control plane that keeps what is pushed,
//! and a fake runtime with one pod's measurements.

use std::sync::Mutex;

use async_trait::async_trait;
use wharf_api::{ContainerUsage, Node, Pod, PodEventReport, PodStatus};

use super::containers::{ContainerStats, PodStats};
use super::proc::InterfaceCounters;
use super::*;
use crate::AgentError;
use crate::api::{PodAccess, PodChanges, ServiceChanges};
use crate::runtime::{Progress, Synced};
use crate::service_view::ServiceView;
use crate::usage::CgroupStats;

/// Keeps every batch pushed; fails pushes while `failing` is set.
#[derive(Default)]
struct Pushes {
    batches: Mutex<Vec<(String, Vec<FalconSample>)>>,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl NodeApi for Pushes {
    async fn push_metrics(&self, node: &str, samples: &[FalconSample]) -> Result<(), AgentError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AgentError::Unreachable("server away".into()));
        }
        self.batches
            .lock()
            .unwrap()
            .push((node.to_owned(), samples.to_vec()));
        Ok(())
    }
    async fn register(&self, _: Node) -> Result<Node, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn heartbeat(&self, _: &str, _: Option<u64>, _: Duration) -> Result<u64, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn list_pods(&self, _: Option<&str>) -> Result<(Vec<Pod>, u64), AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn watch_pods(&self, _: Option<&str>, _: u64) -> Result<PodChanges, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn set_pod_status(&self, _: &str, _: &str, _: &PodStatus) -> Result<(), AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn pod_event(&self, _: &str, _: &str, _: &PodEventReport) -> Result<(), AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn claim_ip(&self, _: &str, _: &str) -> Result<Option<wharf_api::IpClaim>, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn release_ip(&self, _: &str, _: &str, _: &str) -> Result<(), AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn pod_stopped(&self, _: &str, _: &str, _: &str) -> Result<(), AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn may_access_pod(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: PodAccess,
    ) -> Result<bool, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn config_map(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<wharf_api::ConfigMap>, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn secret(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<wharf_api::Secret>, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn claims(&self, _: &str) -> Result<Vec<wharf_api::PersistentVolumeClaim>, AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn report_usage(&self, _: &str, _: &[wharf_api::PodUsage]) -> Result<(), AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn node_services(&self, _: &str) -> Result<(ServiceView, u64), AgentError> {
        unreachable!("the collector only pushes")
    }
    async fn watch_services(&self, _: &str, _: u64) -> Result<ServiceChanges, AgentError> {
        unreachable!("the collector only pushes")
    }
}

/// One pod, `shop/web`, whose container burned 1.5 s of CPU under a half
/// core limit.
struct OnePod;

#[async_trait]
impl Runtime for OnePod {
    async fn sync(&self, pod: &Pod, _: Progress<'_>) -> Synced {
        Synced {
            status: pod.status.clone(),
            again_in: None,
        }
    }
    async fn remove(&self, _: &str, _: &str, _: Option<&str>) {}
    async fn pods(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn pull_bytes(&self) -> Option<wharf_image::PullBytes> {
        Some(wharf_image::PullBytes {
            registry: 300,
            peers: 700,
            cache: 50,
        })
    }
    async fn pod_stats(&self) -> Vec<PodStats> {
        vec![PodStats {
            project: "shop".into(),
            name: "web".into(),
            containers: vec![ContainerStats {
                name: "app".into(),
                restarts: 2,
                cgroup: CgroupStats {
                    usage: ContainerUsage {
                        cpu_usage_ns: 1_500_000_000,
                        memory_working_set_bytes: 8 << 20,
                    },
                    throttled_ns: Some(250_000_000),
                    throttled_periods: Some(3),
                    cpu_limit_cores: Some(0.5),
                    memory_limit_bytes: None,
                    oom_kills: Some(0),
                    pid: Some(1),
                },
            }],
            network: Some(InterfaceCounters {
                in_bytes: 100,
                out_bytes: 200,
                ..InterfaceCounters::default()
            }),
        }]
    }
}

fn proc_fixture(cpu_line: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("stat"), cpu_line).unwrap();
    std::fs::write(root.path().join("loadavg"), "1.00 0.50 0.25 1/1 1\n").unwrap();
    root
}

/// A collector for node `n1` every 10 s of pod `shop/web`, reading the
/// proc files under `proc_root`.
fn collector(api: &Arc<Pushes>, proc_root: &std::path::Path) -> Collector {
    Collector::new(
        "n1",
        Duration::from_secs(10),
        api.clone(),
        Arc::new(OnePod),
        NodeReader::new(proc_root),
    )
}

fn find<'a>(samples: &'a [FalconSample], metric: &str) -> &'a FalconSample {
    samples
        .iter()
        .find(|s| s.metric == metric)
        .unwrap_or_else(|| panic!("no {metric} in {samples:?}"))
}

#[tokio::test]
async fn the_collector_pushes_node_and_container_metrics_as_one_batch() {
    let api = Arc::new(Pushes::default());
    let root = proc_fixture("cpu  100 0 100 800 0 0 0 0\n");
    let mut collector = collector(&api, root.path());
    collector.push_once().await;
    std::fs::write(root.path().join("stat"), "cpu  200 0 100 900 0 0 0 0\n").unwrap();
    collector.push_once().await;

    let batches = api.batches.lock().unwrap();
    assert_eq!(batches.len(), 2);
    let (node, first) = &batches[0];
    assert_eq!(node, "n1");
    assert!(first.iter().all(|s| s.endpoint == "n1" && s.step == 10));
    assert!(
        !first.iter().any(|s| s.metric == "cpu.busy"),
        "no percents from one reading"
    );
    assert_eq!(find(first, "load.1min").value, 1.0);

    let second = &batches[1].1;
    assert_eq!(find(second, "cpu.busy").value, 50.0);
    let cpu = find(second, "container.cpu.usage_seconds");
    assert_eq!(cpu.value, 1.5);
    assert_eq!(cpu.counter_type, CounterType::Counter);
    assert_eq!(cpu.tags, "container=app,pod=web,project=shop");
    assert_eq!(find(second, "container.cpu.throttled_seconds").value, 0.25);
    assert_eq!(find(second, "container.cpu.limit_cores").value, 0.5);
    let memory = find(second, "container.mem.working_set");
    assert_eq!(
        (memory.value, memory.counter_type),
        (8.0 * 1024.0 * 1024.0, CounterType::Gauge)
    );
    assert!(
        !second.iter().any(|s| s.metric == "container.mem.limit"),
        "unlimited: absent"
    );
    assert_eq!(find(second, "container.restarts").value, 2.0);
    let net = find(second, "container.net.in.bytes");
    assert_eq!(
        (net.tags.as_str(), net.value),
        ("pod=web,project=shop", 100.0)
    );
    let pulled: Vec<(&str, f64, CounterType)> = second
        .iter()
        .filter(|s| s.metric == "image.pull.bytes")
        .map(|s| (s.tags.as_str(), s.value, s.counter_type))
        .collect();
    assert_eq!(
        pulled,
        [
            ("source=registry", 300.0, CounterType::Counter),
            ("source=peers", 700.0, CounterType::Counter),
            ("source=cache", 50.0, CounterType::Counter),
        ]
    );
    // Every name the collector reports is one user pushes may not take.
    assert!(second.iter().all(|s| push::is_agent_metric(&s.metric)));
}

#[tokio::test]
async fn a_failed_push_is_dropped_not_kept() {
    let api = Arc::new(Pushes::default());
    let root = proc_fixture("cpu  1 0 1 8 0 0 0 0\n");
    let mut collector = collector(&api, root.path());
    api.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    collector.push_once().await;
    api.failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    collector.push_once().await;
    let batches = api.batches.lock().unwrap();
    // Only the second batch arrives: the first was not held for a retry.
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0]
            .1
            .iter()
            .filter(|s| s.metric == "load.1min")
            .count(),
        1
    );
}

#[test]
fn samples_the_server_would_refuse_are_left_out_of_the_batch() {
    let mut batch = Batch::new("n1", 1_700_000_000, 10);
    batch.gauge("df.bytes.used", "fstype=ext4,mount=/", 1.0);
    // A mount path with a comma cannot be a falcon tag value.
    batch.gauge("df.bytes.used", "fstype=ext4,mount=/a,b", 1.0);
    batch.gauge("load.1min", "", f64::NAN);
    let samples = batch.into_samples();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].tags, "fstype=ext4,mount=/");
}
