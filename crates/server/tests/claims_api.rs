//! PersistentVolumeClaims over the API: authorized as ConfigMaps (guests
//! read, developers apply, maintainers delete), audited, Terminating while
//! a pod uses them, and a node lists only the claims bound to it.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const CLAIM: &str = "
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOncePod]
  resources: {requests: {storage: 1Gi}}
";

#[tokio::test]
async fn claims_are_read_by_guests_written_by_developers_and_audited() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;

    app.apply_yaml(&guest, CLAIM)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.apply_yaml(&developer, CLAIM)
        .await
        .expect(StatusCode::OK);
    let list = app
        .api(
            &guest,
            Method::GET,
            "/api/v1/projects/shop/persistentvolumeclaims",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK);
    let claim = &list.json()["items"][0];
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
    assert!(claim["status"]["nodeName"].is_null(), "{claim}");
    // A spec cannot change once made.
    let bigger = CLAIM.replace("1Gi", "2Gi");
    let refused = app
        .apply_yaml(&developer, &bigger)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        refused.text().contains("cannot change"),
        "{}",
        refused.text()
    );
    app.api(
        &developer,
        Method::DELETE,
        "/api/v1/projects/shop/persistentvolumeclaims/data",
        Value::Null,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let events = app.audit_events("persistentvolumeclaim.apply").await;
    assert_eq!(events.len(), 2, "applied, then refused: {events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.resource == "shop/persistentvolumeclaim/data")
    );
}

#[tokio::test]
async fn a_claim_in_use_terminates_and_nodes_see_only_their_claims() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    app.apply_yaml(&admin, CLAIM).await.expect(StatusCode::OK);
    app.apply_yaml(&admin, &CLAIM.replace("name: data", "name: spare"))
        .await
        .expect(StatusCode::OK);
    let objects = app.app.control.objects();
    objects.bind_claim("shop", "data", "n1").await.unwrap();
    let mut pod = wharf_api::Pod::default();
    pod.metadata.name = "db-1".into();
    pod.metadata.project = Some("shop".into());
    pod.spec.containers = vec![wharf_api::Container {
        name: "db".into(),
        image: "shop/db:1".into(),
        ..Default::default()
    }];
    pod.spec.volumes = vec![wharf_api::Volume {
        name: "data".into(),
        persistent_volume_claim: Some(wharf_api::ClaimVolume {
            claim_name: "data".into(),
            read_only: false,
        }),
        ..Default::default()
    }];
    objects.create(pod).await.unwrap();

    let on_node = |node: &'static str| {
        let (app, admin) = (&app, &admin);
        async move {
            let path = format!("/api/v1/nodes/{node}/persistentvolumeclaims");
            let reply = app.api(admin, Method::GET, &path, Value::Null).await;
            let list = reply.expect(StatusCode::OK).json();
            let names: Vec<String> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            names
        }
    };
    assert_eq!(on_node("n1").await, ["data"]);
    assert!(on_node("n2").await.is_empty());
    let users = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/persistentvolumeclaims/data/users",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(users.json()["pods"], json!(["db-1"]));

    let delete = |name: &'static str| {
        let (app, admin) = (&app, &admin);
        async move {
            let path = format!("/api/v1/projects/shop/persistentvolumeclaims/{name}");
            app.api(admin, Method::DELETE, &path, Value::Null).await
        }
    };
    let kept = delete("data").await.expect(StatusCode::ACCEPTED);
    assert!(kept.json()["metadata"]["deletionTimestamp"].is_string());
    delete("spare").await.expect(StatusCode::OK);
    objects.delete_pod("shop", "db-1").await.unwrap();
    assert_eq!(objects.release_claims().await.unwrap(), ["shop/data"]);
    assert!(on_node("n1").await.is_empty());
    let events = app.audit_events("persistentvolumeclaim.delete").await;
    assert_eq!(events.len(), 2, "{events:?}");
}
