//! The evaluation loop: every interval, each rule's query against the
//! metrics store, its alerts advanced (see `state`), the status written
//! when it changed, then the notices it produced sent to the receivers of
//! the rule's scope. Notices are marked told in the status before they
//! are sent, so a leader change never sends one twice (a delivery under
//! way when leadership is lost is not retried by the next leader).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wharf_api::{Alert, AlertNotification, AlertReceiver, AlertRule, AlertRuleStatus, Silence};
use wharf_control::{ControlError, Objects};
use wharf_tsdb::{Matcher, Query, Tsdb, TsdbError};

use super::delivery::Sender;
use super::state::{Labels, Notice, advance, apply_silences, full_labels, record, take_notices};
use super::{Notification, notify_every, now_ms};

/// Step of the query inside a rule's window: the agents' default interval.
const STEP_SECONDS: u64 = 10;

/// Evaluates rules while this server leads.
pub(crate) struct AlertEvaluator {
    objects: Objects,
    tsdb: Arc<Tsdb>,
    sender: Sender,
    interval: Duration,
}

impl AlertEvaluator {
    pub(crate) fn new(
        objects: Objects,
        tsdb: Arc<Tsdb>,
        sender: Sender,
        interval: Duration,
    ) -> AlertEvaluator {
        AlertEvaluator {
            objects,
            tsdb,
            sender,
            interval,
        }
    }

    /// Evaluates every interval until dropped; deliveries under way stop
    /// with it.
    pub(crate) async fn run(self) {
        let this = &self;
        notify_every(this.interval, &this.sender, "alert evaluation", || {
            this.evaluate()
        })
        .await;
    }

    /// One evaluation: the notifications it produced, each with its
    /// receiver.
    async fn evaluate(&self) -> Result<Vec<Notification>, ControlError> {
        let now = now_ms();
        let (rules, _) = self.objects.list::<AlertRule>(None, None).await?;
        let (silences, _) = self.objects.list::<Silence>(None, None).await?;
        let (receivers, _) = self.objects.list::<AlertReceiver>(None, None).await?;
        let mut sends = Vec::new();
        for rule in rules {
            let mut status = rule.status.clone();
            let notices = match self.observe(&rule, now / 1000).await {
                Ok(values) => {
                    let (mut alerts, transitions) =
                        advance(&rule.spec, &status.alerts, &values, now);
                    apply_silences(&rule, &mut alerts, &silences, now);
                    let notices = take_notices(&rule.spec, &mut alerts);
                    record(&mut status.history, transitions);
                    status.alerts = alerts;
                    status.error = None;
                    notices
                }
                Err(err) => {
                    status.error = Some(err);
                    Vec::new()
                }
            };
            if !self.write_status(&rule, status.clone(), now).await? {
                continue;
            }
            for notice in notices {
                for receiver in receivers
                    .iter()
                    .filter(|r| r.metadata.project == rule.metadata.project)
                {
                    let body = notification(&rule, &status, &notice, &receiver.metadata.name);
                    sends.push((receiver.clone(), body));
                }
            }
        }
        Ok(sends)
    }

    /// Stores the status if it changed; `false` if the rule is gone or was
    /// replaced by another of the same name (its notices are then void).
    async fn write_status(
        &self,
        rule: &AlertRule,
        mut status: AlertRuleStatus,
        now: u64,
    ) -> Result<bool, ControlError> {
        status.evaluated_at = rule.status.evaluated_at;
        if status == rule.status {
            return Ok(true);
        }
        status.evaluated_at = now;
        let uid = rule.metadata.uid.clone();
        let written = self
            .objects
            .modify::<AlertRule>(rule.metadata.project.as_deref(), &rule.metadata.name, |r| {
                if r.metadata.uid != uid {
                    return false;
                }
                r.status = status.clone();
                true
            })
            .await;
        match written {
            Ok(stored) => Ok(stored.metadata.uid == uid),
            Err(ControlError::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Each label group's value: the rule's aggregation of its series at
    /// each step, averaged over the window. A project's rule reads only
    /// its project's series.
    async fn observe(&self, rule: &AlertRule, now: u64) -> Result<BTreeMap<Labels, f64>, String> {
        let spec = &rule.spec;
        let mut matchers = Matcher::parse_list(&spec.tags)?;
        if let Some(project) = &rule.metadata.project {
            matchers.push(Matcher::Eq("project".into(), project.clone()));
        }
        let now = now as i64;
        let mut query = Query::new(
            &spec.metric,
            now - spec.window_seconds as i64,
            now,
            spec.window_seconds.min(STEP_SECONDS) as i64,
        );
        query.matchers = matchers;
        query.agg = Some(spec.aggregation.as_str().parse()?);
        query.by = spec.by.clone();
        query.rate = spec.rate;
        let tsdb = self.tsdb.clone();
        let answer = tokio::task::spawn_blocking(move || tsdb.query(&query, now))
            .await
            .map_err(|e| e.to_string())?;
        let answer = match answer {
            Ok(answer) => answer,
            // No series yet: nothing holds.
            Err(TsdbError::UnknownMetric(_)) => return Ok(BTreeMap::new()),
            Err(err) => return Err(err.to_string()),
        };
        Ok(answer
            .series
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .map(|s| {
                let mean = s.points.iter().map(|p| p.1).sum::<f64>() / s.points.len() as f64;
                (s.labels, mean)
            })
            .collect())
    }
}

/// The body sent to one receiver for one notice.
fn notification(
    rule: &AlertRule,
    status: &AlertRuleStatus,
    notice: &Notice,
    receiver: &str,
) -> AlertNotification {
    AlertNotification {
        version: "1".into(),
        id: format!("{:013}-{:08x}", now_ms(), rand::random::<u32>()),
        status: notice.status,
        receiver: receiver.to_owned(),
        project: rule.metadata.project.clone(),
        rule: rule.metadata.name.clone(),
        severity: rule.spec.severity.clone(),
        group_labels: notice.group.clone(),
        annotations: rule.spec.annotations.clone(),
        alerts: notice
            .alerts
            .iter()
            .map(|&i| {
                let alert = &status.alerts[i];
                Alert {
                    labels: full_labels(rule, alert),
                    notified: None,
                    silenced_by: None,
                    ..alert.clone()
                }
            })
            .collect(),
    }
}
