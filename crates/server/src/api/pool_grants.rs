//! Pool grants over HTTP: which projects may place pods on which managed
//! pools, with their quotas (`/api/v1/poolgrants[/{pool}.{project}]`).
//! Also applied as YAML (`kind: PoolGrant`) through `/api/v1/apply`.
//! Reading them is the inventory's `read`, changing them its `manage`
//! (`inventory_access.rs`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_api::PoolGrant;

use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;

#[derive(Deserialize)]
pub(crate) struct GrantFilter {
    pool: Option<String>,
    project: Option<String>,
}

/// `GET /api/v1/poolgrants[?pool=P&project=Q]`
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Query(filter): Query<GrantFilter>,
) -> ApiResult<Json<Value>> {
    let (grants, _) = state
        .control
        .objects()
        .list::<PoolGrant>(None, None)
        .await?;
    let items: Vec<PoolGrant> = grants
        .into_iter()
        .filter(|g| filter.pool.as_ref().is_none_or(|p| *p == g.spec.pool))
        .filter(|g| filter.project.as_ref().is_none_or(|p| *p == g.spec.project))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/poolgrants/{pool}.{project}`
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<PoolGrant>> {
    let grant = state.control.objects().require(None, &name).await?;
    Ok(Json(grant))
}

/// `POST /api/v1/poolgrants`: a new grant; the project and the pool must
/// exist, and a second grant of the pair is refused (apply updates one).
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    JsonBody(grant): JsonBody<PoolGrant>,
) -> ApiResult<(StatusCode, Json<PoolGrant>)> {
    let resource = format!(
        "poolgrant/{}",
        PoolGrant::name_for(&grant.spec.pool, &grant.spec.project)
    );
    let work = async {
        state.identity.project(&grant.spec.project).await?;
        Ok::<_, ApiErrorReply>(
            wharf_control::create_pool_grant(state.control.objects(), grant).await?,
        )
    };
    let created = state
        .audited(&caller, "poolgrant.create", resource, work)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates or updates a grant from a manifest: `true` if created.
pub(crate) async fn apply(
    state: &AppState,
    caller: &ApiCaller,
    grant: PoolGrant,
) -> ApiResult<(PoolGrant, bool)> {
    let resource = format!("poolgrant/{}", grant.metadata.name);
    let work = async {
        state.identity.project(&grant.spec.project).await?;
        Ok::<_, ApiErrorReply>(
            wharf_control::apply_pool_grant(state.control.objects(), grant).await?,
        )
    };
    state
        .audited(caller, "poolgrant.apply", resource, work)
        .await
}

/// `DELETE /api/v1/poolgrants/{pool}.{project}`: the project's pods stay
/// where they run; new ones no longer go to the pool.
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let objects = state.control.objects();
    let work = objects.delete::<PoolGrant>(None, &name, None);
    state
        .audited(
            &caller,
            "poolgrant.delete",
            format!("poolgrant/{name}"),
            work,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
