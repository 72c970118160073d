//! `wharf metrics query METRIC`: node and container metrics from the
//! server's time-series store, as a table, JSON, CSV or a terminal chart.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;

use super::ServerOption;
use crate::output::Table;
use crate::units;

/// Options of `wharf metrics`.
#[derive(Args)]
pub struct MetricsArgs {
    #[command(subcommand)]
    command: MetricsCommand,
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// Read one metric's series over a time range.
    Query(QueryArgs),
}

/// How `wharf metrics query` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One row per series: points, last, min, avg, max.
    #[default]
    Table,
    /// The server's answer.
    Json,
    /// One line per point: labels, timestamp, value.
    Csv,
    /// A small block chart per series.
    Chart,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    server: ServerOption,
    /// Metric name, e.g. cpu.busy or net.if.in.bytes.
    metric: String,
    /// Tag matchers: k=v, k!=v or k=a|b, comma-separated. Callers who are
    /// not administrators name their project here (project=NAME).
    #[arg(long, default_value = "")]
    tags: String,
    /// Only this endpoint (a node or container).
    #[arg(long)]
    endpoint: Option<String>,
    /// How far back from now (ignored with --start).
    #[arg(long, default_value = "1h", value_parser = units::parse_duration)]
    since: Duration,
    /// Start of the range: RFC 3339 or seconds since the epoch.
    #[arg(long, value_parser = parse_time)]
    start: Option<i64>,
    /// End of the range: RFC 3339 or seconds since the epoch [default: now].
    #[arg(long, value_parser = parse_time)]
    end: Option<i64>,
    /// Seconds per point (under 60s reads raw samples, under 1h the
    /// 1-minute history) [default: about 360 points].
    #[arg(long, value_parser = units::parse_duration)]
    step: Option<Duration>,
    /// Combine the series: sum, avg, max or min.
    #[arg(long, value_parser = ["sum", "avg", "max", "min"])]
    agg: Option<String>,
    /// Labels that keep series apart under --agg (comma-separated).
    #[arg(long)]
    by: Option<String>,
    /// Counters as per-second rates.
    #[arg(long)]
    rate: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
}

/// The server's answer.
#[derive(Deserialize)]
struct Answer {
    resolution: String,
    step: i64,
    series: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    labels: BTreeMap<String, String>,
    points: Vec<(i64, f64)>,
}

fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    wharf_api::parse_rfc3339(text)
        .map(|ms| (ms / 1000) as i64)
        .ok_or_else(|| format!("{text:?} is neither RFC 3339 nor seconds since the epoch"))
}

/// Runs `wharf metrics`.
pub async fn run(args: MetricsArgs) -> Result<()> {
    let MetricsCommand::Query(args) = args.command;
    let mut client = args.server.client()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let end = args.end.unwrap_or(now);
    let start = args.start.unwrap_or(end - args.since.as_secs() as i64);
    let mut query = vec![
        ("metric", args.metric.clone()),
        ("start", start.to_string()),
        ("end", end.to_string()),
    ];
    let optional = [
        ("tags", Some(args.tags.clone()).filter(|t| !t.is_empty())),
        ("endpoint", args.endpoint.clone()),
        ("step", args.step.map(|s| s.as_secs().max(1).to_string())),
        ("agg", args.agg.clone()),
        ("by", args.by.clone()),
        ("rate", args.rate.then(|| "true".to_string())),
    ];
    query.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let answer = client
        .get_with_query(&["metrics", "query"], &query)
        .await
        .with_context(|| format!("querying metric {}", args.metric))?;
    if args.output == Format::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let answer: Answer = serde_json::from_value(answer)
        .context("the server's answer is not what wharf expects; try -o json")?;
    if answer.series.is_empty() {
        bail!("no points of {} in that range", args.metric);
    }
    let text = match args.output {
        Format::Table => table(&answer).render(),
        Format::Csv => csv(&answer),
        Format::Chart => answer
            .series
            .iter()
            .map(|s| chart(s, &answer, CHART_WIDTH))
            .collect(),
        Format::Json => unreachable!("printed above"),
    };
    print!("{text}");
    Ok(())
}

/// A series' labels as `k=v,k2=v2` (`-` when it has none).
fn label_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    wharf_api::format_tags(labels)
}

