//! Hollow nodes for scale work: many nodes registered and kept alive by one
//! process, reporting the pods bound to them as running, without containers,
//! and confirming at once those being deleted. They collect no metrics
//! (`crate::metrics`): one machine's `/proc` said 5,000 times over is no
//! measurement, and `wharf bench tsdb` already loads the server as 5,000
//! agents' pushes would.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio_util::task::AbortOnDropHandle;
use wharf_api::{
    InitState, LABEL_CLUSTER_KIND, LABEL_IDC, LABEL_MACHINE_CLASS, LABEL_POOL, Node,
    NodeInitialization, NodeSpec, NodeStatus, ObjectMeta, Resources,
};

use crate::AgentError;
use crate::api::{NodeApi, PodChange};
use crate::machine;
use crate::runtime::SimulatedRuntime;

/// Registrations and heartbeats in flight at once.
const PARALLEL: usize = 64;

/// The shape of a simulated fleet.
#[derive(Clone, Debug)]
pub struct SimulationConfig {
    /// Node names are `<prefix>-00001`, ...
    pub prefix: String,
    /// How many nodes.
    pub nodes: usize,
    /// What each node offers.
    pub capacity: Resources,
    /// Pools assigned round-robin (`wharf.io/pool`).
    pub pools: Vec<String>,
    /// Data centres assigned round-robin (`wharf.io/idc`).
    pub idcs: Vec<String>,
    /// Heartbeat lease lifetime.
    pub heartbeat_ttl: Duration,
    /// How often leases are renewed; `None`: a third of their lifetime.
    pub heartbeat_interval: Option<Duration>,
    /// Whether bound pods are reported as running (status writes).
    pub report_running: bool,
    /// CPU busy (`0.0..=1.0`) each node reports, assigned round-robin;
    /// empty: no load summary (the scheduler's load score is neutral).
    /// A node of load `l` reports a load average of `l` per core and
    /// `1 - l` of its memory available, and an empty layer cache.
    pub loads: Vec<f32>,
    /// Labels every node gets, over the round-robin pool and IDC and the
    /// default class: `--labels`, `--pool` and `--class` model old and new
    /// machines the way real agents register them.
    pub labels: BTreeMap<String, String>,
    /// How often the fleet looks for a changed init profile of its pools
    /// (a hollow node reports each new profile as applied, as its real
    /// agent would re-run it).
    pub init_check: Duration,
}

impl SimulationConfig {
    /// `nodes` nodes of 16 cores, 64 GiB and 110 pods, in pools `a`/`b`
    /// and IDCs `idc1`/`idc2`.
    pub fn new(nodes: usize) -> SimulationConfig {
        SimulationConfig {
            prefix: "sim".into(),
            nodes,
            capacity: Resources {
                cpu_millis: 16_000,
                memory_bytes: 64 << 30,
                pods: 110,
            },
            pools: vec!["a".into(), "b".into()],
            idcs: vec!["idc1".into(), "idc2".into()],
            heartbeat_ttl: Duration::from_secs(120),
            heartbeat_interval: None,
            report_running: true,
            loads: Vec::new(),
            labels: BTreeMap::new(),
            init_check: Duration::from_secs(30),
        }
    }

    /// The pool of node `i`, if any.
    fn pool_of(&self, i: usize) -> Option<String> {
        self.node(i).metadata.labels.get(LABEL_POOL).cloned()
    }

    /// Name of node `i` (from 0).
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{:05}", self.prefix, i + 1)
    }

    fn node(&self, i: usize) -> Node {
        let mut labels = BTreeMap::new();
        if !self.pools.is_empty() {
            labels.insert(
                LABEL_POOL.to_string(),
                self.pools[i % self.pools.len()].clone(),
            );
        }
        if !self.idcs.is_empty() {
            labels.insert(
                LABEL_IDC.to_string(),
                self.idcs[i % self.idcs.len()].clone(),
            );
        }
        labels.insert(LABEL_CLUSTER_KIND.to_string(), "vm".into());
        labels.insert(LABEL_MACHINE_CLASS.to_string(), (1 + i % 3).to_string());
        labels.extend(self.labels.clone());
        labels.extend(machine::standard_labels(&self.node_name(i)));
        Node {
            api_version: "wharf.io/v1".into(),
            kind: "Node".into(),
            metadata: ObjectMeta {
                name: self.node_name(i),
                labels,
                ..ObjectMeta::default()
            },
            spec: NodeSpec::default(),
            status: self.status(i),
        }
    }

    /// Capacity, and the load summary of node `i` if loads are set.
    fn status(&self, i: usize) -> NodeStatus {
        let mut status = NodeStatus {
            capacity: self.capacity,
            ..NodeStatus::default()
        };
        if !self.loads.is_empty() {
            let load = self.loads[i % self.loads.len()].clamp(0.0, 1.0);
            let cores = self.capacity.cpu_millis as f32 / 1000.0;
            status.cpu_load = Some(load);
            status.load_average = Some(load * cores);
            status.memory_available_bytes =
                Some((self.capacity.memory_bytes as f64 * f64::from(1.0 - load)) as u64);
            status.layers = Some(Vec::new());
        }
        status
    }
}

