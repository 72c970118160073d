//! Cost budgets: an amount a project may spend per period (a day, an ISO
//! week or a calendar month, UTC), with thresholds at which the leader
//! warns, on the spend forecast for the whole period and on the actual
//! spend. The figures are those of the cost report (`wharf cost report
//! --by project`), in the same micro-units.
//!
//! The pure arithmetic lives here so that it is tested exactly; the
//! evaluator that reads the history and alerts is in `wharf-control`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{ObjectMeta, check_name};
use crate::time::month_bounds;
use crate::{MICROS_PER_CENT, ObjectError, cents_text};

/// The threshold a budget without any has: the whole amount.
pub const DEFAULT_BUDGET_THRESHOLD: u32 = 100;
/// The highest threshold, in percent of the amount.
pub const MAX_BUDGET_THRESHOLD: u32 = 1000;
/// The largest amount: its micro-units (and ten times them) fit in 64 bits.
pub const MAX_BUDGET_AMOUNT: f64 = 1e12;
/// The longest span of recent spend a forecast extrapolates, in minutes.
pub const FORECAST_LOOKBACK_MINUTES: u64 = 24 * 60;

/// A project's cost budget (one per project, named after it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostBudget {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `CostBudget`.
    #[serde(default = "cost_budget_kind")]
    pub kind: String,
    /// Name: the project's (given by the spec when a manifest leaves it
    /// out).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Project, amount, period, thresholds.
    pub spec: CostBudgetSpec,
    /// Spend, forecast and the thresholds crossed this period, written by
    /// the leader's evaluator.
    #[serde(default)]
    pub status: CostBudgetStatus,
}

fn wharf_v1() -> String {
    "wharf.io/v1".into()
}

fn cost_budget_kind() -> String {
    "CostBudget".into()
}

fn default_thresholds() -> Vec<u32> {
    vec![DEFAULT_BUDGET_THRESHOLD]
}

/// How much a project may spend, per what, and when to warn.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostBudgetSpec {
    /// The project.
    pub project: String,
    /// The amount per period, in the cost report's (currency-less) unit.
    pub amount: f64,
    /// The period the amount is for.
    #[serde(default)]
    pub period: BudgetPeriod,
    /// Percentages of the amount that warn when the forecast or the
    /// actual spend reaches them (default `[100]`).
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u32>,
}

/// The span a budget's amount covers; periods start at 00:00 UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// A calendar day.
    Daily,
    /// An ISO week, from Monday.
    Weekly,
    /// A calendar month.
    #[default]
    Monthly,
}

impl BudgetPeriod {
    /// The period holding unix minute `minute`: its first minute and the
    /// first minute after it.
    ///
    /// ```
    /// use wharf_api::BudgetPeriod;
    /// // 2026-02-10T12:00Z: February has 28 days in 2026.
    /// let minute = 29_498_400 + 9 * 1440 + 720;
    /// let (start, end) = BudgetPeriod::Monthly.bounds(minute);
    /// assert_eq!((start, end - start), (29_498_400, 28 * 1440));
    /// ```
    pub fn bounds(self, minute: u64) -> (u64, u64) {
        let day = minute / 1440;
        let (start, end) = match self {
            BudgetPeriod::Daily => (day, day + 1),
            // 1970-01-01 was a Thursday: three days after a Monday.
            BudgetPeriod::Weekly => {
                let monday = day - (day + 3) % 7;
                (monday, monday + 7)
            }
            BudgetPeriod::Monthly => month_bounds(day),
        };
        (start * 1440, end * 1440)
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Weekly => "weekly",
            BudgetPeriod::Monthly => "monthly",
        }
    }
}

impl std::str::FromStr for BudgetPeriod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "daily" => Ok(BudgetPeriod::Daily),
            "weekly" => Ok(BudgetPeriod::Weekly),
            "monthly" => Ok(BudgetPeriod::Monthly),
            _ => Err(format!(
                "invalid period {text:?}: use daily, weekly or monthly"
            )),
        }
    }
}

/// What a threshold is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetMeasure {
    /// The spend forecast for the whole period.
    Forecast,
    /// The spend so far.
    Actual,
}

