//! Cost budgets over HTTP (`/api/v1/cost/budgets[/{project}]`), also
//! applied as YAML (`kind: CostBudget`) through `/api/v1/apply`. Setting
//! and deleting one is the inventory's `manage` (cluster administrators);
//! the inventory's readers read every budget, a project's admins and
//! maintainers read their project's (docs/cost.md).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};
use wharf_api::CostBudget;
use wharf_auth::{Action, AuthError};

use super::cost::reads_all_cost;
use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;

/// What a project member needs to read their project's budget: what
/// maintainers and project admins have.
const READS_OWN_BUDGET: Action = Action::Delete;

/// Whether the caller may read the budget of `project`.
async fn may_read(state: &AppState, caller: &ApiCaller, project: &str) -> ApiResult<()> {
    if reads_all_cost(state, &caller.principal).await {
        return Ok(());
    }
    state
        .identity
        .require(&caller.principal, project, READS_OWN_BUDGET)
        .await?;
    Ok(())
}

/// `GET /api/v1/cost/budgets`: every budget the caller may read, with its
/// spend, forecast and the thresholds crossed this period.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
) -> ApiResult<Json<Value>> {
    let (budgets, _) = state
        .control
        .objects()
        .list::<CostBudget>(None, None)
        .await?;
    if reads_all_cost(&state, &caller.principal).await {
        return Ok(Json(json!({ "items": budgets })));
    }
    let mut maintained = Vec::new();
    for project in state.identity.list_projects(&caller.principal).await? {
        let own = state
            .identity
            .require(&caller.principal, &project.name, READS_OWN_BUDGET)
            .await;
        if own.is_ok() {
            maintained.push(project.name);
        }
    }
    if maintained.is_empty() {
        return Err(AuthError::Denied(
            "budgets are read by inventory readers and by a project's maintainers and admins"
                .into(),
        )
        .into());
    }
    let items: Vec<CostBudget> = budgets
        .into_iter()
        .filter(|b| maintained.contains(&b.spec.project))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/cost/budgets/{project}`
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
) -> ApiResult<Json<CostBudget>> {
    may_read(&state, &caller, &project).await?;
    let budget = state.control.objects().require(None, &project).await?;
    Ok(Json(budget))
}

/// `POST /api/v1/cost/budgets`: sets (creates or replaces) the budget of
/// an existing project; 201 when new.
pub(crate) async fn set(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    JsonBody(budget): JsonBody<CostBudget>,
) -> ApiResult<(StatusCode, Json<CostBudget>)> {
    let (budget, created) = apply(&state, &caller, budget).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(budget)))
}

/// Creates or replaces a budget, audited: `true` if created.
pub(crate) async fn apply(
    state: &AppState,
    caller: &ApiCaller,
    budget: CostBudget,
) -> ApiResult<(CostBudget, bool)> {
    let resource = format!("costbudget/{}", budget.spec.project);
    let work = async {
        if budget.spec.project.is_empty() {
            return Err(ApiErrorReply::invalid("spec.project: name the project"));
        }
        state.identity.project(&budget.spec.project).await?;
        Ok(wharf_control::cost::apply_cost_budget(state.control.objects(), budget).await?)
    };
    state
        .audited(caller, "costbudget.apply", resource, work)
        .await
}

/// `DELETE /api/v1/cost/budgets/{project}`
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(project): Path<String>,
) -> ApiResult<StatusCode> {
    let objects = state.control.objects();
    let work = objects.delete::<CostBudget>(None, &project, None);
    state
        .audited(
            &caller,
            "costbudget.delete",
            format!("costbudget/{project}"),
            work,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