/// A simulated fleet.
pub struct Simulation {
    api: Arc<dyn NodeApi>,
    config: SimulationConfig,
}

impl Simulation {
    /// A fleet registered through `api`.
    pub fn new(api: Arc<dyn NodeApi>, config: SimulationConfig) -> Simulation {
        Simulation { api, config }
    }

    /// Registers every node and starts its heartbeat; returns the leases.
    pub async fn register(&self) -> Result<Vec<u64>, AgentError> {
        let mut leases = Vec::with_capacity(self.config.nodes);
        let indexes: Vec<usize> = (0..self.config.nodes).collect();
        for chunk in indexes.chunks(PARALLEL) {
            let started = join_all(chunk.iter().map(|&i| async move {
                let node = self.api.register(self.config.node(i)).await?;
                self.report_initialized(i).await?;
                self.api
                    .heartbeat(&node.metadata.name, None, self.config.heartbeat_ttl)
                    .await
            }))
            .await;
            for lease in started {
                leases.push(lease?);
            }
        }
        Ok(leases)
    }

    /// A hollow node of a pool with an init profile runs nothing on this
    /// machine: it reports the pool's current profile as applied, saying
    /// it was simulated, so it turns schedulable as a real node would.
    async fn report_initialized(&self, i: usize) -> Result<(), AgentError> {
        let name = self.config.node_name(i);
        let Some(hash) = self.api.init_profile(&name).await?.hash else {
            return Ok(());
        };
        let mut node = self.config.node(i);
        node.status.initialization = Some(simulated_run(hash));
        self.api.register(node).await.map(drop)
    }

