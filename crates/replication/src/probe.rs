//! Endpoints that stopped answering, and what happens when they answer
//! again: after a partition heals, their policies are reconciled at once
//! instead of at the next periodic pass, and tasks waiting to retry try
//! again now.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::ReplicationError;
use crate::model::{Job, Policy, TriggerKind};
use crate::service::Replication;

/// Which endpoints stopped answering, and which policies wait for their
/// job to end to be reconciled.
#[derive(Default)]
pub(crate) struct Probe {
    /// Endpoints that stopped answering, asked again every `probe_interval`.
    unreachable: Mutex<HashSet<String>>,
    /// Policies to reconcile as soon as their unfinished job ends (their
    /// endpoint came back while the job was running).
    deferred: Mutex<HashSet<String>>,
    /// Wakes tasks waiting to retry: an endpoint answers again.
    recovered: Notify,
    /// Held through a reconcile pass, from reading the active jobs to
    /// creating new ones: the periodic, probe and deferred passes would
    /// otherwise each see no job of a policy and both plan the same copy.
    one_pass_at_a_time: tokio::sync::Mutex<()>,
}

impl Probe {
    /// Remembers `endpoint` as unreachable when `err` says it did not
    /// answer usefully; the probe loop asks it again.
    pub(crate) fn note(&self, endpoint: &str, err: &ReplicationError) {
        if err.is_unreachable() {
            lock(&self.unreachable).insert(endpoint.to_string());
        }
    }

    fn unreachable(&self) -> Vec<String> {
        lock(&self.unreachable).iter().cloned().collect()
    }

    /// `endpoint` answers again: tasks waiting to retry go now.
    fn answered(&self, endpoint: &str) {
        lock(&self.unreachable).remove(endpoint);
        self.recovered.notify_waiters();
    }

    /// Resolves when an unreachable endpoint answers again.
    pub(crate) fn recovered(&self) -> Notified<'_> {
        self.recovered.notified()
    }

    fn deferred(&self) -> MutexGuard<'_, HashSet<String>> {
        lock(&self.deferred)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replication {
    /// Asks every unreachable endpoint again each `probe_interval`; one
    /// that answers (even with a refusal: it is reachable) has its
    /// policies reconciled at once. Runs until the future is dropped.
    pub(crate) async fn probe_endpoints(&self) {
        let every = self
            .inner
            .options
            .probe_interval
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for name in self.inner.probe.unreachable() {
                let answered = match self.inner.connections.connect(&name).await {
                    Ok(connection) => match connection.client.ping().await {
                        Ok(_) => true,
                        Err(err) => !err.is_unreachable(),
                    },
                    // Deleted meanwhile: nothing to wait for.
                    Err(ReplicationError::NotFound { .. }) => true,
                    Err(_) => false,
                };
                if !answered {
                    continue;
                }
                tracing::info!(endpoint = %name, "replication endpoint answers again; reconciling its policies now");
                self.inner.probe.answered(&name);
                self.reconcile_where(|p| p.endpoint == name, true).await;
            }
        }
    }

    /// Reconciles the enabled policies `select` picks and returns the jobs
    /// created. A policy with an unfinished job is skipped, or with
    /// `defer_busy` reconciled as soon as that job ends.
    pub(crate) async fn reconcile_where(
        &self,
        select: impl Fn(&Policy) -> bool,
        defer_busy: bool,
    ) -> Vec<Job> {
        let mut created = Vec::new();
        let _pass = self.inner.probe.one_pass_at_a_time.lock().await;
        let (Ok(policies), Ok(active)) = (self.policies().await, self.inner.queue.active().await)
        else {
            return created;
        };
        for policy in policies.iter().filter(|p| p.enabled && select(p)) {
            if active.iter().any(|job| job.policy == policy.name) {
                if !defer_busy {
                    continue;
                }
                self.inner.probe.deferred().insert(policy.name.clone());
                // The job may have ended between the look and the note: then
                // nobody else takes the note back.
                if self.busy(&policy.name).await
                    || !self.inner.probe.deferred().remove(&policy.name)
                {
                    continue;
                }
            }
            match self.plan_and_create(policy, TriggerKind::Reconcile).await {
                Ok(Some(job)) => created.push(job),
                Ok(None) => {}
                Err(err) => {
                    self.inner.probe.note(&policy.endpoint, &err);
                    tracing::info!(policy = %policy.name, error = %err, "reconcile pass skipped a policy");
                }
            }
        }
        created
    }

    /// Runs the reconcile a policy's endpoint asked for while its job was
    /// running, now that a job of the policy ended.
    pub(crate) async fn reconcile_deferred(&self, policy: &str) {
        if self.inner.probe.deferred().remove(policy) {
            self.reconcile_where(|p| p.name == policy, true).await;
        }
    }

    /// Whether the policy has an unfinished job (an unreadable queue counts
    /// as busy: the next pass looks again).
    async fn busy(&self, policy: &str) -> bool {
        self.inner
            .queue
            .active()
            .await
            .map_or(true, |jobs| jobs.iter().any(|job| job.policy == policy))
    }
}
