//! Pods' resource usage, as their nodes report it: the last two samples of
//! each pod, kept in memory only. Samples come every few seconds from every
//! node; writing them to the store would cost a commit each, and a server
//! that restarts has fresh ones within one sampling interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wharf_api::{ContainerMetrics, Pod, PodMetrics, PodUsage};

/// Samples older than this are forgotten (the pod is gone or its node
/// stopped reporting): no metrics is better than stale ones.
const STALE_AFTER_MS: u64 = 5 * 60 * 1000;

/// The latest samples of every pod reported, shared by the API and the
/// autoscaler.
#[derive(Clone, Default)]
pub struct PodMetricsStore {
    pods: Arc<Mutex<HashMap<Key, Samples>>>,
}

/// Project, pod name and the node that reported it. Only the samples of
/// the node a pod is bound to are read: another node (a compromised one)
/// can neither speak for the pod's usage (its cost, its autoscaling) nor
/// displace what the pod's own node reports.
type Key = (String, String, String);

/// A pod's last two samples, from the same pod (uid).
struct Samples {
    /// When the latest came, by this server's clock (a node's clock may
    /// be off).
    received_ms: u64,
    previous: Option<PodUsage>,
    latest: PodUsage,
}

impl PodMetricsStore {
    /// An empty store.
    pub fn new() -> PodMetricsStore {
        PodMetricsStore::default()
    }

    /// Takes one report of `node`, received at `now` (unix ms): each pod's
    /// sample becomes its latest; pods nobody reported for a while age out.
    pub fn record(&self, node: &str, pods: Vec<PodUsage>, now: u64) {
        let mut held = self.pods.lock().expect("pod metrics lock");
        for usage in pods {
            let key = (usage.project.clone(), usage.name.clone(), node.to_string());
            let previous = held
                .remove(&key)
                .filter(|s| s.latest.uid == usage.uid && s.latest.timestamp_ms < usage.timestamp_ms)
                .map(|s| s.latest);
            held.insert(
                key,
                Samples {
                    received_ms: now,
                    previous,
                    latest: usage,
                },
            );
        }
        held.retain(|_, s| now.saturating_sub(s.received_ms) < STALE_AFTER_MS);
    }

    /// `pod`'s usage over the last two samples its node reported of it
    /// (of this very pod, by uid); `None` until there are two (a CPU rate
    /// needs both), and for a pod bound to no node.
    pub fn pod(&self, pod: &Pod) -> Option<PodMetrics> {
        let key = (
            pod.metadata.project.clone().unwrap_or_default(),
            pod.metadata.name.clone(),
            pod.spec.node_name.clone()?,
        );
        let held = self.pods.lock().expect("pod metrics lock");
        let samples = held.get(&key)?;
        if samples.latest.uid != pod.metadata.uid {
            return None;
        }
        rates(samples.previous.as_ref()?, &samples.latest)
    }

    /// The usage of each of `pods` that has two samples, by name.
    pub fn of_pods<'a>(&self, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<PodMetrics> {
        let mut metrics: Vec<PodMetrics> = pods.into_iter().filter_map(|p| self.pod(p)).collect();
        metrics.sort_by(|a, b| a.name.cmp(&b.name));
        metrics
    }
}

/// CPU in millicores over the window between two samples, memory at the
/// later one. A container absent from the earlier sample (started since)
/// has no rate yet and is left out.
fn rates(earlier: &PodUsage, later: &PodUsage) -> Option<PodMetrics> {
    let window_ms = later.timestamp_ms.checked_sub(earlier.timestamp_ms)?;
    if window_ms == 0 {
        return None;
    }
    let containers = later
        .containers
        .iter()
        .filter_map(|now| {
            let before = earlier.containers.iter().find(|c| c.name == now.name)?;
            // A restarted container's counter starts again from zero.
            let used_ns = now
                .usage
                .cpu_usage_ns
                .checked_sub(before.usage.cpu_usage_ns)?;
            Some(ContainerMetrics {
                name: now.name.clone(),
                // ns / (ms * 1e6) cores = ns / ms / 1000 millicores.
                cpu_millicores: (used_ns / window_ms).div_ceil(1000),
                memory_bytes: now.usage.memory_working_set_bytes,
            })
        })
        .collect::<Vec<_>>();
    (!containers.is_empty()).then(|| PodMetrics {
        project: later.project.clone(),
        name: later.name.clone(),
        timestamp: later.timestamp_ms,
        window_ms,
        containers,
    })
}

