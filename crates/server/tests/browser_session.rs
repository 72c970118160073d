//! The dashboard's browser session, in-process: a password login sets an
//! HttpOnly, SameSite=Strict cookie that authenticates API calls with the
//! same authorization as a bearer token; state-changing calls with the
//! cookie need the session's CSRF header; bearer clients are unaffected;
//! logins are audited and throttled as `POST /api/v1/login` is.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// Checks an API refusal: its status and `error.code`.
trait Refused {
    fn refused(self, status: StatusCode, code: &str) -> Reply;
}

impl Refused for Reply {
    #[track_caller]
    fn refused(self, status: StatusCode, code: &str) -> Reply {
        let reply = self.expect(status);
        assert_eq!(
            reply.json()["error"]["code"],
            code,
            "body: {}",
            reply.text()
        );
        reply
    }
}

/// A logged-in browser: its cookie header and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn session_login(app: &TestApp, user: &str, password: &str) -> Reply {
    app.send(
        Method::POST,
        "/api/v1/session",
        &[("content-type", "application/json".into())],
        serde_json::to_vec(&json!({"username": user, "password": password})).unwrap(),
    )
    .await
}

async fn browser(app: &TestApp, user: &str, password: &str) -> Browser {
    let reply = session_login(app, user, password)
        .await
        .expect(StatusCode::OK);
    let set_cookie = reply.header("set-cookie").to_string();
    let pair = set_cookie.split(';').next().unwrap().to_string();
    assert!(pair.starts_with("wharf_session="), "{set_cookie}");
    Browser {
        cookie: pair,
        csrf: reply.json()["csrf"].as_str().unwrap().to_string(),
    }
}

