//! The life of a rule's alerts, one evaluation at a time: pending while
//! the condition holds for less than `for`, firing after, resolved when it
//! stops holding (or its data stops coming); which silences apply; which
//! alerts have a state change receivers were not yet told of. Pure: the
//! evaluator passes the values and the time in.

use std::collections::{BTreeMap, BTreeSet};

use wharf_api::{
    ALERT_HISTORY_LEN, Alert, AlertRule, AlertRuleSpec, AlertState, AlertTransition, Silence,
};

/// Labels of one group.
pub(crate) type Labels = BTreeMap<String, String>;

/// A rule's alerts after one evaluation at `now` (ms), given the value of
/// each label group the query answered, and the transitions it made.
pub(crate) fn advance(
    spec: &AlertRuleSpec,
    previous: &[Alert],
    observed: &BTreeMap<Labels, f64>,
    now: u64,
) -> (Vec<Alert>, Vec<AlertTransition>) {
    let mut groups: BTreeSet<&Labels> = observed.keys().collect();
    groups.extend(previous.iter().map(|a| &a.labels));
    let mut alerts = Vec::new();
    let mut transitions = Vec::new();
    for labels in groups {
        let before = previous.iter().find(|a| &a.labels == labels);
        let value = observed.get(labels).copied();
        let holds = value.is_some_and(|v| spec.op.holds(v, spec.threshold));
        let after = next(spec, before, labels, value, holds, now);
        let (from, to) = (before.map(|a| a.state), after.as_ref().map(|a| a.state));
        // A resolved alert that leaves the list has already been counted.
        if from != to && !(from == Some(AlertState::Resolved) && to.is_none()) {
            transitions.push(AlertTransition {
                at: now,
                labels: labels.clone(),
                from,
                to,
                value: value.or(before.map(|a| a.value)).unwrap_or(f64::NAN),
            });
        }
        alerts.extend(after);
    }
    (alerts, transitions)
}

/// One group's alert after an evaluation; `None` when it has nothing left
/// to show or say.
fn next(
    spec: &AlertRuleSpec,
    before: Option<&Alert>,
    labels: &Labels,
    value: Option<f64>,
    holds: bool,
    now: u64,
) -> Option<Alert> {
    let for_ms = spec.for_seconds * 1000;
    let state = before.map(|a| a.state);
    match (state, holds) {
        (None | Some(AlertState::Resolved), true) => {
            let mut alert = Alert {
                labels: labels.clone(),
                state: AlertState::Pending,
                value: value.unwrap_or_default(),
                active_at: now,
                fired_at: None,
                resolved_at: None,
                // A resolved alert that fires again must be told again.
                notified: before.and_then(|a| a.notified),
                silenced_by: None,
            };
            if for_ms == 0 {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
            }
            Some(alert)
        }
        (Some(AlertState::Pending), true) => {
            let mut alert = before.cloned()?;
            alert.value = value.unwrap_or(alert.value);
            if now.saturating_sub(alert.active_at) >= for_ms {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
            }
            Some(alert)
        }
        (Some(AlertState::Firing), true) => {
            let mut alert = before.cloned()?;
            alert.value = value.unwrap_or(alert.value);
            Some(alert)
        }
        (Some(AlertState::Pending), false) | (None, false) => None,
        (Some(AlertState::Firing), false) => {
            let mut alert = before.cloned()?;
            alert.state = AlertState::Resolved;
            alert.resolved_at = Some(now);
            alert.value = value.unwrap_or(alert.value);
            Some(alert)
        }
        // Kept until its resolution is told (or there is none to tell).
        (Some(AlertState::Resolved), false) => before
            .filter(|a| a.notified == Some(AlertState::Firing))
            .cloned(),
    }
}

/// All labels of an alert, as silences match them and notifications carry
/// them: the group's, the rule's, `alertname`, `severity` and `project`.
pub(crate) fn full_labels(rule: &AlertRule, alert: &Alert) -> Labels {
    let mut labels = alert.labels.clone();
    labels.extend(rule.spec.labels.clone());
    labels.insert("alertname".into(), rule.metadata.name.clone());
    labels.insert("severity".into(), rule.spec.severity.clone());
    if let Some(project) = &rule.metadata.project {
        labels.insert("project".into(), project.clone());
    }
    labels
}

/// Marks each alert with the first silence that applies to it at `now`:
/// the cluster's silences apply to every rule, a project's to its rules.
pub(crate) fn apply_silences(
    rule: &AlertRule,
    alerts: &mut [Alert],
    silences: &[Silence],
    now: u64,
) {
    for alert in alerts {
        let labels = full_labels(rule, alert);
        alert.silenced_by = silences
            .iter()
            .filter(|s| s.is_active(now))
            .filter(|s| s.metadata.project.is_none() || s.metadata.project == rule.metadata.project)
            .find(|s| s.matches(&labels))
            .map(|s| s.metadata.name.clone());
    }
}

