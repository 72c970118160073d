//! The API's error reply, `{"error": {"code", "message"}}` with a fitting
//! status, and the one place where the services' errors are mapped to it.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use wharf_audit::AuditError;
use wharf_auth::AuthError;
use wharf_control::ControlError;
use wharf_registry::RegistryError;
use wharf_replication::ReplicationError;

/// What an `/api/v1/` request that failed answers: an HTTP status, a
/// machine-readable code and a message for people. Distinct from the
/// services' own errors, which say what went wrong, not how to reply.
#[derive(Debug)]
pub(crate) struct ApiErrorReply {
    pub(super) status: StatusCode,
    code: &'static str,
    pub(super) message: String,
    retry_after: Option<u64>,
}

impl ApiErrorReply {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiErrorReply {
        ApiErrorReply {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A `400 INVALID` reply.
    pub(crate) fn invalid(message: impl Into<String>) -> ApiErrorReply {
        ApiErrorReply::new(StatusCode::BAD_REQUEST, "INVALID", message)
    }

    /// A `500 INTERNAL` reply.
    pub(crate) fn internal(message: impl Into<String>) -> ApiErrorReply {
        ApiErrorReply::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }
}

/// The result of an API handler.
pub(crate) type ApiResult<T> = Result<T, ApiErrorReply>;

impl From<AuthError> for ApiErrorReply {
    fn from(err: AuthError) -> ApiErrorReply {
        let (status, code) = match &err {
            AuthError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            AuthError::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            AuthError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
            AuthError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            AuthError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            AuthError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID"),
            AuthError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        let retry_after = match err {
            AuthError::RateLimited { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        };
        ApiErrorReply {
            retry_after,
            ..ApiErrorReply::new(status, code, err.to_string())
        }
    }
}

impl From<RegistryError> for ApiErrorReply {
    fn from(err: RegistryError) -> ApiErrorReply {
        let (status, _) = err.status_and_code();
        ApiErrorReply::new(status, "REGISTRY", err.to_string())
    }
}

impl From<AuditError> for ApiErrorReply {
    fn from(err: AuditError) -> ApiErrorReply {
        ApiErrorReply::internal(err.to_string())
    }
}

impl From<ControlError> for ApiErrorReply {
    fn from(err: ControlError) -> ApiErrorReply {
        let (status, code) = match &err {
            ControlError::NotFound { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            ControlError::Forbidden(_) => (StatusCode::FORBIDDEN, "DENIED"),
            ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID"),
            ControlError::Store(_) | ControlError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
            }
        };
        ApiErrorReply::new(status, code, err.to_string())
    }
}

/// Objects that fail validation (manifests, label selectors, IP pools).
impl From<wharf_control::DrainError> for ApiErrorReply {
    fn from(err: wharf_control::DrainError) -> ApiErrorReply {
        use wharf_control::DrainError;
        let (status, code) = match &err {
            DrainError::Unowned { .. } => (StatusCode::CONFLICT, "UNOWNED_PODS"),
            DrainError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "DRAIN_TIMEOUT"),
            DrainError::Control(_) => {
                let DrainError::Control(inner) = err else {
                    unreachable!("matched above")
                };
                return inner.into();
            }
        };
        ApiErrorReply::new(status, code, err.to_string())
    }
}

impl From<wharf_api::ObjectError> for ApiErrorReply {
    fn from(err: wharf_api::ObjectError) -> ApiErrorReply {
        ApiErrorReply::invalid(err.to_string())
    }
}

impl From<ReplicationError> for ApiErrorReply {
    fn from(err: ReplicationError) -> ApiErrorReply {
        let (status, code) = match &err {
            ReplicationError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID"),
            ReplicationError::NotFound { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ReplicationError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            ReplicationError::Remote { .. } => (StatusCode::BAD_GATEWAY, "ENDPOINT"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        ApiErrorReply::new(status, code, err.to_string())
    }
}

/// A request body that is not the JSON asked for.
impl From<JsonRejection> for ApiErrorReply {
    fn from(rejection: JsonRejection) -> ApiErrorReply {
        let status = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiErrorReply::new(
            status,
            "INVALID",
            format!("request body: {}", rejection.body_text()),
        )
    }
}

impl IntoResponse for ApiErrorReply {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(message = %self.message, "api request failed");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wharf-api\""),
            );
        }
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}