/// A call as `browser`, with `csrf` as the CSRF header when given.
async fn call(
    app: &TestApp,
    browser: &Browser,
    csrf: Option<&str>,
    method: Method,
    uri: &str,
    body: Value,
) -> Reply {
    let mut headers = vec![
        ("cookie", format!("theme=dark; {}", browser.cookie)),
        ("content-type", "application/json".to_string()),
    ];
    if let Some(csrf) = csrf {
        headers.push(("x-wharf-csrf", csrf.to_string()));
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    app.send(method, uri, &headers, bytes).await
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_is_audited() {
    let app = TestApp::new().await;
    session_login(&app, "admin", "wrong-password")
        .await
        .refused(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    let reply = session_login(&app, "admin", ADMIN_PASSWORD)
        .await
        .expect(StatusCode::OK);
    let cookie = reply.header("set-cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(part), "{cookie} has {part}");
    }
    assert!(
        !cookie.contains("Secure"),
        "no Secure over plain HTTP: {cookie}"
    );
    let body = reply.json();
    assert_eq!(body["user"], "admin");
    assert_eq!(body["admin"], true);
    assert!(
        body.get("refresh_token").is_none() && !body.to_string().contains("eyJ"),
        "the session token stays in the HttpOnly cookie: {body}"
    );

    let logins: Vec<_> = app
        .audit_events("login")
        .await
        .into_iter()
        .filter(|e| e.resource == "dashboard")
        .collect();
    let outcomes: Vec<_> = logins.iter().map(|e| e.outcome).collect();
    assert_eq!(
        outcomes,
        [wharf_audit::Outcome::Failed, wharf_audit::Outcome::Success]
    );
}

#[tokio::test]
async fn cookie_is_secure_when_the_server_is_reached_over_https() {
    let app =
        TestApp::with(|config| config.public_url = Some("https://wharf.example".into())).await;
    let reply = session_login(&app, "admin", ADMIN_PASSWORD)
        .await
        .expect(StatusCode::OK);
    assert!(
        reply.header("set-cookie").ends_with("; Secure"),
        "{}",
        reply.header("set-cookie")
    );
}

#[tokio::test]
async fn the_cookie_authenticates_with_the_users_own_authorization() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.shop_with_guest_and_developer(&admin).await;
    app.create_project(&admin, "secret", false).await;
    let dev = browser(&app, "dev", "a-long-password").await;

    let me = call(
        &app,
        &dev,
        None,
        Method::GET,
        "/api/v1/session",
        Value::Null,
    )
    .await
    .expect(StatusCode::OK)
    .json();
    assert_eq!(me["user"], "dev");
    assert_eq!(me["admin"], false);
    assert_eq!(
        me["csrf"], dev.csrf,
        "a reloaded page learns the same token"
    );

    let projects = call(
        &app,
        &dev,
        None,
        Method::GET,
        "/api/v1/projects",
        Value::Null,
    )
    .await
    .expect(StatusCode::OK)
    .json();
    let names: Vec<_> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop"], "only dev's own project is listed");
    call(
        &app,
        &dev,
        None,
        Method::GET,
        "/api/v1/projects/secret",
        Value::Null,
    )
    .await
    .refused(StatusCode::FORBIDDEN, "DENIED");
    call(&app, &dev, None, Method::GET, "/api/v1/users", Value::Null)
        .await
        .refused(StatusCode::FORBIDDEN, "DENIED");
    // With the CSRF token, a change dev may not make is still refused.
    let csrf = Some(dev.csrf.as_str());
    call(
        &app,
        &dev,
        csrf,
        Method::PUT,
        "/api/v1/projects/shop/members/gus",
        json!({"role": "maintainer"}),
    )
    .await
    .refused(StatusCode::FORBIDDEN, "DENIED");
}

#[tokio::test]
async fn changes_by_cookie_need_the_sessions_csrf_token() {
    let app = TestApp::new().await;
    let admin = browser(&app, "admin", ADMIN_PASSWORD).await;
    let other = browser(&app, "admin", ADMIN_PASSWORD).await;
    assert_ne!(admin.csrf, other.csrf, "every login has its own token");
    let create = |name: &str| json!({"name": name});

    let missing = call(
        &app,
        &admin,
        None,
        Method::POST,
        "/api/v1/projects",
        create("one"),
    )
    .await;
    let missing = missing.refused(StatusCode::FORBIDDEN, "CSRF");
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing CSRF token"),
        "{}",
        missing.text()
    );
    let wrong = Some(other.csrf.as_str());
    call(
        &app,
        &admin,
        wrong,
        Method::POST,
        "/api/v1/projects",
        create("one"),
    )
    .await
    .refused(StatusCode::FORBIDDEN, "CSRF");
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        call(
            &app,
            &admin,
            None,
            method,
            "/api/v1/projects/one",
            json!({}),
        )
        .await
        .refused(StatusCode::FORBIDDEN, "CSRF");
    }
    let token = app.admin_token().await;
    app.api(&token, Method::GET, "/api/v1/projects/one", Value::Null)
        .await
        .refused(StatusCode::NOT_FOUND, "NOT_FOUND");

    let right = Some(admin.csrf.as_str());
    call(
        &app,
        &admin,
        right,
        Method::POST,
        "/api/v1/projects",
        create("one"),
    )
    .await
    .expect(StatusCode::CREATED);
    // Bearer clients send no cookie and no CSRF header, as before.
    app.api(&token, Method::POST, "/api/v1/projects", create("two"))
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn logout_clears_the_cookie_and_a_password_change_ends_the_session() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "alice", "alice-password-1").await;
    let alice = browser(&app, "alice", "alice-password-1").await;

    let logout = call(
        &app,
        &alice,
        Some(&alice.csrf),
        Method::DELETE,
        "/api/v1/session",
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let cleared = logout.header("set-cookie");
    assert!(
        cleared.starts_with("wharf_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    app.api(
        &admin,
        Method::PUT,
        "/api/v1/users/alice/password",
        json!({"password": "alice-password-2"}),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let stale = call(
        &app,
        &alice,
        None,
        Method::GET,
        "/api/v1/projects",
        Value::Null,
    )
    .await;
    stale.refused(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // A stale cookie does not stand in the way of logging in again.
    let again = call(
        &app,
        &alice,
        None,
        Method::POST,
        "/api/v1/session",
        json!({"username": "alice", "password": "alice-password-2"}),
    )
    .await;
    again.expect(StatusCode::OK);
}

#[tokio::test]
async fn session_logins_share_the_login_throttle() {
    let app = TestApp::new().await;
    for _ in 0..5 {
        session_login(&app, "admin", "wrong-password")
            .await
            .refused(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    session_login(&app, "admin", ADMIN_PASSWORD)
        .await
        .refused(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS");
    let cli = app
        .send(
            Method::POST,
            "/api/v1/login",
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&json!({"username": "admin", "password": ADMIN_PASSWORD})).unwrap(),
        )
        .await;
    cli.refused(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS");
}

#[tokio::test]
async fn a_form_post_cannot_log_in() {
    // A cross-site form can send only form encodings; the login takes JSON.
    let app = TestApp::new().await;
    let reply = app
        .send(
            Method::POST,
            "/api/v1/session",
            &[("content-type", "application/x-www-form-urlencoded".into())],
            format!("username=admin&password={ADMIN_PASSWORD}"),
        )
        .await;
    let reply = reply.refused(StatusCode::BAD_REQUEST, "INVALID");
    assert!(
        reply.text().contains("application/json"),
        "{}",
        reply.text()
    );
    assert!(!reply.headers.contains_key("set-cookie"));
}
