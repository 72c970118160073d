//! Replication over HTTP: endpoints, policies, runs, jobs with per-task
//! progress, cancel, and an on-demand reconcile pass. Administrators only.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_replication::{EndpointCheck, EndpointSpec, JobDetail, Policy, ReplicationError};

use super::{ApiCaller, ApiError, ApiResult, Body};
use crate::AppState;

impl From<ReplicationError> for ApiError {
    fn from(err: ReplicationError) -> ApiError {
        let (status, code) = match &err {
            ReplicationError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID"),
            ReplicationError::NotFound { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ReplicationError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            ReplicationError::Remote { .. } => (StatusCode::BAD_GATEWAY, "ENDPOINT"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        ApiError::new(status, code, err.to_string())
    }
}

/// `GET /api/v1/replication/endpoints`.
pub(crate) async fn list_endpoints(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let items = state.replication.endpoints().await?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /api/v1/replication/endpoints`: the password is sealed before it
/// is stored and never shown again.
pub(crate) async fn add_endpoint(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(spec): Body<EndpointSpec>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = spec.name.clone();
    let result = state
        .replication
        .add_endpoint(spec)
        .await
        .map_err(ApiError::from);
    state.audit_action(&caller, "replication.endpoint.create", name, &result);
    Ok((StatusCode::CREATED, Json(json!(result?))))
}

/// `DELETE /api/v1/replication/endpoints/{name}`.
pub(crate) async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let result = state
        .replication
        .delete_endpoint(&name)
        .await
        .map_err(ApiError::from);
    state.audit_action(&caller, "replication.endpoint.delete", name, &result);
    result.map(|()| StatusCode::NO_CONTENT)
}

/// `POST /api/v1/replication/endpoints/{name}/check`: reaches the endpoint
/// with its credentials.
pub(crate) async fn check_endpoint(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<EndpointCheck>> {
    let instance = state.replication.check_endpoint(&name).await?;
    Ok(Json(EndpointCheck {
        reachable: true,
        instance,
    }))
}

/// `GET /api/v1/replication/policies`.
pub(crate) async fn list_policies(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let items = state.replication.policies().await?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/replication/policies/{name}`.
pub(crate) async fn show_policy(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(state.replication.policy(&name).await?))
}

/// `POST /api/v1/replication/policies`.
pub(crate) async fn add_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(policy): Body<Policy>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    let name = policy.name.clone();
    let result = state
        .replication
        .put_policy(policy, false)
        .await
        .map_err(ApiError::from);
    state.audit_action(&caller, "replication.policy.create", name, &result);
    Ok((StatusCode::CREATED, Json(result?)))
}

/// `PUT /api/v1/replication/policies/{name}`: replaces the policy.
pub(crate) async fn replace_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
    Body(policy): Body<Policy>,
) -> ApiResult<Json<Policy>> {
    if policy.name != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID",
            format!("the body names policy {}, the path {name}", policy.name),
        ));
    }
    let result = state
        .replication
        .put_policy(policy, true)
        .await
        .map_err(ApiError::from);
    state.audit_action(&caller, "replication.policy.update", name, &result);
    Ok(Json(result?))
}

/// `DELETE /api/v1/replication/policies/{name}`: unfinished jobs are cancelled.
pub(crate) async fn delete_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let result = state
        .replication
        .delete_policy(&name)
        .await
        .map_err(ApiError::from);
    state.audit_action(&caller, "replication.policy.delete", name, &result);
    result.map(|()| StatusCode::NO_CONTENT)
}

/// `POST /api/v1/replication/policies/{name}/run`: a manual run of
/// everything the policy matches.
pub(crate) async fn run_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let result = state
        .replication
        .run_policy(&name)
        .await
        .map_err(ApiError::from);
    state.audit_action(&caller, "replication.run", name, &result);
    Ok((StatusCode::CREATED, Json(json!(result?))))
}

#[derive(Deserialize)]
pub(crate) struct JobQuery {
    policy: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/replication/jobs?policy=&limit=`: newest first, with counts.
pub(crate) async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Query(query): Query<JobQuery>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let items = state
        .replication
        .jobs(query.policy.as_deref(), limit)
        .await?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/replication/jobs/{id}`: the job and every task's progress.
pub(crate) async fn show_job(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobDetail>> {
    Ok(Json(state.replication.job(&id).await?))
}

/// `POST /api/v1/replication/jobs/{id}/cancel`.
pub(crate) async fn cancel_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let result = state
        .replication
        .cancel_job(&id)
        .await
        .map_err(ApiError::from);
    state.audit_action(&caller, "replication.cancel", id, &result);
    Ok(Json(json!(result?)))
}

/// `POST /api/v1/replication/reconcile`: a reconcile pass now; the jobs it
/// created.
pub(crate) async fn reconcile(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
) -> ApiResult<Json<Value>> {
    let jobs = state.replication.reconcile().await;
    let result: Result<(), ApiError> = Ok(());
    state.audit_action(&caller, "replication.reconcile", "all".into(), &result);
    Ok(Json(json!({ "items": jobs })))
}
