//! Deployment rollouts: the revision history and undo. Pause, resume,
//! restart and `set image` are plain deployment updates (PUT).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_api::Deployment;

use super::{ApiCaller, ApiResult, Body as JsonBody};
use crate::AppState;

/// `GET /api/v1/projects/{project}/deployments/{name}/revisions`: the
/// deployment's revisions, oldest first.
pub(crate) async fn list_revisions(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let objects = state.control.objects();
    let deployment: Deployment = objects.require(Some(&project), &name).await?;
    let revisions = wharf_control::revisions_of(objects, &deployment).await?;
    Ok(Json(json!({
        "apiVersion": "v1",
        "kind": "DeploymentRevisionList",
        "items": revisions,
    })))
}

/// Body of an undo: the revision to go back to; absent or 0 for the one
/// before the current.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RollbackRequest {
    #[serde(default)]
    to_revision: u64,
}

/// `POST /api/v1/projects/{project}/deployments/{name}/rollback`: the
/// deployment takes that revision's template again.
pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    JsonBody(request): JsonBody<RollbackRequest>,
) -> ApiResult<Json<Deployment>> {
    let work = state
        .control
        .undo_deployment(&project, &name, request.to_revision);
    let resource = format!("{project}/deployment/{name}");
    let undone = state
        .audited(&caller, "deployment.rollback", resource, work)
        .await?;
    Ok(Json(undone))
}
