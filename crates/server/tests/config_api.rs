//! ConfigMaps and Secrets over the API as a node's agent reads them: only
//! the objects the pods bound to that node use, Secrets with their values.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_api::{Container, EnvFromSource, ObjectMeta, ObjectRef, Pod, PodSpec};

const OBJECTS: &str = "
apiVersion: v1
kind: ConfigMap
metadata: {name: app, namespace: shop}
data: {mode: prod}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unused, namespace: shop}
data: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: shop}
stringData: {password: hunter2}
";

/// A pod bound to `node` that takes its environment from `sources`
/// (`configmap:NAME` or `secret:NAME`).
fn pod(name: &str, node: &str, sources: &[&str]) -> Pod {
    let env_from = sources
        .iter()
        .map(|source| {
            let (kind, name) = source.split_once(':').unwrap();
            let object = Some(ObjectRef {
                name: name.into(),
                optional: None,
            });
            match kind {
                "configmap" => EnvFromSource {
                    config_map_ref: object,
                    ..EnvFromSource::default()
                },
                _ => EnvFromSource {
                    secret_ref: object,
                    ..EnvFromSource::default()
                },
            }
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: name.into(),
            project: Some("shop".into()),
            ..ObjectMeta::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: "shop/web:1".into(),
                env_from,
                ..Container::default()
            }],
            node_name: Some(node.into()),
            ..PodSpec::default()
        },
        ..Pod::default()
    }
}

/// A server with project `shop` holding [`OBJECTS`], and an admin token.
async fn shop_with_objects() -> (TestApp, String) {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    app.send(
        Method::POST,
        "/api/v1/apply",
        &[
            ("authorization", format!("Bearer {admin}")),
            ("content-type", "application/yaml".into()),
        ],
        OBJECTS.to_string(),
    )
    .await
    .expect(StatusCode::OK);
    (app, admin)
}

#[tokio::test]
async fn a_node_reads_only_what_its_pods_use() {
    let (app, admin) = shop_with_objects().await;
    let objects = app.app.control.objects();
    let uses = ["configmap:app", "secret:db", "configmap:later"];
    objects.create(pod("web-1", "n1", &uses)).await.unwrap();
    objects.create(pod("other-1", "n2", &[])).await.unwrap();

    let get = |path: String| {
        let (app, admin) = (&app, &admin);
        async move { app.api(admin, Method::GET, &path, Value::Null).await }
    };
    let config_map = get("/api/v1/nodes/n1/configmaps/shop/app".into())
        .await
        .expect(StatusCode::OK);
    assert_eq!(config_map.json()["data"]["mode"], "prod");
    let secret = get("/api/v1/nodes/n1/secrets/shop/db".into())
        .await
        .expect(StatusCode::OK);
    assert_eq!(secret.json()["data"]["password"], "aHVudGVyMg==");
    // Used but not there yet: the pod waits for it.
    get("/api/v1/nodes/n1/configmaps/shop/later".into())
        .await
        .expect(StatusCode::NOT_FOUND);
    // Another node, an object no pod on the node uses, another project.
    for path in [
        "/api/v1/nodes/n2/configmaps/shop/app",
        "/api/v1/nodes/n2/secrets/shop/db",
        "/api/v1/nodes/n1/configmaps/shop/unused",
        "/api/v1/nodes/n1/secrets/other/db",
    ] {
        let reply = get(path.into()).await.expect(StatusCode::FORBIDDEN);
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no pod bound to node"),
            "{path}: {}",
            reply.json()
        );
    }

    // What the node says happened to the pod is listed with its events.
    app.api(
        &admin,
        Method::POST,
        "/api/v1/projects/shop/pods/web-1/events",
        json!({"type": "Warning", "reason": "InvalidEnvironmentVariableNames", "message": "Keys [1st] skipped"}),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let events = get("/api/v1/projects/shop/events?object=web-1".into())
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        events.json()[0]["reason"],
        "InvalidEnvironmentVariableNames"
    );

    // Everyone else reads a Secret without its values.
    let listed = get("/api/v1/projects/shop/secrets".into())
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        listed.json()["items"][0]["dataSizes"],
        json!({"password": 7})
    );
    assert!(!listed.text().contains("aHVudGVyMg"), "{}", listed.text());
}

#[tokio::test]
async fn deleting_a_project_deletes_its_config_maps_and_secrets() {
    let (app, admin) = shop_with_objects().await;
    app.api(&admin, Method::DELETE, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    // A new project of the same name inherits nothing.
    app.create_project(&admin, "shop", false).await;
    for kind in ["configmaps", "secrets"] {
        let list = app
            .api(
                &admin,
                Method::GET,
                &format!("/api/v1/projects/shop/{kind}"),
                Value::Null,
            )
            .await
            .expect(StatusCode::OK);
        assert_eq!(list.json()["items"], json!([]), "{kind}");
    }
}
