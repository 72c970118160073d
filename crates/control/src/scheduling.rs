//! The scheduling loop: places pending pods with the pure scheduler core
//! and binds them by compare-and-swap.
//!
//! One snapshot of the cluster lives here, patched from watch events, with
//! every bound pod assumed on its node. Pending pods are taken in batches:
//! each is placed against the snapshot (and assumed at once, so the next
//! pod of the batch sees it), then the batch's binds go to the store in
//! parallel, one transaction per node. A bind that loses its
//! compare-and-swap is forgotten and the pod tried again.
//!
//! A pod using PersistentVolumeClaims may go only to the node its claims
//! are bound to (a node restriction the scheduler core filters on); a pod
//! whose claims are unbound binds them, by compare-and-swap, to the node it
//! is placed on just before its own bind (`WaitForFirstConsumer`). A
//! missing claim, or a `ReadWriteOncePod` claim another pod holds, keeps
//! the pod Pending with the reason.
//!
//! A pod that takes its address from a pool is placed only while the pool
//! has an address for it (not held, and not promised to a pod bound
//! before it that has yet to claim one); otherwise it stays Pending with
//! the reason, instead of failing on its node after binding.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

use futures_util::StreamExt;
use futures_util::future::join_all;
use wharf_api::{
    ANNOTATION_SCHEDULING_SCORES, EventType, LABEL_TIER, Node, ObjectReference,
    PersistentVolumeClaim, Pod, PodPhase, Pool, PoolGrant,
};
use wharf_scheduler::{
    HostPort, NodeInfo, Placement, PodInfo, Resources, Scheduler, SchedulerConfig, Snapshot, Taint,
    TaintEffect, Toleration, TolerationOperator,
};

use crate::ControlError;
use crate::claims::uses_claim;
use crate::deployments::deployment_of;
use crate::events::EventRecorder;
use crate::image_layers::{CachedImageLayers, ImageLayers, Layer};
use crate::ipam::{PoolUse, asks_address, requested, requested_pool};
use crate::objects::{Change, Objects};
use crate::placement;
use crate::pods::BindOutcome;
use crate::queue::WorkQueue;

/// Pods placed per round before their binds go out together.
const BATCH: usize = 1024;
/// Pods bound per transaction.
const PODS_PER_BIND: usize = 40;
/// Pause before retrying pods whose bind lost a race.
const BIND_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How often unschedulable pods are tried again without a cluster change.
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(10);

type PodKey = (String, String);

/// The scheduler's view of the cluster.
struct State {
    snapshot: Snapshot,
    /// Bound (or being bound) pods and where: to forget them on deletion.
    placed: HashMap<PodKey, (String, PodInfo)>,
    /// Latest version of each pending pod.
    pending: HashMap<PodKey, Pod>,
    /// Pending pods that fit nowhere at their last try.
    unschedulable: HashSet<PodKey>,
    /// The pool each known pod names by annotation: bound ones are
    /// promised an address of it until they claim one.
    wants_pool: HashMap<PodKey, String>,
    /// Managed node pools and the grants on them, by name, as watched.
    pools: BTreeMap<String, Pool>,
    grants: BTreeMap<String, PoolGrant>,
}

/// What one scheduling batch decided, for the server's `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulingReport {
    /// Pods placed on a node.
    pub placed: usize,
    /// Pods that fit nowhere (or whose address or claim could not be had).
    pub unschedulable: usize,
    /// Time spent deciding, store reads included, binding not.
    pub elapsed: Duration,
}

/// Receives a [`SchedulingReport`] after every batch; must not block.
pub type SchedulingReporter = Arc<dyn Fn(SchedulingReport) + Send + Sync>;

/// Places pending pods on nodes.
pub struct SchedulingLoop {
    objects: Objects,
    scheduler: Scheduler,
    events: EventRecorder,
    state: Mutex<State>,
    queue: WorkQueue<PodKey>,
    /// Where pods' image layers come from; without it image locality is
    /// neutral.
    images: Option<CachedImageLayers>,
    reports: Option<SchedulingReporter>,
}

fn key_of(pod: &Pod) -> PodKey {
    (
        pod.metadata.project.clone().unwrap_or_default(),
        pod.metadata.name.clone(),
    )
}

/// Pods that hold their node's resources: bound and not finished.
fn occupies(pod: &Pod) -> bool {
    pod.spec.node_name.is_some()
}

impl SchedulingLoop {
    /// A loop over `objects` with scheduler settings `config`.
    pub fn new(objects: Objects, config: SchedulerConfig) -> Arc<SchedulingLoop> {
        SchedulingLoop::with_images(objects, config, None)
    }

