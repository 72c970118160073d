//! Cost budgets (leader only): each evaluation reads, for every budget,
//! its project's spend so far in the current period from the cost history
//! (the figures of `wharf cost report --by project`) and forecasts the
//! whole period: the spend so far plus the recent rate, the cost of the
//! recorded minutes of the last 24 hours (or of the period so far, when
//! shorter) divided by their number, times the minutes left.
//!
//! A threshold the forecast or the spend reaches is written into the
//! budget's status before anything is told, so each is told once per
//! period even across leader changes; it is then recorded as a Warning
//! event in the project and returned, for the caller to notify receivers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wharf_api::{
    BudgetCrossing, BudgetMeasure, CostBudget, CostBudgetStatus, EventType,
    FORECAST_LOOKBACK_MINUTES, ObjectReference, budget_forecast, micros_text, new_crossings,
    rfc3339,
};

use super::history::CostHistory;
use crate::ControlError;
use crate::deployments::Clock;
use crate::events::EventRecorder;
use crate::objects::{Objects, now_millis};

/// A threshold a budget reached, to be told to the project's receivers.
#[derive(Clone, Debug)]
pub struct BudgetAlert {
    /// The budget, with the status that records the crossing.
    pub budget: CostBudget,
    /// What was reached.
    pub crossing: BudgetCrossing,
}

impl BudgetAlert {
    /// One line with the numbers, as the event and the notification say it.
    pub fn message(&self) -> String {
        let budget = &self.budget;
        let c = &self.crossing;
        let period = format!(
            "the {} period from {}",
            budget.spec.period.as_str(),
            rfc3339(budget.status.period_start)
        );
        let amount = micros_text(budget.amount_micros());
        match c.measure {
            BudgetMeasure::Forecast => format!(
                "project {}: forecast {} for {period} reaches {}% of its budget {amount} (spent {} so far)",
                budget.spec.project,
                micros_text(c.forecast_micros),
                c.threshold,
                micros_text(c.spent_micros)
            ),
            BudgetMeasure::Actual => format!(
                "project {}: spent {} in {period}, {}% of its budget {amount} (forecast {})",
                budget.spec.project,
                micros_text(c.spent_micros),
                c.threshold,
                micros_text(c.forecast_micros)
            ),
        }
    }
}

/// Creates or replaces a budget (its status is kept unless the amount or
/// period changed: a different budget warns afresh); `true` if created.
pub async fn apply_cost_budget(
    objects: &Objects,
    mut budget: CostBudget,
) -> Result<(CostBudget, bool), ControlError> {
    budget.status = CostBudgetStatus::default();
    budget.normalize_and_validate()?;
    let spec = budget.spec.clone();
    objects
        .create_or_modify(budget, |current: &mut CostBudget| {
            if current.spec == spec {
                return false;
            }
            if current.spec.amount != spec.amount || current.spec.period != spec.period {
                current.status.crossed.clear();
            }
            current.spec = spec.clone();
            true
        })
        .await
}

