//! The deployment controller: keeps each deployment's replica count of pods
//! of its current template, and its status current.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

use futures_util::StreamExt;
use futures_util::future::join_all;
use wharf_api::component_commit::{ANNOTATION_COMMIT_HOLD, ANNOTATION_COMMIT_REPLICAS};
use wharf_api::rollout::DEFAULT_PROGRESS_DEADLINE_SECONDS;
use wharf_api::{
    ANNOTATION_FIXED_IP, ANNOTATION_FIXED_IPS, ANNOTATION_REVISION, ContainerState, Deployment,
    DeploymentStatus, EventType, ObjectMeta, ObjectReference, OwnerReference, Pod, PodPhase,
    PodSpec, PodStatus, RolloutStrategy,
};

use crate::ControlError;
use crate::events::EventRecorder;
use crate::objects::{Change, Objects, now_millis};
use crate::queue::WorkQueue;
use crate::revisions;
#[cfg(test)]
use crate::revisions::revisions_of;
use crate::rollout::{Census, next_step};
#[cfg(test)]
use crate::rollout_status::{
    NEW_REPLICA_SET_AVAILABLE, PROGRESS_DEADLINE_EXCEEDED, REPLICA_SET_UPDATED,
};
use crate::rollout_status::{Progress, conditions, deadline_at};
use crate::termination::PodDeletion;
#[cfg(test)]
use wharf_api::ANNOTATION_CHANGE_CAUSE;

/// Label carrying the hash of the template a pod was made from.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// How often every deployment is reconciled even without changes.
const RESYNC: Duration = Duration::from_secs(30);
/// Surplus and orphaned pods stop within their own grace period.
const GRACEFUL: PodDeletion = PodDeletion::Graceful(None);
/// Pod writes in flight at once per reconciliation.
const PARALLEL_WRITES: usize = 256;

type Key = (String, String);
/// The time in unix milliseconds; tests pass their own.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Reconciles deployments into pods, rolling templates out as their
/// strategy says.
pub struct DeploymentController {
    objects: Objects,
    events: EventRecorder,
    queue: WorkQueue<Key>,
    clock: Clock,
    /// Per deployment: pod uid -> when it was first seen ready.
    ready_since: Mutex<HashMap<Key, HashMap<String, u64>>>,
    /// Per deployment: the earliest reconcile already scheduled.
    wakeups: Mutex<HashMap<Key, tokio::time::Instant>>,
}

impl DeploymentController {
    /// A controller over `objects`.
    pub fn new(objects: Objects) -> Arc<DeploymentController> {
        DeploymentController::with_clock(objects, Arc::new(now_millis))
    }

    /// A controller over `objects` reading the time from `clock`.
    pub fn with_clock(objects: Objects, clock: Clock) -> Arc<DeploymentController> {
        Arc::new(DeploymentController {
            events: EventRecorder::new(objects.clone(), "deployment-controller"),
            objects,
            queue: WorkQueue::new(),
            clock,
            ready_since: Mutex::default(),
            wakeups: Mutex::default(),
        })
    }

