//! Garbage collection by owner references, from the objects themselves
//! rather than from watch events: a periodic sweep (the first right when
//! this server starts leading) deletes, gracefully, every pod whose owning
//! Deployment (by uid) no longer exists — also when the Deployment was
//! deleted while no controller ran, or was replaced by a new one of the
//! same name. It also ends Terminating pods that no node will ever confirm:
//! those of a node that is gone, and those of a NotReady node once their
//! deadline (`deletionTimestamp`) passed, as Kubernetes' pod GC does for
//! pods of lost nodes. Their containers, if the node comes back, are
//! removed by its agent, which removes whatever it holds that is no longer
//! bound to it. Revisions of deleted deployments are deleted the same way,
//! and so are autoscalers a deployment owns (those `wharf autoscale` makes;
//! an applied autoscaler without an owner stays, reporting its missing
//! target, as in Kubernetes).
//! Last, it deletes the Terminating PersistentVolumeClaims no pod uses any
//! longer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use wharf_api::{Deployment, DeploymentRevision, HorizontalPodAutoscaler, Node, ObjectMeta, Pod};

use crate::ControlError;
use crate::objects::{Object, Objects, now_millis};
use crate::termination::PodDeletion;

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Pods whose owner is gone, now Terminating (or removed if unbound).
    pub orphans: Vec<String>,
    /// Terminating pods removed because their node is gone or lost.
    pub abandoned: Vec<String>,
    /// Terminating claims deleted because no pod uses them any longer.
    pub claims: Vec<String>,
    /// Deployment revisions whose deployment is gone, deleted.
    pub revisions: Vec<String>,
    /// Autoscalers owned by a deployment that is gone (those `wharf
    /// autoscale` made), deleted.
    pub autoscalers: Vec<String>,
}

/// Sweeps pods whose owners are gone, and those lost nodes hold.
pub struct GarbageCollector {
    objects: Objects,
    every: Duration,
}

impl GarbageCollector {
    /// A collector sweeping `objects` every `every`.
    pub fn new(objects: Objects, every: Duration) -> Arc<GarbageCollector> {
        Arc::new(GarbageCollector { objects, every })
    }

