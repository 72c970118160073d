//! Cluster objects over HTTP: nodes, deployments, pods, events — lists with
//! label selectors, watches as newline-delimited JSON streams from a
//! resource version, optimistic updates, and `apply` of Kubernetes YAML.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wharf_api::{
    ANNOTATION_JOIN_POOL, Deployment, Endpoints, Event, HorizontalPodAutoscaler, LABEL_POOL,
    LabelSelector, Manifest, Node, NodeInitProfile, Pod, PodStatus, Service, Taint,
    parse_label_selector,
};
use wharf_auth::{Action, AuthError};
use wharf_control::{
    Change, DeletionOutcome, InventoryWrite, NodeRegistration, Object, PodDeletion,
};

use super::node_scope::require_pod_of_callers_node;
use super::{
    ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody, InventoryAction, authorize_inventory,
    inventory,
};
use crate::AppState;

/// `?labelSelector=...&watch=true&resourceVersion=N&nodeName=...`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListParams {
    label_selector: Option<String>,
    #[serde(default)]
    watch: bool,
    resource_version: Option<u64>,
    node_name: Option<String>,
}

impl ListParams {
    pub(crate) fn selector(&self) -> ApiResult<Option<LabelSelector>> {
        Ok(match &self.label_selector {
            Some(text) => Some(parse_label_selector(text)?),
            None => None,
        })
    }
}

/// Lists objects of a kind, or streams their changes when `watch=true`.
async fn list_or_watch<T: Object>(
    state: &AppState,
    project: Option<&str>,
    params: &ListParams,
    keep: impl Fn(&T) -> bool + Send + Sync + 'static,
) -> ApiResult<Response> {
    let selector = params.selector()?;
    let objects = state.control.objects();
    if !params.watch {
        let (items, revision) = objects.list::<T>(project, selector.as_ref()).await?;
        let items: Vec<T> = items.into_iter().filter(|o| keep(o)).collect();
        return Ok(Json(json!({
            "apiVersion": "v1",
            "kind": format!("{}List", T::KIND),
            "metadata": { "resourceVersion": revision.to_string() },
            "items": items,
        }))
        .into_response());
    }
    // As in Kubernetes, a watch from resourceVersion N starts after N.
    let from = params.resource_version.map_or(0, |r| r + 1);
    let lines = watch_lines(state, project, from, selector, keep).await?;
    Ok(ndjson(state, lines))
}

/// The watch lines of objects of a kind from revision `from` on, those
/// added or modified only if they match `selector` and `keep`.
async fn watch_lines<T: Object>(
    state: &AppState,
    project: Option<&str>,
    from: u64,
    selector: Option<LabelSelector>,
    keep: impl Fn(&T) -> bool + Send + Sync + 'static,
) -> ApiResult<WatchLines> {
    let changes = state.control.objects().watch::<T>(project, from).await?;
    Ok(changes.filter_map(move |change| {
        let line = match change {
            Ok(Change::Added(object)) if matches(&selector, &keep, &object) => Some(line("ADDED", &object)),
            Ok(Change::Modified(object)) if matches(&selector, &keep, &object) => Some(line("MODIFIED", &object)),
            Ok(Change::Deleted { project, name, revision }) => Some(line(
                "DELETED",
                &json!({"kind": T::KIND, "metadata": {"name": name, "project": project, "resourceVersion": revision.to_string()}}),
            )),
            Ok(_) => None,
            Err(err) => Some(line("ERROR", &json!({ "message": err.to_string() }))),
        };
        std::future::ready(line.map(Ok::<Bytes, std::io::Error>))
    })
    .boxed())
}

/// Watch lines as the response body streams them.
pub(super) type WatchLines =
    futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A newline-delimited JSON response of `lines`, ended at shutdown.
