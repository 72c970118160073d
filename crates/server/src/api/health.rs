//! Probes for supervisors and load balancers, unauthenticated as in
//! Kubernetes: `/livez` says the process serves HTTP, `/readyz` that it can
//! answer requests (its store answers and it is not shutting down).

use std::sync::Arc;

use axum::extract::State;
use http::StatusCode;

use crate::AppState;

/// `GET /livez`: 200 while the process serves requests at all.
pub(crate) async fn livez() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the store answers a read; 503 once shutdown
/// began (so a balancer stops sending new requests while this server
/// drains) or when the store fails.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, String) {
    if *state.stopping.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    }
    // Any key will do: the read proves the store is open and reachable.
    match state.control.objects().store().get("/readyz").await {
        Ok(_) => (StatusCode::OK, "ok".into()),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {err}")),
    }
}
