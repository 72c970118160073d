//! Rollout benchmark: a rolling update of one deployment over simulated
//! nodes (whose pods report running and ready at once, and stop at once
//! when deleted), through the real store, deployment controller, node
//! lifecycle and scheduling loop, in process.
//!
//! Setup: register the nodes, apply the deployment and wait until it is
//! rolled out. Measured: change the image and time until every replica is
//! of the new template and available and no old pod is left, sampling the
//! pod counts every 20 ms to check the surge and unavailability limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Args;
use tokio_util::task::AbortOnDropHandle;
use wharf_agent::{Simulation, SimulationConfig};
use wharf_api::{Deployment, Manifest, Node, Pod, RolloutStrategy};
use wharf_control::{DeploymentController, NodeLifecycle, Objects, SchedulingLoop};
use wharf_scheduler::SchedulerConfig;

use super::scheduler::{open_store, wait_until};
use crate::local_node::LocalNodeApi;

#[derive(Args)]
pub struct RolloutBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Replicas of the deployment.
    #[arg(long, default_value_t = 100)]
    replicas: u32,
    /// `maxSurge`: a count or a percentage.
    #[arg(long, default_value = "25%")]
    max_surge: String,
    /// `maxUnavailable`: a count or a percentage.
    #[arg(long, default_value = "25%")]
    max_unavailable: String,
    /// `embedded` (a redb file in a temporary directory) or `etcd://host:port[,...]`.
    #[arg(long, default_value = "embedded")]
    store: String,
}

pub async fn run(args: RolloutBenchArgs) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let objects = Objects::new(open_store(&args.store, temp.path()).await?);
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let mut fleet = SimulationConfig::new(args.nodes);
    fleet.prefix = format!("bench{:04x}", rand::random::<u16>());
    let prefix = fleet.prefix.clone();
    let _tasks = [
        tokio::spawn(async move { drop(Simulation::new(api, fleet).run().await) }),
        tokio::spawn(NodeLifecycle::new(objects.clone()).run()),
        tokio::spawn(DeploymentController::new(objects.clone()).run()),
        tokio::spawn(SchedulingLoop::new(objects.clone(), SchedulerConfig::default()).run()),
    ]
    .map(AbortOnDropHandle::new);
    wait_until("nodes ready", Duration::from_secs(300), || async {
        let (nodes, _) = objects.list::<Node>(None, None).await?;
        let ready = nodes
            .iter()
            .filter(|n| n.status.ready && n.metadata.name.starts_with(&prefix));
        Ok(ready.count() >= args.nodes)
    })
    .await?;

    let project = format!("bench{:04x}", rand::random::<u16>());
    let deployment = deployment(&project, &args)?;
    let RolloutStrategy::RollingUpdate {
        max_surge,
        max_unavailable,
    } = deployment.spec.rollout_strategy()?
    else {
        unreachable!("the benchmark deployment rolls");
    };
    objects.create(deployment).await?;
    wait_until("the first rollout", Duration::from_secs(300), || {
        rolled_out(&objects, &project)
    })
    .await?;

    let started = Instant::now();
    objects
        .modify::<Deployment>(Some(&project), "web", |d| {
            d.spec.template.spec.containers[0].image = "bench/web:2".into();
            d.metadata.generation += 1;
            true
        })
        .await?;
    let (mut most, mut fewest_available) = (0, usize::MAX);
    while !rolled_out(&objects, &project).await? {
        let (pods, _) = objects.list::<Pod>(Some(&project), None).await?;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| !p.metadata.is_terminating())
            .collect();
        most = most.max(live.len());
        let ready = live
            .iter()
            .filter(|p| p.status.container_statuses.iter().all(|c| c.ready));
        fewest_available = fewest_available.min(
            ready
                .filter(|p| p.status.phase == wharf_api::PodPhase::Running)
                .count(),
        );
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the rollout took over 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "rolled {} replicas over to a new template on {} simulated nodes (maxSurge {max_surge}, \
         maxUnavailable {max_unavailable}) in {:.2} s; at most {most} pods at once, at least \
         {fewest_available} running and ready",
        args.replicas,
        args.nodes,
        elapsed.as_secs_f64(),
    );
    let limit = (args.replicas + max_surge) as usize;
    ensure!(
        most <= limit,
        "{most} pods exceeded replicas + maxSurge = {limit}"
    );
    Ok(())
}

fn deployment(project: &str, args: &RolloutBenchArgs) -> Result<Deployment> {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {project}}}\n\
         spec:\n  replicas: {}\n  strategy: {{rollingUpdate: {{maxSurge: {}, maxUnavailable: {}}}}}\n  \
         selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
         spec:\n      containers: [{{name: main, image: bench/web:1, resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}}}]\n",
        args.replicas,
        yaml_value(&args.max_surge),
        yaml_value(&args.max_unavailable)
    );
    let mut parsed = wharf_api::parse_manifests(&yaml)?;
    let Manifest::Deployment(deployment) = parsed.remove(0).manifest else {
        unreachable!("the benchmark manifest is a deployment");
    };
    deployment.validate()?;
    Ok(*deployment)
}

/// A count as a YAML number, a percentage as a string (as Kubernetes wants).
fn yaml_value(text: &str) -> String {
    match text.parse::<u32>() {
        Ok(count) => count.to_string(),
        Err(_) => format!("{text:?}"),
    }
}

/// Whether every replica is of the current template and available, and no
/// other pod is left.
async fn rolled_out(objects: &Objects, project: &str) -> Result<bool, wharf_control::ControlError> {
    let d: Deployment = objects.require(Some(project), "web").await?;
    let s = &d.status;
    let wanted = d.spec.replicas;
    Ok(s.observed_generation == d.metadata.generation
        && s.updated_replicas == wanted
        && s.available_replicas == wanted
        && s.replicas == wanted)
}
