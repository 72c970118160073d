//! The single writer thread and its group commit.
//!
//! Every write of the store goes through one thread. It takes all requests
//! waiting in its queue, applies them one after another in a single redb write
//! transaction (each successful one under its own revision, each seeing the
//! effects of those before it), commits once, and only then answers the
//! requests and publishes their events. One fsync thus serves a whole batch,
//! which is what lets many concurrent callers do thousands of writes a second.

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, oneshot};

use super::backend;
use super::leases::LeaseClocks;
use super::schema::{
    KV, LEASE_KEYS, LEASES, LOG, META, Meta, decode_record, encode_event, encode_record,
};
use crate::{
    Compare, EventKind, KeyValue, LeaseId, Op, Revision, StoreError, Txn, TxnResult, WatchEvent,
};

/// Most requests applied in one write transaction, so that a flood of writes
/// still gets answered in bounded slices.
const MAX_BATCH: usize = 4096;

/// A write waiting for the writer thread.
pub(super) enum Request {
    /// Apply a transaction.
    Txn(Txn, Pending<TxnResult>),
    /// Grant a lease with this TTL.
    Grant(Duration, Pending<LeaseId>),
    /// Revoke a lease and delete its keys.
    Revoke(LeaseId, Pending<()>),
}

/// The caller's side of a request: where to send its result once the batch
/// holding it is committed (or failed).
pub(super) struct Pending<T> {
    reply: oneshot::Sender<Result<T, StoreError>>,
    outcome: Option<Result<T, StoreError>>,
}

impl<T> Pending<T> {
    /// A request answered on `reply`.
    pub fn new(reply: oneshot::Sender<Result<T, StoreError>>) -> Self {
        Self {
            reply,
            outcome: None,
        }
    }

    /// Answers the caller: with the outcome applied in the batch, or with the
    /// batch's failure, since then nothing of it was committed.
    fn answer(self, batch_failure: Option<&str>) {
        let result = match (batch_failure, self.outcome) {
            (Some(message), _) => Err(StoreError::Backend(message.to_owned())),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(StoreError::Backend("write was never applied".into())),
        };
        // The caller may have stopped waiting; the write stands all the same.
        let _ = self.reply.send(result);
    }
}

impl Request {
    fn answer(self, batch_failure: Option<&str>) {
        match self {
            Self::Txn(_, pending) => pending.answer(batch_failure),
            Self::Grant(_, pending) => pending.answer(batch_failure),
            Self::Revoke(_, pending) => pending.answer(batch_failure),
        }
    }
}

/// The changes one revision made, in op order.
#[derive(Debug)]
pub(super) struct Committed {
    /// The revision.
    pub revision: Revision,
    /// Its events; never empty.
    pub events: Vec<WatchEvent>,
}

/// The revisions of one committed batch, in order, as broadcast to watchers.
pub(super) type CommitBatch = Arc<[Committed]>;

