//! The routes: `/` and every `/ui/...` path answer the app's page (the app
//! routes on the client), `/ui/assets/...` the embedded files.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::assets::{Asset, CONTENT_SECURITY_POLICY};

/// Hashed assets never change under their name.
const CACHE_HASHED: &str = "public, max-age=31536000, immutable";
/// The page is checked on every load, so a new build takes effect at once.
const CACHE_PAGE: &str = "no-cache";

/// The dashboard's routes, to be merged into the server's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/{*path}", get(ui_path))
}

async fn page(headers: HeaderMap) -> Response {
    respond(Asset::index(), &headers)
}

async fn ui_path(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path.starts_with("assets/") {
        return match Asset::get(&path) {
            Some(asset) => respond(asset, &headers),
            None => (StatusCode::NOT_FOUND, "no such dashboard asset").into_response(),
        };
    }
    // Any other /ui/ path is a page of the app, which routes it itself.
    respond(Asset::index(), &headers)
}

/// `asset`, gzipped when the client accepts it, with its type, cache policy
/// and the dashboard's security headers.
fn respond(asset: &'static Asset, request: &HeaderMap) -> Response {
    let gzip = accepts_gzip(request);
    let body: &'static [u8] = if gzip { asset.gzip } else { asset.body };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type()),
    );
    let cache = if asset.is_hashed() {
        CACHE_HASHED
    } else {
        CACHE_PAGE
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Whether `Accept-Encoding` admits gzip (listed, and not with `q=0`).
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn fetch(path: &str, encoding: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(encoding) = encoding {
            request = request.header(header::ACCEPT_ENCODING, encoding);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .map_or("", |v| v.to_str().unwrap())
    }

    async fn body_of(response: Response) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn pages_answer_the_app_uncached_with_a_strict_policy() {
        for path in [
            "/",
            "/ui",
            "/ui/",
            "/ui/projects/shop/repositories/team%2Fweb",
        ] {
            let response = fetch(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header_of(&response, header::CONTENT_TYPE),
                "text/html; charset=utf-8"
            );
            assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
            let csp = header_of(&response, header::CONTENT_SECURITY_POLICY);
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert_eq!(body_of(response).await, Asset::index().body, "{path}");
        }
    }

    #[tokio::test]
    async fn hashed_assets_are_cached_for_good_and_gzipped_on_request() {
        let script = crate::ASSETS
            .iter()
            .find(|a| a.path.ends_with(".js"))
            .expect("the app script is embedded");
        let path = format!("/ui/{}", script.path);

        let plain = fetch(&path, None).await;
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(
            header_of(&plain, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(header_of(&plain, header::CACHE_CONTROL), CACHE_HASHED);
        assert_eq!(header_of(&plain, header::CONTENT_ENCODING), "");
        assert_eq!(body_of(plain).await, script.body);

        let gzipped = fetch(&path, Some("br, gzip;q=0.8")).await;
        assert_eq!(header_of(&gzipped, header::CONTENT_ENCODING), "gzip");
        assert_eq!(body_of(gzipped).await, script.gzip);

        let refused = fetch(&path, Some("gzip;q=0, identity")).await;
        assert_eq!(header_of(&refused, header::CONTENT_ENCODING), "");
    }

    #[tokio::test]
    async fn unknown_assets_are_not_found() {
        let response = fetch("/ui/assets/app-NOPE.js", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
