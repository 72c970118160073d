//! PersistentVolumeClaims over HTTP, authorized as ConfigMaps: reading
//! takes `pull` (guests), creating `push` (developers), deleting `delete`.
//! Applying goes through `/api/v1/apply` like every manifest kind.
//!
//! A node's agent lists the claims bound to it through
//! `/api/v1/nodes/{node}/persistentvolumeclaims`, and only those: it keeps
//! a directory per claim and removes the directories of claims no longer
//! listed.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};
use wharf_api::PersistentVolumeClaim;
use wharf_control::ClaimDeletion;

use super::cluster::{create_in_project, list_of};
use super::{ApiCaller, ApiResult, Body as JsonBody};
use crate::AppState;

/// `POST /api/v1/projects/{project}/persistentvolumeclaims`: creates; an
/// existing one is a conflict (as `kubectl create`).
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    JsonBody(mut claim): JsonBody<PersistentVolumeClaim>,
) -> ApiResult<(StatusCode, Json<PersistentVolumeClaim>)> {
    claim.normalize();
    let kind = "persistentvolumeclaim";
    create_in_project(&state, &caller, &project, kind, claim, |c| c.validate()).await
}

/// `DELETE /api/v1/projects/{project}/persistentvolumeclaims/{name}`:
/// `202` with the claim, Terminating, while pods use it; `200` with the
/// claim deleted when no pod did.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let objects = state.control.objects();
    let work = objects.delete_claim(&project, &name);
    let resource = format!("{project}/persistentvolumeclaim/{name}");
    let deletion = state
        .audited(&caller, "persistentvolumeclaim.delete", resource, work)
        .await?;
    Ok(match deletion {
        ClaimDeletion::Deleted(claim) => (StatusCode::OK, Json(json!(claim))),
        ClaimDeletion::Terminating(claim) => (StatusCode::ACCEPTED, Json(json!(claim))),
    })
}

/// `GET /api/v1/nodes/{node}/persistentvolumeclaims`: the claims bound to
/// the node, for its agent.
pub(crate) async fn node_claims(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> ApiResult<Json<Value>> {
    let claims = state.control.objects().claims_on_node(&node).await?;
    Ok(list_of(claims))
}

/// `GET /api/v1/projects/{project}/persistentvolumeclaims/{name}/users`:
/// the pods using the claim, by name (for `describe`).
pub(crate) async fn users(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let pods = state.control.objects().claim_users(&project, &name).await?;
    let names: Vec<&str> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
    Ok(Json(json!({ "pods": names })))
}
