//! Leader election over store leases: with several server replicas on one
//! etcd, only the leader runs the controllers and the scheduler.
//!
//! A candidate creates the leader key bound to its own lease; while it keeps
//! the lease alive it leads. If it stops (crash, partition), the lease
//! expires, the key disappears and another candidate takes over; the others
//! watch the key, so they campaign the moment it goes. A candidate that
//! stops cleanly revokes its lease, so the key goes at once. A candidate
//! that finds the key held under its own id (its previous process crashed
//! and the lease has not lapsed yet) takes it back at once: ids are kept per
//! server, so no other server can hold that key.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use wharf_store::{KeyValue, LeaseId, Revision, Store, StoreError, Txn};

const LEADER_KEY: &str = "/cluster/leader";

/// Longest wait for the work to stop and the lease to be revoked when a
/// leader stops cleanly; past it the lease simply lapses.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// One server campaigning for leadership.
///
/// ```
/// let me = wharf_control::Candidate::new("3f2a9c", "node-1:127.0.0.1:7700");
/// assert_eq!(me.id, "3f2a9c");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Stays the same across restarts of one server and differs between
    /// servers (Wharf keeps it in the data directory): the key held under
    /// it is this server's own and may be taken back after a crash.
    pub id: String,
    /// Where it runs, for people (host name and address).
    pub name: String,
}

impl Candidate {
    /// A candidate with a stable `id` and a readable `name`.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Candidate {
        Candidate {
            id: id.into(),
            name: name.into(),
        }
    }

    /// The leader key's holder; a value from before candidates had ids
    /// (the bare name) matches no candidate.
    fn decode(value: &[u8]) -> Candidate {
        serde_json::from_slice(value).unwrap_or_else(|_| Candidate {
            id: String::new(),
            name: String::from_utf8_lossy(value).into_owned(),
        })
    }
}

/// A candidate whose id is its name: for tests and tools that run one
/// candidate per store.
impl From<String> for Candidate {
    fn from(name: String) -> Candidate {
        Candidate {
            id: name.clone(),
            name,
        }
    }
}

/// As `From<String>`.
impl From<&str> for Candidate {
    fn from(name: &str) -> Candidate {
        Candidate::from(name.to_string())
    }
}

/// What a campaign found.
enum Campaign {
    /// This candidate leads under this lease.
    Leading(LeaseId),
    /// Another holds the key, as of this revision.
    Held(Revision),
}

/// Runs `lead` whenever `candidate` is leader; stops it when leadership is
/// lost, and campaigns again. Returns once `stop` is cancelled, after
/// stopping `lead` and revoking the lease, so that another candidate takes
/// over at once.
pub async fn run_as_leader<F, Fut>(
    store: &dyn Store,
    candidate: &Candidate,
    ttl: Duration,
    stop: CancellationToken,
    mut lead: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = candidate.name.as_str();
    loop {
        // A store that does not answer must not hold a clean stop up; a
        // lease granted by a campaign cut short lapses on its own.
        let campaigned = tokio::select! {
            result = campaign(store, candidate, ttl) => result,
            () = stop.cancelled() => return,
        };
        match campaigned {
            Ok(Campaign::Leading(lease)) => {
                tracing::info!(candidate = name, "leading the control plane");
                // Aborted with this future too: a dropped `Running` must not
                // leave the controllers leading on their own.
                let mut work = AbortOnDropHandle::new(tokio::spawn(lead()));
                let released = tokio::select! {
                    () = hold(store, lease, ttl) => false,
                    () = stop.cancelled() => true,
                };
                work.abort();
                if released {
                    // Stopped before the key goes, so two leaders never overlap.
                    let _ = tokio::time::timeout(RELEASE_TIMEOUT, &mut work).await;
                    let revoked =
                        tokio::time::timeout(RELEASE_TIMEOUT, store.revoke_lease(lease)).await;
                    match revoked {
                        Ok(Ok(())) => tracing::info!(candidate = name, "gave leadership up"),
                        _ => tracing::warn!(
                            candidate = name,
                            "stopped leading; the leader lease could not be released and lapses"
                        ),
                    }
                    return;
                }
                tracing::warn!(candidate = name, "lost leadership");
            }
            Ok(Campaign::Held(revision)) => {
                tokio::select! {
                    () = vacancy(store, revision, ttl / 3) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
            Err(err) => tracing::warn!(error = %err, "leader election failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(ttl / 3) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Tries to become leader: creates the key if absent, or takes it back from
/// this candidate's own earlier process.
async fn campaign(
    store: &dyn Store,
    candidate: &Candidate,
    ttl: Duration,
) -> Result<Campaign, StoreError> {
    let held = store.get(LEADER_KEY).await?;
    let expected = match &held {
        None => 0,
        Some(kv) if is_own(kv, candidate) => kv.mod_revision,
        Some(kv) => return Ok(Campaign::Held(kv.mod_revision)),
    };
    let lease = store.grant_lease(ttl).await?;
    let value = serde_json::to_vec(candidate).expect("a candidate serializes");
    let txn = Txn::new()
        .when_revision(LEADER_KEY, expected)
        .put_with_lease(LEADER_KEY, value, lease);
    let result = store.txn(txn).await?;
    if !result.succeeded {
        store.revoke_lease(lease).await?;
        return Ok(Campaign::Held(result.revision));
    }
    if let Some(previous) = held.and_then(|kv| kv.lease) {
        tracing::info!(
            candidate = candidate.name.as_str(),
            "took back the leader lease of this server's previous process"
        );
        // The key is bound to the new lease now; the old one holds nothing.
        let _ = store.revoke_lease(previous).await;
    }
    Ok(Campaign::Leading(lease))
}

/// Whether the key is held under this candidate's own id (by its previous
/// process). Leases are only ever granted to running processes, and a data
/// directory serves one process at a time, so that process is gone.
fn is_own(kv: &KeyValue, candidate: &Candidate) -> bool {
    !candidate.id.is_empty() && Candidate::decode(&kv.value).id == candidate.id
}

/// Waits until the leader key changes after `revision` (the leader gave up
/// or its lease lapsed), or at most `poll` (a watch can fail).
async fn vacancy(store: &dyn Store, revision: Revision, poll: Duration) {
    let changed = async {
        match store.watch(LEADER_KEY, revision + 1).await {
            Ok(mut events) => {
                events.next().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let _ = tokio::time::timeout(poll, changed).await;
}

/// Keeps the lease alive until that fails.
async fn hold(store: &dyn Store, lease: LeaseId, ttl: Duration) {
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

/// The current leader, if any.
pub async fn current_leader(store: &dyn Store) -> Result<Option<Candidate>, StoreError> {
    Ok(store
        .get(LEADER_KEY)
        .await?
        .map(|kv| Candidate::decode(&kv.value)))
}