#[cfg(test)]
mod tests {
    use wharf_api::{ContainerUsage, ContainerUsageSample};

    use super::*;

    fn sample(uid: &str, at_ms: u64, cpu_ns: u64, memory: u64) -> PodUsage {
        PodUsage {
            project: "shop".into(),
            name: "web-1".into(),
            uid: uid.into(),
            timestamp_ms: at_ms,
            containers: vec![ContainerUsageSample {
                name: "web".into(),
                usage: ContainerUsage {
                    cpu_usage_ns: cpu_ns,
                    memory_working_set_bytes: memory,
                },
            }],
        }
    }

    /// Pod shop/web-1 with `uid`, bound to `node`.
    fn pod(uid: &str, node: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.project = Some("shop".into());
        pod.metadata.name = "web-1".into();
        pod.metadata.uid = uid.into();
        pod.spec.node_name = Some(node.into());
        pod
    }

    #[test]
    fn cpu_is_a_rate_over_two_samples() {
        let store = PodMetricsStore::new();
        store.record(
            "n1",
            vec![sample("u1", 10_000, 1_000_000_000, 1 << 20)],
            10_000,
        );
        let web = pod("u1", "n1");
        assert_eq!(store.pod(&web), None, "one sample gives no rate");
        // Half a core for 10 s: 5 s of CPU.
        store.record(
            "n1",
            vec![sample("u1", 20_000, 6_000_000_000, 3 << 20)],
            20_000,
        );
        let metrics = store.pod(&web).unwrap();
        assert_eq!(metrics.window_ms, 10_000);
        assert_eq!(metrics.cpu_millicores(), 500);
        assert_eq!(metrics.memory_bytes(), 3 << 20);
        assert_eq!(store.of_pods([&web]), vec![metrics]);
        assert_eq!(store.of_pods([]), Vec::new());
    }

    #[test]
    fn only_the_pods_own_node_speaks_for_it() {
        let store = PodMetricsStore::new();
        store.record("n1", vec![sample("u1", 10_000, 0, 0)], 10_000);
        // Another node's samples, even of the same uid, are not the pod's,
        // and do not displace its own node's.
        store.record("n2", vec![sample("u1", 15_000, 0, 0)], 15_000);
        store.record("n2", vec![sample("u1", 18_000, 90_000_000_000, 0)], 18_000);
        assert_eq!(
            store.pod(&pod("u1", "n2")).unwrap().cpu_millicores(),
            30_000
        );
        assert_eq!(store.pod(&pod("u1", "n1")), None, "one sample of n1 yet");
        store.record("n1", vec![sample("u1", 20_000, 1_000_000_000, 0)], 20_000);
        assert_eq!(store.pod(&pod("u1", "n1")).unwrap().cpu_millicores(), 100);
        let unbound = Pod {
            spec: Default::default(),
            ..pod("u1", "n1")
        };
        assert_eq!(store.pod(&unbound), None);
    }

    #[test]
    fn a_new_pod_of_the_same_name_starts_over() {
        let store = PodMetricsStore::new();
        store.record("n1", vec![sample("u1", 10_000, 9_000_000_000, 0)], 10_000);
        store.record("n1", vec![sample("u2", 20_000, 1_000_000, 0)], 20_000);
        assert_eq!(store.pod(&pod("u2", "n1")), None);
        assert_eq!(
            store.pod(&pod("u1", "n1")),
            None,
            "not the old pod's either"
        );
    }

    #[test]
    fn a_restarted_container_has_no_rate_until_its_next_sample() {
        let store = PodMetricsStore::new();
        let web = pod("u1", "n1");
        store.record("n1", vec![sample("u1", 10_000, 9_000_000_000, 0)], 10_000);
        store.record("n1", vec![sample("u1", 20_000, 1_000_000, 0)], 20_000);
        assert_eq!(store.pod(&web), None);
        store.record("n1", vec![sample("u1", 30_000, 101_000_000, 0)], 30_000);
        assert_eq!(store.pod(&web).unwrap().cpu_millicores(), 10);
    }

    #[test]
    fn stale_pods_have_no_metrics() {
        let store = PodMetricsStore::new();
        let web = pod("u1", "n1");
        store.record("n1", vec![sample("u1", 0, 0, 0)], 0);
        store.record("n1", vec![sample("u1", 1_000, 1_000, 0)], 1_000);
        assert!(store.pod(&web).is_some());
        store.record("n1", Vec::new(), STALE_AFTER_MS + 1_000);
        assert_eq!(store.pod(&web), None);
    }
}
