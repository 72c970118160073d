//! `/api/v1/`: administration endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use wharf_registry::{GcOptions, Registry};

pub(crate) fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/gc", post(run_gc))
        .with_state(registry)
}

#[derive(Debug, Default, Deserialize)]
struct GcRequest {
    #[serde(default)]
    dry_run: bool,
    /// Overrides the configured grace period.
    grace_seconds: Option<u64>,
}

async fn run_gc(
    State(registry): State<Arc<Registry>>,
    request: Option<Json<GcRequest>>,
) -> Response {
    let request = request.map(|Json(r)| r).unwrap_or_default();
    let options = GcOptions {
        grace: request
            .grace_seconds
            .map_or(registry.config().gc_grace, Duration::from_secs),
        dry_run: request.dry_run,
    };
    match registry.collect_garbage(options).await {
        Ok(report) => Json(report).into_response(),
        Err(err) => err.into_response(),
    }
}