/// Removes `project`'s budget, if it has one (with the project).
pub async fn delete_project_budget(objects: &Objects, project: &str) -> Result<(), ControlError> {
    match objects.delete::<CostBudget>(None, project, None).await {
        Ok(_) | Err(ControlError::NotFound { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Evaluates every budget against the cost history.
pub struct BudgetEvaluator {
    objects: Objects,
    history: CostHistory,
    events: EventRecorder,
    clock: Clock,
    /// What the last evaluation saw: the minute and the budgets' specs.
    /// The history grows by the minute, so evaluating again within the
    /// same minute, budgets unchanged, would find nothing new; a month's
    /// read is not cheap at scale.
    last_seen: Mutex<Option<String>>,
}

/// Each project's cost over a window, and how many minutes it recorded.
#[derive(Clone, Default)]
struct WindowSpend {
    by_project: HashMap<String, u64>,
    minutes: u64,
}

impl BudgetEvaluator {
    /// An evaluator of the budgets in `objects` against `history`, on the
    /// system clock.
    pub fn new(objects: Objects, history: CostHistory) -> BudgetEvaluator {
        BudgetEvaluator {
            events: EventRecorder::new(objects.clone(), "cost-budgets"),
            objects,
            history,
            clock: Arc::new(now_millis),
            last_seen: Mutex::default(),
        }
    }

    /// The same with `clock` (unix ms) for "now": tests move time.
    pub fn with_clock(mut self, clock: Clock) -> BudgetEvaluator {
        self.clock = clock;
        self
    }

    /// Evaluates every budget once; returns the thresholds reached for
    /// the first time in their period (already recorded in the status
    /// and as events).
    pub async fn evaluate(&self) -> Result<Vec<BudgetAlert>, ControlError> {
        let now = (self.clock)();
        let minute = now / 60_000;
        let (budgets, _) = self.objects.list::<CostBudget>(None, None).await?;
        if !self.changed_since_last(minute, &budgets) {
            return Ok(Vec::new());
        }
        let mut windows: HashMap<(u64, u64), WindowSpend> = HashMap::new();
        let mut alerts = Vec::new();
        for budget in budgets {
            let project = budget.spec.project.clone();
            let (start, end) = budget.spec.period.bounds(minute);
            let recent_start = start.max(minute.saturating_sub(FORECAST_LOOKBACK_MINUTES));
            let so_far = self.spend(&mut windows, start, minute).await?;
            let recent = self.spend(&mut windows, recent_start, minute).await?;
            let spent = so_far.by_project.get(&project).copied().unwrap_or(0);
            let recent_cost = recent.by_project.get(&project).copied().unwrap_or(0);
            let forecast = budget_forecast(spent, recent_cost, recent.minutes, end - minute);

            let mut status = budget.status.clone();
            if status.period_start != start * 60_000 {
                status.crossed.clear();
                status.period_start = start * 60_000;
                status.period_end = end * 60_000;
            }
            status.spent_micros = spent;
            status.forecast_micros = forecast;
            let crossings: Vec<BudgetCrossing> =
                new_crossings(&budget, &status.crossed, spent, forecast)
                    .into_iter()
                    .map(|(measure, threshold)| BudgetCrossing {
                        measure,
                        threshold,
                        at: now,
                        spent_micros: spent,
                        forecast_micros: forecast,
                    })
                    .collect();
            status.crossed.extend(crossings.iter().cloned());
            let Some(stored) = self.write_status(&budget, status, now).await? else {
                continue;
            };
            for crossing in crossings {
                let alert = BudgetAlert {
                    budget: stored.clone(),
                    crossing,
                };
                self.record_event(&alert).await;
                alerts.push(alert);
            }
        }
        Ok(alerts)
    }

    /// Whether `minute` or the budgets differ from the last evaluation's
    /// (a budget's own status writes do not count).
    fn changed_since_last(&self, minute: u64, budgets: &[CostBudget]) -> bool {
        let specs: Vec<(&str, &wharf_api::CostBudgetSpec)> = budgets
            .iter()
            .map(|b| (b.metadata.uid.as_str(), &b.spec))
            .collect();
        let seen = serde_json::json!([minute, specs]).to_string();
        let mut last = self.last_seen.lock().expect("budget evaluator lock");
        if last.as_deref() == Some(seen.as_str()) {
            return false;
        }
        *last = Some(seen);
        true
    }

    /// The spend of `[since, until)` (unix minutes), read once per
    /// evaluation whatever the number of budgets sharing the window.
    async fn spend(
        &self,
        windows: &mut HashMap<(u64, u64), WindowSpend>,
        since: u64,
        until: u64,
    ) -> Result<WindowSpend, ControlError> {
        if let Some(known) = windows.get(&(since, until)) {
            return Ok(known.clone());
        }
        let history = self.history.clone();
        let window = tokio::task::spawn_blocking(move || history.read(since, until))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Internal(format!("cost history: {e}")))?;
        let mut spend = WindowSpend {
            minutes: window.minutes,
            ..WindowSpend::default()
        };
        // Unallocated cost has no project: no budget counts it.
        for (key, amounts) in window.rows.iter().filter(|(k, _)| !k.project.is_empty()) {
            *spend.by_project.entry(key.project.clone()).or_default() +=
                amounts.used + amounts.idle;
        }
        windows.insert((since, until), spend.clone());
        Ok(spend)
    }

    /// Stores the status if it changed; the budget as stored, or `None`
    /// if it was deleted or replaced meanwhile (its crossings are void).
    async fn write_status(
        &self,
        budget: &CostBudget,
        mut status: CostBudgetStatus,
        now: u64,
    ) -> Result<Option<CostBudget>, ControlError> {
        status.evaluated_at = budget.status.evaluated_at;
        if status == budget.status {
            return Ok(Some(budget.clone()));
        }
        status.evaluated_at = now;
        let uid = budget.metadata.uid.clone();
        let spec = budget.spec.clone();
        let written = self
            .objects
            .modify::<CostBudget>(None, &budget.metadata.name, |b| {
                if b.metadata.uid != uid || b.spec != spec {
                    return false;
                }
                b.status = status.clone();
                true
            })
            .await;
        match written {
            Ok(stored) if stored.metadata.uid == uid && stored.status == status => Ok(Some(stored)),
            Ok(_) | Err(ControlError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn record_event(&self, alert: &BudgetAlert) {
        let involved = ObjectReference {
            kind: "CostBudget".into(),
            project: Some(alert.budget.spec.project.clone()),
            name: alert.budget.metadata.name.clone(),
            ..ObjectReference::default()
        };
        let reason = alert.crossing.measure.reason();
        self.events
            .record(&involved, EventType::Warning, reason, &alert.message())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use wharf_api::{BudgetPeriod, CostMicros, Event};

    use super::*;
    use crate::cost::{NodeGroups, RowKey};
    use crate::test_objects::objects;

    /// 2026-12-01T00:00:00Z in unix minutes.
    const DECEMBER: u64 = 29_934_720;

    fn row(project: &str, used: u64) -> (RowKey, CostMicros) {
        let key = RowKey {
            node: NodeGroups {
                pool: "old".into(),
                cluster: "dc1".into(),
                class: "-".into(),
            },
            project: project.into(),
            deployment: "web".into(),
        };
        let amounts = CostMicros {
            used,
            idle: 1_000,
            unallocated: 0,
        };
        (key, amounts)
    }

    #[tokio::test]
    async fn the_forecast_warns_before_the_spend_and_each_threshold_once_a_period() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let history = CostHistory::open(&dir.path().join("cost")).unwrap();
        let now = Arc::new(AtomicU64::new(0));
        let clock = now.clone();
        let evaluator = BudgetEvaluator::new(objects.clone(), history.clone())
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        // Shop spends 0.002 a minute (1,000 used + 1,000 idle), bank more;
        // the unallocated row counts for nobody.
        let unallocated = {
            let (mut key, _) = row("", 0);
            key.deployment = String::new();
            let amounts = CostMicros {
                unallocated: 9_000,
                ..CostMicros::default()
            };
            (key, amounts)
        };
        for minute in DECEMBER..DECEMBER + 600 {
            history
                .append(
                    minute,
                    &[row("shop", 1_000), row("bank", 50_000), unallocated.clone()],
                )
                .unwrap();
        }
        let budget = CostBudget::new("shop", 100.0, BudgetPeriod::Monthly, vec![80, 100]);
        apply_cost_budget(&objects, budget.clone()).await.unwrap();

        // At minute 600: spent 1.20; rate 0.002 for the 44,040 minutes
        // left: 88.08 more, forecast 89.28 >= 80 (80%), < 100 (100%).
        now.store((DECEMBER + 600) * 60_000 + 5_000, Ordering::SeqCst);
        let alerts = evaluator.evaluate().await.unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let crossing = &alerts[0].crossing;
        assert_eq!(
            (crossing.measure, crossing.threshold),
            (BudgetMeasure::Forecast, 80)
        );
        assert_eq!(crossing.spent_micros, 1_200_000);
        let left = 31 * 1440 - 600;
        assert_eq!(crossing.forecast_micros, 1_200_000 + 2_000 * left);
        let stored: CostBudget = objects.require(None, "shop").await.unwrap();
        assert_eq!(stored.status.spent_micros, 1_200_000);
        assert_eq!(stored.status.period_start, DECEMBER * 60_000);
        assert_eq!(stored.state(), "forecast >= 80%");
        let (events, _) = objects.list::<Event>(Some("shop"), None).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "BudgetForecastExceeded");
        assert!(
            events[0].message.contains("reaches 80%"),
            "{}",
            events[0].message
        );

        // Within the minute, budgets unchanged, nothing is read again: a
        // status cleared behind the evaluator's back goes unnoticed.
        objects
            .modify::<CostBudget>(None, "shop", |b| {
                b.status.crossed.clear();
                true
            })
            .await
            .unwrap();
        assert!(evaluator.evaluate().await.unwrap().is_empty());
        objects
            .modify::<CostBudget>(None, "shop", |b| {
                b.status = stored.status.clone();
                true
            })
            .await
            .unwrap();

        // A minute later nothing new is told, by this evaluator or by a
        // new leader's.
        now.store((DECEMBER + 601) * 60_000 + 5_000, Ordering::SeqCst);
        assert!(evaluator.evaluate().await.unwrap().is_empty());
        let clock = now.clone();
        let next_leader = BudgetEvaluator::new(objects.clone(), history.clone())
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        assert!(next_leader.evaluate().await.unwrap().is_empty());

        // A budget of 1.00 is a new one: spend and forecast reach both.
        let mut smaller = budget;
        smaller.spec.amount = 1.0;
        apply_cost_budget(&objects, smaller).await.unwrap();
        let told: Vec<_> = evaluator
            .evaluate()
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.crossing.measure, a.crossing.threshold))
            .collect();
        use BudgetMeasure::{Actual, Forecast};
        assert_eq!(
            told,
            [(Forecast, 80), (Forecast, 100), (Actual, 80), (Actual, 100)]
        );

        // Next month, the period starts over: nothing spent, nothing told.
        now.store((DECEMBER + 31 * 1440 + 1) * 60_000, Ordering::SeqCst);
        assert!(evaluator.evaluate().await.unwrap().is_empty());
        let stored: CostBudget = objects.require(None, "shop").await.unwrap();
        assert!(stored.status.crossed.is_empty());
        assert_eq!(stored.state(), "ok");
    }
}