pub(super) fn ndjson(state: &AppState, lines: WatchLines) -> Response {
    let mut stopping = state.stopping.clone();
    let lines = lines.take_until(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("valid response")
}

fn matches<T: Object>(
    selector: &Option<LabelSelector>,
    keep: &impl Fn(&T) -> bool,
    object: &T,
) -> bool {
    selector
        .as_ref()
        .is_none_or(|s| s.matches(&object.metadata().labels))
        && keep(object)
}

pub(super) fn line(kind: &str, object: &impl Serialize) -> Bytes {
    let mut text = serde_json::to_string(&json!({ "type": kind, "object": object }))
        .expect("events serialize");
    text.push('\n');
    Bytes::from(text)
}

// ----- nodes -----

/// `GET /api/v1/nodes`
pub(crate) async fn list_nodes(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    list_or_watch::<Node>(&state, None, &params, |_| true).await
}

/// `GET /api/v1/nodes/{node}`
pub(crate) async fn get_node(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> ApiResult<Json<Node>> {
    Ok(Json(state.control.objects().require(None, &node).await?))
}

/// `POST /api/v1/nodes`: an agent registers (or re-registers) its node.
/// Agents post their node again every few seconds to report its status;
/// only a registration that changes what the node is gets audited, so the
/// audit log is not flooded with status refreshes.
pub(crate) async fn register_node(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    JsonBody(mut node): JsonBody<Node>,
) -> ApiResult<Json<Node>> {
    let resource = format!("node/{}", node.metadata.name);
    if let Some(own) = caller.principal.node_agent() {
        if own != node.metadata.name {
            let denied = format!("the credential of node {own} registers node {own} only");
            return Err(AuthError::Denied(denied).into());
        }
        keep_in_joined_pool(&state, own, &mut node).await?;
    }
    match state.control.objects().register_node(node).await {
        Ok((node, NodeRegistration::Refreshed)) => Ok(Json(node)),
        result => {
            let work = std::future::ready(result.map(|(node, _)| node));
            let node = state
                .audited(&caller, "node.register", resource, work)
                .await?;
            Ok(Json(node))
        }
    }
}

/// A node that joined with a token registers in the token's pool only: a
/// token for pool `batch` must not give a machine the pods (and Secrets)
/// of pool `core`. A registration naming no pool is put in it.
async fn keep_in_joined_pool(state: &AppState, own: &str, node: &mut Node) -> ApiResult<()> {
    let Some(pool) = state.identity.joined_pool(own).await? else {
        return Ok(());
    };
    let meta = &mut node.metadata;
    let named = [
        meta.annotations.get(ANNOTATION_JOIN_POOL),
        meta.labels.get(LABEL_POOL),
    ];
    if let Some(other) = named.into_iter().flatten().find(|named| **named != pool) {
        let denied = format!(
            "node {own} joined pool {pool} with its token; it cannot register in pool {other}"
        );
        return Err(AuthError::Denied(denied).into());
    }
    meta.labels.insert(LABEL_POOL.into(), pool);
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeartbeatRequest {
    lease: Option<u64>,
    /// The lease's lifetime; the server's default when neither is given.
    ttl_millis: Option<u64>,
    /// The same in whole seconds (older agents).
    ttl_seconds: Option<u64>,
}

/// `PUT /api/v1/nodes/{node}/heartbeat`: renews the node's liveness lease.
pub(crate) async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
    JsonBody(request): JsonBody<HeartbeatRequest>,
) -> ApiResult<Json<Value>> {
    let asked = request
        .ttl_millis
        .or(request.ttl_seconds.map(|s| s.saturating_mul(1000)))
        .map(Duration::from_millis);
    let ttl = asked
        .unwrap_or(state.control.failover().node_lease_ttl)
        .clamp(Duration::from_secs(1), Duration::from_secs(600));
    let lease = state
        .control
        .objects()
        .heartbeat(&node, request.lease, ttl)
        .await?;
    Ok(Json(json!({ "lease": lease })))
}

/// `GET /api/v1/nodes/{node}/init`: the init profile of the node's pool
/// and its hash, for the node's agent.
pub(crate) async fn node_init(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> ApiResult<Json<NodeInitProfile>> {
    let profile = state.control.objects().node_init_profile(&node).await?;
    Ok(Json(profile))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodePatch {
    unschedulable: Option<bool>,
    taints: Option<Vec<Taint>>,
    cost_per_hour: Option<f64>,
}

/// `PATCH /api/v1/nodes/{node}`: cordon (inventory operators), taints and
/// cost (inventory managers).
pub(crate) async fn patch_node(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<NodePatch>,
) -> ApiResult<Json<Node>> {
    if patch.taints.is_some() || patch.cost_per_hour.is_some() {
        let manage = InventoryAction::Manage;
        authorize_inventory(&state.identity, &caller.principal, manage).await?;
    }
    let objects = state.control.objects();
    let work = objects.modify::<Node>(None, &name, |node| {
        if let Some(unschedulable) = patch.unschedulable {
            node.spec.unschedulable = unschedulable;
        }
        if let Some(taints) = &patch.taints {
            node.spec.taints = taints.clone();
        }
        if patch.cost_per_hour.is_some() {
            node.spec.cost_per_hour = patch.cost_per_hour;
        }
        true
    });
    let resource = format!("node/{name}");
    let node = state
        .audited(&caller, "node.update", resource, work)
        .await?;
    Ok(Json(node))
}

/// `DELETE /api/v1/nodes/{node}`
pub(crate) async fn delete_node(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let objects = state.control.objects();
    let work = objects.delete::<Node>(None, &name, None);
    let resource = format!("node/{name}");
    state
        .audited(&caller, "node.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/pods?nodeName=...`: pods across projects, for agents.
pub(crate) async fn list_all_pods(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    if let Some(own) = caller.principal.node_agent()
        && params.node_name.as_deref() != Some(own)
    {
        let denied = format!("the credential of node {own} lists node {own}'s pods only");
        return Err(AuthError::Denied(denied).into());
    }
    let keep = on_node(&params);
    list_or_watch::<Pod>(&state, None, &params, keep).await
}

// ----- deployments -----

/// `GET /api/v1/projects/{project}/deployments`
pub(crate) async fn list_deployments(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    list_or_watch::<Deployment>(&state, Some(&project), &params, |_| true).await
}

/// `GET /api/v1/projects/{project}/deployments/{name}` and
/// `.../pods/{name}`: one object of a project.
pub(crate) async fn get_in_project<T: Object>(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<T>> {
    let objects = state.control.objects();
    Ok(Json(objects.require(Some(&project), &name).await?))
}

/// A `v1` list of objects of `T`'s kind, as Kubernetes answers a list.
pub(crate) fn list_of<T: Object>(items: Vec<T>) -> Json<Value> {
    Json(json!({ "apiVersion": "v1", "kind": format!("{}List", T::KIND), "items": items }))
}

/// `GET /api/v1/projects/{project}/configmaps` and
/// `.../persistentvolumeclaims`: the objects of `T`'s kind in a project.
pub(crate) async fn list_in_project<T: Object>(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let selector = params.selector()?;
    let objects = state.control.objects();
    let (items, _) = objects.list::<T>(Some(&project), selector.as_ref()).await?;
    Ok(list_of(items))
}

/// Creates `object` in `project` once `check` accepts it, audited as
/// `<kind>.create` on `<project>/<kind>/<name>`; an existing one is a
/// conflict (as `kubectl create`).
pub(crate) async fn create_in_project<T: Object>(
    state: &AppState,
    caller: &ApiCaller,
    project: &str,
    kind: &str,
    mut object: T,
    check: impl FnOnce(&T) -> Result<(), wharf_api::ObjectError>,
) -> ApiResult<(StatusCode, Json<T>)> {
    object.metadata_mut().project = Some(project.to_string());
    let resource = format!("{project}/{kind}/{}", object.metadata().name);
    let work = async {
        check(&object)?;
        Ok::<_, ApiErrorReply>(state.control.objects().create(object).await?)
    };
    let action = format!("{kind}.create");
    let created = state.audited(caller, &action, resource, work).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `PUT /api/v1/projects/{project}/deployments/{name}`: replaces the
/// deployment if it is still at the body's `resourceVersion`.
pub(crate) async fn update_deployment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    JsonBody(mut deployment): JsonBody<Deployment>,
) -> ApiResult<Json<Deployment>> {
    let work = async {
        if deployment.metadata.name != name {
            return Err(ApiErrorReply::invalid("metadata.name differs from the URL"));
        }
        deployment.metadata.project = Some(project.clone());
        deployment.validate()?;
        check_privileges(&state, &project, &deployment)
            .await
            .map_err(ApiErrorReply::invalid)?;
        // As on apply: a replacement naming no tier gets the project's.
        super::project_tier::apply_default(&state, &project, &mut deployment).await?;
        let objects = state.control.objects();
        wharf_control::check_pool_grant(objects, &deployment).await?;
        let current: Deployment = objects.require(Some(&project), &name).await?;
        let mut next = current.clone();
        if next.spec != deployment.spec {
            next.metadata.generation += 1;
        }
        next.spec = deployment.spec;
        next.metadata.labels = deployment.metadata.labels;
        next.metadata.annotations = deployment.metadata.annotations;
        next.metadata.resource_version = deployment.metadata.resource_version;
        Ok(objects.update(next).await?)
    };
    let resource = format!("{project}/deployment/{name}");
    let updated = state
        .audited(&caller, "deployment.update", resource, work)
        .await?;
    Ok(Json(updated))
}

#[derive(Deserialize)]
pub(crate) struct ScaleRequest {
    replicas: u32,
}

/// `PUT /api/v1/projects/{project}/deployments/{name}/scale`
pub(crate) async fn scale_deployment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    JsonBody(request): JsonBody<ScaleRequest>,
) -> ApiResult<Json<Deployment>> {
    let work = state.control.scale(&project, &name, request.replicas);
    let resource = format!("{project}/deployment/{name}");
    let scaled = state
        .audited(&caller, "deployment.scale", resource, work)
        .await?;
    Ok(Json(scaled))
}

/// `DELETE /api/v1/projects/{project}/deployments/{name}`: its pods go too.
pub(crate) async fn delete_deployment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let work = state.control.delete_deployment(&project, &name);
    let resource = format!("{project}/deployment/{name}");
    state
        .audited(&caller, "deployment.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/projects/{project}/services/{name}`: the service, its
/// cluster IP and its endpoints go at once.
pub(crate) async fn delete_service(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Service>> {
    let work = state.control.objects().delete_service(&project, &name);
    let resource = format!("{project}/service/{name}");
    let deleted = state
        .audited(&caller, "service.delete", resource, work)
        .await?;
    Ok(Json(deleted))
}

/// `GET /api/v1/nodes/{node}/services`: every service and every
/// endpoints object, for the node's service rules (every node forwards
/// every service), with the revision to watch from; with
/// `?watch=true&resourceVersion=N`, the changes of both kinds after N as
/// watch lines (the object's `kind` tells them apart).
pub(crate) async fn node_services(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    if params.watch {
        let from = params.resource_version.map_or(0, |r| r + 1);
        let services = watch_lines::<Service>(&state, None, from, None, |_| true).await?;
        let endpoints = watch_lines::<Endpoints>(&state, None, from, None, |_| true).await?;
        return Ok(ndjson(
            &state,
            futures_util::stream::select(services, endpoints).boxed(),
        ));
    }
    let objects = state.control.objects();
    // The services' revision, the earlier read: a watch from there replays
    // endpoints changes the second read already saw (harmless) and misses
    // none of the services.
    let (services, revision) = objects.list::<Service>(None, None).await?;
    let (endpoints, _) = objects.list::<Endpoints>(None, None).await?;
    Ok(Json(json!({
        "services": services,
        "endpoints": endpoints,
        "resourceVersion": revision.to_string(),
    }))
    .into_response())
}

/// `DELETE /api/v1/projects/{project}/horizontalpodautoscalers/{name}`:
/// the deployment keeps the replicas it has.
pub(crate) async fn delete_hpa(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<HorizontalPodAutoscaler>> {
    let work =
        state
            .control
            .objects()
            .delete::<HorizontalPodAutoscaler>(Some(&project), &name, None);
    let resource = format!("{project}/horizontalpodautoscaler/{name}");
    let deleted = state
        .audited(&caller, "horizontalpodautoscaler.delete", resource, work)
        .await?;
    Ok(Json(deleted))
}

// ----- pods and events -----

/// `GET /api/v1/projects/{project}/pods`
pub(crate) async fn list_pods(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    let keep = on_node(&params);
    list_or_watch::<Pod>(&state, Some(&project), &params, keep).await
}

/// Pods on the node `?nodeName=` names, or all pods without it.
fn on_node(params: &ListParams) -> impl Fn(&Pod) -> bool + Send + Sync + 'static {
    let node = params.node_name.clone();
    move |pod| {
        node.as_deref()
            .is_none_or(|n| pod.spec.node_name.as_deref() == Some(n))
    }
}

/// `?gracePeriodSeconds=N&force=true` of a pod deletion.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletePodParams {
    grace_period_seconds: Option<u64>,
    #[serde(default)]
    force: bool,
}

/// `DELETE /api/v1/projects/{project}/pods/{name}[?gracePeriodSeconds=N][&force=true]`:
/// a bound pod turns Terminating (200, the pod) until its node confirms it
/// stopped; an unbound one, or with `force=true&gracePeriodSeconds=0`, is
/// removed at once (204).
pub(crate) async fn delete_pod(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<DeletePodParams>,
) -> ApiResult<Response> {
    let how = match (params.force, params.grace_period_seconds) {
        (true, Some(0)) => PodDeletion::Force,
        (true, _) => {
            return Err(ApiErrorReply::invalid(
                "force=true deletes at once: it needs gracePeriodSeconds=0",
            ));
        }
        (false, grace) => PodDeletion::Graceful(grace),
    };
    let work = state.control.delete_pod(&project, &name, how);
    let resource = format!("{project}/pod/{name}");
    match state.audited(&caller, "pod.delete", resource, work).await? {
        DeletionOutcome::Terminating(pod) => Ok(Json(pod).into_response()),
        DeletionOutcome::Removed(_) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// `?uid=U` of a node's confirmation.
#[derive(Debug, Deserialize)]
pub(crate) struct StoppedParams {
    uid: String,
}

/// `PUT /api/v1/projects/{project}/pods/{name}/stopped?uid=U`: the pod's
/// agent confirms a Terminating pod's containers stopped and its address
/// is free; the object goes. Only the agent of the pod's node may call it.
pub(crate) async fn pod_stopped(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<StoppedParams>,
) -> ApiResult<StatusCode> {
    require_pod_of_callers_node(&state, &caller, &project, &name).await?;
    state
        .control
        .confirm_pod_stopped(&project, &name, &params.uid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/projects/{project}/pods/{name}/status`: the node's agent
/// reports what runs. Only the agent of the pod's node may call it.
pub(crate) async fn set_pod_status(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    JsonBody(status): JsonBody<PodStatus>,
) -> ApiResult<Json<Pod>> {
    require_pod_of_callers_node(&state, &caller, &project, &name).await?;
    let pod = state
        .control
        .report_pod_status(&project, &name, &status)
        .await?;
    Ok(Json(pod))
}

/// `POST /api/v1/projects/{project}/pods/{name}/events`: the node's agent
/// reports an event about the pod.
pub(crate) async fn record_pod_event(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    JsonBody(event): JsonBody<wharf_api::PodEventReport>,
) -> ApiResult<StatusCode> {
    require_pod_of_callers_node(&state, &caller, &project, &name).await?;
    state
        .control
        .record_pod_event(&project, &name, &event)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventParams {
    /// Only events about this object.
    object: Option<String>,
}

/// `GET /api/v1/events[?object=NAME]`: events about cluster-wide objects
/// (nodes), oldest first.
pub(crate) async fn list_cluster_events(
    State(state): State<Arc<AppState>>,
    Query(params): Query<EventParams>,
) -> ApiResult<Json<Vec<Event>>> {
    events_of(&state, wharf_control::CLUSTER_EVENTS, params).await
}

/// `GET /api/v1/projects/{project}/events[?object=NAME]`, oldest first.
pub(crate) async fn list_events(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    Query(params): Query<EventParams>,
) -> ApiResult<Json<Vec<Event>>> {
    events_of(&state, &project, params).await
}

async fn events_of(
    state: &AppState,
    project: &str,
    params: EventParams,
) -> ApiResult<Json<Vec<Event>>> {
    let (mut events, _) = state
        .control
        .objects()
        .list::<Event>(Some(project), None)
        .await?;
    events.retain(|e| {
        params
            .object
            .as_deref()
            .is_none_or(|o| e.involved_object.name == o)
    });
    events.sort_by_key(|e| e.last_timestamp);
    Ok(Json(events))
}

// ----- apply -----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApplyParams {
    /// Project for objects whose manifest names none; one that names
    /// another is refused.
    project: Option<String>,
    /// The client's default project (its login's, as a kubeconfig
    /// context's namespace): for objects whose manifest names none, when
    /// no `project` is given; a manifest naming another is not refused.
    default_project: Option<String>,
}

/// The project a manifest's object goes to: its `metadata.namespace`, else
/// the request's `?project=`. Both given and different is refused, as
/// kubectl refuses a `--namespace` that contradicts the manifest: silently
/// preferring one would put the object where the user did not look.
fn project_of(
    kind: &str,
    name: &str,
    manifest: Option<&str>,
    requested: Option<&str>,
) -> ApiResult<String> {
    let kind = kind.to_lowercase();
    match (manifest, requested) {
        (Some(manifest), Some(requested)) if manifest != requested => {
            Err(ApiErrorReply::invalid(format!(
                "{kind} {name} is in project {manifest} (metadata.namespace) but \
                 project {requested} was asked for: pass -p {manifest} or drop -p"
            )))
        }
        (Some(project), _) | (None, Some(project)) => Ok(project.to_string()),
        (None, None) => Err(ApiErrorReply::invalid(format!(
            "{kind} {name} names no project: set metadata.namespace, pass -p, \
             or set a default with `wharf project use`"
        ))),
    }
}

/// Refuses a deployment whose pods would be privileged (host namespaces,
/// `privileged`, added capabilities, seccomp `Unconfined`) unless its
/// project allows it; the message names every such field.
async fn check_privileges(
    state: &AppState,
    project: &str,
    deployment: &Deployment,
) -> Result<(), String> {
    let found = deployment
        .spec
        .template
        .spec
        .privileged_settings("spec.template.spec");
    if found.is_empty() {
        return Ok(());
    }
    let allowed = state
        .identity
        .project(project)
        .await
        .map_err(|e| e.to_string())?
        .allow_privileged;
    if allowed {
        return Ok(());
    }
    Err(format!(
        "{} not allowed in project {project}: privileged workloads need the project setting \
         allowPrivileged, which a system administrator sets with \
         `wharf project update {project} --allow-privileged=true`",
        found.join(", ")
    ))
}

/// `POST /api/v1/apply[?project=P]` with YAML or JSON documents: creates
/// or updates each object. Everything is parsed, placed in its project and
/// authorized (`push`) before anything changes; unknown fields come back as
/// warnings.
pub(crate) async fn apply(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Query(params): Query<ApplyParams>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiErrorReply::invalid("the manifest is not UTF-8 text"))?;
    let parsed = wharf_api::parse_manifests(text)?;
    let mut work = Vec::new();
    let mut host_path_prefixes = None;
    for (index, mut document) in parsed.into_iter().enumerate() {
        if let Manifest::Deployment(deployment) = &document.manifest {
            let pod = &deployment.spec.template.spec;
            if pod.volumes.iter().any(|v| v.host_path.is_some()) {
                if host_path_prefixes.is_none() {
                    host_path_prefixes = Some(state.identity.settings().await?.host_path_prefixes);
                }
                pod.check_host_paths(
                    "spec.template.spec",
                    host_path_prefixes.as_deref().unwrap_or_default(),
                )?;
            }
        }
        if document.manifest.is_cluster_wide() {
            check_cluster_wide(&state, &caller, &document.manifest).await?;
            work.push(document);
            continue;
        }
        let kind = document.manifest.kind();
        let meta = document.manifest.metadata();
        let project = project_of(
            kind,
            &meta.name,
            meta.project.as_deref(),
            params.project.as_deref(),
        )
        .or_else(|refusal| match &params.default_project {
            Some(default) if params.project.is_none() => Ok(default.clone()),
            _ => Err(refusal),
        })?;
        state
            .identity
            .require(&caller.principal, &project, Action::Push)
            .await?;
        if let Manifest::Deployment(deployment) = &mut document.manifest {
            check_privileges(&state, &project, deployment)
                .await
                .map_err(|m| ApiErrorReply::invalid(format!("document {}: {m}", index + 1)))?;
            super::project_tier::apply_default(&state, &project, deployment).await?;
        }
        document.manifest.metadata_mut().project = Some(project);
        work.push(document);
    }
    let mut results = Vec::new();
    for document in work {
        let kind = document.manifest.kind();
        let (project, name, created, generation) =
            apply_one(&state, &caller, document.manifest).await?;
        results.push(json!({
            "kind": kind,
            "project": (!project.is_empty()).then_some(project),
            "name": name,
            "action": if created { "created" } else { "configured" },
            "generation": generation,
            "warnings": document.unknown_fields.iter().map(|f| format!("unknown field {f} ignored")).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({ "results": results })))
}

/// A cluster-wide object (the inventory kinds) names no project, and only
/// callers who manage the inventory apply it.
async fn check_cluster_wide(
    state: &AppState,
    caller: &ApiCaller,
    manifest: &Manifest,
) -> ApiResult<()> {
    let meta = manifest.metadata();
    if let Some(project) = &meta.project {
        return Err(ApiErrorReply::invalid(format!(
            "{} {} is cluster-wide: drop metadata.namespace {project}",
            manifest.kind().to_lowercase(),
            meta.name
        )));
    }
    authorize_inventory(&state.identity, &caller.principal, InventoryAction::Manage).await?;
    Ok(())
}

/// Applies one object, audited: its project (empty for a cluster-wide
/// one), name, whether it was created and its generation.
async fn apply_one(
    state: &AppState,
    caller: &ApiCaller,
    manifest: Manifest,
) -> ApiResult<(String, String, bool, u64)> {
    use InventoryWrite::Apply;
    let kind = manifest.kind();
    let meta = manifest.metadata().clone();
    let project = meta.project.clone().unwrap_or_default();
    let resource = format!("{project}/{}/{}", kind.to_lowercase(), meta.name);
    let action = format!("{}.apply", kind.to_lowercase());
    let (generation, created) = match manifest {
        Manifest::Deployment(deployment) => {
            let work = state.control.apply_deployment(*deployment);
            let (applied, created) = state.audited(caller, &action, resource, work).await?;
            (applied.metadata.generation, created)
        }
        Manifest::ConfigMap(config_map) => {
            let work = state.config.apply_config_map(*config_map);
            let (applied, created) = state.audited(caller, &action, resource, work).await?;
            (applied.metadata.generation, created)
        }
        Manifest::Secret(secret) => {
            let work = state.config.apply_secret(*secret);
            let (applied, created) = state.audited(caller, &action, resource, work).await?;
            (applied.metadata.generation, created)
        }
        Manifest::PersistentVolumeClaim(claim) => {
            let work = state.control.objects().apply_claim(*claim);
            let (applied, created) = state.audited(caller, &action, resource, work).await?;
            (applied.metadata.generation, created)
        }
        Manifest::Service(service) => {
            let work = state.control.apply_service(*service);
            let (applied, created) = state.audited(caller, &action, resource, work).await?;
            (applied.metadata.generation, created)
        }
        Manifest::HorizontalPodAutoscaler(hpa) => {
            let work = state.control.objects().apply_hpa(*hpa);
            let (applied, created) = state.audited(caller, &action, resource, work).await?;
            (applied.metadata.generation, created)
        }
        Manifest::Cluster(cluster) => {
            let (applied, created) = inventory::write(state, caller, *cluster, Apply).await?;
            (applied.metadata.generation, created)
        }
        Manifest::Pool(pool) => {
            let (applied, created) = inventory::write(state, caller, *pool, Apply).await?;
            (applied.metadata.generation, created)
        }
        Manifest::MachineClass(class) => {
            let (applied, created) = inventory::write(state, caller, *class, Apply).await?;
            (applied.metadata.generation, created)
        }
        Manifest::PoolGrant(grant) => {
            let (applied, created) = super::pool_grants::apply(state, caller, *grant).await?;
            (applied.metadata.generation, created)
        }
        Manifest::CostBudget(budget) => {
            let (applied, created) = super::cost_budgets::apply(state, caller, *budget).await?;
            (applied.metadata.generation, created)
        }
    };
    Ok((project, meta.name, created, generation))
}
