//! The token server and the registry's checks of its tokens.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn world() -> (TestApp, String) {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "team", false).await;
    for (user, role) in [
        ("dev", "developer"),
        ("guest", "guest"),
        ("keeper", "maintainer"),
    ] {
        app.create_user(&admin, user, &format!("{user}-password"))
            .await;
        app.add_member(&admin, "team", user, role).await;
    }
    app.create_user(&admin, "outsider", "outsider-password")
        .await;
    (app, admin)
}

#[tokio::test]
async fn tokens_grant_the_intersection_of_asked_and_allowed() {
    let (app, _) = world().await;
    let scope = "repository:team/app:pull,push,delete";
    let granted = |token: &str| claims(token)["access"][0]["actions"].clone();
    assert_eq!(
        granted(&app.token_for("dev", "dev-password", scope).await),
        json!(["pull", "push"])
    );
    assert_eq!(
        granted(&app.token_for("guest", "guest-password", scope).await),
        json!(["pull"])
    );
    assert_eq!(
        granted(&app.token_for("keeper", "keeper-password", scope).await),
        json!(["pull", "push", "delete"])
    );
    assert_eq!(
        granted(&app.token_for("outsider", "outsider-password", scope).await),
        json!([])
    );
    assert_eq!(
        granted(&app.token_for("admin", ADMIN_PASSWORD, scope).await),
        json!(["pull", "push", "delete"])
    );
    // Anonymous callers get a token, granting nothing while anonymous pulls are off.
    let anonymous = app.registry_token(None, scope).await.expect(StatusCode::OK);
    let token = anonymous.json()["token"].as_str().unwrap().to_string();
    assert_eq!(claims(&token)["sub"], "");
    assert_eq!(granted(&token), json!([]));
    // Several scopes at once, and the catalog.
    let reply = app
        .send(
            Method::GET,
            "/service/token?service=wharf&scope=repository:team/a:pull&scope=repository:team/b:push%20registry:catalog:*",
            &[("authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("dev:dev-password")))],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::OK);
    let access = claims(reply.json()["token"].as_str().unwrap())["access"].clone();
    assert_eq!(access.as_array().unwrap().len(), 3, "{access}");
    assert!(reply.json()["expires_in"].as_u64().unwrap() <= 300);
    assert!(reply.json()["issued_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn bad_credentials_and_requests_are_refused() {
    let (app, _) = world().await;
    let scope = "repository:team/app:pull";
    let reply = app
        .registry_token(Some(("dev", "wrong-password")), scope)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["errors"][0]["code"], "UNAUTHORIZED");
    app.registry_token(Some(("nobody", "whatever-pass")), scope)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    // Another service's token is not issued here.
    app.send(
        Method::GET,
        &format!("/service/token?service=other&scope={scope}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    app.send(
        Method::GET,
        "/service/token?service=wharf&scope=repository:../etc:pull",
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    for header in [
        "Basic !!!notbase64",
        "Basic Zm9v",
        "Digest abc",
        &format!("Basic {}", "A".repeat(5000)),
    ] {
        app.send(
            Method::GET,
            "/service/token?service=wharf",
            &[("authorization", header.to_string())],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::UNAUTHORIZED);
    }
    // Each refusal is in the audit log: wrong passwords as failed logins,
    // the others as refused token requests.
    app.flush_audit().await;
    let query = |action: &str| wharf_audit::AuditQuery {
        action: Some(action.into()),
        limit: 100,
        ..Default::default()
    };
    let refused = app.app.audit.query(&query("token.refused")).await.unwrap();
    assert_eq!(refused.len(), 6, "{refused:?}");
    let logins = app.app.audit.query(&query("login")).await.unwrap();
    assert!(
        logins
            .iter()
            .filter(|e| e.outcome == wharf_audit::Outcome::Failed)
            .count()
            >= 2
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let (app, _) = world().await;
    let scope = "repository:team/app:pull";
    for _ in 0..5 {
        app.registry_token(Some(("guest", "wrong-password")), scope)
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .registry_token(Some(("guest", "guest-password")), scope)
        .await
        .expect(StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    // Other accounts are unaffected.
    app.registry_token(Some(("dev", "dev-password")), scope)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn oauth_password_and_refresh_grants() {
    let (app, _) = world().await;
    let form = "grant_type=password&service=wharf&client_id=docker&access_type=offline&username=dev&password=dev-password&scope=repository:team/app:pull";
    let reply = app
        .send(
            Method::POST,
            "/service/token",
            &[("content-type", "application/x-www-form-urlencoded".into())],
            form,
        )
        .await
        .expect(StatusCode::OK);
    let refresh = reply.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        claims(reply.json()["access_token"].as_str().unwrap())["sub"],
        "dev"
    );
    let form = format!(
        "grant_type=refresh_token&service=wharf&client_id=docker&refresh_token={refresh}&scope=repository:team/app:push"
    );
    let reply = app
        .send(
            Method::POST,
            "/service/token",
            &[("content-type", "application/x-www-form-urlencoded".into())],
            form,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        claims(reply.json()["access_token"].as_str().unwrap())["access"][0]["actions"],
        json!(["push"])
    );
    // A registry token is not a refresh token.
    let access = reply.json()["access_token"].as_str().unwrap().to_string();
    let form = format!("grant_type=refresh_token&service=wharf&refresh_token={access}");
    app.send(
        Method::POST,
        "/service/token",
        &[("content-type", "application/x-www-form-urlencoded".into())],
        form,
    )
    .await
    .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn registry_enforces_roles_and_rejects_bad_tokens() {
    let (app, _) = world().await;
    let data = b"layer bytes".to_vec();
    let digest = sha256(&data);
    let push = |token: String| {
        let (app, data, digest) = (&app, data.clone(), digest.clone());
        async move {
            app.v2(
                &token,
                Method::POST,
                &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
                &[],
                data,
            )
            .await
            .status
        }
    };
    let scope = "repository:team/app:pull,push";
    assert_eq!(
        push(app.token_for("dev", "dev-password", scope).await).await,
        StatusCode::CREATED
    );
    assert_eq!(
        push(app.token_for("guest", "guest-password", scope).await).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        push(app.token_for("outsider", "outsider-password", scope).await).await,
        StatusCode::FORBIDDEN
    );
    let guest = app.token_for("guest", "guest-password", scope).await;
    app.v2(
        &guest,
        Method::GET,
        &format!("/v2/team/app/blobs/{digest}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::OK);

    // Tampered: change the claims, keep the signature.
    let mut parts: Vec<String> = guest.split('.').map(str::to_string).collect();
    let mut forged = claims(&guest);
    forged["access"][0]["actions"] = json!(["pull", "push"]);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let reply = push(parts.join(".")).await;
    assert_eq!(reply, StatusCode::UNAUTHORIZED);
    let reply = app
        .v2(&parts.join("."), Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .header("www-authenticate")
            .contains("error=\"invalid_token\"")
    );

    // An API token is not a registry token.
    let api = app.api_login("dev", "dev-password").await;
    app.v2(&api, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    // And a registry token is not an API token.
    let dev = app.token_for("dev", "dev-password", scope).await;
    app.api(&dev, Method::GET, "/api/v1/me", Value::Null)
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn disabling_or_repasswording_a_user_revokes_their_tokens() {
    let (app, admin) = world().await;
    let scope = "repository:team/app:pull";
    let token = app.token_for("dev", "dev-password", scope).await;
    let api = app.api_login("dev", "dev-password").await;
    app.v2(&token, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/users/dev/disabled",
        json!({"disabled": true}),
    )
    .await
    .expect(StatusCode::OK);
    app.v2(&token, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.api(&api, Method::GET, "/api/v1/me", Value::Null)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.registry_token(Some(("dev", "dev-password")), scope)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/users/dev/disabled",
        json!({"disabled": false}),
    )
    .await
    .expect(StatusCode::OK);
    // Re-enabled: old tokens stay dead (new epoch), new logins work.
    app.v2(&token, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let fresh = app.token_for("dev", "dev-password", scope).await;
    app.v2(&fresh, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);

    // Changing one's own password needs the current one, and kills old tokens.
    let api = app.api_login("dev", "dev-password").await;
    app.api(
        &api,
        Method::PUT,
        "/api/v1/users/dev/password",
        json!({"password": "new-dev-password", "current_password": "wrong"}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(
        &api,
        Method::PUT,
        "/api/v1/users/dev/password",
        json!({"password": "new-dev-password", "current_password": "dev-password"}),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    app.v2(&fresh, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.token_for("dev", "new-dev-password", scope).await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = TestApp::with(|config| {
        // 2 s, not 1: expiry is in whole seconds, so a 1 s token issued
        // late in a second could expire before its first use.
        config.identity.registry_token_ttl = std::time::Duration::from_secs(2)
    })
    .await;
    let token = app
        .token_for("admin", ADMIN_PASSWORD, "repository:x/y:pull")
        .await;
    app.v2(&token, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let reply = app
        .v2(&token, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert!(
        reply.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn tokens_of_another_server_are_refused() {
    let a = TestApp::new().await;
    let b = TestApp::with(|config| config.identity.service = "other".into()).await;
    let from_b = {
        let reply = b
            .send(
                Method::GET,
                "/service/token?service=other&scope=repository:x/y:pull",
                &[(
                    "authorization",
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("admin:{ADMIN_PASSWORD}"))
                    ),
                )],
                Bytes::new(),
            )
            .await
            .expect(StatusCode::OK);
        reply.json()["token"].as_str().unwrap().to_string()
    };
    a.v2(&from_b, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn anonymous_pulls_of_public_projects_when_allowed() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "open", true).await;
    app.create_project(&admin, "closed", false).await;
    let anonymous = |scope: &'static str| {
        let app = &app;
        async move {
            let token = app.registry_token(None, scope).await.json()["token"]
                .as_str()
                .unwrap()
                .to_string();
            claims(&token)["access"][0]["actions"].clone()
        }
    };
    assert_eq!(anonymous("repository:open/app:pull").await, json!([]));
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/settings",
        json!({"anonymous_pull": true}),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        anonymous("repository:open/app:pull,push").await,
        json!(["pull"])
    );
    assert_eq!(anonymous("repository:closed/app:pull").await, json!([]));
}

#[tokio::test]
async fn a_too_narrow_token_points_to_the_wider_scope_only_when_it_would_be_granted() {
    let (app, _) = world().await;
    let data = b"blob".to_vec();
    let uri = format!("/v2/team/app/blobs/uploads/?digest={}", sha256(&data));
    // dev may push, but asked only for pull: told where to get a push token.
    let pull_only = app
        .token_for("dev", "dev-password", "repository:team/app:pull")
        .await;
    let reply = app
        .v2(&pull_only, Method::POST, &uri, &[], data.clone())
        .await
        .expect(StatusCode::FORBIDDEN);
    let challenge = reply.header("www-authenticate");
    assert!(
        challenge.contains("scope=\"repository:team/app:pull,push\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let wider = app
        .token_for("dev", "dev-password", "repository:team/app:pull,push")
        .await;
    app.v2(&wider, Method::POST, &uri, &[], data.clone())
        .await
        .expect(StatusCode::CREATED);
    // guest may not push: a plain denial, no challenge to chase.
    let guest = app
        .token_for("guest", "guest-password", "repository:team/app:pull,push")
        .await;
    let reply = app
        .v2(&guest, Method::POST, &uri, &[], data)
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(reply.headers.get("www-authenticate").is_none());
    assert_eq!(reply.json()["errors"][0]["code"], "DENIED");
}

#[tokio::test]
async fn where_an_upload_stands_is_read_with_a_pull_token_but_only_push_writes_it() {
    let (app, _) = world().await;
    let push = app
        .token_for("dev", "dev-password", "repository:team/app:pull,push")
        .await;
    let started = app
        .v2(
            &push,
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            &[],
            Vec::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let location = started.header("location");
    let pull = app
        .token_for("dev", "dev-password", "repository:team/app:pull")
        .await;
    // As the OCI conformance suite does with the pull token it holds.
    let status = app
        .v2(&pull, Method::GET, location, &[], Vec::new())
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), "0-0");
    let refused = app
        .v2(&pull, Method::PATCH, location, &[], b"more".to_vec())
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(
        refused
            .header("www-authenticate")
            .contains("insufficient_scope"),
        "told to fetch a push token"
    );
    // Another repository's pull token reads nothing of it.
    let elsewhere = app
        .token_for("dev", "dev-password", "repository:team/other:pull")
        .await;
    app.v2(&elsewhere, Method::GET, location, &[], Vec::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

fn basic(user: &str, password: &str) -> (&'static str, String) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ("authorization", format!("Basic {encoded}"))
}

/// Tokens of one login: a registry token for `scope` with a refresh token
/// (as docker asks with `offline_token`), and an API access and refresh token.
struct LoginTokens {
    registry: String,
    registry_refresh: String,
    api: String,
    api_refresh: String,
}

async fn log_in(app: &TestApp, user: &str, password: &str, scope: &str) -> LoginTokens {
    let reply = app
        .send(
            Method::GET,
            &format!("/service/token?service=wharf&scope={scope}&offline_token=true"),
            &[basic(user, password)],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    let api = app.api_login_reply(user, password).await;
    let text = |value: &Value| value.as_str().unwrap().to_string();
    LoginTokens {
        registry: text(&reply["token"]),
        registry_refresh: text(&reply["refresh_token"]),
        api: text(&api["access_token"]),
        api_refresh: text(&api["refresh_token"]),
    }
}

impl LoginTokens {
    /// Asserts that none of the tokens works any more: not on the registry
    /// (an upload and a manifest push), not on the API, not for refreshing.
    async fn assert_all_refused(&self, app: &TestApp, repo: &str) {
        let upload = app
            .v2(
                &self.registry,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(upload.status, StatusCode::UNAUTHORIZED, "upload");
        let manifest = app
            .v2(
                &self.registry,
                Method::PUT,
                &format!("/v2/{repo}/manifests/v1"),
                &[(
                    "content-type",
                    "application/vnd.oci.image.manifest.v1+json".into(),
                )],
                Bytes::from_static(b"{}"),
            )
            .await;
        assert_eq!(manifest.status, StatusCode::UNAUTHORIZED, "manifest push");
        app.api(&self.api, Method::GET, "/api/v1/me", Value::Null)
            .await
            .expect(StatusCode::UNAUTHORIZED);
        app.token_form(&format!(
            "grant_type=refresh_token&service=wharf&refresh_token={}&scope=repository:{repo}:pull",
            self.registry_refresh
        ))
        .await
        .expect(StatusCode::UNAUTHORIZED);
        app.send(
            Method::POST,
            "/api/v1/token",
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&json!({"refresh_token": self.api_refresh})).unwrap(),
        )
        .await
        .expect(StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_deleted_robots_tokens_stay_dead_when_a_robot_of_its_name_is_created() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "team", false).await;
    let (name, secret) = app.create_robot(&admin, "team", "ci", "pull,push").await;
    let tokens = log_in(&app, &name, &secret, "repository:team/app:pull,push").await;
    app.v2(
        &tokens.registry,
        Method::POST,
        "/v2/team/app/blobs/uploads/",
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);

    app.api(
        &admin,
        Method::DELETE,
        "/api/v1/projects/team/robots/ci",
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    // A pull-only robot of the same name: the push robot's tokens must not
    // become its tokens, nor keep their push grant.
    let (again, again_secret) = app.create_robot(&admin, "team", "ci", "pull").await;
    assert_eq!(again, name);
    tokens.assert_all_refused(&app, "team/app").await;

    // The new robot works with its own credentials, and only pulls.
    let fresh = log_in(&app, &again, &again_secret, "repository:team/app:pull,push").await;
    assert_eq!(
        claims(&fresh.registry)["access"][0]["actions"],
        json!(["pull"])
    );
    app.api(&fresh.api, Method::GET, "/api/v1/me", Value::Null)
        .await
        .expect(StatusCode::OK);

    // Nothing was pushed in anyone's name, and the refusals name the robot.
    assert!(app.audit_events("artifact.push").await.is_empty());
    let rejected = app.audit_events("token.rejected").await;
    for area in ["registry", "api"] {
        assert!(
            rejected
                .iter()
                .any(|e| e.actor == name && e.resource == area),
            "{area}: {rejected:?}"
        );
    }
    assert!(rejected.iter().all(|e| e.actor == name), "{rejected:?}");
    let refused = app.audit_events("token.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].actor, name);
}

#[tokio::test]
async fn a_deleted_users_tokens_stay_dead_when_the_user_is_created_again() {
    let (app, admin) = world().await;
    let tokens = log_in(&app, "dev", "dev-password", "repository:team/app:pull,push").await;
    app.v2(&tokens.registry, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);
    app.api(&admin, Method::DELETE, "/api/v1/users/dev", Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    // Created again, with the same password and without any membership.
    app.create_user(&admin, "dev", "dev-password").await;
    tokens.assert_all_refused(&app, "team/app").await;
    let fresh = log_in(&app, "dev", "dev-password", "repository:team/app:pull,push").await;
    assert_eq!(claims(&fresh.registry)["access"][0]["actions"], json!([]));
    assert_ne!(claims(&fresh.api)["uid"], claims(&tokens.api)["uid"]);
    app.api(&fresh.api, Method::GET, "/api/v1/me", Value::Null)
        .await
        .expect(StatusCode::OK);
    let rejected = app.audit_events("token.rejected").await;
    assert!(!rejected.is_empty());
    assert!(rejected.iter().all(|e| e.actor == "dev"), "{rejected:?}");
}

#[tokio::test]
async fn disabling_a_robot_refuses_its_issued_tokens_at_once() {
    let (app, admin) = world().await;
    let (name, secret) = app.create_robot(&admin, "team", "ci", "pull").await;
    let tokens = log_in(&app, &name, &secret, "repository:team/app:pull").await;
    // Used right before: the server has the robot in its subject cache.
    app.v2(&tokens.registry, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);
    let disable = |disabled: bool| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.api(
                &admin,
                Method::PUT,
                "/api/v1/projects/team/robots/ci/disabled",
                json!({ "disabled": disabled }),
            )
            .await
            .expect(StatusCode::OK)
            .json()
        }
    };
    let robot = disable(true).await;
    assert_eq!(robot["disabled"], true);
    assert_eq!(robot["name"], name.as_str());
    tokens.assert_all_refused(&app, "team/app").await;
    app.registry_token(Some((&name, &secret)), "repository:team/app:pull")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let listed = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/team/robots",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(listed[0]["disabled"], true);

    // Enabled again: it logs in anew; the old tokens stay dead.
    assert_eq!(disable(false).await["disabled"], false);
    tokens.assert_all_refused(&app, "team/app").await;
    let fresh = log_in(&app, &name, &secret, "repository:team/app:pull").await;
    app.v2(&fresh.registry, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);

    // Both changes are audited under the admin who made them.
    for action in ["robot.disable", "robot.enable"] {
        let events = app.audit_events(action).await;
        assert_eq!(events.len(), 1, "{action}: {events:?}");
        assert_eq!(events[0].actor, "admin");
        assert_eq!(events[0].resource, "project/team/robot/ci");
        assert_eq!(events[0].outcome, wharf_audit::Outcome::Success);
    }

    // Bad requests change nothing and say what was wrong.
    let dev = app.api_login("dev", "dev-password").await;
    for (token, uri, body, status) in [
        (
            &admin,
            "/api/v1/projects/team/robots/nobody/disabled",
            json!({"disabled": true}),
            StatusCode::NOT_FOUND,
        ),
        (
            &admin,
            "/api/v1/projects/team/robots/robot$other+ci/disabled",
            json!({"disabled": true}),
            StatusCode::NOT_FOUND,
        ),
        (
            &admin,
            "/api/v1/projects/team/robots/ci/disabled",
            json!({"disabled": "yes"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &dev,
            "/api/v1/projects/team/robots/ci/disabled",
            json!({"disabled": true}),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let reply = app.api(token, Method::PUT, uri, body).await.expect(status);
        assert!(
            !reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{uri}"
        );
    }
    app.v2(&fresh.registry, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn refused_tokens_are_audited_under_the_account_they_name() {
    // Long enough that bob's token is revoked, not expired, when used on a
    // loaded machine; ann's is waited out below.
    let ttl = std::time::Duration::from_secs(3);
    let app = TestApp::with(|config| config.identity.registry_token_ttl = ttl).await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "ann", "ann-password").await;
    app.create_user(&admin, "bob", "bob-password").await;
    let revoked = app
        .token_for("bob", "bob-password", "repository:x/y:pull")
        .await;
    let bob_api = app.api_login("bob", "bob-password").await;
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/users/bob/disabled",
        json!({"disabled": true}),
    )
    .await
    .expect(StatusCode::OK);
    app.v2(&revoked, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.api(&bob_api, Method::GET, "/api/v1/me", Value::Null)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let expiring = app
        .token_for("ann", "ann-password", "repository:x/y:pull")
        .await;
    // Expiry is checked in whole seconds.
    tokio::time::sleep(ttl + std::time::Duration::from_millis(1100)).await;
    app.v2(&expiring, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    // A forged token names no one: its claims cannot be trusted.
    let mut parts: Vec<String> = revoked.split('.').map(str::to_string).collect();
    let mut forged = claims(&revoked);
    forged["sub"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    app.v2(&parts.join("."), Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);

    let rejected = app.audit_events("token.rejected").await;
    let summary: Vec<(&str, &str, &str)> = rejected
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.resource.as_str(),
                e.detail.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("bob", "registry", "token revoked"),
            ("bob", "api", "authentication required: token revoked"),
            ("ann", "registry", "token expired"),
            ("unknown", "registry", "invalid token: signature mismatch"),
        ]
    );
}
