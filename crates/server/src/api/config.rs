//! ConfigMaps and Secrets over HTTP. Reading a ConfigMap takes `pull`;
//! creating or replacing either kind takes `push` (developers, who may also
//! use Secrets in pods); deleting takes `delete`. A Secret's values come
//! back only with `?showSecrets=true`, which takes `delete` too (maintainers
//! and above): everyone else sees key names and sizes.
//!
//! A node's agent reads the ConfigMaps and Secrets (with values) of the
//! pods bound to it through `/api/v1/nodes/{node}/...`, and only those.
//! Agents log in as administrators today, so this check is what keeps one
//! node's agent to its own pods' objects; it becomes a hard boundary once
//! nodes have credentials of their own.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_api::ConfigRef;
use wharf_api::{ConfigMap, Secret};
use wharf_auth::{Action, AuthError};
use wharf_control::{ControlError, used_on_node};

use super::cluster::{ListParams, create_in_project};
use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;

/// The action that lets a caller read a Secret's values.
pub(crate) const READ_SECRET_VALUES: Action = Action::Delete;

/// `?showSecrets=true`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShowParams {
    #[serde(default)]
    show_secrets: bool,
}

/// `POST /api/v1/projects/{project}/configmaps`: creates; an existing one
/// is a conflict (as `kubectl create`).
pub(crate) async fn create_config_map(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    JsonBody(config_map): JsonBody<ConfigMap>,
) -> ApiResult<(StatusCode, Json<ConfigMap>)> {
    create_in_project(
        &state,
        &caller,
        &project,
        "configmap",
        config_map,
        ConfigMap::validate,
    )
    .await
}

/// `DELETE /api/v1/projects/{project}/configmaps/{name}`
pub(crate) async fn delete_config_map(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let objects = state.control.objects();
    let work = objects.delete::<ConfigMap>(Some(&project), &name, None);
    let resource = format!("{project}/configmap/{name}");
    state
        .audited(&caller, "configmap.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/projects/{project}/secrets`: key names and sizes only.
pub(crate) async fn list_secrets(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let selector = params.selector()?;
    let secrets = state
        .config
        .secrets(Some(&project), selector.as_ref())
        .await?;
    let items: Vec<Secret> = secrets.into_iter().map(Secret::withheld).collect();
    Ok(Json(
        json!({ "apiVersion": "v1", "kind": "SecretList", "items": items }),
    ))
}

/// `GET /api/v1/projects/{project}/secrets/{name}[?showSecrets=true]`:
/// values only with `showSecrets`, for callers allowed
/// [`READ_SECRET_VALUES`]; that reading is audited.
pub(crate) async fn get_secret(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<ShowParams>,
) -> ApiResult<Json<Secret>> {
    let read = async {
        state
            .config
            .secret(Some(&project), &name)
            .await?
            .ok_or_else(|| {
                ApiErrorReply::from(ControlError::NotFound {
                    kind: "Secret",
                    name: format!("{project}/{name}"),
                })
            })
    };
    if !params.show_secrets {
        return Ok(Json(read.await?.withheld()));
    }
    let work = async {
        state
            .identity
            .require(&caller.principal, &project, READ_SECRET_VALUES)
            .await
            .map_err(|_| {
                AuthError::Denied(format!(
                    "reading the values of secrets in project {project} takes the maintainer role or above"
                ))
            })?;
        read.await
    };
    let resource = format!("{project}/secret/{name}");
    let secret = state
        .audited(&caller, "secret.read", resource, work)
        .await?;
    Ok(Json(secret))
}

/// `POST /api/v1/projects/{project}/secrets`: creates; an existing one is
/// a conflict. Answers without the values.
pub(crate) async fn create_secret(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    JsonBody(mut secret): JsonBody<Secret>,
) -> ApiResult<(StatusCode, Json<Secret>)> {
    secret.metadata.project = Some(project.clone());
    let name = secret.metadata.name.clone();
    let resource = format!("{project}/secret/{name}");
    let work = async {
        if state.config.secret(Some(&project), &name).await?.is_some() {
            return Err(ApiErrorReply::from(ControlError::Conflict(format!(
                "Secret {project}/{name} already exists"
            ))));
        }
        Ok(state.config.apply_secret(secret).await?.0)
    };
    let created = state
        .audited(&caller, "secret.create", resource, work)
        .await?;
    Ok((StatusCode::CREATED, Json(created.withheld())))
}

/// `DELETE /api/v1/projects/{project}/secrets/{name}`
pub(crate) async fn delete_secret(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let work = state.config.delete_secret(&project, &name);
    let resource = format!("{project}/secret/{name}");
    state
        .audited(&caller, "secret.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses unless a pod bound to `node` in `project` uses `wanted`.
async fn require_used_on_node(
    state: &AppState,
    node: &str,
    project: &str,
    wanted: &ConfigRef,
) -> ApiResult<()> {
    if used_on_node(state.control.objects(), node, project, wanted).await? {
        return Ok(());
    }
    Err(AuthError::Denied(format!(
        "no pod bound to node {node} in project {project} uses {wanted}"
    ))
    .into())
}

/// `GET /api/v1/nodes/{node}/configmaps/{project}/{name}`: for the agent
/// of a node running a pod that uses it.
pub(crate) async fn node_config_map(
    State(state): State<Arc<AppState>>,
    Path((node, project, name)): Path<(String, String, String)>,
) -> ApiResult<Json<ConfigMap>> {
    require_used_on_node(&state, &node, &project, &ConfigRef::ConfigMap(name.clone())).await?;
    let objects = state.control.objects();
    Ok(Json(objects.require(Some(&project), &name).await?))
}

/// `GET /api/v1/nodes/{node}/secrets/{project}/{name}`: with its values,
/// for the agent of a node running a pod that uses it.
pub(crate) async fn node_secret(
    State(state): State<Arc<AppState>>,
    Path((node, project, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Secret>> {
    require_used_on_node(&state, &node, &project, &ConfigRef::Secret(name.clone())).await?;
    let secret = state.config.secret(Some(&project), &name).await?;
    let secret = secret.ok_or_else(|| ControlError::NotFound {
        kind: "Secret",
        name: format!("{project}/{name}"),
    })?;
    Ok(Json(secret))
}