    /// [`new`](SchedulingLoop::new), learning the layers of pods' images
    /// from `images` for image locality.
    pub fn with_images(
        objects: Objects,
        config: SchedulerConfig,
        images: Option<Arc<dyn ImageLayers>>,
    ) -> Arc<SchedulingLoop> {
        SchedulingLoop::reporting(objects, config, images, None)
    }

    /// [`with_images`](SchedulingLoop::with_images), also telling
    /// `reports` what each batch decided.
    pub fn reporting(
        objects: Objects,
        config: SchedulerConfig,
        images: Option<Arc<dyn ImageLayers>>,
        reports: Option<SchedulingReporter>,
    ) -> Arc<SchedulingLoop> {
        Arc::new(SchedulingLoop {
            images: images.map(CachedImageLayers::new),
            reports,
            events: EventRecorder::new(objects.clone(), "scheduler"),
            objects,
            scheduler: Scheduler::new(config),
            state: Mutex::new(State {
                snapshot: Snapshot::new(),
                placed: HashMap::new(),
                pending: HashMap::new(),
                unschedulable: HashSet::new(),
                wants_pool: HashMap::new(),
                pools: BTreeMap::new(),
                grants: BTreeMap::new(),
            }),
            queue: WorkQueue::new(),
        })
    }

