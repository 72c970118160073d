//! The revisioned key-value `Store`: the one place Wharf keeps persistent state.
//!
//! The model follows etcd so that the embedded backend and an etcd cluster are
//! interchangeable: every committed write bumps one global revision, each key
//! remembers the revision that created it and the one that last changed it,
//! writes are transactions guarded by comparisons on those revisions, watches
//! replay history from a past revision, and keys may be bound to leases that
//! delete them when they expire.
//!
//! ```no_run
//! # async fn demo(store: &dyn wharf_store::Store) -> Result<(), wharf_store::StoreError> {
//! use wharf_store::StoreExt;
//! let rev = store.create("/nodes/a", b"{}".to_vec()).await?.expect("absent");
//! // Only succeeds if nobody changed the key since we wrote it.
//! let ok = store.put_if("/nodes/a", b"{\"ready\":true}".to_vec(), rev).await?;
//! assert!(ok.is_some());
//! # Ok(()) }
//! ```

use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

#[cfg(feature = "testing")]
pub mod conformance;
mod redb_store;

pub use redb_store::{RedbStore, RedbStoreOptions};

/// A global, monotonically increasing commit counter. Revision 0 means "none".
pub type Revision = u64;

/// Identifier of a lease granted by [`Store::grant_lease`].
pub type LeaseId = u64;

/// A stored key with its value and revision metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value bytes (empty for delete events).
    pub value: Vec<u8>,
    /// Revision of the write that created the key (0 in delete events).
    pub create_revision: Revision,
    /// Revision of the last write to the key (for delete events: the deletion).
    pub mod_revision: Revision,
    /// Lease the key is bound to, if any.
    pub lease: Option<LeaseId>,
}

/// A guard evaluated atomically before a transaction's operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals `revision`; `revision == 0` means the key is absent.
    ModRevision {
        /// Key to check.
        key: String,
        /// Expected mod revision (0: absent).
        revision: Revision,
    },
    /// The key exists, whatever its revision.
    Exists {
        /// Key to check.
        key: String,
    },
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a key, optionally bound to a lease.
    Put {
        /// Key to write.
        key: String,
        /// New value.
        value: Vec<u8>,
        /// Lease to bind the key to; `None` unbinds it.
        lease: Option<LeaseId>,
    },
    /// Remove a key; removing an absent key is a no-op that emits no event.
    Delete {
        /// Key to remove.
        key: String,
    },
}

/// All `compares` hold, then all `ops` apply under one new revision; otherwise nothing changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Guards; all must hold.
    pub compares: Vec<Compare>,
    /// Writes applied in order when the guards hold.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a guard that `key` has mod revision `revision` (0: absent).
    pub fn when_revision(mut self, key: impl Into<String>, revision: Revision) -> Self {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            revision,
        });
        self
    }

    /// Adds a guard that `key` exists.
    pub fn when_exists(mut self, key: impl Into<String>) -> Self {
        self.compares.push(Compare::Exists { key: key.into() });
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: None,
        });
        self
    }

    /// Adds a put bound to a lease.
    pub fn put_with_lease(
        mut self,
        key: impl Into<String>,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: Some(lease),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }
}

/// Result of [`Store::txn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the guards held and the ops were applied.
    pub succeeded: bool,
    /// The revision of this commit when it succeeded, else the store's current revision.
    pub revision: Revision,
}

/// Paging for [`Store::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys strictly greater than this one (a full key).
    pub start_after: Option<String>,
    /// At most this many items.
    pub limit: Option<usize>,
}

/// One page of a prefix listing, in ascending key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The keys found.
    pub items: Vec<KeyValue>,
    /// More keys match beyond `limit`.
    pub more: bool,
    /// The store revision the page was read at.
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or replaced.
    Put,
    /// Deleted (explicitly or by lease expiry).
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for deletes only `key` and `mod_revision` are set.
    pub kv: KeyValue,
}

/// An endless stream of changes in revision order; ends only on error or shutdown.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Errors of every backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A watch asked for history that has been compacted away.
    #[error("revision {requested} has been compacted (oldest kept is {oldest})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still replayable.
        oldest: Revision,
    },
    /// The lease does not exist or already expired.
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    /// A key or value broke a backend limit.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend is shutting down.
    #[error("store is closed")]
    Closed,
    /// The backend failed (IO, corruption, connection).
    #[error("store backend: {0}")]
    Backend(String),
}

/// The revisioned key-value store. See the crate docs for the model.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Lists keys starting with `prefix` in ascending order.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError>;

    /// Applies `txn` atomically when all its guards hold.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Streams changes to keys under `prefix` with revision >= `from`;
    /// `from == 0` means changes after the current revision.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease; fails with [`StoreError::LeaseNotFound`] once it expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Revokes a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}

/// Shorthands over [`Store::txn`] for single-key writes.
#[async_trait]
pub trait StoreExt: Store {
    /// Unconditional put; returns the commit revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        Ok(self.txn(Txn::new().put(key, value)).await?.revision)
    }

    /// Put only if the key is absent; `None` when it already exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Option<Revision>, StoreError> {
        self.put_if(key, value, 0).await
    }

    /// Put only if the key's mod revision is `expected` (0: absent); `None` on conflict.
    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        let result = self
            .txn(Txn::new().when_revision(key, expected).put(key, value))
            .await?;
        Ok(result.succeeded.then_some(result.revision))
    }

    /// Unconditional delete; returns the commit revision.
    async fn delete(&self, key: &str) -> Result<Revision, StoreError> {
        Ok(self.txn(Txn::new().delete(key)).await?.revision)
    }

    /// Delete only if the key's mod revision is `expected`; `false` on conflict.
    async fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StoreError> {
        let result = self
            .txn(Txn::new().when_revision(key, expected).delete(key))
            .await?;
        Ok(result.succeeded)
    }

    /// Lists every key under `prefix`, following pages of `page_size` (at least 1).
    ///
    /// Each page is read at its own revision, so the result is not a snapshot.
    async fn list_all(&self, prefix: &str, page_size: usize) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self.list_all_from(prefix, page_size).await?.0)
    }

    /// [`list_all`](StoreExt::list_all), with the revision of the first
    /// page: a watch from the revision after it misses no change (later
    /// pages may already show some, which the watch then replays).
    async fn list_all_from(
        &self,
        prefix: &str,
        page_size: usize,
    ) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        // A zero page size would never make progress.
        let page_size = page_size.max(1);
        let mut out = Vec::new();
        let mut start_after = None;
        let mut revision = None;
        loop {
            let page = self
                .list(
                    prefix,
                    ListOptions {
                        start_after: start_after.take(),
                        limit: Some(page_size),
                    },
                )
                .await?;
            let revision = *revision.get_or_insert(page.revision);
            let more = page.more;
            out.extend(page.items);
            if !more {
                return Ok((out, revision));
            }
            start_after = out.last().map(|kv| kv.key.clone());
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
