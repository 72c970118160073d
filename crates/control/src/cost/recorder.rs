//! The cost recorder (leader only): just after each minute boundary it
//! takes the nodes, the pods bound to them and the pods' measured usage,
//! shares each node's cost for the minute that closed among its pods
//! ([`allocate`](super::allocation::allocate)) and appends the rows to
//! the [`CostHistory`].
//!
//! A minute is recorded at most once in the whole cluster: the recorder
//! claims it by compare-and-swap on [`RECORDED_MINUTE_KEY`] in the Store
//! before writing, so a leader change cannot record it twice, and the
//! history refuses a minute it already has, so neither can a restart.
//! Minutes during which no server led are not recorded (gaps, for nodes
//! and pods alike, so reports still reconcile).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wharf_api::{LABEL_CLUSTER, LABEL_MACHINE_CLASS, LABEL_POOL, NO_GROUP, Node, Pod, PodPhase};
use wharf_store::{StoreError, StoreExt};

use super::allocation::{NodeGroups, NodeMinute, PodMinute, allocate};
use super::history::CostHistory;
use crate::ControlError;
use crate::deployments::{Clock, deployment_of};
use crate::objects::{Objects, now_millis};
use crate::pod_metrics::PodMetricsStore;

/// Store key holding the last unix minute claimed for recording.
pub const RECORDED_MINUTE_KEY: &str = "/cost/recorded-minute";

/// How long after a boundary the recorder looks: pods' last changes of
/// the minute have landed by then.
const AFTER_BOUNDARY: Duration = Duration::from_secs(1);

/// Records each minute's cost into the history.
pub struct CostRecorder {
    objects: Objects,
    metrics: PodMetricsStore,
    history: CostHistory,
    clock: Clock,
}

impl CostRecorder {
    /// A recorder of the nodes and pods in `objects`, with usage from
    /// `metrics`, into `history`, on the system clock.
    pub fn new(objects: Objects, metrics: PodMetricsStore, history: CostHistory) -> CostRecorder {
        CostRecorder {
            objects,
            metrics,
            history,
            clock: Arc::new(now_millis),
        }
    }

    /// The same with `clock` (unix ms) for "now": tests feed minutes.
    pub fn with_clock(mut self, clock: Clock) -> CostRecorder {
        self.clock = clock;
        self
    }

    /// Records every minute as it closes, until dropped.
    pub async fn run(&self) {
        loop {
            if let Err(err) = self.record_closed_minute().await {
                tracing::warn!(error = %err, "recording cost failed");
            }
            let into_minute = (self.clock)() % 60_000;
            tokio::time::sleep(Duration::from_millis(60_000 - into_minute) + AFTER_BOUNDARY).await;
        }
    }

