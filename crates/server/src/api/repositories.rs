//! A project's repositories and artifacts: list, inspect, delete.
//!
//! `{repository}` is the name inside the project with `/` written `%2F`
//! (`shop/team/web` is `team%2Fweb` under project `shop`), so that a path
//! parameter holds it whole. Deletes go out as registry events, as a
//! `DELETE /v2/...` would: the audit log and replication see them alike.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use wharf_api::repository::{ArtifactDetail, ArtifactSummary, RepositorySummary};
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
