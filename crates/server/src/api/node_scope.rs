//! What a node's own credential may say about pods. The pod routes agents
//! call (status, events, stopped, address claims) name a project and a pod,
//! not a node, so the route table's `Node` access cannot tell one node's
//! pods from another's; these checks do, as Kubernetes' node authorizer
//! does. Administrators are not limited.

use std::sync::Arc;

use wharf_api::Pod;
use wharf_auth::AuthError;

use super::{ApiCaller, ApiResult};
use crate::AppState;

fn denied(own: &str, what: String) -> AuthError {
    AuthError::Denied(format!(
        "the credential of node {own} speaks for node {own}'s pods only: {what}"
    ))
}

/// Refuses a node agent's call about pod `project/name` unless the pod is
/// bound to the caller's node. A pod that does not exist passes: the
/// operation itself says what that means (cleanup of a pod that is gone
/// succeeds, a status report for it fails).
pub(crate) async fn require_pod_of_callers_node(
    state: &Arc<AppState>,
    caller: &ApiCaller,
    project: &str,
    name: &str,
) -> ApiResult<()> {
    let Some(own) = caller.principal.node_agent() else {
        return Ok(());
    };
    let Some(pod) = state
        .control
        .objects()
        .get::<Pod>(Some(project), name)
        .await?
    else {
        return Ok(());
    };
    match pod.spec.node_name.as_deref() {
        Some(node) if node == own => Ok(()),
        Some(node) => Err(denied(own, format!("pod {project}/{name} is on node {node}")).into()),
        None => Err(denied(own, format!("pod {project}/{name} is not bound to a node")).into()),
    }
}

/// Refuses a node agent's release of the address claim of pod
/// `project/name` unless the claim is its own node's. Agents name the pod
/// uid they release for: a claim is for one uid and a pod never changes
/// node, so checking the claim held for that uid is free of races.
pub(crate) async fn require_claim_of_callers_node(
    state: &Arc<AppState>,
    caller: &ApiCaller,
    project: &str,
    name: &str,
    uid: Option<&str>,
) -> ApiResult<()> {
    let Some(own) = caller.principal.node_agent() else {
        return Ok(());
    };
    let Some(uid) = uid else {
        let what = format!("releasing pod {project}/{name}'s address needs the pod's uid");
        return Err(denied(own, what).into());
    };
    let claim = state.control.objects().pod_ip_claim(project, name).await?;
    match claim {
        Some(claim) if claim.pod_uid == uid && claim.node != own => {
            let what = format!(
                "pod {project}/{name}'s address is held on node {}",
                claim.node
            );
            Err(denied(own, what).into())
        }
        _ => Ok(()),
    }
}
