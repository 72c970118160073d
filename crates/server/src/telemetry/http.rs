//! Request counts and latencies by route template and status, and the
//! registry's blob bytes in and out: one middleware over the whole router.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use http_body_util::BodyExt;

use super::ServerMetrics;

/// Counts the request under its route template (never its concrete path:
/// names and digests would make a series per request) and, for blob
/// uploads and downloads, the body bytes as they stream.
pub(crate) async fn observe(
    State(metrics): State<Arc<ServerMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route_of(&request);
    let request = if carries_blob_in(&method, &route) {
        request.map(|body| counted(body, metrics.registry_bytes_in.clone()))
    } else {
        request
    };
    let response = next.run(request).await;
    metrics.http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    if method == Method::GET && route == BLOB {
        response.map(|body| counted(body, metrics.registry_bytes_out.clone()))
    } else {
        response
    }
}

const BLOB: &str = "/v2/{name}/blobs/{digest}";
const UPLOAD: &str = "/v2/{name}/blobs/uploads/{id}";
const NEW_UPLOAD: &str = "/v2/{name}/blobs/uploads/";

/// Chunks (PATCH), a closing PUT, or a monolithic POST carry blob data.
fn carries_blob_in(method: &Method, route: &str) -> bool {
    match route {
        UPLOAD => method == Method::PATCH || method == Method::PUT,
        NEW_UPLOAD => method == Method::POST,
        _ => false,
    }
}

fn counted(body: Body, bytes: Arc<AtomicU64>) -> Body {
    Body::new(body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    }))
}

/// The route template of a request: axum's, or for the registry's
/// catch-all the OCI endpoint its path names.
fn route_of(request: &Request) -> String {
    match request.extensions().get::<MatchedPath>() {
        Some(matched) if matched.as_str() == "/v2/{*path}" => {
            oci_route(request.uri().path()).to_string()
        }
        Some(matched) => matched.as_str().to_string(),
        None => "unmatched".to_string(),
    }
}

/// The OCI distribution endpoint of a `/v2/` path. Repository names may
/// hold slashes, so the path is read from its end.
fn oci_route(path: &str) -> &'static str {
    let rest = path.trim_end_matches('/');
    if rest == "/v2/_catalog" {
        "/v2/_catalog"
    } else if rest.ends_with("/tags/list") {
        "/v2/{name}/tags/list"
    } else if rest.ends_with("/blobs/uploads") {
        NEW_UPLOAD
    } else if rest.contains("/blobs/uploads/") {
        UPLOAD
    } else if rest.contains("/blobs/") {
        BLOB
    } else if rest.contains("/manifests/") {
        "/v2/{name}/manifests/{reference}"
    } else if rest.contains("/referrers/") {
        "/v2/{name}/referrers/{digest}"
    } else {
        "/v2/other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_paths_become_their_oci_endpoints() {
        let cases = [
            ("/v2/_catalog", "/v2/_catalog"),
            ("/v2/team/app/tags/list", "/v2/{name}/tags/list"),
            ("/v2/team/app/blobs/uploads/", NEW_UPLOAD),
            ("/v2/team/app/blobs/uploads/0f3a", UPLOAD),
            ("/v2/team/a/b/blobs/sha256:ab", BLOB),
            (
                "/v2/team/app/manifests/v1",
                "/v2/{name}/manifests/{reference}",
            ),
            (
                "/v2/team/app/referrers/sha256:ab",
                "/v2/{name}/referrers/{digest}",
            ),
            ("/v2/team/app/nonsense", "/v2/other"),
        ];
        for (path, route) in cases {
            assert_eq!(oci_route(path), route, "{path}");
        }
        assert!(carries_blob_in(&Method::PATCH, UPLOAD));
        assert!(carries_blob_in(&Method::POST, NEW_UPLOAD));
        assert!(!carries_blob_in(&Method::GET, UPLOAD));
        assert!(!carries_blob_in(
            &Method::PUT,
            "/v2/{name}/manifests/{reference}"
        ));
    }
}
