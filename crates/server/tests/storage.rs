//! Storage as project admins see it: quota and mount refusals in the audit
//! log under the refused account, usage that drops as soon as an artifact is
//! deleted, and collections of untagged artifacts through the API.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_audit::{AuditEvent, Outcome};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes `blob` to `repo` in one request; returns its digest.
async fn push_blob(app: &TestApp, token: &str, repo: &str, blob: &[u8]) -> Reply {
    app.v2(
        token,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)),
        &[],
        blob.to_vec(),
    )
    .await
}

/// An image manifest over `config` and `layer` (pushed separately).
fn manifest_of(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": layer.len()}],
    }))
    .unwrap()
}

async fn put_manifest(
    app: &TestApp,
    token: &str,
    repo: &str,
    reference: &str,
    body: &[u8],
) -> Reply {
    app.v2(
        token,
        Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("content-type", OCI_MANIFEST.into())],
        body.to_vec(),
    )
    .await
}

/// Pushes config, layer and manifest as `repo:tag`; returns the manifest
/// digest and the bytes the three hold.
async fn push_image(
    app: &TestApp,
    token: &str,
    repo: &str,
    tag: &str,
    layer: &[u8],
) -> (String, u64) {
    let config = format!(r#"{{"layer":"{}"}}"#, sha256(layer)).into_bytes();
    for blob in [&config[..], layer] {
        push_blob(app, token, repo, blob)
            .await
            .expect(StatusCode::CREATED);
    }
    let manifest = manifest_of(&config, layer);
    put_manifest(app, token, repo, tag, &manifest)
        .await
        .expect(StatusCode::CREATED);
    let bytes = (config.len() + layer.len() + manifest.len()) as u64;
    (sha256(&manifest), bytes)
}

async fn usage(app: &TestApp, admin: &str, project: &str) -> u64 {
    app.api(
        admin,
        Method::GET,
        &format!("/api/v1/projects/{project}"),
        Value::Null,
    )
    .await
    .expect(StatusCode::OK)
    .json()["usage_bytes"]
        .as_u64()
        .unwrap()
}

/// The denied events of `action`.
async fn denied(app: &TestApp, action: &str) -> Vec<AuditEvent> {
    let mut events = app.audit_events(action).await;
    events.retain(|e| e.outcome == Outcome::Denied);
    events
}

#[tokio::test]
async fn quota_refusals_are_audited_under_the_refused_account() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project_with_quota(&admin, "small", 10_000).await;
    let (robot, secret) = app.create_robot(&admin, "small", "ci", "pull,push").await;
    let token = app
        .token_for(&robot, &secret, "repository:small/app:pull,push")
        .await;

    // A layer that fits, then one that does not.
    push_blob(&app, &token, "small/app", &[1u8; 6_000])
        .await
        .expect(StatusCode::CREATED);
    let big = [2u8; 6_000];
    push_blob(&app, &token, "small/app", &big)
        .await
        .expect(StatusCode::FORBIDDEN);
    let refused = denied(&app, "blob.upload").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].actor, robot, "the refused account");
    assert_eq!(refused[0].resource, format!("small/app@{}", sha256(&big)));
    let detail = refused[0].detail.as_deref().unwrap();
    assert!(
        detail.contains("quota exceeded for project small"),
        "{detail}"
    );

    // A manifest that would take the project over its quota.
    let config = br#"{"fits":false}"#;
    push_blob(&app, &token, "small/app", config)
        .await
        .expect(StatusCode::CREATED);
    let layer = [3u8; 3_900];
    push_blob(&app, &token, "small/app", &layer)
        .await
        .expect(StatusCode::CREATED);
    put_manifest(
        &app,
        &token,
        "small/app",
        "v1",
        &manifest_of(config, &layer),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let refused = denied(&app, "artifact.push").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].actor, robot);
    assert_eq!(refused[0].resource, "small/app:v1");
    // Nothing succeeded in its name but the blobs.
    assert!(
        app.audit_events("artifact.push")
            .await
            .iter()
            .all(|e| e.outcome == Outcome::Denied)
    );
}

