//! The embedded backend: a [`Store`] in one redb file.
//!
//! Reads are plain redb read transactions on the caller's task (short B-tree
//! lookups, mostly in cache). Writes, lease grants and revocations go through
//! one writer thread that commits them in groups (see `writer`). Watches
//! replay the on-disk history and then follow the writer's broadcast (see
//! `watch`). Lease deadlines live in memory (see `leases`).
//!
//! Architecture invariant: everything the store knows is in the redb file,
//! committed atomically per batch; memory holds only lease deadlines and
//! in-flight events, so a kill at any point reopens to the last commit.

mod leases;
mod schema;
mod watch;
mod writer;

use std::collections::HashSet;
use std::fmt::Display;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use tokio::sync::{broadcast, oneshot};

use self::leases::{LeaseClocks, MAX_TTL};
use self::schema::{KV, LEASE_KEYS, LEASES, LOG, META, Meta, decode_record};
use self::watch::WatchCursor;
use self::writer::{CommitBatch, Pending, Request, Writer, WriterHandle};
use crate::{
    Compare, KeyValue, LeaseId, ListOptions, ListPage, Op, Revision, Store, StoreError, Txn,
    TxnResult, WatchStream,
};

/// Longest key accepted, in bytes; far above any key Wharf builds.
const MAX_KEY_LEN: usize = 64 * 1024;

/// Tuning of a [`RedbStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedbStoreOptions {
    /// How many of the latest revisions keep their watch history; watches from
    /// older revisions fail with [`StoreError::Compacted`]. Default 100 000.
    pub history_retention: u64,
    /// The longest time between two looks for expired leases; besides, the
    /// writer looks at the earliest lease deadline, so a lease is revoked
    /// within a few milliseconds of its TTL. Default 200 ms; values below
    /// 1 ms count as 1 ms.
    pub lease_check_interval: Duration,
    /// How many committed write batches a watch may fall behind before it
    /// catches up from the on-disk history instead. Default 256.
    pub watch_buffer: usize,
}

impl Default for RedbStoreOptions {
    fn default() -> Self {
        Self {
            history_retention: 100_000,
            lease_check_interval: Duration::from_millis(200),
            watch_buffer: 256,
        }
    }
}

/// A [`Store`] kept in one redb file, for single-node deployments and tests.
///
/// Cloning is cheap and shares the store. When the last clone is dropped, the
/// writer thread finishes queued writes and stops, and the file is closed, so
/// the same path can be opened again at once. Open watch streams then end.
///
/// ```no_run
/// # async fn demo() -> Result<(), wharf_store::StoreError> {
/// use wharf_store::{RedbStore, RedbStoreOptions, Store, StoreExt};
/// let store = RedbStore::open("/var/lib/wharf/state.redb".as_ref(), RedbStoreOptions::default())?;
/// let revision = store.put("/nodes/a", b"{}".to_vec()).await?;
/// assert_eq!(store.get("/nodes/a").await?.map(|kv| kv.mod_revision), Some(revision));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedbStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

struct Shared {
    writer: WriterHandle,
    db: Arc<Database>,
    /// Kept to subscribe watches; the writer thread holds the publishing clone.
    events: broadcast::Sender<CommitBatch>,
    leases: Arc<LeaseClocks>,
}

