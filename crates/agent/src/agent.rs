//! The agent loop: register the node, keep its heartbeat, and hand the pods
//! bound to it to the runtime, reporting their status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use wharf_api::{
    ANNOTATION_JOIN_POOL, LABEL_MACHINE_CLASS, LABEL_POOL, Node, NodeInitialization, NodeSpec,
    NodeStatus, ObjectMeta, Pod, PodStatus,
};

use crate::AgentError;
use crate::api::{NodeApi, PodChange};
use crate::fencing::{Fence, fence_raised, holds_pool_address};
use crate::health::{HEALTH_EVERY, HEALTH_TIMEOUT, watch_health};
use crate::initialization::{InitSettings, keep_initialized, profile_of};
use crate::load::{LoadMeter, LoadSource, LoadSummary};
use crate::machine;
use crate::metrics::{Collector, DEFAULT_METRICS_INTERVAL, LatestSamples, node::NodeReader};
use crate::preheat::{DEFAULT_PREHEAT_INTERVAL, Preheater};
use crate::runtime::Runtime;
use crate::service_rules::{RULES_RETRY, ServiceRules, keep_service_rules};
use crate::service_sync::follow_services;
use crate::service_view::ServiceView;

/// The heartbeat lease by default: short, so that a dead node's pods are
/// replaced within seconds (Kubernetes takes 40 s to notice).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
/// How often the lease is renewed by default: four tries per lease.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// How often the node's status (load summary, capacity) is re-reported by
/// default.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// How often the running containers' usage is sampled by default.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(10);

/// What an agent says about its node.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Node name.
    pub name: String,
    /// Labels: pool, IDC, cluster kind, machine class, anything else.
    pub labels: BTreeMap<String, String>,
    /// The inventory pool the node joins (`--pool`): the server refuses
    /// the registration if it does not exist.
    pub pool: Option<String>,
    /// The machine class the node says it is (`--class`); else the server
    /// picks the pool's class whose ranges hold its capacity.
    pub machine_class: Option<String>,
    /// Address the node is reached at.
    pub address: Option<String>,
    /// Cost of an hour of this machine.
    pub cost_per_hour: Option<f64>,
    /// Pod slots.
    pub max_pods: u32,
    /// The heartbeat lease; the node goes not ready this long after the
    /// agent stops (pool-addressed pods stop a margin before, see `fencing`).
    pub heartbeat_ttl: Duration,
    /// How often the lease is renewed.
    pub heartbeat_interval: Duration,
    /// Where the agent serves container logs (`http://host:port`).
    pub endpoint: Option<String>,
    /// How often the running containers' CPU and memory are sampled and
    /// reported.
    pub usage_interval: Duration,
    /// How often the node's status, with its load summary, is reported.
    pub status_interval: Duration,
    /// Where the load summary's CPU and memory figures come from.
    pub load_source: LoadSource,
    /// How often the container runtime's health is checked (a failing
    /// one makes the node not ready).
    pub health_interval: Duration,
    /// How often the node's and its containers' metrics are collected and
    /// pushed ([`crate::metrics`]); zero turns collection off.
    pub metrics_interval: Duration,
    /// Where each collection is kept for the agent endpoint's `/metrics`.
    pub latest_samples: LatestSamples,
    /// Runs the pool's init profile on this machine; `None` leaves the
    /// machine alone (no status to report either).
    pub init: Option<InitSettings>,
    /// How often the node asks for images to preheat into its cache.
    pub preheat_interval: Duration,
}

impl AgentConfig {
    /// Defaults for a node called `name`.
    pub fn new(name: &str) -> AgentConfig {
        AgentConfig {
            name: name.to_string(),
            labels: BTreeMap::new(),
            pool: None,
            machine_class: None,
            address: None,
            cost_per_hour: None,
            max_pods: machine::DEFAULT_MAX_PODS,
            heartbeat_ttl: DEFAULT_LEASE_TTL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            endpoint: None,
            usage_interval: DEFAULT_USAGE_INTERVAL,
            status_interval: DEFAULT_STATUS_INTERVAL,
            load_source: LoadSource::default(),
            health_interval: HEALTH_EVERY,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            latest_samples: LatestSamples::default(),
            init: None,
            preheat_interval: DEFAULT_PREHEAT_INTERVAL,
        }
    }

