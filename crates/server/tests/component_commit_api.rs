//! The component flow's routes (issue 16): who may start, read and roll
//! back a deployment's commit, who reads the index `/commiter/ips/`, and
//! the pinned specs stored as OCI artifacts that the registry's referrers
//! API lists next to the committed image.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_api::ObjectMeta;
use wharf_api::commit::COMMIT_IPS_PREFIX;
use wharf_api::component_commit::{
    CommitPhase, ComponentCommit, ComponentCommitSpec, ComponentCommitStatus, PodCommitRecord,
    SPEC_ARTIFACT_TYPE,
};
use wharf_store::StoreExt;

const WEB: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: main, image: shop/web:1}]}
";

const COMMIT: &str = "/api/v1/projects/shop/deployments/web/commit";

/// Pushes a one-layer image to `repository:tag` as `user`; its manifest digest.
async fn push_image(app: &TestApp, user: &str, repository: &str, tag: &str) -> String {
    let scope = format!("repository:{repository}:push,pull");
    let token = app.token_for(user, "a-long-password", &scope).await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"not really a tar, the registry does not look";
    for blob in [&config[..], &layer[..]] {
        let uri = format!("/v2/{repository}/blobs/uploads/?digest={}", sha256(blob));
        app.v2(
            &token,
            Method::POST,
            &uri,
            &[],
            Bytes::copy_from_slice(blob),
        )
        .await
        .expect(StatusCode::CREATED);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer), "size": layer.len()}],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let content_type = (
        "content-type",
        "application/vnd.oci.image.manifest.v1+json".into(),
    );
    app.v2(
        &token,
        Method::PUT,
        &format!("/v2/{repository}/manifests/{tag}"),
        &[content_type],
        body.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    sha256(&body)
}

#[tokio::test]
async fn commit_routes_are_authorized_and_refuse_a_deployment_that_does_not_run() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;
    app.create_user(&admin, "plain", "a-long-password").await;
    let plain = app.api_login("plain", "a-long-password").await;
    app.apply_yaml(&admin, WEB).await.expect(StatusCode::OK);
    let body = json!({"tag": "20261207"});

    // Starting and rolling back: developers and up.
    for token in [&guest, &plain] {
        app.api(token, Method::POST, COMMIT, body.clone())
            .await
            .expect(StatusCode::FORBIDDEN);
        let rollback = format!("{COMMIT}/rollback");
        app.api(token, Method::POST, &rollback, Value::Null)
            .await
            .expect(StatusCode::FORBIDDEN);
    }
    // Reading: the project's readers only.
    for path in [COMMIT.to_string(), format!("{COMMIT}/specs")] {
        app.api(&plain, Method::GET, &path, Value::Null)
            .await
            .expect(StatusCode::FORBIDDEN);
        app.api(&guest, Method::GET, &path, Value::Null)
            .await
            .expect(StatusCode::NOT_FOUND);
    }

    // A developer may ask; the deployment has no running pod: refused,
    // before anything, naming it.
    let refused = app
        .api(&developer, Method::POST, COMMIT, body.clone())
        .await
        .expect(StatusCode::CONFLICT);
    assert!(
        refused.text().contains("not available"),
        "{}",
        refused.text()
    );
    let unknown = app
        .api(
            &developer,
            Method::POST,
            COMMIT,
            json!({"tag": "x", "bogus": 1}),
        )
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::BAD_REQUEST,
        "{}",
        unknown.text()
    );
    assert!(
        app.control_commit("shop", "web").await.is_none(),
        "nothing recorded"
    );
    let audited = app.audit_events("deployment.commit").await;
    assert!(!audited.is_empty(), "refusals are audited");
    let rollback = app
        .api(
            &developer,
            Method::POST,
            &format!("{COMMIT}/rollback"),
            Value::Null,
        )
        .await;
    assert_eq!(
        rollback.status,
        StatusCode::NOT_FOUND,
        "{}",
        rollback.text()
    );
}

