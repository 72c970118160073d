//! Logging in to the API and refreshing tokens.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_audit::{AuditEvent, Outcome};
use wharf_auth::Principal;

use super::{ApiCaller, ApiResult, Body};
use crate::AppState;
use crate::registry_auth::token_rejected;

#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
}

/// `POST /api/v1/login`: password for an access and a refresh token.
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(request): Body<LoginRequest>,
) -> ApiResult<Json<Value>> {
    let principal =
        password_login(&state, &caller, &request.username, &request.password, "api").await?;
    let access = state.identity.issue_api_token(&principal).await?;
    let refresh = state.identity.issue_refresh_token(&principal).await?;
    Ok(Json(json!({
        "access_token": access.token,
        "expires_in": access.expires_in,
        "refresh_token": refresh.token,
        "refresh_expires_in": refresh.expires_in,
        "user": principal.name(),
        "admin": principal.is_admin(),
    })))
}

/// Checks a password, throttled per user and source, and audits the
/// attempt as a `login` on `resource` (`api` for the CLI's tokens,
/// `dashboard` for browser sessions).
pub(crate) async fn password_login(
    state: &AppState,
    caller: &ApiCaller,
    username: &str,
    password: &str,
    resource: &str,
) -> ApiResult<Principal> {
    let outcome = state
        .identity
        .authenticate(username, password, caller.source)
        .await;
    let event = match &outcome {
        Ok(_) => AuditEvent::new(username, "login", resource, Outcome::Success),
        Err(err) => AuditEvent::new(username, "login", resource, Outcome::Failed)
            .with_detail(err.to_string()),
    };
    state.audit.record(event.with_source(caller.source));
    Ok(outcome?)
}

#[derive(Deserialize)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

/// `POST /api/v1/token`: a refresh token for a new access token.
pub(crate) async fn refresh(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(request): Body<RefreshRequest>,
) -> ApiResult<Json<Value>> {
    let token = &request.refresh_token;
    let principal = match state.identity.verify_refresh_token(token).await {
        Ok(principal) => principal,
        Err(err) => {
            let why = err.to_string();
            let event = token_rejected(&state.identity, token, "api", caller.source, why);
            state.audit.record(event);
            return Err(err.into());
        }
    };
    let access = state.identity.issue_api_token(&principal).await?;
    Ok(Json(
        json!({ "access_token": access.token, "expires_in": access.expires_in }),
    ))
}

/// `GET /api/v1/me`
pub(crate) async fn me(Extension(caller): Extension<ApiCaller>) -> Json<Value> {
    let kind = match caller.principal {
        Principal::Robot { .. } => "robot",
        _ => "user",
    };
    Json(
        json!({ "name": caller.principal.name(), "kind": kind, "admin": caller.principal.is_admin() }),
    )
}