    /// The node object this agent registers, with what the machine has now.
    /// Kubernetes' standard labels (hostname, os, arch) are the agent's:
    /// they replace any of `labels` of the same key (the CLI refuses such
    /// labels before they get here). `load` is the load summary to report.
    pub fn node(&self, load: &LoadSummary) -> Node {
        let mut labels = self.labels.clone();
        labels.extend(machine::standard_labels(&self.name));
        let mut annotations = BTreeMap::new();
        if let Some(pool) = &self.pool {
            labels.insert(LABEL_POOL.into(), pool.clone());
            annotations.insert(ANNOTATION_JOIN_POOL.into(), pool.clone());
        }
        if let Some(class) = &self.machine_class {
            labels.insert(LABEL_MACHINE_CLASS.into(), class.clone());
        }
        Node {
            api_version: "wharf.io/v1".into(),
            kind: "Node".into(),
            metadata: ObjectMeta {
                name: self.name.clone(),
                labels,
                annotations,
                ..ObjectMeta::default()
            },
            spec: NodeSpec {
                address: self.address.clone(),
                cost_per_hour: self.cost_per_hour,
                ..NodeSpec::default()
            },
            status: NodeStatus {
                capacity: machine::capacity(self.max_pods),
                cpu_load: load.cpu_busy,
                load_average: load.load_average,
                memory_available_bytes: load.memory_available_bytes,
                layers: load.layers.clone(),
                info: machine::info(),
                endpoint: self.endpoint.clone(),
                ..NodeStatus::default()
            },
        }
    }
}

/// A node agent.
pub struct Agent {
    api: Arc<dyn NodeApi>,
    runtime: Arc<dyn Runtime>,
    config: AgentConfig,
    fence: Fence,
    /// The services as followed from the control plane.
    services: watch::Sender<Arc<ServiceView>>,
    /// The same once the node's rules forward them: what names resolve to.
    resolvable: watch::Sender<Arc<ServiceView>>,
    service_rules: Option<Arc<dyn ServiceRules>>,
    /// Why the node cannot run pods, while its runtime fails.
    not_ready: watch::Sender<Option<String>>,
    /// The latest run of the pool's init profile, for the status report.
    initialization: watch::Sender<Option<NodeInitialization>>,
    /// Bumped when a preheat put an image in the cache: the status report
    /// then goes out at once, with the cache's layers.
    warmed: watch::Sender<u64>,
}

impl Agent {
    /// An agent talking to `api`, running pods with `runtime`.
    pub fn new(api: Arc<dyn NodeApi>, runtime: Arc<dyn Runtime>, config: AgentConfig) -> Agent {
        let last_applied = config.init.as_ref().and_then(InitSettings::last_applied);
        Agent {
            api,
            runtime,
            fence: Fence::new(config.heartbeat_ttl),
            config,
            services: watch::channel(Arc::default()).0,
            resolvable: watch::channel(Arc::default()).0,
            service_rules: None,
            not_ready: watch::channel(None).0,
            initialization: watch::channel(last_applied).0,
            warmed: watch::channel(0).0,
        }
    }

    /// Has `rules` forward the services to their ready endpoints on this
    /// node while the agent runs (nodes that run containers).
    pub fn with_service_rules(mut self, rules: Arc<dyn ServiceRules>) -> Agent {
        self.service_rules = Some(rules);
        self
    }

    /// The cluster's services and endpoints as this agent follows them
    /// once it runs, for its DNS server: empty until the first list, then
    /// a new value after each change, once the node's service rules (if
    /// it has them) forward that view.
    pub fn services(&self) -> watch::Receiver<Arc<ServiceView>> {
        self.resolvable.subscribe()
    }

