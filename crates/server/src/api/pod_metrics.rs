//! Pods' CPU and memory: nodes report raw samples
//! (`PUT /api/v1/nodes/{node}/usage`), kept in the server's memory, and
//! users read rates (`GET .../pods/{name}/metrics`, `wharf top pods`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use wharf_api::{Pod, PodMetrics, PodUsage};
use wharf_control::ControlError;

use super::{ApiResult, Body as JsonBody};
use crate::AppState;

/// `PUT /api/v1/nodes/{node}/usage`: one sample of the node's running
/// containers, from its agent.
pub(crate) async fn report_usage(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
    JsonBody(pods): JsonBody<Vec<PodUsage>>,
) -> ApiResult<StatusCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    state.control.pod_metrics().record(&node, pods, now);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/projects/{project}/pods/{name}/metrics`: the pod's CPU
/// (millicores) and memory over its node's last two samples.
pub(crate) async fn pod_metrics(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<PodMetrics>> {
    let pod: Pod = state
        .control
        .objects()
        .require(Some(&project), &name)
        .await?;
    let metrics = state
        .control
        .pod_metrics()
        .pod(&pod)
        .ok_or(ControlError::NotFound {
            kind: "pod metrics",
            name: format!("{project}/{name}"),
        })?;
    Ok(Json(metrics))
}

/// `GET /api/v1/projects/{project}/podmetrics`: those of every pod of the
/// project that has them, by name.
pub(crate) async fn project_metrics(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<PodMetrics>>> {
    let (pods, _) = state
        .control
        .objects()
        .list::<Pod>(Some(&project), None)
        .await?;
    Ok(Json(state.control.pod_metrics().of_pods(&pods)))
}
