//! Alerting objects: rules over the metrics store (falcon's judge /
//! Prometheus alerting style), the alerts they raise, silences, webhook
//! receivers and their delivery log, and the body a webhook receives.
//!
//! A rule lives in a project (readable by its members, written by
//! maintainers and up) or, with no project, cluster-wide (administrators).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ObjectError, ObjectMeta};

/// Longest window a rule may read: raw samples answer it.
pub const MAX_ALERT_WINDOW_SECONDS: u64 = 3600;
/// Transitions kept per rule for `wharf alert history`.
pub const ALERT_HISTORY_LEN: usize = 100;

/// An alert rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRule {
    /// Name, project (none: cluster-wide), labels.
    pub metadata: ObjectMeta,
    /// What to evaluate.
    pub spec: AlertRuleSpec,
    /// The rule's alerts and their recent transitions, written by the
    /// evaluator.
    #[serde(default)]
    pub status: AlertRuleStatus,
}

/// How the series of one label group are combined at each step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertAggregation {
    /// Mean.
    #[default]
    Avg,
    /// Largest.
    Max,
    /// Smallest.
    Min,
    /// Sum.
    Sum,
}

impl AlertAggregation {
    /// Its name in queries (`agg=`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAggregation::Avg => "avg",
            AlertAggregation::Max => "max",
            AlertAggregation::Min => "min",
            AlertAggregation::Sum => "sum",
        }
    }
}

/// The comparison of a rule's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Comparison {
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Greater or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Less or equal.
    #[serde(rename = "<=")]
    Le,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
}

impl Comparison {
    /// Whether `value` meets the condition against `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
            Comparison::Eq => value == threshold,
            Comparison::Ne => value != threshold,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
        }
    }
}

impl std::str::FromStr for Comparison {
    type Err = String;

    fn from_str(text: &str) -> Result<Comparison, String> {
        Ok(match text {
            ">" => Comparison::Gt,
            ">=" => Comparison::Ge,
            "<" => Comparison::Lt,
            "<=" => Comparison::Le,
            "==" => Comparison::Eq,
            "!=" => Comparison::Ne,
            _ => return Err(format!("{text:?} is not one of >, >=, <, <=, ==, !=")),
        })
    }
}

fn default_window() -> u64 {
    60
}

fn default_severity() -> String {
    "warning".into()
}

/// What a rule evaluates: `agg(rate?(metric{tags}))` by labels over a
/// window, compared with a threshold, true for at least `for`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleSpec {
    /// The metric, e.g. `container.cpu.usage_seconds`.
    pub metric: String,
    /// Tag matchers as the query takes them: `k=v,k!=v,k=a|b`.
    #[serde(default)]
    pub tags: String,
    /// Read counters as per-second rates.
    #[serde(default)]
    pub rate: bool,
    /// How matching series of one group are combined.
    #[serde(default)]
    pub aggregation: AlertAggregation,
    /// Labels that keep alerts apart (one alert per distinct value set).
    #[serde(default)]
    pub by: Vec<String>,
    /// Seconds of data the value is averaged over.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// The comparison.
    pub op: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// Seconds the condition must hold before the alert fires.
    #[serde(default)]
    pub for_seconds: u64,
    /// Severity, e.g. `warning`, `critical`.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Labels of the `by` labels that group notifications (one
    /// notification per group per state change); empty: all `by` labels.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Labels added to every alert of the rule.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Text for people (summary, runbook), sent with notifications.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl AlertRuleSpec {
    /// The labels grouping notifications.
    pub fn notification_group(&self) -> &[String] {
        if self.group_by.is_empty() {
            &self.by
        } else {
            &self.group_by
        }
    }
}

