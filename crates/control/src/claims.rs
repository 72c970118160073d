//! PersistentVolumeClaims in the store: applied, bound to a node by
//! compare-and-swap, and protected from deletion while a pod uses them.
//!
//! A claim is bound to the node the scheduler picks for its first pod
//! (`WaitForFirstConsumer`); [`Objects::bind_claim`] writes that under the
//! claim's revision, so two pods racing for an unbound claim cannot bind
//! it to two nodes: the loser sees the winner's node and goes there. A
//! claim deleted while a pod uses it turns Terminating and goes once no
//! pod does (Kubernetes' `pvc-protection` finalizer), by the garbage
//! collector's sweep.

use wharf_api::{PersistentVolumeClaim, Pod, PodPhase};

use crate::ControlError;
use crate::objects::{Objects, now_millis, revision_of};

/// What deleting a claim did.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimDeletion {
    /// No pod used it: it is gone.
    Deleted(PersistentVolumeClaim),
    /// Pods use it: Terminating until they are gone.
    Terminating(PersistentVolumeClaim),
}

/// Whether `pod` names claim `name` and still counts as using it: not
/// finished (a Succeeded or Failed pod never starts again).
pub fn uses_claim(pod: &Pod, name: &str) -> bool {
    !matches!(pod.status.phase, PodPhase::Succeeded | PodPhase::Failed)
        && pod.spec.claim_names().contains(&name)
}

