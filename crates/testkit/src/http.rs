//! Requests to an in-process `axum` router and the replies they get.

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use ::http::{HeaderMap, Method, Request, StatusCode};

/// A whole HTTP reply: status, headers and the collected body.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, read to the end.
    pub body: Bytes,
}

/// Sends `request` to `router` and reads the whole reply.
pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("routers do not fail");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("in-process bodies are read whole")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

impl Reply {
    /// The value of header `name`; panics when it is missing.
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap_or_else(|e| panic!("header {name} is not text: {e}"))
    }

    /// The body as JSON; panics when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first OCI error code of an error body (`errors[0].code`).
    #[track_caller]
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Reply {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }

    /// Asserts the status and the OCI error code.
    #[track_caller]
    pub fn expect_error(self, status: StatusCode, code: &str) -> Reply {
        let reply = self.expect(status);
        assert_eq!(reply.error_code(), code, "body: {}", reply.text());
        reply
    }
}