    /// Registers the fleet, then keeps it alive (and reports its pods as
    /// running) until the task is dropped.
    pub async fn run(self) -> Result<(), AgentError> {
        let leases = self.register().await?;
        tracing::info!(nodes = self.config.nodes, "simulated nodes registered");
        let this = Arc::new(self);
        let beats = tokio::spawn(this.clone().heartbeats(leases));
        let profiles = tokio::spawn(this.clone().follow_init_profiles());
        let _stop = (
            AbortOnDropHandle::new(beats),
            AbortOnDropHandle::new(profiles),
        );
        if !this.config.report_running {
            std::future::pending::<()>().await;
        }
        loop {
            if let Err(err) = this.report_pods().await {
                tracing::warn!(error = %err, "simulated nodes lost their pod watch");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reports a pool's changed init profile as applied on each of the
    /// fleet's nodes of that pool. One node per pool is asked: the
    /// profile is the pool's.
    async fn follow_init_profiles(self: Arc<Self>) {
        let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
        let probes = self.config.nodes.min(self.config.pools.len().max(1));
        let mut first = true;
        loop {
            for probe in 0..probes {
                let Some(pool) = self.config.pool_of(probe) else {
                    continue;
                };
                let name = self.config.node_name(probe);
                let hash = match self.api.init_profile(&name).await {
                    Ok(profile) => profile.hash,
                    Err(err) => {
                        tracing::warn!(error = %err, pool, "checking the init profile failed");
                        continue;
                    }
                };
                let previous = seen.insert(pool.clone(), hash.clone());
                // Registration reported the profile of the moment.
                if first || previous.as_ref() == Some(&hash) || hash.is_none() {
                    continue;
                }
                let of_pool: Vec<usize> = (0..self.config.nodes)
                    .filter(|&i| self.config.pool_of(i).as_ref() == Some(&pool))
                    .collect();
                for chunk in of_pool.chunks(PARALLEL) {
                    let reported =
                        join_all(chunk.iter().map(|&i| self.report_initialized(i))).await;
                    for result in reported {
                        if let Err(err) = result {
                            tracing::warn!(error = %err, pool, "reporting an init profile failed");
                        }
                    }
                }
            }
            first = false;
            tokio::time::sleep(self.config.init_check).await;
        }
    }

    async fn heartbeats(self: Arc<Self>, mut leases: Vec<u64>) {
        loop {
            let every = self.config.heartbeat_interval;
            tokio::time::sleep(every.unwrap_or(self.config.heartbeat_ttl / 3)).await;
            for (chunk_index, chunk) in leases.chunks_mut(PARALLEL).enumerate() {
                let renewed = join_all(chunk.iter().enumerate().map(|(j, &lease)| {
                    let name = self.config.node_name(chunk_index * PARALLEL + j);
                    let api = self.api.clone();
                    let ttl = self.config.heartbeat_ttl;
                    async move { api.heartbeat(&name, Some(lease), ttl).await }
                }))
                .await;
                for (slot, result) in chunk.iter_mut().zip(renewed) {
                    match result {
                        Ok(lease) => *slot = lease,
                        Err(err) => tracing::warn!(error = %err, "simulated heartbeat failed"),
                    }
                }
            }
        }
    }

    /// Follows every pod and reports the fleet's as running, or as stopped
    /// once their deletion is asked.
    async fn report_pods(&self) -> Result<(), AgentError> {
        let ours: HashSet<String> = (0..self.config.nodes)
            .map(|i| self.config.node_name(i))
            .collect();
        let (pods, revision) = self.api.list_pods(None).await?;
        for pod in pods {
            self.report(&ours, &pod).await;
        }
        let mut changes = self.api.watch_pods(None, revision).await?;
        while let Some(change) = changes.next().await {
            if let PodChange::Upsert(pod) = change? {
                self.report(&ours, &pod).await;
            }
        }
        Ok(())
    }

    async fn report(&self, ours: &HashSet<String>, pod: &wharf_api::Pod) {
        if !pod
            .spec
            .node_name
            .as_ref()
            .is_some_and(|n| ours.contains(n))
        {
            return;
        }
        let project = pod.metadata.project.clone().unwrap_or_default();
        if pod.metadata.is_terminating() {
            // Nothing runs: stopped at once.
            let (name, uid) = (&pod.metadata.name, &pod.metadata.uid);
            if let Err(err) = self.api.pod_stopped(&project, name, uid).await {
                tracing::debug!(error = %err, "simulated stop confirmation failed");
            }
            return;
        }
        let status = SimulatedRuntime::running(pod);
        if status != pod.status
            && let Err(err) = self
                .api
                .set_pod_status(&project, &pod.metadata.name, &status)
                .await
        {
            tracing::debug!(error = %err, "simulated status report failed");
        }
    }
}

/// A run of the profile `hash` that a hollow node reports.
fn simulated_run(hash: String) -> NodeInitialization {
    let now = crate::initialization::now_millis();
    NodeInitialization {
        profile_hash: hash,
        state: InitState::Succeeded,
        message: Some("simulated node: the init profile was not applied".into()),
        started_at: Some(now),
        finished_at: Some(now),
        ..NodeInitialization::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_labels_override_the_round_robin_defaults() {
        let mut fleet = SimulationConfig::new(2);
        fleet.capacity.cpu_millis = 12_000;
        fleet.labels = BTreeMap::from([
            (LABEL_POOL.to_string(), "batch".to_string()),
            (LABEL_MACHINE_CLASS.to_string(), "legacy-12c16g".to_string()),
            ("disk".to_string(), "hdd".to_string()),
        ]);
        for i in 0..2 {
            let node = fleet.node(i);
            let labels = &node.metadata.labels;
            assert_eq!(labels[LABEL_POOL], "batch");
            assert_eq!(labels[LABEL_MACHINE_CLASS], "legacy-12c16g");
            assert_eq!(labels["disk"], "hdd");
            assert_eq!(node.status.capacity.cpu_millis, 12_000);
        }
        let plain = SimulationConfig::new(2).node(1);
        assert_eq!(plain.metadata.labels[LABEL_POOL], "b");
    }
}
