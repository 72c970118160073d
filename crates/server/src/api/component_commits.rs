//! The component flow over the API (`wharf commit deployment|list|specs|
//! rollback`): starting and rolling back need the project's push right
//! (developers and up; the images go to the same project), reading it the
//! pull right; the index shows administrators everything and others the
//! entries of the projects they may pull from.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use http::StatusCode;
use wharf_api::component_commit::{
    CommitIndexEntry, CommitSpecArtifact, ComponentCommit, ComponentCommitRequest, SPEC_TAG_SUFFIX,
    split_image,
};
use wharf_auth::{Action, Principal};

use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody, unix_now};
use crate::AppState;

/// `POST /api/v1/projects/{project}/deployments/{name}/commit`: checks
/// the deployment and every generated name, records the flow; the leader
/// runs it (202).
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    JsonBody(request): JsonBody<ComponentCommitRequest>,
) -> ApiResult<(StatusCode, Json<ComponentCommit>)> {
    // The leader commits later on the user's behalf, with the user's
    // rights at that time; robots carry their rights in their token only.
    let Principal::User { name: by, .. } = &caller.principal else {
        return Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            "the component flow commits on behalf of a user: start it as one, not as a robot",
        ));
    };
    let by = by.clone();
    let now = unix_now() as u64 * 1000;
    let objects = state.control.objects();
    let work = objects.start_component_commit(&project, &name, &request, &by, now);
    let resource = format!("{project}/deployment/{name}");
    let commit = state
        .audited(&caller, "deployment.commit", resource, work)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(commit)))
}

/// `GET .../commit`: the flow and its progress, pod by pod.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<ComponentCommit>> {
    let commit = state
        .control
        .objects()
        .require::<ComponentCommit>(Some(&project), &name)
        .await?;
    Ok(Json(commit))
}

/// `POST .../commit/rollback`: the leader returns every address to the
/// original Deployment, one at a time (202).
pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<ComponentCommit>)> {
    let work = state
        .control
        .objects()
        .request_commit_rollback(&project, &name);
    let resource = format!("{project}/deployment/{name}");
    let commit = state
        .audited(&caller, "deployment.commit.rollback", resource, work)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(commit)))
}

/// `GET .../commit/specs`: the pinned Deployments' specs, read back from
/// the registry.
pub(crate) async fn specs(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<CommitSpecArtifact>>> {
    let commit = state
        .control
        .objects()
        .require::<ComponentCommit>(Some(&project), &name)
        .await?;
    let mut specs = Vec::new();
    for record in &commit.status.pods {
        let Some(digest) = &record.spec_artifact else {
            continue;
        };
        let (repository, tag) = split_image(&record.image)
            .ok_or_else(|| ApiErrorReply::internal(format!("image {} has no tag", record.image)))?;
        let yaml = state
            .commit_specs
            .get_spec(repository, digest)
            .await
            .map_err(ApiErrorReply::internal)?;
        specs.push(CommitSpecArtifact {
            image: record.image.clone(),
            ip: record.ip.clone(),
            reference: format!("{repository}:{tag}{SPEC_TAG_SUFFIX}"),
            digest: digest.clone(),
            yaml,
        });
    }
    Ok(Json(specs))
}

/// `GET /api/v1/commits/ips[?ip=IP]`: the index `/commiter/ips/`.
pub(crate) async fn index(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<CommitIndexEntry>>> {
    let ip = params.get("ip").map(String::as_str);
    if let Some(ip) = ip
        && ip.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(ApiErrorReply::invalid(format!(
            "ip {ip:?} is not an IPv4 address"
        )));
    }
    let readable = readable_projects(&state, &caller.principal).await?;
    let entries = state
        .control
        .objects()
        .commit_index(readable.as_deref(), ip)
        .await?;
    Ok(Json(entries))
}

/// The projects whose entries `principal` may read: `None` for all.
async fn readable_projects(
    state: &AppState,
    principal: &Principal,
) -> ApiResult<Option<Vec<String>>> {
    if principal.is_admin() {
        return Ok(None);
    }
    let mut readable = Vec::new();
    for project in state.identity.list_projects(principal).await? {
        let pull = state
            .identity
            .require(principal, &project.name, Action::Pull)
            .await;
        if pull.is_ok() {
            readable.push(project.name);
        }
    }
    Ok(Some(readable))
}