/// The store's end of the writer thread; dropping it stops the thread and waits for it.
pub(super) struct WriterHandle {
    // Both are `Option` only so that `drop` can close the queue before joining.
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    /// Queues a request.
    pub fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests
            .as_ref()
            .and_then(|requests| requests.send(request).ok())
            .ok_or(StoreError::Closed)
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued and exit; joining it
        // means its handle on the database is gone once the store is, so the file can be
        // opened again at once.
        self.requests.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// The shortest wait between two looks for expired leases.
const MIN_LEASE_WAIT: Duration = Duration::from_millis(5);

/// The writer thread's state.
pub(super) struct Writer {
    pub db: Arc<Database>,
    pub events: broadcast::Sender<CommitBatch>,
    pub leases: Arc<LeaseClocks>,
    pub history_retention: u64,
    pub lease_check_interval: Duration,
}

impl Writer {
    /// Starts the thread.
    pub fn spawn(self) -> Result<WriterHandle, StoreError> {
        let (requests, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wharf-store-writer".into())
            .spawn(move || self.run(&queue))
            .map_err(backend("start store writer thread"))?;
        Ok(WriterHandle {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Serves batches until every sender is gone; expires leases in between.
    fn run(self, queue: &mpsc::Receiver<Request>) {
        let mut next_lease_check = Instant::now() + self.lease_check_interval;
        loop {
            let wait = next_lease_check.saturating_duration_since(Instant::now());
            let mut requests = Vec::new();
            match queue.recv_timeout(wait) {
                Ok(request) => requests.push(request),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            requests.extend(queue.try_iter().take(MAX_BATCH - 1));

            // Checked on every pass, not only on timeouts, so that a busy store still
            // expires its leases on time.
            let check = Instant::now() >= next_lease_check;
            let expired = if check {
                self.leases.expired(Instant::now())
            } else {
                Vec::new()
            };

            if !requests.is_empty() || !expired.is_empty() {
                self.commit_batch(requests, &expired);
            }
            if check {
                next_lease_check = self.next_lease_check(Instant::now());
            }
        }
    }

    /// When to look for expired leases next: at the earliest deadline (a
    /// node's lease expiry starts its failover, so it is not left waiting
    /// for the interval), and at least once an interval.
    fn next_lease_check(&self, now: Instant) -> Instant {
        let latest = now + self.lease_check_interval;
        match self.leases.next_deadline() {
            // Not sooner than MIN_LEASE_WAIT: a lease whose expiry failed
            // to commit must not make the writer spin.
            Some(deadline) => latest.min(deadline.max(now + MIN_LEASE_WAIT)),
            None => latest,
        }
    }

    /// Applies and commits one batch, then publishes its events and answers its requests.
    fn commit_batch(&self, mut requests: Vec<Request>, expired: &[LeaseId]) {
        let started = Instant::now();
        match self.write_batch(&mut requests, expired) {
            Ok(effects) => {
                self.apply_lease_changes(&effects.lease_changes);
                if !effects.committed.is_empty() {
                    // Published before answering, so a writer's own watch already has
                    // its event when the write returns. No receivers is not an error.
                    let _ = self.events.send(effects.committed.into());
                }
                for request in requests {
                    request.answer(None);
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = requests.len(), "store write batch failed");
                let message = match error {
                    StoreError::Backend(message) => message,
                    other => other.to_string(),
                };
                for request in requests {
                    request.answer(Some(&message));
                }
            }
        }
        tracing::trace!(elapsed = ?started.elapsed(), "store write batch done");
    }

    /// Runs the batch in one durable write transaction. An error means nothing was committed.
    fn write_batch(
        &self,
        requests: &mut [Request],
        expired: &[LeaseId],
    ) -> Result<BatchEffects, StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(backend("begin write transaction"))?;
        let effects = {
            let mut batch = Batch::open(&txn)?;
            // Expiry first, so a request in the same batch cannot bind a key to a dead lease.
            for &lease in expired {
                batch.expire(lease)?;
            }
            for request in requests.iter_mut() {
                batch.apply(request)?;
            }
            batch.compact(self.history_retention)?;
            batch.finish()?
        };
        txn.commit().map_err(backend("commit write transaction"))?;
        Ok(effects)
    }

    /// Mirrors committed grants and revocations in the in-memory deadlines.
    fn apply_lease_changes(&self, changes: &[LeaseChange]) {
        for change in changes {
            match *change {
                LeaseChange::Granted(id, ttl) => self.leases.insert(id, ttl),
                LeaseChange::Removed(id) => self.leases.remove(id),
            }
        }
    }
}

/// What a committed batch changed outside the database.
struct BatchEffects {
    committed: Vec<Committed>,
    lease_changes: Vec<LeaseChange>,
}

enum LeaseChange {
    Granted(LeaseId, Duration),
    Removed(LeaseId),
}

/// A batch being applied: the open tables of its write transaction and what it did so far.
struct Batch<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    log: Table<'t, (u64, u32), &'static [u8]>,
    meta_table: Table<'t, &'static str, u64>,
    leases: Table<'t, u64, u64>,
    lease_keys: Table<'t, (u64, &'static str), ()>,
    meta: Meta,
    committed: Vec<Committed>,
    lease_changes: Vec<LeaseChange>,
}

/// A request's own outcome (inner) inside the batch's (outer): an outer error
/// aborts the whole batch, an inner one fails only that request.
type Applied<T> = Result<Result<T, StoreError>, StoreError>;

impl<'t> Batch<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let open = backend("open table");
        let meta_table = txn.open_table(META).map_err(&open)?;
        let meta = Meta::read(&meta_table)?;
        Ok(Self {
            kv: txn.open_table(KV).map_err(&open)?,
            log: txn.open_table(LOG).map_err(&open)?,
            meta_table,
            leases: txn.open_table(LEASES).map_err(&open)?,
            lease_keys: txn.open_table(LEASE_KEYS).map_err(&open)?,
            meta,
            committed: Vec::new(),
            lease_changes: Vec::new(),
        })
    }

