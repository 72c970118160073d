//! Storage as project admins see it: quota and mount refusals in the audit
//! log under the refused account.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::json;
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
