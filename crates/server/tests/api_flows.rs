//! The administration API: projects, members, robots, quotas, audit.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn project_lifecycle_with_members() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "owner", "owner-password").await;
    app.create_user(&admin, "helper", "helper-password").await;
    let owner = app.api_login("owner", "owner-password").await;
    let helper = app.api_login("helper", "helper-password").await;

    // Any user creates a project and becomes its admin.
    app.create_project(&owner, "shop", false).await;
    let members = app
        .api(
            &owner,
            Method::GET,
            "/api/v1/projects/shop/members",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        members.json(),
        json!([{"project": "shop", "user": "owner", "role": "projectAdmin"}])
    );
    app.api(
        &owner,
        Method::POST,
        "/api/v1/projects",
        json!({"name": "shop"}),
    )
    .await
    .expect(StatusCode::CONFLICT);
    app.api(
        &owner,
        Method::POST,
        "/api/v1/projects",
        json!({"name": "Bad/Name"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);

    // Private: helper does not see it; after joining as guest, does.
    let visible = |token: String| {
        let app = &app;
        async move {
            let list = app
                .api(&token, Method::GET, "/api/v1/projects", Value::Null)
                .await
                .expect(StatusCode::OK)
                .json();
            list.as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert!(visible(helper.clone()).await.is_empty());
    app.add_member(&owner, "shop", "helper", "guest").await;
    assert_eq!(visible(helper.clone()).await, vec!["shop"]);
    // A guest may not manage members or change the project.
    app.api(
        &helper,
        Method::PUT,
        "/api/v1/projects/shop/members/helper",
        json!({"role": "projectAdmin"}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(
        &helper,
        Method::PATCH,
        "/api/v1/projects/shop",
        json!({"public": true}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    // The owner may change visibility, but only a system admin sets quotas.
    app.api(
        &owner,
        Method::PATCH,
        "/api/v1/projects/shop",
        json!({"public": true}),
    )
    .await
    .expect(StatusCode::OK);
    app.api(
        &owner,
        Method::PATCH,
        "/api/v1/projects/shop",
        json!({"quota_bytes": 1000}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let updated = app
        .api(
            &admin,
            Method::PATCH,
            "/api/v1/projects/shop",
            json!({"quota_bytes": 1000}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(updated.json()["quota_bytes"], 1000);
    let shown = app
        .api(&helper, Method::GET, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown.json()["usage_bytes"], 0);
    app.api(
        &admin,
        Method::PATCH,
        "/api/v1/projects/shop",
        json!({"quota_bytes": null}),
    )
    .await
    .expect(StatusCode::OK);

    // Unknown roles and users are refused clearly.
    app.api(
        &owner,
        Method::PUT,
        "/api/v1/projects/shop/members/helper",
        json!({"role": "owner"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    app.api(
        &owner,
        Method::PUT,
        "/api/v1/projects/shop/members/ghost",
        json!({"role": "guest"}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    app.api(
        &owner,
        Method::DELETE,
        "/api/v1/projects/shop/members/helper",
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    app.api(
        &helper,
        Method::GET,
        "/api/v1/projects/shop/members",
        Value::Null,
    )
    .await
    .expect(StatusCode::OK);

    // A project with repositories cannot be deleted.
    let token = app
        .token_for("owner", "owner-password", "repository:shop/app:pull,push")
        .await;
    let config = b"{}".to_vec();
    app.v2(
        &token,
        Method::POST,
        &format!("/v2/shop/app/blobs/uploads/?digest={}", sha256(&config)),
        &[],
        config.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": 2}, "layers": []});
    app.v2(
        &token,
        Method::PUT,
        "/v2/shop/app/manifests/v1",
        &[(
            "content-type",
            "application/vnd.oci.image.manifest.v1+json".into(),
        )],
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await
    .expect(StatusCode::CREATED);
    app.api(&owner, Method::DELETE, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::CONFLICT);
    let manifest_digest = sha256(&serde_json::to_vec(&manifest).unwrap());
    let delete = app
        .token_for("owner", "owner-password", "repository:shop/app:delete")
        .await;
    app.v2(
        &delete,
        Method::DELETE,
        &format!("/v2/shop/app/manifests/{manifest_digest}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    app.api(&owner, Method::DELETE, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.api(&admin, Method::GET, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn robots_are_scoped_expire_and_show_their_secret_once() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "ci", false).await;
    app.create_project(&admin, "other", false).await;
    let created = app
        .api(
            &admin,
            Method::POST,
            "/api/v1/projects/ci/robots",
            json!({"name": "builder", "actions": "pull,push"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(created["robot"]["name"], "robot$ci+builder");
    let secret = created["secret"].as_str().unwrap().to_string();
    let listed = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/ci/robots",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK);
    assert!(
        !String::from_utf8_lossy(&listed.body).contains(&secret),
        "the secret is never shown again"
    );

    let token = app
        .token_for("robot$ci+builder", &secret, "repository:ci/app:pull,push")
        .await;
    let access = |scope: &'static str| {
        let (app, secret) = (&app, secret.clone());
        async move {
            let token = app.token_for("robot$ci+builder", &secret, scope).await;
            let payload = token.split('.').nth(1).unwrap().to_string();
            use base64::Engine;
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap();
            claims["access"][0]["actions"].clone()
        }
    };
    assert_eq!(
        access("repository:ci/app:pull,push,delete").await,
        json!(["pull", "push"])
    );
    assert_eq!(
        access("repository:other/app:pull").await,
        json!([]),
        "scoped to its project"
    );
    app.v2(&token, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::OK);
    // Robots cannot use the admin API to create projects.
    let robot_api = app.api_login("robot$ci+builder", &secret).await;
    app.api(
        &robot_api,
        Method::POST,
        "/api/v1/projects",
        json!({"name": "robotland"}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);

    // Deleting the robot kills its tokens and logins.
    app.api(
        &admin,
        Method::DELETE,
        "/api/v1/projects/ci/robots/builder",
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    app.v2(&token, Method::GET, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.registry_token(
        Some(("robot$ci+builder", &secret)),
        "repository:ci/app:pull",
    )
    .await
    .expect(StatusCode::UNAUTHORIZED);

    // An expired robot cannot log in.
    let short = app
        .api(
            &admin,
            Method::POST,
            "/api/v1/projects/ci/robots",
            json!({"name": "brief", "actions": "pull", "expires_in_secs": 1}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    let brief = short["secret"].as_str().unwrap();
    app.token_for("robot$ci+brief", brief, "repository:ci/app:pull")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.registry_token(Some(("robot$ci+brief", brief)), "repository:ci/app:pull")
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // Only admins of every project a robot reaches may create it.
    app.create_user(&admin, "cilead", "cilead-password").await;
    app.add_member(&admin, "ci", "cilead", "projectAdmin").await;
    let lead = app.api_login("cilead", "cilead-password").await;
    app.api(
        &lead,
        Method::POST,
        "/api/v1/projects/ci/robots",
        json!({"name": "wide", "actions": "pull", "also": {"other": "pull"}}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(
        &lead,
        Method::POST,
        "/api/v1/projects/ci/robots",
        json!({"name": "narrow", "actions": "pull"}),
    )
    .await
    .expect(StatusCode::CREATED);
    app.api(
        &lead,
        Method::POST,
        "/api/v1/projects/ci/robots",
        json!({"name": "odd", "actions": "fly"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn quota_is_enforced_on_push() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project_with_quota(&admin, "small", 1000).await;
    let token = app
        .token_for("admin", ADMIN_PASSWORD, "repository:small/app:pull,push")
        .await;
    let fits = vec![1u8; 600];
    app.v2(
        &token,
        Method::POST,
        &format!("/v2/small/app/blobs/uploads/?digest={}", sha256(&fits)),
        &[],
        fits,
    )
    .await
    .expect(StatusCode::CREATED);
    let too_much = vec![2u8; 600];
    let reply = app
        .v2(
            &token,
            Method::POST,
            &format!("/v2/small/app/blobs/uploads/?digest={}", sha256(&too_much)),
            &[],
            too_much,
        )
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&reply.body).contains("quota exceeded"));
    let shown = app
        .api(&admin, Method::GET, "/api/v1/projects/small", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(shown["usage_bytes"], 600);
}

#[tokio::test]
async fn audit_log_records_who_did_what() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "alice", "alice-password").await;
    app.create_project(&admin, "proj", false).await;
    app.add_member(&admin, "proj", "alice", "guest").await;
    app.registry_token(
        Some(("alice", "not-her-password")),
        "repository:proj/app:pull",
    )
    .await
    .expect(StatusCode::UNAUTHORIZED);
    let token = app
        .token_for("alice", "alice-password", "repository:proj/app:pull,push")
        .await;
    let blob = b"x".to_vec();
    app.v2(
        &token,
        Method::POST,
        &format!("/v2/proj/app/blobs/uploads/?digest={}", sha256(&blob)),
        &[],
        blob,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.flush_audit().await;

    let events = app
        .api(&admin, Method::GET, "/api/v1/audit?limit=100", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    let has = |action: &str, actor: &str, outcome: &str| {
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == action && e["actor"] == actor && e["outcome"] == outcome)
    };
    assert!(has("user.create", "admin", "success"), "{events}");
    assert!(has("project.create", "admin", "success"));
    assert!(has("member.set", "admin", "success"));
    assert!(has("login", "alice", "failed"));
    assert!(has("login", "alice", "success"));
    assert!(has("access.denied", "alice", "denied"));
    // Passwords never reach the audit log.
    assert!(!events.to_string().contains("alice-password"));

    // Project admins may read their project's events, nobody else's.
    app.create_user(&admin, "boss", "boss-password").await;
    app.add_member(&admin, "proj", "boss", "projectAdmin").await;
    let boss = app.api_login("boss", "boss-password").await;
    app.api(&boss, Method::GET, "/api/v1/audit", Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    let own = app
        .api(
            &boss,
            Method::GET,
            "/api/v1/audit?project=proj",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(
        own.as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource"].as_str().unwrap().contains("proj")),
        "{own}"
    );
    let alice = app.api_login("alice", "alice-password").await;
    app.api(
        &alice,
        Method::GET,
        "/api/v1/audit?project=proj",
        Value::Null,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn malformed_and_oversize_api_bodies_are_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let reply = app
        .send(
            Method::POST,
            "/api/v1/users",
            &[
                ("authorization", format!("Bearer {admin}")),
                ("content-type", "application/json".into()),
            ],
            "{not json",
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["code"], "INVALID");
    let huge = format!(
        "{{\"name\":\"x\",\"password\":\"{}\"}}",
        "p".repeat(3 << 20)
    );
    app.send(
        Method::POST,
        "/api/v1/users",
        &[
            ("authorization", format!("Bearer {admin}")),
            ("content-type", "application/json".into()),
        ],
        huge,
    )
    .await
    .expect(StatusCode::PAYLOAD_TOO_LARGE);
    app.api(
        &admin,
        Method::POST,
        "/api/v1/users",
        json!({"name": "bob", "password": "short"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    app.api(
        &admin,
        Method::POST,
        "/api/v1/users",
        json!({"name": "../bob", "password": "long-enough"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    let users = app
        .api(&admin, Method::GET, "/api/v1/users", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        users.as_array().unwrap().len(),
        1,
        "nothing was created: {users}"
    );
    assert!(
        !users.to_string().contains("hash"),
        "password hashes never leave the server"
    );
}

#[tokio::test]
async fn live_and_ready_probes_answer_anonymously() {
    let app = TestApp::new().await;
    for path in ["/livez", "/readyz", "/healthz"] {
        let reply = app.send(Method::GET, path, &[], Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    // Once shutdown begins the server is alive but no longer ready.
    app.app.begin_shutdown();
    let ready = app.send(Method::GET, "/readyz", &[], Bytes::new()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let live = app.send(Method::GET, "/livez", &[], Bytes::new()).await;
    assert_eq!(live.status, StatusCode::OK);
}