    /// Runs until dropped.
    pub async fn run(self: Arc<Self>) {
        let retry = tokio::spawn(self.clone().retry_unschedulable());
        let _stop_retry = AbortOnDropHandle::new(retry);
        loop {
            let follower = AbortOnDropHandle::new(tokio::spawn(self.clone().follow_cluster()));
            let _worker = AbortOnDropHandle::new(tokio::spawn(self.clone().schedule_forever()));
            match follower.await {
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "scheduler lost its watch; rebuilding")
                }
                Ok(Ok(())) => tracing::warn!("scheduler watch ended; rebuilding"),
                Err(_) => return,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Loads the cluster, then applies every change to the snapshot.
    async fn follow_cluster(self: Arc<Self>) -> Result<(), ControlError> {
        let (nodes, node_revision) = self.objects.list::<Node>(None, None).await?;
        let (pods, pod_revision) = self.objects.list::<Pod>(None, None).await?;
        let (pools, pool_revision) = self.objects.list::<Pool>(None, None).await?;
        let (grants, grant_revision) = self.objects.list::<PoolGrant>(None, None).await?;
        {
            let mut state = self.state.lock().expect("scheduler state");
            state.snapshot = Snapshot::from_nodes(nodes.iter().map(node_info));
            state.pools = pools
                .into_iter()
                .map(|p| (p.metadata.name.clone(), p))
                .collect();
            state.grants = grants
                .into_iter()
                .map(|g| (g.metadata.name.clone(), g))
                .collect();
            refresh_pool_access(&mut state);
            state.placed.clear();
            state.pending.clear();
            state.unschedulable.clear();
            for pod in pods {
                self.observe_pod(&mut state, pod);
            }
        }
        let mut node_changes = Box::pin(self.objects.watch::<Node>(None, node_revision + 1).await?);
        let mut pod_changes = Box::pin(self.objects.watch::<Pod>(None, pod_revision + 1).await?);
        let mut pool_changes = Box::pin(self.objects.watch::<Pool>(None, pool_revision + 1).await?);
        let mut grant_changes = Box::pin(
            self.objects
                .watch::<PoolGrant>(None, grant_revision + 1)
                .await?,
        );
        loop {
            tokio::select! {
                change = pool_changes.next() => match change {
                    Some(change) => self.observe_access_change(|state| {
                        apply_change(&mut state.pools, change?);
                        Ok(())
                    })?,
                    None => return Ok(()),
                },
                change = grant_changes.next() => match change {
                    Some(change) => self.observe_access_change(|state| {
                        apply_change(&mut state.grants, change?);
                        Ok(())
                    })?,
                    None => return Ok(()),
                },
                change = node_changes.next() => match change {
                    Some(change) => self.observe_node_change(change?),
                    None => return Ok(()),
                },
                change = pod_changes.next() => match change {
                    Some(change) => self.observe_pod_change(change?),
                    None => return Ok(()),
                },
            }
        }
    }

    /// Applies a change of pools or grants and tries waiting pods again:
    /// a new grant may admit them.
    fn observe_access_change(
        &self,
        apply: impl FnOnce(&mut State) -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        let mut state = self.state.lock().expect("scheduler state");
        apply(&mut state)?;
        refresh_pool_access(&mut state);
        self.requeue_unschedulable(&mut state);
        Ok(())
    }

    fn observe_node_change(&self, change: Change<Node>) {
        let mut state = self.state.lock().expect("scheduler state");
        match change {
            Change::Added(node) | Change::Modified(node) => {
                state.snapshot.upsert_node(node_info(&node));
            }
            Change::Deleted { name, .. } => {
                state.snapshot.remove_node(&name);
                state.placed.retain(|_, (node, _)| *node != name);
            }
        }
        self.requeue_unschedulable(&mut state);
    }

    fn observe_pod_change(&self, change: Change<Pod>) {
        let mut state = self.state.lock().expect("scheduler state");
        match change {
            Change::Added(pod) | Change::Modified(pod) => self.observe_pod(&mut state, pod),
            Change::Deleted { project, name, .. } => {
                let key = (project.unwrap_or_default(), name);
                state.wants_pool.remove(&key);
                state.pending.remove(&key);
                state.unschedulable.remove(&key);
                if let Some((node, info)) = state.placed.remove(&key) {
                    if let Some(id) = state.snapshot.node_id(&node) {
                        let _ = state.snapshot.forget(id, &info);
                    }
                    // Room was freed: pods waiting for it may fit now.
                    self.requeue_unschedulable(&mut state);
                }
            }
        }
    }

    /// Records a pod: bound ones count on their node, pending ones queue.
    fn observe_pod(&self, state: &mut State, pod: Pod) {
        let key = key_of(&pod);
        match requested(&pod) {
            Ok((Some(pool), _)) => state.wants_pool.insert(key.clone(), pool),
            _ => state.wants_pool.remove(&key),
        };
        if occupies(&pod) {
            state.pending.remove(&key);
            state.unschedulable.remove(&key);
            let node = pod.spec.node_name.clone().unwrap_or_default();
            match state.placed.get(&key) {
                Some((assumed_on, _)) if *assumed_on == node => return,
                // Another scheduler bound it elsewhere: count it where it is.
                Some(_) => {
                    if let Some((assumed_on, info)) = state.placed.remove(&key)
                        && let Some(id) = state.snapshot.node_id(&assumed_on)
                    {
                        let _ = state.snapshot.forget(id, &info);
                    }
                }
                None => {}
            }
            if let (Some(info), Some(id)) = (pod_info(&pod), state.snapshot.node_id(&node))
                && state.snapshot.assume(id, &info).is_ok()
            {
                state.placed.insert(key, (node, info));
            }
        } else if pod.status.phase == PodPhase::Pending {
            let waiting = state.unschedulable.contains(&key);
            state.pending.insert(key.clone(), pod);
            if !waiting {
                self.queue.add(key);
            }
        }
    }

    fn requeue_unschedulable(&self, state: &mut State) {
        for key in state.unschedulable.drain() {
            self.queue.add(key);
        }
    }

    async fn retry_unschedulable(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(RETRY_UNSCHEDULABLE);
        loop {
            ticker.tick().await;
            let mut state = self.state.lock().expect("scheduler state");
            self.requeue_unschedulable(&mut state);
        }
    }

    async fn schedule_forever(self: Arc<Self>) -> Result<(), ControlError> {
        loop {
            let keys = self.queue.take(BATCH).await;
            self.schedule_batch(keys).await;
        }
    }

    /// Places a batch against the snapshot, then binds it.
    async fn schedule_batch(&self, keys: Vec<PodKey>) {
        let started = std::time::Instant::now();
        let mut by_node: BTreeMap<String, Vec<(Pod, PodInfo)>> = BTreeMap::new();
        let mut refused = Vec::new();
        let (addresses, pools) = self.addresses_asked(&keys).await;
        let mut claims = self.claims_asked(&keys).await;
        let mut layers = self.layers_asked(&keys).await;
        {
            let mut state = self.state.lock().expect("scheduler state");
            let mut room = AddressRoom::new(pools, &state);
            for key in keys {
                let Some(mut pod) = state.pending.get(&key).cloned() else {
                    continue;
                };
                let Some(mut info) = pod_info(&pod) else {
                    refused.push((pod, "the pod's resources cannot be read".to_string()));
                    continue;
                };
                let address = addresses.get(&key);
                let checked = room
                    .check(address, &key)
                    .and_then(|()| claims.required_node(&key));
                let required = match checked {
                    Ok(required) => required,
                    Err(message) => {
                        state.unschedulable.insert(key);
                        refused.push((pod, message));
                        continue;
                    }
                };
                info.required_node = required.as_ref().map(|(_, node)| node.clone());
                info.layers = layers.remove(&key).flatten();
                match self.scheduler.schedule(&mut state.snapshot, &info) {
                    Ok(placement) => {
                        let explanation = self.explain(&placement);
                        let explanation = match placement::preferred_tier(&pod) {
                            Some(tier) => tier_note(&state.snapshot, &placement, tier, explanation),
                            None => explanation,
                        };
                        pod.metadata
                            .annotations
                            .insert(ANNOTATION_SCHEDULING_SCORES.into(), explanation);
                        let assumed = state.snapshot.assume(placement.node, &info);
                        if assumed.is_ok() {
                            room.take(address, &key);
                            claims.take(&key, &placement.node_name);
                            state
                                .placed
                                .insert(key.clone(), (placement.node_name.clone(), info.clone()));
                            by_node
                                .entry(placement.node_name)
                                .or_default()
                                .push((pod, info));
                        }
                    }
                    Err(unschedulable) => {
                        let message = match required {
                            Some((claim, node)) if state.snapshot.node_id(&node).is_none() => {
                                format!(
                                    "persistentvolumeclaim {claim:?} is bound to node {node}, \
                                     which is not in the cluster"
                                )
                            }
                            Some((claim, node)) => format!(
                                "persistentvolumeclaim {claim:?} is bound to node {node}: {}",
                                unschedulable.message
                            ),
                            None => unschedulable.message,
                        };
                        state.unschedulable.insert(key);
                        refused.push((pod, message));
                    }
                }
            }
        }
        if let Some(reports) = &self.reports {
            reports(SchedulingReport {
                placed: by_node.values().map(Vec::len).sum(),
                unschedulable: refused.len(),
                elapsed: started.elapsed(),
            });
        }
        let binds = by_node
            .into_iter()
            .map(|(node, pods)| self.bind(node, pods));
        join_all(binds).await;
        join_all(
            refused
                .into_iter()
                .map(|(pod, message)| self.report_unschedulable(pod, message)),
        )
        .await;
    }

    /// Why the pod went where it did, for `describe pod`: the node, its
    /// weighted mean score and each score.
    fn explain(&self, placement: &Placement) -> String {
        format!(
            "{} scored {:.1}, best of {} feasible nodes: {}",
            placement.node_name,
            placement.score,
            placement.feasible_nodes,
            placement.scores.describe(&self.scheduler.config().weights)
        )
    }

    /// The layers of each pod's images, where they are known.
    async fn layers_asked(&self, keys: &[PodKey]) -> HashMap<PodKey, Option<Vec<Layer>>> {
        let Some(images) = &self.images else {
            return HashMap::new();
        };
        let pods: Vec<(PodKey, Vec<String>)> = {
            let state = self.state.lock().expect("scheduler state");
            keys.iter()
                .filter_map(|key| {
                    let pod = state.pending.get(key)?;
                    let images = pod.spec.containers.iter().map(|c| c.image.clone());
                    Some((key.clone(), images.collect()))
                })
                .collect()
        };
        let mut layers = HashMap::new();
        for (key, references) in pods {
            layers.insert(key, images.pod_layers(&references).await);
        }
        layers
    }

    /// The pool (and fixed address) each pod of the batch takes its address
    /// from, and the use of those pools, read from the store. Failures are
    /// kept as messages: such a pod waits with the reason.
    async fn addresses_asked(
        &self,
        keys: &[PodKey],
    ) -> (
        HashMap<PodKey, Asked>,
        HashMap<String, Result<PoolUse, String>>,
    ) {
        let pods: Vec<(PodKey, Pod)> = {
            let state = self.state.lock().expect("scheduler state");
            keys.iter()
                .filter_map(|key| Some((key.clone(), state.pending.get(key)?.clone())))
                .filter(|(_, pod)| asks_address(pod))
                .collect()
        };
        let mut asked = HashMap::new();
        let mut pools = HashMap::new();
        for (key, pod) in pods {
            let request = match requested_pool(&self.objects, &pod).await {
                Ok(Some(request)) => Ok(request),
                Ok(None) => continue,
                Err(err) => Err(err.to_string()),
            };
            if let Ok((pool, _)) = &request
                && !pools.contains_key(pool)
            {
                let found = self.objects.pool_use(pool).await.map_err(|err| match err {
                    ControlError::NotFound { .. } => format!("IP pool {pool} does not exist"),
                    other => format!("IP pool {pool}: {other}"),
                });
                pools.insert(pool.clone(), found);
            }
            asked.insert(key, request);
        }
        (asked, pools)
    }

    /// The claims each pod of the batch uses, read from the store, with
    /// the pods holding its `ReadWriteOncePod` claims.
    async fn claims_asked(&self, keys: &[PodKey]) -> ClaimRoom {
        let pods: Vec<(PodKey, Pod)> = {
            let state = self.state.lock().expect("scheduler state");
            keys.iter()
                .filter_map(|key| Some((key.clone(), state.pending.get(key)?.clone())))
                .filter(|(_, pod)| !pod.spec.claim_names().is_empty())
                .collect()
        };
        let mut room = ClaimRoom::default();
        for (key, pod) in pods {
            let asked = self.read_claims(&key.0, &pod).await;
            room.asked.insert(key, asked);
        }
        room
    }

    /// The claims `pod` (of `project`) uses, or why it cannot have them.
    async fn read_claims(&self, project: &str, pod: &Pod) -> Result<Vec<AskedClaim>, String> {
        let mut claims = Vec::new();
        for name in pod.spec.claim_names() {
            let found = self
                .objects
                .get::<PersistentVolumeClaim>(Some(project), name)
                .await
                .map_err(|err| format!("persistentvolumeclaim {name:?}: {err}"))?;
            let claim = found.ok_or_else(|| format!("persistentvolumeclaim {name:?} not found"))?;
            if claim.metadata.is_terminating() {
                return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
            }
            if claim.one_pod_only() {
                let users = self
                    .objects
                    .claim_users(project, name)
                    .await
                    .map_err(|err| format!("persistentvolumeclaim {name:?}: {err}"))?;
                if let Some(holder) = users.iter().find(|p| {
                    p.metadata.uid != pod.metadata.uid
                        && p.spec.node_name.is_some()
                        && uses_claim(p, name)
                }) {
                    return Err(format!(
                        "persistentvolumeclaim {name:?} is ReadWriteOncePod and pod {} uses it",
                        holder.metadata.name
                    ));
                }
            }
            claims.push(AskedClaim {
                name: name.to_string(),
                node: claim.bound_node().map(str::to_string),
                one_pod_only: claim.one_pod_only(),
            });
        }
        Ok(claims)
    }

    /// Binds the unbound claims of each pod to `node` (compare-and-swap on
    /// each claim); returns the pods whose claims are all on `node` now,
    /// and those that lost a claim to another node (or could not bind it).
    async fn bind_claims(
        &self,
        node: &str,
        pods: Vec<(Pod, PodInfo)>,
    ) -> (Vec<(Pod, PodInfo)>, Vec<(Pod, PodInfo)>) {
        let (mut ready, mut lost) = (Vec::new(), Vec::new());
        for (pod, info) in pods {
            let project = pod.metadata.project.clone().unwrap_or_default();
            let mut all_here = true;
            for name in pod.spec.claim_names() {
                match self.objects.bind_claim(&project, name, node).await {
                    Ok(bound) if bound == node => {}
                    Ok(bound) => {
                        tracing::info!(project, claim = name, node, bound, "claim bound elsewhere");
                        all_here = false;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, project, claim = name, "claim not bound");
                        all_here = false;
                    }
                }
            }
            if all_here {
                ready.push((pod, info));
            } else {
                lost.push((pod, info));
            }
        }
        (ready, lost)
    }

