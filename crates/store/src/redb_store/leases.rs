//! Lease deadlines, kept in memory only.
//!
//! Like etcd, only a lease's id and TTL are persisted; its deadline is not,
//! and restarts with a full TTL when the store opens. Keep-alives are
//! therefore memory-only operations that never touch the disk.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{LeaseId, StoreError};

/// The longest TTL a lease may have (etcd's limit too); it keeps deadlines far from overflowing.
pub(super) const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The deadline of every live lease, shared by the store handles (which renew
/// leases) and the writer thread (which grants, revokes and expires them).
#[derive(Debug, Default)]
pub(super) struct LeaseClocks {
    clocks: Mutex<HashMap<LeaseId, Clock>>,
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    ttl: Duration,
    deadline: Instant,
}

impl LeaseClocks {
    /// Starts a full TTL for each persisted lease.
    pub fn start(leases: impl IntoIterator<Item = (LeaseId, Duration)>) -> Self {
        let now = Instant::now();
        let clocks = leases
            .into_iter()
            .map(|(id, ttl)| (id, Clock::new(ttl, now)))
            .collect();
        Self {
            clocks: Mutex::new(clocks),
        }
    }

    /// Starts the clock of a newly granted lease.
    pub fn insert(&self, id: LeaseId, ttl: Duration) {
        self.lock().insert(id, Clock::new(ttl, Instant::now()));
    }

    /// Forgets a revoked or expired lease.
    pub fn remove(&self, id: LeaseId) {
        self.lock().remove(&id);
    }

    /// Pushes the deadline of a live lease a full TTL away.
    ///
    /// A lease past its deadline counts as gone even before the writer got
    /// round to revoking it, so a late keep-alive cannot resurrect it.
    pub fn renew(&self, id: LeaseId) -> Result<(), StoreError> {
        let now = Instant::now();
        match self.lock().get_mut(&id) {
            Some(clock) if clock.deadline > now => {
                *clock = Clock::new(clock.ttl, now);
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    /// The leases whose deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> Vec<LeaseId> {
        self.lock()
            .iter()
            .filter(|(_, clock)| clock.deadline <= now)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The earliest deadline of a live lease: when the next one may expire
    /// (a renewal only moves it later).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lock().values().map(|clock| clock.deadline).min()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LeaseId, Clock>> {
        // The map is valid after any panic mid-update: every update is a single insert or remove.
        self.clocks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock {
    fn new(ttl: Duration, now: Instant) -> Self {
        Self {
            ttl,
            // Grants are validated, but a TTL read back from disk is only trusted this far.
            deadline: now + ttl.min(MAX_TTL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_extends_only_live_leases() {
        let clocks = LeaseClocks::start([(1, Duration::from_secs(60)), (2, Duration::ZERO)]);
        assert!(clocks.renew(1).is_ok());
        assert!(matches!(clocks.renew(2), Err(StoreError::LeaseNotFound(2))));
        assert!(matches!(clocks.renew(3), Err(StoreError::LeaseNotFound(3))));
        assert_eq!(clocks.expired(Instant::now()), vec![2]);
        clocks.remove(2);
        assert!(clocks.expired(Instant::now()).is_empty());
        let first = clocks.next_deadline().unwrap();
        assert!(first > Instant::now() + Duration::from_secs(59));
        clocks.insert(4, Duration::from_secs(1));
        assert!(clocks.next_deadline().unwrap() < first);
    }
}
