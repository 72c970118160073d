//! IP pools over HTTP: import from YAML, list with usage, show the
//! addresses held, delete; and the claim and release of a pod's address,
//! which node agents call.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_api::{IpClaim, IpPool};

use super::node_scope::{require_claim_of_callers_node, require_pod_of_callers_node};
use super::{ApiCaller, ApiErrorReply, ApiResult};
use crate::AppState;

fn summary(pool: &IpPool, used: usize) -> Value {
    let size = pool.addresses().map_or(0, |a| a.size());
    json!({
        "name": pool.metadata.name,
        "cidr": pool.spec.cidr,
        "gateway": pool.spec.gateway,
        "size": size,
        "used": used,
        "createdAt": pool.metadata.created_at,
    })
}

/// `GET /api/v1/ippools`: every pool with its size and addresses in use.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let objects = state.control.objects();
    let (pools, _) = objects.list::<IpPool>(None, None).await?;
    let mut items = Vec::new();
    for pool in &pools {
        let used = objects.pool_claims(&pool.metadata.name).await?.len();
        items.push(summary(pool, used));
    }
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/ippools/{pool}`: the pool, its usage and who holds what.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let objects = state.control.objects();
    let pool: IpPool = objects.require(None, &name).await?;
    let claims = objects.pool_claims(&name).await?;
    Ok(Json(json!({
        "pool": pool,
        "summary": summary(&pool, claims.len()),
        "claims": claims,
    })))
}

/// `POST /api/v1/ippools` with the YAML of one or more `IpPool`s: creates
/// them or replaces their spec. All are checked before any is stored.
pub(crate) async fn import(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiErrorReply::invalid("the pool file is not UTF-8 text"))?;
    let (pools, warnings) = wharf_api::parse_ip_pools(text)?;
    let names: Vec<String> = pools.iter().map(|p| p.metadata.name.clone()).collect();
    let objects = state.control.objects();
    let work = objects.import_ip_pools(pools);
    let resource = format!("ippool/{}", names.join(","));
    let created = state
        .audited(&caller, "ippool.import", resource, work)
        .await?;
    let results: Vec<Value> = names
        .iter()
        .zip(created)
        .map(|(name, created)| {
            json!({
                "kind": "IpPool",
                "name": name,
                "action": if created { "created" } else { "configured" },
            })
        })
        .collect();
    Ok(Json(json!({ "results": results, "warnings": warnings })))
}

/// `DELETE /api/v1/ippools/{pool}`: only a pool no pod holds addresses of.
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let objects = state.control.objects();
    let work = objects.delete_ip_pool(&name);
    let resource = format!("ippool/{name}");
    state
        .audited(&caller, "ippool.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/projects/{project}/pods/{name}/ip`: the pod's agent claims
/// the address the pod asks for (or gets the one it holds). `null`: the pod
/// asks for no pool.
pub(crate) async fn claim(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Option<IpClaim>>> {
    require_pod_of_callers_node(&state, &caller, &project, &name).await?;
    Ok(Json(
        state
            .control
            .objects()
            .claim_pod_ip(&project, &name)
            .await?,
    ))
}

#[derive(Deserialize)]
pub(crate) struct ReleaseParams {
    /// Only the claim of the pod with this uid.
    uid: Option<String>,
}

/// `DELETE /api/v1/projects/{project}/pods/{name}/ip[?uid=U]`: the agent
/// gives the address back once the pod is torn down.
pub(crate) async fn release(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<ReleaseParams>,
) -> ApiResult<Json<Option<IpClaim>>> {
    let uid = params.uid.as_deref();
    require_claim_of_callers_node(&state, &caller, &project, &name, uid).await?;
    Ok(Json(
        state
            .control
            .objects()
            .release_pod_ip(&project, &name, uid)
            .await?,
    ))
}
