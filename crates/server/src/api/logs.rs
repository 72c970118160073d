//! `GET /api/v1/projects/{project}/pods/{name}/log`: a container's log,
//! streamed from the agent of the pod's node (`?follow=true` keeps it
//! open, `?previous=true` gives the run before the current one).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::TryStreamExt;

use super::ApiResult;
use super::node_proxy::{self, http};
use crate::AppState;

/// Proxies the log request to the pod's node.
pub(crate) async fn pod_log(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (node, url) = node_proxy::pod_url(&state, &project, &name, "log").await?;
    let url = format!("{url}?{}", query.unwrap_or_default());
    let mut request = http().get(&url);
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| node_proxy::unreachable(&node, e))?;
    if !response.status().is_success() {
        return Err(node_proxy::refused(&node, response).await);
    }
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}
