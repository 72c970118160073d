//! The deployment controller: keeps each deployment's replica count of pods
//! of its current template, and its status current.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

use futures_util::StreamExt;
use futures_util::future::join_all;
use wharf_api::{
    ContainerState, Deployment, DeploymentStatus, EventType, ObjectMeta, ObjectReference,
    OwnerReference, Pod, PodPhase, PodSpec, PodStatus,
};

use crate::ControlError;
use crate::events::EventRecorder;
use crate::objects::{Change, Objects};
use crate::queue::WorkQueue;
use crate::termination::PodDeletion;

/// Label carrying the hash of the template a pod was made from.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// How often every deployment is reconciled even without changes.
const RESYNC: Duration = Duration::from_secs(30);
/// Surplus and orphaned pods stop within their own grace period.
const GRACEFUL: PodDeletion = PodDeletion::Graceful(None);
/// Pod writes in flight at once per reconciliation.
const PARALLEL_WRITES: usize = 256;

type Key = (String, String);

/// Reconciles deployments into pods.
pub struct DeploymentController {
    objects: Objects,
    events: EventRecorder,
    queue: WorkQueue<Key>,
}

impl DeploymentController {
    /// A controller over `objects`.
    pub fn new(objects: Objects) -> Arc<DeploymentController> {
        Arc::new(DeploymentController {
            events: EventRecorder::new(objects.clone(), "deployment-controller"),
            objects,
            queue: WorkQueue::new(),
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
                    .map(|(project, name)| self.reconcile(project, name)),
            )
            .await;
            for ((project, name), result) in keys.into_iter().zip(results) {
                if let Err(err) = result {
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
        let Some(deployment) = self.objects.get::<Deployment>(Some(project), name).await? else {
            return self.delete_orphans(project, name).await;
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
        // A Terminating pod is on its way out: no replica, and not deleted again.
        let owned: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.metadata.owner_references.iter().any(|o| &o.uid == uid))
            .filter(|p| !p.metadata.is_terminating())
            .collect();
        let hash = template_hash(&deployment);
        let (current, old): (Vec<Pod>, Vec<Pod>) = owned
            .into_iter()
            .partition(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash));
        let wanted = deployment.spec.replicas as usize;

        let mut deleted = Vec::new();
        let mut created = 0;
        if current.len() < wanted {
            created = self
                .create_pods(&deployment, &hash, wanted - current.len())
                .await?;
        }
        // What stays of the current pods once the surplus is deleted.
        let mut survivors = current;
        if survivors.len() > wanted {
            // Unscheduled pods go first, then the newest.
            survivors.sort_by_key(|p| {
                (
                    p.spec.node_name.is_some(),
                    std::cmp::Reverse(p.metadata.created_at),
                )
            });
            let surplus = survivors.len() - wanted;
            deleted.extend(survivors.drain(..surplus));
        }
        deleted.extend(old);
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
        let status = DeploymentStatus {
            observed_generation: deployment.metadata.generation,
            replicas: (survivors.len() + created) as u32,
            updated_replicas: (survivors.len() + created) as u32,
            scheduled_replicas: survivors
                .iter()
                .filter(|p| p.spec.node_name.is_some())
                .count() as u32,
            ready_replicas: survivors.iter().filter(|p| is_ready(p)).count() as u32,
        };
        if status != deployment.status {
            self.objects
                .modify::<Deployment>(Some(project), name, |d| {
                    let changed = d.status != status;
                    d.status = status.clone();
                    changed
                })
                .await?;
        }
        Ok(())
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

fn is_ready(pod: &Pod) -> bool {
    pod.status.phase == PodPhase::Running
        && !pod.status.container_statuses.is_empty()
        && pod
            .status
            .container_statuses
            .iter()
            .all(|c| c.ready && matches!(c.state, ContainerState::Running { .. }))
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