impl AlertRule {
    /// Checks the name and spec; errors name the field.
    pub fn validate(&self) -> Result<(), ObjectError> {
        crate::check_name("metadata.name", &self.metadata.name)?;
        let spec = &self.spec;
        if spec.metric.is_empty() {
            return Err(ObjectError::invalid("spec.metric", "required"));
        }
        for part in spec
            .tags
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if !part.contains('=') {
                return Err(ObjectError::invalid(
                    "spec.tags",
                    format!("{part:?} is not k=v, k!=v or k=a|b"),
                ));
            }
        }
        if spec.window_seconds == 0 || spec.window_seconds > MAX_ALERT_WINDOW_SECONDS {
            return Err(ObjectError::invalid(
                "spec.windowSeconds",
                format!("must be 1 to {MAX_ALERT_WINDOW_SECONDS}"),
            ));
        }
        if !spec.threshold.is_finite() {
            return Err(ObjectError::invalid("spec.threshold", "must be a number"));
        }
        if let Some(label) = spec.group_by.iter().find(|l| !spec.by.contains(l)) {
            return Err(ObjectError::invalid(
                "spec.groupBy",
                format!("{label:?} is not one of the `by` labels"),
            ));
        }
        if spec.severity.is_empty() {
            return Err(ObjectError::invalid("spec.severity", "must not be empty"));
        }
        Ok(())
    }
}

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, not yet for `for`.
    Pending,
    /// The condition has held for `for`.
    Firing,
    /// It fired and no longer holds.
    Resolved,
}

impl AlertState {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert: a rule's condition for one label group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The group's `by` labels.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: AlertState,
    /// The last value evaluated.
    pub value: f64,
    /// When the condition started to hold (ms since the epoch).
    pub active_at: u64,
    /// When it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<u64>,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<u64>,
    /// The last state receivers were told of (firing or resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified: Option<AlertState>,
    /// The silence that keeps it from being notified, while one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<String>,
}

/// One change of an alert's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertTransition {
    /// When (ms since the epoch).
    pub at: u64,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
    /// The state before (none: new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<AlertState>,
    /// The state after (none: gone without firing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<AlertState>,
    /// The value then.
    pub value: f64,
}

/// What the evaluator last found for a rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleStatus {
    /// Pending, firing and just resolved alerts.
    #[serde(default)]
    pub alerts: Vec<Alert>,
    /// The latest transitions, oldest first ([`ALERT_HISTORY_LEN`] at most).
    #[serde(default)]
    pub history: Vec<AlertTransition>,
    /// Why the last evaluation failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was last evaluated (ms).
    #[serde(default)]
    pub evaluated_at: u64,
}

/// A silence: alerts whose labels match stay unnotified until it ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    /// Name (generated), project (none: cluster-wide).
    pub metadata: ObjectMeta,
    /// What it silences and until when.
    pub spec: SilenceSpec,
}

/// What a silence matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilenceSpec {
    /// Labels an alert must have with exactly these values (`alertname`
    /// is the rule's name, `severity` its severity).
    pub matchers: BTreeMap<String, String>,
    /// When it stops applying (ms since the epoch).
    pub ends_at: u64,
    /// Who made it (set by the server).
    #[serde(default)]
    pub author: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

impl Silence {
    /// Whether it applies at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        now_ms < self.spec.ends_at
    }

    /// Whether it silences an alert with `labels` (a silence without
    /// matchers would silence everything, so it matches nothing).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.spec.matchers.is_empty()
            && self
                .spec
                .matchers
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A webhook that receives the notifications of a project's rules (or,
/// cluster-wide, of cluster rules).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertReceiver {
    /// Name, project (none: cluster-wide).
    pub metadata: ObjectMeta,
    /// Where and how to sign.
    pub spec: ReceiverSpec,
}

/// A receiver's address and signing secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSpec {
    /// The `http://` URL notifications are POSTed to.
    pub url: String,
    /// The HMAC key: given on creation, stored sealed, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl AlertReceiver {
    /// Checks the name and URL.
    pub fn validate(&self) -> Result<(), ObjectError> {
        crate::check_name("metadata.name", &self.metadata.name)?;
        let url = &self.spec.url;
        // The server's HTTP client is built without TLS.
        if !url.starts_with("http://") || url.len() == "http://".len() {
            return Err(ObjectError::invalid(
                "spec.url",
                format!("{url:?} is not an http:// URL (https is not supported: relay it)"),
            ));
        }
        Ok(())
    }
}

/// How a notification's delivery went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Being sent or waiting for its next attempt.
    Pending,
    /// Answered with a 2xx.
    Delivered,
    /// Out of attempts.
    Failed,
}

