//! A pod's conditions as the node reports them: `PodScheduled` and
//! `Initialized` (a pod on a node has both: Wharf has no init containers),
//! `ContainersReady` and `Ready` (every container ready; Wharf has no
//! readiness gates, so the two agree), each with the time it last changed.

use std::collections::HashMap;

use wharf_api::{ContainerStatus, PodCondition};

/// Each condition's status and when it last changed (unix ms).
pub(super) type Transitions = HashMap<&'static str, (bool, u64)>;

/// The conditions of a pod whose containers stand as `statuses`, at `now`;
/// a condition's time is kept while its status holds (taken from
/// `reported`, the conditions last reported, after an agent restart).
pub(super) fn pod_conditions(
    held: &mut Transitions,
    reported: &[PodCondition],
    statuses: &[ContainerStatus],
    now: u64,
) -> Vec<PodCondition> {
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = !statuses.is_empty() && unready.is_empty();
    let why = (!ready).then(|| {
        (
            "ContainersNotReady".to_string(),
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    });
    [
        ("PodScheduled", true),
        ("Initialized", true),
        ("ContainersReady", ready),
        ("Ready", ready),
    ]
    .into_iter()
    .map(|(kind, status)| {
        let since = held.entry(kind).or_insert_with(|| {
            let before = reported
                .iter()
                .find(|c| c.kind == kind && (c.status == "True") == status)
                .and_then(|c| wharf_api::parse_rfc3339(c.last_transition_time.as_deref()?));
            (status, before.unwrap_or(now))
        });
        if since.0 != status {
            *since = (status, now);
        }
        let (reason, message) = match &why {
            Some((reason, message)) if !status => (Some(reason.clone()), Some(message.clone())),
            _ => (None, None),
        };
        PodCondition {
            kind: kind.to_string(),
            status: if status { "True" } else { "False" }.into(),
            last_transition_time: Some(wharf_api::rfc3339(since.1)),
            reason,
            message,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            ..ContainerStatus::default()
        }
    }

    fn find<'c>(conditions: &'c [PodCondition], kind: &str) -> &'c PodCondition {
        conditions.iter().find(|c| c.kind == kind).unwrap()
    }

    #[test]
    fn ready_follows_every_container_and_keeps_its_transition_time() {
        let mut held = Transitions::new();
        let statuses = [container("web", true), container("log", false)];
        let first = pod_conditions(&mut held, &[], &statuses, 1_000);
        let ready = find(&first, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [log]")
        );
        assert_eq!(find(&first, "PodScheduled").status, "True");

        let same = pod_conditions(&mut held, &first, &statuses, 5_000);
        assert_eq!(
            find(&same, "Ready").last_transition_time,
            ready.last_transition_time
        );

        let all = [container("web", true), container("log", true)];
        let now_ready = pod_conditions(&mut held, &same, &all, 9_000);
        let ready = find(&now_ready, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_ref()),
            ("True", None)
        );
        assert_eq!(
            ready.last_transition_time.as_deref(),
            Some("1970-01-01T00:00:09Z")
        );
        assert_eq!(find(&now_ready, "ContainersReady").status, "True");
    }

    #[test]
    fn a_restarted_agent_keeps_the_reported_times() {
        let reported = pod_conditions(
            &mut Transitions::new(),
            &[],
            &[container("web", true)],
            2_000,
        );
        let mut fresh = Transitions::new();
        let again = pod_conditions(&mut fresh, &reported, &[container("web", true)], 60_000);
        assert_eq!(
            find(&again, "Ready").last_transition_time.as_deref(),
            Some("1970-01-01T00:00:02Z")
        );
    }
}
