//! The pool autoscaler: cloud pools grow when pods stay unschedulable and
//! shrink when machines stay unused, as cluster-autoscaler does for a node
//! group. It runs only on the leader.
//!
//! Every pass, for each pool with `spec.autoscale` in a `cloud` cluster:
//!
//! - **Up:** pending pods the scheduler marked `Unschedulable` are placed,
//!   with the scheduler core, on a snapshot of the pool's nodes, its
//!   machines still on their way, and as many new machines of the pool's
//!   class as they need (at most `max` machines in all). That many are
//!   created; a pass that creates machines removes none. With
//!   [`JoinCommands`] each new machine gets its own join command (a
//!   single-use token), so machines are then created one at a time.
//! - **Down:** a machine is unused while it has no node, or its node has
//!   no pods (Wharf has no daemon pods to discount). One unused for
//!   `scaleDownDelaySeconds` (600 by default) is removed, never below
//!   `min`: its node is cordoned, checked again for pods (a pod bound
//!   meanwhile keeps it), the machine deleted and the node object removed.
//!   A node labelled with an instance id the provider no longer lists, and
//!   without pods, is removed too.
//!
//! Nodes are matched to machines by their `wharf.io/instance-id` label, or
//! by name. Every action is an event on the pool (and on the pods a new
//! machine is for) and a [`PoolScaleReport`] (the server's audit log).
//! How long a machine has been unused is kept in memory: a new leader
//! starts counting again, which only delays removals.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_api::{
    Cluster, ClusterKind, EventType, LABEL_INSTANCE_ID, LABEL_POOL, MachineClass, Node,
    ObjectReference, Pod, PodPhase, Pool, PoolGrant, ProviderSpec, TAINT_NOT_INITIALIZED,
};
use wharf_provider::{Credentials, Machine, MachineProvider, MachineRequest, ProviderError};
use wharf_scheduler::{PoolAccess, Scheduler, SchedulerConfig, Snapshot};

use crate::ControlError;
use crate::config::ConfigObjects;
use crate::events::EventRecorder;
use crate::objects::Objects;
use crate::placement::pool_access;
use crate::pool_capacity::{machines_needed, template_node};
use crate::scheduling::{node_info, pod_info};

/// The project whose Secrets hold providers' credentials.
pub const PROVIDER_SECRETS_PROJECT: &str = "wharf-system";
/// How long a machine stays unused before it goes, unless the pool says.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(600);
/// How often pools are looked at (cluster-autoscaler's scan interval).
pub const DEFAULT_POOL_SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Makes the driver a cluster's provider spec names.
pub type ProviderFactory = Arc<
    dyn Fn(&ProviderSpec, Option<Credentials>) -> Result<Arc<dyn MachineProvider>, ProviderError>
        + Send
        + Sync,
>;

/// Makes the command a new machine of a pool runs at first boot to join
/// it (its UserData). Called once per machine: each gets its own
/// single-use join token.
#[async_trait::async_trait]
pub trait JoinCommands: Send + Sync {
    /// A join command for one new machine of `pool`; `Err` says why there
    /// is none (the machine is then not made).
    async fn join_command(&self, pool: &Pool) -> Result<String, String>;

    /// Revokes the credential node `node` joined with, once its machine
    /// and node are removed: a machine image or a disk that outlives the
    /// instance must not keep a working node credential.
    async fn revoke_node(&self, node: &str) -> Result<(), String>;
}

/// What the pool autoscaler did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolScaleAction {
    /// Machines created.
    Up,
    /// Machines deleted (and their nodes removed).
    Down,
    /// Nodes whose machine is gone removed.
    OrphanNodesRemoved,
    /// A provider call failed.
    Failed,
}

impl PoolScaleAction {
    /// The audit verb.
    pub fn as_str(&self) -> &'static str {
        match self {
            PoolScaleAction::Up => "pool.scale_up",
            PoolScaleAction::Down => "pool.scale_down",
            PoolScaleAction::OrphanNodesRemoved => "pool.orphan_nodes_removed",
            PoolScaleAction::Failed => "pool.scale_failed",
        }
    }
}

/// One action of the pool autoscaler, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolScaleReport {
    /// The pool.
    pub pool: String,
    /// What was done.
    pub action: PoolScaleAction,
    /// The machines (or nodes) acted on.
    pub machines: Vec<String>,
    /// The event's message.
    pub message: String,
}

/// Receives every [`PoolScaleReport`]; must not block.
pub type PoolScaleReporter = Arc<dyn Fn(PoolScaleReport) + Send + Sync>;

