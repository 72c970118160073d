//! Failover benchmark over simulated nodes, through the real control plane
//! (every controller, as a leading server runs them) and the agent's
//! in-process API.
//!
//! 1. One node dies: a "victim" node (its own simulated agent, 2 s lease)
//!    takes a deployment of `--victim-pods` replicas before the fleet
//!    joins; the fleet of `--nodes` joins; the victim's agent stops. Timed:
//!    from the stop to every replacement bound to another node.
//! 2. An IDC dies (`--idc-window`): the fleet is two IDCs; one stops.
//!    Counted: nodes tainted unreachable per second over the window, the
//!    rate the eviction controller actually applied.
//!
//! `--runs N` repeats step 1 on a new cluster each time (a victim can only
//! be filled before the fleet joins, as the scheduler spreads pods) and
//! prints p50/p99; step 2 runs once, after the last.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::AbortOnDropHandle;

use anyhow::Result;
use clap::Args;
use wharf_agent::{Simulation, SimulationConfig};
use wharf_api::{Event, Manifest, Node, Pod};
use wharf_control::{ControlPlane, TAINT_UNREACHABLE};
use wharf_scheduler::SchedulerConfig;

use super::scheduler::wait_until;
use crate::local_node::LocalNodeApi;

#[derive(Args)]
pub struct FailoverBenchArgs {
    /// Simulated nodes besides the victim (half in each of two IDCs).
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods on the node that dies.
    #[arg(long, default_value_t = 30)]
    victim_pods: usize,
    /// Lease of the fleet's nodes (the victim's is the 2 s default): a
    /// shorter one costs this many nodes' heartbeats per second.
    #[arg(long, default_value = "30s", value_parser = crate::units::parse_duration)]
    fleet_lease: Duration,
    /// Then stop one IDC's nodes and count the taints for this long.
    #[arg(long, value_parser = crate::units::parse_duration)]
    idc_window: Option<Duration>,
    /// Single-node failovers to time, each on a cluster of its own.
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

pub async fn run(args: FailoverBenchArgs) -> Result<()> {
    let mut times = Vec::new();
    for run in 1..=args.runs.max(1) {
        let last = run == args.runs.max(1);
        let took = one_cluster(&args, last).await?;
        eprintln!("run {run}: {:.2} s", took.as_secs_f64());
        times.push(took);
    }
    times.sort();
    let secs = |p| super::pods::percentile(&times, p).as_secs_f64();
    println!(
        "single-node failover over {} runs: p50 {:.2} s, p99 {:.2} s, min {:.2} s",
        times.len(),
        secs(50.0),
        secs(99.0),
        times[0].as_secs_f64()
    );
    Ok(())
}

/// Builds a cluster, kills the victim and returns how long its pods took
/// to be bound elsewhere; with `idc`, then kills an IDC.
async fn one_cluster(args: &FailoverBenchArgs, idc: bool) -> Result<Duration> {
    let temp = tempfile::tempdir()?;
    let store = wharf_store::RedbStore::open(&temp.path().join("state.redb"), Default::default())?;
    let plane = ControlPlane::new(Arc::new(store), SchedulerConfig::default());
    let objects = plane.objects().clone();
    let _running = plane.start("bench".into());
    let api = Arc::new(LocalNodeApi::new(objects.clone()));

    let mut victim = SimulationConfig::new(1);
    victim.prefix = "victim".into();
    victim.heartbeat_ttl = wharf_agent::DEFAULT_LEASE_TTL;
    victim.heartbeat_interval = Some(wharf_agent::DEFAULT_HEARTBEAT_INTERVAL);
    let victim_agent =
        AbortOnDropHandle::new(tokio::spawn(Simulation::new(api.clone(), victim).run()));
    plane.apply_deployment(deployment(args.victim_pods)).await?;
    wait_until(
        "the victim's pods bound",
        Duration::from_secs(120),
        || async {
            let (pods, _) = objects.list::<Pod>(Some("bench"), None).await?;
            Ok(pods.iter().filter(|p| p.spec.node_name.is_some()).count() >= args.victim_pods)
        },
    )
    .await?;

    let setup = Instant::now();
    let mut fleets = Vec::new();
    for idc in ["idc1", "idc2"] {
        let mut fleet = SimulationConfig::new(args.nodes / 2);
        fleet.prefix = format!("fleet-{idc}");
        fleet.idcs = vec![idc.into()];
        fleet.heartbeat_ttl = args.fleet_lease;
        fleet.report_running = false;
        let task = tokio::spawn(Simulation::new(api.clone(), fleet).run());
        fleets.push(AbortOnDropHandle::new(task));
    }
    let total = args.nodes / 2 * 2 + 1;
    wait_until("the fleet ready", Duration::from_secs(1200), || async {
        let (nodes, _) = objects.list::<Node>(None, None).await?;
        Ok(nodes.iter().filter(|n| n.status.ready).count() >= total)
    })
    .await?;
    eprintln!(
        "setup: {total} nodes ready in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let killed = Instant::now();
    let killed_ms = unix_ms();
    victim_agent.abort();
    wait_until("replacements bound", Duration::from_secs(600), || async {
        let (pods, _) = objects.list::<Pod>(Some("bench"), None).await?;
        Ok(pods.len() == args.victim_pods
            && pods.iter().all(|p| {
                p.spec
                    .node_name
                    .as_deref()
                    .is_some_and(|n| !n.starts_with("victim"))
            }))
    })
    .await?;
    let took = killed.elapsed();
    print_trace(&objects, killed_ms).await?;
    println!(
        "one node of {total} died holding {} pods: all replaced and bound in {:.2} s",
        args.victim_pods,
        took.as_secs_f64()
    );

    if let Some(window) = args.idc_window.filter(|_| idc) {
        drop(fleets.remove(0)); // idc1's agents stop
        let stopped = Instant::now();
        let tainted = async || -> Result<usize> {
            let (nodes, _) = objects.list::<Node>(None, None).await?;
            Ok(nodes
                .iter()
                .filter(|n| n.spec.taints.iter().any(|t| t.key == TAINT_UNREACHABLE))
                .filter(|n| n.metadata.name.starts_with("fleet-idc1"))
                .count())
        };
        wait_until("idc1 NotReady", Duration::from_secs(600), || async {
            let (nodes, _) = objects.list::<Node>(None, None).await?;
            Ok(nodes
                .iter()
                .filter(|n| n.metadata.name.starts_with("fleet-idc1"))
                .all(|n| !n.status.ready))
        })
        .await?;
        let before = tainted().await?;
        let from = Instant::now();
        tokio::time::sleep(window).await;
        let after = tainted().await?;
        let rate = (after - before) as f64 / from.elapsed().as_secs_f64();
        println!(
            "IDC of {} nodes died: all NotReady {:.1} s after; {} tainted by then, then {:.3} nodes/s over {:.0} s",
            args.nodes / 2,
            (from - stopped).as_secs_f64(),
            before,
            rate,
            window.as_secs_f64()
        );
    }
    Ok(took)
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap_or_default().as_millis() as u64
}

/// Prints, per link of the failover chain, when it first and last happened
/// after the kill (`killed`, unix ms): the lease expiry noticed
/// (NodeNotReady), the taint (NodeUnreachable), the evictions.
async fn print_trace(objects: &wharf_control::Objects, killed: u64) -> Result<()> {
    // Per reason: first and last time, and how many.
    let mut spans: std::collections::HashMap<String, (u64, u64, usize)> = Default::default();
    for project in [wharf_control::CLUSTER_EVENTS, "bench"] {
        let (events, _) = objects.list::<Event>(Some(project), None).await?;
        for event in events.iter().filter(|e| e.last_timestamp >= killed) {
            let at = event.last_timestamp;
            let span = spans.entry(event.reason.clone()).or_insert((at, at, 0));
            *span = (span.0.min(at), span.1.max(at), span.2 + 1);
        }
    }
    let mut spans: Vec<(String, (u64, u64, usize))> = spans.into_iter().collect();
    spans.sort_by_key(|(_, (first, _, _))| *first);
    let secs = |at: u64| at.saturating_sub(killed) as f64 / 1000.0;
    let trace: Vec<String> = spans
        .iter()
        .map(|(reason, (first, last, n))| {
            format!("{reason} x{n} +{:.2}..{:.2}s", secs(*first), secs(*last))
        })
        .collect();
    eprintln!("trace: {}", trace.join("; "));
    Ok(())
}

fn deployment(replicas: usize) -> wharf_api::Deployment {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: moved, namespace: bench}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: moved}}}}\n  template:\n    metadata: {{labels: {{app: moved}}}}\n    spec:\n      \
         containers: [{{name: main, image: bench/app:1, resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}}}]\n"
    );
    let parsed = wharf_api::parse_manifests(&yaml).expect("the bench manifest is valid");
    match parsed.into_iter().next().map(|d| d.manifest) {
        Some(Manifest::Deployment(deployment)) => *deployment,
        _ => unreachable!("the bench manifest is a deployment"),
    }
}