#[tokio::test]
async fn the_index_shows_each_caller_the_projects_they_read() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, _) = app.shop_with_guest_and_developer(&admin).await;
    app.create_project(&admin, "other", false).await;
    app.create_user(&admin, "plain", "a-long-password").await;
    let plain = app.api_login("plain", "a-long-password").await;
    let store = app.app.control.objects().store().clone();
    for (image, ip) in [
        ("shop/shop-web-10.92.0.5:20261207", "10.92.0.5"),
        ("shop/shop-web-10.92.0.6:20261207", "10.92.0.6"),
        ("other/other-db-10.92.0.7:20261207", "10.92.0.7"),
    ] {
        store
            .put(
                &format!("{COMMIT_IPS_PREFIX}{image}"),
                ip.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    let images = |reply: Value| -> Vec<String> {
        reply
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["image"].as_str().unwrap().to_string())
            .collect()
    };
    let all = app
        .api(&admin, Method::GET, "/api/v1/commits/ips", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(images(all).len(), 3);
    let shop = app
        .api(&guest, Method::GET, "/api/v1/commits/ips", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        images(shop),
        [
            "shop/shop-web-10.92.0.5:20261207",
            "shop/shop-web-10.92.0.6:20261207"
        ]
    );
    let one = app
        .api(
            &guest,
            Method::GET,
            "/api/v1/commits/ips?ip=10.92.0.6",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        one,
        json!([{"image": "shop/shop-web-10.92.0.6:20261207", "ip": "10.92.0.6"}])
    );
    let none = app
        .api(&plain, Method::GET, "/api/v1/commits/ips", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(none, json!([]));
    app.api(
        &guest,
        Method::GET,
        "/api/v1/commits/ips?ip=nope",
        Value::Null,
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    // Deleting a project deletes its entries.
    app.api(
        &admin,
        Method::DELETE,
        "/api/v1/projects/other",
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let left = app
        .api(&admin, Method::GET, "/api/v1/commits/ips", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(images(left).len(), 2);
}

#[tokio::test]
async fn a_spec_is_an_artifact_the_referrers_api_lists_next_to_its_image() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, _) = app.shop_with_guest_and_developer(&admin).await;
    let repository = "shop/shop-web-10.92.0.5";
    let subject = push_image(&app, "dev", repository, "20261207").await;
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-10-92-0-5}\n";

    let digest = app
        .app
        .commit_specs
        .put_spec(repository, "20261207.deployment", &subject, yaml, "dev")
        .await
        .unwrap();

    // The referrers API (what `oras discover` reads) lists it by type.
    let token = app
        .token_for(
            "gus",
            "a-long-password",
            &format!("repository:{repository}:pull"),
        )
        .await;
    let referrers = app
        .v2(
            &token,
            Method::GET,
            &format!("/v2/{repository}/referrers/{subject}"),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    let listed = &referrers["manifests"];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{referrers}");
    assert_eq!(listed[0]["digest"], digest.as_str());
    assert_eq!(listed[0]["artifactType"], SPEC_ARTIFACT_TYPE);
    // Tagged next to the image, its one layer the YAML.
    let manifest = app
        .v2(
            &token,
            Method::GET,
            &format!("/v2/{repository}/manifests/20261207.deployment"),
            &[(
                "accept",
                "application/vnd.oci.image.manifest.v1+json".into(),
            )],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(manifest["subject"]["digest"], subject.as_str());
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = app
        .v2(
            &token,
            Method::GET,
            &format!("/v2/{repository}/blobs/{layer}"),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(blob.text(), yaml);
    // A subject that is not in the repository is refused.
    let missing = app
        .app
        .commit_specs
        .put_spec(repository, "x.deployment", &sha256(b"nothing"), yaml, "dev")
        .await
        .unwrap_err();
    assert!(missing.contains("the committed image"), "{missing}");

    // The route reads the flow's specs back from the registry.
    let commit = ComponentCommit {
        api_version: "wharf.io/v1".into(),
        kind: "ComponentCommit".into(),
        metadata: ObjectMeta {
            name: "web".into(),
            project: Some("shop".into()),
            ..Default::default()
        },
        spec: ComponentCommitSpec {
            deployment: "web".into(),
            tag: "20261207".into(),
            container: "main".into(),
            requested_by: "dev".into(),
            rollback: false,
        },
        status: ComponentCommitStatus {
            phase: CommitPhase::Done,
            pods: vec![PodCommitRecord {
                pod: "web-0123456789-bcdfg".into(),
                ip: "10.92.0.5".into(),
                image: format!("{repository}:20261207"),
                pinned_deployment: "web-10-92-0-5".into(),
                digest: Some(subject.clone()),
                indexed: true,
                labelled: true,
                spec_artifact: Some(digest.clone()),
                handed_over: true,
            }],
            original_replicas: 1,
            ..Default::default()
        },
    };
    app.app.control.objects().create(commit).await.unwrap();
    let specs = app
        .api(&guest, Method::GET, &format!("{COMMIT}/specs"), Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(specs[0]["yaml"], yaml, "{specs}");
    assert_eq!(
        specs[0]["reference"],
        format!("{repository}:20261207.deployment")
    );
    let shown = app
        .api(&guest, Method::GET, COMMIT, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(shown["status"]["phase"], "Done");
}

trait CommitOf {
    async fn control_commit(&self, project: &str, name: &str) -> Option<ComponentCommit>;
}

impl CommitOf for TestApp {
    async fn control_commit(&self, project: &str, name: &str) -> Option<ComponentCommit> {
        self.app
            .control
            .objects()
            .get::<ComponentCommit>(Some(project), name)
            .await
            .unwrap()
    }
}
