//! Scheduler benchmark: the control plane's own code path — store,
//! deployment controller, node lifecycle, scheduling loop with its
//! compare-and-swap binds — over simulated nodes registered through the
//! agent's in-process API.
//!
//! Phase 1 (setup): register N nodes, wait until they are ready, apply
//! deployments totalling P replicas and wait until the deployment
//! controller has created every pod, with the scheduler not yet running.
//! Phase 2 (measured): start the scheduling loop and time until every pod is
//! bound. Then check every constraint on what the store holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::AbortOnDropHandle;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use futures_util::StreamExt;
use wharf_agent::{Simulation, SimulationConfig};
use wharf_api::{Deployment, Manifest, Node, Pod};
use wharf_control::{Change, DeploymentController, NodeLifecycle, Objects, SchedulingLoop};
use wharf_scheduler::SchedulerConfig;
use wharf_store::Store;

use crate::local_node::LocalNodeApi;

#[derive(Args)]
pub struct SchedulerBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods to schedule (spread over deployments of 100 replicas).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// `embedded` (a redb file in a temporary directory) or `etcd://host:port[,...]`.
    #[arg(long, default_value = "embedded")]
    store: String,
}

pub async fn run(args: SchedulerBenchArgs) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let store = open_store(&args.store, temp.path()).await?;
    let objects = Objects::new(store.clone());

    let setup = Instant::now();
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let mut fleet = SimulationConfig::new(args.nodes);
    fleet.report_running = false;
    fleet.prefix = format!("bench{:04x}", rand::random::<u16>());
    Simulation::new(api, fleet.clone()).register().await?;
    let lifecycle = tokio::spawn(NodeLifecycle::new(objects.clone()).run());
    let _stop_lifecycle = AbortOnDropHandle::new(lifecycle);
    wait_until("nodes ready", Duration::from_secs(600), || async {
        let (nodes, _) = objects.list::<Node>(None, None).await?;
        Ok(nodes
            .iter()
            .filter(|n| n.status.ready && n.metadata.name.starts_with(&fleet.prefix))
            .count()
            >= args.nodes)
    })
    .await?;
    let project = format!("bench{:04x}", rand::random::<u16>());
    let controller = tokio::spawn(DeploymentController::new(objects.clone()).run());
    let _stop_controller = AbortOnDropHandle::new(controller);
    for deployment in deployments(&project, args.pods) {
        objects.create(deployment).await?;
    }
    wait_until("pods created", Duration::from_secs(600), || async {
        let (pods, _) = objects.list::<Pod>(Some(&project), None).await?;
        Ok(pods.len() >= args.pods)
    })
    .await?;
    eprintln!(
        "setup: {} nodes ready, {} pending pods created in {:.1} s",
        args.nodes,
        args.pods,
        setup.elapsed().as_secs_f64()
    );

    let revision = store.current_revision().await?;
    let mut changes = Box::pin(objects.watch::<Pod>(Some(&project), revision + 1).await?);
    let started = Instant::now();
    let scheduler =
        tokio::spawn(SchedulingLoop::new(objects.clone(), SchedulerConfig::default()).run());
    let _stop_scheduler = AbortOnDropHandle::new(scheduler);
    let mut bound = std::collections::HashSet::new();
    while bound.len() < args.pods {
        let change = tokio::time::timeout(Duration::from_secs(120), changes.next())
            .await
            .context("no scheduling progress for 120 s")?;
        match change {
            Some(Ok(Change::Modified(pod))) if pod.spec.node_name.is_some() => {
                bound.insert(pod.metadata.name);
            }
            Some(Err(err)) => bail!("watch failed: {err}"),
            None => bail!("watch ended"),
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    let violations = check_constraints(&objects, &project).await?;
    println!(
        "scheduled {} pods on {} nodes in {:.2} s: {:.0} pods/s, {} constraint violations",
        args.pods,
        args.nodes,
        elapsed.as_secs_f64(),
        args.pods as f64 / elapsed.as_secs_f64(),
        violations
    );
    ensure!(violations == 0, "{violations} constraint violations");
    Ok(())
}

pub(super) async fn open_store(location: &str, dir: &std::path::Path) -> Result<Arc<dyn Store>> {
    if location == "embedded" {
        let store = wharf_store::RedbStore::open(&dir.join("state.redb"), Default::default())?;
        return Ok(Arc::new(store));
    }
    let Some(hosts) = location.strip_prefix("etcd://") else {
        bail!("--store takes embedded or etcd://host:port[,...]");
    };
    let endpoints: Vec<String> = hosts.split(',').map(|h| format!("http://{h}")).collect();
    let options = wharf_store_etcd::EtcdStoreOptions {
        // A namespace of its own, so runs never see each other's objects.
        namespace: format!("/wharf-bench-{:08x}", rand::random::<u32>()),
        ..Default::default()
    };
    let store = wharf_store_etcd::EtcdStore::connect(&endpoints, options).await?;
    Ok(Arc::new(store))
}

/// Deployments of 100 replicas (the last one smaller): a third in pool `a`,
/// a third in pool `b`, a third anywhere, with varied requests.
fn deployments(project: &str, pods: usize) -> Vec<Deployment> {
    let mut out = Vec::new();
    let mut left = pods;
    let mut i = 0;
    while left > 0 {
        let replicas = left.min(100);
        left -= replicas;
        let pool = match i % 3 {
            0 => "\n      nodeSelector: {wharf.io/pool: a}",
            1 => "\n      nodeSelector: {wharf.io/pool: b}",
            _ => "",
        };
        let cpu = 100 + (i % 5) * 100;
        let memory = 128 + (i % 4) * 128;
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i:04}, namespace: {project}}}\nspec:\n  replicas: {replicas}\n  \
             selector: {{matchLabels: {{app: d{i:04}}}}}\n  template:\n    metadata: {{labels: {{app: d{i:04}}}}}\n    spec:{pool}\n      \
             containers: [{{name: main, image: bench/app:1, resources: {{requests: {{cpu: {cpu}m, memory: {memory}Mi}}}}}}]\n"
        );
        let parsed = wharf_api::parse_manifests(&yaml).expect("bench manifests are valid");
        if let Some(doc) = parsed.into_iter().next()
            && let Manifest::Deployment(deployment) = doc.manifest
        {
            out.push(*deployment);
        }
        i += 1;
    }
    out
}

