//! Retention: deleting events older than a cutoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use wharf_store::{ListOptions, Store, StoreError, Txn};

use crate::{MAX_BATCH_EVENTS, keys, now_ms};

/// Deletes every event before `cutoff_ms` and returns how many this call removed.
///
/// Deletes are guarded by the revisions read, so when two replicas prune at
/// once each key is counted by the one that removed it.
pub(crate) async fn prune_before(store: &dyn Store, cutoff_ms: u64) -> Result<u64, StoreError> {
    // Keys sort by time, so "older than the cutoff" is "sorts before its floor".
    let bound = keys::time_floor(cutoff_ms);
    let mut removed = 0;
    let mut start_after = None;
    loop {
        let page = store
            .list(
                keys::PREFIX,
                ListOptions {
                    start_after: start_after.take(),
                    // One page is one transaction, within the same limits as a write batch.
                    limit: Some(MAX_BATCH_EVENTS),
                },
            )
            .await?;
        let old = page.items.iter().take_while(|kv| kv.key < bound);
        let txn = old.fold(Txn::new(), |txn, kv| {
            txn.when_revision(kv.key.as_str(), kv.mod_revision)
                .delete(kv.key.as_str())
        });
        let count = txn.ops.len();
        // A failed guard means another pruner removed (and counted) these first.
        if count > 0 && store.txn(txn).await?.succeeded {
            removed += count as u64;
        }
        if count < page.items.len() || !page.more {
            return Ok(removed);
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
}

/// Prunes to `retention` now and every `interval`, until `stop` resolves
/// (its sender is dropped with the last `AuditLog` handle).
///
/// Runs apart from the batch writer so a long prune never holds up recording.
pub(crate) async fn run_retention(
    store: Arc<dyn Store>,
    retention: Duration,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = timer.tick() => {}
        }
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(retention_ms);
        tokio::select! {
            // Stopping mid-prune is safe: each deleted page is its own transaction.
            _ = &mut stop => return,
            result = prune_before(store.as_ref(), cutoff) => match result {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, cutoff_ms = cutoff, "pruned audit events"),
                Err(error) => tracing::warn!(%error, "audit retention prune failed"),
            },
        }
    }
}