    /// Binds one node's share of a batch, in transactions small enough for
    /// etcd (two operations per pod, at most 128 per transaction). The
    /// chunks go one after another: they all rewrite the node's allocation.
    async fn bind(&self, node: String, mut pods: Vec<(Pod, PodInfo)>) {
        while !pods.is_empty() {
            let rest = pods.split_off(pods.len().min(PODS_PER_BIND));
            self.bind_chunk(&node, pods).await;
            pods = rest;
        }
    }

    async fn bind_chunk(&self, node: &str, pods: Vec<(Pod, PodInfo)>) {
        let node = node.to_string();
        let (pods, lost) = self.bind_claims(&node, pods).await;
        if !lost.is_empty() {
            self.retry_binds(&node, lost).await;
        }
        if pods.is_empty() {
            return;
        }
        let objects: Vec<Pod> = pods.iter().map(|(pod, _)| pod.clone()).collect();
        let outcome = self.objects.bind(&node, &objects).await;
        if matches!(outcome, Ok(BindOutcome::Bound)) {
            return;
        }
        if let Err(err) = &outcome {
            tracing::warn!(error = %err, node, "bind failed");
        }
        self.retry_binds(&node, pods).await;
    }

    /// Takes back the assumption of pods whose bind to `node` did not
    /// happen and queues them again.
    async fn retry_binds(&self, node: &str, pods: Vec<(Pod, PodInfo)>) {
        // Lost a race (or the node filled up elsewhere): take the
        // assumption back and try these pods again once the watch has
        // caught the snapshot up, not at once, which would spin.
        let mut retry = Vec::new();
        {
            let mut state = self.state.lock().expect("scheduler state");
            for (pod, info) in pods {
                let key = key_of(&pod);
                if state
                    .placed
                    .get(&key)
                    .is_some_and(|(assumed_on, _)| *assumed_on == node)
                {
                    state.placed.remove(&key);
                    if let Some(id) = state.snapshot.node_id(node) {
                        let _ = state.snapshot.forget(id, &info);
                    }
                }
                retry.push(key);
            }
        }
        tokio::time::sleep(BIND_RETRY_DELAY).await;
        for key in retry {
            self.queue.add(key);
        }
    }

