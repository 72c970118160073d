//! Preheat jobs: created by registry pushes that match a project's
//! [`PreheatPolicy`] (the [`PreheatTrigger`] event sink) or by `wharf image
//! preheat` (the API), resolved to nodes once, then driven by the nodes'
//! agents, which pull the image into their caches and report back
//! (`api/preheats.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;

use wharf_api::Node;
use wharf_api::preheat::{
    NodePreheatState, PREHEAT_RETENTION_MILLIS, Preheat, PreheatPolicy, PreheatReport,
    PreheatTarget, preheat_targets,
};
use wharf_control::{ControlError, Objects};
use wharf_oci::{Digest, Reference, RepositoryName};
use wharf_registry::http::{EventKind, EventSink, RegistryEvent};

/// Who started a preheat and why.
pub(crate) struct PreheatOrigin {
    /// The policy, for a push that matched one.
    pub policy: Option<String>,
    /// The pusher, or the caller of `wharf image preheat`.
    pub requested_by: String,
}

/// Creates a preheat of `repository@digest` (named by `reference`) for the
/// nodes `target` resolves to now among the registered nodes, after
/// tidying the project's preheats ([`tidy_project`]).
pub(crate) async fn start_preheat(
    objects: &Objects,
    repository: &RepositoryName,
    reference: &str,
    digest: &Digest,
    target: PreheatTarget,
    origin: PreheatOrigin,
) -> Result<Preheat, ControlError> {
    let (nodes, _) = objects.list::<Node>(None, None).await?;
    let chosen = preheat_targets(&nodes, &target);
    let mut preheat = Preheat::new(repository, reference, digest, target, chosen, now_millis());
    preheat.spec.policy = origin.policy;
    preheat.spec.requested_by = origin.requested_by;
    // Two preheats of one image in one millisecond (two policies, say)
    // would share a name: the later one takes the next free millisecond.
    let registered: BTreeSet<&str> = nodes.iter().map(|n| n.metadata.name.as_str()).collect();
    tidy_project(objects, repository.project(), &registered, now_millis()).await;
    for _ in 0..16 {
        match objects.create(preheat.clone()).await {
            Err(ControlError::Conflict(_)) => {
                let next = now_millis() + 1;
                preheat.metadata.name = Preheat::name_for(digest, next);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
    Err(ControlError::Conflict(format!(
        "preheat {} keeps colliding with another of the same image",
        preheat.metadata.name
    )))
}

/// Keeps `project`'s preheats bounded and honest: those that expired
/// ([`Preheat::expired`]) by `now` are deleted, and a node that is no
/// longer `registered` (deleted or decommissioned) is marked `Failed` in
/// the preheats it never finished, which would otherwise wait for it
/// forever. Best effort: a failure is logged, the next preheat tries again.
pub(crate) async fn tidy_project(
    objects: &Objects,
    project: &str,
    registered: &BTreeSet<&str>,
    now: u64,
) {
    let listed = objects.list::<Preheat>(Some(project), None).await;
    let preheats = match listed {
        Ok((preheats, _)) => preheats,
        Err(err) => {
            tracing::warn!(error = %err, project, "listing preheats to tidy failed");
            return;
        }
    };
    for preheat in &preheats {
        let name = &preheat.metadata.name;
        if preheat.expired(now, PREHEAT_RETENTION_MILLIS) {
            let deleted = objects.delete::<Preheat>(Some(project), name, None).await;
            if let Err(err) = deleted
                && !matches!(err, ControlError::NotFound { .. })
            {
                tracing::warn!(error = %err, project, preheat = name, "pruning a finished preheat failed");
            }
            continue;
        }
        let gone: Vec<String> = preheat
            .status
            .nodes
            .iter()
            .filter(|n| !n.state.is_final() && !registered.contains(n.node.as_str()))
            .map(|n| n.node.clone())
            .collect();
        if gone.is_empty() {
            continue;
        }
        let marked = objects
            .modify::<Preheat>(Some(project), name, |preheat| {
                let mut changed = false;
                for node in &gone {
                    let report = PreheatReport {
                        state: NodePreheatState::Failed,
                        message: Some(format!("node {node} no longer exists")),
                        ..PreheatReport::default()
                    };
                    changed |= preheat.record(node, &report, now).is_ok();
                }
                changed
            })
            .await;
        if let Err(err) = marked {
            tracing::warn!(error = %err, project, preheat = name, "marking removed nodes failed");
        }
    }
}

/// Creates one preheat per policy of the pushed repository's project that
/// matches its repository and tag.
pub(crate) async fn preheat_push(
    objects: &Objects,
    repository: &RepositoryName,
    tag: &str,
    digest: &Digest,
    pusher: &str,
) -> Result<Vec<Preheat>, ControlError> {
    let project = repository.project();
    let within = repository
        .as_str()
        .strip_prefix(&format!("{project}/"))
        .unwrap_or_default();
    let (policies, _) = objects.list::<PreheatPolicy>(Some(project), None).await?;
    let mut started = Vec::new();
    for policy in policies.iter().filter(|p| p.matches(within, tag)) {
        let origin = PreheatOrigin {
            policy: Some(policy.metadata.name.clone()),
            requested_by: pusher.to_string(),
        };
        let target = policy.spec.target.clone();
        started.push(start_preheat(objects, repository, tag, digest, target, origin).await?);
    }
    Ok(started)
}

/// Turns tag pushes into preheats. Never blocks the push: the matching
/// runs on its own task.
pub(crate) struct PreheatTrigger(pub Objects);

impl EventSink for PreheatTrigger {
    fn record(&self, event: RegistryEvent) {
        // Only a tag now pointing at a pushed manifest: pushes by digest
        // carry no tag to match, a write that lost a conflict moved nothing.
        if event.kind != EventKind::Push || !event.tag_moved {
            return;
        }
        let (Some(digest), Ok(Reference::Tag(tag))) =
            (event.digest.clone(), event.reference.parse::<Reference>())
        else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let objects = self.0.clone();
        runtime.spawn(async move {
            let started = preheat_push(
                &objects,
                &event.repository,
                tag.as_str(),
                &digest,
                &event.actor,
            )
            .await;
            match started {
                Ok(started) => {
                    for preheat in started {
                        tracing::info!(
                            preheat = preheat.metadata.name,
                            image = preheat.image(),
                            nodes = preheat.status.nodes.len(),
                            "push matched a preheat policy"
                        );
                    }
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    repository = %event.repository,
                    "preheat on push failed"
                ),
            }
        });
    }
}

/// The preheats of `node` it has yet to finish, across every project.
pub(crate) async fn open_for_node(
    objects: &Objects,
    node: &str,
) -> Result<Vec<Preheat>, ControlError> {
    let (all, _) = objects.list::<Preheat>(None, None).await?;
    Ok(all
        .into_iter()
        .filter(|p| {
            p.status
                .nodes
                .iter()
                .any(|n| n.node == node && !n.state.is_final())
        })
        .collect())
}

/// Deletes a project's preheat policies and jobs (with the project).
pub(crate) async fn delete_project_preheats(
    objects: &Objects,
    project: &str,
) -> Result<usize, ControlError> {
    Ok(objects.delete_in_project::<PreheatPolicy>(project).await?
        + objects.delete_in_project::<Preheat>(project).await?)
}

/// The trigger as a shareable sink.
pub(crate) fn trigger(objects: Objects) -> Arc<dyn EventSink> {
    Arc::new(PreheatTrigger(objects))
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
