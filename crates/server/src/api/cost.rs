//! `GET /api/v1/cost/report`: cost over a window from the history the
//! leader's cost recorder keeps in this server's data directory
//! (docs/cost.md).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use http::StatusCode;
use wharf_api::{CostGrouping, CostReport, parse_time_bound};
use wharf_auth::{AuthError, Principal};
use wharf_control::cost::build_report;

use super::{ApiCaller, ApiErrorReply, ApiResult, InventoryAction, authorize_inventory};
use crate::AppState;

/// The window read when the request names no start: the last day.
const DEFAULT_SINCE: &str = "24h";

/// Whether the caller reads every project's cost and the unallocated
/// cost: the inventory's readers (viewer and up) and administrators.
async fn reads_all_cost(state: &AppState, principal: &Principal) -> bool {
    authorize_inventory(&state.identity, principal, InventoryAction::Read)
        .await
        .is_ok()
}

/// The projects whose cost a caller who does not read everything sees:
/// those they are a member of. Robots see none: a robot's pull right (a
/// node's pulls every project) is no right to a project's spending.
async fn own_projects(state: &AppState, principal: &Principal) -> ApiResult<HashSet<String>> {
    let mut own = HashSet::new();
    let Principal::User { name, .. } = principal else {
        return Ok(own);
    };
    for project in state.identity.list_projects(principal).await? {
        let members = state.identity.list_members(&project.name).await?;
        if members.iter().any(|m| &m.user == name) {
            own.insert(project.name);
        }
    }
    Ok(own)
}

/// `GET /api/v1/cost/report?by=&since=&until=`: bounds are RFC 3339 or
/// durations back from now, rounded down to the minute.
pub(crate) async fn report(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<CostReport>> {
    let now = super::unix_now() as u64 * 1000;
    let by: CostGrouping = params
        .get("by")
        .map_or(Ok(CostGrouping::Project), |b| b.parse())
        .map_err(ApiErrorReply::invalid)?;
    let bound = |name: &str, default: &str| {
        let text = params.get(name).map_or(default, String::as_str);
        parse_time_bound(text, now)
            .map(|ms| ms / 60_000 * 60_000)
            .map_err(|e| ApiErrorReply::invalid(format!("{name}: {e}")))
    };
    let since = bound("since", DEFAULT_SINCE)?;
    let until = bound("until", "0s")?;
    if since >= until {
        return Err(ApiErrorReply::invalid(
            "since must be at least a minute before until",
        ));
    }
    let projects = if reads_all_cost(&state, &caller.principal).await {
        None
    } else {
        let own = own_projects(&state, &caller.principal).await?;
        if own.is_empty() {
            return Err(AuthError::Denied(
                "cost is read by administrators and by members of a project (its rows)".into(),
            )
            .into());
        }
        Some(own)
    };
    let history = state.cost_history.clone();
    let window = tokio::task::spawn_blocking(move || history.read(since / 60_000, until / 60_000))
        .await
        .map_err(|e| {
            ApiErrorReply::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
        })?
        .map_err(|e| {
            ApiErrorReply::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("reading the cost history: {e}"),
            )
        })?;
    Ok(Json(build_report(
        &window,
        by,
        since,
        until,
        projects.as_ref(),
    )))
}