    fn apply(&mut self, request: &mut Request) -> Result<(), StoreError> {
        match request {
            Request::Txn(txn, pending) => pending.outcome = Some(self.apply_txn(txn)?),
            Request::Grant(ttl, pending) => pending.outcome = Some(self.grant(*ttl)?),
            Request::Revoke(lease, pending) => pending.outcome = Some(self.revoke(*lease)?),
        }
        Ok(())
    }

    /// Checks the guards, then applies every op under the next revision.
    ///
    /// Everything that can reject the transaction is checked before the first
    /// op is written, so a rejected transaction leaves nothing behind.
    fn apply_txn(&mut self, txn: &Txn) -> Applied<TxnResult> {
        if !self.compares_hold(&txn.compares)? {
            return Ok(Ok(TxnResult {
                succeeded: false,
                revision: self.meta.revision,
            }));
        }
        if let Some(lease) = self.first_missing_lease(&txn.ops)? {
            return Ok(Err(StoreError::LeaseNotFound(lease)));
        }
        let revision = self.meta.revision + 1;
        let mut events = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            let event = match op {
                Op::Put { key, value, lease } => Some(self.put(key, value, *lease, revision)?),
                Op::Delete { key } => self.delete(key, revision)?,
            };
            events.extend(event);
        }
        Ok(Ok(TxnResult {
            succeeded: true,
            revision: self.record(events)?,
        }))
    }

    fn compares_hold(&self, compares: &[Compare]) -> Result<bool, StoreError> {
        for compare in compares {
            let holds = match compare {
                Compare::ModRevision { key, revision } => {
                    let current = self.current(key)?;
                    current.map_or(0, |kv| kv.mod_revision) == *revision
                }
                Compare::Exists { key } => self.current(key)?.is_some(),
            };
            if !holds {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Like etcd, a put naming a lease that does not exist fails the whole transaction.
    fn first_missing_lease(&self, ops: &[Op]) -> Result<Option<LeaseId>, StoreError> {
        for op in ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
                && self
                    .leases
                    .get(*lease)
                    .map_err(backend("read lease"))?
                    .is_none()
            {
                return Ok(Some(*lease));
            }
        }
        Ok(None)
    }

    fn current(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let record = self.kv.get(key).map_err(backend("read key"))?;
        record
            .map(|bytes| decode_record(key, bytes.value()))
            .transpose()
    }

    fn put(
        &mut self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
        revision: Revision,
    ) -> Result<WatchEvent, StoreError> {
        let previous = self.current(key)?;
        let previous_lease = previous.as_ref().and_then(|kv| kv.lease);
        if previous_lease != lease {
            self.bind_lease(key, previous_lease, lease)?;
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision: previous.map_or(revision, |kv| kv.create_revision),
            mod_revision: revision,
            lease,
        };
        self.kv
            .insert(key, encode_record(&kv).as_slice())
            .map_err(backend("write key"))?;
        Ok(WatchEvent {
            kind: EventKind::Put,
            kv,
        })
    }

    /// Deletes `key`; `None` when it was absent, which is no change at all.
    fn delete(&mut self, key: &str, revision: Revision) -> Result<Option<WatchEvent>, StoreError> {
        let Some(previous) = self.current(key)? else {
            return Ok(None);
        };
        self.bind_lease(key, previous.lease, None)?;
        self.kv.remove(key).map_err(backend("delete key"))?;
        Ok(Some(WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                lease: None,
            },
        }))
    }

