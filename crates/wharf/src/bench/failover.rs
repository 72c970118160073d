//! Failover benchmark over simulated nodes, through the real control plane
//! (every controller, as a leading server runs them) and the agent's
//! in-process API.
//!
//! 1. One node dies: a "victim" node (its own simulated agent, 2 s lease)
//!    takes a deployment of `--victim-pods` replicas before the fleet
//!    joins; the fleet of `--nodes` joins; the victim's agent stops. Timed:
//!    from the stop to every replacement bound to another node.
//! 2. An IDC dies (`--idc-kill`): the fleet is two IDCs; one stops. Counted:
//!    nodes tainted unreachable per second over `--idc-window`, the rate
//!    the eviction controller actually applied.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::AbortOnDropHandle;

use anyhow::Result;
use clap::Args;
use wharf_agent::{Simulation, SimulationConfig};
use wharf_api::{Manifest, Node, Pod};
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
}

pub async fn run(args: FailoverBenchArgs) -> Result<()> {
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
    let victim_agent = tokio::spawn(Simulation::new(api.clone(), victim).run());
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
    println!(
        "one node of {total} died holding {} pods: all replaced and bound in {:.2} s",
        args.victim_pods,
        killed.elapsed().as_secs_f64()
    );

    if let Some(window) = args.idc_window {
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
