//! `GET /metrics`: one Prometheus scrape target for the cluster. The
//! server's own metrics ([`ServerMetrics`](crate::telemetry::ServerMetrics)),
//! this process's CPU and memory, and, federated from this server's
//! time-series store, the newest sample of every node and container series
//! its agents pushed, under the names `wharf_tsdb::prometheus` derives.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_tsdb::prometheus::{CONTENT_TYPE, Exposition, process_metrics};

use super::{ApiErrorReply, ApiResult};
use crate::AppState;

/// Series not reported for this long are left out, so Prometheus sees
/// them end: three missed pushes at the agents' default 10 s interval,
/// with room for a slow push.
const FRESH_SECS: i64 = 60;

/// `GET /api/v1/metrics/access`: 204 when the caller may scrape; an
/// agent asks it with the token its own `/metrics` was sent.
pub(crate) async fn may_scrape() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /metrics` (administrators and `metrics:read` robots).
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let tsdb = state.metrics.clone();
    let own = state.telemetry.clone();
    // Gathering takes the store's lock over every series and reads /proc.
    let text = tokio::task::spawn_blocking(move || {
        let mut out = Exposition::default();
        own.render(&mut out);
        let stats = tsdb.stats();
        out.gauge(
            "wharf_metrics_series",
            "Series in this server's time-series store.",
            &[],
            stats.series as f64,
        );
        out.gauge(
            "wharf_metrics_raw_points",
            "Raw samples held in memory by the time-series store.",
            &[],
            stats.raw_points as f64,
        );
        process_metrics(&mut out);
        out.federate(&tsdb.latest(super::unix_now() - FRESH_SECS));
        out.render()
    })
    .await
    .map_err(|e| {
        ApiErrorReply::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
