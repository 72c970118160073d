//! Replication over HTTP: endpoints, policies, runs, jobs with per-task
//! progress, cancel, and an on-demand reconcile pass. Administrators only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_replication::{EndpointCheck, EndpointSpec, Policy};

use super::cluster::{line, ndjson};
use super::{ApiCaller, ApiErrorReply, ApiResult, Body};
use crate::AppState;

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
    let work = state.replication.add_endpoint(spec);
    let endpoint = state
        .audited(&caller, "replication.endpoint.create", name, work)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(endpoint))))
}

/// `DELETE /api/v1/replication/endpoints/{name}`: refused while a proxy
/// cache project pulls from it.
pub(crate) async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let work = async {
        let caches: Vec<String> = state
            .identity
            .list_projects(&caller.principal)
            .await?
            .into_iter()
            .filter(|p| p.proxy_cache.as_ref().is_some_and(|c| c.endpoint == name))
            .map(|p| p.name)
            .collect();
        if !caches.is_empty() {
            return Err(ApiErrorReply::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!(
                    "endpoint {name} is the upstream of proxy cache project(s) {}; \
                     delete them first",
                    caches.join(", ")
                ),
            ));
        }
        Ok(state.replication.delete_endpoint(&name).await?)
    };
    state
        .audited(&caller, "replication.endpoint.delete", name.clone(), work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
    let work = state.replication.put_policy(policy, false);
    let created = state
        .audited(&caller, "replication.policy.create", name, work)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `PUT /api/v1/replication/policies/{name}`: replaces the policy.
pub(crate) async fn replace_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
    Body(policy): Body<Policy>,
) -> ApiResult<Json<Policy>> {
    if policy.name != name {
        return Err(ApiErrorReply::invalid(format!(
            "the body names policy {}, the path {name}",
            policy.name
        )));
    }
    let work = state.replication.put_policy(policy, true);
    let replaced = state
        .audited(&caller, "replication.policy.update", name, work)
        .await?;
    Ok(Json(replaced))
}

/// `DELETE /api/v1/replication/policies/{name}`: unfinished jobs are cancelled.
pub(crate) async fn delete_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let work = state.replication.delete_policy(&name);
    state
        .audited(&caller, "replication.policy.delete", name.clone(), work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/replication/policies/{name}/run`: a manual run of
/// everything the policy matches.
pub(crate) async fn run_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let work = state.replication.run_policy(&name);
    let job = state
        .audited(&caller, "replication.run", name.clone(), work)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(job))))
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

/// `?watch=true` on a job.
#[derive(Deserialize)]
pub(crate) struct ShowJobQuery {
    #[serde(default)]
    watch: bool,
}

/// `GET /api/v1/replication/jobs/{id}[?watch=true]`: the job and every
/// task's progress; with `watch=true` a stream of JSON lines, the detail
/// now (`ADDED`) and after each change (`MODIFIED`), ending once the job is
/// final (or with an `ERROR` line).
pub(crate) async fn show_job(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<ShowJobQuery>,
) -> ApiResult<Response> {
    if !query.watch {
        return Ok(Json(state.replication.job(&id).await?).into_response());
    }
    let details = state.replication.watch_job(&id).await?;
    let lines = details
        .enumerate()
        .map(|(n, detail)| {
            Ok::<Bytes, std::io::Error>(match detail {
                Ok(detail) if n == 0 => line("ADDED", &detail),
                Ok(detail) => line("MODIFIED", &detail),
                Err(err) => line("ERROR", &json!({ "message": err.to_string() })),
            })
        })
        .boxed();
    Ok(ndjson(&state, lines))
}

/// `POST /api/v1/replication/jobs/{id}/cancel`.
pub(crate) async fn cancel_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let work = state.replication.cancel_job(&id);
    let job = state
        .audited(&caller, "replication.cancel", id.clone(), work)
        .await?;
    Ok(Json(json!(job)))
}

/// `POST /api/v1/replication/reconcile`: a reconcile pass now; the jobs it
/// created.
pub(crate) async fn reconcile(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
) -> ApiResult<Json<Value>> {
    // A pass cannot fail; it is audited all the same.
    let work = async { Ok::<_, ApiErrorReply>(state.replication.reconcile().await) };
    let jobs = state
        .audited(&caller, "replication.reconcile", "all".into(), work)
        .await?;
    Ok(Json(json!({ "items": jobs })))
}
