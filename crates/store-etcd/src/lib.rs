//! The etcd backend of the Wharf [`Store`]: the same revisioned key-value
//! model as the embedded `RedbStore`, kept in an etcd v3 cluster so that
//! several Wharf nodes share one state.
//!
//! The `Store` model was drawn from etcd, so most operations map one to one:
//!
//! | `Store`               | etcd                                                        |
//! |-----------------------|-------------------------------------------------------------|
//! | `get`                 | `Range` of one key                                          |
//! | `list`                | `Range` over the prefix, `limit + 1` to learn `more`        |
//! | `txn`                 | `Txn`: `mod_revision ==` / `create_revision > 0` guards     |
//! | `watch`               | `Watch` over the prefix, re-created after connection loss   |
//! | `grant_lease` etc.    | `LeaseGrant`, one `LeaseKeepAlive` round trip, `LeaseRevoke` |
//! | `current_revision`    | count-only `Range`, header revision                          |
//!
//! Revisions are etcd's own: they start at 1 (the first write gets 2), and
//! transactions that change nothing do not move them.
//!
//! Watches replay whatever history etcd still has; etcd compacts it only
//! when told to (by [`EtcdStore::compact`] or its `--auto-compaction-*`
//! flags), and compaction is cluster-wide, not per namespace. A watch from a
//! compacted revision fails with [`StoreError::Compacted`] whose `oldest` is
//! etcd's compaction revision + 1: the first revision whose history is
//! complete, as with `RedbStore`. A watch from 0 starts after the current
//! revision, read when the watch is created. A watch survives etcd restarts
//! and lost connections: it is re-created from the revision after the last
//! one it delivered, so the caller sees neither gap nor duplicate.
//!
//! Leases: etcd counts TTLs in whole seconds (shorter ones are rounded up)
//! and raises any TTL below its minimum of 1.5 election timeouts, rounded up
//! to a second (2 s with the default 1 s election timeout), to that minimum.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wharf_store::StoreError> {
//! use wharf_store::{Store, StoreExt};
//! use wharf_store_etcd::{EtcdStore, EtcdStoreOptions};
//!
//! let endpoints = ["http://127.0.0.1:2379".to_owned()];
//! let store = EtcdStore::connect(&endpoints, EtcdStoreOptions::default()).await?;
//! // Stored in etcd as "/wharf/nodes/a".
//! let revision = store.put("/nodes/a", b"{}".to_vec()).await?;
//! assert_eq!(store.get("/nodes/a").await?.map(|kv| kv.mod_revision), Some(revision));
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: one HTTP/2 channel per `EtcdStore` (and its
//! clones) carries every request; calls clone the cheap client handles and
//! never serialize behind a lock, so concurrent transactions pipeline.

mod error;
mod keys;
mod txn;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, ConnectOptions, GetOptions, KvClient, LeaseClient, ResponseHeader,
};
use wharf_store::{
    KeyValue, LeaseId, ListOptions, ListPage, Revision, Store, StoreError, Txn, TxnResult,
    WatchStream,
};

use crate::error::{is_compacted, is_future_revision, is_lease_not_found, rpc_error};
use crate::keys::{Namespace, lease_to_etcd, revision_from_etcd, revision_to_etcd, validate_key};
use crate::txn::TxnLimits;
use crate::watch::{Failure, Opened, WatchConfig, WatchStart, WatchTarget};

/// etcd's longest lease TTL (`MaxLeaseTTL`), in seconds.
const MAX_LEASE_TTL_SECS: u64 = 9_000_000_000;

/// How to reach etcd and what its limits are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdStoreOptions {
    /// Prepended verbatim to every key, so that several Wharf clusters (or
    /// other applications, such as Kubernetes with its `/registry/` keys) can
    /// share one etcd. Wharf keys start with `/`, so a namespace without a
    /// trailing slash reads well: `/wharf` + `/nodes/a` = `/wharf/nodes/a`.
    /// Default `/wharf`; empty uses etcd's keys as they are.
    pub namespace: String,
    /// Longest wait for a TCP connection to an endpoint. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest wait for any single request (and for a watch to be created).
    /// A transaction that times out may still have been applied. Default 10 s.
    pub request_timeout: Duration,
    /// HTTP/2 ping interval that detects a dead connection under an idle
    /// watch; etcd refuses pings more often than every 5 s. Default 10 s.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection counts as dead. Default 5 s.
    pub keep_alive_timeout: Duration,
    /// etcd's `--max-txn-ops` (default 128): transactions with more compares
    /// or more ops are refused with [`StoreError::Invalid`] before sending.
    pub max_txn_ops: usize,
    /// etcd's `--max-request-bytes` (default 1.5 MiB): larger transactions
    /// are refused with [`StoreError::Invalid`] before sending.
    pub max_request_bytes: usize,
    /// Largest response accepted (a long listing, a watch catching up).
    /// Default 64 MiB.
    pub max_response_bytes: usize,
    /// How many events a watch buffers for a caller that is not reading;
    /// beyond that, the etcd watch is cancelled and later re-created from
    /// where the caller is, replaying etcd's history. Default 1024.
    pub watch_buffer: usize,
}

