//! Deployment revisions: one `DeploymentRevision` object per distinct
//! template, owned by the deployment, numbered in the order the templates
//! became current. Undo copies a revision's template back.

use wharf_api::{
    ANNOTATION_CHANGE_CAUSE, ANNOTATION_REVISION, Deployment, DeploymentRevision, ObjectMeta,
    OwnerReference,
};

use crate::ControlError;
use crate::objects::Objects;

/// The revisions of `deployment`, oldest first.
pub async fn revisions_of(
    objects: &Objects,
    deployment: &Deployment,
) -> Result<Vec<DeploymentRevision>, ControlError> {
    let project = deployment.metadata.project.as_deref();
    let prefix = format!("{}-", deployment.metadata.name);
    let (mut revisions, _) = objects
        .list_named::<DeploymentRevision>(project, &prefix, None)
        .await?;
    revisions.retain(|r| owned_by(r, deployment));
    revisions.sort_by_key(|r| r.revision);
    Ok(revisions)
}

fn owned_by(revision: &DeploymentRevision, deployment: &Deployment) -> bool {
    revision
        .metadata
        .owner_references
        .iter()
        .any(|o| o.kind == "Deployment" && o.uid == deployment.metadata.uid)
}

/// Makes the template of `hash` the newest revision (a new number unless it
/// already is the newest), drops old revisions beyond the history limit
/// except those in `live_hashes`, and returns the current revision number.
pub(crate) async fn record(
    objects: &Objects,
    deployment: &Deployment,
    hash: &str,
    live_hashes: &[&str],
) -> Result<u64, ControlError> {
    let revisions = revisions_of(objects, deployment).await?;
    let name = format!("{}-{hash}", deployment.metadata.name);
    let newest = revisions.last().map_or(0, |r| r.revision);
    let current = match revisions.iter().find(|r| r.metadata.name == name) {
        Some(r) if r.revision == newest => newest,
        // An older template is back (undo, or an apply of an old YAML): it
        // becomes the newest, as Kubernetes renumbers its ReplicaSet.
        Some(_) => {
            let project = deployment.metadata.project.as_deref();
            objects
                .modify::<DeploymentRevision>(project, &name, |r| {
                    r.revision = newest + 1;
                    true
                })
                .await?;
            newest + 1
        }
        None => {
            objects
                .create(revision_for(deployment, &name, newest + 1))
                .await?;
            newest + 1
        }
    };
    prune(objects, deployment, &revisions, &name, live_hashes).await?;
    Ok(current)
}

fn revision_for(deployment: &Deployment, name: &str, number: u64) -> DeploymentRevision {
    DeploymentRevision {
        metadata: ObjectMeta {
            name: name.into(),
            project: deployment.metadata.project.clone(),
            owner_references: vec![OwnerReference {
                kind: "Deployment".into(),
                name: deployment.metadata.name.clone(),
                uid: deployment.metadata.uid.clone(),
            }],
            ..ObjectMeta::default()
        },
        revision: number,
        template: deployment.spec.template.clone(),
        change_cause: deployment
            .metadata
            .annotations
            .get(ANNOTATION_CHANGE_CAUSE)
            .cloned(),
    }
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit`, never the
/// current one nor one whose pods still exist.
async fn prune(
    objects: &Objects,
    deployment: &Deployment,
    revisions: &[DeploymentRevision],
    current: &str,
    live_hashes: &[&str],
) -> Result<(), ControlError> {
    let limit = deployment
        .spec
        .revision_history_limit
        .unwrap_or(wharf_api::rollout::DEFAULT_REVISION_HISTORY_LIMIT) as usize;
    let prefix_len = deployment.metadata.name.len() + 1;
    let old: Vec<&DeploymentRevision> = revisions
        .iter()
        .filter(|r| r.metadata.name != current)
        .filter(|r| !live_hashes.contains(&&r.metadata.name[prefix_len..]))
        .collect();
    let project = deployment.metadata.project.as_deref();
    for r in &old[..old.len().saturating_sub(limit)] {
        match objects
            .delete::<DeploymentRevision>(project, &r.metadata.name, None)
            .await
        {
            Ok(_) | Err(ControlError::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Deletes the revisions of deployment `name` (gone) in `project`.
pub(crate) async fn delete_revisions_of(
    objects: &Objects,
    project: &str,
    name: &str,
) -> Result<(), ControlError> {
    let (revisions, _) = objects
        .list_named::<DeploymentRevision>(Some(project), &format!("{name}-"), None)
        .await?;
    for r in revisions {
        if r.metadata.owner_references.iter().any(|o| o.name == name) {
            match objects
                .delete::<DeploymentRevision>(Some(project), &r.metadata.name, None)
                .await
            {
                Ok(_) | Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

/// Rolls deployment `project/name` back to revision `to` (0: the one
/// before the current), as `kubectl rollout undo`: its template becomes
/// the deployment's, and the controller makes it the newest revision.
pub async fn undo(
    objects: &Objects,
    project: &str,
    name: &str,
    to: u64,
) -> Result<Deployment, ControlError> {
    let deployment: Deployment = objects.require(Some(project), name).await?;
    let revisions = revisions_of(objects, &deployment).await?;
    let current = deployment
        .metadata
        .annotations
        .get(ANNOTATION_REVISION)
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or_else(|| revisions.last().map_or(0, |r| r.revision));
    let target = if to == 0 {
        revisions.iter().rev().find(|r| r.revision < current)
    } else {
        revisions.iter().find(|r| r.revision == to)
    };
    let Some(target) = target else {
        return Err(ControlError::Invalid(wharf_api::ObjectError::Invalid {
            field: "toRevision".into(),
            message: if to == 0 {
                format!("deployment {name} has no revision before {current}")
            } else {
                format!("deployment {name} has no revision {to}")
            },
        }));
    };
    let template = target.template.clone();
    let cause = target.change_cause.clone();
    objects
        .modify::<Deployment>(Some(project), name, |d| {
            if d.spec.template == template {
                return false;
            }
            d.spec.template = template.clone();
            d.metadata.generation += 1;
            match &cause {
                Some(cause) => d
                    .metadata
                    .annotations
                    .insert(ANNOTATION_CHANGE_CAUSE.into(), cause.clone()),
                None => d.metadata.annotations.remove(ANNOTATION_CHANGE_CAUSE),
            };
            true
        })
        .await
}
