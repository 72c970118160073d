//! Preheat on the node: the agent asks the server every few seconds for
//! its own unfinished preheats (`GET /api/v1/nodes/{node}/preheats`, node
//! credential), pulls each image into the node's cache with the runtime,
//! and reports `Pulling` (with bytes as they grow), then `Done` or, after
//! [`PREHEAT_PULL_ATTEMPTS`] failed tries, `Failed` with the last error.
//!
//! Polling keeps it simple and robust: a report lost on the way is made
//! again on the next round, since the server lists a preheat until the
//! node has finished it (a second pull of a cached image costs nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::task::AbortOnDropHandle;
use wharf_api::preheat::{
    NodePreheatState, PREHEAT_PULL_ATTEMPTS, PreheatAssignment, PreheatReport,
};

use crate::api::NodeApi;
use crate::runtime::Runtime;

/// How often the agent asks for preheats by default.
pub const DEFAULT_PREHEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How often a running pull's progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Preheat pulls at once: they compete with pods' pulls for the link.
const CONCURRENT_PREHEATS: usize = 2;

/// The first wait before a failed pull is tried again; doubled each time.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the preheat loop works with.
#[derive(Clone)]
pub(crate) struct Preheater {
    pub api: Arc<dyn NodeApi>,
    pub runtime: Arc<dyn Runtime>,
    pub node: String,
    /// Bumped after each image warmed, so the node reports its cache at once.
    pub warmed: watch::Sender<u64>,
    /// The first wait before a retry.
    pub retry_after: Duration,
}

type Key = (String, String);

