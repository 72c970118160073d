//! A project's repositories and artifacts: list, inspect, delete.
//!
//! `{repository}` is the name inside the project with `/` written `%2F`
//! (`shop/team/web` is `team%2Fweb` under project `shop`), so that a path
//! parameter holds it whole. Deletes go out as registry events, as a
//! `DELETE /v2/...` would: the audit log and replication see them alike.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use wharf_api::repository::{
    ArtifactDetail, ArtifactSummary, ImageDistribution, LayerDistribution, NodeHolding,
    RepositorySummary,
};
use wharf_api::{LABEL_IDC, LABEL_POOL, Node};
use wharf_oci::{Reference, RepositoryName};
use wharf_registry::http::{EventKind, RegistryEvent};
use wharf_registry::{DeleteOutcome, Origin};

use super::{ApiCaller, ApiErrorReply, ApiResult};
use crate::AppState;

/// The full repository name of `repository` in `project`.
fn repository_name(project: &str, repository: &str) -> ApiResult<RepositoryName> {
    format!("{project}/{repository}").parse().map_err(|e| {
        ApiErrorReply::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("{project}/{repository}: {e}"),
        )
    })
}

/// Deletes in a proxy cache project are refused, as `/v2/` refuses them:
/// only the cache writes there.
async fn refuse_in_proxy_cache(state: &AppState, project: &str) -> ApiResult<()> {
    match state.identity.project(project).await?.proxy_cache {
        None => Ok(()),
        Some(proxy) => Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!(
                "project {project} is a proxy cache of endpoint {}: it takes no pushes or \
                 deletes; to empty it, delete the project with --force",
                proxy.endpoint
            ),
        )),
    }
}

fn reference_of(reference: &str) -> ApiResult<Reference> {
    reference.parse().map_err(|e| {
        ApiErrorReply::new(
            StatusCode::BAD_REQUEST,
            "REFERENCE_INVALID",
            format!("{reference}: {e}"),
        )
    })
}

/// `GET /api/v1/projects/{project}/repositories`
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<RepositorySummary>>> {
    Ok(Json(state.registry.repositories_of(&project).await?))
}

/// `GET /api/v1/projects/{project}/repositories/{repository}/artifacts`
pub(crate) async fn artifacts(
    State(state): State<Arc<AppState>>,
    Path((project, repository)): Path<(String, String)>,
) -> ApiResult<Json<Vec<ArtifactSummary>>> {
    let repo = repository_name(&project, &repository)?;
    Ok(Json(state.registry.artifacts(&repo).await?))
}

/// `GET /api/v1/projects/{project}/repositories/{repository}/artifacts/{reference}`
pub(crate) async fn inspect(
    State(state): State<Arc<AppState>>,
    Path((project, repository, reference)): Path<(String, String, String)>,
) -> ApiResult<Json<ArtifactDetail>> {
    let repo = repository_name(&project, &repository)?;
    let reference = reference_of(&reference)?;
    Ok(Json(state.registry.inspect(&repo, &reference).await?))
}

/// `GET .../artifacts/{reference}/distribution`: which nodes' caches hold
/// which layers of the image (all platforms of an index), as each node
/// last reported its cache.
pub(crate) async fn distribution(
    State(state): State<Arc<AppState>>,
    Path((project, repository, reference)): Path<(String, String, String)>,
) -> ApiResult<Json<ImageDistribution>> {
    let repo = repository_name(&project, &repository)?;
    let reference = reference_of(&reference)?;
    let detail = state.registry.inspect(&repo, &reference).await?;
    let mut layers = detail.layers.clone();
    for child in &detail.manifests {
        let child = reference_of(&child.digest)?;
        layers.extend(state.registry.inspect(&repo, &child).await?.layers);
    }
    let mut seen = BTreeSet::new();
    layers.retain(|l| seen.insert(l.digest.clone()));
    let (nodes, _): (Vec<Node>, _) = state.control.objects().list(None, None).await?;
    Ok(Json(distribution_of(
        repo.to_string(),
        detail.summary.digest,
        &layers,
        &nodes,
    )))
}

/// The distribution of `layers` over what `nodes` report.
fn distribution_of(
    repository: String,
    digest: String,
    layers: &[wharf_api::repository::BlobSummary],
    nodes: &[Node],
) -> ImageDistribution {
    let mut by_layer: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut holdings = Vec::new();
    let mut unreported = Vec::new();
    for node in nodes {
        let name = &node.metadata.name;
        let Some(cached) = &node.status.layers else {
            unreported.push(name.clone());
            continue;
        };
        let cached: BTreeSet<&str> = cached.iter().map(|l| l.digest.as_str()).collect();
        let held: Vec<_> = layers
            .iter()
            .filter(|l| cached.contains(l.digest.as_str()))
            .collect();
        if held.is_empty() {
            continue;
        }
        for layer in &held {
            by_layer
                .entry(layer.digest.as_str())
                .or_default()
                .push(name.clone());
        }
        let label = |key: &str| node.metadata.labels.get(key).cloned();
        holdings.push(NodeHolding {
            node: name.clone(),
            idc: label(LABEL_IDC),
            pool: label(LABEL_POOL),
            layers: held.len(),
            bytes: held.iter().map(|l| l.size).sum(),
            complete: held.len() == layers.len(),
        });
    }
    holdings.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.node.cmp(&b.node)));
    unreported.sort();
    let layers = layers
        .iter()
        .map(|l| {
            let mut nodes = by_layer.remove(l.digest.as_str()).unwrap_or_default();
            nodes.sort();
            LayerDistribution {
                digest: l.digest.clone(),
                size: l.size,
                nodes,
            }
        })
        .collect();
    ImageDistribution {
        repository,
        digest,
        layers,
        nodes: holdings,
        unreported,
    }
}

/// `DELETE /api/v1/projects/{project}/repositories/{repository}/artifacts/{reference}`:
/// a tag alone, or (by digest) a manifest with its tags.
pub(crate) async fn delete_artifact(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, repository, reference)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let repo = repository_name(&project, &repository)?;
    let reference = reference_of(&reference)?;
    refuse_in_proxy_cache(&state, &project).await?;
    let (outcome, origin) = state
        .registry
        .delete_with_origin(&repo, &reference, None)
        .await?;
    let tag_moved = matches!(reference, Reference::Tag(_)) && outcome == DeleteOutcome::Deleted;
    state.announce_delete(&caller, &repo, reference.to_string(), origin, tag_moved);
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/projects/{project}/repositories/{repository}`: every
/// artifact and tag of the repository.
pub(crate) async fn delete_repository(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, repository)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let repo = repository_name(&project, &repository)?;
    refuse_in_proxy_cache(&state, &project).await?;
    let deleted = state.registry.delete_repository(&repo).await?;
    for (digest, origin) in &deleted {
        state.announce_delete(&caller, &repo, digest.to_string(), origin.clone(), false);
    }
    Ok(Json(
        serde_json::json!({ "deletedManifests": deleted.len() }),
    ))
}

impl AppState {
    /// Tells the registry's event sinks (audit, replication) about a
    /// delete made through the API.
    pub(crate) fn announce_delete(
        &self,
        caller: &ApiCaller,
        repo: &RepositoryName,
        reference: String,
        origin: Origin,
        tag_moved: bool,
    ) {
        self.registry_events.record(RegistryEvent {
            kind: EventKind::Delete,
            repository: repo.clone(),
            digest: reference.parse().ok(),
            reference,
            actor: caller.principal.name().to_string(),
            source: caller.source,
            origin: Some(origin),
            conflict: None,
            tag_moved,
        });
    }
}