    /// Says why a pod waits, on the pod and as an event.
    async fn report_unschedulable(&self, pod: Pod, message: String) {
        let (project, name) = key_of(&pod);
        let changed = pod.status.reason.as_deref() != Some("Unschedulable")
            || pod.status.message.as_deref() != Some(&message);
        if changed {
            let result = self
                .objects
                .modify::<Pod>(Some(&project), &name, |p| {
                    if p.spec.node_name.is_some() {
                        return false;
                    }
                    p.status.reason = Some("Unschedulable".into());
                    p.status.message = Some(message.clone());
                    true
                })
                .await;
            if let Err(err) = result {
                tracing::debug!(error = %err, project, name, "could not record why a pod waits");
            }
        }
        let reference = ObjectReference {
            kind: "Pod".into(),
            project: Some(project),
            name,
            uid: pod.metadata.uid.clone(),
        };
        self.events
            .record(&reference, EventType::Warning, "FailedScheduling", &message)
            .await;
    }

    /// Pods waiting for a node right now (for tests and status).
    pub fn pending(&self) -> usize {
        self.state.lock().expect("scheduler state").pending.len()
    }
}

/// The explanation of a pod that prefers `tier`, saying so when it went
/// elsewhere: its weight outweighs every other score, so only a tier with
/// no feasible node (full, cordoned, not granted) sends it elsewhere.
fn tier_note(
    snapshot: &Snapshot,
    placement: &Placement,
    tier: wharf_api::Tier,
    explanation: String,
) -> String {
    let landed = snapshot
        .node(placement.node)
        .and_then(|node| node.labels.get(LABEL_TIER))
        .map_or("no tier", String::as_str);
    if landed == tier.as_str() {
        return explanation;
    }
    format!(
        "preferred tier {} has no room: placed on {landed}; {explanation}",
        tier.as_str()
    )
}