/// Grows and shrinks cloud pools.
pub struct PoolAutoscaler {
    objects: Objects,
    secrets: ConfigObjects,
    providers: ProviderFactory,
    join_commands: Option<Arc<dyn JoinCommands>>,
    reports: Option<PoolScaleReporter>,
    events: EventRecorder,
    scheduler: Scheduler,
    interval: Duration,
    /// `(pool, machine id)` to when the machine was first seen unused.
    unused_since: Mutex<HashMap<(String, String), Instant>>,
}

/// What one pool looks like this pass.
struct PoolView {
    cluster: Cluster,
    pool: Pool,
    class: MachineClass,
    provider: Arc<dyn MachineProvider>,
    machines: Vec<Machine>,
    /// The pool's nodes by name.
    nodes: BTreeMap<String, Node>,
    /// Pods bound to each node of the pool, not finished.
    pods_on: HashMap<String, Vec<Pod>>,
}

impl PoolView {
    /// The node a machine became, if it has joined.
    fn node_of(&self, machine: &Machine) -> Option<&Node> {
        self.nodes.values().find(|node| {
            node.metadata.labels.get(LABEL_INSTANCE_ID) == Some(&machine.id)
                || node.metadata.name == machine.id
        })
    }

    fn busy(&self, node: &Node) -> bool {
        self.pods_on
            .get(&node.metadata.name)
            .is_some_and(|pods| !pods.is_empty())
    }
}

/// What a pass's look at pending pods came to.
enum ScaleUp {
    /// Machines were made (nothing is removed in the same pass).
    Created,
    /// None were; pending pods would go to these nodes (or machines on
    /// their way), which therefore are not unused.
    None { awaited: BTreeSet<String> },
}

/// `node` for the autoscaler's plans: without the not-initialized taint,
/// which goes once its agent has run the pool's profile (as
/// cluster-autoscaler ignores startup taints), so pods waiting for that
/// node do not get another machine.
fn node_on_its_way(node: &Node) -> wharf_scheduler::NodeInfo {
    let mut info = node_info(node);
    info.taints.retain(|t| t.key != TAINT_NOT_INITIALIZED);
    info
}

/// A pod the scheduler gave up on for now.
fn unschedulable(pod: &Pod) -> bool {
    pod.spec.node_name.is_none()
        && !pod.metadata.is_terminating()
        && pod.status.reason.as_deref() == Some("Unschedulable")
}

/// A pod that holds its node.
fn holds_node(pod: &Pod) -> bool {
    pod.spec.node_name.is_some()
        && !matches!(pod.status.phase, PodPhase::Succeeded | PodPhase::Failed)
}

fn pool_reference(pool: &Pool) -> ObjectReference {
    ObjectReference {
        kind: "Pool".into(),
        project: None,
        name: pool.metadata.name.clone(),
        uid: pool.metadata.uid.clone(),
    }
}

/// What to ask the provider for: `count` machines of the pool's class.
fn machine_request(view: &PoolView, count: u32, join_command: Option<String>) -> MachineRequest {
    MachineRequest {
        cluster: view.cluster.metadata.name.clone(),
        pool: view.pool.metadata.name.clone(),
        count,
        machine_class: view.class.metadata.name.clone(),
        join_command,
        in_use: view
            .nodes
            .values()
            .filter_map(|n| n.spec.address.clone())
            .collect(),
    }
}

impl PoolAutoscaler {
    /// An autoscaler over `objects`, opening providers' credentials with
    /// `secrets` and making their drivers with `providers`.
    pub fn new(objects: Objects, secrets: ConfigObjects, providers: ProviderFactory) -> Self {
        PoolAutoscaler {
            events: EventRecorder::new(objects.clone(), "pool-autoscaler"),
            objects,
            secrets,
            providers,
            join_commands: None,
            reports: None,
            scheduler: Scheduler::new(SchedulerConfig::default()),
            interval: DEFAULT_POOL_SCAN_INTERVAL,
            unused_since: Mutex::new(HashMap::new()),
        }
    }

    /// The same autoscaler giving each new machine its own join command
    /// from `commands` (machines are then made one by one).
    pub fn with_join_commands(mut self, commands: Arc<dyn JoinCommands>) -> Self {
        self.join_commands = Some(commands);
        self
    }

    /// The same autoscaler telling `reports` what it does.
    pub fn with_reports(mut self, reports: PoolScaleReporter) -> Self {
        self.reports = Some(reports);
        self
    }

