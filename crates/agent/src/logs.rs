//! `GET /v1/pods/{project}/{name}/log` on the agent's endpoint
//! ([`crate::endpoint`]): a container's log file, streamed; with
//! `previous=true`, only what its run before the current one wrote.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::api::PodAccess;
use crate::endpoint::{EndpointState, refuse};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogParams {
    container: Option<String>,
    #[serde(default)]
    follow: bool,
    tail_lines: Option<usize>,
    #[serde(default)]
    previous: bool,
}

pub(crate) async fn pod_log(
    State(state): State<Arc<EndpointState>>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
    headers: HeaderMap,
) -> Response {
    let mut names = vec![project.as_str(), name.as_str()];
    names.extend(params.container.as_deref());
    if let Err(refused) = state.authorize(&headers, &names, PodAccess::Read).await {
        return refused;
    }
    let container = match state
        .choose_container(&project, &name, params.container)
        .await
    {
        Ok(container) => container,
        Err(refused) => return refused,
    };
    let Some(path) = state.runtime.log_path(&project, &name, &container) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("container {container} of pod {project}/{name} has no log on this node"),
        );
    };
    let stream = if params.previous {
        match wharf_runc::logs::previous_run(&path).await {
            Ok(Some(run)) => wharf_runc::logs::read_range(path, run, params.tail_lines),
            Ok(None) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container {container} of pod {project}/{name} has not restarted: \
                         there is no previous run"
                    ),
                );
            }
            Err(err) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        }
    } else {
        wharf_runc::logs::read(path, params.follow, params.tail_lines)
    };
    let stream = stream.map(|chunk| chunk.map_err(std::io::Error::other));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