/// One notification to one receiver, as the delivery log keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Its id, also sent as `X-Wharf-Delivery`.
    pub id: String,
    /// The receiver.
    pub receiver: String,
    /// The rule.
    pub rule: String,
    /// `firing` or `resolved`.
    pub status: AlertState,
    /// The group's labels.
    pub group_labels: BTreeMap<String, String>,
    /// How many alerts it carried.
    pub alerts: usize,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// The last HTTP status received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Created (ms).
    pub created_at: u64,
    /// Last changed (ms).
    pub updated_at: u64,
}

/// The JSON body POSTed to a receiver: one group of one rule whose alerts
/// changed state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertNotification {
    /// Format version: `1`.
    pub version: String,
    /// The delivery id.
    pub id: String,
    /// `firing` or `resolved`: what changed.
    pub status: AlertState,
    /// The receiver's name.
    pub receiver: String,
    /// The rule's project (none: cluster-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: String,
    /// The group's labels (the rule's `groupBy`).
    pub group_labels: BTreeMap<String, String>,
    /// The rule's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The alerts of the group that changed to `status`, each with all
    /// its labels (the group's, the rule's, `alertname`, `severity`,
    /// `project`).
    pub alerts: Vec<Alert>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> AlertRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_rule_takes_defaults_and_its_checks_name_the_field() {
        let r = rule(
            r#"{"metadata":{"name":"cpu-high","project":"shop"},
            "spec":{"metric":"container.cpu.usage_seconds","op":">","threshold":0.5,
            "rate":true,"by":["pod"]}}"#,
        );
        assert_eq!(r.spec.window_seconds, 60);
        assert_eq!(r.spec.severity, "warning");
        assert_eq!(r.spec.aggregation, AlertAggregation::Avg);
        assert_eq!(r.spec.notification_group(), ["pod".to_string()]);
        r.validate().unwrap();
        let mut bad = r.clone();
        bad.spec.group_by = vec!["node".into()];
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("spec.groupBy")
        );
        let mut bad = r.clone();
        bad.spec.window_seconds = 7200;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("windowSeconds")
        );
        let mut bad = r;
        bad.spec.tags = "nokey".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("spec.tags")
        );
    }

    #[test]
    fn a_receiver_needs_an_http_url() {
        let receiver = |url: &str| AlertReceiver {
            metadata: ObjectMeta {
                name: "ops".into(),
                ..ObjectMeta::default()
            },
            spec: ReceiverSpec {
                url: url.into(),
                secret: None,
            },
        };
        receiver("http://127.0.0.1:8080/hook").validate().unwrap();
        for bad in ["https://hooks.example/", "ftp://x", "http://"] {
            let err = receiver(bad).validate().unwrap_err().to_string();
            assert!(err.contains("spec.url"), "{bad}: {err}");
        }
    }

    #[test]
    fn comparisons_read_as_written() {
        for (op, value, expected) in [
            (">", 2.0, true),
            (">=", 1.0, true),
            ("<", 1.0, false),
            ("<=", 1.0, true),
            ("==", 1.0, true),
            ("!=", 1.0, false),
        ] {
            let c: Comparison = op.parse().unwrap();
            assert_eq!(c.as_str(), op);
            assert_eq!(c.holds(value, 1.0), expected, "{op}");
        }
        assert!("=>".parse::<Comparison>().is_err());
    }

    #[test]
    fn a_silence_matches_every_matcher_and_only_while_active() {
        let silence = Silence {
            metadata: ObjectMeta::default(),
            spec: SilenceSpec {
                matchers: BTreeMap::from([("alertname".into(), "cpu-high".into())]),
                ends_at: 1_000,
                author: "alice".into(),
                comment: String::new(),
            },
        };
        let labels = BTreeMap::from([
            ("alertname".to_string(), "cpu-high".to_string()),
            ("pod".to_string(), "web-1".to_string()),
        ]);
        assert!(silence.matches(&labels) && silence.is_active(999));
        assert!(!silence.is_active(1_000));
        let mut other = labels.clone();
        other.insert("alertname".into(), "mem-high".into());
        assert!(!silence.matches(&other));
        let mut empty = silence;
        empty.spec.matchers.clear();
        assert!(!empty.matches(&labels), "no matchers silence nothing");
    }
}
