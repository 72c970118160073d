//! Projects, their members and their robot accounts.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_auth::{
    Action, Actions, AuthError, Member, Project, ProjectWithUsage, Robot, RobotPermission, Role,
    SystemPermission,
};

use super::{ApiCaller, ApiErrorReply, ApiResult, Body};
use crate::AppState;

impl AppState {
    async fn project_view(&self, project: Project) -> ApiResult<ProjectWithUsage> {
        let usage_bytes = self.registry.usage(&project.name).await?;
        Ok(ProjectWithUsage {
            project,
            usage_bytes,
        })
    }
}

/// `GET /api/v1/projects`: the projects the caller can see.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
) -> ApiResult<Json<Vec<ProjectWithUsage>>> {
    let mut views = Vec::new();
    for project in state.identity.list_projects(&caller.principal).await? {
        views.push(state.project_view(project).await?);
    }
    Ok(Json(views))
}

#[derive(Deserialize)]
pub(crate) struct CreateProject {
    name: String,
    #[serde(default)]
    public: bool,
    quota_bytes: Option<u64>,
    /// Makes the project a pull-through cache of a replication endpoint.
    proxy_cache: Option<CreateProxyCache>,
}

/// `proxy_cache` of a project create: `{"endpoint": "hub", "ttl_secs": 3600}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProxyCache {
    endpoint: String,
    /// Seconds a cached tag is served before it is checked upstream again
    /// (default one hour).
    ttl_secs: Option<u64>,
}

/// `POST /api/v1/projects`: any user may create one and becomes its admin;
/// with `proxy_cache`, a pull-through cache of a replication endpoint
/// (docs/proxy-cache.md).
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(request): Body<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let work = async {
        let proxy_cache = match request.proxy_cache {
            // It lends the endpoint's credentials to the project's members.
            Some(_) if !caller.principal.is_admin() => {
                return Err(AuthError::Denied(
                    "only system administrators create proxy cache projects".into(),
                ));
            }
            Some(proxy) => Some(
                crate::proxy_cache::checked_setting(
                    &state.replication,
                    &state.registry,
                    &request.name,
                    proxy.endpoint,
                    proxy.ttl_secs,
                )
                .await?,
            ),
            None => None,
        };
        state
            .identity
            .create_project_with(
                &caller.principal,
                &request.name,
                request.public,
                request.quota_bytes,
                proxy_cache,
            )
            .await
    };
    let resource = format!("project/{}", request.name);
    let project = state
        .audited(&caller, "project.create", resource, work)
        .await?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// `GET /api/v1/projects/{project}`
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> ApiResult<Json<ProjectWithUsage>> {
    let project = state.identity.project(&project).await?;
    Ok(Json(state.project_view(project).await?))
}

#[derive(Deserialize)]
pub(crate) struct UpdateProject {
    public: Option<bool>,
    /// `null` removes the quota; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    quota_bytes: Option<Option<u64>>,
    allow_privileged: Option<bool>,
    /// A tier as `wharf.io/tier` names one; `""` removes it.
    default_tier: Option<String>,
    /// Refused, whatever its value (`null` too): a project is a proxy
    /// cache, or not, from its creation.
    #[serde(default, deserialize_with = "given")]
    proxy_cache: Option<()>,
}

/// `Some(())` when the field is present, whatever it holds.
fn given<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<()>, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| Some(()))
}

fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

/// `PATCH /api/v1/projects/{project}`: project admins change visibility
/// and the default tier; only system administrators change quotas and
/// `allow_privileged`.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    Body(request): Body<UpdateProject>,
) -> ApiResult<Json<Project>> {
    let default_tier = super::project_tier::requested(request.default_tier)?;
    let work = async {
        if request.proxy_cache.is_some() {
            return Err(AuthError::Invalid(
                "proxy_cache: set only when a project is created; to change or remove it, \
                 delete the project (`wharf project delete NAME --force`) and create it again"
                    .into(),
            ));
        }
        if request.quota_bytes.is_some() && !caller.principal.is_admin() {
            return Err(AuthError::Denied(
                "only system administrators change quotas".into(),
            ));
        }
        if request.allow_privileged.is_some() && !caller.principal.is_admin() {
            return Err(AuthError::Denied(
                "only system administrators allow privileged workloads".into(),
            ));
        }
        state
            .identity
            .update_project(
                &project,
                request.public,
                request.quota_bytes,
                request.allow_privileged,
                default_tier,
            )
            .await
    };
    let resource = format!("project/{project}");
    let updated = state
        .audited(&caller, "project.update", resource, work)
        .await?;
    Ok(Json(updated))
}

