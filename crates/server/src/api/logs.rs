//! `GET /api/v1/projects/{project}/pods/{name}/log`: a container's log,
//! streamed from the agent of the pod's node (`?follow=true` keeps it
//! open, `?previous=true` gives the run before the current one).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use futures_util::TryStreamExt;

use super::node_proxy::{self, http};
use super::{ApiCaller, ApiResult};
use crate::AppState;

/// Proxies the log request to the pod's node.
pub(crate) async fn pod_log(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (node, url) = node_proxy::pod_url(&state, &project, &name, "log").await?;
    let url = format!("{url}?{}", query.unwrap_or_default());
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(authorization) => authorization.clone(),
        // A dashboard session has no token of its own to pass on (its
        // cookie stays with the browser): the node gets a short-lived API
        // token of the same principal, which it checks with this server as
        // it checks any caller's.
        None => {
            let issued = state.identity.issue_api_token(&caller.principal).await?;
            HeaderValue::from_str(&format!("Bearer {}", issued.token))
                .expect("a JWT is a valid header value")
        }
    };
    let request = http()
        .get(&url)
        .header(header::AUTHORIZATION, authorization);
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