impl Preheater {
    /// Asks for preheats every `every` and works on each new one, until
    /// dropped.
    pub(crate) async fn run(self, every: Duration) {
        let slots = Arc::new(Semaphore::new(CONCURRENT_PREHEATS));
        let mut working: HashMap<Key, AbortOnDropHandle<()>> = HashMap::new();
        loop {
            match self.api.preheats(&self.node).await {
                Ok(assignments) => self.take(assignments, &slots, &mut working),
                Err(err) => {
                    tracing::debug!(error = %err, node = self.node, "listing preheats failed")
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Starts work on the assignments not under way already.
    fn take(
        &self,
        assignments: Vec<PreheatAssignment>,
        slots: &Arc<Semaphore>,
        working: &mut HashMap<Key, AbortOnDropHandle<()>>,
    ) {
        working.retain(|_, task| !task.is_finished());
        for assignment in assignments {
            let key = (assignment.project.clone(), assignment.name.clone());
            if working.contains_key(&key) {
                continue;
            }
            let this = self.clone();
            let slots = slots.clone();
            let task = tokio::spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                this.preheat(&assignment).await;
            });
            working.insert(key, AbortOnDropHandle::new(task));
        }
    }

    /// Pulls one assignment's image, retrying a bounded number of times,
    /// and reports how it went.
    pub(crate) async fn preheat(&self, assignment: &PreheatAssignment) {
        let mut last_error = String::new();
        for attempt in 1..=PREHEAT_PULL_ATTEMPTS {
            let message = (attempt > 1).then(|| {
                format!(
                    "attempt {attempt} of {PREHEAT_PULL_ATTEMPTS}; the last failed: {last_error}"
                )
            });
            self.report(assignment, NodePreheatState::Pulling, 0, 0, message)
                .await;
            match self.pull_reporting(assignment).await {
                Ok(bytes) => {
                    self.report(assignment, NodePreheatState::Done, bytes, bytes, None)
                        .await;
                    self.warmed.send_modify(|n| *n += 1);
                    tracing::info!(
                        node = self.node,
                        image = assignment.image,
                        bytes,
                        "image preheated"
                    );
                    return;
                }
                Err(err) => {
                    tracing::warn!(node = self.node, image = assignment.image, attempt, error = %err, "preheat pull failed");
                    last_error = err;
                }
            }
            if attempt < PREHEAT_PULL_ATTEMPTS {
                tokio::time::sleep(self.retry_after * 2u32.pow(attempt - 1)).await;
            }
        }
        let message = format!(
            "pulling {} failed {PREHEAT_PULL_ATTEMPTS} times; the last: {last_error}",
            assignment.image
        );
        self.report(assignment, NodePreheatState::Failed, 0, 0, Some(message))
            .await;
    }

    /// Pulls the image, reporting its progress every few seconds while it
    /// runs; the image's bytes once it is in the cache.
    async fn pull_reporting(&self, assignment: &PreheatAssignment) -> Result<u64, String> {
        let latest = Arc::new(Mutex::new((0u64, 0u64)));
        let progress = {
            let latest = latest.clone();
            move |done: u64, total: u64| {
                *latest.lock().expect("progress lock") = (done, total);
            }
        };
        let pull = self.runtime.preheat(&assignment.image, &progress);
        tokio::pin!(pull);
        let mut every = tokio::time::interval(PROGRESS_EVERY);
        every.tick().await;
        loop {
            tokio::select! {
                pulled = &mut pull => return pulled,
                _ = every.tick() => {
                    let (done, total) = *latest.lock().expect("progress lock");
                    self.report(assignment, NodePreheatState::Pulling, done, total, None).await;
                }
            }
        }
    }

    async fn report(
        &self,
        assignment: &PreheatAssignment,
        state: NodePreheatState,
        bytes: u64,
        total_bytes: u64,
        message: Option<String>,
    ) {
        let report = PreheatReport {
            state,
            bytes,
            total_bytes,
            message,
        };
        let sent = self
            .api
            .report_preheat(&self.node, &assignment.project, &assignment.name, &report)
            .await;
        if let Err(err) = sent {
            // The next round lists it again if the server missed the end.
            tracing::warn!(error = %err, node = self.node, preheat = assignment.name, "preheat report failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use wharf_api::{IpClaim, Pod, PodStatus};

    use super::*;
    use crate::AgentError;
    use crate::api::{PodChanges, ServiceChanges};
    use crate::runtime::{Progress, Synced};
    use crate::service_view::ServiceView;

    /// Hands out one preheat and records the reports on it.
    #[derive(Default)]
    struct OnePreheat {
        reports: Mutex<Vec<PreheatReport>>,
    }

    fn assignment() -> PreheatAssignment {
        PreheatAssignment {
            project: "shop".into(),
            name: "ph-1".into(),
            image: "shop/web@sha256:0123".into(),
        }
    }

    #[async_trait]
    impl NodeApi for OnePreheat {
        async fn preheats(&self, node: &str) -> Result<Vec<PreheatAssignment>, AgentError> {
            assert_eq!(node, "n1");
            let finished = self
                .reports
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.state.is_final());
            Ok(if finished {
                Vec::new()
            } else {
                vec![assignment()]
            })
        }

        async fn report_preheat(
            &self,
            node: &str,
            project: &str,
            name: &str,
            report: &PreheatReport,
        ) -> Result<(), AgentError> {
            assert_eq!((node, project, name), ("n1", "shop", "ph-1"));
            self.reports.lock().unwrap().push(report.clone());
            Ok(())
        }

        async fn register(&self, _: wharf_api::Node) -> Result<wharf_api::Node, AgentError> {
            unreachable!("preheat registers no node")
        }
        async fn heartbeat(&self, _: &str, _: Option<u64>, _: Duration) -> Result<u64, AgentError> {
            unreachable!("preheat sends no heartbeat")
        }
        async fn list_pods(&self, _: Option<&str>) -> Result<(Vec<Pod>, u64), AgentError> {
            unreachable!("preheat lists no pods")
        }
        async fn watch_pods(&self, _: Option<&str>, _: u64) -> Result<PodChanges, AgentError> {
            unreachable!("preheat watches no pods")
        }
        async fn set_pod_status(&self, _: &str, _: &str, _: &PodStatus) -> Result<(), AgentError> {
            unreachable!("preheat reports no pod status")
        }
        async fn pod_event(
            &self,
            _: &str,
            _: &str,
            _: &wharf_api::PodEventReport,
        ) -> Result<(), AgentError> {
            unreachable!("preheat records no pod event")
        }
        async fn claim_ip(&self, _: &str, _: &str) -> Result<Option<IpClaim>, AgentError> {
            unreachable!("preheat claims no address")
        }
        async fn release_ip(&self, _: &str, _: &str, _: &str) -> Result<(), AgentError> {
            unreachable!("preheat releases no address")
        }
        async fn pod_stopped(&self, _: &str, _: &str, _: &str) -> Result<(), AgentError> {
            unreachable!("preheat stops no pod")
        }
        async fn may_access_pod(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: crate::api::PodAccess,
        ) -> Result<bool, AgentError> {
            unreachable!("preheat serves no pod")
        }
        async fn config_map(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Option<wharf_api::ConfigMap>, AgentError> {
            unreachable!("preheat reads no ConfigMap")
        }
        async fn secret(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Option<wharf_api::Secret>, AgentError> {
            unreachable!("preheat reads no Secret")
        }
        async fn claims(
            &self,
            _: &str,
        ) -> Result<Vec<wharf_api::PersistentVolumeClaim>, AgentError> {
            unreachable!("preheat reads no claim")
        }
        async fn report_usage(&self, _: &str, _: &[wharf_api::PodUsage]) -> Result<(), AgentError> {
            unreachable!("preheat reports no usage")
        }
        async fn push_metrics(
            &self,
            _: &str,
            _: &[wharf_api::FalconSample],
        ) -> Result<(), AgentError> {
            unreachable!("preheat pushes no metrics")
        }
        async fn node_services(&self, _: &str) -> Result<(ServiceView, u64), AgentError> {
            unreachable!("preheat reads no services")
        }
        async fn watch_services(&self, _: &str, _: u64) -> Result<ServiceChanges, AgentError> {
            unreachable!("preheat watches no services")
        }
    }

    /// Fails the first `failures` pulls, then holds the image (1000 bytes).
    struct FlakyCache {
        failures: u32,
        pulls: AtomicU32,
    }

    #[async_trait]
    impl Runtime for FlakyCache {
        async fn sync(&self, _: &Pod, _: Progress<'_>) -> Synced {
            unreachable!("preheat syncs no pod")
        }
        async fn remove(&self, _: &str, _: &str, _: Option<&str>) {}
        async fn pods(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        async fn preheat(
            &self,
            image: &str,
            progress: &(dyn Fn(u64, u64) + Send + Sync),
        ) -> Result<u64, String> {
            assert_eq!(image, "shop/web@sha256:0123");
            let pull = self.pulls.fetch_add(1, Ordering::SeqCst) + 1;
            if pull <= self.failures {
                return Err(format!("manifest unknown (pull {pull})"));
            }
            progress(1000, 1000);
            Ok(1000)
        }
    }

    fn preheater(failures: u32) -> (Preheater, Arc<OnePreheat>, Arc<FlakyCache>) {
        let api = Arc::new(OnePreheat::default());
        let runtime = Arc::new(FlakyCache {
            failures,
            pulls: AtomicU32::new(0),
        });
        let preheater = Preheater {
            api: api.clone(),
            runtime: runtime.clone(),
            node: "n1".into(),
            warmed: watch::channel(0).0,
            retry_after: Duration::from_millis(1),
        };
        (preheater, api, runtime)
    }

    fn states(api: &OnePreheat) -> Vec<NodePreheatState> {
        api.reports
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.state)
            .collect()
    }

    #[tokio::test]
    async fn a_pull_that_fails_once_is_retried_and_reported_done() {
        let (preheater, api, runtime) = preheater(1);
        let warmed = preheater.warmed.subscribe();
        preheater.preheat(&assignment()).await;
        use NodePreheatState::*;
        assert_eq!(states(&api), [Pulling, Pulling, Done]);
        let reports = api.reports.lock().unwrap().clone();
        let retry = reports[1].message.as_deref().unwrap();
        assert!(
            retry.contains("attempt 2 of 3") && retry.contains("manifest unknown (pull 1)"),
            "{retry}"
        );
        assert_eq!((reports[2].bytes, reports[2].total_bytes), (1000, 1000));
        assert_eq!(runtime.pulls.load(Ordering::SeqCst), 2);
        assert_eq!(*warmed.borrow(), 1, "the status report is woken");
    }

    #[tokio::test]
    async fn retries_are_bounded_then_the_node_reports_failed() {
        let (preheater, api, runtime) = preheater(u32::MAX);
        preheater.preheat(&assignment()).await;
        assert_eq!(runtime.pulls.load(Ordering::SeqCst), PREHEAT_PULL_ATTEMPTS);
        let reports = api.reports.lock().unwrap().clone();
        let last = reports.last().unwrap();
        assert_eq!(last.state, NodePreheatState::Failed);
        let message = last.message.as_deref().unwrap();
        assert!(
            message.contains("failed 3 times") && message.contains("(pull 3)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn the_loop_takes_listed_preheats_once_until_finished() {
        let (preheater, api, runtime) = preheater(0);
        let running = tokio::spawn(preheater.run(Duration::from_millis(5)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !states(&api).contains(&NodePreheatState::Done) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never done: {:?}",
                states(&api)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Listed no more once done: no second pull.
        tokio::time::sleep(Duration::from_millis(50)).await;
        running.abort();
        assert_eq!(runtime.pulls.load(Ordering::SeqCst), 1);
    }
}