/// `DELETE /api/v1/projects/{project}`: refused while it holds
/// repositories unless `?force=true`, which deletes them first (as
/// registry deletes, replicated and audited); its deployments and pods are
/// deleted with it.
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    Query(options): Query<RemoveOptions>,
) -> ApiResult<StatusCode> {
    let work = async {
        let repositories = state.registry.repository_names_of(&project).await?;
        if !repositories.is_empty() && !options.force {
            let names: Vec<&str> = repositories.iter().map(|r| r.as_str()).collect();
            return Err(ApiErrorReply::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!(
                    "project {project} still has {} repositories ({}); empty it with \
                     `wharf image delete REPOSITORY` for each, or delete it with \
                     everything in it: `wharf project delete {project} --force`",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        for repo in &repositories {
            for (digest, origin) in state.registry.delete_repository(repo).await? {
                state.announce_delete(&caller, repo, digest.to_string(), origin, false);
            }
        }
        // Workloads first: a failure leaves the project, to be deleted again.
        state.control.delete_project_workloads(&project).await?;
        state.config.delete_project(&project).await?;
        state
            .control
            .objects()
            .delete_project_claims(&project)
            .await?;
        state
            .control
            .objects()
            .delete_project_services(&project)
            .await?;
        state
            .control
            .objects()
            .delete_project_hpas(&project)
            .await?;
        state
            .control
            .objects()
            .delete_project_alerting(&project)
            .await?;
        wharf_control::cost::delete_project_budget(state.control.objects(), &project).await?;
        crate::preheats::delete_project_preheats(state.control.objects(), &project).await?;
        Ok(state.identity.delete_project(&project).await?)
    };
    let resource = format!("project/{project}");
    state
        .audited(&caller, "project.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Options of a project delete.
#[derive(Deserialize)]
pub(crate) struct RemoveOptions {
    #[serde(default)]
    force: bool,
}

/// `GET /api/v1/projects/{project}/members`
pub(crate) async fn list_members(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<Member>>> {
    Ok(Json(state.identity.list_members(&project).await?))
}

#[derive(Deserialize)]
pub(crate) struct SetMember {
    role: String,
}

/// `PUT /api/v1/projects/{project}/members/{user}`: project admins decide roles.
pub(crate) async fn set_member(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, user)): Path<(String, String)>,
    Body(request): Body<SetMember>,
) -> ApiResult<Json<Member>> {
    let work = async {
        let role: Role = request.role.parse()?;
        state.identity.set_member(&project, &user, role).await
    };
    let resource = format!("project/{project}/member/{user}");
    let member = state.audited(&caller, "member.set", resource, work).await?;
    Ok(Json(member))
}

/// `DELETE /api/v1/projects/{project}/members/{user}`
pub(crate) async fn remove_member(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let work = state.identity.remove_member(&project, &user);
    let resource = format!("project/{project}/member/{user}");
    state
        .audited(&caller, "member.remove", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/projects/{project}/robots`
pub(crate) async fn list_robots(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<Robot>>> {
    Ok(Json(state.identity.list_robots(&project).await?))
}

#[derive(Deserialize)]
pub(crate) struct CreateRobot {
    name: String,
    /// Actions in this project, e.g. `"pull,push"`; none for a robot with
    /// `system_permissions`.
    #[serde(default)]
    actions: String,
    /// Rights outside projects, e.g. `["metrics:read"]`: such a robot has
    /// nothing else, and its reply carries a long-lived API token.
    #[serde(default)]
    system_permissions: Vec<String>,
    /// Seconds until it expires; absent never expires.
    expires_in_secs: Option<u64>,
    /// More projects and actions, e.g. `{"other": "pull"}`.
    #[serde(default)]
    also: std::collections::BTreeMap<String, String>,
}

/// `POST /api/v1/projects/{project}/robots`: returns the secret, once.
pub(crate) async fn create_robot(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    Body(request): Body<CreateRobot>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !request.system_permissions.is_empty() {
        return create_metrics_robot(state, caller, project, request).await;
    }
    let work = async {
        let mut permissions = vec![RobotPermission {
            project: project.clone(),
            actions: Actions::parse_list(&request.actions)?,
        }];
        for (other, actions) in &request.also {
            permissions.push(RobotPermission {
                project: other.clone(),
                actions: Actions::parse_list(actions)?,
            });
        }
        // Creating a robot hands out access: the creator must administer every project it reaches.
        for permission in &permissions {
            state
                .identity
                .require(&caller.principal, &permission.project, Action::Admin)
                .await?;
        }
        let expires_in = request.expires_in_secs.map(Duration::from_secs);
        state
            .identity
            .create_robot(
                &caller.principal,
                &project,
                &request.name,
                permissions,
                expires_in,
            )
            .await
    };
    let resource = format!("project/{project}/robot/{}", request.name);
    let (robot, secret) = state
        .audited(&caller, "robot.create", resource, work)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "robot": robot, "secret": secret })),
    ))
}

/// A `metrics:read` robot: only system administrators hand one out (it
/// reads every node's and project's metrics). The reply adds the API token
/// Prometheus reads from its `credentials_file`.
async fn create_metrics_robot(
    state: Arc<AppState>,
    caller: ApiCaller,
    project: String,
    request: CreateRobot,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let work = async {
        for permission in &request.system_permissions {
            permission.parse::<SystemPermission>()?;
        }
        if !request.actions.trim().is_empty() {
            return Err(AuthError::Invalid(
                "a metrics:read robot has no project actions: drop the actions".into(),
            ));
        }
        if !caller.principal.is_admin() {
            return Err(AuthError::Denied(
                "only system administrators create metrics:read robots".into(),
            ));
        }
        let expires_in = request.expires_in_secs.map(Duration::from_secs);
        let identity = &state.identity;
        let (robot, secret) = identity
            .create_metrics_robot(&caller.principal, &project, &request.name, expires_in)
            .await?;
        let token = identity.robot_api_token(&robot.name).await?;
        Ok((robot, secret, token))
    };
    let resource = format!("project/{project}/robot/{}", request.name);
    let (robot, secret, token) = state
        .audited(&caller, "robot.create", resource, work)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "robot": robot, "secret": secret, "token": token.token })),
    ))
}

/// The full name of `robot` (short or full) if it belongs to `project`:
/// project admins act only on their own project's robots.
fn robot_of(project: &str, robot: &str) -> Result<String, AuthError> {
    let full = if wharf_auth::is_robot_name(robot) {
        robot.to_string()
    } else {
        format!("robot${project}+{robot}")
    };
    if full.starts_with(&format!("robot${project}+")) {
        Ok(full)
    } else {
        Err(AuthError::NotFound(format!(
            "robot {full} in project {project}"
        )))
    }
}

/// `DELETE /api/v1/projects/{project}/robots/{robot}` (short or full name).
pub(crate) async fn remove_robot(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, robot)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let work = async {
        let full = robot_of(&project, &robot)?;
        state.identity.delete_robot(&full).await
    };
    let resource = format!("project/{project}/robot/{robot}");
    state
        .audited(&caller, "robot.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct SetRobotDisabled {
    disabled: bool,
}

/// `PUT /api/v1/projects/{project}/robots/{robot}/disabled`: disabling cuts
/// off the robot's tokens at once; enabling lets it log in again (its old
/// tokens stay dead).
pub(crate) async fn set_robot_disabled(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, robot)): Path<(String, String)>,
    Body(request): Body<SetRobotDisabled>,
) -> ApiResult<Json<Robot>> {
    let action = if request.disabled {
        "robot.disable"
    } else {
        "robot.enable"
    };
    let work = async {
        let full = robot_of(&project, &robot)?;
        state
            .identity
            .set_robot_disabled(&full, request.disabled)
            .await
    };
    let resource = format!("project/{project}/robot/{robot}");
    let updated = state.audited(&caller, action, resource, work).await?;
    Ok(Json(updated))
}