    /// Sweeps now, then every period, until dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.sweep().await {
                Ok(sweep) if sweep != Sweep::default() => {
                    tracing::info!(
                        orphans = ?sweep.orphans,
                        abandoned = ?sweep.abandoned,
                        claims = ?sweep.claims,
                        "garbage collection deleted objects"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "garbage collection failed"),
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// One pass over every pod.
    pub async fn sweep(&self) -> Result<Sweep, ControlError> {
        // Pods before owners: a pod listed was made after its owner, so an
        // owner missing from the later listing really is gone.
        let (pods, _) = self.objects.list::<Pod>(None, None).await?;
        let (deployments, _) = self.objects.list::<Deployment>(None, None).await?;
        let (nodes, _) = self.objects.list::<Node>(None, None).await?;
        let owners: HashSet<&str> = deployments
            .iter()
            .map(|d| d.metadata.uid.as_str())
            .collect();
        let ready: HashMap<&str, bool> = nodes
            .iter()
            .map(|n| (n.metadata.name.as_str(), n.status.ready))
            .collect();
        let now = now_millis();
        let mut sweep = Sweep::default();
        for pod in &pods {
            let project = pod.metadata.project.as_deref().unwrap_or_default();
            let name = &pod.metadata.name;
            let result = if is_abandoned(pod, &ready, now) {
                self.remove_abandoned(pod, &ready)
                    .await
                    .map(|deleted| deleted.then_some(&mut sweep.abandoned))
            } else if !pod.metadata.is_terminating() && is_orphan(&pod.metadata, &owners) {
                self.objects
                    .request_pod_deletion(project, name, PodDeletion::Graceful(None))
                    .await
                    .map(|_| Some(&mut sweep.orphans))
            } else {
                Ok(None)
            };
            match result {
                Ok(Some(list)) => list.push(format!("{project}/{name}")),
                Ok(None) | Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        // Listed after the deployments: a revision or autoscaler made since
        // by a new deployment would look orphaned.
        sweep.revisions = self.delete_orphans::<DeploymentRevision>(&owners).await?;
        sweep.autoscalers = self
            .delete_orphans::<HorizontalPodAutoscaler>(&owners)
            .await?;
        sweep.claims = self.objects.release_claims().await?;
        Ok(sweep)
    }
}

impl GarbageCollector {
    /// Deletes the objects of kind `T` whose owning deployments are gone;
    /// returns them as `project/name`.
    async fn delete_orphans<T: Object>(
        &self,
        owners: &HashSet<&str>,
    ) -> Result<Vec<String>, ControlError> {
        let (objects, _) = self.objects.list::<T>(None, None).await?;
        let mut deleted = Vec::new();
        for object in objects.iter().filter(|o| is_orphan(o.metadata(), owners)) {
            let project = object.metadata().project.as_deref();
            let name = &object.metadata().name;
            match self.objects.delete::<T>(project, name, None).await {
                Ok(_) => deleted.push(format!("{}/{name}", project.unwrap_or_default())),
                Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(deleted)
    }

    /// Removes an abandoned pod: from a NotReady node as eviction does
    /// (with its address, while the node's lease stays expired); from a
    /// node that is gone, the object only (the address reconciler frees
    /// the address later).
    async fn remove_abandoned(
        &self,
        pod: &Pod,
        ready: &HashMap<&str, bool>,
    ) -> Result<bool, ControlError> {
        let node = pod.spec.node_name.as_deref();
        if node.and_then(|n| ready.get(n)) == Some(&false) {
            return self.objects.evict_from_lost_node(pod).await;
        }
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let same = |p: &Pod| p.metadata.uid == pod.metadata.uid;
        let deleted = self
            .objects
            .delete_pod_if(project, &pod.metadata.name, same)
            .await?;
        Ok(deleted.is_some())
    }
}

/// Whether every Deployment owning an object (a pod, a revision) is gone
/// (objects without owners, or owned by kinds Wharf does not have, are
/// left alone).
fn is_orphan(meta: &ObjectMeta, owners: &HashSet<&str>) -> bool {
    let mut deployments = meta
        .owner_references
        .iter()
        .filter(|o| o.kind == "Deployment")
        .peekable();
    deployments.peek().is_some() && deployments.all(|o| !owners.contains(o.uid.as_str()))
}

/// Whether `pod` is Terminating on a node that will never confirm it: one
/// that is gone, or NotReady past the pod's deadline.
fn is_abandoned(pod: &Pod, ready: &HashMap<&str, bool>, now: u64) -> bool {
    let Some(deadline) = pod.metadata.deletion_timestamp else {
        return false;
    };
    match pod.spec.node_name.as_deref().map(|n| ready.get(n)) {
        None | Some(None) => true,
        Some(Some(true)) => false,
        Some(Some(false)) => now >= deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{deployment, hpa, node, objects, pod, pod_exists};

    fn collector(objects: &Objects) -> Arc<GarbageCollector> {
        GarbageCollector::new(objects.clone(), Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn pods_whose_deployment_is_gone_are_deleted_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "n1", true).await;
        let kept = deployment(&objects, "api").await;
        let gone = deployment(&objects, "web").await;
        let live = pod(&objects, &kept, Some("n1")).await;
        let running = pod(&objects, &gone, Some("n1")).await;
        let pending = pod(&objects, &gone, None).await;
        // Deleted with no controller watching (straight in the store), then
        // made again under the same name: a new uid, which owns nothing.
        objects
            .delete::<Deployment>(Some("shop"), "web", None)
            .await
            .unwrap();
        deployment(&objects, "web").await;

        let sweep = collector(&objects).sweep().await.unwrap();
        let mut orphans = sweep.orphans.clone();
        orphans.sort();
        let mut expected = vec![
            format!("shop/{}", running.metadata.name),
            format!("shop/{}", pending.metadata.name),
        ];
        expected.sort();
        assert_eq!(orphans, expected);
        assert!(sweep.abandoned.is_empty());
        // The bound one waits for its node; the unbound one is gone.
        let running: Pod = objects
            .require(Some("shop"), &running.metadata.name)
            .await
            .unwrap();
        assert_eq!(running.metadata.deletion_grace_period_seconds, Some(7));
        assert!(!pod_exists(&objects, &pending.metadata.name).await);
        let live: Pod = objects
            .require(Some("shop"), &live.metadata.name)
            .await
            .unwrap();
        assert!(!live.metadata.is_terminating());
        // Nothing more to do on the next pass.
        assert_eq!(collector(&objects).sweep().await.unwrap(), Sweep::default());
    }

    #[tokio::test]
    async fn revisions_and_autoscalers_whose_deployment_is_gone_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let kept = deployment(&objects, "api").await;
        let gone = deployment(&objects, "web").await;
        crate::revisions::record(&objects, &kept, "aaaa", &[])
            .await
            .unwrap();
        crate::revisions::record(&objects, &gone, "bbbb", &[])
            .await
            .unwrap();
        objects
            .delete::<Deployment>(Some("shop"), "web", None)
            .await
            .unwrap();
        // An autoscaler owned by the deployment goes with it; one applied
        // without an owner stays.
        let mut owned = hpa("web", 3);
        owned.metadata.owner_references = vec![wharf_api::OwnerReference {
            kind: "Deployment".into(),
            name: "web".into(),
            uid: gone.metadata.uid.clone(),
        }];
        objects.create(owned).await.unwrap();
        let mut applied = hpa("web", 3);
        applied.metadata.name = "web-applied".into();
        objects.create(applied).await.unwrap();
        let sweep = collector(&objects).sweep().await.unwrap();
        assert_eq!(sweep.revisions, ["shop/web-bbbb"]);
        assert_eq!(sweep.autoscalers, ["shop/web"]);
        let left = crate::revisions::revisions_of(&objects, &kept)
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
    }

    #[tokio::test]
    async fn terminating_pods_of_lost_nodes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "ready", true).await;
        node(&objects, "lost", false).await;
        node(&objects, "removed", true).await;
        let owner = deployment(&objects, "web").await;
        let on_ready = pod(&objects, &owner, Some("ready")).await;
        let on_lost = pod(&objects, &owner, Some("lost")).await;
        let on_removed = pod(&objects, &owner, Some("removed")).await;
        for pod in [&on_ready, &on_lost, &on_removed] {
            objects
                .request_pod_deletion("shop", &pod.metadata.name, PodDeletion::Graceful(Some(0)))
                .await
                .unwrap();
        }
        objects.delete::<Node>(None, "removed", None).await.unwrap();

        let sweep = collector(&objects).sweep().await.unwrap();
        let mut abandoned = sweep.abandoned.clone();
        abandoned.sort();
        let mut expected = vec![
            format!("shop/{}", on_lost.metadata.name),
            format!("shop/{}", on_removed.metadata.name),
        ];
        expected.sort();
        assert_eq!(abandoned, expected);
        // A ready node's agent confirms its own pods.
        assert!(pod_exists(&objects, &on_ready.metadata.name).await);
        assert_eq!(objects.allocation("lost").await.unwrap().0.requests.pods, 0);
    }

    #[test]
    fn a_not_ready_node_keeps_its_pods_until_their_deadline() {
        let mut pod = Pod::default();
        pod.spec.node_name = Some("n1".into());
        pod.metadata.deletion_timestamp = Some(10_000);
        let not_ready = HashMap::from([("n1", false)]);
        assert!(!is_abandoned(&pod, &not_ready, 9_999));
        assert!(is_abandoned(&pod, &not_ready, 10_000));
        assert!(!is_abandoned(&pod, &HashMap::from([("n1", true)]), 99_999));
        pod.metadata.deletion_timestamp = None;
        assert!(!is_abandoned(&pod, &not_ready, 99_999));
    }
}