impl Objects {
    /// Creates a claim, or changes the labels and annotations of an
    /// existing one; `true` if it was created. A claim's spec cannot change
    /// once made, and its binding is the cluster's, never the manifest's.
    pub async fn apply_claim(
        &self,
        mut claim: PersistentVolumeClaim,
    ) -> Result<(PersistentVolumeClaim, bool), ControlError> {
        claim.normalize();
        claim.validate()?;
        let project = claim.metadata.project.clone();
        let name = claim.metadata.name.clone();
        let existing = self
            .get::<PersistentVolumeClaim>(project.as_deref(), &name)
            .await?;
        if existing.is_none() {
            match self.create(claim.clone()).await {
                Ok(created) => return Ok((created, true)),
                Err(ControlError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let mut refused = None;
        let updated = self
            .modify::<PersistentVolumeClaim>(project.as_deref(), &name, |current| {
                if let Err(err) = current.check_replacement(&claim) {
                    refused = Some(err);
                    return false;
                }
                let mut annotations = claim.metadata.annotations.clone();
                if let Some(node) = current.bound_node() {
                    annotations.insert(wharf_api::ANNOTATION_SELECTED_NODE.into(), node.into());
                }
                let changed = current.metadata.labels != claim.metadata.labels
                    || current.metadata.annotations != annotations;
                current.metadata.labels = claim.metadata.labels.clone();
                current.metadata.annotations = annotations;
                changed
            })
            .await?;
        match refused {
            Some(err) => Err(err.into()),
            None => Ok((updated, false)),
        }
    }

    /// Binds claim `project/name` to `node` unless it is bound already;
    /// returns the node it is bound to after this call, which is another
    /// node when a racing pod won. A Terminating claim takes no new node.
    pub async fn bind_claim(
        &self,
        project: &str,
        name: &str,
        node: &str,
    ) -> Result<String, ControlError> {
        for _ in 0..32 {
            let claim: PersistentVolumeClaim = self.require(Some(project), name).await?;
            if let Some(bound) = claim.bound_node() {
                return Ok(bound.to_string());
            }
            if claim.metadata.is_terminating() {
                return Err(ControlError::Conflict(format!(
                    "PersistentVolumeClaim {project}/{name} is being deleted"
                )));
            }
            let mut bound = claim;
            bound.bind_to(node);
            match self.update(bound).await {
                Ok(_) => return Ok(node.to_string()),
                // Changed since read: read again and see who won.
                Err(ControlError::Conflict(_)) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(ControlError::Conflict(format!(
            "PersistentVolumeClaim {project}/{name} keeps changing"
        )))
    }

    /// The pods of the claim's project that use it, by name.
    pub async fn claim_users(&self, project: &str, name: &str) -> Result<Vec<Pod>, ControlError> {
        let (pods, _) = self.list::<Pod>(Some(project), None).await?;
        Ok(pods.into_iter().filter(|p| uses_claim(p, name)).collect())
    }

    /// Deletes a claim no pod uses; one in use turns Terminating instead.
    pub async fn delete_claim(
        &self,
        project: &str,
        name: &str,
    ) -> Result<ClaimDeletion, ControlError> {
        let claim: PersistentVolumeClaim = self.require(Some(project), name).await?;
        if self.claim_users(project, name).await?.is_empty() {
            let revision = revision_of(&claim)?;
            let deleted = self.delete(Some(project), name, revision).await?;
            return Ok(ClaimDeletion::Deleted(deleted));
        }
        let marked = self
            .modify::<PersistentVolumeClaim>(Some(project), name, |claim| {
                let mark = !claim.metadata.is_terminating();
                if mark {
                    claim.metadata.deletion_timestamp = Some(now_millis());
                }
                mark
            })
            .await?;
        Ok(ClaimDeletion::Terminating(marked))
    }

    /// Deletes every Terminating claim no pod uses any longer; returns
    /// their `project/name`.
    pub async fn release_claims(&self) -> Result<Vec<String>, ControlError> {
        let (claims, _) = self.list::<PersistentVolumeClaim>(None, None).await?;
        let mut released = Vec::new();
        for claim in claims.iter().filter(|c| c.metadata.is_terminating()) {
            let project = claim.metadata.project.as_deref().unwrap_or_default();
            let name = &claim.metadata.name;
            if !self.claim_users(project, name).await?.is_empty() {
                continue;
            }
            // At the revision read: a claim changed meanwhile waits a sweep.
            match self
                .delete::<PersistentVolumeClaim>(Some(project), name, revision_of(claim)?)
                .await
            {
                Ok(_) => released.push(format!("{project}/{name}")),
                Err(ControlError::NotFound { .. } | ControlError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(released)
    }

    /// The claims bound to `node`: what its agent may keep directories for.
    pub async fn claims_on_node(
        &self,
        node: &str,
    ) -> Result<Vec<PersistentVolumeClaim>, ControlError> {
        let (claims, _) = self.list::<PersistentVolumeClaim>(None, None).await?;
        Ok(claims
            .into_iter()
            .filter(|c| c.bound_node() == Some(node))
            .collect())
    }

    /// Deletes every claim of `project` (a project being deleted).
    pub async fn delete_project_claims(&self, project: &str) -> Result<usize, ControlError> {
        self.delete_in_project::<PersistentVolumeClaim>(project)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wharf_api::{ClaimVolume, ObjectMeta, Volume};

    use super::*;
    use crate::test_objects::{deployment, objects};

    pub(crate) fn claim(name: &str) -> PersistentVolumeClaim {
        let mut claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: name.into(),
                project: Some("shop".into()),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        };
        claim.spec.resources.requests = BTreeMap::from([("storage".into(), "1Gi".into())]);
        claim
    }

    /// Stores a pod of a fresh deployment using claim `claim_name`.
    async fn pod_using(objects: &Objects, owner: &str, claim_name: &str) -> Pod {
        let mut owner = deployment(objects, owner).await;
        owner.spec.template.spec.volumes = vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(ClaimVolume {
                claim_name: claim_name.into(),
                read_only: false,
            }),
            ..Volume::default()
        }];
        objects
            .create(crate::deployments::pod_for(&owner, "0123456789"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn racing_pods_bind_a_claim_to_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let (created, fresh) = objects.apply_claim(claim("data")).await.unwrap();
        assert!(fresh);
        assert_eq!(created.phase(), "Pending");
        for round in 0..8 {
            let name = format!("race-{round}");
            objects.apply_claim(claim(&name)).await.unwrap();
            let (a, b) = tokio::join!(
                objects.bind_claim("shop", &name, "node-a"),
                objects.bind_claim("shop", &name, "node-b"),
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a, b, "both pods go where the claim was bound");
            let stored: PersistentVolumeClaim = objects.require(Some("shop"), &name).await.unwrap();
            assert_eq!(stored.bound_node(), Some(a.as_str()));
            assert_eq!(
                stored.metadata.annotations[wharf_api::ANNOTATION_SELECTED_NODE],
                a
            );
        }
        // A bound claim stays where it is.
        objects.bind_claim("shop", "data", "node-a").await.unwrap();
        let again = objects.bind_claim("shop", "data", "node-b").await.unwrap();
        assert_eq!(again, "node-a");
        // Re-applied, it keeps its binding; its spec cannot change.
        let (kept, fresh) = objects.apply_claim(claim("data")).await.unwrap();
        assert!(!fresh);
        assert_eq!(kept.bound_node(), Some("node-a"));
        assert_eq!(
            kept.metadata.annotations[wharf_api::ANNOTATION_SELECTED_NODE],
            "node-a"
        );
        let mut bigger = claim("data");
        bigger.spec.resources.requests =
            BTreeMap::from([("storage".to_string(), "2Gi".to_string())]);
        let err = objects.apply_claim(bigger).await.unwrap_err().to_string();
        assert!(err.contains("cannot change"), "{err}");
        let on_a = objects.claims_on_node("node-a").await.unwrap();
        assert!(on_a.iter().any(|c| c.metadata.name == "data"));
        assert!(on_a.iter().all(|c| c.bound_node() == Some("node-a")));
    }

    #[tokio::test]
    async fn a_claim_in_use_terminates_until_its_pods_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        objects.apply_claim(claim("data")).await.unwrap();
        objects.apply_claim(claim("spare")).await.unwrap();
        let pod = pod_using(&objects, "web", "data").await;
        assert!(matches!(
            objects.delete_claim("shop", "spare").await.unwrap(),
            ClaimDeletion::Deleted(_)
        ));
        let ClaimDeletion::Terminating(marked) =
            objects.delete_claim("shop", "data").await.unwrap()
        else {
            panic!("a claim in use is kept");
        };
        assert_eq!(marked.phase(), "Terminating");
        let err = objects.bind_claim("shop", "data", "n").await.unwrap_err();
        assert!(err.to_string().contains("being deleted"), "{err}");
        assert!(objects.release_claims().await.unwrap().is_empty());
        objects
            .delete_pod("shop", &pod.metadata.name)
            .await
            .unwrap();
        assert_eq!(objects.release_claims().await.unwrap(), ["shop/data"]);
        assert!(
            objects
                .get::<PersistentVolumeClaim>(Some("shop"), "data")
                .await
                .unwrap()
                .is_none()
        );
    }
}
