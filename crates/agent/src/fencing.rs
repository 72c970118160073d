//! Self-fencing: an agent that cannot renew its heartbeat lease stops its
//! pool-addressed (fixed-IP) pods before the lease can run out.
//!
//! Once the lease has expired the control plane evicts those pods and
//! gives their addresses to replacements on other nodes. Stopping them
//! first, with a margin, means an address never answers from two places,
//! even when the agent lives on behind a cut link. The lease is counted
//! from when the renewing request was *sent*: the server renewed it no
//! earlier, so the agent's deadline always falls before the server's.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use wharf_api::{ANNOTATION_FIXED_IP, ANNOTATION_IP_POOL, Pod};

/// The part of the lease kept free between fencing and expiry: a quarter
/// of it, at least 250 ms (never more than half).
pub(crate) fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(250)).min(ttl / 2)
}

/// Whether `pod` holds an address of a pool: one a replacement elsewhere
/// may take once this node's lease expired.
pub(crate) fn holds_pool_address(pod: &Pod) -> bool {
    let annotations = &pod.metadata.annotations;
    annotations.contains_key(ANNOTATION_FIXED_IP) || annotations.contains_key(ANNOTATION_IP_POOL)
}

/// Tracks the last renewal and raises the fence when the lease may be
/// about to run out; a renewal lowers it.
pub(crate) struct Fence {
    ttl: Duration,
    renewed: watch::Sender<Option<Instant>>,
    raised: watch::Sender<bool>,
}

impl Fence {
    /// A fence for a lease of `ttl`, not renewed yet (and not raised: an
    /// agent that never held a lease has no pods to stop).
    pub(crate) fn new(ttl: Duration) -> Fence {
        Fence {
            ttl,
            renewed: watch::channel(None).0,
            raised: watch::channel(false).0,
        }
    }

    /// The lease was renewed by a request sent at `sent`.
    pub(crate) fn renewed(&self, sent: Instant) {
        self.renewed.send_replace(Some(sent));
        self.raised
            .send_if_modified(|raised| std::mem::replace(raised, false));
    }

    /// Whether the fence is up, and its changes.
    pub(crate) fn raised(&self) -> watch::Receiver<bool> {
        self.raised.subscribe()
    }

    /// Raises the fence whenever the last renewal is older than the lease
    /// less the margin; runs until dropped.
    pub(crate) async fn watch(&self) {
        let mut renewed = self.renewed.subscribe();
        loop {
            let last = *renewed.borrow_and_update();
            let Some(last) = last else {
                if renewed.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let deadline = last + self.ttl - fence_margin(self.ttl);
            tokio::select! {
                changed = renewed.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        silent_ms = last.elapsed().as_millis() as u64,
                        "heartbeat lease about to expire: stopping pool-addressed pods"
                    );
                    self.raised.send_replace(true);
                    if renewed.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Resolves once `raised` is up; never if its sender is gone.
pub(crate) async fn fence_raised(mut raised: watch::Receiver<bool>) {
    if raised.wait_for(|up| *up).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_quarter_of_the_lease_within_bounds() {
        assert_eq!(
            fence_margin(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            fence_margin(Duration::from_secs(40)),
            Duration::from_secs(10)
        );
        assert_eq!(
            fence_margin(Duration::from_millis(600)),
            Duration::from_millis(250)
        );
        assert_eq!(
            fence_margin(Duration::from_millis(400)),
            Duration::from_millis(200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_rises_before_the_lease_runs_out_and_falls_on_renewal() {
        let fence = std::sync::Arc::new(Fence::new(Duration::from_secs(2)));
        let watcher = tokio::spawn({
            let fence = fence.clone();
            async move { fence.watch().await }
        });
        let raised = fence.raised();
        let start = Instant::now();
        // Never renewed: nothing to fence.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!*raised.borrow());

        let sent = Instant::now();
        fence.renewed(sent);
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert!(!*raised.borrow(), "1.4 s after a renewal of a 2 s lease");
        // A renewal in time moves the deadline.
        fence.renewed(Instant::now());
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert!(!*raised.borrow());
        fence_raised(fence.raised()).await;
        let silent = Instant::now() - (sent + Duration::from_millis(1400));
        assert_eq!(
            silent,
            Duration::from_millis(1500),
            "raised at ttl - margin"
        );
        assert!(Instant::now() > start);

        fence.renewed(Instant::now());
        assert!(!*raised.borrow());
        watcher.abort();
    }

    #[test]
    fn pool_and_fixed_addresses_are_fenced() {
        let mut pod = Pod::default();
        assert!(!holds_pool_address(&pod));
        let annotations = &mut pod.metadata.annotations;
        annotations.insert(ANNOTATION_FIXED_IP.into(), "10.93.0.5".into());
        assert!(holds_pool_address(&pod));
    }
}
