//! The background writer: drains the queue into batches, one transaction each.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout_at};
use wharf_store::{Store, StoreError, Txn};

use crate::keys;
use crate::{AuditError, AuditEvent};

/// Most JSON bytes in one batch. With the event count cap this keeps a
/// transaction (values, keys and guards) well under etcd's 1.5 MiB request limit.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Tries per batch before its events are given up as lost.
const COMMIT_ATTEMPTS: u32 = 5;

/// Wait after the first failed try; doubled after each further one (~1.5 s in all).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What handles send to the writer, in one queue so a flush follows every
/// event recorded before it.
pub(crate) enum Message {
    Event(AuditEvent),
    Flush(oneshot::Sender<Result<(), AuditError>>),
}

/// An event ready to store.
struct Encoded {
    at_ms: u64,
    json: Vec<u8>,
}

#[derive(Default)]
struct Batch {
    events: Vec<Encoded>,
    bytes: usize,
    flushes: Vec<oneshot::Sender<Result<(), AuditError>>>,
    /// Takes no more messages: a flush is waiting or the next event did not fit.
    sealed: bool,
}

impl Batch {
    fn push(&mut self, event: Encoded) {
        self.bytes += event.json.len();
        self.events.push(event);
    }
}

pub(crate) struct Writer {
    store: Arc<dyn Store>,
    queue: mpsc::Receiver<Message>,
    batch_max: usize,
    batch_delay: Duration,
    /// Makes keys unique; seeded at random so replicas sharing a store start
    /// far apart, and guarded in the transaction in case they still meet.
    next_seq: u32,
    /// An event taken from the queue that did not fit the previous batch.
    carried: Option<Encoded>,
    /// Events lost since the last flush was answered, and the latest reason.
    unreported: Option<(u64, String)>,
}

impl Writer {
    /// `batch_max` must already be within `1..=MAX_BATCH_EVENTS`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        queue: mpsc::Receiver<Message>,
        batch_max: usize,
        batch_delay: Duration,
    ) -> Self {
        Self {
            store,
            queue,
            batch_max,
            batch_delay,
            next_seq: rand::random(),
            carried: None,
            unreported: None,
        }
    }

    /// Writes batches until every handle is gone and the queue is drained.
    pub(crate) async fn run(mut self) {
        loop {
            let mut batch = Batch::default();
            match self.carried.take() {
                Some(event) => batch.push(event),
                None => match self.queue.recv().await {
                    Some(message) => self.add(&mut batch, message),
                    None => return,
                },
            }
            let open = self.fill(&mut batch).await;
            self.commit(batch).await;
            if !open {
                return;
            }
        }
    }

    /// Takes messages until the batch is full or sealed or `batch_delay` has
    /// passed since it started; false once the queue is closed and empty.
    async fn fill(&mut self, batch: &mut Batch) -> bool {
        let deadline = Instant::now() + self.batch_delay;
        while !batch.sealed && batch.events.len() < self.batch_max {
            // Polls the queue before the timer, so a busy queue fills the batch even past the deadline.
            match timeout_at(deadline, self.queue.recv()).await {
                Ok(Some(message)) => self.add(batch, message),
                Ok(None) => return false,
                Err(_elapsed) => break,
            }
        }
        true
    }

    fn add(&mut self, batch: &mut Batch, message: Message) {
        match message {
            Message::Flush(reply) => {
                batch.flushes.push(reply);
                batch.sealed = true;
            }
            Message::Event(event) => {
                let Some(event) = encode(event) else { return };
                if !batch.events.is_empty() && batch.bytes + event.json.len() > MAX_BATCH_BYTES {
                    self.carried = Some(event);
                    batch.sealed = true;
                } else {
                    batch.push(event);
                }
            }
        }
    }

    async fn commit(&mut self, batch: Batch) {
        if !batch.events.is_empty()
            && let Err(reason) = self.write(&batch.events).await
        {
            let events = batch.events.len() as u64;
            tracing::warn!(events, %reason, "audit events lost: batch commit failed");
            let lost = self.unreported.take().map_or(0, |(lost, _)| lost);
            self.unreported = Some((lost + events, reason));
        }
        if batch.flushes.is_empty() {
            return;
        }
        let unreported = self.unreported.take();
        for reply in batch.flushes {
            let result = match &unreported {
                None => Ok(()),
                Some((events, reason)) => Err(AuditError::Commit {
                    events: *events,
                    reason: reason.clone(),
                }),
            };
            // The flusher may have stopped waiting; nothing to tell then.
            let _ = reply.send(result);
        }
    }

    /// Commits `events` in one guarded transaction, retrying transient failures.
    async fn write(&mut self, events: &[Encoded]) -> Result<(), String> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut txn = Txn::new();
            for event in events {
                let key = keys::event_key(event.at_ms, self.next_seq);
                self.next_seq = self.next_seq.wrapping_add(1);
                // Never overwrite an event another replica wrote under the same key.
                txn = txn
                    .when_revision(key.as_str(), 0)
                    .put(key, event.json.clone());
            }
            let reason = match self.store.txn(txn).await {
                Ok(result) if result.succeeded => return Ok(()),
                Ok(_) => "an event key already exists".to_owned(),
                Err(error @ StoreError::Backend(_)) => error.to_string(),
                // Closed or invalid: trying again cannot help.
                Err(error) => return Err(error.to_string()),
            };
            if attempt == COMMIT_ATTEMPTS {
                return Err(reason);
            }
            tracing::debug!(attempt, %reason, "audit batch commit failed; retrying");
            sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }
}

fn encode(mut event: AuditEvent) -> Option<Encoded> {
    event.bound();
    match serde_json::to_vec(&event) {
        Ok(json) => Some(Encoded {
            at_ms: event.at_ms,
            json,
        }),
        Err(error) => {
            tracing::warn!(%error, "audit event dropped: cannot encode it");
            None
        }
    }
}
