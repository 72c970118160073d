//! The cost report over a month of minute-level history, in process: a
//! fleet of NODES nodes in 20 pools (one machine class and cluster per
//! pool, prices from 0.20 to 1.15 an hour) runs PROJECTS projects of 5
//! deployments, each deployment's replicas on the nodes of one pool.
//! Each node's minute is allocated with the recorder's own code; the
//! fleet's rows are appended for every minute of DAYS days (the amounts
//! shift with the minute, as usage does) into a history directory as the
//! recorder writes it. Then the report over the whole window is timed by
//! project and by pool, and the history's size on disk reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Args;
use wharf_api::{CostGrouping, CostMicros};
use wharf_control::cost::{
    CostHistory, NodeGroups, NodeMinute, PodMinute, RowKey, allocate, build_report,
};

#[derive(Args)]
pub struct CostBenchArgs {
    /// Nodes in the fleet.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Projects, of 5 deployments each.
    #[arg(long, default_value_t = 100)]
    projects: usize,
    /// Days of minute-level history.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Where the history is written (a new temporary directory by default,
    /// removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Reports timed for each grouping (the median is shown).
    #[arg(long, default_value_t = 5)]
    reports: usize,
}

const POOLS: usize = 20;
const DEPLOYMENTS_PER_PROJECT: usize = 5;
const REPLICAS: usize = 20;
/// 2026-01-01T00:00:00Z in unix minutes: the history starts there.
const START: u64 = 29_454_720;

/// The fleet: every node with its pods, as the recorder sees it.
fn fleet(nodes: usize, projects: usize) -> Vec<NodeMinute> {
    let mut fleet: Vec<NodeMinute> = (0..nodes)
        .map(|n| {
            let pool = n % POOLS;
            // Even pools hold the new machines, odd ones the old.
            let new = pool.is_multiple_of(2);
            NodeMinute {
                groups: NodeGroups {
                    pool: format!("pool-{pool}"),
                    cluster: format!("dc{}", pool % 2),
                    class: if new { "std-32c32g" } else { "legacy-12c16g" }.into(),
                },
                price_micros_per_hour: 200_000 + 50_000 * pool as u64,
                cpu_millis: if new { 32_000 } else { 12_000 },
                memory_bytes: if new { 32 << 30 } else { 16 << 30 },
                pods: Vec::new(),
            }
        })
        .collect();
    let per_pool = nodes.div_ceil(POOLS);
    for d in 0..projects * DEPLOYMENTS_PER_PROJECT {
        let pool = d % POOLS;
        for r in 0..REPLICAS {
            let node = pool + POOLS * ((d / POOLS * REPLICAS + r) % per_pool);
            if let Some(node) = fleet.get_mut(node) {
                node.pods.push(PodMinute {
                    project: format!("project-{}", d / DEPLOYMENTS_PER_PROJECT),
                    deployment: format!("deploy-{}", d % DEPLOYMENTS_PER_PROJECT),
                    cpu_request: 500 + 100 * (r as u64 % 5),
                    memory_request: 1 << 30,
                    cpu_usage: 300 + 50 * (d as u64 % 9),
                    memory_usage: 3 << 28,
                });
            }
        }
    }
    fleet
}

/// One minute of the whole fleet, summed by row as the history keeps it.
fn fleet_rows(fleet: &[NodeMinute], minute: u64) -> Vec<(RowKey, CostMicros)> {
    let mut rows: HashMap<RowKey, CostMicros> = HashMap::new();
    for node in fleet {
        for (key, amounts) in allocate(node, minute) {
            rows.entry(key).or_default().add(&amounts);
        }
    }
    rows.into_iter().collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

pub async fn run(args: CostBenchArgs) -> Result<()> {
    ensure!(
        args.reports > 0 && args.days > 0,
        "--reports and --days must be at least 1"
    );
    let temporary = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().join("cost"));
    let history = CostHistory::open(&dir)?;
    let fleet = fleet(args.nodes, args.projects);
    let minutes = args.days * 24 * 60;
    // The allocation is the same for every minute of an hour but the
    // remainder of the price: compute an hour's minutes once and vary
    // the amounts by the minute so the encoding sees changing figures.
    let hour: Vec<Vec<(RowKey, CostMicros)>> = (0..60).map(|m| fleet_rows(&fleet, m)).collect();
    let written = Instant::now();
    for minute in START..START + minutes {
        let mut rows = hour[(minute % 60) as usize].clone();
        let shift = minute % 97;
        for (_, amounts) in &mut rows {
            let moved = amounts.idle.min(shift);
            amounts.idle -= moved;
            amounts.used += moved;
        }
        history.append(minute, &rows)?;
    }
    let written = written.elapsed();
    // The recorder summarises an hour when the next begins: the last
    // hour is summarised by one more (empty) minute, outside the window.
    history.append(START + minutes, &[])?;
    println!(
        "history: {} nodes, {} projects, {} days = {} minutes of {} rows, written in {:.1} s, {:.1} MiB on disk",
        args.nodes,
        args.projects,
        args.days,
        minutes,
        hour[0].len(),
        written.as_secs_f64(),
        history.bytes_used()? as f64 / (1 << 20) as f64
    );
    let (since, until) = (START * 60_000, (START + minutes) * 60_000);
    for by in [CostGrouping::Project, CostGrouping::Pool] {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..args.reports {
            let started = Instant::now();
            let window = history.read(START, START + minutes)?;
            let report = build_report(&window, by, since, until, None);
            times.push(started.elapsed());
            rows = report.rows.len();
            ensure!(
                window.minutes == minutes,
                "read {} of {minutes} minutes",
                window.minutes
            );
        }
        println!(
            "report by {by} over {} days: {rows} rows, median {:.0} ms (target <= 1000 ms)",
            args.days,
            median(times).as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