#[tokio::test]
async fn a_refused_cross_repository_mount_is_audited() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "secret", false).await;
    app.create_project(&admin, "mine", false).await;
    app.create_user(&admin, "dev", "dev-password").await;
    app.add_member(&admin, "mine", "dev", "developer").await;
    let admin_token = app
        .token_for("admin", ADMIN_PASSWORD, "repository:secret/app:pull,push")
        .await;
    let blob = b"confidential layer".to_vec();
    let digest = sha256(&blob);
    push_blob(&app, &admin_token, "secret/app", &blob)
        .await
        .expect(StatusCode::CREATED);

    // dev may push to mine/app but may not read secret/app: no mount, an
    // upload session instead (as the spec says), and an audit record.
    let token = app
        .token_for(
            "dev",
            "dev-password",
            "repository:mine/app:pull,push%20repository:secret/app:pull",
        )
        .await;
    let reply = app
        .v2(
            &token,
            Method::POST,
            &format!("/v2/mine/app/blobs/uploads/?mount={digest}&from=secret/app"),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert!(reply.header("location").contains("/blobs/uploads/"));
    app.v2(
        &token,
        Method::HEAD,
        &format!("/v2/mine/app/blobs/{digest}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    let refused = denied(&app, "blob.mount").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].actor, "dev");
    assert_eq!(refused[0].resource, format!("secret/app@{digest}"));
    let detail = refused[0].detail.as_deref().unwrap();
    assert!(
        detail.contains("may not pull secret/app") && detail.contains("mine/app"),
        "{detail}"
    );

    // A mount the caller may make is no refusal.
    let admin_mine = app
        .token_for(
            "admin",
            ADMIN_PASSWORD,
            "repository:mine/app:pull,push%20repository:secret/app:pull",
        )
        .await;
    app.v2(
        &admin_mine,
        Method::POST,
        &format!("/v2/mine/app/blobs/uploads/?mount={digest}&from=secret/app"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(denied(&app, "blob.mount").await.len(), 1);
}

#[tokio::test]
async fn deleting_a_manifest_lowers_usage_at_once_and_gc_collects_untagged_ones() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let token = app
        .token_for(
            "admin",
            ADMIN_PASSWORD,
            "repository:shop/app:pull,push,delete",
        )
        .await;
    let (first, first_bytes) = push_image(&app, &token, "shop/app", "v1", &[5u8; 20_000]).await;
    let (_, second_bytes) = push_image(&app, &token, "shop/app", "v2", &[6u8; 30_000]).await;
    assert_eq!(
        usage(&app, &admin, "shop").await,
        first_bytes + second_bytes
    );

    // Deleting an artifact: its bytes leave the usage now, not at the next GC.
    app.v2(
        &token,
        Method::DELETE,
        &format!("/v2/shop/app/manifests/{first}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    assert_eq!(usage(&app, &admin, "shop").await, second_bytes);

    // Deleting a tag leaves an untagged manifest, still counted...
    app.v2(
        &token,
        Method::DELETE,
        "/v2/shop/app/manifests/v2",
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    assert_eq!(usage(&app, &admin, "shop").await, second_bytes);
    // ...until a collection that deletes untagged manifests.
    let gc = |body: Value| {
        let (app, admin) = (&app, admin.clone());
        async move { app.api(&admin, Method::POST, "/api/v1/gc", body).await }
    };
    let report = gc(json!({"grace_seconds": 0}))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(report["manifests_removed"], 0, "{report}");
    assert_eq!(usage(&app, &admin, "shop").await, second_bytes);

    // Bad requests are refused and change nothing.
    for bad in [
        json!({"delete_untagged": "yes"}),
        json!({"deleteUntagged": true}),
        json!({"uploads_older_than_seconds": -1}),
    ] {
        let reply = gc(bad.clone()).await.expect(StatusCode::BAD_REQUEST);
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.starts_with("request body:"), "{bad}: {message}");
    }
    assert_eq!(usage(&app, &admin, "shop").await, second_bytes);

    let report = gc(json!({"grace_seconds": 0, "delete_untagged": true}))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(report["manifests_removed"], 1, "{report}");
    assert_eq!(usage(&app, &admin, "shop").await, 0);
    app.api(&admin, Method::DELETE, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
}
