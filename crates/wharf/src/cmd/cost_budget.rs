//! `wharf cost budget set|list|delete`: a project's cost budget per
//! period, with the thresholds at which the leader warns (docs/cost.md).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Deserialize;
use wharf_api::{BudgetPeriod, CostBudget, micros_text};

use super::ServerOption;
use crate::output::{self, OutputOption, Table};

/// `wharf cost budget ...`
#[derive(Args)]
pub struct BudgetArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: BudgetCommand,
}

#[derive(Subcommand)]
enum BudgetCommand {
    /// Sets (creates or replaces) a project's budget.
    Set(SetArgs),
    /// Budgets with their spend so far, forecast and state.
    List(OutputOption),
    /// Removes a project's budget.
    Delete {
        /// The project.
        project: String,
    },
}

#[derive(Args)]
struct SetArgs {
    /// The project.
    project: String,
    /// The amount per period, in the cost report's unit.
    #[arg(long)]
    amount: f64,
    /// daily, weekly (from Monday) or monthly; periods start at 00:00 UTC.
    #[arg(long, default_value = "monthly")]
    period: BudgetPeriod,
    /// A percentage of the amount that warns when the forecast or the
    /// spend reaches it; repeat for several [default: 100].
    #[arg(long = "threshold")]
    thresholds: Vec<u32>,
}

#[derive(Deserialize)]
struct BudgetList {
    items: Vec<CostBudget>,
}

/// Runs `wharf cost budget ...`.
pub async fn run(args: BudgetArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        BudgetCommand::Set(set) => {
            let mut budget = CostBudget::new(&set.project, set.amount, set.period, set.thresholds);
            // Checked here too, so a typo is caught before anything is sent.
            budget.normalize_and_validate()?;
            let answer = client
                .post(&["cost", "budgets"], &serde_json::to_value(&budget)?)
                .await
                .with_context(|| format!("setting the budget of project {}", set.project))?;
            let stored: CostBudget = serde_json::from_value(answer)?;
            println!(
                "costbudget/{} set: {} {} (thresholds {})",
                stored.metadata.name,
                stored.spec.amount,
                stored.spec.period.as_str(),
                percentages(&stored.spec.thresholds)
            );
        }
        BudgetCommand::List(output) => {
            let answer = client
                .get(&["cost", "budgets"])
                .await
                .context("listing cost budgets")?;
            output::print(output.format, answer, |list: BudgetList| table(&list.items))?;
        }
        BudgetCommand::Delete { project } => {
            client
                .delete(&["cost", "budgets", &project])
                .await
                .with_context(|| format!("deleting the budget of project {project}"))?;
            println!("costbudget/{project} deleted");
        }
    }
    Ok(())
}

fn percentages(thresholds: &[u32]) -> String {
    let each: Vec<String> = thresholds.iter().map(|t| format!("{t}%")).collect();
    each.join(",")
}

fn table(budgets: &[CostBudget]) -> String {
    let mut table = Table::new(&[
        "PROJECT",
        "PERIOD",
        "AMOUNT",
        "SPENT",
        "FORECAST",
        "THRESHOLDS",
        "STATE",
    ]);
    for budget in budgets {
        table.row([
            budget.spec.project.clone(),
            budget.spec.period.as_str().to_string(),
            micros_text(budget.amount_micros()),
            micros_text(budget.status.spent_micros),
            micros_text(budget.status.forecast_micros),
            percentages(&budget.spec.thresholds),
            budget.state(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_spend_forecast_and_state() {
        let mut budget = CostBudget::new("shop", 100.0, BudgetPeriod::Monthly, vec![80, 100]);
        budget.status.period_start = 1;
        budget.status.spent_micros = 1_204_999;
        budget.status.forecast_micros = 89_280_000;
        budget.status.crossed.push(wharf_api::BudgetCrossing {
            measure: wharf_api::BudgetMeasure::Forecast,
            threshold: 80,
            at: 1,
            spent_micros: 1_204_999,
            forecast_micros: 89_280_000,
        });
        let text = table(&[budget]);
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "shop", "monthly", "100.00", "1.20", "89.28", "80%,100%", "forecast", ">=", "80%"
            ],
            "{text}"
        );
    }
}