    /// The same autoscaler looking at pools every `interval`.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Runs until dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(err) = self.pass().await {
                tracing::warn!(error = %err, "pool autoscaler pass failed");
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Looks at every autoscaled pool once.
    pub async fn pass(&self) -> Result<(), ControlError> {
        let (pools, _) = self.objects.list::<Pool>(None, None).await?;
        // Who may use which pool, as the scheduler sees it: a machine made
        // for pods their project may not place there would never fill.
        let (grants, _) = self.objects.list::<PoolGrant>(None, None).await?;
        let access = pool_access(&pools, &grants);
        for pool in pools.into_iter().filter(|p| p.spec.autoscale.is_some()) {
            let name = pool.metadata.name.clone();
            let view = match self.view(pool).await {
                Ok(Some(view)) => view,
                Ok(None) => continue,
                Err(message) => {
                    tracing::warn!(pool = %name, message, "pool not autoscaled");
                    continue;
                }
            };
            match self.scale_up(&view, &access).await {
                ScaleUp::Created => {}
                ScaleUp::None { awaited } => self.scale_down(&view, &awaited).await,
            }
        }
        Ok(())
    }

    /// The pool with its cluster, class, provider, machines, nodes and
    /// their pods; `None` if it is not a cloud pool; `Err` says what is
    /// missing (also as an event on the pool).
    async fn view(&self, pool: Pool) -> Result<Option<PoolView>, String> {
        let autoscale = pool.spec.autoscale.clone().expect("autoscaled pools only");
        let found = self.read_inventory(&pool, &autoscale.machine_class).await;
        let (cluster, class) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(message) => {
                self.unavailable(&pool, &message).await;
                return Err(message);
            }
        };
        let machines_and_provider = self.machines(&cluster, &pool).await;
        let (provider, machines) = match machines_and_provider {
            Ok(found) => found,
            Err(message) => {
                self.report(&pool, PoolScaleAction::Failed, Vec::new(), &message)
                    .await;
                return Err(message);
            }
        };
        let (nodes, pods) = self.pool_nodes(&pool).await.map_err(|e| e.to_string())?;
        Ok(Some(PoolView {
            cluster,
            pool,
            class,
            provider,
            machines,
            nodes,
            pods_on: pods,
        }))
    }

    /// The pool's cluster and machine class; `None` if the cluster is not
    /// a cloud one.
    async fn read_inventory(
        &self,
        pool: &Pool,
        class: &str,
    ) -> Result<Option<(Cluster, MachineClass)>, String> {
        let cluster_name = &pool.spec.cluster;
        let cluster = self
            .objects
            .get::<Cluster>(None, cluster_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("cluster {cluster_name} does not exist"))?;
        if cluster.spec.kind != ClusterKind::Cloud {
            return Ok(None);
        }
        let class = self
            .objects
            .get::<MachineClass>(None, class)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("machine class {class} does not exist"))?;
        Ok(Some((cluster, class)))
    }

    /// The cluster's provider and the pool's machines at it.
    async fn machines(
        &self,
        cluster: &Cluster,
        pool: &Pool,
    ) -> Result<(Arc<dyn MachineProvider>, Vec<Machine>), String> {
        let name = &cluster.metadata.name;
        let spec = cluster
            .spec
            .provider
            .as_ref()
            .ok_or_else(|| format!("cloud cluster {name} has no provider"))?;
        let credentials = match &spec.credentials_secret {
            Some(secret) => Some(self.credentials(secret).await?),
            None => None,
        };
        let provider = (self.providers)(spec, credentials).map_err(|e| e.to_string())?;
        let machines = provider
            .list(name, &pool.metadata.name)
            .await
            .map_err(|e| e.to_string())?;
        Ok((provider, machines))
    }

    /// The keys in Secret `name` of the system project.
    async fn credentials(&self, name: &str) -> Result<Credentials, String> {
        let secret = self
            .secrets
            .secret(Some(PROVIDER_SECRETS_PROJECT), name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("secret {PROVIDER_SECRETS_PROJECT}/{name} does not exist"))?;
        Credentials::from_secret_data(name, &secret.data).map_err(|e| e.to_string())
    }

    /// The pool's nodes and the pods bound to each.
    async fn pool_nodes(
        &self,
        pool: &Pool,
    ) -> Result<(BTreeMap<String, Node>, HashMap<String, Vec<Pod>>), ControlError> {
        let (nodes, _) = self.objects.list::<Node>(None, None).await?;
        let nodes: BTreeMap<String, Node> = nodes
            .into_iter()
            .filter(|n| n.metadata.labels.get(LABEL_POOL) == Some(&pool.metadata.name))
            .map(|n| (n.metadata.name.clone(), n))
            .collect();
        let (pods, _) = self.objects.list::<Pod>(None, None).await?;
        let mut pods_on: HashMap<String, Vec<Pod>> = HashMap::new();
        for pod in pods.into_iter().filter(holds_node) {
            let node = pod.spec.node_name.clone().unwrap_or_default();
            if nodes.contains_key(&node) {
                pods_on.entry(node).or_default().push(pod);
            }
        }
        Ok((nodes, pods_on))
    }

    /// Creates the machines unschedulable pods need.
    async fn scale_up(&self, view: &PoolView, access: &PoolAccess) -> ScaleUp {
        let nothing = ScaleUp::None {
            awaited: BTreeSet::new(),
        };
        let autoscale = view.pool.spec.autoscale.as_ref().expect("autoscaled");
        let room = autoscale.max.saturating_sub(view.machines.len() as u32);
        let pending = match self.pending_pods().await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(error = %err, "pool autoscaler could not list pods");
                // Unknown demand: keep every machine this pass.
                let all = view.machines.iter().map(|m| m.id.clone()).collect();
                return ScaleUp::None { awaited: all };
            }
        };
        if pending.is_empty() {
            return nothing;
        }
        let template = match template_node("template", &view.cluster, &view.pool, &view.class) {
            Ok(template) => template,
            Err(message) => {
                self.unavailable(&view.pool, &message).await;
                return nothing;
            }
        };
        let infos: Vec<_> = pending
            .iter()
            .filter_map(|(_, info)| info.clone())
            .collect();
        let pods: Vec<&Pod> = pending
            .iter()
            .filter(|(_, info)| info.is_some())
            .map(|(pod, _)| pod)
            .collect();
        let snapshot = self.snapshot_of(view, &template, access);
        let plan = machines_needed(&self.scheduler, snapshot, &template, &infos, room);
        if plan.new_machines == 0 {
            return ScaleUp::None {
                awaited: plan.awaited,
            };
        }
        let (needed, helped) = (plan.new_machines, plan.helped);
        let (ids, failure) = self.create_machines(view, needed).await;
        if !ids.is_empty() {
            let message = format!(
                "created {} machine(s) of class {} ({}) for {} unschedulable pod(s)",
                ids.len(),
                view.class.metadata.name,
                ids.join(", "),
                helped.len()
            );
            self.report(&view.pool, PoolScaleAction::Up, ids, &message)
                .await;
            let for_pods = format!(
                "pod triggered scale-up of pool {}: {message}",
                view.pool.metadata.name
            );
            for index in helped {
                self.record_on_pod(pods[index], &for_pods).await;
            }
        }
        if let Some(err) = failure {
            let message = format!("creating {needed} machine(s) failed: {err}");
            self.report(&view.pool, PoolScaleAction::Failed, Vec::new(), &message)
                .await;
        }
        ScaleUp::Created
    }

    /// Makes `count` machines for the pool: with join commands one at a
    /// time, each with its own (a single-use token cannot be shared),
    /// else in one call. Returns the ids made and, if it stopped short,
    /// why.
    async fn create_machines(&self, view: &PoolView, count: u32) -> (Vec<String>, Option<String>) {
        let Some(commands) = &self.join_commands else {
            let request = machine_request(view, count, None);
            return match view.provider.create(&request).await {
                Ok(made) => (made.into_iter().map(|m| m.id).collect(), None),
                Err(err) => (Vec::new(), Some(err.to_string())),
            };
        };
        let mut ids = Vec::new();
        for _ in 0..count {
            let command = match commands.join_command(&view.pool).await {
                Ok(command) => command,
                Err(err) => return (ids, Some(format!("no join command: {err}"))),
            };
            let request = machine_request(view, 1, Some(command));
            match view.provider.create(&request).await {
                Ok(made) => ids.extend(made.into_iter().map(|m| m.id)),
                Err(err) => return (ids, Some(err.to_string())),
            }
        }
        (ids, None)
    }

    /// Unschedulable pods with what the scheduler core needs of them.
    async fn pending_pods(
        &self,
    ) -> Result<Vec<(Pod, Option<wharf_scheduler::PodInfo>)>, ControlError> {
        let (pods, _) = self.objects.list::<Pod>(None, None).await?;
        Ok(pods
            .into_iter()
            .filter(unschedulable)
            .map(|pod| {
                let info = pod_info(&pod);
                (pod, info)
            })
            .collect())
    }

    /// The pool's nodes with their pods, and its machines that have no
    /// node yet as template nodes: what is there or on its way (a node
    /// still running its init profile is on its way too).
    fn snapshot_of(
        &self,
        view: &PoolView,
        template: &wharf_scheduler::NodeInfo,
        access: &PoolAccess,
    ) -> Snapshot {
        let mut snapshot = Snapshot::from_nodes(view.nodes.values().map(node_on_its_way));
        snapshot.set_pool_access(access.clone());
        for (node, pods) in &view.pods_on {
            let Some(id) = snapshot.node_id(node) else {
                continue;
            };
            for info in pods.iter().filter_map(pod_info) {
                let _ = snapshot.assume(id, &info);
            }
        }
        for machine in &view.machines {
            if view.node_of(machine).is_none() {
                let mut coming = template.clone();
                coming.name = machine.id.clone();
                snapshot.upsert_node(coming);
            }
        }
        snapshot
    }

    /// Removes machines unused for the pool's delay, down to its minimum,
    /// and nodes whose machine is gone. Machines pending pods would go to
    /// (`awaited`) are in use.
    async fn scale_down(&self, view: &PoolView, awaited: &BTreeSet<String>) {
        let autoscale = view.pool.spec.autoscale.as_ref().expect("autoscaled");
        let delay = autoscale
            .scale_down_delay_seconds
            .map_or(DEFAULT_SCALE_DOWN_DELAY, Duration::from_secs);
        let pool = &view.pool.metadata.name;
        let due = self.due_for_removal(view, awaited, delay);
        let removable = (view.machines.len() as u32).saturating_sub(autoscale.min) as usize;
        let mut removed = Vec::new();
        for machine in due.into_iter().take(removable) {
            if self.remove_machine(view, machine).await {
                removed.push(machine.id.clone());
            }
        }
        if !removed.is_empty() {
            let message = format!(
                "removed {} machine(s) unused for {}s ({})",
                removed.len(),
                delay.as_secs(),
                removed.join(", ")
            );
            self.forget_unused(pool, &removed);
            self.report(&view.pool, PoolScaleAction::Down, removed, &message)
                .await;
        }
        self.remove_orphan_nodes(view).await;
    }

    /// The machines unused for `delay`, oldest first; starts the clock of
    /// newly unused ones and stops it for used ones.
    fn due_for_removal<'v>(
        &self,
        view: &'v PoolView,
        awaited: &BTreeSet<String>,
        delay: Duration,
    ) -> Vec<&'v Machine> {
        let pool = &view.pool.metadata.name;
        let now = Instant::now();
        let mut unused = self.unused_since.lock().expect("unused machines");
        unused.retain(|(p, id), _| p != pool || view.machines.iter().any(|m| &m.id == id));
        let mut due = Vec::new();
        for machine in &view.machines {
            let key = (pool.clone(), machine.id.clone());
            let node = view.node_of(machine);
            let used = awaited.contains(&machine.id)
                || node.is_some_and(|n| view.busy(n) || awaited.contains(&n.metadata.name));
            if used {
                unused.remove(&key);
                continue;
            }
            let since = *unused.entry(key).or_insert(now);
            if now.duration_since(since) >= delay {
                due.push((since, machine));
            }
        }
        due.sort_by_key(|(since, machine)| (*since, machine.id.clone()));
        due.into_iter().map(|(_, machine)| machine).collect()
    }

    fn forget_unused(&self, pool: &str, machines: &[String]) {
        let mut unused = self.unused_since.lock().expect("unused machines");
        for id in machines {
            unused.remove(&(pool.to_string(), id.clone()));
        }
    }

    /// Cordons the machine's node, makes sure it still has no pods, then
    /// deletes the machine and the node; `false` if it was kept.
    async fn remove_machine(&self, view: &PoolView, machine: &Machine) -> bool {
        let node = view.node_of(machine).map(|n| n.metadata.name.clone());
        if let Some(node) = &node {
            if let Err(err) = self.set_cordoned(node, true).await {
                tracing::warn!(error = %err, node, "could not cordon an unused node");
                return false;
            }
            match self.pods_on(node).await {
                Ok(0) => {}
                Ok(_) | Err(_) => {
                    let _ = self.set_cordoned(node, false).await;
                    return false;
                }
            }
        }
        if let Err(err) = view
            .provider
            .delete(std::slice::from_ref(&machine.id))
            .await
        {
            let message = format!("deleting machine {} failed: {err}", machine.id);
            self.report(
                &view.pool,
                PoolScaleAction::Failed,
                vec![machine.id.clone()],
                &message,
            )
            .await;
            if let Some(node) = &node {
                let _ = self.set_cordoned(node, false).await;
            }
            return false;
        }
        if let Some(node) = &node {
            self.delete_node(node).await;
        }
        true
    }

    /// Removes the pool's nodes that name an instance the provider no
    /// longer lists and hold no pods (an agent that outlived its machine).
    async fn remove_orphan_nodes(&self, view: &PoolView) {
        let orphans: Vec<String> = view
            .nodes
            .values()
            .filter(|node| {
                node.metadata
                    .labels
                    .get(LABEL_INSTANCE_ID)
                    .is_some_and(|id| !view.machines.iter().any(|m| &m.id == id))
                    && !view.busy(node)
            })
            .map(|node| node.metadata.name.clone())
            .collect();
        if orphans.is_empty() {
            return;
        }
        for node in &orphans {
            self.delete_node(node).await;
        }
        let message = format!(
            "removed node(s) whose machine is gone: {}",
            orphans.join(", ")
        );
        self.report(
            &view.pool,
            PoolScaleAction::OrphanNodesRemoved,
            orphans,
            &message,
        )
        .await;
    }

    async fn set_cordoned(&self, node: &str, cordoned: bool) -> Result<Node, ControlError> {
        self.objects
            .modify::<Node>(None, node, |n| {
                let changed = n.spec.unschedulable != cordoned;
                n.spec.unschedulable = cordoned;
                changed
            })
            .await
    }

    async fn pods_on(&self, node: &str) -> Result<usize, ControlError> {
        let (pods, _) = self.objects.list::<Pod>(None, None).await?;
        Ok(pods
            .iter()
            .filter(|p| holds_node(p) && p.spec.node_name.as_deref() == Some(node))
            .count())
    }

    async fn delete_node(&self, node: &str) {
        match self.objects.delete::<Node>(None, node, None).await {
            Ok(_) | Err(ControlError::NotFound { .. }) => {}
            Err(err) => {
                tracing::warn!(error = %err, node, "could not remove a node");
                return;
            }
        }
        if let Some(commands) = &self.join_commands
            && let Err(err) = commands.revoke_node(node).await
        {
            tracing::warn!(error = %err, node, "could not revoke a removed node's credential");
        }
    }

    /// An event on the pool and a report for the audit log.
    async fn report(
        &self,
        pool: &Pool,
        action: PoolScaleAction,
        machines: Vec<String>,
        message: &str,
    ) {
        let (event_type, reason) = match action {
            PoolScaleAction::Up => (EventType::Normal, "ScaledUp"),
            PoolScaleAction::Down => (EventType::Normal, "ScaledDown"),
            PoolScaleAction::OrphanNodesRemoved => (EventType::Normal, "RemovedOrphanNodes"),
            PoolScaleAction::Failed => (EventType::Warning, "ScalingFailed"),
        };
        self.events
            .record(&pool_reference(pool), event_type, reason, message)
            .await;
        if let Some(reports) = &self.reports {
            reports(PoolScaleReport {
                pool: pool.metadata.name.clone(),
                action,
                machines,
                message: message.to_string(),
            });
        }
    }

    /// Says on the pool why it cannot be autoscaled now.
    async fn unavailable(&self, pool: &Pool, message: &str) {
        let reference = pool_reference(pool);
        self.events
            .record(
                &reference,
                EventType::Warning,
                "AutoscalingUnavailable",
                message,
            )
            .await;
    }

    async fn record_on_pod(&self, pod: &Pod, message: &str) {
        let reference = ObjectReference {
            kind: "Pod".into(),
            project: pod.metadata.project.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
        };
        self.events
            .record(&reference, EventType::Normal, "TriggeredScaleUp", message)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::objects;
    use async_trait::async_trait;
    use wharf_api::{Resources, Secret};
    use wharf_provider::MachineState;
    use wharf_seal::SecretBox;

    /// A provider keeping machines in memory.
    #[derive(Default)]
    struct FakeCloud {
        machines: Mutex<Vec<Machine>>,
        made: Mutex<u32>,
    }

    #[async_trait]
    impl MachineProvider for FakeCloud {
        fn driver(&self) -> &'static str {
            "fake"
        }

        async fn create(&self, request: &MachineRequest) -> Result<Vec<Machine>, ProviderError> {
            let mut made = self.made.lock().unwrap();
            let mut created = Vec::new();
            for _ in 0..request.count {
                *made += 1;
                created.push(Machine {
                    id: format!("i-{made}"),
                    address: None,
                    state: MachineState::Pending,
                    join_command: request.join_command.clone(),
                });
            }
            self.machines.lock().unwrap().extend(created.clone());
            Ok(created)
        }

        async fn list(&self, _: &str, _: &str) -> Result<Vec<Machine>, ProviderError> {
            Ok(self.machines.lock().unwrap().clone())
        }

        async fn delete(&self, ids: &[String]) -> Result<(), ProviderError> {
            self.machines
                .lock()
                .unwrap()
                .retain(|m| !ids.contains(&m.id));
            Ok(())
        }
    }

    /// Join commands with a new token each time, as the server's are; and
    /// the nodes whose credential was revoked.
    #[derive(Default)]
    struct NumberedTokens {
        made: Mutex<u32>,
        revoked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl JoinCommands for NumberedTokens {
        async fn join_command(&self, pool: &Pool) -> Result<String, String> {
            let mut made = self.made.lock().unwrap();
            *made += 1;
            Ok(format!(
                "wharf join --pool {} --token t{made}",
                pool.metadata.name
            ))
        }

        async fn revoke_node(&self, node: &str) -> Result<(), String> {
            self.revoked.lock().unwrap().push(node.to_string());
            Ok(())
        }
    }

    fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    async fn inventory(objects: &Objects, secrets: &ConfigObjects, min: u32) {
        let (mut cluster, mut pool, class) = crate::pool_capacity::tests::inventory();
        cluster.spec.provider = Some(ProviderSpec {
            driver: "fake".into(),
            credentials_secret: Some("aws-keys".into()),
            ..Default::default()
        });
        pool.spec.autoscale = Some(wharf_api::PoolAutoscale {
            min,
            max: 5,
            machine_class: "c2".into(),
            scale_down_delay_seconds: Some(0),
        });
        objects.create(cluster).await.unwrap();
        objects.create(pool).await.unwrap();
        objects.create(class).await.unwrap();
        let grant: PoolGrant = from_json(serde_json::json!({
            "metadata": {"name": "burst.shop"},
            "spec": {"pool": "burst", "project": "shop"}
        }));
        objects.create(grant).await.unwrap();
        let mut keys: Secret = from_json(serde_json::json!({
            "metadata": {"name": "aws-keys", "namespace": PROVIDER_SECRETS_PROJECT}
        }));
        keys.data.insert("accessKeyId".into(), b"AKID".to_vec());
        keys.data
            .insert("secretAccessKey".into(), b"hidden".to_vec());
        secrets.apply_secret(keys).await.unwrap();
    }

    /// Pod `name` asking for 1.5 cpu in pool `burst`, which the scheduler
    /// found no node for.
    async fn waiting_pod(objects: &Objects, name: &str) -> Pod {
        objects
            .create::<Pod>(from_json(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {
                    "nodeSelector": {LABEL_POOL: "burst"},
                    "containers": [{"name": "main", "image": "shop/web:1",
                        "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]
                },
                "status": {"reason": "Unschedulable"}
            })))
            .await
            .unwrap()
    }

    /// The node an agent on machine `id` registers.
    async fn joined(objects: &Objects, id: &str) {
        let mut node = Node::new(
            id,
            Resources {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
                pods: 110,
            },
        );
        node.metadata
            .labels
            .insert(LABEL_POOL.into(), "burst".into());
        node.metadata
            .labels
            .insert(LABEL_INSTANCE_ID.into(), id.into());
        node.status.ready = true;
        // Still running the pool's init profile.
        node.spec.taints.push(wharf_api::Taint {
            key: TAINT_NOT_INITIALIZED.into(),
            value: String::new(),
            effect: wharf_api::TaintEffect::NoSchedule,
            time_added: None,
        });
        objects.create(node).await.unwrap();
    }

    struct Setup {
        objects: Objects,
        cloud: Arc<FakeCloud>,
        tokens: Arc<NumberedTokens>,
        autoscaler: PoolAutoscaler,
        reports: Arc<Mutex<Vec<PoolScaleReport>>>,
        keys_seen: Arc<Mutex<Option<Credentials>>>,
    }

    async fn setup(dir: &tempfile::TempDir, min: u32) -> Setup {
        let objects = objects(dir);
        let secrets = ConfigObjects::new(objects.clone(), SecretBox::from_key([7; 32]));
        inventory(&objects, &secrets, min).await;
        let cloud = Arc::new(FakeCloud::default());
        let keys_seen = Arc::new(Mutex::new(None));
        let (provider, seen) = (cloud.clone(), keys_seen.clone());
        let factory: ProviderFactory = Arc::new(move |spec, credentials| {
            assert_eq!(spec.driver, "fake");
            *seen.lock().unwrap() = credentials;
            Ok(provider.clone() as Arc<dyn MachineProvider>)
        });
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let tokens = Arc::new(NumberedTokens::default());
        let autoscaler = PoolAutoscaler::new(objects.clone(), secrets, factory)
            .with_join_commands(tokens.clone())
            .with_reports(Arc::new(move |report| sink.lock().unwrap().push(report)));
        Setup {
            objects,
            cloud,
            tokens,
            autoscaler,
            reports,
            keys_seen,
        }
    }

    fn machine_ids(cloud: &FakeCloud) -> Vec<String> {
        let machines = cloud.machines.lock().unwrap();
        machines.iter().map(|m| m.id.clone()).collect()
    }

    #[tokio::test]
    async fn pods_whose_project_has_no_grant_on_the_pool_get_no_machine() {
        let dir = tempfile::tempdir().unwrap();
        let s = setup(&dir, 0).await;
        s.objects
            .delete::<PoolGrant>(None, "burst.shop", None)
            .await
            .unwrap();
        waiting_pod(&s.objects, "web-0").await;
        s.autoscaler.pass().await.unwrap();
        assert!(machine_ids(&s.cloud).is_empty());
    }

    /// A server that cannot make join tokens.
    struct NoTokens;

    #[async_trait]
    impl JoinCommands for NoTokens {
        async fn join_command(&self, _: &Pool) -> Result<String, String> {
            Err("store unavailable".into())
        }

        async fn revoke_node(&self, _: &str) -> Result<(), String> {
            Err("store unavailable".into())
        }
    }

    #[tokio::test]
    async fn no_machine_is_made_without_its_join_command() {
        let dir = tempfile::tempdir().unwrap();
        let s = setup(&dir, 0).await;
        let autoscaler = s.autoscaler.with_join_commands(Arc::new(NoTokens));
        waiting_pod(&s.objects, "web-0").await;
        autoscaler.pass().await.unwrap();
        assert!(machine_ids(&s.cloud).is_empty());
        let reports = s.reports.lock().unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].action, PoolScaleAction::Failed);
        assert!(
            reports[0]
                .message
                .contains("no join command: store unavailable"),
            "{}",
            reports[0].message
        );
    }

    #[tokio::test]
    async fn unschedulable_pods_get_the_machines_they_need_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = setup(&dir, 0).await;
        for name in ["web-0", "web-1", "web-2"] {
            waiting_pod(&s.objects, name).await;
        }
        s.autoscaler.pass().await.unwrap();
        assert_eq!(
            machine_ids(&s.cloud),
            ["i-1", "i-2", "i-3"],
            "one 2-cpu machine per 1.5-cpu pod"
        );
        let keys = s.keys_seen.lock().unwrap().clone().unwrap();
        assert_eq!(keys.access_key_id, "AKID");
        let commands: Vec<_> = s
            .cloud
            .machines
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.join_command.clone().unwrap())
            .collect();
        assert_eq!(
            commands,
            [
                "wharf join --pool burst --token t1",
                "wharf join --pool burst --token t2",
                "wharf join --pool burst --token t3"
            ],
            "each machine its own token"
        );
        {
            let reports = s.reports.lock().unwrap();
            assert_eq!(reports.len(), 1);
            assert_eq!(reports[0].action, PoolScaleAction::Up);
            assert_eq!(reports[0].machines, ["i-1", "i-2", "i-3"]);
        }
        // The machines on their way hold the pods: nothing more is made.
        s.autoscaler.pass().await.unwrap();
        assert_eq!(machine_ids(&s.cloud).len(), 3);
        // Once they joined, still initializing, they still do.
        for id in ["i-1", "i-2", "i-3"] {
            joined(&s.objects, id).await;
        }
        s.autoscaler.pass().await.unwrap();
        assert_eq!(machine_ids(&s.cloud).len(), 3);
        let (events, _) = s
            .objects
            .list::<wharf_api::Event>(Some("shop"), None)
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .filter(|e| e.reason == "TriggeredScaleUp")
                .count()
                >= 3,
            "each pod is told"
        );
    }

    #[tokio::test]
    async fn unused_machines_go_down_to_the_minimum_but_never_with_pods() {
        let dir = tempfile::tempdir().unwrap();
        let s = setup(&dir, 1).await;
        let pods: Vec<Pod> = {
            let mut pods = Vec::new();
            for name in ["web-0", "web-1", "web-2"] {
                pods.push(waiting_pod(&s.objects, name).await);
            }
            pods
        };
        s.autoscaler.pass().await.unwrap();
        for id in ["i-1", "i-2", "i-3"] {
            joined(&s.objects, id).await;
        }
        // web-0 runs on i-2; the others were scaled away.
        s.objects.bind("i-2", &pods[..1]).await.unwrap();
        for pod in &pods[1..] {
            let name = &pod.metadata.name;
            s.objects
                .delete::<Pod>(Some("shop"), name, None)
                .await
                .unwrap();
        }
        // An agent that outlived its machine.
        joined(&s.objects, "i-99").await;
        s.autoscaler.pass().await.unwrap();
        assert_eq!(machine_ids(&s.cloud), ["i-2"], "the busy machine stays");
        let (nodes, _) = s.objects.list::<Node>(None, None).await.unwrap();
        let names: Vec<_> = nodes.iter().map(|n| n.metadata.name.as_str()).collect();
        assert_eq!(names, ["i-2"]);
        {
            let reports = s.reports.lock().unwrap();
            let actions: Vec<_> = reports.iter().map(|r| r.action.clone()).collect();
            assert_eq!(
                actions,
                [
                    PoolScaleAction::Up,
                    PoolScaleAction::Down,
                    PoolScaleAction::OrphanNodesRemoved
                ]
            );
            assert_eq!(reports[1].machines, ["i-1", "i-3"]);
        }
        // The removed nodes' credentials are revoked; the busy one's kept.
        let mut revoked = s.tokens.revoked.lock().unwrap().clone();
        revoked.sort();
        assert_eq!(revoked, ["i-1", "i-3", "i-99"]);
        // Idle now, but the pool keeps its minimum of one.
        s.objects
            .delete::<Pod>(Some("shop"), "web-0", None)
            .await
            .unwrap();
        s.autoscaler.pass().await.unwrap();
        assert_eq!(machine_ids(&s.cloud), ["i-2"]);
    }
}
