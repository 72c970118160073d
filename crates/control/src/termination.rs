//! Graceful pod deletion, as Kubernetes does it.
//!
//! ```text
//! delete (grace G) --> unbound pod: removed at once
//!                  \-> bound pod: deletionTimestamp = now + G, Terminating
//!                        --> node agent: SIGTERM, SIGKILL after G, network and
//!                            address released --> confirms --> removed
//!                        --> node gone, or NotReady past the deadline: removed
//!                            by the garbage collector (see `garbage`)
//! delete --force        --> removed at once; the node notices later
//! ```
//!
//! `deletionTimestamp` is, as in Kubernetes, the time by which the pod
//! should be gone. Until the object is removed the pod keeps its requests
//! booked on its node and its address claimed, and counts as no replica.

use wharf_api::Pod;

use crate::ControlError;
use crate::objects::{Objects, now_millis};

/// The grace period when neither the request nor the pod gives one.
pub use wharf_api::DEFAULT_GRACE_SECONDS;

/// How to delete a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodDeletion {
    /// Mark it Terminating and let its node stop it within this many
    /// seconds (`None`: the pod's `terminationGracePeriodSeconds`, else 30).
    Graceful(Option<u64>),
    /// Remove the object now, without waiting for the node.
    Force,
}

/// What a deletion did.
#[derive(Clone, Debug)]
pub enum DeletionOutcome {
    /// The pod is Terminating, waiting for its node.
    Terminating(Box<Pod>),
    /// The object is gone.
    Removed(Box<Pod>),
}

impl DeletionOutcome {
    /// The pod as it was left (or last was).
    pub fn pod(&self) -> &Pod {
        match self {
            DeletionOutcome::Terminating(pod) | DeletionOutcome::Removed(pod) => pod,
        }
    }
}

/// The grace period a deletion gives `pod`.
pub fn grace_seconds(pod: &Pod, asked: Option<u64>) -> u64 {
    asked.unwrap_or_else(|| pod.spec.grace_seconds())
}

