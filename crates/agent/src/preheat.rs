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