impl Default for EtcdStoreOptions {
    fn default() -> Self {
        Self {
            namespace: "/wharf".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            watch_buffer: 1024,
        }
    }
}

/// A [`Store`] kept in etcd.
///
/// Cloning is cheap and shares the connection. Requests from concurrent
/// tasks are multiplexed over one HTTP/2 channel (no lock around them), which
/// reconnects by itself when etcd comes back after a failure; requests made
/// while etcd is unreachable fail with [`StoreError::Backend`] (they are not
/// retried: a transaction whose answer was lost may have been applied).
/// Watches, in contrast, retry until etcd is back, and then go on from where
/// they were. A watch holds its own handle on the channel, so it outlives the
/// store handles and ends only when dropped or on a final error.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    kv: KvClient,
    lease: LeaseClient,
    watch: WatchConfig,
    namespace: Namespace,
    limits: TxnLimits,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("namespace", &self.shared.namespace.as_str())
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (URLs such as
    /// `http://10.0.0.1:2379`) and checks that it answers.
    pub async fn connect(
        endpoints: &[String],
        options: EtcdStoreOptions,
    ) -> Result<Self, StoreError> {
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            // etcd's server policy forbids pings on a connection without
            // streams; it would answer them with GOAWAY.
            .with_keep_alive_while_idle(false)
            // A member cut off from its cluster fails requests and cancels
            // watches instead of serving stale state; watches then retry.
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(connect))
            .await
            .map_err(|error| {
                let context = format!("connect to etcd at {endpoints:?}");
                match error {
                    etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
                        StoreError::Invalid(format!("{context}: {error}"))
                    }
                    error => rpc_error(&context, error),
                }
            })?;
        let store = Self {
            shared: Arc::new(Shared {
                kv: client
                    .kv_client()
                    .max_decoding_message_size(options.max_response_bytes),
                lease: client.lease_client(),
                watch: WatchConfig {
                    client: client
                        .watch_client()
                        .max_decoding_message_size(options.max_response_bytes),
                    request_timeout: options.request_timeout,
                    buffer: options.watch_buffer,
                },
                namespace: Namespace::new(&options.namespace),
                limits: TxnLimits {
                    max_ops: options.max_txn_ops,
                    max_request_bytes: options.max_request_bytes,
                },
                request_timeout: options.request_timeout,
            }),
        };
        // The channel connects lazily; fail here rather than at first use.
        store.current_revision().await.map_err(|error| {
            StoreError::Backend(format!("etcd at {endpoints:?} does not answer: {error}"))
        })?;
        Ok(store)
    }

    /// Discards etcd's history up to and including `revision` (cluster-wide,
    /// for every namespace). Watches from `revision` or earlier then fail with
    /// [`StoreError::Compacted`] whose `oldest` is `revision + 1`; keys and
    /// their current values stay. Returns once etcd has applied it.
    /// Compacting at or below an earlier compaction does nothing.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let at = revision_to_etcd(revision)?;
        let options = CompactionOptions::new().with_physical();
        match self.kv().compact(at, Some(options)).await {
            Ok(_) => Ok(()),
            Err(error) if is_compacted(&error) => Ok(()),
            Err(error) if is_future_revision(&error) => Err(StoreError::Invalid(format!(
                "cannot compact at revision {revision}: it is in the future"
            ))),
            Err(error) => Err(rpc_error(&format!("compact at revision {revision}"), error)),
        }
    }

    fn kv(&self) -> KvClient {
        self.shared.kv.clone()
    }

    fn lease(&self) -> LeaseClient {
        self.shared.lease.clone()
    }

    fn namespace(&self) -> &Namespace {
        &self.shared.namespace
    }

    /// Fails with [`StoreError::Compacted`] when etcd no longer has the
    /// complete history from `from`.
    ///
    /// etcd reports compaction only asynchronously on a watch, after the
    /// watch is created; a historical read at `from - 1` tells at once
    /// (it fails exactly when `from - 1` is below etcd's compaction revision,
    /// the same condition under which a watch started there would be cancelled).
    async fn check_history(&self, target: &WatchTarget, from: Revision) -> Result<(), StoreError> {
        let at = WatchStart::History(from).etcd_revision()?;
        let probe = GetOptions::new().with_revision(at).with_count_only();
        match self.kv().get(target.key.clone(), Some(probe)).await {
            Ok(_) => Ok(()),
            // A watch may start in the future: it waits for that revision.
            Err(error) if is_future_revision(&error) => Ok(()),
            Err(error) if is_compacted(&error) => Err(self.compacted(target, from).await),
            Err(error) => Err(rpc_error(&format!("check history from {from}"), error)),
        }
    }

    /// The [`StoreError::Compacted`] for a watch from `from`, with the oldest
    /// revision still available, which only a watch's cancellation tells.
    async fn compacted(&self, target: &WatchTarget, from: Revision) -> StoreError {
        let unknown = |reason: String| {
            StoreError::Backend(format!(
                "history from revision {from} is compacted, but etcd did not say up to where: {reason}"
            ))
        };
        let start = WatchStart::History(from);
        let stream = match watch::open(&self.shared.watch, target, start).await {
            Ok(Opened::Compacted(compact)) => {
                return StoreError::Compacted {
                    requested: from,
                    oldest: compact + 1,
                };
            }
            Ok(Opened::Watching(stream)) => stream,
            Err(Failure::Transient(reason)) => return unknown(reason),
            Err(Failure::Fatal(error)) => return error,
        };
        match watch::await_compaction(stream, self.shared.request_timeout).await {
            Some(compact) => StoreError::Compacted {
                requested: from,
                oldest: compact + 1,
            },
            None => unknown("no compaction notice".into()),
        }
    }

    /// Which of the `leases` a transaction bound keys to etcd refused as unknown.
    async fn missing_lease(&self, leases: &[LeaseId]) -> LeaseId {
        if let [only] = leases {
            return *only;
        }
        for &lease in leases {
            let Ok(id) = lease_to_etcd(lease) else {
                return lease;
            };
            // etcd answers TTL -1 for a lease it does not know.
            match self.lease().time_to_live(id, None).await {
                Ok(status) if status.ttl() < 0 => return lease,
                Err(error) if is_lease_not_found(&error) => return lease,
                _ => {}
            }
        }
        // None looks unknown now (a dead lease cannot come back, so this is a
        // lost race with a TTL query): name the first rather than fail otherwise.
        leases.first().copied().unwrap_or_default()
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        validate_key(key)?;
        let mut response = self
            .kv()
            .get(self.namespace().key(key), None)
            .await
            .map_err(|error| rpc_error(&format!("get {key:?}"), error))?;
        response
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| self.namespace().key_value(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError> {
        let (start, end) = self.namespace().prefix_range(prefix);
        let start = match &options.start_after {
            // The least key greater than `after` is `after` followed by NUL.
            Some(after) if after.as_str() >= prefix => {
                let mut key = self.namespace().key(after);
                key.push(0);
                key
            }
            _ => start,
        };
        let mut range = GetOptions::new().with_range(end);
        if let Some(limit) = options.limit {
            // One more than asked tells whether more keys follow.
            let asked = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            range = range.with_limit(asked);
        }
        let mut response = self
            .kv()
            .get(start, Some(range))
            .await
            .map_err(|error| rpc_error(&format!("list {prefix:?}"), error))?;
        let revision = header_revision(response.header())?;
        let mut items = response
            .take_kvs()
            .into_iter()
            .map(|kv| self.namespace().key_value(kv))
            .collect::<Result<Vec<_>, _>>()?;
        let more = options.limit.is_some_and(|limit| items.len() > limit);
        if let Some(limit) = options.limit {
            items.truncate(limit);
        }
        Ok(ListPage {
            items,
            more,
            revision,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        txn::validate(&txn, self.namespace(), self.shared.limits)?;
        // Kept to name the culprit should etcd refuse a lease; the txn itself
        // (values included) moves into the request uncopied.
        let leases = txn::leases(&txn);
        let request = txn::build(txn, self.namespace())?;
        match self.kv().txn(request).await {
            Ok(response) => Ok(TxnResult {
                succeeded: response.succeeded(),
                // The commit's revision when it changed something, else the current one.
                revision: header_revision(response.header())?,
            }),
            Err(error) if is_lease_not_found(&error) => {
                Err(StoreError::LeaseNotFound(self.missing_lease(&leases).await))
            }
            Err(error) => Err(rpc_error("txn", error)),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let (key, range_end) = self.namespace().prefix_range(prefix);
        let target = WatchTarget {
            key,
            range_end,
            namespace: self.namespace().clone(),
        };
        // "Now" becomes a number: the pump needs one to resume from.
        let (from, start) = match from {
            0 => {
                let next = self.current_revision().await? + 1;
                (next, WatchStart::Live(next))
            }
            from => {
                self.check_history(&target, from).await?;
                (from, WatchStart::History(from))
            }
        };
        let config = self.shared.watch.clone();
        match watch::open(&config, &target, start).await {
            Ok(Opened::Watching(stream)) => Ok(watch::spawn(config, target, from, stream)),
            // Compacted between the check and the creation.
            Ok(Opened::Compacted(compact)) => Err(StoreError::Compacted {
                requested: from,
                oldest: compact + 1,
            }),
            Err(Failure::Transient(reason)) => Err(StoreError::Backend(reason)),
            Err(Failure::Fatal(error)) => Err(error),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let seconds = lease_ttl_seconds(ttl)?;
        let response = self
            .lease()
            .grant(seconds, None)
            .await
            .map_err(|error| rpc_error(&format!("grant lease of {ttl:?}"), error))?;
        if !response.error().is_empty() {
            return Err(StoreError::Backend(format!(
                "grant lease of {ttl:?}: {}",
                response.error()
            )));
        }
        LeaseId::try_from(response.id())
            .map_err(|_| StoreError::Backend(format!("etcd granted lease id {}", response.id())))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let id = lease_to_etcd(lease)?;
        // One request and its answer on a fresh keep-alive stream, closed
        // again when the handles drop: the model renews a lease per call.
        // The request timeout covers only the stream's opening, not the answer.
        let mut client = self.lease();
        let renewal = tokio::time::timeout(self.shared.request_timeout, client.keep_alive(id))
            .await
            .map_err(|_| {
                StoreError::Backend(format!(
                    "keep lease {lease} alive: no answer within {:?}",
                    self.shared.request_timeout
                ))
            })?;
        match renewal {
            Ok(_) => Ok(()),
            // The client's name for a keep-alive answered with TTL <= 0.
            Err(etcd_client::Error::LeaseKeepAliveError(message))
                if message == "lease not found" =>
            {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(error) if is_lease_not_found(&error) => Err(StoreError::LeaseNotFound(lease)),
            Err(error) => Err(rpc_error(&format!("keep lease {lease} alive"), error)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let id = lease_to_etcd(lease)?;
        match self.lease().revoke(id).await {
            Ok(_) => Ok(()),
            Err(error) if is_lease_not_found(&error) => Err(StoreError::LeaseNotFound(lease)),
            Err(error) => Err(rpc_error(&format!("revoke lease {lease}"), error)),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let count_only = GetOptions::new().with_count_only();
        let response = self
            .kv()
            .get(self.namespace().probe_key(), Some(count_only))
            .await
            .map_err(|error| rpc_error("read current revision", error))?;
        header_revision(response.header())
    }
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision, StoreError> {
    let header =
        header.ok_or_else(|| StoreError::Backend("etcd response without header".into()))?;
    revision_from_etcd(header.revision())
}

/// A lease TTL in etcd's whole seconds, rounded up so a lease never lives shorter than asked.
fn lease_ttl_seconds(ttl: Duration) -> Result<i64, StoreError> {
    let seconds = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    if ttl.is_zero() || seconds > MAX_LEASE_TTL_SECS {
        return Err(StoreError::Invalid(format!(
            "lease ttl {ttl:?} is outside 1ns..={MAX_LEASE_TTL_SECS}s"
        )));
    }
    i64::try_from(seconds).map_err(|_| StoreError::Invalid(format!("lease ttl {ttl:?} too long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttls_round_up_to_whole_seconds() {
        assert_eq!(lease_ttl_seconds(Duration::from_millis(1)).expect("ttl"), 1);
        assert_eq!(lease_ttl_seconds(Duration::from_secs(2)).expect("ttl"), 2);
        assert_eq!(
            lease_ttl_seconds(Duration::from_millis(2001)).expect("ttl"),
            3
        );
        for bad in [Duration::ZERO, Duration::MAX] {
            assert!(matches!(
                lease_ttl_seconds(bad),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[test]
    fn default_options_match_etcd_defaults() {
        let options = EtcdStoreOptions::default();
        assert_eq!(options.max_txn_ops, 128);
        assert_eq!(options.max_request_bytes, 1_572_864);
        assert!(options.keep_alive_interval >= Duration::from_secs(5));
    }
}