impl Objects {
    /// Deletes a pod as `how` says. A pod no node holds yet goes at once;
    /// a Terminating pod asked again with a shorter grace gets the earlier
    /// deadline (never a later one), as Kubernetes does.
    pub async fn request_pod_deletion(
        &self,
        project: &str,
        name: &str,
        how: PodDeletion,
    ) -> Result<DeletionOutcome, ControlError> {
        let asked = match how {
            PodDeletion::Force => {
                let pod = self.delete_pod(project, name).await?;
                return Ok(DeletionOutcome::Removed(Box::new(pod)));
            }
            PodDeletion::Graceful(asked) => asked,
        };
        for _ in 0..32 {
            let mut pod: Pod = self.require(Some(project), name).await?;
            if pod.spec.node_name.is_none() {
                let unbound = |p: &Pod| p.spec.node_name.is_none();
                match self.delete_pod_if(project, name, unbound).await? {
                    Some(pod) => return Ok(DeletionOutcome::Removed(Box::new(pod))),
                    None => continue, // bound meanwhile: its node must stop it
                }
            }
            let grace = grace_seconds(&pod, asked);
            let deadline = now_millis() + grace * 1000;
            if pod
                .metadata
                .deletion_timestamp
                .is_some_and(|current| current <= deadline)
            {
                return Ok(DeletionOutcome::Terminating(Box::new(pod)));
            }
            pod.metadata.deletion_timestamp = Some(deadline);
            pod.metadata.deletion_grace_period_seconds = Some(grace);
            match self.update(pod).await {
                Ok(pod) => return Ok(DeletionOutcome::Terminating(Box::new(pod))),
                Err(ControlError::Conflict(_)) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(ControlError::Conflict(format!(
            "pod {project}/{name} keeps changing"
        )))
    }

    /// A node's word that it stopped pod `project/name` with `uid` and
    /// released what it held: the object goes. Refused for a pod whose
    /// deletion nobody asked (a node may not remove a live pod); a pod
    /// already gone, or replaced by a new one of the same name, is fine.
    pub async fn confirm_pod_stopped(
        &self,
        project: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), ControlError> {
        let Some(pod) = self.get::<Pod>(Some(project), name).await? else {
            return Ok(());
        };
        if pod.metadata.uid != uid {
            return Ok(());
        }
        if !pod.metadata.is_terminating() {
            return Err(ControlError::Conflict(format!(
                "pod {project}/{name} is not being deleted"
            )));
        }
        let same = |p: &Pod| p.metadata.uid == uid;
        match self.delete_pod_if(project, name, same).await {
            Ok(_) | Err(ControlError::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{deployment, node, objects, pod, pod_exists};

    /// Objects with a pod of Deployment `web` bound to node `n1`.
    async fn bound_pod(dir: &tempfile::TempDir) -> (Objects, Pod) {
        let objects = objects(dir);
        node(&objects, "n1", true).await;
        let owner = deployment(&objects, "web").await;
        let pod = pod(&objects, &owner, Some("n1")).await;
        (objects, pod)
    }

    fn deadline_in(pod: &Pod) -> i64 {
        pod.metadata.deletion_timestamp.unwrap() as i64 - now_millis() as i64
    }

    #[tokio::test]
    async fn a_pod_no_node_holds_goes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let owner = deployment(&objects, "web").await;
        let pod = pod(&objects, &owner, None).await;
        let name = &pod.metadata.name;
        let outcome = objects
            .request_pod_deletion("shop", name, PodDeletion::Graceful(None))
            .await
            .unwrap();
        assert!(
            matches!(outcome, DeletionOutcome::Removed(_)),
            "{outcome:?}"
        );
        assert!(!pod_exists(&objects, name).await);
    }

    #[tokio::test]
    async fn a_bound_pod_terminates_until_its_node_confirms() {
        let dir = tempfile::tempdir().unwrap();
        let (objects, pod) = bound_pod(&dir).await;
        let name = pod.metadata.name.clone();

        // The pod's own grace (7 s) when the request names none.
        let outcome = objects
            .request_pod_deletion("shop", &name, PodDeletion::Graceful(None))
            .await
            .unwrap();
        let DeletionOutcome::Terminating(terminating) = outcome else {
            panic!("a bound pod went without its node: {outcome:?}");
        };
        assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(7));
        assert!((5_000..=7_000).contains(&deadline_in(&terminating)));
        // Still there, still booked on its node.
        let stored: Pod = objects.require(Some("shop"), &name).await.unwrap();
        assert!(stored.metadata.is_terminating());
        assert_eq!(objects.allocation("n1").await.unwrap().0.requests.pods, 1);

        // A longer grace asked later changes nothing; a shorter one brings the deadline in.
        let outcome = objects
            .request_pod_deletion("shop", &name, PodDeletion::Graceful(Some(60)))
            .await
            .unwrap();
        assert_eq!(
            outcome.pod().metadata.deletion_grace_period_seconds,
            Some(7)
        );
        let outcome = objects
            .request_pod_deletion("shop", &name, PodDeletion::Graceful(Some(1)))
            .await
            .unwrap();
        assert_eq!(
            outcome.pod().metadata.deletion_grace_period_seconds,
            Some(1)
        );
        assert!(deadline_in(outcome.pod()) <= 1_000);

        // Another pod's confirmation (an older one of the same name) removes nothing.
        objects
            .confirm_pod_stopped("shop", &name, "another-uid")
            .await
            .unwrap();
        assert!(pod_exists(&objects, &name).await);
        // The node's confirmation removes it and frees its booking.
        objects
            .confirm_pod_stopped("shop", &name, &pod.metadata.uid)
            .await
            .unwrap();
        assert!(!pod_exists(&objects, &name).await);
        assert_eq!(objects.allocation("n1").await.unwrap().0.requests.pods, 0);
        // Confirming again (a retry) is fine.
        objects
            .confirm_pod_stopped("shop", &name, &pod.metadata.uid)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_node_cannot_remove_a_live_pod_and_force_removes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (objects, pod) = bound_pod(&dir).await;
        let name = pod.metadata.name.clone();
        let err = objects
            .confirm_pod_stopped("shop", &name, &pod.metadata.uid)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is not being deleted"), "{err}");
        assert!(pod_exists(&objects, &name).await);

        let outcome = objects
            .request_pod_deletion("shop", &name, PodDeletion::Force)
            .await
            .unwrap();
        assert!(
            matches!(outcome, DeletionOutcome::Removed(_)),
            "{outcome:?}"
        );
        assert!(!pod_exists(&objects, &name).await);
        assert_eq!(objects.allocation("n1").await.unwrap().0.requests.pods, 0);
    }

    #[test]
    fn the_grace_period_comes_from_the_request_then_the_pod_then_30() {
        let mut pod = Pod::default();
        assert_eq!(grace_seconds(&pod, None), DEFAULT_GRACE_SECONDS);
        pod.spec.termination_grace_period_seconds = Some(5);
        assert_eq!(grace_seconds(&pod, None), 5);
        assert_eq!(grace_seconds(&pod, Some(0)), 0);
    }
}
