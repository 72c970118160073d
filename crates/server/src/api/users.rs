//! Local users.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_auth::{AuthError, InventoryRole, User};

use super::{ApiCaller, ApiResult, Body};
use crate::AppState;

/// `GET /api/v1/users`
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(state.identity.list_users().await?))
}

#[derive(Deserialize)]
pub(crate) struct CreateUser {
    name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

/// `POST /api/v1/users`
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(request): Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let work = state
        .identity
        .create_user(&request.name, &request.password, request.admin);
    let resource = format!("user/{}", request.name);
    let user = state
        .audited(&caller, "user.create", resource, work)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `GET /api/v1/users/{name}`: administrators, or the user themself.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<User>> {
    Ok(Json(state.identity.user(&name).await?))
}

/// `DELETE /api/v1/users/{name}`
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let work = state.identity.delete_user(&name);
    let resource = format!("user/{name}");
    state
        .audited(&caller, "user.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct SetPassword {
    password: String,
    /// Required when users change their own password.
    current_password: Option<String>,
}

/// `PUT /api/v1/users/{name}/password`: administrators for anyone; users for
/// themselves, proving the current password. Existing tokens stop working.
pub(crate) async fn set_password(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
    Body(request): Body<SetPassword>,
) -> ApiResult<StatusCode> {
    let work = async {
        // The route admits only administrators and the user themself; the
        // user must prove the current password too.
        if !caller.principal.is_admin() {
            let current = request.current_password.as_deref().unwrap_or_default();
            state
                .identity
                .authenticate(&name, current, caller.source)
                .await
                // A wrong current password is a refusal, not a dead session:
                // clients must not refresh their token and try again.
                .map_err(|err| match err {
                    AuthError::Unauthenticated(_) => {
                        AuthError::Denied("the current password is wrong".into())
                    }
                    other => other,
                })?;
        }
        state.identity.set_password(&name, &request.password).await
    };
    let resource = format!("user/{name}");
    state
        .audited(&caller, "user.password", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct SetDisabled {
    disabled: bool,
}

/// `PUT /api/v1/users/{name}/disabled`: disabling cuts off the user's tokens.
pub(crate) async fn set_disabled(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
    Body(request): Body<SetDisabled>,
) -> ApiResult<Json<User>> {
    let action = if request.disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    let work = state.identity.set_disabled(&name, request.disabled);
    let user = state
        .audited(&caller, action, format!("user/{name}"), work)
        .await?;
    Ok(Json(user))
}

#[derive(Deserialize)]
pub(crate) struct SetInventoryRole {
    /// `clusterAdmin`, `poolOperator`, `viewer`, or null for none.
    role: Option<InventoryRole>,
}

/// `PUT /api/v1/users/{name}/inventoryrole` with `{"role": ...}`: the
/// user's role over the inventory (system administrators only).
pub(crate) async fn set_inventory_role(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
    Body(request): Body<SetInventoryRole>,
) -> ApiResult<Json<User>> {
    let role = request.role.map_or("none", InventoryRole::as_str);
    let work = state.identity.set_inventory_role(&name, request.role);
    let user = state
        .audited_request(
            &caller,
            "user.set-role",
            format!("user/{name}"),
            role.to_string(),
            work,
        )
        .await?;
    Ok(Json(user))
}
