//! Audit records of administrative actions: every handler that changes
//! something runs its work through [`AppState::audited`], which records who
//! did what to which resource and how it ended, and hands the result back.

use std::future::Future;

use http::StatusCode;
use wharf_audit::{AuditEvent, Outcome};

use super::{ApiCaller, ApiErrorReply, ApiResult};
use crate::AppState;

impl AppState {
    /// Runs `work`, records `action` on `resource` by `caller` with its
    /// outcome (refusals as denied, other errors as failed, with the error
    /// message as detail), and returns its result as an API result.
    pub(crate) async fn audited<T, E: Into<ApiErrorReply>>(
        &self,
        caller: &ApiCaller,
        action: &str,
        resource: String,
        work: impl Future<Output = Result<T, E>>,
    ) -> ApiResult<T> {
        let result = work.await.map_err(Into::into);
        self.audit.record(event(caller, action, resource, &result));
        result
    }

    /// Runs `work` like [`AppState::audited`], with `request` (what was
    /// asked, e.g. the command of an exec) leading the detail.
    pub(crate) async fn audited_request<T, E: Into<ApiErrorReply>>(
        &self,
        caller: &ApiCaller,
        action: &str,
        resource: String,
        request: String,
        work: impl Future<Output = Result<T, E>>,
    ) -> ApiResult<T> {
        let result = work.await.map_err(Into::into);
        let detail = match &result {
            Ok(_) => request,
            Err(err) => format!("{request}: {}", err.message),
        };
        let event = event(caller, action, resource, &result).with_detail(detail);
        self.audit.record(event);
        result
    }
}

fn event<T>(
    caller: &ApiCaller,
    action: &str,
    resource: String,
    result: &ApiResult<T>,
) -> AuditEvent {
    let outcome = match result {
        Ok(_) => Outcome::Success,
        Err(err)
            if err.status == StatusCode::FORBIDDEN || err.status == StatusCode::UNAUTHORIZED =>
        {
            Outcome::Denied
        }
        Err(_) => Outcome::Failed,
    };
    let event = AuditEvent::new(caller.principal.name(), action, resource, outcome)
        .with_source(caller.source);
    match result {
        Ok(_) => event,
        Err(err) => event.with_detail(err.message.clone()),
    }
}