/// Gives the snapshot the pools and grants last watched.
fn refresh_pool_access(state: &mut State) {
    let access = placement::pool_access(state.pools.values(), state.grants.values());
    state.snapshot.set_pool_access(access);
}

/// Keeps `objects` (by name) up to date with one watched change.
fn apply_change<T>(objects: &mut BTreeMap<String, T>, change: Change<T>)
where
    T: crate::Object,
{
    match change {
        Change::Added(object) | Change::Modified(object) => {
            objects.insert(object.metadata().name.clone(), object);
        }
        Change::Deleted { name, .. } => {
            objects.remove(&name);
        }
    }
}

/// What the scheduler core needs of a node.
pub fn node_info(node: &Node) -> NodeInfo {
    let capacity = node.status.capacity;
    let mut info = NodeInfo::new(
        node.metadata.name.clone(),
        Resources::new(capacity.cpu_millis, capacity.memory_bytes, capacity.pods),
    );
    info.ready = node.status.ready;
    info.schedulable = !node.spec.unschedulable;
    info.labels = node.metadata.labels.clone();
    info.taints = node.spec.taints.iter().map(scheduler_taint).collect();
    info.layers = node
        .status
        .layers
        .as_ref()
        .map(|layers| layers.iter().map(|l| l.digest.clone()).collect());
    info.load = node.status.cpu_load;
    info.load_average = node.status.load_average;
    info
}

/// A node's taint as the scheduler core matches it.
pub(crate) fn scheduler_taint(taint: &wharf_api::Taint) -> Taint {
    Taint::new(
        taint.key.clone(),
        taint.value.clone(),
        taint_effect(taint.effect),
    )
}

/// A pod's toleration as the scheduler core matches it.
pub(crate) fn scheduler_toleration(toleration: &wharf_api::Toleration) -> Toleration {
    Toleration {
        key: toleration.key.clone(),
        operator: match toleration.operator {
            wharf_api::TolerationOperator::Equal => TolerationOperator::Equal,
            wharf_api::TolerationOperator::Exists => TolerationOperator::Exists,
        },
        value: toleration.value.clone().unwrap_or_default(),
        effect: toleration.effect.map(taint_effect),
    }
}

