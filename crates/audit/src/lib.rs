//! The audit log of Wharf: who did what, when, from where, and how it ended.
//!
//! Logins and failed logins, pushes, pulls, deletes, membership changes,
//! administration and denied requests are recorded as [`AuditEvent`]s.
//! Recording never slows a request: [`AuditLog::record`] only puts the event
//! on a bounded queue (dropping and counting it when the queue is full), and
//! one background task writes the queue to the [`Store`] in batches, one
//! transaction (one commit, one fsync) per batch. Another task deletes events
//! older than the retention.
//!
//! Layout in the store: one key per event,
//! `/audit/<at_ms as 16 digits>-<sequence as 8 hex digits>`, holding the
//! event as JSON. Keys sort by time, so time ranges are key ranges.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn wharf_store::Store>) -> Result<(), wharf_audit::AuditError> {
//! use wharf_audit::{AuditEvent, AuditLog, AuditOptions, AuditQuery, Outcome};
//! let audit = AuditLog::start(store, AuditOptions::default());
//! audit.record(AuditEvent::new("alice", "artifact.push", "proj/app:v1", Outcome::Success));
//! audit.flush().await?;
//! let pushes = audit
//!     .query(&AuditQuery { action: Some("artifact.*".into()), ..AuditQuery::default() })
//!     .await?;
//! assert_eq!(pushes[0].actor, "alice");
//! # Ok(()) }
//! ```

mod event;
mod keys;
mod prune;
mod query;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use wharf_store::{Store, StoreError};

pub use event::{AuditEvent, MAX_FIELD_BYTES, Outcome};
pub use query::{AuditQuery, DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT};

use writer::{Message, Writer};

/// Most events written in one transaction.
///
/// A batch is one `Store` transaction, and the etcd backend must be able to
/// carry it: etcd rejects transactions of more than 128 operations (per
/// list, by default) and requests over 1.5 MiB. Each event is one put plus
/// one guard, and event fields are bounded by [`MAX_FIELD_BYTES`], so 128
/// events fit both limits.
pub const MAX_BATCH_EVENTS: usize = 128;

/// Shortest time between two warnings about dropped events.
const DROP_WARNING_INTERVAL_MS: u64 = 60_000;

/// Tuning of an [`AuditLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    /// How long events are kept; older ones are pruned every
    /// `prune_interval`. Default 90 days; zero disables automatic pruning.
    pub retention: Duration,
    /// Most events per write batch. Default and maximum [`MAX_BATCH_EVENTS`];
    /// values outside `1..=MAX_BATCH_EVENTS` are brought into it.
    pub batch_max: usize,
    /// How long a batch waits for more events after its first. Default 50 ms.
    pub batch_delay: Duration,
    /// Events queued before `record` starts dropping them. Default 100 000; at least 1.
    pub queue: usize,
    /// How often retention is enforced, starting at once. Default 1 hour; at least 1 ms.
    pub prune_interval: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(90 * 24 * 60 * 60),
            batch_max: MAX_BATCH_EVENTS,
            batch_delay: Duration::from_millis(50),
            queue: 100_000,
            prune_interval: Duration::from_secs(60 * 60),
        }
    }
}

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or pruning the store failed.
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    /// Recorded events could not be committed, even after retries.
    #[error("{events} audit events were not committed: {reason}")]
    Commit {
        /// How many events were lost since the previous flush.
        events: u64,
        /// Why the latest failed batch failed.
        reason: String,
    },
    /// The background writer is gone (its runtime shut down).
    #[error("audit writer has stopped")]
    Closed,
}

/// A handle on the audit log; cloning is cheap and shares it.
///
/// The background tasks stop once the last handle is dropped, after writing
/// what was queued.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    queue: mpsc::Sender<Message>,
    dropped: AtomicU64,
    /// When the last drop warning was logged (unix ms; 0: never).
    last_drop_warning_ms: AtomicU64,
    /// Dropping it stops the retention task.
    _stop_retention: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the batch writer and the retention task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(store: Arc<dyn Store>, options: AuditOptions) -> AuditLog {
        let (queue, receiver) = mpsc::channel(options.queue.max(1));
        let batch_max = options.batch_max.clamp(1, MAX_BATCH_EVENTS);
        tokio::spawn(
            Writer::new(Arc::clone(&store), receiver, batch_max, options.batch_delay).run(),
        );
        let stop_retention = (!options.retention.is_zero()).then(|| {
            let (stop, stopped) = oneshot::channel();
            let interval = options.prune_interval.max(Duration::from_millis(1));
            tokio::spawn(prune::run_retention(
                Arc::clone(&store),
                options.retention,
                interval,
                stopped,
            ));
            stop
        });
        AuditLog {
            inner: Arc::new(Inner {
                store,
                queue,
                dropped: AtomicU64::new(0),
                last_drop_warning_ms: AtomicU64::new(0),
                _stop_retention: stop_retention,
            }),
        }
    }

    /// Queues `event` for writing, stamping `at_ms` with the current time when it is 0.
    ///
    /// Never blocks or waits: when the queue is full the event is dropped and
    /// counted in [`AuditLog::dropped`], with a warning logged at most once a minute.
    pub fn record(&self, mut event: AuditEvent) {
        if event.at_ms == 0 {
            event.at_ms = now_ms();
        }
        if let Err(error) = self.inner.queue.try_send(Message::Event(event)) {
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "queue is full",
                mpsc::error::TrySendError::Closed(_) => "writer has stopped",
            };
            self.inner.count_drop(reason);
        }
    }

    /// Waits until every event recorded before this call is committed.
    ///
    /// Fails with [`AuditError::Commit`] when events were lost to failed
    /// commits since the previous flush.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (reply, done) = oneshot::channel();
        self.inner
            .queue
            .send(Message::Flush(reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Committed events matching `query`, newest first.
    ///
    /// Reads the query's whole time range, keeping the newest `limit` matches;
    /// set `since_ms` to bound the work on a large log.
    #[tracing::instrument(level = "debug", skip_all, err)]
    pub async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, AuditError> {
        Ok(query::run(self.inner.store.as_ref(), query).await?)
    }

    /// Deletes events that happened before `older_than_ms` (a unix millisecond
    /// time, not an age) and returns how many it removed.
    ///
    /// The log also does this itself every [`AuditOptions::prune_interval`].
    #[tracing::instrument(level = "debug", skip(self), err)]
    pub async fn prune(&self, older_than_ms: u64) -> Result<u64, AuditError> {
        Ok(prune::prune_before(self.inner.store.as_ref(), older_than_ms).await?)
    }

    /// How many events [`AuditLog::record`] has dropped since start.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn count_drop(&self, reason: &str) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.last_drop_warning_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= DROP_WARNING_INTERVAL_MS;
        // Of the racing callers, only the one that moves the clock logs.
        if due
            && self
                .last_drop_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(dropped, reason, "dropping audit events");
        }
    }
}

/// The current unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