    /// Runs until the task is dropped: watches deployments and pods,
    /// reconciles what changed, and everything every 30 s.
    pub async fn run(self: Arc<Self>) {
        let watchers = [
            tokio::spawn(self.clone().watch_deployments()),
            tokio::spawn(self.clone().watch_pods()),
            tokio::spawn(self.clone().resync()),
        ];
        let _abort = watchers.map(AbortOnDropHandle::new);
        loop {
            let keys = self.queue.take(64).await;
            let results = join_all(
                keys.iter()
                    .map(|(project, name)| self.reconcile_until(project, name)),
            )
            .await;
            for ((project, name), result) in keys.into_iter().zip(results) {
                if let Ok(Some(after)) = result {
                    self.clone().wake_after((project, name), after);
                } else if let Err(err) = result {
                    tracing::debug!(error = %err, project, name, "deployment reconcile failed; retrying");
                    let this = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        this.queue.add((project, name));
                    });
                }
            }
        }
    }

    /// Reconciles `key` again after `after`, unless a wake-up at least as
    /// early is already pending (a rollout asks on every pass).
    fn wake_after(self: Arc<Self>, key: Key, after: Duration) {
        let at = tokio::time::Instant::now() + after;
        {
            let mut pending = self.wakeups.lock().expect("not poisoned");
            let now = tokio::time::Instant::now();
            pending.retain(|_, when| *when > now);
            if pending.get(&key).is_some_and(|when| *when <= at) {
                return;
            }
            pending.insert(key.clone(), at);
        }
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            self.queue.add(key);
        });
    }

    async fn resync(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(RESYNC);
        loop {
            ticker.tick().await;
            match self.objects.list::<Deployment>(None, None).await {
                Ok((deployments, _)) => {
                    for d in deployments {
                        self.queue
                            .add((d.metadata.project.unwrap_or_default(), d.metadata.name));
                    }
                }
                Err(err) => tracing::warn!(error = %err, "listing deployments failed"),
            }
        }
    }

    async fn watch_deployments(self: Arc<Self>) {
        loop {
            let result: Result<(), ControlError> = async {
                let (deployments, revision) = self.objects.list::<Deployment>(None, None).await?;
                for d in deployments {
                    self.queue
                        .add((d.metadata.project.unwrap_or_default(), d.metadata.name));
                }
                let mut changes =
                    Box::pin(self.objects.watch::<Deployment>(None, revision + 1).await?);
                while let Some(change) = changes.next().await {
                    match change? {
                        Change::Added(d) | Change::Modified(d) => self
                            .queue
                            .add((d.metadata.project.unwrap_or_default(), d.metadata.name)),
                        Change::Deleted { project, name, .. } => {
                            self.queue.add((project.unwrap_or_default(), name))
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "deployment watch ended; restarting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn watch_pods(self: Arc<Self>) {
        loop {
            let result: Result<(), ControlError> = async {
                // Owners of the pods there are: a deployment deleted while no
                // controller ran (no leader yet, a restart) is seen by no
                // watch, and its pods would otherwise stay for ever.
                let (pods, revision) = self.objects.list::<Pod>(None, None).await?;
                for pod in pods {
                    if let Some(owner) = deployment_of(&pod) {
                        self.queue
                            .add((pod.metadata.project.unwrap_or_default(), owner));
                    }
                }
                let mut changes = Box::pin(self.objects.watch::<Pod>(None, revision + 1).await?);
                while let Some(change) = changes.next().await {
                    match change? {
                        Change::Added(pod) | Change::Modified(pod) => {
                            if let Some(owner) = deployment_of(&pod) {
                                self.queue
                                    .add((pod.metadata.project.unwrap_or_default(), owner));
                            }
                        }
                        // A deleted pod's owner is unknown here; the name says it.
                        Change::Deleted { project, name, .. } => {
                            if let Some(owner) = owner_from_pod_name(&name) {
                                self.queue.add((project.unwrap_or_default(), owner));
                            }
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "pod watch ended; restarting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Brings one deployment's pods and status to what its spec says.
    pub async fn reconcile(&self, project: &str, name: &str) -> Result<(), ControlError> {
        self.reconcile_until(project, name).await.map(drop)
    }

    /// [`Self::reconcile`], returning when the deployment needs another look
    /// even if nothing changes (a pod turning available, a deadline).
    async fn reconcile_until(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<Duration>, ControlError> {
        let key = (project.to_string(), name.to_string());
        let Some(deployment) = self.objects.get::<Deployment>(Some(project), name).await? else {
            self.ready_since.lock().expect("not poisoned").remove(&key);
            self.delete_orphans(project, name).await?;
            return Ok(None);
        };
        // Its pods' names start with its own: read only that key range.
        let (pods, _) = self
            .objects
            .list_named::<Pod>(
                Some(project),
                &format!("{name}-"),
                Some(&deployment.spec.selector),
            )
            .await?;
        let uid = &deployment.metadata.uid;
        let owned: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.metadata.owner_references.iter().any(|o| &o.uid == uid))
            .collect();
        let now = (self.clock)();
        let ready_since = self.track_readiness(key, &owned, now);
        let min_ready = u64::from(deployment.spec.min_ready_seconds.unwrap_or(0)) * 1000;
        let available = |p: &Pod| {
            ready_since
                .get(&p.metadata.uid)
                .is_some_and(|since| now >= since + min_ready)
        };

        let hash = template_hash(&deployment);
        let is_new = |p: &Pod| p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash);
        // A Terminating pod is on its way out: no replica, and not deleted again.
        let (terminating, live): (Vec<&Pod>, Vec<&Pod>) =
            owned.iter().partition(|p| p.metadata.is_terminating());
        let (new, old): (Vec<&Pod>, Vec<&Pod>) = live.into_iter().partition(|p| is_new(p));
        let census = Census {
            new,
            old,
            old_terminating: terminating.iter().filter(|p| !is_new(p)).count(),
        };
        let wanted = deployment.spec.replicas as usize;
        let strategy = effective_strategy(&deployment);
        let paused = deployment.spec.paused;
        let holding = paused && (!census.old.is_empty() || census.old_terminating > 0);

        let revision = if holding {
            None
        } else {
            let live_hashes: Vec<&str> = owned
                .iter()
                .filter_map(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL))
                .map(String::as_str)
                .collect();
            Some(revisions::record(&self.objects, &deployment, &hash, &live_hashes).await?)
        };

        let mut step = next_step(&census, wanted, strategy, paused, available);
        if held_by_commit(&deployment) {
            // The component flow picks which pod goes, one at a time.
            step.delete.clear();
        }
        let created = if step.create > 0 {
            self.create_pods(&deployment, &hash, step.create).await?
        } else {
            0
        };
        let deleted: Vec<Pod> = step.delete.iter().map(|p| (*p).clone()).collect();
        self.delete_pods(project, &deleted).await?;
        if created > 0 || !deleted.is_empty() {
            let message = format!(
                "{} to {} replicas (+{created}, -{})",
                deployment.metadata.name,
                wanted,
                deleted.len()
            );
            self.events
                .record(
                    &reference(&deployment),
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &message,
                )
                .await;
        }

        // What remains once the deleted pods go and the created ones come.
        let gone = |p: &&Pod| !deleted.iter().any(|d| d.metadata.uid == p.metadata.uid);
        let new: Vec<&Pod> = census.new.iter().copied().filter(gone).collect();
        let old: Vec<&Pod> = census.old.iter().copied().filter(gone).collect();
        let remaining = || new.iter().chain(&old);
        let updated = new.len() + created;
        let available_count = remaining().filter(|p| available(p)).count();
        let previous = &deployment.status;
        let deadline_ms = u64::from(
            deployment
                .spec
                .progress_deadline_seconds
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS),
        ) * 1000;
        let min_available = match strategy {
            RolloutStrategy::Recreate => wanted,
            RolloutStrategy::RollingUpdate {
                max_unavailable, ..
            } => wanted.saturating_sub(max_unavailable as usize),
        };
        let progress = Progress {
            revision_name: &format!("{name}-{hash}"),
            complete: updated == wanted
                && old.is_empty()
                && census.old_terminating == 0
                && new.iter().filter(|p| available(p)).count() == wanted,
            minimum_available: available_count >= min_available,
            paused,
            progressed: created > 0
                || !deleted.is_empty()
                || previous.observed_generation != deployment.metadata.generation
                || previous.updated_replicas as usize != updated
                || (previous.available_replicas as usize) < available_count,
            deadline_ms,
        };
        let status = DeploymentStatus {
            observed_generation: deployment.metadata.generation,
            replicas: (new.len() + old.len() + created) as u32,
            updated_replicas: updated as u32,
            scheduled_replicas: remaining().filter(|p| p.spec.node_name.is_some()).count() as u32,
            ready_replicas: remaining().filter(|p| is_ready(p)).count() as u32,
            available_replicas: available_count as u32,
            unavailable_replicas: wanted.saturating_sub(available_count) as u32,
            conditions: conditions(&previous.conditions, &progress, now),
        };
        let revision = revision.map(|r| r.to_string());
        let annotated = |d: &Deployment| {
            revision.is_none()
                || d.metadata.annotations.get(ANNOTATION_REVISION) == revision.as_ref()
        };
        if status != deployment.status || !annotated(&deployment) {
            self.objects
                .modify::<Deployment>(Some(project), name, |d| {
                    let changed = d.status != status || !annotated(d);
                    d.status = status.clone();
                    if let Some(revision) = &revision {
                        d.metadata
                            .annotations
                            .insert(ANNOTATION_REVISION.into(), revision.clone());
                    }
                    changed
                })
                .await?;
        }

        // Look again when a ready pod turns available, or the deadline passes.
        let turns_available = remaining()
            .filter_map(|p| ready_since.get(&p.metadata.uid))
            .map(|since| since + min_ready)
            .filter(|at| *at > now);
        let deadline = (!paused)
            .then(|| deadline_at(&status.conditions, deadline_ms))
            .flatten();
        let next = turns_available.chain(deadline).min();
        Ok(next.map(|at| Duration::from_millis(at.saturating_sub(now) + 50)))
    }

    /// When each ready pod of a deployment was first seen ready (now, for
    /// pods seen ready for the first time). Kept in memory: after a restart
    /// `minReadySeconds` counts again from the first look, which only delays.
    fn track_readiness(&self, key: Key, pods: &[Pod], now: u64) -> HashMap<String, u64> {
        let mut all = self.ready_since.lock().expect("not poisoned");
        let before = all.remove(&key).unwrap_or_default();
        let seen: HashMap<String, u64> = pods
            .iter()
            .filter(|p| is_ready(p) && !p.metadata.is_terminating())
            .map(|p| {
                let uid = p.metadata.uid.clone();
                let since = before.get(&uid).copied().unwrap_or(now);
                (uid, since)
            })
            .collect();
        all.insert(key, seen.clone());
        seen
    }

    async fn create_pods(
        &self,
        deployment: &Deployment,
        hash: &str,
        count: usize,
    ) -> Result<usize, ControlError> {
        let mut created = 0;
        let pods: Vec<Pod> = (0..count).map(|_| pod_for(deployment, hash)).collect();
        for chunk in pods.chunks(PARALLEL_WRITES) {
            for result in join_all(chunk.iter().cloned().map(|pod| self.objects.create(pod))).await
            {
                match result {
                    Ok(_) => created += 1,
                    // A name collision of the random suffix: the next pass makes another.
                    Err(ControlError::Conflict(_)) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(created)
    }

    async fn delete_pods(&self, project: &str, pods: &[Pod]) -> Result<(), ControlError> {
        for chunk in pods.chunks(PARALLEL_WRITES) {
            for result in join_all(chunk.iter().map(|p| {
                self.objects
                    .request_pod_deletion(project, &p.metadata.name, GRACEFUL)
            }))
            .await
            {
                match result {
                    Ok(_) | Err(ControlError::NotFound { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(())
    }

    /// Deletes the pods of a deployment that no longer exists (at once on
    /// its deletion; the garbage collector catches what this misses).
    async fn delete_orphans(&self, project: &str, name: &str) -> Result<(), ControlError> {
        revisions::delete_revisions_of(&self.objects, project, name).await?;
        let (pods, _) = self
            .objects
            .list_named::<Pod>(Some(project), &format!("{name}-"), None)
            .await?;
        let orphans: Vec<Pod> = pods
            .into_iter()
            .filter(|p| deployment_of(p).as_deref() == Some(name))
            .filter(|p| !p.metadata.is_terminating())
            .collect();
        self.delete_pods(project, &orphans).await
    }
}

fn reference(deployment: &Deployment) -> ObjectReference {
    ObjectReference {
        kind: "Deployment".into(),
        project: deployment.metadata.project.clone(),
        name: deployment.metadata.name.clone(),
        uid: deployment.metadata.uid.clone(),
    }
}

/// The deployment owning a pod.
pub fn deployment_of(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .find(|o| o.kind == "Deployment")
        .map(|o| o.name.clone())
}

/// Pod names are `<deployment>-<hash>-<suffix>`.
fn owner_from_pod_name(name: &str) -> Option<String> {
    let mut parts = name.rsplitn(3, '-');
    let (_suffix, _hash, owner) = (parts.next()?, parts.next()?, parts.next()?);
    Some(owner.to_string())
}

/// Whether every container of `pod` runs and is ready.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status.phase == PodPhase::Running
        && !pod.status.container_statuses.is_empty()
        && pod
            .status
            .container_statuses
            .iter()
            .all(|c| c.ready && matches!(c.state, ContainerState::Running { .. }))
}

/// Whether the component flow holds the deployment's pods: while it hands
/// them over (or back), the controller makes missing pods but deletes
/// none, so the flow alone chooses which pod stops, and when.
fn held_by_commit(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .annotations
        .contains_key(ANNOTATION_COMMIT_HOLD)
}

/// The strategy a deployment's template change follows. Pods with a fixed
/// IP are replaced stop-first whatever the spec says: the old pod must have
/// released the address before the new one can claim it. A strategy stored
/// before it was validated, and now invalid, rolls with the defaults.
fn effective_strategy(deployment: &Deployment) -> RolloutStrategy {
    let pins = |annotations: &BTreeMap<String, String>| {
        annotations.contains_key(ANNOTATION_FIXED_IP)
            || annotations.contains_key(ANNOTATION_FIXED_IPS)
    };
    let fixed_ip = pins(&deployment.metadata.annotations)
        || pins(&deployment.spec.template.metadata.annotations);
    if fixed_ip {
        return RolloutStrategy::Recreate;
    }
    deployment.spec.rollout_strategy().unwrap_or_else(|err| {
        tracing::warn!(error = %err, deployment = %deployment.metadata.name, "invalid strategy; using the defaults");
        let defaults = wharf_api::DeploymentSpec {
            replicas: deployment.spec.replicas,
            ..Default::default()
        };
        defaults.rollout_strategy().expect("the default strategy is valid")
    })
}

/// A stable hash of the pod template: pods of an older template are replaced.
pub fn template_hash(deployment: &Deployment) -> String {
    let text = serde_json::to_string(&deployment.spec.template).expect("templates serialize");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// A new pod from the deployment's template. Wharf annotations of the
/// deployment (`wharf.io/ip-pool`, ...) carry over unless the template sets them.
pub fn pod_for(deployment: &Deployment, hash: &str) -> Pod {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    let template = &deployment.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut annotations: BTreeMap<String, String> = deployment
        .metadata
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with("wharf.io/"))
        // The component flow's marks are the deployment's, not its pods'.
        .filter(|(k, _)| {
            ![ANNOTATION_COMMIT_HOLD, ANNOTATION_COMMIT_REPLICAS].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.extend(template.metadata.annotations.clone());
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: ObjectMeta {
            name: format!("{}-{hash}-{suffix}", deployment.metadata.name),
            project: deployment.metadata.project.clone(),
            labels,
            annotations,
            owner_references: vec![OwnerReference {
                kind: "Deployment".into(),
                name: deployment.metadata.name.clone(),
                uid: deployment.metadata.uid.clone(),
            }],
            ..ObjectMeta::default()
        },
        spec: PodSpec {
            node_name: None,
            ..template.spec.clone()
        },
        status: PodStatus::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_from_generated_names() {
        assert_eq!(
            owner_from_pod_name("web-00a1b2c3d4-x7k2p").as_deref(),
            Some("web")
        );
        assert_eq!(
            owner_from_pod_name("my-api-00a1b2c3d4-x7k2p").as_deref(),
            Some("my-api")
        );
        assert_eq!(owner_from_pod_name("solo"), None);
    }
}

/// The controller driven pass by pass over simulated pod states.
#[cfg(test)]
mod rollout_tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::test_objects::{deployment, node, objects};
    use wharf_api::{
        ContainerStatus, DeploymentRevision, DeploymentStrategy, IntOrPercent, RollingUpdate,
    };

    struct Harness {
        _dir: tempfile::TempDir,
        objects: Objects,
        controller: Arc<DeploymentController>,
        now: Arc<AtomicU64>,
    }

    impl Harness {
        async fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let objects = objects(&dir);
            node(&objects, "n1", true).await;
            let now = Arc::new(AtomicU64::new(1_000_000));
            let clock = now.clone();
            let controller = DeploymentController::with_clock(
                objects.clone(),
                Arc::new(move || clock.load(Ordering::SeqCst)),
            );
            Harness {
                _dir: dir,
                objects,
                controller,
                now,
            }
        }

        /// The deployment with `replicas` of shop/web:1 running and ready.
        async fn running(&self, replicas: u32, change: impl FnOnce(&mut Deployment)) {
            self.deployment(replicas, change).await;
            self.reconcile().await;
            self.run_pods("shop/web:1", true).await;
            self.reconcile().await;
        }

        fn advance(&self, seconds: u64) {
            self.now.fetch_add(seconds * 1000, Ordering::SeqCst);
        }

        async fn deployment(&self, replicas: u32, change: impl FnOnce(&mut Deployment)) {
            let mut d = deployment(&self.objects, "web").await;
            d.spec.replicas = replicas;
            change(&mut d);
            self.objects.update(d).await.unwrap();
        }

        async fn change(&self, change: impl Fn(&mut Deployment)) {
            self.objects
                .modify::<Deployment>(Some("shop"), "web", |d| {
                    change(d);
                    d.metadata.generation += 1;
                    true
                })
                .await
                .unwrap();
        }

        async fn set_image(&self, image: &str) {
            self.change(|d| d.spec.template.spec.containers[0].image = image.into())
                .await;
        }

        async fn reconcile(&self) -> Deployment {
            self.controller.reconcile("shop", "web").await.unwrap();
            self.objects.require(Some("shop"), "web").await.unwrap()
        }

        async fn pods(&self) -> Vec<Pod> {
            self.objects
                .list::<Pod>(Some("shop"), None)
                .await
                .unwrap()
                .0
        }

        /// Binds the pods of `image` and makes them run (ready or not), as an agent would.
        async fn run_pods(&self, image: &str, ready: bool) {
            for pod in self.pods().await {
                let of_image = pod.spec.containers[0].image == image;
                if !of_image || pod.metadata.is_terminating() {
                    continue;
                }
                if pod.spec.node_name.is_none() {
                    self.objects
                        .bind("n1", std::slice::from_ref(&pod))
                        .await
                        .unwrap();
                }
                self.objects
                    .modify::<Pod>(Some("shop"), &pod.metadata.name, |p| {
                        p.status.phase = PodPhase::Running;
                        p.status.container_statuses = vec![ContainerStatus {
                            name: "main".into(),
                            ready,
                            state: ContainerState::Running { started_at: 1 },
                            ..Default::default()
                        }];
                        true
                    })
                    .await
                    .unwrap();
            }
        }

        /// Removes the Terminating pods, as their node confirms them stopped.
        async fn stop_terminating(&self) {
            for pod in self
                .pods()
                .await
                .iter()
                .filter(|p| p.metadata.is_terminating())
            {
                self.objects
                    .confirm_pod_stopped("shop", &pod.metadata.name, &pod.metadata.uid)
                    .await
                    .unwrap();
            }
        }

        /// Live (not Terminating) pods by image, and the ready ones among them.
        async fn count(&self, image: &str) -> (usize, usize) {
            let pods: Vec<Pod> = self
                .pods()
                .await
                .into_iter()
                .filter(|p| !p.metadata.is_terminating() && p.spec.containers[0].image == image)
                .collect();
            (pods.len(), pods.iter().filter(|p| is_ready(p)).count())
        }
    }

    fn rolling(surge: u32, unavailable: u32) -> Option<DeploymentStrategy> {
        Some(DeploymentStrategy {
            kind: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdate {
                max_surge: Some(IntOrPercent::Int(surge)),
                max_unavailable: Some(IntOrPercent::Int(unavailable)),
            }),
        })
    }

    fn progressing(d: &Deployment) -> (String, String) {
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.kind == "Progressing")
            .unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[tokio::test]
    async fn a_rolling_update_keeps_within_surge_and_unavailable() {
        let h = Harness::new().await;
        h.deployment(4, |d| d.spec.strategy = rolling(1, 1)).await;
        h.reconcile().await;
        h.run_pods("shop/web:1", true).await;
        let d = h.reconcile().await;
        assert_eq!(progressing(&d).1, NEW_REPLICA_SET_AVAILABLE);
        assert_eq!(d.metadata.annotations[ANNOTATION_REVISION], "1");

        h.set_image("shop/web:2").await;
        for _ in 0..20 {
            let d = h.reconcile().await;
            let (old, old_ready) = h.count("shop/web:1").await;
            let (new, new_ready) = h.count("shop/web:2").await;
            assert!(old + new <= 5, "at most replicas + maxSurge: {old} + {new}");
            assert!(
                old_ready + new_ready >= 3,
                "at least replicas - maxUnavailable"
            );
            if d.status.updated_replicas == 4 && d.status.available_replicas == 4 && old == 0 {
                assert_eq!(progressing(&d).1, NEW_REPLICA_SET_AVAILABLE);
                assert_eq!(d.metadata.annotations[ANNOTATION_REVISION], "2");
                assert_eq!(d.status.unavailable_replicas, 0);
                return;
            }
            h.run_pods("shop/web:2", true).await;
            h.stop_terminating().await;
        }
        panic!("the rollout did not complete");
    }

    #[tokio::test]
    async fn new_pods_count_as_available_after_min_ready_seconds() {
        let h = Harness::new().await;
        h.deployment(1, |d| {
            d.spec.strategy = rolling(1, 0);
            d.spec.min_ready_seconds = Some(5);
        })
        .await;
        h.reconcile().await;
        h.run_pods("shop/web:1", true).await;
        assert_eq!(h.reconcile().await.status.available_replicas, 0);
        h.advance(5);
        assert_eq!(h.reconcile().await.status.available_replicas, 1);
        h.set_image("shop/web:2").await;
        h.reconcile().await;
        h.run_pods("shop/web:2", true).await;
        h.reconcile().await;
        h.advance(4);
        h.reconcile().await;
        assert_eq!(
            h.count("shop/web:1").await,
            (1, 1),
            "not yet: ready for 4 s only"
        );
        h.advance(1);
        h.reconcile().await;
        assert_eq!(h.count("shop/web:1").await, (0, 0));
    }

    #[tokio::test]
    async fn a_stuck_rollout_fails_at_the_deadline_and_old_pods_keep_serving() {
        let h = Harness::new().await;
        h.running(3, |d| {
            d.spec.strategy = rolling(1, 1);
            d.spec.progress_deadline_seconds = Some(30);
        })
        .await;
        h.set_image("shop/web:broken").await;
        for _ in 0..3 {
            h.reconcile().await;
            h.run_pods("shop/web:broken", false).await;
            h.stop_terminating().await;
        }
        assert_eq!(
            h.count("shop/web:1").await,
            (2, 2),
            "stops at maxUnavailable"
        );
        assert_eq!(h.count("shop/web:broken").await.0, 2, "stops at maxSurge");
        h.advance(29);
        assert_eq!(progressing(&h.reconcile().await).1, REPLICA_SET_UPDATED);
        h.advance(2);
        let d = h.reconcile().await;
        assert_eq!(
            progressing(&d),
            ("False".into(), PROGRESS_DEADLINE_EXCEEDED.into())
        );
        assert_eq!(d.status.available_replicas, 2);
        assert_eq!(d.status.unavailable_replicas, 1);
        h.advance(600);
        h.reconcile().await;
        assert_eq!(h.count("shop/web:1").await, (2, 2), "old pods keep serving");
    }

    #[tokio::test]
    async fn recreate_stops_every_old_pod_before_the_first_new_one() {
        let h = Harness::new().await;
        h.running(2, |d| {
            d.spec.strategy = Some(DeploymentStrategy {
                kind: Some("Recreate".into()),
                rolling_update: None,
            })
        })
        .await;
        h.set_image("shop/web:2").await;
        h.reconcile().await;
        h.reconcile().await;
        let pods = h.pods().await;
        assert_eq!(pods.len(), 2);
        assert!(
            pods.iter().all(|p| p.metadata.is_terminating()),
            "old pods Terminating, none new"
        );
        h.stop_terminating().await;
        h.reconcile().await;
        assert_eq!(h.count("shop/web:2").await.0, 2);
    }

    #[tokio::test]
    async fn fixed_ip_pods_are_replaced_stop_first_whatever_the_strategy() {
        let h = Harness::new().await;
        h.deployment(1, |d| {
            d.spec.strategy = rolling(1, 0);
            d.spec
                .template
                .metadata
                .annotations
                .insert(ANNOTATION_FIXED_IP.into(), "10.92.0.9".into());
        })
        .await;
        h.reconcile().await;
        h.run_pods("shop/web:1", true).await;
        h.set_image("shop/web:2").await;
        h.reconcile().await;
        assert_eq!(
            h.count("shop/web:2").await.0,
            0,
            "no new pod while the old one holds the address"
        );
        h.stop_terminating().await;
        h.reconcile().await;
        assert_eq!(h.count("shop/web:2").await.0, 1);
    }

    #[tokio::test]
    async fn a_deployment_held_by_a_commit_makes_pods_but_deletes_none() {
        let h = Harness::new().await;
        h.running(3, |d| {
            d.metadata
                .annotations
                .insert(ANNOTATION_COMMIT_HOLD.into(), "web".into());
        })
        .await;
        assert_eq!(h.count("shop/web:1").await, (3, 3));
        h.objects.scale_deployment("shop", "web", 1).await.unwrap();
        h.reconcile().await;
        assert_eq!(h.count("shop/web:1").await.0, 3, "the flow picks who goes");
        // The flow deletes the pod it chose: not replaced.
        let chosen = h.pods().await.remove(0);
        h.objects
            .request_pod_deletion("shop", &chosen.metadata.name, GRACEFUL)
            .await
            .unwrap();
        h.reconcile().await;
        assert_eq!(h.count("shop/web:1").await.0, 2);
        // Raised again, it makes the missing pod; its pods never carry the hold.
        h.objects.scale_deployment("shop", "web", 3).await.unwrap();
        h.reconcile().await;
        let pods = h.pods().await;
        assert_eq!(h.count("shop/web:1").await.0, 3);
        assert!(
            pods.iter()
                .all(|p| !p.metadata.annotations.contains_key(ANNOTATION_COMMIT_HOLD))
        );
        // Without the hold the surplus goes as usual.
        h.objects.scale_deployment("shop", "web", 1).await.unwrap();
        h.change(|d| {
            d.metadata.annotations.remove(ANNOTATION_COMMIT_HOLD);
        })
        .await;
        h.reconcile().await;
        assert_eq!(h.count("shop/web:1").await.0, 1);
    }

    #[tokio::test]
    async fn a_strategy_stored_before_validation_rolls_with_the_defaults() {
        let h = Harness::new().await;
        h.deployment(4, |d| {
            d.spec.strategy = Some(DeploymentStrategy {
                kind: None,
                rolling_update: Some(RollingUpdate {
                    max_surge: Some(IntOrPercent::Percent("lots".into())),
                    max_unavailable: None,
                }),
            })
        })
        .await;
        assert_eq!(h.reconcile().await.status.updated_replicas, 4);
    }

    #[tokio::test]
    async fn paused_deployments_hold_the_rollout_until_resumed() {
        let h = Harness::new().await;
        h.running(2, |d| d.spec.strategy = rolling(1, 0)).await;
        h.change(|d| {
            d.spec.paused = true;
            d.spec.template.spec.containers[0].image = "shop/web:2".into();
        })
        .await;
        let d = h.reconcile().await;
        assert_eq!(progressing(&d).1, "DeploymentPaused");
        assert_eq!(h.count("shop/web:2").await.0, 0);
        assert_eq!(
            d.metadata.annotations[ANNOTATION_REVISION], "1",
            "no revision while paused"
        );
        h.change(|d| d.spec.paused = false).await;
        h.reconcile().await;
        assert_eq!(h.count("shop/web:2").await.0, 1);
    }

    #[tokio::test]
    async fn history_is_limited_and_undo_makes_an_old_revision_the_newest() {
        let h = Harness::new().await;
        h.deployment(1, |d| {
            d.spec.strategy = rolling(1, 0);
            d.spec.revision_history_limit = Some(2);
        })
        .await;
        for version in 1..=5 {
            if version > 1 {
                h.change(|d| {
                    d.spec.template.spec.containers[0].image = format!("shop/web:{version}");
                    d.metadata
                        .annotations
                        .insert(ANNOTATION_CHANGE_CAUSE.into(), format!("to v{version}"));
                })
                .await;
            }
            h.reconcile().await;
            h.run_pods(&format!("shop/web:{version}"), true).await;
            h.reconcile().await;
            h.stop_terminating().await;
            h.reconcile().await;
        }
        let d: Deployment = h.objects.require(Some("shop"), "web").await.unwrap();
        let history = revisions_of(&h.objects, &d).await.unwrap();
        let numbers: Vec<u64> = history.iter().map(|r| r.revision).collect();
        assert_eq!(
            numbers,
            [3, 4, 5],
            "two old revisions kept, and the current one"
        );
        assert_eq!(history[1].change_cause.as_deref(), Some("to v4"));

        let undone = crate::revisions::undo(&h.objects, "shop", "web", 0)
            .await
            .unwrap();
        assert_eq!(undone.spec.template.spec.containers[0].image, "shop/web:4");
        assert_eq!(
            undone.metadata.annotations[ANNOTATION_CHANGE_CAUSE],
            "to v4"
        );
        let d = h.reconcile().await;
        assert_eq!(d.metadata.annotations[ANNOTATION_REVISION], "6");
        let history = revisions_of(&h.objects, &d).await.unwrap();
        let numbers: Vec<(u64, String)> = history
            .iter()
            .map(|r| (r.revision, r.template.spec.containers[0].image.clone()))
            .collect();
        assert_eq!(
            numbers,
            [
                (3, "shop/web:3".into()),
                (5, "shop/web:5".into()),
                (6, "shop/web:4".into())
            ]
        );

        let undone = crate::revisions::undo(&h.objects, "shop", "web", 3)
            .await
            .unwrap();
        assert_eq!(undone.spec.template.spec.containers[0].image, "shop/web:3");
        let err = crate::revisions::undo(&h.objects, "shop", "web", 42)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no revision 42"), "{err}");
        // Deleting the deployment takes its revisions along.
        h.objects
            .delete::<Deployment>(Some("shop"), "web", None)
            .await
            .unwrap();
        h.reconcile_gone().await;
        let (left, _) = h
            .objects
            .list::<DeploymentRevision>(Some("shop"), None)
            .await
            .unwrap();
        assert!(left.is_empty());
    }

    impl Harness {
        async fn reconcile_gone(&self) {
            self.controller.reconcile("shop", "web").await.unwrap();
        }
    }
}