/// Counts broken constraints in what the store holds: nodes over capacity
/// (by the pods bound to them, and by their allocation records), pods on
/// nodes outside their selector, allocation records that disagree with
/// the pods.
async fn check_constraints(objects: &Objects, project: &str) -> Result<usize> {
    let (nodes, _) = objects.list::<Node>(None, None).await?;
    let (pods, _) = objects.list::<Pod>(Some(project), None).await?;
    let nodes: HashMap<String, Node> = nodes
        .into_iter()
        .map(|n| (n.metadata.name.clone(), n))
        .collect();
    let mut used: HashMap<String, (u64, u64, u32)> = HashMap::new();
    let mut violations = 0;
    for pod in &pods {
        let Some(node_name) = &pod.spec.node_name else {
            violations += 1;
            continue;
        };
        let Some(node) = nodes.get(node_name) else {
            violations += 1;
            continue;
        };
        if pod
            .spec
            .node_selector
            .iter()
            .any(|(k, v)| node.metadata.labels.get(k) != Some(v))
        {
            violations += 1;
        }
        let requests = pod.spec.requests()?;
        let entry = used.entry(node_name.clone()).or_default();
        entry.0 += requests.cpu_millis;
        entry.1 += requests.memory_bytes;
        entry.2 += requests.pods;
    }
    for (name, (cpu, memory, count)) in &used {
        let capacity = nodes[name].status.capacity;
        if *cpu > capacity.cpu_millis || *memory > capacity.memory_bytes || *count > capacity.pods {
            violations += 1;
        }
        let (allocation, _) = objects.allocation(name).await?;
        let recorded = allocation.requests;
        if (recorded.cpu_millis, recorded.memory_bytes, recorded.pods) != (*cpu, *memory, *count) {
            violations += 1;
        }
    }
    Ok(violations)
}

pub(super) async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, wharf_control::ControlError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