    /// Registers the node, then serves it until the task is dropped.
    pub async fn run(self) {
        let this = Arc::new(self);
        this.register_until_done().await;
        let heartbeat = tokio::spawn(this.clone().heartbeats());
        let fence = tokio::spawn({
            let this = this.clone();
            async move { this.fence.watch().await }
        });
        let usage = tokio::spawn(this.clone().report_usage());
        let status = tokio::spawn(this.clone().report_status());
        let health = tokio::spawn(watch_health(
            this.runtime.clone(),
            this.not_ready.clone(),
            this.config.health_interval,
            HEALTH_TIMEOUT,
        ));
        let init = this.config.init.clone().map(|settings| {
            let source = profile_of(this.api.clone(), this.config.name.clone());
            AbortOnDropHandle::new(tokio::spawn(keep_initialized(
                source,
                settings,
                this.initialization.clone(),
            )))
        });
        let interval = this.config.metrics_interval;
        let metrics = (!interval.is_zero()).then(|| {
            let collector = Collector::new(
                &this.config.name,
                interval,
                this.api.clone(),
                this.runtime.clone(),
                NodeReader::default(),
            )
            .keeping(this.config.latest_samples.clone());
            AbortOnDropHandle::new(tokio::spawn(collector.run(interval)))
        });
        // Subscribed before the watcher starts, so no view goes unseen.
        let followed = this.services.subscribe();
        let resolvable = this.resolvable.clone();
        let rules = AbortOnDropHandle::new(match this.service_rules.clone() {
            Some(rules) => {
                tokio::spawn(keep_service_rules(followed, rules, RULES_RETRY, resolvable))
            }
            // Nothing to wait for: names resolve as soon as they are seen.
            None => tokio::spawn(pass_views(followed, resolvable)),
        });
        let services = tokio::spawn(follow_services(
            this.api.clone(),
            this.config.name.clone(),
            this.services.clone(),
        ));
        let preheater = Preheater {
            api: this.api.clone(),
            runtime: this.runtime.clone(),
            node: this.config.name.clone(),
            warmed: this.warmed.clone(),
            retry_after: crate::preheat::RETRY_AFTER,
        };
        let preheats = tokio::spawn(preheater.run(this.config.preheat_interval));
        let _stop = (
            AbortOnDropHandle::new(preheats),
            AbortOnDropHandle::new(heartbeat),
            AbortOnDropHandle::new(fence),
            AbortOnDropHandle::new(usage),
            AbortOnDropHandle::new(status),
            AbortOnDropHandle::new(health),
            AbortOnDropHandle::new(services),
            rules,
            metrics,
            init,
        );
        let mut workers = Workers::default();
        loop {
            match this.follow_pods(&mut workers).await {
                // The fence went up or down: look again at once.
                Ok(()) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, node = this.config.name, "pod watch failed; starting over")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn register_until_done(&self) {
        let mut delay = Duration::from_millis(200);
        loop {
            let mut node = self.config.node(&LoadSummary::default());
            node.status.initialization = self.initialization.borrow().clone();
            match self.api.register(node).await {
                Ok(_) => {
                    tracing::info!(node = self.config.name, "node registered");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, node = self.config.name, "registering the node failed; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Renews the heartbeat lease every `heartbeat_interval`.
    async fn heartbeats(self: Arc<Self>) {
        let mut lease = None;
        loop {
            let sent = tokio::time::Instant::now();
            match self
                .api
                .heartbeat(&self.config.name, lease, self.config.heartbeat_ttl)
                .await
            {
                Ok(renewed) => {
                    lease = Some(renewed);
                    self.fence.renewed(sent);
                }
                Err(err) => {
                    tracing::warn!(error = %err, node = self.config.name, "heartbeat failed")
                }
            }
            tokio::time::sleep(self.config.heartbeat_interval).await;
        }
    }

    /// Reports the node's status with its load summary every
    /// `status_interval`, and at once when its health or its init run
    /// changes (that moves pods), in a task of its own: reading the layer cache or a slow
    /// server must not hold up the lease renewals.
    async fn report_status(self: Arc<Self>) {
        let capacity = machine::capacity(self.config.max_pods);
        let mut load = LoadMeter::new(self.config.load_source, capacity);
        // The baseline, so the first report already has CPU busy.
        load.sample(self.runtime.as_ref()).await;
        let mut not_ready = self.not_ready.subscribe();
        let mut initialization = self.initialization.subscribe();
        let mut warmed = self.warmed.subscribe();
        let mut every = tokio::time::interval(self.config.status_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            let (health_changed, init_changed) = tokio::select! {
                _ = every.tick() => (false, false),
                changed = not_ready.changed() => (changed.is_ok(), false),
                changed = initialization.changed() => (false, changed.is_ok()),
                // A preheated image: the cache's layers, for image
                // locality and `wharf image distribution`, at once.
                _ = warmed.changed() => (false, false),
            };
            let summary = load.sample(self.runtime.as_ref()).await;
            let mut node = self.config.node(&summary);
            node.status.not_ready_reason = not_ready.borrow_and_update().clone();
            node.status.initialization = initialization.borrow_and_update().clone();
            if let Err(err) = self.api.register(node).await {
                tracing::warn!(error = %err, node = self.config.name, "status report failed");
                if health_changed || init_changed {
                    // Sent again after a heartbeat's pause, not in 30 s.
                    tokio::time::sleep(self.config.heartbeat_interval).await;
                    if health_changed {
                        not_ready.mark_changed();
                    } else {
                        initialization.mark_changed();
                    }
                }
            }
            self.runtime.release_volumes().await;
        }
    }

    /// Samples the running containers' usage every `usage_interval` and
    /// reports it. The server keeps samples in memory only; a lost report
    /// is not retried, the next one replaces it.
    async fn report_usage(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.usage_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let pods = self.runtime.usage().await;
            if pods.is_empty() {
                continue;
            }
            if let Err(err) = self.api.report_usage(&self.config.name, &pods).await {
                tracing::debug!(error = %err, node = self.config.name, "usage report failed");
            }
        }
    }

    /// Lists the node's pods, then follows their changes, one worker per
    /// pod, until the watch fails or the fence moves (`Ok`). Before any pod
    /// starts, every pod the runtime holds that is no longer bound here
    /// (evicted or deleted while the agent was down or cut off) is
    /// removed: a replacement elsewhere may already hold its address.
    async fn follow_pods(self: &Arc<Self>, workers: &mut Workers) -> Result<(), AgentError> {
        let node = self.config.name.as_str();
        let mut fence = self.fence.raised();
        let (pods, revision) = self.api.list_pods(Some(node)).await?;
        let bound: HashSet<PodKey> = pods.iter().map(key).collect();
        let mut stale: HashSet<PodKey> = workers
            .keys()
            .filter(|k| !bound.contains(*k))
            .cloned()
            .collect();
        for gone in &stale {
            workers.remove(gone);
        }
        stale.extend(
            self.runtime
                .pods()
                .await
                .into_iter()
                .filter(|held| !bound.contains(held)),
        );
        join_all(stale.iter().map(|(project, name)| {
            tracing::info!(project, pod = name, "removing a pod no longer bound here");
            self.runtime.remove(project, name, None)
        }))
        .await;
        for pod in pods {
            workers.update(self, pod);
        }
        let mut changes = self.api.watch_pods(Some(node), revision).await?;
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(change) => match change? {
                        PodChange::Upsert(pod) => workers.update(self, *pod),
                        PodChange::Deleted { project, name } => workers.remove(&(project, name)),
                    },
                    None => return Err(AgentError::Unreachable("the pod watch ended".into())),
                },
                _ = fence.changed() => return Ok(()),
            }
        }
    }
}

type PodKey = (String, String);

/// One task per pod: it syncs the pod with the runtime whenever the pod
/// changes or the runtime asks to look again, and reports the status; a
/// slow pod (an image pull) never holds up the others.
#[derive(Default)]
struct Workers {
    pods: HashMap<PodKey, watch::Sender<Option<Pod>>>,
}

impl Workers {
    fn keys(&self) -> impl Iterator<Item = &PodKey> {
        self.pods.keys()
    }

    /// Hands the pod's latest version to its worker, starting one if needed.
    fn update(&mut self, agent: &Arc<Agent>, pod: Pod) {
        let key = key(&pod);
        if let Some(sender) = self.pods.get(&key)
            && sender.send(Some(pod.clone())).is_ok()
        {
            return;
        }
        let (sender, receiver) = watch::channel(Some(pod));
        self.pods.insert(key, sender);
        tokio::spawn(pod_worker(agent.clone(), receiver));
    }

    /// Tells the pod's worker to remove it.
    fn remove(&mut self, key: &PodKey) {
        if let Some(sender) = self.pods.remove(key) {
            let _ = sender.send(None);
        }
    }
}

/// Runs the runtime on one pod until the pod is deleted, then removes it.
async fn pod_worker(agent: Arc<Agent>, mut desired: watch::Receiver<Option<Pod>>) {
    let Some(first) = desired.borrow().clone() else {
        return;
    };
    let (project, name) = key(&first);
    let (status_tx, status_rx) = watch::channel(first.status.clone());
    let reporter = tokio::spawn(report_status(
        agent.api.clone(),
        project.clone(),
        name.clone(),
        status_rx,
    ));
    let _stop_reporter = AbortOnDropHandle::new(reporter);
    let fenced = holds_pool_address(&first);
    loop {
        if fenced && *agent.fence.raised().borrow() {
            // The agent looks again once its lease is back: a new worker
            // then starts the pod if it is still bound here.
            agent
                .runtime
                .remove(&project, &name, Some(&first.metadata.uid))
                .await;
            return;
        }
        let Some(pod) = desired.borrow_and_update().clone() else {
            agent
                .runtime
                .remove(&project, &name, Some(&first.metadata.uid))
                .await;
            return;
        };
        if pod.metadata.is_terminating() {
            // Stopping is not cut short; only confirming is, by the object's end.
            stop_gracefully(&agent, &pod).await;
            tokio::select! {
                () = confirm_stopped(&agent, &pod) => {}
                () = deleted(desired.clone()) => {}
            }
            return;
        }
        let progress = |status: PodStatus| {
            status_tx.send_if_modified(|current| replace_if_changed(current, status));
        };
        // A step may take long (a big pull); deleting the pod cancels it
        // rather than waiting for it, and the removal above cleans up.
        let synced = tokio::select! {
            synced = agent.runtime.sync(&pod, &progress) => synced,
            () = leaving(desired.clone()) => continue,
            () = fence_raised(agent.fence.raised()), if fenced => continue,
        };
        status_tx.send_if_modified(|current| replace_if_changed(current, synced.status));
        let again = synced.again_in.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    // The agent dropped the worker's channel: it is restarting
                    // its watch, and a new worker takes over.
                    return;
                }
            }
            _ = tokio::time::sleep(again) => {}
            () = fence_raised(agent.fence.raised()), if fenced => {}
        }
    }
}