impl BudgetMeasure {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetMeasure::Forecast => "forecast",
            BudgetMeasure::Actual => "actual",
        }
    }

    /// The event reason of a crossing.
    pub fn reason(self) -> &'static str {
        match self {
            BudgetMeasure::Forecast => "BudgetForecastExceeded",
            BudgetMeasure::Actual => "BudgetExceeded",
        }
    }
}

/// A threshold reached in the current period: it is told once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetCrossing {
    /// Forecast or actual spend.
    pub measure: BudgetMeasure,
    /// The threshold, in percent of the amount.
    pub threshold: u32,
    /// When it was found (ms since the epoch).
    pub at: u64,
    /// The spend so far then, in micro-units.
    pub spent_micros: u64,
    /// The forecast then, in micro-units.
    pub forecast_micros: u64,
}

/// What the evaluator last found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostBudgetStatus {
    /// The current period's start (ms; 0 until first evaluated).
    #[serde(default)]
    pub period_start: u64,
    /// The current period's end (ms, exclusive).
    #[serde(default)]
    pub period_end: u64,
    /// Spend so far in the period, in micro-units.
    #[serde(default)]
    pub spent_micros: u64,
    /// Forecast spend for the whole period, in micro-units.
    #[serde(default)]
    pub forecast_micros: u64,
    /// The thresholds crossed this period, in the order found.
    #[serde(default)]
    pub crossed: Vec<BudgetCrossing>,
    /// When it was last evaluated (ms).
    #[serde(default)]
    pub evaluated_at: u64,
}

impl CostBudget {
    /// A budget of `amount` per `period` for `project`, named as it must
    /// be.
    ///
    /// ```
    /// use wharf_api::{BudgetPeriod, CostBudget};
    /// let mut budget = CostBudget::new("shop", 250.0, BudgetPeriod::Monthly, vec![100, 80]);
    /// budget.normalize_and_validate().unwrap();
    /// assert_eq!(budget.spec.thresholds, [80, 100]);
    /// assert_eq!(budget.amount_micros(), 250_000_000);
    /// ```
    pub fn new(project: &str, amount: f64, period: BudgetPeriod, thresholds: Vec<u32>) -> Self {
        CostBudget {
            api_version: wharf_v1(),
            kind: cost_budget_kind(),
            metadata: ObjectMeta {
                name: project.to_string(),
                ..ObjectMeta::default()
            },
            spec: CostBudgetSpec {
                project: project.to_string(),
                amount,
                period,
                thresholds,
            },
            status: CostBudgetStatus::default(),
        }
    }

    /// Names the budget after its project when a manifest left the name
    /// out, sorts the thresholds (default `[100]`), then checks it.
    pub fn normalize_and_validate(&mut self) -> Result<(), ObjectError> {
        if self.metadata.name.is_empty() {
            self.metadata.name = self.spec.project.clone();
        }
        if self.spec.thresholds.is_empty() {
            self.spec.thresholds = default_thresholds();
        }
        self.spec.thresholds.sort_unstable();
        self.spec.thresholds.dedup();
        self.validate()
    }

    /// Checks the project, the name, the amount and the thresholds.
    pub fn validate(&self) -> Result<(), ObjectError> {
        let spec = &self.spec;
        check_name("spec.project", &spec.project)?;
        if self.metadata.name != spec.project {
            return Err(ObjectError::invalid(
                "metadata.name",
                format!(
                    "the budget of project {} is named {} (one per project)",
                    spec.project, spec.project
                ),
            ));
        }
        if !(spec.amount.is_finite() && spec.amount > 0.0 && spec.amount <= MAX_BUDGET_AMOUNT) {
            return Err(ObjectError::invalid(
                "spec.amount",
                format!(
                    "{} is not an amount: give a number above 0 and at most {MAX_BUDGET_AMOUNT:e}",
                    spec.amount
                ),
            ));
        }
        if spec.thresholds.is_empty() {
            return Err(ObjectError::invalid(
                "spec.thresholds",
                "give at least one percentage (or leave the field out for 100)",
            ));
        }
        if let Some(bad) = spec
            .thresholds
            .iter()
            .find(|&&t| t == 0 || t > MAX_BUDGET_THRESHOLD)
        {
            return Err(ObjectError::invalid(
                "spec.thresholds",
                format!("{bad} is not a percentage from 1 to {MAX_BUDGET_THRESHOLD}"),
            ));
        }
        Ok(())
    }

