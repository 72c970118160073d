//! Endpoints that stopped answering, and what happens when they answer
//! again: after a partition heals, their policies are reconciled at once
//! instead of at the next periodic pass, and tasks waiting to retry try
//! again now.

use std::time::Duration;

use crate::ReplicationError;
use crate::model::{Job, Policy, TriggerKind};
use crate::service::Replication;

impl Replication {
    /// Remembers `endpoint` as unreachable when `err` says it did not
    /// answer usefully; the probe loop asks it again.
    pub(crate) fn note_unreachable(&self, endpoint: &str, err: &ReplicationError) {
        if err.is_unreachable() {
            self.inner
                .unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(endpoint.to_string());
        }
    }

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
            let down: Vec<String> = self
                .inner
                .unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            for name in down {
                let answered = match self.connect(&name).await {
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
                self.inner
                    .unreachable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
                tracing::info!(endpoint = %name, "replication endpoint answers again; reconciling its policies now");
                self.inner.recovered.notify_waiters();
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
        let (Ok(policies), Ok(active)) = (self.policies().await, self.active_jobs().await) else {
            return created;
        };
        for policy in policies.iter().filter(|p| p.enabled && select(p)) {
            if active.iter().any(|job| job.policy == policy.name) {
                if !defer_busy {
                    continue;
                }
                self.deferred().insert(policy.name.clone());
                // The job may have ended between the look and the note: then
                // nobody else takes the note back.
                if self.busy(&policy.name).await || !self.deferred().remove(&policy.name) {
                    continue;
                }
            }
            match self.plan_and_create(policy, TriggerKind::Reconcile).await {
                Ok(Some(job)) => created.push(job),
                Ok(None) => {}
                Err(err) => {
                    self.note_unreachable(&policy.endpoint, &err);
                    tracing::info!(policy = %policy.name, error = %err, "reconcile pass skipped a policy");
                }
            }
        }
        created
    }

    /// Runs the reconcile a policy's endpoint asked for while its job was
    /// running, now that a job of the policy ended.
    pub(crate) async fn reconcile_deferred(&self, policy: &str) {
        if self.deferred().remove(policy) {
            self.reconcile_where(|p| p.name == policy, true).await;
        }
    }

    fn deferred(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inner
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the policy has an unfinished job (an unreadable queue counts
    /// as busy: the next pass looks again).
    async fn busy(&self, policy: &str) -> bool {
        self.active_jobs()
            .await
            .map_or(true, |jobs| jobs.iter().any(|job| job.policy == policy))
    }
}
