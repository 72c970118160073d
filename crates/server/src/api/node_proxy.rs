//! Reaching the agent of a pod's node, for what only the node can answer
//! (logs, exec, port-forward). The caller's own token goes along: the agent
//! asks this server whether it may, so a node trusts nobody else's word.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use wharf_api::{Node, Pod};

use super::{ApiErrorReply, ApiResult};
use crate::AppState;

/// The client for agents; no overall timeout, since logs are followed and
/// exec sessions last as long as they last.
pub(super) fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client")
    })
}

/// The agent endpoint serving pod `project/name`: the node's name and the
/// URL of `/v1/pods/{project}/{name}/{what}` there.
pub(super) async fn pod_url(
    state: &AppState,
    project: &str,
    name: &str,
    what: &str,
) -> ApiResult<(String, String)> {
    let objects = state.control.objects();
    let pod: Pod = objects.require(Some(project), name).await?;
    let unavailable = |message: String| {
        ApiErrorReply::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
    };
    let node_name = pod
        .spec
        .node_name
        .ok_or_else(|| unavailable(format!("pod {project}/{name} is not on a node yet")))?;
    let node: Node = objects.require(None, &node_name).await?;
    let endpoint = node.status.endpoint.ok_or_else(|| {
        unavailable(format!(
            "node {node_name} does not serve pods (its agent runs no containers)"
        ))
    })?;
    let url = format!(
        "{}/v1/pods/{project}/{name}/{what}",
        endpoint.trim_end_matches('/')
    );
    Ok((node_name, url))
}

/// The reply for an agent that could not be reached.
pub(super) fn unreachable(node: &str, err: reqwest::Error) -> ApiErrorReply {
    ApiErrorReply::new(
        StatusCode::BAD_GATEWAY,
        "NODE_UNREACHABLE",
        format!("node {node}: {err}"),
    )
}

/// The reply for an agent that refused, with its status and message.
pub(super) async fn refused(node: &str, response: reqwest::Response) -> ApiErrorReply {
    let status = response.status();
    let message = response.text().await.unwrap_or_default();
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    ApiErrorReply::new(status, "NODE_REFUSED", format!("node {node}: {message}"))
}
