//! `GET /api/v1/projects/{project}/pods/{name}/log`: a container's log,
//! streamed from the agent of the pod's node (`?follow=true` keeps it
//! open). The caller's own token goes along: the agent asks this server
//! whether it may read the pod, so a node trusts nobody else's word.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::TryStreamExt;
use wharf_api::{Node, Pod};

use super::{ApiErrorReply, ApiResult};
use crate::AppState;

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client")
    })
}

/// Proxies the log request to the pod's node.
pub(crate) async fn pod_log(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let objects = state.control.objects();
    let pod: Pod = objects.require(Some(&project), &name).await?;
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
            "node {node_name} does not serve logs (its agent runs no containers)"
        ))
    })?;
    let url = format!(
        "{}/v1/pods/{project}/{name}/log?{}",
        endpoint.trim_end_matches('/'),
        query.unwrap_or_default()
    );
    let mut request = http().get(&url);
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let response = request.send().await.map_err(|e| {
        ApiErrorReply::new(
            StatusCode::BAD_GATEWAY,
            "NODE_UNREACHABLE",
            format!("node {node_name} at {endpoint}: {e}"),
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        let message = response.text().await.unwrap_or_default();
        let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        return Err(ApiErrorReply::new(
            status,
            "NODE_REFUSED",
            format!("node {node_name}: {message}"),
        ));
    }
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}