    /// The amount in micro-units.
    pub fn amount_micros(&self) -> u64 {
        (self.spec.amount * 1e6).round() as u64
    }

    /// A word or two on where the budget stands, from its status: the
    /// highest threshold the actual spend reached, else the forecast's.
    pub fn state(&self) -> String {
        if self.status.period_start == 0 {
            return "not evaluated".into();
        }
        let highest = |measure| {
            self.status
                .crossed
                .iter()
                .filter(|c| c.measure == measure)
                .map(|c| c.threshold)
                .max()
        };
        match (
            highest(BudgetMeasure::Actual),
            highest(BudgetMeasure::Forecast),
        ) {
            (Some(t), _) => format!("spent >= {t}%"),
            (None, Some(t)) => format!("forecast >= {t}%"),
            (None, None) => "ok".into(),
        }
    }
}

/// The forecast for a whole period: the spend so far plus the recent rate
/// (`recent_cost` over `recent_minutes` recorded minutes) for each of the
/// `minutes_left`; rounded down. With no recent minute the rate is
/// unknown and the forecast is the spend so far.
///
/// ```
/// // 3.00 spent; 1.44 in the last 1,440 minutes: 0.001 a minute.
/// let forecast = wharf_api::budget_forecast(3_000_000, 1_440_000, 1440, 10_000);
/// assert_eq!(forecast, 13_000_000);
/// ```
pub fn budget_forecast(
    spent: u64,
    recent_cost: u64,
    recent_minutes: u64,
    minutes_left: u64,
) -> u64 {
    if recent_minutes == 0 {
        return spent;
    }
    let ahead = u128::from(recent_cost) * u128::from(minutes_left) / u128::from(recent_minutes);
    spent.saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX))
}

/// `threshold` percent of `amount_micros`, rounded up: a spend reaches the
/// threshold when it is at least this.
pub fn threshold_micros(amount_micros: u64, threshold: u32) -> u64 {
    (u128::from(amount_micros) * u128::from(threshold)).div_ceil(100) as u64
}

/// The thresholds of `spec` that `spent` or `forecast` (micro-units)
/// reach and that `crossed` does not hold yet: forecast ones first, each
/// measure's lowest first.
pub fn new_crossings(
    budget: &CostBudget,
    crossed: &[BudgetCrossing],
    spent: u64,
    forecast: u64,
) -> Vec<(BudgetMeasure, u32)> {
    let amount = budget.amount_micros();
    let mut found = Vec::new();
    for (measure, value) in [
        (BudgetMeasure::Forecast, forecast),
        (BudgetMeasure::Actual, spent),
    ] {
        for &threshold in &budget.spec.thresholds {
            let told = crossed
                .iter()
                .any(|c| c.measure == measure && c.threshold == threshold);
            if !told && value >= threshold_micros(amount, threshold) {
                found.push((measure, threshold));
            }
        }
    }
    found
}

