//! The agent's HTTP endpoint for container logs, which the server proxies
//! `wharf logs` to. A caller must present a token the server accepts for
//! reading the pod: the agent asks the server, so it holds no credentials
//! of its own to check.
//!
//! `GET /v1/pods/{project}/{name}/log?container=C&follow=true&tailLines=N`

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::api::NodeApi;
use crate::containers::ContainerRuntime;

struct LogState {
    api: Arc<dyn NodeApi>,
    runtime: Arc<ContainerRuntime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogParams {
    container: Option<String>,
    #[serde(default)]
    follow: bool,
    tail_lines: Option<usize>,
}

/// Serves logs on `listener` until the task is dropped.
pub async fn serve_logs(
    listener: tokio::net::TcpListener,
    api: Arc<dyn NodeApi>,
    runtime: Arc<ContainerRuntime>,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/v1/pods/{project}/{name}/log", get(pod_log))
        .with_state(Arc::new(LogState { api, runtime }));
    axum::serve(listener, router).await
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

async fn pod_log(
    State(state): State<Arc<LogState>>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
    headers: HeaderMap,
) -> Response {
    // Names become path components: only DNS labels get that far.
    let names = [&project, &name]
        .into_iter()
        .chain(params.container.as_ref());
    if let Some(bad) = names
        .into_iter()
        .find(|n| wharf_api::check_name("name", n).is_err())
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("{bad:?} is not a valid name"),
        );
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return refuse(StatusCode::UNAUTHORIZED, "a bearer token is required");
    };
    match state.api.may_read_pod(token, &project, &name).await {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "the server does not let this token read the pod",
            );
        }
        Err(err) => return refuse(StatusCode::BAD_GATEWAY, format!("asking the server: {err}")),
    }
    let containers = state.runtime.containers_of(&project, &name).await;
    let container = match (params.container, containers.as_slice()) {
        (Some(container), _) => container,
        (None, [only]) => only.clone(),
        (None, []) => {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("pod {project}/{name} has no containers on this node"),
            );
        }
        (None, many) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "pod {project}/{name} has several containers; choose one of {}",
                    many.join(", ")
                ),
            );
        }
    };
    let Some(path) = state.runtime.log_path(&project, &name, &container) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("container {container} of pod {project}/{name} has no log on this node"),
        );
    };
    let stream = wharf_runc::logs::read(path, params.follow, params.tail_lines)
        .map(|chunk| chunk.map_err(std::io::Error::other));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
