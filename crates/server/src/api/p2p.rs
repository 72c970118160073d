//! The P2P tracker's routes (see [`wharf_p2p::wire`]); node credentials
//! only.
//!
//! ```text
//! GET  /api/v1/p2p/key       -> ServerKey
//! POST /api/v1/p2p/tasks     TaskRequest -> TaskAssignment
//! POST /api/v1/p2p/reports   PeerReport  -> TaskAssignment
//! ```
//!
//! A task or report is answered only if the node may pull the repository
//! (the token server's own decision for the node's credential) and the
//! blob is in that repository; the grant then names that blob alone. The
//! calls are hot (every node, every blob, every second), so refusals are
//! logged at debug and nothing is audited.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use http::StatusCode;
use wharf_api::{LABEL_IDC, LABEL_POOL, Node};
use wharf_auth::Action;
use wharf_oci::{Digest, RepositoryName};
use wharf_p2p::wire::{PeerReport, ServerKey, TaskAssignment, TaskRequest};
use wharf_p2p::{PeerInfo, PeerUpdate, PieceManifest};
use wharf_registry::RegistryError;

use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;
use crate::p2p::{ManifestError, Tracking};

/// `GET /api/v1/p2p/key`: the public key peers check grants with.
pub(crate) async fn key(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
) -> ApiResult<Json<ServerKey>> {
    node_of(&caller)?;
    Ok(Json(state.p2p.server_key()))
}

/// `POST /api/v1/p2p/tasks`: a node starts fetching a blob.
pub(crate) async fn start_task(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    JsonBody(request): JsonBody<TaskRequest>,
) -> ApiResult<Json<TaskAssignment>> {
    let node = node_of(&caller)?;
    let answer = async {
        let manifest = checked_manifest(
            &state,
            &caller,
            node,
            &request.repository,
            &request.digest,
            request.size,
        )
        .await?;
        let update = PeerUpdate::starting(manifest.piece_count());
        assign(&state, node, update, &manifest).await
    };
    answer
        .await
        .inspect_err(|e| refused(node, &request.digest, e))
}

/// `POST /api/v1/p2p/reports`: a node's progress; also how a tracker that
/// restarted learns again who holds what.
pub(crate) async fn report(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    JsonBody(report): JsonBody<PeerReport>,
) -> ApiResult<Json<TaskAssignment>> {
    let node = node_of(&caller)?;
    let answer = async {
        let manifest = checked_manifest(
            &state,
            &caller,
            node,
            &report.repository,
            &report.digest,
            report.size,
        )
        .await?;
        assign(&state, node, PeerUpdate::from(&report), &manifest).await
    };
    answer
        .await
        .inspect_err(|e| refused(node, &report.digest, e))
}

/// The node a node credential speaks for; anyone else is refused (an
/// administrator has no node to fetch to).
fn node_of(caller: &ApiCaller) -> ApiResult<&str> {
    caller.principal.node_agent().ok_or_else(|| {
        ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!(
                "{} is not a node: only node credentials use the P2P tracker",
                caller.principal.name()
            ),
        )
    })
}

fn refused(node: &str, digest: &Digest, reply: &ApiErrorReply) {
    tracing::debug!(node, %digest, status = %reply.status, reason = %reply.message, "p2p tracker refused");
}

/// Every check of a node's fetch of `digest` from `repository`, in the
/// order the node can act on, then the blob's manifest.
async fn checked_manifest(
    state: &AppState,
    caller: &ApiCaller,
    node: &str,
    repository: &str,
    digest: &Digest,
    size: u64,
) -> ApiResult<Arc<PieceManifest>> {
    let repository: RepositoryName = repository.parse().map_err(|e| {
        ApiErrorReply::invalid(format!(
            "repository: {repository:?} is not a repository name ({e})"
        ))
    })?;
    require_leader(state).await?;
    // The token server's own decision for this credential.
    let allowed = state
        .identity
        .registry_actions(&caller.principal, &repository)
        .await?;
    if !allowed.contains(Action::Pull) {
        return Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!("node {node} may not pull repository {repository}"),
        ));
    }
    let blob = match state.registry.stat_blob(&repository, digest).await {
        Ok(blob) => blob,
        Err(RegistryError::BlobUnknown(_)) => {
            return Err(ApiErrorReply::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("blob {digest} is not in repository {repository}"),
            ));
        }
        Err(other) => return Err(other.into()),
    };
    if blob.size != size {
        return Err(ApiErrorReply::invalid(format!(
            "size: blob {digest} has {} bytes, not {size}",
            blob.size
        )));
    }
    state
        .p2p
        .manifest(digest, blob.size)
        .await
        .map_err(|e| match e {
            ManifestError::Missing(_) => {
                ApiErrorReply::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string())
            }
            ManifestError::Corrupt { .. } | ManifestError::Read { .. } => {
                tracing::error!(error = %e, "no piece manifest");
                ApiErrorReply::internal(e.to_string())
            }
        })
}

/// Refuses with 503 on a server that does not track: the agent then
/// fetches from the registry, and its next blob may reach the leader.
async fn require_leader(state: &AppState) -> ApiResult<()> {
    match state.p2p.tracking().await {
        Ok(Tracking::Here) => Ok(()),
        Ok(Tracking::Elsewhere(leader)) => Err(ApiErrorReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_LEADER",
            format!("the P2P tracker runs on the leading server {leader}; fetch from the registry"),
        )),
        Err(e) => Err(ApiErrorReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!("who tracks is unknown ({e}); fetch from the registry"),
        )),
    }
}

/// Runs the tracker for `node` and answers with its parents and a grant.
async fn assign(
    state: &AppState,
    node: &str,
    update: PeerUpdate,
    manifest: &PieceManifest,
) -> ApiResult<Json<TaskAssignment>> {
    let peer = peer_info(state, node).await?;
    state
        .p2p
        .assign(peer, update, manifest)
        .map(Json)
        .map_err(|e| ApiErrorReply::invalid(e.to_string()))
}

/// Where node `node` is and how to reach it, from its Node object.
async fn peer_info(state: &AppState, node: &str) -> ApiResult<PeerInfo> {
    let object: Node = state
        .control
        .objects()
        .get(None, node)
        .await?
        .ok_or_else(|| {
            ApiErrorReply::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("node {node} is not registered: its agent registers it first"),
            )
        })?;
    let label = |key: &str| object.metadata.labels.get(key).cloned();
    Ok(PeerInfo {
        node: node.to_string(),
        url: object.status.endpoint.clone(),
        idc: label(LABEL_IDC),
        pool: label(LABEL_POOL),
    })
}
