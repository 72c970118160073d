//! Budget alerts: while this server leads, the cost budgets are evaluated
//! on the alert interval (`wharf_control::cost::BudgetEvaluator`), and
//! each threshold a budget reaches for the first time in its period is
//! sent to its project's receivers as a firing alert named `CostBudget`,
//! with the same signature, retries and delivery log as rule alerts.

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_api::{Alert, AlertNotification, AlertReceiver, AlertState, micros_text};
use wharf_control::cost::{BudgetAlert, BudgetEvaluator};
use wharf_control::{ControlError, Objects};

use super::delivery::Sender;
use super::{Notification, notify_every, now_ms};

/// The `alertname` (and rule) of budget notifications.
pub(crate) const BUDGET_ALERT_NAME: &str = "CostBudget";

/// Evaluates budgets and notifies while this server leads.
pub(crate) struct BudgetAlerts {
    evaluator: BudgetEvaluator,
    objects: Objects,
    sender: Sender,
    interval: Duration,
}

impl BudgetAlerts {
    pub(crate) fn new(
        evaluator: BudgetEvaluator,
        objects: Objects,
        sender: Sender,
        interval: Duration,
    ) -> BudgetAlerts {
        BudgetAlerts {
            evaluator,
            objects,
            sender,
            interval,
        }
    }

    /// Evaluates every interval until dropped; deliveries under way stop
    /// with it.
    pub(crate) async fn run(self) {
        let this = &self;
        notify_every(
            this.interval,
            &this.sender,
            "cost budget evaluation",
            || this.crossings(),
        )
        .await;
    }

    /// One evaluation: a notification per crossing and receiver of the
    /// budget's project.
    async fn crossings(&self) -> Result<Vec<Notification>, ControlError> {
        let alerts = self.evaluator.evaluate().await?;
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        let (receivers, _) = self.objects.list::<AlertReceiver>(None, None).await?;
        let mut sends = Vec::new();
        for alert in alerts {
            let project = Some(&alert.budget.spec.project);
            for receiver in receivers
                .iter()
                .filter(|r| r.metadata.project.as_ref() == project)
            {
                sends.push((
                    receiver.clone(),
                    notification(&alert, &receiver.metadata.name),
                ));
            }
        }
        Ok(sends)
    }
}

/// The body sent to one receiver for one crossing: a firing alert whose
/// labels name the project, the budget, the measure and the threshold,
/// and whose annotations carry the figures.
fn notification(alert: &BudgetAlert, receiver: &str) -> AlertNotification {
    let budget = &alert.budget;
    let crossing = &alert.crossing;
    let project = budget.spec.project.clone();
    let group_labels = BTreeMap::from([
        ("alertname".to_string(), BUDGET_ALERT_NAME.to_string()),
        ("project".to_string(), project.clone()),
    ]);
    let mut labels = group_labels.clone();
    labels.extend([
        ("budget".to_string(), budget.metadata.name.clone()),
        ("measure".to_string(), crossing.measure.as_str().to_string()),
        ("threshold".to_string(), crossing.threshold.to_string()),
        (
            "period".to_string(),
            budget.spec.period.as_str().to_string(),
        ),
        ("severity".to_string(), "warning".to_string()),
    ]);
    let annotations = BTreeMap::from([
        ("summary".to_string(), alert.message()),
        ("amount".to_string(), micros_text(budget.amount_micros())),
        ("spent".to_string(), micros_text(crossing.spent_micros)),
        (
            "forecast".to_string(),
            micros_text(crossing.forecast_micros),
        ),
        ("threshold".to_string(), crossing.threshold.to_string()),
    ]);
    let value = match crossing.measure {
        wharf_api::BudgetMeasure::Forecast => crossing.forecast_micros,
        wharf_api::BudgetMeasure::Actual => crossing.spent_micros,
    };
    AlertNotification {
        version: "1".into(),
        id: format!("{:013}-{:08x}", now_ms(), rand::random::<u32>()),
        status: AlertState::Firing,
        receiver: receiver.to_owned(),
        project: Some(project),
        rule: BUDGET_ALERT_NAME.into(),
        severity: "warning".into(),
        group_labels,
        annotations,
        alerts: vec![Alert {
            labels,
            state: AlertState::Firing,
            value: value as f64 / 1e6,
            active_at: crossing.at,
            fired_at: Some(crossing.at),
            resolved_at: None,
            notified: None,
            silenced_by: None,
        }],
    }
}