impl RedbStore {
    /// Opens (creating if needed) the store at `path` and starts its writer thread.
    ///
    /// This blocks: it may repair the file after a crash. Every persisted
    /// lease gets a full TTL from now, as etcd does after a leader change.
    pub fn open(path: &Path, options: RedbStoreOptions) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("open {}: {e}", path.display())))?;
        let persisted_leases = initialize(&db)?;
        tracing::debug!(path = %path.display(), leases = persisted_leases.len(), "opened store");
        let leases = Arc::new(LeaseClocks::start(persisted_leases));
        let db = Arc::new(db);
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let writer = Writer {
            db: Arc::clone(&db),
            events: events.clone(),
            leases: Arc::clone(&leases),
            history_retention: options.history_retention,
            // A zero interval would make the writer spin instead of waiting for requests.
            lease_check_interval: options.lease_check_interval.max(Duration::from_millis(1)),
        }
        .spawn()?;
        Ok(Self {
            shared: Arc::new(Shared {
                writer,
                db,
                events,
                leases,
            }),
        })
    }

    /// Queues a write and waits until the batch holding it is committed.
    ///
    /// A caller that stops waiting does not cancel the write.
    async fn write<T>(&self, request: impl FnOnce(Pending<T>) -> Request) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shared.writer.send(request(Pending::new(reply)))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.shared
            .db
            .begin_read()
            .map_err(backend("begin read transaction"))
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        validate_key(key)?;
        let txn = self.begin_read()?;
        let kv = txn.open_table(KV).map_err(backend("open kv table"))?;
        let record = kv.get(key).map_err(backend("read key"))?;
        record
            .map(|bytes| decode_record(key, bytes.value()))
            .transpose()
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError> {
        let txn = self.begin_read()?;
        let revision = read_meta(&txn)?.revision;
        let kv = txn.open_table(KV).map_err(backend("open kv table"))?;
        let start = match &options.start_after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.as_str()),
            _ => Bound::Included(prefix),
        };
        let limit = options.limit.unwrap_or(usize::MAX);
        let read = backend("list keys");
        let mut page = ListPage {
            revision,
            ..ListPage::default()
        };
        for entry in kv.range::<&str>((start, Bound::Unbounded)).map_err(&read)? {
            let (key, bytes) = entry.map_err(&read)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if page.items.len() == limit {
                page.more = true;
                break;
            }
            page.items.push(decode_record(key, bytes.value())?);
        }
        Ok(page)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        validate_txn(&txn)?;
        self.write(|pending| Request::Txn(txn, pending)).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading, so every revision after the one read is broadcast to us.
        let live = self.shared.events.subscribe();
        let meta = read_meta(&self.begin_read()?)?;
        if from != 0 && from <= meta.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: meta.oldest_kept(),
            });
        }
        let from = if from == 0 { meta.revision + 1 } else { from };
        let db = Arc::downgrade(&self.shared.db);
        Ok(WatchCursor::new(db, prefix, from, meta, live).into_stream())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(StoreError::Invalid(format!(
                "lease ttl {ttl:?} is outside 1ms..={MAX_TTL:?}"
            )));
        }
        self.write(|pending| Request::Grant(ttl, pending)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.shared.leases.renew(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(|pending| Request::Revoke(lease, pending)).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(read_meta(&self.begin_read()?)?.revision)
    }
}

/// Creates the tables of a new file (read transactions cannot) and returns the persisted leases.
fn initialize(db: &Database) -> Result<Vec<(LeaseId, Duration)>, StoreError> {
    let create = backend("create table");
    let txn = db
        .begin_write()
        .map_err(backend("begin write transaction"))?;
    txn.open_table(KV).map_err(&create)?;
    txn.open_table(LOG).map_err(&create)?;
    txn.open_table(META).map_err(&create)?;
    txn.open_table(LEASE_KEYS).map_err(&create)?;
    let leases = {
        let table = txn.open_table(LEASES).map_err(&create)?;
        let read = backend("read leases");
        let mut leases = Vec::new();
        for entry in table.iter().map_err(&read)? {
            let (id, ttl_ms) = entry.map_err(&read)?;
            leases.push((id.value(), Duration::from_millis(ttl_ms.value())));
        }
        leases
    };
    txn.commit().map_err(backend("commit new tables"))?;
    Ok(leases)
}

fn read_meta(txn: &ReadTransaction) -> Result<Meta, StoreError> {
    Meta::read(&txn.open_table(META).map_err(backend("open meta table"))?)
}

fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid("empty key".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid(format!(
            "key of {} bytes exceeds {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

/// Rejects, before it reaches the writer, a transaction with a bad key or
/// (as etcd does) one that writes a key twice.
fn validate_txn(txn: &Txn) -> Result<(), StoreError> {
    for compare in &txn.compares {
        let (Compare::ModRevision { key, .. } | Compare::Exists { key }) = compare;
        validate_key(key)?;
    }
    let mut written = HashSet::with_capacity(txn.ops.len());
    for op in &txn.ops {
        let (Op::Put { key, .. } | Op::Delete { key }) = op;
        validate_key(key)?;
        if !written.insert(key) {
            return Err(StoreError::Invalid(format!(
                "key {key:?} is written twice in one transaction"
            )));
        }
    }
    Ok(())
}

/// Maps a redb error to [`StoreError::Backend`], saying what was being done.
fn backend<E: Display>(context: &'static str) -> impl Fn(E) -> StoreError {
    move |error| StoreError::Backend(format!("{context}: {error}"))
}