    /// Moves `key` in the lease index from one lease (or none) to another (or none).
    fn bind_lease(
        &mut self,
        key: &str,
        from: Option<LeaseId>,
        to: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        if let Some(from) = from {
            self.lease_keys
                .remove((from, key))
                .map_err(backend("unbind key from lease"))?;
        }
        if let Some(to) = to {
            self.lease_keys
                .insert((to, key), ())
                .map_err(backend("bind key to lease"))?;
        }
        Ok(())
    }

    /// Logs `events` under a new revision and returns it; with no events
    /// nothing changed, so, as in etcd, the revision stays where it was.
    fn record(&mut self, events: Vec<WatchEvent>) -> Result<Revision, StoreError> {
        if events.is_empty() {
            return Ok(self.meta.revision);
        }
        let revision = self.meta.revision + 1;
        for (index, event) in (0u32..).zip(&events) {
            self.log
                .insert((revision, index), encode_event(event).as_slice())
                .map_err(backend("append to history"))?;
        }
        self.meta.revision = revision;
        self.committed.push(Committed { revision, events });
        Ok(revision)
    }

    fn grant(&mut self, ttl: Duration) -> Applied<LeaseId> {
        let id = self.meta.last_lease + 1;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.leases
            .insert(id, ttl_ms)
            .map_err(backend("write lease"))?;
        self.meta.last_lease = id;
        self.lease_changes.push(LeaseChange::Granted(id, ttl));
        Ok(Ok(id))
    }

    fn revoke(&mut self, lease: LeaseId) -> Applied<()> {
        if self
            .leases
            .remove(lease)
            .map_err(backend("remove lease"))?
            .is_none()
        {
            return Ok(Err(StoreError::LeaseNotFound(lease)));
        }
        let revision = self.meta.revision + 1;
        let mut events = Vec::new();
        for key in self.keys_of(lease)? {
            events.extend(self.delete(&key, revision)?);
        }
        self.record(events)?;
        self.lease_changes.push(LeaseChange::Removed(lease));
        Ok(Ok(()))
    }

    /// Revokes a lease whose deadline passed; one revoked meanwhile is simply skipped.
    fn expire(&mut self, lease: LeaseId) -> Result<(), StoreError> {
        match self.revoke(lease)? {
            Ok(()) => tracing::debug!(lease, "lease expired"),
            Err(_) => self.lease_changes.push(LeaseChange::Removed(lease)),
        }
        Ok(())
    }

    fn keys_of(&self, lease: LeaseId) -> Result<Vec<String>, StoreError> {
        let read = backend("read lease keys");
        let mut keys = Vec::new();
        for entry in self.lease_keys.range((lease, "")..).map_err(&read)? {
            let (bound, _) = entry.map_err(&read)?;
            let (owner, key) = bound.value();
            if owner != lease {
                break;
            }
            keys.push(key.to_owned());
        }
        Ok(keys)
    }

    /// Drops the history that fell out of the retention window.
    fn compact(&mut self, retention: u64) -> Result<(), StoreError> {
        let cutoff = self.meta.revision.saturating_sub(retention);
        if cutoff <= self.meta.compacted {
            return Ok(());
        }
        self.log
            .retain_in(..(cutoff + 1, 0u32), |_, _| false)
            .map_err(backend("compact history"))?;
        self.meta.compacted = cutoff;
        Ok(())
    }

    /// Saves the counters; the caller commits.
    fn finish(mut self) -> Result<BatchEffects, StoreError> {
        self.meta.write(&mut self.meta_table)?;
        Ok(BatchEffects {
            committed: self.committed,
            lease_changes: self.lease_changes,
        })
    }
}
