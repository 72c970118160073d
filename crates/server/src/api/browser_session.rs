//! Browser sessions: the dashboard logs in with a password and is then
//! authenticated by an HttpOnly cookie instead of an `Authorization` header.
//!
//! The cookie `wharf_session` holds a refresh token (the one
//! `POST /api/v1/login` hands the CLI). It is checked on every request as
//! refresh tokens are, against the account's current credential epoch, so a
//! password change, a disabled or deleted account ends the session at once;
//! it lives as long as a refresh token (7 days by default), so the session
//! outlives the short API access tokens without the page refreshing anything.
//! The principal it resolves to is the one a bearer token of the same account
//! resolves to: the API's authorization applies unchanged.
//!
//! Cookies are sent by the browser on its own, so every state-changing
//! request authenticated by the cookie must also carry `X-Wharf-CSRF`, a
//! value derived from the session token that only a page able to read the
//! API's answers (this origin) learns, from `POST` or `GET /api/v1/session`.
//! Bearer-token clients never send the cookie and are unaffected.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::session::password_login;
use super::{ApiCaller, ApiErrorReply, ApiResult, Body};
use crate::AppState;

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "wharf_session";
/// Header that must echo the session's CSRF token on state-changing requests.
pub(crate) const CSRF_HEADER: &str = "x-wharf-csrf";

/// The session token of a request authenticated by its cookie.
#[derive(Clone, Debug)]
pub(crate) struct CookieSession(pub String);

/// The value of the `wharf_session` cookie, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The CSRF token bound to `session`: a hash of the session token under a
/// label of its own. It cannot be computed without the HttpOnly cookie,
/// and it changes with every login.
pub(crate) fn csrf_token(session: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"wharf-csrf\0");
    hash.update(session.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// Whether requests with `method` change state and so need the CSRF header.
pub(crate) fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks the CSRF header of a cookie-authenticated request; the refusal
/// says what was wrong.
pub(crate) fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    session: &str,
) -> Result<(), ApiErrorReply> {
    if !changes_state(method) {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "CSRF",
            format!(
                "{why}: a {method} request authenticated by the session cookie must carry the X-Wharf-CSRF header from GET /api/v1/session"
            ),
        ))
    };
    let Some(sent) = headers.get(CSRF_HEADER) else {
        return refuse("missing CSRF token");
    };
    let expected = csrf_token(session);
    if constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        refuse("wrong CSRF token")
    }
}

/// Compares without leaking the length of the common prefix through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Set-Cookie` value carrying `token` for `max_age` seconds; `Secure`
/// when the server is reached over HTTPS, so the browser never sends the
/// cookie in clear.
fn cookie_header(token: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&value).expect("tokens are base64url and dots")
}

#[derive(Deserialize)]
pub(crate) struct SessionRequest {
    username: String,
    password: String,
}

/// `POST /api/v1/session`: password for a session cookie. Throttled and
/// audited as `POST /api/v1/login` is (audit resource `dashboard`).
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Body(request): Body<SessionRequest>,
) -> ApiResult<Response> {
    let principal = password_login(
        &state,
        &caller,
        &request.username,
        &request.password,
        "dashboard",
    )
    .await?;
    let session = state.identity.issue_refresh_token(&principal).await?;
    let body = Json(json!({
        "user": principal.name(),
        "admin": principal.is_admin(),
        "csrf": csrf_token(&session.token),
        "expires_in": session.expires_in,
    }));
    let cookie = cookie_header(&session.token, session.expires_in, state.secure_cookies);
    Ok(([(header::SET_COOKIE, cookie)], body).into_response())
}

/// `GET /api/v1/session`: who is logged in and, for a cookie session, its
/// CSRF token (a reloaded page asks for it again).
pub(crate) async fn show(
    Extension(caller): Extension<ApiCaller>,
    session: Option<Extension<CookieSession>>,
) -> Json<serde_json::Value> {
    let csrf = session.map(|Extension(CookieSession(token))| csrf_token(&token));
    Json(json!({
        "user": caller.principal.name(),
        "admin": caller.principal.is_admin(),
        "csrf": csrf,
    }))
}

/// `DELETE /api/v1/session`: logs out by clearing the cookie. Open to
/// anyone so that a stale cookie can always be cleared; a live one needs
/// the CSRF header, as every cookie-authenticated change does.
pub(crate) async fn delete(State(state): State<Arc<AppState>>) -> Response {
    let cookie = cookie_header("", 0, state.secure_cookies);
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let h = headers(&[("cookie", "theme=dark; wharf_session=abc.def; other=1")]);
        assert_eq!(session_cookie(&h), Some("abc.def"));
        let h = headers(&[("cookie", "theme=dark"), ("cookie", "wharf_session=x.y")]);
        assert_eq!(session_cookie(&h), Some("x.y"));
        let h = headers(&[("cookie", "wharf_session_old=x; wharf_session=")]);
        assert_eq!(session_cookie(&h), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn csrf_token_is_bound_to_the_session() {
        let a = csrf_token("session-a");
        assert_eq!(a, csrf_token("session-a"));
        assert_ne!(a, csrf_token("session-b"));
        assert!(!a.contains("session-a"));
        assert_eq!(a.len(), 43, "base64url of 32 bytes");
    }

    #[test]
    fn reads_need_no_csrf_token() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(check_csrf(&method, &HeaderMap::new(), "s").is_ok());
        }
    }

    #[test]
    fn changes_need_the_sessions_csrf_token() {
        let good = csrf_token("s");
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let missing = check_csrf(&method, &HeaderMap::new(), "s").unwrap_err();
            assert_eq!(missing.status, StatusCode::FORBIDDEN);
            assert!(
                missing.message.contains("missing CSRF token"),
                "{missing:?}"
            );

            let other = csrf_token("another session");
            let wrong = check_csrf(&method, &headers(&[(CSRF_HEADER, &other)]), "s").unwrap_err();
            assert_eq!(wrong.status, StatusCode::FORBIDDEN);
            assert!(wrong.message.contains("wrong CSRF token"), "{wrong:?}");

            assert!(check_csrf(&method, &headers(&[(CSRF_HEADER, &good)]), "s").is_ok());
        }
    }

    #[test]
    fn cookie_is_http_only_strict_and_secure_only_over_https() {
        let plain = cookie_header("t.o.k", 60, false);
        let plain = plain.to_str().unwrap();
        assert_eq!(
            plain,
            "wharf_session=t.o.k; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        let secure = cookie_header("t.o.k", 60, true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