/// Micro-units as money text rounded to the cent (`12.35`).
pub fn micros_text(micros: u64) -> String {
    cents_text((micros + MICROS_PER_CENT / 2) / MICROS_PER_CENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(json: serde_json::Value) -> Result<CostBudget, ObjectError> {
        let mut budget: CostBudget = serde_json::from_value(json).unwrap();
        budget.normalize_and_validate().map(|()| budget)
    }

    #[test]
    fn a_budget_takes_defaults_and_its_checks_name_the_field() {
        let fine =
            budget(serde_json::json!({"spec": {"project": "shop", "amount": 12.5}})).unwrap();
        assert_eq!(fine.metadata.name, "shop");
        assert_eq!(fine.spec.period, BudgetPeriod::Monthly);
        assert_eq!(fine.spec.thresholds, [100]);
        assert_eq!(fine.amount_micros(), 12_500_000);
        let cases = [
            (
                serde_json::json!({"project": "shop", "amount": 0.0}),
                "spec.amount",
            ),
            (
                serde_json::json!({"project": "shop", "amount": -3.0}),
                "spec.amount",
            ),
            (
                serde_json::json!({"project": "shop", "amount": 1e13}),
                "spec.amount",
            ),
            (
                serde_json::json!({"project": "shop", "amount": 5.0, "thresholds": [80, 0]}),
                "spec.thresholds",
            ),
            (
                serde_json::json!({"project": "shop", "amount": 5.0, "thresholds": [1001]}),
                "spec.thresholds",
            ),
            (
                serde_json::json!({"project": "Shop!", "amount": 5.0}),
                "spec.project",
            ),
        ];
        for (spec, field) in cases {
            let err = budget(serde_json::json!({ "spec": spec })).unwrap_err();
            assert!(
                matches!(&err, ObjectError::Invalid { field: f, .. } if f == field),
                "{spec}: {err}"
            );
        }
        let mut infinite = CostBudget::new("shop", f64::INFINITY, BudgetPeriod::Daily, vec![]);
        assert!(infinite.normalize_and_validate().is_err(), "not finite");
        let renamed = serde_json::json!({"metadata": {"name": "bank"},
            "spec": {"project": "shop", "amount": 5.0}});
        let err = budget(renamed).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }

    #[test]
    fn periods_start_at_midnight_utc_on_the_day_the_week_and_the_month() {
        // 2026-12-09T15:30Z is a Wednesday.
        let minute = 29_946_240 + 15 * 60 + 30;
        let day = minute / 1440 * 1440;
        assert_eq!(BudgetPeriod::Daily.bounds(minute), (day, day + 1440));
        let monday = day - 2 * 1440;
        assert_eq!(
            BudgetPeriod::Weekly.bounds(minute),
            (monday, monday + 7 * 1440)
        );
        let december = day - 8 * 1440;
        assert_eq!(
            BudgetPeriod::Monthly.bounds(minute),
            (december, december + 31 * 1440)
        );
        assert_eq!("weekly".parse(), Ok(BudgetPeriod::Weekly));
        assert!(
            "yearly"
                .parse::<BudgetPeriod>()
                .unwrap_err()
                .contains("monthly")
        );
    }

    #[test]
    fn the_forecast_extrapolates_the_recent_rate_exactly() {
        // 0.10 in 7 minutes, 100 minutes left: 1.428571 (floor) ahead.
        assert_eq!(
            budget_forecast(500_000, 100_000, 7, 100),
            500_000 + 1_428_571
        );
        assert_eq!(
            budget_forecast(500_000, 100_000, 0, 100),
            500_000,
            "no rate"
        );
        assert_eq!(
            budget_forecast(500_000, 100_000, 7, 0),
            500_000,
            "period over"
        );
        assert_eq!(
            budget_forecast(u64::MAX - 1, u64::MAX, 1, u64::MAX),
            u64::MAX,
            "saturates"
        );
        assert_eq!(threshold_micros(1_000_001, 80), 800_001, "rounded up");
        assert_eq!(threshold_micros(1_000_000, 1000), 10_000_000);
    }

    #[test]
    fn each_threshold_is_crossed_once_per_measure() {
        let budget = CostBudget::new("shop", 1.0, BudgetPeriod::Monthly, vec![80, 100]);
        // Forecast 0.85, spent 0.10: the forecast's 80% only.
        let found = new_crossings(&budget, &[], 100_000, 850_000);
        assert_eq!(found, [(BudgetMeasure::Forecast, 80)]);
        let told = BudgetCrossing {
            measure: BudgetMeasure::Forecast,
            threshold: 80,
            at: 1,
            spent_micros: 100_000,
            forecast_micros: 850_000,
        };
        assert!(new_crossings(&budget, std::slice::from_ref(&told), 100_000, 900_000).is_empty());
        let found = new_crossings(&budget, &[told], 1_000_000, 1_200_000);
        assert_eq!(
            found,
            [
                (BudgetMeasure::Forecast, 100),
                (BudgetMeasure::Actual, 80),
                (BudgetMeasure::Actual, 100)
            ]
        );
        assert_eq!(micros_text(12_345_000), "12.35");
    }
}
