//! A node's report of what runs in a pod, and the events it implies, as a
//! kubelet writes them: `Failed` / `BackOff` for pulls and crash loops,
//! `Started` for each start, the pod-level reason of a failure to set the
//! pod up. `describe pod` lists them.

use wharf_api::{
    ContainerState, ContainerStatus, EventType, ObjectReference, Pod, PodEventReport, PodStatus,
};

use crate::ControlError;
use crate::events::EventRecorder;
use crate::objects::Objects;

/// One event a status change implies: type, reason, message.
pub type StatusEvent = (EventType, &'static str, String);

/// Stores `status` as pod `project/name`'s and records the events the
/// change from its previous status implies. Returns the pod.
pub async fn report_pod_status(
    objects: &Objects,
    events: &EventRecorder,
    project: &str,
    name: &str,
    status: &PodStatus,
) -> Result<Pod, ControlError> {
    let mut previous = None;
    let pod = objects
        .modify::<Pod>(Some(project), name, |pod| {
            let changed = pod.status != *status;
            previous = Some(std::mem::replace(&mut pod.status, status.clone()));
            changed
        })
        .await?;
    let implied = status_events(&previous.unwrap_or_default(), status);
    if !implied.is_empty() {
        let involved = ObjectReference {
            kind: "Pod".into(),
            project: Some(project.to_string()),
            name: name.to_string(),
            uid: pod.metadata.uid.clone(),
        };
        for (event_type, reason, message) in implied {
            events.record(&involved, event_type, reason, &message).await;
        }
    }
    Ok(pod)
}

/// Records `event`, which a node reports about pod `project/name`.
pub async fn record_pod_event(
    objects: &Objects,
    events: &EventRecorder,
    project: &str,
    name: &str,
    event: &PodEventReport,
) -> Result<(), ControlError> {
    let pod: Pod = objects.require(Some(project), name).await?;
    let involved = ObjectReference {
        kind: "Pod".into(),
        project: Some(project.to_string()),
        name: name.to_string(),
        uid: pod.metadata.uid,
    };
    events
        .record(&involved, event.event_type, &event.reason, &event.message)
        .await;
    Ok(())
}

/// The events going from `old` to `new` implies (pure, for tests).
pub fn status_events(old: &PodStatus, new: &PodStatus) -> Vec<StatusEvent> {
    let mut events = Vec::new();
    // Reasons about containers come with their container's events below.
    if let Some(reason) = new.reason.as_deref().and_then(pod_level_reason)
        && new.reason != old.reason
    {
        let message = new.message.clone().unwrap_or_default();
        events.push((EventType::Warning, reason, message));
    }
    for container in &new.container_statuses {
        let before = old
            .container_statuses
            .iter()
            .find(|c| c.name == container.name);
        events.extend(container_event(before, container, new.message.as_deref()));
    }
    events
}

fn container_event(
    before: Option<&ContainerStatus>,
    now: &ContainerStatus,
    pod_message: Option<&str>,
) -> Option<StatusEvent> {
    let (name, image) = (&now.name, &now.image);
    match &now.state {
        ContainerState::Running { .. } => {
            let restarted = before.is_some_and(|b| b.restart_count < now.restart_count);
            let was_running =
                before.is_some_and(|b| matches!(b.state, ContainerState::Running { .. }));
            (restarted || !was_running).then(|| {
                (
                    EventType::Normal,
                    "Started",
                    format!("Started container {name}"),
                )
            })
        }
        ContainerState::Waiting { reason } => {
            let same = before.is_some_and(
                |b| matches!(&b.state, ContainerState::Waiting { reason: r } if r == reason),
            );
            if same {
                return None;
            }
            let detail = pod_message.filter(|m| !m.is_empty());
            match reason.as_str() {
                "ContainerCreating" | "PodInitializing" => None,
                "ImagePullBackOff" => Some((
                    EventType::Warning,
                    "BackOff",
                    format!("Back-off pulling image \"{image}\""),
                )),
                "CrashLoopBackOff" => Some((
                    EventType::Warning,
                    "BackOff",
                    format!("Back-off restarting failed container {name}"),
                )),
                "ErrImagePull" => Some((
                    EventType::Warning,
                    "Failed",
                    match detail {
                        Some(detail) => format!("Failed to pull image \"{image}\": {detail}"),
                        None => format!("Failed to pull image \"{image}\""),
                    },
                )),
                other => Some((
                    EventType::Warning,
                    "Failed",
                    match detail {
                        Some(detail) => format!("Error: {other}: {detail}"),
                        None => format!("Error: {other}"),
                    },
                )),
            }
        }
        ContainerState::Terminated { .. } => None,
    }
}

/// The reasons the agent gives for a pod it cannot set up, before any
/// container (the ones event reasons are made of).
fn pod_level_reason(reason: &str) -> Option<&'static str> {
    const POD_LEVEL: &[&str] = &["IPAllocationFailed", "NetworkSetupFailed", "NoRuntime"];
    POD_LEVEL.iter().find(|known| **known == reason).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: ContainerState, restarts: u32) -> ContainerStatus {
        ContainerStatus {
            name: "web".into(),
            image: "shop/web:1".into(),
            ready: false,
            restart_count: restarts,
            state,
            last_state: None,
        }
    }

    fn status(containers: Vec<ContainerStatus>, message: Option<&str>) -> PodStatus {
        PodStatus {
            container_statuses: containers,
            message: message.map(str::to_string),
            ..PodStatus::default()
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState::Waiting {
            reason: reason.into(),
        }
    }

    #[test]
    fn pulls_and_crash_loops_become_events_once_per_change() {
        let creating = status(vec![container(waiting("ContainerCreating"), 0)], None);
        let failed = status(
            vec![container(waiting("ErrImagePull"), 0)],
            Some("manifest unknown"),
        );
        let events = status_events(&creating, &failed);
        assert_eq!(
            events,
            vec![(
                EventType::Warning,
                "Failed",
                "Failed to pull image \"shop/web:1\": manifest unknown".to_string()
            )]
        );
        assert!(status_events(&failed, &failed).is_empty(), "no repeat");
        let backoff = status(vec![container(waiting("ImagePullBackOff"), 0)], None);
        assert_eq!(status_events(&failed, &backoff)[0].1, "BackOff");

        let running = status(
            vec![container(ContainerState::Running { started_at: 1 }, 0)],
            None,
        );
        assert_eq!(status_events(&backoff, &running)[0].1, "Started");
        assert!(status_events(&running, &running).is_empty());
        let crashing = status(vec![container(waiting("CrashLoopBackOff"), 1)], None);
        assert_eq!(
            status_events(&running, &crashing)[0].2,
            "Back-off restarting failed container web"
        );
        let restarted = status(
            vec![container(ContainerState::Running { started_at: 2 }, 2)],
            None,
        );
        assert_eq!(status_events(&running, &restarted)[0].1, "Started");
    }

    #[test]
    fn pod_level_failures_carry_their_reason() {
        let new = PodStatus {
            reason: Some("IPAllocationFailed".into()),
            message: Some("pool web has no free address".into()),
            ..PodStatus::default()
        };
        assert_eq!(
            status_events(&PodStatus::default(), &new),
            vec![(
                EventType::Warning,
                "IPAllocationFailed",
                "pool web has no free address".to_string()
            )]
        );
        assert!(status_events(&new, &new).is_empty());
    }
}
