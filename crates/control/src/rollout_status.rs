//! A deployment's `Available` and `Progressing` conditions, as Kubernetes
//! reports them, including the progress deadline. No IO, no clock: the
//! caller passes the time.

use wharf_api::DeploymentCondition;

/// Reasons of the `Progressing` condition.
pub const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
/// The rollout made progress lately.
pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
/// The rollout made no progress for `progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
const DEPLOYMENT_PAUSED: &str = "DeploymentPaused";

/// Where a rollout stands, for its conditions.
pub(crate) struct Progress<'a> {
    /// The name Kubernetes would give the new ReplicaSet (`NAME-HASH`).
    pub revision_name: &'a str,
    /// Every pod is of the current template and available.
    pub complete: bool,
    /// At least `replicas - maxUnavailable` pods are available.
    pub minimum_available: bool,
    /// The deployment is paused.
    pub paused: bool,
    /// Pods were made or deleted, or became updated or available, or the
    /// spec changed, since the last status.
    pub progressed: bool,
    /// `progressDeadlineSeconds` in milliseconds.
    pub deadline_ms: u64,
}

/// The conditions after `previous`, at `now` (unix ms; kept to the second,
/// as they are written).
pub(crate) fn conditions(
    previous: &[DeploymentCondition],
    progress: &Progress,
    now: u64,
) -> Vec<DeploymentCondition> {
    let now = now / 1000 * 1000;
    let available = if progress.minimum_available {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_string(),
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_string(),
        )
    };
    let name = progress.revision_name;
    let before = previous.iter().find(|c| c.kind == "Progressing");
    let progressing = if progress.paused {
        (
            "Unknown",
            DEPLOYMENT_PAUSED,
            "Deployment is paused".to_string(),
        )
    } else if progress.complete {
        (
            "True",
            NEW_REPLICA_SET_AVAILABLE,
            format!("ReplicaSet {name:?} has successfully progressed."),
        )
    } else {
        let updated = (
            "True",
            REPLICA_SET_UPDATED,
            format!("ReplicaSet {name:?} is progressing."),
        );
        match before {
            Some(c) if !progress.progressed && c.reason == REPLICA_SET_UPDATED => {
                if now >= c.last_update_time + progress.deadline_ms {
                    (
                        "False",
                        PROGRESS_DEADLINE_EXCEEDED,
                        format!("ReplicaSet {name:?} has timed out progressing."),
                    )
                } else {
                    updated
                }
            }
            Some(c) if !progress.progressed && c.reason == PROGRESS_DEADLINE_EXCEEDED => (
                c.status.as_str(),
                PROGRESS_DEADLINE_EXCEEDED,
                c.message.clone(),
            ),
            _ => updated,
        }
    };
    let progressed = progress.progressed;
    vec![
        condition(previous, "Available", available, now, false),
        condition(previous, "Progressing", progressing, now, progressed),
    ]
}

/// Condition `kind` as (status, reason, message), keeping the times of the
/// previous one where nothing changed (`touch` renews the update time).
pub(crate) fn condition(
    previous: &[DeploymentCondition],
    kind: &str,
    (status, reason, message): (&str, &str, String),
    now: u64,
    touch: bool,
) -> DeploymentCondition {
    let before = previous.iter().find(|c| c.kind == kind);
    let last_transition_time = match before {
        Some(c) if c.status == status => c.last_transition_time,
        _ => now,
    };
    let last_update_time = match before {
        Some(c) if !touch && c.status == status && c.reason == reason && c.message == message => {
            c.last_update_time
        }
        _ => now,
    };
    DeploymentCondition {
        kind: kind.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_update_time,
        last_transition_time,
    }
}

/// When the deadline of a rollout in progress passes, from its conditions.
pub(crate) fn deadline_at(conditions: &[DeploymentCondition], deadline_ms: u64) -> Option<u64> {
    conditions
        .iter()
        .find(|c| c.kind == "Progressing" && c.reason == REPLICA_SET_UPDATED)
        .map(|c| c.last_update_time + deadline_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(complete: bool, progressed: bool) -> Progress<'static> {
        Progress {
            revision_name: "web-abc",
            complete,
            minimum_available: true,
            paused: false,
            progressed,
            deadline_ms: 10_000,
        }
    }

    fn reason(conditions: &[DeploymentCondition]) -> (&str, &str) {
        let c = conditions.iter().find(|c| c.kind == "Progressing").unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn no_progress_for_the_deadline_fails_the_rollout_until_progress() {
        let started = conditions(&[], &progress(false, true), 1_000);
        assert_eq!(reason(&started), ("True", REPLICA_SET_UPDATED));
        let waiting = conditions(&started, &progress(false, false), 10_999);
        assert_eq!(waiting, started, "nothing changes before the deadline");
        assert_eq!(deadline_at(&waiting, 10_000), Some(11_000));
        let failed = conditions(&waiting, &progress(false, false), 11_000);
        assert_eq!(reason(&failed), ("False", PROGRESS_DEADLINE_EXCEEDED));
        assert_eq!(failed[1].last_transition_time, 11_000);
        let still = conditions(&failed, &progress(false, false), 60_000);
        assert_eq!(still, failed, "a failed rollout stays failed");
        let moving = conditions(&still, &progress(false, true), 61_000);
        assert_eq!(reason(&moving), ("True", REPLICA_SET_UPDATED));
        let done = conditions(&moving, &progress(true, true), 62_000);
        assert_eq!(reason(&done), ("True", NEW_REPLICA_SET_AVAILABLE));
        assert_eq!(done[1].last_transition_time, 61_000);
    }

    #[test]
    fn paused_and_unavailable_are_reported() {
        let mut paused = progress(false, false);
        paused.paused = true;
        paused.minimum_available = false;
        let c = conditions(&[], &paused, 5_000);
        assert_eq!(reason(&c), ("Unknown", DEPLOYMENT_PAUSED));
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_str()),
            ("False", "MinimumReplicasUnavailable")
        );
        assert_eq!(deadline_at(&c, 1_000), None, "no deadline while paused");
    }
}
