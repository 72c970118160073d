//! Preheat over HTTP. Project members read policies and jobs;
//! maintainers and up (the `delete` action: they decide what the
//! project's pushes cost the cluster) write policies and start jobs. A
//! job or policy aimed at a managed pool needs the project's grant on it,
//! as the project's pods would. Node agents list their own open jobs and
//! report on them, for their own node only (`Access::Node` checks the
//! path's node, [`report`] that the node is a target).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};
use wharf_api::preheat::{
    NodePreheatState, Preheat, PreheatAssignment, PreheatPolicy, PreheatReport, PreheatRequest,
    PreheatTarget,
};
use wharf_api::{ObjectError, Pool, PoolGrant};
use wharf_oci::{Reference, RepositoryName};

use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;
use crate::preheats::{PreheatOrigin, now_millis, open_for_node, start_preheat};

fn bad_request(code: &'static str, message: String) -> ApiErrorReply {
    ApiErrorReply::new(StatusCode::BAD_REQUEST, code, message)
}

/// Refuses a target pool the project may not place pods in.
async fn require_pool_access(
    state: &AppState,
    project: &str,
    target: &PreheatTarget,
) -> ApiResult<()> {
    let PreheatTarget::Pool(pool) = target else {
        return Ok(());
    };
    let objects = state.control.objects();
    let (pools, _) = objects.list::<Pool>(None, None).await?;
    let (grants, _) = objects.list::<PoolGrant>(None, None).await?;
    if wharf_control::pool_access(&pools, &grants).allows(pool, project) {
        Ok(())
    } else {
        Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!(
                "project {project} has no grant on pool {pool}: its images are not preheated there"
            ),
        ))
    }
}

/// `GET /api/v1/projects/{project}/preheatpolicies`
pub(crate) async fn list_policies(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> ApiResult<Json<Value>> {
    let objects = state.control.objects();
    let (items, _) = objects.list::<PreheatPolicy>(Some(&project), None).await?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/projects/{project}/preheatpolicies/{name}`
pub(crate) async fn show_policy(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<PreheatPolicy>> {
    let objects = state.control.objects();
    Ok(Json(objects.require(Some(&project), &name).await?))
}

/// `POST /api/v1/projects/{project}/preheatpolicies`: a new policy (the
/// project is the path's, whatever the body says).
pub(crate) async fn create_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    JsonBody(mut policy): JsonBody<PreheatPolicy>,
) -> ApiResult<(StatusCode, Json<PreheatPolicy>)> {
    policy.metadata.project = Some(project.clone());
    policy.api_version = "wharf.io/v1".into();
    policy.kind = "PreheatPolicy".into();
    let resource = format!("preheatpolicy/{project}/{}", policy.metadata.name);
    let work = async {
        policy.validate()?;
        require_pool_access(&state, &project, &policy.spec.target).await?;
        Ok::<_, ApiErrorReply>(state.control.objects().create(policy).await?)
    };
    let created = state
        .audited(&caller, "preheatpolicy.create", resource, work)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `DELETE /api/v1/projects/{project}/preheatpolicies/{name}`: jobs it
/// started stay.
pub(crate) async fn delete_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let objects = state.control.objects();
    let work = objects.delete::<PreheatPolicy>(Some(&project), &name, None);
    let resource = format!("preheatpolicy/{project}/{name}");
    state
        .audited(&caller, "preheatpolicy.delete", resource, work)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/projects/{project}/preheats`: newest first.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> ApiResult<Json<Value>> {
    let objects = state.control.objects();
    let (mut items, _) = objects.list::<Preheat>(Some(&project), None).await?;
    items.sort_by_key(|p| std::cmp::Reverse(p.metadata.created_at));
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/projects/{project}/preheats/{name}`
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Preheat>> {
    let objects = state.control.objects();
    Ok(Json(objects.require(Some(&project), &name).await?))
}

/// `POST /api/v1/projects/{project}/preheats`: warm the seed peers, or
/// every ready node of a pool, with an image of the project. A tag is
/// resolved to its digest now; the nodes pull that digest.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
    JsonBody(request): JsonBody<PreheatRequest>,
) -> ApiResult<(StatusCode, Json<Preheat>)> {
    let image = format!("{project}/{}:{}", request.repository, request.reference);
    let work = async {
        let repository: RepositoryName = format!("{project}/{}", request.repository)
            .parse()
            .map_err(|e| bad_request("NAME_INVALID", format!("repository: {e}")))?;
        let reference: Reference = request
            .reference
            .parse()
            .map_err(|e| bad_request("REFERENCE_INVALID", format!("reference: {e}")))?;
        let target = match &request.pool {
            Some(pool) => {
                wharf_api::check_name("pool", pool)?;
                PreheatTarget::Pool(pool.clone())
            }
            None => PreheatTarget::Seeds,
        };
        require_pool_access(&state, &project, &target).await?;
        let detail = state.registry.inspect(&repository, &reference).await?;
        let digest = detail.summary.digest.parse().map_err(|e| {
            ApiErrorReply::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("the registry's digest of {repository}:{reference}: {e}"),
            )
        })?;
        let origin = PreheatOrigin {
            policy: None,
            requested_by: caller.principal.name().to_string(),
        };
        let objects = state.control.objects();
        let preheat = start_preheat(
            objects,
            &repository,
            &request.reference,
            &digest,
            target,
            origin,
        );
        Ok::<_, ApiErrorReply>(preheat.await?)
    };
    let created = state
        .audited_request(
            &caller,
            "preheat.create",
            format!("artifact/{image}"),
            image.clone(),
            work,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/v1/nodes/{node}/preheats`: the node's unfinished jobs.
pub(crate) async fn node_assignments(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> ApiResult<Json<Value>> {
    let open = open_for_node(state.control.objects(), &node).await?;
    let items: Vec<PreheatAssignment> = open
        .iter()
        .map(|p| PreheatAssignment {
            project: p.metadata.project.clone().unwrap_or_default(),
            name: p.metadata.name.clone(),
            image: p.image(),
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `PUT /api/v1/nodes/{node}/preheats/{project}/{name}`: a node's
/// progress on one job; refused unless the node is one of its targets and
/// has not finished it.
pub(crate) async fn report(
    State(state): State<Arc<AppState>>,
    Path((node, project, name)): Path<(String, String, String)>,
    JsonBody(report): JsonBody<PreheatReport>,
) -> ApiResult<Json<Preheat>> {
    if report.state == NodePreheatState::Pending {
        return Err(ApiErrorReply::invalid(
            "state: a node reports Pulling, Done or Failed",
        ));
    }
    let objects = state.control.objects();
    let current: Preheat = objects.require(Some(&project), &name).await?;
    if !current.status.nodes.iter().any(|n| n.node == node) {
        return Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!("node {node} is not a target of preheat {project}/{name}"),
        ));
    }
    let now = now_millis();
    let mut refusal: Option<ObjectError> = None;
    let updated = objects
        .modify::<Preheat>(Some(&project), &name, |preheat| {
            match preheat.record(&node, &report, now) {
                Ok(()) => true,
                Err(err) => {
                    refusal = Some(err);
                    false
                }
            }
        })
        .await?;
    match refusal {
        // The one refusal left: the node already finished it.
        Some(err) => Err(ApiErrorReply::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            err.to_string(),
        )),
        None => Ok(Json(updated)),
    }
}