/// The state receivers should now be told of, if any: a firing alert not
/// yet notified as firing, a resolved one whose firing was notified;
/// silenced alerts are told nothing.
pub(crate) fn to_notify(alert: &Alert) -> Option<AlertState> {
    if alert.silenced_by.is_some() {
        return None;
    }
    match alert.state {
        AlertState::Firing if alert.notified != Some(AlertState::Firing) => {
            Some(AlertState::Firing)
        }
        AlertState::Resolved if alert.notified == Some(AlertState::Firing) => {
            Some(AlertState::Resolved)
        }
        _ => None,
    }
}

/// One notification to send: a group of a rule's alerts that changed to
/// the same state.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Notice {
    /// The values of the rule's group labels.
    pub group: Labels,
    /// `firing` or `resolved`.
    pub status: AlertState,
    /// The alerts (indexes into the rule's alerts).
    pub alerts: Vec<usize>,
}

/// Groups the alerts that need telling by (group labels, new state), one
/// notice per group and state, and marks them told: a group is notified
/// once per state change, however many evaluations see it.
pub(crate) fn take_notices(spec: &AlertRuleSpec, alerts: &mut [Alert]) -> Vec<Notice> {
    let mut notices: BTreeMap<(Labels, &'static str), Notice> = BTreeMap::new();
    for (index, alert) in alerts.iter_mut().enumerate() {
        let Some(status) = to_notify(alert) else {
            continue;
        };
        alert.notified = Some(status);
        let group: Labels = spec
            .notification_group()
            .iter()
            .filter_map(|k| alert.labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        notices
            .entry((group.clone(), status.as_str()))
            .or_insert_with(|| Notice {
                group,
                status,
                alerts: Vec::new(),
            })
            .alerts
            .push(index);
    }
    notices.into_values().collect()
}

/// Appends transitions to a rule's history, keeping the latest.
pub(crate) fn record(history: &mut Vec<AlertTransition>, transitions: Vec<AlertTransition>) {
    history.extend(transitions);
    let excess = history.len().saturating_sub(ALERT_HISTORY_LEN);
    history.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::{ObjectMeta, SilenceSpec};

    fn spec(for_seconds: u64) -> AlertRuleSpec {
        serde_json::from_value(serde_json::json!({
            "metric": "container.cpu.usage_seconds", "rate": true, "by": ["pod", "container"],
            "groupBy": ["pod"], "op": ">", "threshold": 0.5, "forSeconds": for_seconds
        }))
        .unwrap()
    }

    fn labels(pod: &str, container: &str) -> Labels {
        Labels::from([
            ("pod".into(), pod.into()),
            ("container".into(), container.into()),
        ])
    }

    fn observe(values: &[(&str, &str, f64)]) -> BTreeMap<Labels, f64> {
        values.iter().map(|(p, c, v)| (labels(p, c), *v)).collect()
    }

    fn states(alerts: &[Alert]) -> Vec<AlertState> {
        alerts.iter().map(|a| a.state).collect()
    }

    #[test]
    fn an_alert_is_pending_for_its_for_then_fires_then_resolves() {
        let spec = spec(30);
        let (alerts, t) = advance(&spec, &[], &observe(&[("web", "a", 0.9)]), 1_000);
        assert_eq!(states(&alerts), [AlertState::Pending]);
        assert_eq!((t[0].from, t[0].to), (None, Some(AlertState::Pending)));
        let (alerts, t) = advance(&spec, &alerts, &observe(&[("web", "a", 0.8)]), 20_000);
        assert_eq!(states(&alerts), [AlertState::Pending], "not yet 30 s");
        assert!(t.is_empty());
        let (alerts, t) = advance(&spec, &alerts, &observe(&[("web", "a", 0.7)]), 31_000);
        assert_eq!(states(&alerts), [AlertState::Firing]);
        assert_eq!(alerts[0].fired_at, Some(31_000));
        assert_eq!(alerts[0].value, 0.7);
        assert_eq!(t[0].to, Some(AlertState::Firing));
        // The data stops (the container is gone): resolved.
        let (mut alerts, t) = advance(&spec, &alerts, &BTreeMap::new(), 40_000);
        assert_eq!(states(&alerts), [AlertState::Resolved]);
        assert_eq!(t[0].to, Some(AlertState::Resolved));
        // Never notified as firing: nothing to tell, so it goes.
        let (gone, t) = advance(&spec, &alerts, &BTreeMap::new(), 50_000);
        assert!(gone.is_empty() && t.is_empty());
        // Notified as firing: kept until the resolution is told.
        alerts[0].notified = Some(AlertState::Firing);
        let (kept, _) = advance(&spec, &alerts, &BTreeMap::new(), 50_000);
        assert_eq!(states(&kept), [AlertState::Resolved]);
    }

    #[test]
    fn a_pending_alert_that_stops_holding_goes_without_firing() {
        let spec = spec(30);
        let (alerts, _) = advance(&spec, &[], &observe(&[("web", "a", 0.9)]), 0);
        let (alerts, t) = advance(&spec, &alerts, &observe(&[("web", "a", 0.1)]), 10_000);
        assert!(alerts.is_empty());
        assert_eq!((t[0].from, t[0].to), (Some(AlertState::Pending), None));
    }

    #[test]
    fn without_for_an_alert_fires_at_once_and_fires_again_after_resolving() {
        let spec = spec(0);
        let (mut alerts, _) = advance(&spec, &[], &observe(&[("web", "a", 0.9)]), 0);
        assert_eq!(states(&alerts), [AlertState::Firing]);
        alerts[0].notified = Some(AlertState::Firing);
        let (mut alerts, _) = advance(&spec, &alerts, &observe(&[("web", "a", 0.1)]), 10);
        assert_eq!(states(&alerts), [AlertState::Resolved]);
        assert_eq!(
            take_notices(&spec, &mut alerts)[0].status,
            AlertState::Resolved
        );
        let (mut alerts, _) = advance(&spec, &alerts, &observe(&[("web", "a", 0.9)]), 20);
        assert_eq!(states(&alerts), [AlertState::Firing]);
        assert_eq!(
            take_notices(&spec, &mut alerts)[0].status,
            AlertState::Firing
        );
    }

    #[test]
    fn notices_group_by_the_group_labels_and_are_sent_once_per_change() {
        let spec = spec(0);
        let values = observe(&[("web", "a", 0.9), ("web", "b", 0.9), ("db", "a", 0.9)]);
        let (mut alerts, _) = advance(&spec, &[], &values, 0);
        let notices = take_notices(&spec, &mut alerts);
        assert_eq!(notices.len(), 2, "one per pod: {notices:?}");
        let web = notices.iter().find(|n| n.group["pod"] == "web").unwrap();
        assert_eq!(web.alerts.len(), 2);
        assert_eq!(web.group, Labels::from([("pod".into(), "web".into())]));
        // The next evaluation sees the same: nothing new to say.
        let (mut alerts, _) = advance(&spec, &alerts, &values, 15_000);
        assert!(take_notices(&spec, &mut alerts).is_empty());
    }

    fn rule() -> AlertRule {
        AlertRule {
            metadata: ObjectMeta {
                name: "cpu-high".into(),
                project: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: spec(0),
            status: Default::default(),
        }
    }

    fn silence(project: Option<&str>, matchers: &[(&str, &str)], ends_at: u64) -> Silence {
        Silence {
            metadata: ObjectMeta {
                name: "s1".into(),
                project: project.map(str::to_owned),
                ..ObjectMeta::default()
            },
            spec: SilenceSpec {
                matchers: matchers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ends_at,
                author: "alice".into(),
                comment: String::new(),
            },
        }
    }

    #[test]
    fn a_silenced_alert_is_not_told_until_the_silence_ends() {
        let rule = rule();
        let (mut alerts, _) = advance(&rule.spec, &[], &observe(&[("web", "a", 0.9)]), 0);
        let silences = [silence(
            Some("shop"),
            &[("alertname", "cpu-high"), ("pod", "web")],
            100,
        )];
        apply_silences(&rule, &mut alerts, &silences, 50);
        assert_eq!(alerts[0].silenced_by.as_deref(), Some("s1"));
        assert!(take_notices(&rule.spec, &mut alerts).is_empty());
        // Another project's silence never applies; a cluster one does.
        apply_silences(
            &rule,
            &mut alerts,
            &[silence(Some("bank"), &[("pod", "web")], 100)],
            50,
        );
        assert!(alerts[0].silenced_by.is_none());
        apply_silences(
            &rule,
            &mut alerts,
            &[silence(None, &[("project", "shop")], 100)],
            50,
        );
        assert!(alerts[0].silenced_by.is_some());
        // Expired: it applies no more, and the firing alert is told.
        apply_silences(&rule, &mut alerts, &silences, 100);
        assert!(alerts[0].silenced_by.is_none());
        assert_eq!(take_notices(&rule.spec, &mut alerts).len(), 1);
    }

    #[test]
    fn history_keeps_the_latest_transitions() {
        let mut history = Vec::new();
        let one = |at| AlertTransition {
            at,
            labels: Labels::new(),
            from: None,
            to: Some(AlertState::Firing),
            value: 1.0,
        };
        record(
            &mut history,
            (0..ALERT_HISTORY_LEN as u64 + 5).map(one).collect(),
        );
        assert_eq!(history.len(), ALERT_HISTORY_LEN);
        assert_eq!(history[0].at, 5);
    }
}
