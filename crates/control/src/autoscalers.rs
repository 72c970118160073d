//! HorizontalPodAutoscaler objects: applied from manifests (the spec is the
//! user's, the status the autoscaler's) and deleted with their project.
//! The controller that acts on them is `hpa_controller`.

use wharf_api::{Deployment, HorizontalPodAutoscaler};

use crate::ControlError;
use crate::objects::{Objects, take_applied_metadata};

impl Objects {
    /// Creates an autoscaler, or updates its spec, labels and annotations
    /// (keeping the status the controller wrote); `true` if it was created.
    pub async fn apply_hpa(
        &self,
        mut hpa: HorizontalPodAutoscaler,
    ) -> Result<(HorizontalPodAutoscaler, bool), ControlError> {
        hpa.validate()?;
        hpa.status = Default::default();
        let applied = hpa.clone();
        self.create_or_modify(hpa, |current: &mut HorizontalPodAutoscaler| {
            let spec_changed = current.spec != applied.spec;
            if spec_changed {
                current.spec = applied.spec.clone();
                current.metadata.generation += 1;
            }
            // `wharf autoscale` makes the deployment the owner.
            let owners = &applied.metadata.owner_references;
            let owners_changed = current.metadata.owner_references != *owners;
            current.metadata.owner_references = owners.clone();
            take_applied_metadata(&mut current.metadata, &applied.metadata)
                || spec_changed
                || owners_changed
        })
        .await
    }

    /// Deletes every autoscaler of `project`; returns how many.
    pub async fn delete_project_hpas(&self, project: &str) -> Result<usize, ControlError> {
        self.delete_in_project::<HorizontalPodAutoscaler>(project)
            .await
    }

    /// Sets a deployment's replica count: what `wharf scale` and the
    /// autoscaler both do. Only the generation moves; the template, and so
    /// the revision, stay as they are.
    pub async fn scale_deployment(
        &self,
        project: &str,
        name: &str,
        replicas: u32,
    ) -> Result<Deployment, ControlError> {
        self.modify::<Deployment>(Some(project), name, |d| {
            let changed = d.spec.replicas != replicas;
            if changed {
                d.spec.replicas = replicas;
                d.metadata.generation += 1;
            }
            changed
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{deployment, hpa, objects};

    #[tokio::test]
    async fn apply_keeps_the_status_and_project_deletion_removes_all() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let (created, new) = objects.apply_hpa(hpa("web", 3)).await.unwrap();
        assert!(new);
        assert_eq!(created.metadata.generation, 1);
        objects
            .modify::<HorizontalPodAutoscaler>(Some("shop"), "web", |h| {
                h.status.desired_replicas = 2;
                true
            })
            .await
            .unwrap();
        let (same, new) = objects.apply_hpa(hpa("web", 3)).await.unwrap();
        assert!(!new);
        assert_eq!(same.metadata.generation, 1, "nothing changed");
        let (wider, _) = objects.apply_hpa(hpa("web", 5)).await.unwrap();
        assert_eq!(wider.metadata.generation, 2);
        assert_eq!(wider.spec.max_replicas, 5);
        assert_eq!(wider.status.desired_replicas, 2, "the status stays");
        let mut bad = hpa("api", 3);
        bad.spec.min_replicas = Some(4);
        assert!(objects.apply_hpa(bad).await.is_err());
        objects.apply_hpa(hpa("api", 3)).await.unwrap();
        assert_eq!(objects.delete_project_hpas("shop").await.unwrap(), 2);
        let (left, _) = objects
            .list::<HorizontalPodAutoscaler>(Some("shop"), None)
            .await
            .unwrap();
        assert!(left.is_empty());
    }

    #[tokio::test]
    async fn a_scale_moves_the_generation_only() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let web = deployment(&objects, "web").await;
        let scaled = objects.scale_deployment("shop", "web", 3).await.unwrap();
        assert_eq!(scaled.spec.replicas, 3);
        assert_eq!(scaled.metadata.generation, web.metadata.generation + 1);
        assert_eq!(scaled.spec.template, web.spec.template);
    }
}