/// Resolves once the pod's worker is told to remove it; never if its
/// channel closes (a new worker takes over then).
async fn deleted(desired: watch::Receiver<Option<Pod>>) {
    until(desired, |pod| pod.is_none()).await
}

/// Resolves once the pod's deletion is asked, or it is gone.
async fn leaving(desired: watch::Receiver<Option<Pod>>) {
    until(desired, |pod| {
        pod.as_ref().is_none_or(|p| p.metadata.is_terminating())
    })
    .await
}

/// Resolves once the pod the worker is given passes `done`; never if its
/// channel closes.
async fn until(mut desired: watch::Receiver<Option<Pod>>, done: impl Fn(&Option<Pod>) -> bool) {
    loop {
        if done(&desired.borrow_and_update()) {
            return;
        }
        if desired.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Stops a Terminating pod: SIGTERM, SIGKILL once the deletion's grace
/// period is over, containers, network and address released.
async fn stop_gracefully(agent: &Agent, pod: &Pod) {
    let (project, name) = key(pod);
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or_else(|| pod.spec.grace_seconds());
    tracing::info!(project, pod = name, grace, "stopping a pod being deleted");
    agent
        .runtime
        .terminate(
            &project,
            &name,
            &pod.metadata.uid,
            Duration::from_secs(grace),
        )
        .await;
}

/// Tells the server the pod stopped, until it hears it: only then does
/// the object go (and the address and the node's booking with it).
async fn confirm_stopped(agent: &Agent, pod: &Pod) {
    let (project, name) = key(pod);
    let mut delay = Duration::from_millis(100);
    loop {
        match agent
            .api
            .pod_stopped(&project, &name, &pod.metadata.uid)
            .await
        {
            Ok(()) => return,
            Err(err) if err.is_not_found() => return,
            Err(err) => {
                tracing::warn!(error = %err, project, pod = name, "confirming a stopped pod failed");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn replace_if_changed(current: &mut PodStatus, next: PodStatus) -> bool {
    let changed = *current != next;
    *current = next;
    changed
}

/// Sends each new status of a pod to the server; a burst of changes is
/// sent as its latest.
async fn report_status(
    api: Arc<dyn NodeApi>,
    project: String,
    name: String,
    mut statuses: watch::Receiver<PodStatus>,
) {
    while statuses.changed().await.is_ok() {
        let status = statuses.borrow_and_update().clone();
        let mut delay = Duration::from_millis(100);
        loop {
            match api.set_pod_status(&project, &name, &status).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, project, name, "reporting pod status failed");
                    if err.is_not_found() {
                        return;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            if statuses.has_changed().unwrap_or(false) {
                break;
            }
        }
    }
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.project.clone().unwrap_or_default(),
        pod.metadata.name.clone(),
    )
}

/// Publishes each view `from` gets to `to`, until `from`'s sender goes.
async fn pass_views(
    mut from: watch::Receiver<Arc<ServiceView>>,
    to: watch::Sender<Arc<ServiceView>>,
) {
    while from.changed().await.is_ok() {
        let view = from.borrow_and_update().clone();
        to.send_replace(view);
    }
}

#[cfg(test)]
mod tests {
    use wharf_api::{LABEL_ARCH, LABEL_HOSTNAME, LABEL_OS, LABEL_POOL};

    use super::*;

    #[test]
    fn pool_and_class_ask_to_join_the_pool() {
        let mut config = AgentConfig::new("worker-1");
        config.pool = Some("batch".into());
        config.machine_class = Some("legacy-12c16g".into());
        let node = config.node(&LoadSummary::default());
        assert_eq!(node.metadata.labels[LABEL_POOL], "batch");
        assert_eq!(node.metadata.labels[LABEL_MACHINE_CLASS], "legacy-12c16g");
        assert_eq!(node.metadata.annotations[ANNOTATION_JOIN_POOL], "batch");
        let plain = AgentConfig::new("worker-2").node(&LoadSummary::default());
        assert!(plain.metadata.annotations.is_empty());
    }

    #[test]
    fn the_node_carries_the_standard_labels_beside_the_operators() {
        let mut config = AgentConfig::new("worker-1");
        config.labels.insert(LABEL_POOL.into(), "web".into());
        // Set in code, past the CLI's refusal: the agent's value stands.
        config.labels.insert(LABEL_OS.into(), "windows".into());
        let labels = config.node(&LoadSummary::default()).metadata.labels;
        assert_eq!(labels[LABEL_POOL], "web");
        assert_eq!(labels[LABEL_HOSTNAME], "worker-1");
        assert_eq!(labels[LABEL_OS], "linux");
        assert!(["amd64", "arm64"].contains(&labels[LABEL_ARCH].as_str()));
    }
}