fn taint_effect(effect: wharf_api::TaintEffect) -> TaintEffect {
    match effect {
        wharf_api::TaintEffect::NoSchedule => TaintEffect::NoSchedule,
        wharf_api::TaintEffect::PreferNoSchedule => TaintEffect::PreferNoSchedule,
        wharf_api::TaintEffect::NoExecute => TaintEffect::NoExecute,
    }
}

/// What the scheduler core needs of a pod; `None` if its resources are unreadable.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let requests = pod.spec.requests().ok()?;
    let mut info = PodInfo::new(requests.cpu_millis, requests.memory_bytes);
    info.node_selector = placement::node_selector(pod);
    info.affinity = placement::node_affinity(pod);
    info.project = pod.metadata.project.clone();
    info.tolerations = pod
        .spec
        .tolerations
        .iter()
        .map(scheduler_toleration)
        .collect();
    info.host_ports = pod
        .spec
        .host_ports()
        .into_iter()
        .map(|(protocol, port)| HostPort {
            protocol: match protocol {
                wharf_api::Protocol::Tcp => wharf_scheduler::Protocol::Tcp,
                wharf_api::Protocol::Udp => wharf_scheduler::Protocol::Udp,
                wharf_api::Protocol::Sctp => wharf_scheduler::Protocol::Sctp,
            },
            port,
        })
        .collect();
    info.owner = deployment_of(pod).map(|d| {
        format!(
            "{}/{d}",
            pod.metadata.project.as_deref().unwrap_or_default()
        )
    });
    info.critical = pod.spec.is_critical(&pod.metadata.annotations);
    Some(info)
}

/// A claim a pending pod uses, as read before its batch is placed.
struct AskedClaim {
    name: String,
    /// The node it is bound to, if it is.
    node: Option<String>,
    one_pod_only: bool,
}

/// The claims of one batch: where each pod's claims confine it, and the
/// claims pods placed earlier in the batch took (bound to their node, or
/// held as `ReadWriteOncePod`) before their binds reach the store.
#[derive(Default)]
struct ClaimRoom {
    asked: HashMap<PodKey, Result<Vec<AskedClaim>, String>>,
    /// `(project, claim)` to the node a pod of this batch was placed on.
    placed: HashMap<(String, String), String>,
}

impl ClaimRoom {
    /// The claim that confines the pod and its node, if one does; `Err`
    /// says why the pod cannot be placed now.
    fn required_node(&self, key: &PodKey) -> Result<Option<(String, String)>, String> {
        let Some(asked) = self.asked.get(key) else {
            return Ok(None);
        };
        let mut required: Option<(String, String)> = None;
        for claim in asked.as_ref().map_err(Clone::clone)? {
            let placed = self.placed.get(&(key.0.clone(), claim.name.clone()));
            if claim.one_pod_only && placed.is_some() {
                return Err(format!(
                    "persistentvolumeclaim {:?} is ReadWriteOncePod and another pod takes it",
                    claim.name
                ));
            }
            let Some(node) = claim.node.as_ref().or(placed) else {
                continue;
            };
            match &required {
                Some((other, at)) if at != node => {
                    return Err(format!(
                        "persistentvolumeclaims {other:?} and {:?} are bound to different nodes \
                         ({at} and {node})",
                        claim.name
                    ));
                }
                Some(_) => {}
                None => required = Some((claim.name.clone(), node.clone())),
            }
        }
        Ok(required)
    }

    /// Counts the pod's claims as taken on `node`.
    fn take(&mut self, key: &PodKey, node: &str) {
        if let Some(Ok(claims)) = self.asked.get(key) {
            for claim in claims {
                self.placed
                    .insert((key.0.clone(), claim.name.clone()), node.to_string());
            }
        }
    }
}

/// What a pod asks of a pool: its name and maybe a fixed address, or why
/// that cannot be read.
type Asked = Result<(String, Option<Ipv4Addr>), String>;

/// The addresses pools can still give to the pods of one batch: the pool's
/// size less the addresses held and those promised to bound pods that have
/// yet to claim theirs; each pod placed takes one.
struct AddressRoom {
    pools: HashMap<String, Result<PoolUse, String>>,
    /// Per pool, the pods holding or promised an address of it.
    takers: HashMap<String, HashSet<PodKey>>,
}

impl AddressRoom {
    fn new(pools: HashMap<String, Result<PoolUse, String>>, state: &State) -> AddressRoom {
        let mut takers: HashMap<String, HashSet<PodKey>> = HashMap::new();
        for (pool, found) in &pools {
            let holders = found.iter().flat_map(|use_| use_.holders.values().cloned());
            let promised = state
                .placed
                .keys()
                .filter(|key| state.wants_pool.get(*key) == Some(pool))
                .cloned();
            takers.insert(pool.clone(), holders.chain(promised).collect());
        }
        AddressRoom { pools, takers }
    }

