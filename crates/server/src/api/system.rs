//! System settings, garbage collection and the audit log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_audit::{AuditEvent, AuditQuery, Outcome};
use wharf_auth::{Action, AuthError, Settings};
use wharf_registry::{GcOptions, GcReport};

use super::{ApiCaller, ApiErrorReply, ApiResult, Body};
use crate::AppState;

/// `GET /api/v1/settings`
pub(crate) async fn settings(State(state): State<Arc<AppState>>) -> ApiResult<Json<Settings>> {
    Ok(Json(state.identity.settings().await?))
}

/// `PUT /api/v1/settings`
pub(crate) async fn set_settings(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(settings): Body<Settings>,
) -> ApiResult<Json<Settings>> {
    if let Some(bad) = settings
        .host_path_prefixes
        .iter()
        .find(|p| !wharf_api::is_plain_absolute(p))
    {
        return Err(ApiErrorReply::invalid(format!(
            "host_path_prefixes: {bad:?} must be an absolute path without '.' or '..' components"
        )));
    }
    let work = state.identity.set_settings(&settings);
    state
        .audited(&caller, "settings.update", "settings".into(), work)
        .await?;
    Ok(Json(settings))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GcRequest {
    #[serde(default)]
    dry_run: bool,
    /// Overrides the configured grace period.
    grace_seconds: Option<u64>,
    /// Also delete manifests no tag reaches.
    #[serde(default)]
    delete_untagged: bool,
    /// Delete upload sessions idle this long (default: the upload TTL).
    uploads_older_than_seconds: Option<u64>,
}

/// `POST /api/v1/gc`
pub(crate) async fn gc(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    body: axum::body::Bytes,
) -> ApiResult<Json<GcReport>> {
    // An empty body means defaults.
    let request: GcRequest = match body.is_empty() {
        true => GcRequest::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| ApiErrorReply::invalid(format!("request body: {e}")))?,
    };
    let options = GcOptions {
        grace: request
            .grace_seconds
            .map_or(state.registry.config().gc_grace, Duration::from_secs),
        dry_run: request.dry_run,
        delete_untagged: request.delete_untagged,
        uploads_older_than: request.uploads_older_than_seconds.map(Duration::from_secs),
    };
    let work = state.registry.collect_garbage(options);
    let report = state
        .audited(&caller, "gc.run", "registry".into(), work)
        .await?;
    Ok(Json(report))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    project: Option<String>,
    resource: Option<String>,
    outcome: Option<Outcome>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit`: administrators see everything; project admins see
/// their project's events when they name it.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    if !caller.principal.is_admin() {
        let Some(project) = &params.project else {
            return Err(AuthError::Denied(
                "administrators only, or name a project you administer".into(),
            )
            .into());
        };
        state
            .identity
            .require(&caller.principal, project, Action::Admin)
            .await?;
    }
    let query = AuditQuery {
        actor: params.actor,
        action: params.action,
        resource_prefix: params.resource,
        project: params.project,
        outcome: params.outcome,
        since_ms: params.since_ms,
        until_ms: params.until_ms,
        limit: params.limit.unwrap_or(wharf_audit::DEFAULT_QUERY_LIMIT),
    };
    // Read-your-writes: events recorded just before are still being batched.
    // A failed earlier batch is the writer's to report, not this query's.
    if let Err(err) = state.audit.flush().await {
        tracing::warn!(error = %err, "audit events were lost before this query");
    }
    Ok(Json(state.audit.query(&query).await?))
}