/// Shortest readable form of a value.
fn number(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

fn table(answer: &Answer) -> Table {
    let mut table = Table::new(&["SERIES", "POINTS", "LAST", "MIN", "AVG", "MAX"]);
    for series in &answer.series {
        let values: Vec<f64> = series.points.iter().map(|p| p.1).collect();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let avg = values.iter().sum::<f64>() / values.len().max(1) as f64;
        table.row([
            label_text(&series.labels),
            values.len().to_string(),
            values.last().map_or("-".into(), |v| number(*v)),
            number(min),
            number(avg),
            number(max),
        ]);
    }
    table
}

fn csv(answer: &Answer) -> String {
    let mut text = String::from("series,timestamp,value\n");
    for series in &answer.series {
        let labels = label_text(&series.labels).replace('"', "\"\"");
        for (t, v) in &series.points {
            text.push_str(&format!("\"{labels}\",{t},{v}\n"));
        }
    }
    text
}

/// Columns of a chart.
const CHART_WIDTH: usize = 60;
/// Rows of a chart; each row holds eight levels of block characters.
const CHART_ROWS: usize = 4;
const BLOCKS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A block chart of one series: its values spread over `width` columns
/// (the mean of the points that fall in a column), scaled between the
/// series' min and max, with the labels and the scale around it.
fn chart(series: &Series, answer: &Answer, width: usize) -> String {
    let (Some(first), Some(last)) = (series.points.first(), series.points.last()) else {
        return String::new();
    };
    let span = (last.0 - first.0).max(1) as f64;
    let columns = width.min(series.points.len()).max(1);
    let mut sums = vec![(0.0, 0u32); columns];
    for (t, v) in &series.points {
        let column = (((t - first.0) as f64 / span) * (columns - 1) as f64).round() as usize;
        sums[column].0 += v;
        sums[column].1 += 1;
    }
    let values: Vec<Option<f64>> = sums
        .iter()
        .map(|(s, n)| (*n > 0).then(|| s / f64::from(*n)))
        .collect();
    let min = values
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let max = values
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let levels = (CHART_ROWS * 8) as f64;
    let level = |v: f64| {
        if max > min {
            ((v - min) / (max - min) * levels).round() as usize
        } else {
            CHART_ROWS * 4
        }
    };
    let mut text = format!(
        "{}  ({} points, {}s step, {})\n",
        label_text(&series.labels),
        series.points.len(),
        answer.step,
        answer.resolution
    );
    for row in (0..CHART_ROWS).rev() {
        let scale = match row {
            r if r == CHART_ROWS - 1 => number(max),
            0 => number(min),
            _ => String::new(),
        };
        let line: String = values
            .iter()
            .map(|v| match v {
                None => ' ',
                Some(v) => BLOCKS[level(*v).saturating_sub(row * 8).min(8)],
            })
            .collect();
        text.push_str(&format!("{scale:>10} │{line}\n"));
    }
    let from = wharf_api::rfc3339(first.0.max(0) as u64 * 1000);
    let to = wharf_api::rfc3339(last.0.max(0) as u64 * 1000);
    text.push_str(&format!("{:>10} └{from} … {to}\n", ""));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(points: Vec<(i64, f64)>) -> Answer {
        Answer {
            resolution: "raw".into(),
            step: 10,
            series: vec![Series {
                labels: BTreeMap::from([("endpoint".into(), "n1".into())]),
                points,
            }],
        }
    }

    #[test]
    fn a_chart_rises_with_the_values_and_names_its_scale() {
        let a = answer(vec![(0, 0.0), (10, 50.0), (20, 100.0)]);
        let text = chart(&a.series[0], &a, 60);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("endpoint=n1  (3 points, 10s step, raw)"),
            "{text}"
        );
        // Top row: only the last column is full; bottom row: all but the first.
        assert!(
            lines[1].ends_with("│  █") && lines[1].contains("100"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("│ ██") && lines[4].trim_start().starts_with('0'),
            "{text}"
        );
        assert!(
            lines[5].contains("1970-01-01T00:00:00Z … 1970-01-01T00:00:20Z"),
            "{text}"
        );
    }

    #[test]
    fn table_and_csv_summarize_and_list_points() {
        let a = answer(vec![(0, 1.0), (10, 2.5)]);
        let table = table(&a).render();
        assert!(
            table.contains("endpoint=n1  2       2.500  1    1.750  2.500"),
            "{table}"
        );
        assert_eq!(
            csv(&a),
            "series,timestamp,value\n\"endpoint=n1\",0,1\n\"endpoint=n1\",10,2.5\n"
        );
    }
}
