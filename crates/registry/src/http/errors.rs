//! The one place registry errors become OCI error responses:
//! `{"errors":[{"code","message","detail"}]}` with the spec's status codes.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::RegistryError;

impl RegistryError {
    /// HTTP status and OCI error code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use RegistryError as E;
        match self {
            E::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            E::BlobUploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            E::BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            E::RangeMismatch { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            E::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID"),
            E::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            E::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            E::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            E::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            E::OriginInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            E::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            E::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            E::SizeInvalid(_) => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
            E::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            E::PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            E::QuotaExceeded { .. } | E::Denied(_) | E::InsufficientScope { .. } => {
                (StatusCode::FORBIDDEN, "DENIED")
            }
            E::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            E::Contention(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            // Not here, and the upstream could not provide it. A 4xx, as
            // clients (skopeo, docker) show the message only of those.
            E::Upstream(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }

    fn detail(&self) -> Value {
        match self {
            RegistryError::BlobUnknown(digest) | RegistryError::ManifestBlobUnknown(digest) => {
                json!({ "digest": digest })
            }
            RegistryError::RangeNotSatisfiable { size } => json!({ "size": size }),
            RegistryError::TooLarge { limit } => json!({ "limit": limit }),
            RegistryError::OriginInvalid(_) => json!({ "header": crate::Origin::HEADER }),
            RegistryError::QuotaExceeded {
                project,
                quota,
                usage,
                needed,
            } => json!({ "project": project, "quota": quota, "usage": usage, "needed": needed }),
            _ => Value::Null,
        }
    }
}

/// An OCI error body for `code` and `message`.
pub fn error_body(code: &str, message: &str, detail: Value) -> Value {
    json!({ "errors": [{ "code": code, "message": message, "detail": detail }] })
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "registry request failed");
        }
        let mut response = (
            status,
            Json(error_body(code, &self.to_string(), self.detail())),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            RegistryError::RangeMismatch { current, .. } => {
                let end = current.saturating_sub(1);
                headers.insert(
                    header::RANGE,
                    HeaderValue::from_str(&format!("0-{end}")).expect("ascii"),
                );
            }
            RegistryError::RangeNotSatisfiable { size } => {
                let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii");
                headers.insert(header::CONTENT_RANGE, value);
            }
            RegistryError::Contention(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            RegistryError::Unauthorized { challenge, .. }
            | RegistryError::InsufficientScope { challenge, .. } => {
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}