    /// Why the pod cannot get an address now, if it cannot.
    fn check(&self, asked: Option<&Asked>, key: &PodKey) -> Result<(), String> {
        let Some(asked) = asked else {
            return Ok(());
        };
        let (pool, fixed) = asked.as_ref().map_err(Clone::clone)?;
        let found = self.pools[pool].as_ref().map_err(Clone::clone)?;
        let takers = &self.takers[pool];
        if let Some(ip) = fixed
            && let Some(holder) = found.holders.get(ip)
            && holder != key
        {
            return Err(format!(
                "{ip} of pool {pool} is held by pod {}/{}",
                holder.0, holder.1
            ));
        }
        if !takers.contains(key) && takers.len() as u64 >= found.size {
            return Err(format!(
                "pool {pool} has no free address: all {} are held or promised to bound pods",
                found.size
            ));
        }
        Ok(())
    }

    /// Counts the pod as promised an address of its pool.
    fn take(&mut self, asked: Option<&Asked>, key: &PodKey) {
        if let Some(Ok((pool, _))) = asked
            && let Some(takers) = self.takers.get_mut(pool)
        {
            takers.insert(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preferred_tier_placed_elsewhere_is_named_in_the_explanation() {
        let node = |name: &str, tier: &str| {
            NodeInfo::new(name, Resources::new(1000, 1 << 30, 10)).with_label(LABEL_TIER, tier)
        };
        let mut snapshot = Snapshot::from_nodes([node("old", "batch"), node("new", "core")]);
        let placement = Scheduler::default()
            .schedule(&mut snapshot, &PodInfo::new(100, 1 << 20))
            .unwrap();
        let id = |name| snapshot.node_id(name).unwrap();
        let on = |node| Placement {
            node: id(node),
            ..placement.clone()
        };
        let core = wharf_api::Tier::Core;
        assert_eq!(
            tier_note(&snapshot, &on("old"), core, "scores".into()),
            "preferred tier core has no room: placed on batch; scores"
        );
        assert_eq!(
            tier_note(&snapshot, &on("new"), core, "scores".into()),
            "scores"
        );
    }

    fn key(name: &str) -> PodKey {
        ("shop".into(), name.into())
    }

    fn asked(name: &str, node: Option<&str>, one_pod_only: bool) -> AskedClaim {
        AskedClaim {
            name: name.into(),
            node: node.map(str::to_string),
            one_pod_only,
        }
    }

    #[test]
    fn claims_confine_pods_to_their_node_within_a_batch() {
        let mut room = ClaimRoom::default();
        room.asked
            .insert(key("a"), Ok(vec![asked("data", None, false)]));
        room.asked
            .insert(key("b"), Ok(vec![asked("data", None, false)]));
        room.asked
            .insert(key("c"), Ok(vec![asked("logs", Some("n2"), false)]));
        room.asked.insert(
            key("d"),
            Ok(vec![
                asked("logs", Some("n2"), false),
                asked("old", Some("n1"), false),
            ]),
        );
        room.asked.insert(
            key("e"),
            Err("persistentvolumeclaim \"x\" not found".into()),
        );
        assert_eq!(room.required_node(&key("none")), Ok(None));
        assert_eq!(room.required_node(&key("a")), Ok(None), "unbound: anywhere");
        room.take(&key("a"), "n3");
        assert_eq!(
            room.required_node(&key("b")),
            Ok(Some(("data".into(), "n3".into()))),
            "where the batch's first pod of the claim went"
        );
        assert_eq!(
            room.required_node(&key("c")),
            Ok(Some(("logs".into(), "n2".into())))
        );
        let split = room.required_node(&key("d")).unwrap_err();
        assert!(split.contains("different nodes"), "{split}");
        let missing = room.required_node(&key("e")).unwrap_err();
        assert!(missing.contains("not found"), "{missing}");
    }

    #[test]
    fn a_read_write_once_pod_claim_takes_one_pod_of_a_batch() {
        let mut room = ClaimRoom::default();
        for name in ["a", "b"] {
            room.asked
                .insert(key(name), Ok(vec![asked("solo", None, true)]));
        }
        assert_eq!(room.required_node(&key("a")), Ok(None));
        room.take(&key("a"), "n1");
        let held = room.required_node(&key("b")).unwrap_err();
        assert!(
            held.contains("\"solo\"") && held.contains("ReadWriteOncePod"),
            "{held}"
        );
    }
}
