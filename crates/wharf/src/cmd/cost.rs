//! `wharf cost report`: what nodes cost over a window, by project, pool,
//! cluster, deployment or machine class, split into used, requested but
//! idle, and unallocated (docs/cost.md); `wharf cost budget` is in
//! `cost_budget`.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use wharf_api::{CostReport, CostRow, cents_text, rfc3339};

use super::ServerOption;
use crate::output::Table;

/// Options of `wharf cost`.
#[derive(Args)]
pub struct CostArgs {
    #[command(subcommand)]
    command: CostCommand,
}

#[derive(Subcommand)]
enum CostCommand {
    /// Cost over a window, grouped; the rows add up to the nodes' cost.
    Report(ReportArgs),
    /// Budgets per project, with a warning when the forecast reaches them.
    Budget(super::cost_budget::BudgetArgs),
}

/// What `wharf cost report` groups by.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum By {
    /// The pods' projects (unallocated node cost in its own row).
    Project,
    /// The nodes' pools (`wharf.io/pool`).
    Pool,
    /// The nodes' clusters (`wharf.io/cluster`).
    Cluster,
    /// The pods' deployments, as project/deployment.
    Deployment,
    /// The nodes' machine classes (`wharf.io/machine-class`).
    Class,
}

/// How `wharf cost report` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned columns with a total line.
    #[default]
    Table,
    /// The server's answer: rows, exact micro-units, the window.
    Json,
    /// group,used,idle,unallocated,total with two decimals.
    Csv,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What rows group by.
    #[arg(long, value_enum, default_value = "project")]
    by: By,
    /// Window start: RFC 3339 or a duration back from now (24h, 30d).
    #[arg(long, default_value = "24h")]
    since: String,
    /// Window end: RFC 3339 or a duration back from now [default: now].
    #[arg(long, default_value = "0s")]
    until: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
}

/// Runs `wharf cost ...`.
pub async fn run(args: CostArgs) -> Result<()> {
    match args.command {
        CostCommand::Report(args) => report(args).await,
        CostCommand::Budget(args) => super::cost_budget::run(args).await,
    }
}

async fn report(args: ReportArgs) -> Result<()> {
    let mut client = args.server.client()?;
    let by = format!("{:?}", args.by).to_lowercase();
    let answer = client
        .get_with_query(
            &["cost", "report"],
            &[("by", by), ("since", args.since), ("until", args.until)],
        )
        .await?;
    if args.output == Format::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let report: CostReport = serde_json::from_value(answer)?;
    match args.output {
        Format::Csv => print!("{}", csv(&report)),
        _ => print!("{}", table(&report)),
    }
    Ok(())
}

/// An amount the server rounded to cents, as text.
fn money(amount: f64) -> String {
    cents_text((amount * 100.0).round() as u64)
}

fn cells(row: &CostRow) -> [String; 5] {
    [
        row.group.clone(),
        money(row.used),
        money(row.idle),
        money(row.unallocated),
        money(row.total),
    ]
}

fn table(report: &CostReport) -> String {
    let header = report.by.to_string().to_uppercase();
    let mut table = Table::new(&["GROUP", "USED", "IDLE", "UNALLOCATED", "TOTAL"]);
    for row in report.rows.iter().chain([&report.total]) {
        table.row(cells(row));
    }
    format!(
        "{header} cost from {} to {} ({} minutes recorded)\n{}",
        rfc3339(report.since),
        rfc3339(report.until),
        report.minutes_recorded,
        table.render()
    )
}

fn csv(report: &CostReport) -> String {
    let mut text = String::from("group,used,idle,unallocated,total\n");
    for row in &report.rows {
        let [group, rest @ ..] = cells(row);
        text.push_str(&format!(
            "\"{}\",{}\n",
            group.replace('"', "\"\""),
            rest.join(",")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::{CostGrouping, CostMicros, cost_rows};

    #[test]
    fn table_and_csv_show_two_decimals_and_the_unallocated_row() {
        let micros = |used, idle, unallocated| CostMicros {
            used,
            idle,
            unallocated,
        };
        let (rows, total) = cost_rows(vec![
            ("shop".into(), micros(1_234_567, 5_000, 0)),
            ("(unallocated)".into(), micros(0, 0, 99_999)),
        ]);
        let report = CostReport {
            by: CostGrouping::Project,
            since: 0,
            until: 3_600_000,
            minutes_recorded: 60,
            rows,
            total,
        };
        let table = table(&report);
        assert!(
            table.contains("shop           1.23  0.01  0.00         1.24"),
            "{table}"
        );
        assert!(table.contains("TOTAL"), "{table}");
        assert_eq!(
            csv(&report),
            "group,used,idle,unallocated,total\n\"shop\",1.23,0.01,0.00,1.24\n\"(unallocated)\",0.00,0.00,0.10,0.10\n"
        );
    }
}