    /// Records the minute that closed last (before the clock's current
    /// one) unless it is recorded already; returns it when recorded now.
    pub async fn record_closed_minute(&self) -> Result<Option<u64>, ControlError> {
        let Some(minute) = ((self.clock)() / 60_000).checked_sub(1) else {
            return Ok(None);
        };
        let nodes = self.snapshot().await?;
        if !self.claim(minute).await? {
            return Ok(None);
        }
        let rows: Vec<_> = nodes.iter().flat_map(|n| allocate(n, minute)).collect();
        let history = self.history.clone();
        let appended = tokio::task::spawn_blocking(move || history.append(minute, &rows))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Internal(format!("cost history: {e}")))?;
        Ok(appended.then_some(minute))
    }

    /// Claims `minute` in the Store: `false` if it (or a later one) was
    /// claimed already, by this server or another.
    async fn claim(&self, minute: u64) -> Result<bool, StoreError> {
        let store = self.objects.store();
        let current = store.get(RECORDED_MINUTE_KEY).await?;
        let (claimed, revision) = match &current {
            Some(kv) => (
                String::from_utf8_lossy(&kv.value).parse::<u64>().ok(),
                kv.mod_revision,
            ),
            None => (None, 0),
        };
        if claimed.is_some_and(|c| c >= minute) {
            return Ok(false);
        }
        let value = minute.to_string().into_bytes();
        Ok(store
            .put_if(RECORDED_MINUTE_KEY, value, revision)
            .await?
            .is_some())
    }

    /// Every priced node with the pods bound to it that hold resources
    /// (all but finished ones), with their usage where measured.
    async fn snapshot(&self) -> Result<Vec<NodeMinute>, ControlError> {
        let (nodes, _) = self.objects.list::<Node>(None, None).await?;
        let (pods, _) = self.objects.list::<Pod>(None, None).await?;
        let mut minutes: Vec<NodeMinute> = nodes
            .iter()
            .filter_map(|node| {
                let price = node.spec.cost_per_hour.filter(|p| *p > 0.0)?;
                let label = |key: &str| {
                    node.metadata
                        .labels
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| NO_GROUP.into())
                };
                Some(NodeMinute {
                    groups: NodeGroups {
                        pool: label(LABEL_POOL),
                        cluster: label(LABEL_CLUSTER),
                        class: label(LABEL_MACHINE_CLASS),
                    },
                    price_micros_per_hour: (price * 1e6).round() as u64,
                    cpu_millis: node.status.capacity.cpu_millis,
                    memory_bytes: node.status.capacity.memory_bytes,
                    pods: Vec::new(),
                })
            })
            .collect();
        let index: HashMap<&str, usize> = nodes
            .iter()
            .filter(|n| n.spec.cost_per_hour.is_some_and(|p| p > 0.0))
            .enumerate()
            .map(|(i, n)| (n.metadata.name.as_str(), i))
            .collect();
        for pod in &pods {
            let Some(node) = pod.spec.node_name.as_deref() else {
                continue;
            };
            if matches!(pod.status.phase, PodPhase::Succeeded | PodPhase::Failed) {
                continue;
            }
            let Some(&at) = index.get(node) else {
                continue;
            };
            minutes[at].pods.push(self.pod_minute(pod));
        }
        Ok(minutes)
    }

    fn pod_minute(&self, pod: &Pod) -> PodMinute {
        let project = pod.metadata.project.clone().unwrap_or_default();
        let requests = pod.spec.requests().unwrap_or_default();
        let usage = self.metrics.pod(pod);
        PodMinute {
            deployment: deployment_of(pod).unwrap_or_else(|| NO_GROUP.into()),
            project,
            cpu_request: requests.cpu_millis,
            memory_request: requests.memory_bytes,
            cpu_usage: usage.as_ref().map_or(0, |u| u.cpu_millicores()),
            memory_usage: usage.as_ref().map_or(0, |u| u.memory_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};

    use wharf_api::{CostGrouping, PodUsage};

    use super::*;
    use crate::cost::{build_report, minute_cost};
    use crate::test_objects::{four_core_node, objects};

    /// A pod of deployment `deployment` in `project` on `node`.
    fn pod(project: &str, deployment: &str, name: &str, node: &str, cpu: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "project": project, "ownerReferences": [
                {"kind": "Deployment", "name": deployment, "uid": "u"}]},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "i",
                "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn node(name: &str, pool: &str, price: f64) -> Node {
        let mut node = four_core_node(name);
        node.metadata.labels.insert(LABEL_POOL.into(), pool.into());
        node.spec.cost_per_hour = Some(price);
        node
    }

    #[tokio::test]
    async fn minutes_are_recorded_once_and_reports_reconcile_to_the_cent() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let now = Arc::new(AtomicU64::new(0));
        let clock = now.clone();
        let history = CostHistory::open(&dir.path().join("cost")).unwrap();
        let metrics = PodMetricsStore::new();
        let recorder = CostRecorder::new(objects.clone(), metrics.clone(), history.clone())
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        let at_minute = |m: u64| now.store(m * 60_000 + 1_000, Ordering::SeqCst);
        objects.create(node("old-1", "old", 0.37)).await.unwrap();
        objects.create(node("new-1", "new", 1.13)).await.unwrap();
        at_minute(0);
        assert_eq!(recorder.record_closed_minute().await.unwrap(), None);
        // Minutes 0..10 with web on old-1, 10..70 with db on new-1 too.
        objects
            .create(pod("shop", "web", "web-1", "old-1", "500m"))
            .await
            .unwrap();
        for m in 1..=10 {
            at_minute(m);
            assert_eq!(recorder.record_closed_minute().await.unwrap(), Some(m - 1));
        }
        assert_eq!(recorder.record_closed_minute().await.unwrap(), None, "once");
        let db = objects
            .create(pod("bank", "db", "db-1", "new-1", "3"))
            .await
            .unwrap();
        // db uses more CPU than it asked for.
        for (at, cpu_ns) in [(0, 0), (1000, 3_500_000_000u64)] {
            let sample = PodUsage {
                project: "bank".into(),
                name: "db-1".into(),
                uid: db.metadata.uid.clone(),
                timestamp_ms: at,
                containers: vec![wharf_api::ContainerUsageSample {
                    name: "main".into(),
                    usage: wharf_api::ContainerUsage {
                        cpu_usage_ns: cpu_ns,
                        memory_working_set_bytes: 1 << 30,
                    },
                }],
            };
            metrics.record("new-1", vec![sample], at);
        }
        for m in 11..=70 {
            at_minute(m);
            recorder.record_closed_minute().await.unwrap();
        }
        objects
            .delete::<Pod>(Some("shop"), "web-1", None)
            .await
            .unwrap();
        at_minute(71);
        recorder.record_closed_minute().await.unwrap();
        let window = history.read(0, 71).unwrap();
        assert_eq!(window.minutes, 71);
        // 71 minutes of both nodes: the hour is exact, the rest by minute.
        let node_cost: u64 = [370_000u64, 1_130_000]
            .iter()
            .map(|p| (0..71).map(|m| minute_cost(*p, m)).sum::<u64>())
            .sum();
        for by in [
            CostGrouping::Project,
            CostGrouping::Pool,
            CostGrouping::Deployment,
        ] {
            let report = build_report(&window, by, 0, 71 * 60_000, None);
            assert_eq!(report.total.micros.total(), node_cost, "{by}");
            let cents: u64 = report
                .rows
                .iter()
                .map(|r| (r.total * 100.0).round() as u64)
                .sum();
            assert_eq!(cents, (node_cost + 5_000) / 10_000, "{by}");
        }
        let report = build_report(&window, CostGrouping::Project, 0, 71 * 60_000, None);
        let groups: Vec<&str> = report.rows.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(groups, ["bank", "shop", "(unallocated)"]);
        let bank = &report.rows[0].micros;
        assert_eq!(bank.idle, 0, "usage above the request leaves nothing idle");
        assert!(
            report.rows[1].micros.idle > 0,
            "web used nothing it asked for"
        );
        let mine = HashSet::from(["shop".to_string()]);
        let own = build_report(&window, CostGrouping::Project, 0, 71 * 60_000, Some(&mine));
        assert_eq!(own.rows.len(), 1, "a member sees their own project only");
    }
}
