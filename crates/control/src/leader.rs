//! Leader election over store leases: with several server replicas on one
//! etcd, only the leader runs the controllers and the scheduler.
//!
//! A candidate creates the leader key bound to its own lease; while it keeps
//! the lease alive it leads. If it stops (crash, partition), the lease
//! expires, the key disappears and another candidate takes over.

use std::future::Future;
use std::time::Duration;

use wharf_store::{Store, StoreError, Txn};

const LEADER_KEY: &str = "/cluster/leader";

/// Runs `lead` whenever this candidate is leader; stops it when leadership
/// is lost, and campaigns again. Never returns.
pub async fn run_as_leader<F, Fut>(store: &dyn Store, identity: &str, ttl: Duration, mut lead: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match campaign(store, identity, ttl).await {
            Ok(Some(lease)) => {
                tracing::info!(identity, "leading the control plane");
                let work = tokio::spawn(lead());
                hold(store, lease, ttl).await;
                work.abort();
                tracing::warn!(identity, "lost leadership");
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "leader election failed"),
        }
        tokio::time::sleep(ttl / 3).await;
    }
}

/// Tries to become leader; the lease on success.
async fn campaign(
    store: &dyn Store,
    identity: &str,
    ttl: Duration,
) -> Result<Option<u64>, StoreError> {
    if store.get(LEADER_KEY).await?.is_some() {
        return Ok(None);
    }
    let lease = store.grant_lease(ttl).await?;
    let txn = Txn::new().when_revision(LEADER_KEY, 0).put_with_lease(
        LEADER_KEY,
        identity.as_bytes().to_vec(),
        lease,
    );
    if store.txn(txn).await?.succeeded {
        Ok(Some(lease))
    } else {
        store.revoke_lease(lease).await?;
        Ok(None)
    }
}

/// Keeps the lease alive until that fails.
async fn hold(store: &dyn Store, lease: u64, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        if let Err(err) = store.keep_alive(lease).await {
            tracing::warn!(error = %err, "leader lease renewal failed");
            // Give the key up explicitly when the store still answers.
            let _ = store.revoke_lease(lease).await;
            return;
        }
    }
}

/// The current leader's identity, if any.
pub async fn current_leader(store: &dyn Store) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(LEADER_KEY)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}
