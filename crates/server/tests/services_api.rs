//! Services over the API: applied by developers with a cluster IP from the
//! service range, read by guests, deleted by maintainers, audited; a
//! requested address held by another service is refused; deleting the
//! project frees the addresses.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::Value;

const SERVICE: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

#[tokio::test]
async fn services_get_an_address_and_are_authorized_as_deployments() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;

    app.apply_yaml(&guest, SERVICE)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.apply_yaml(&developer, SERVICE)
        .await
        .expect(StatusCode::OK);
    let path = "/api/v1/projects/shop/services/web";
    let web = app
        .api(&guest, Method::GET, path, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96."), "{web}");
    // Applied again, it keeps its address.
    app.apply_yaml(&developer, SERVICE)
        .await
        .expect(StatusCode::OK);
    let list = app
        .api(
            &guest,
            Method::GET,
            "/api/v1/projects/shop/services",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(list["items"][0]["spec"]["clusterIP"], ip.as_str());
    // Another service cannot take it; nothing of it is stored.
    let taken = SERVICE
        .replace("name: web,", "name: api,")
        .replace("  selector:", &format!("  clusterIP: {ip}\n  selector:"));
    let refused = app
        .apply_yaml(&developer, &taken)
        .await
        .expect(StatusCode::CONFLICT);
    assert!(
        refused.text().contains("held by service shop/web"),
        "{}",
        refused.text()
    );
    app.api(
        &guest,
        Method::GET,
        "/api/v1/projects/shop/services/api",
        Value::Null,
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    // A node reads every service with its endpoints (administrators only).
    let bundle = "/api/v1/nodes/n1/services";
    app.api(&developer, Method::GET, bundle, Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    let bundle = app
        .api(&admin, Method::GET, bundle, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(bundle["services"][0]["spec"]["clusterIP"], ip.as_str());
    assert!(bundle["endpoints"].is_array(), "{bundle}");
    let node_port = SERVICE.replace("  selector:", "  type: NodePort\n  selector:");
    let refused = app
        .apply_yaml(&developer, &node_port)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("spec.type"), "{}", refused.text());

    app.api(&developer, Method::DELETE, path, Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&admin, Method::DELETE, path, Value::Null)
        .await
        .expect(StatusCode::OK);
    app.api(&guest, Method::GET, path, Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);
    // The address is free again: another service may ask for it.
    app.apply_yaml(&developer, &taken)
        .await
        .expect(StatusCode::OK);
    let applied = app.audit_events("service.apply").await;
    assert!(
        applied.iter().any(|e| e.resource == "shop/service/web"),
        "{applied:?}"
    );
    assert_eq!(app.audit_events("service.delete").await.len(), 1);
}

#[tokio::test]
async fn deleting_the_project_frees_its_service_addresses() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let fixed = SERVICE.replace("  selector:", "  clusterIP: 10.96.7.7\n  selector:");
    app.apply_yaml(&admin, &fixed).await.expect(StatusCode::OK);
    app.api(&admin, Method::DELETE, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.create_project(&admin, "shop", false).await;
    app.apply_yaml(&admin, &fixed.replace("name: web,", "name: again,"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_node_watches_services_and_endpoints_after_its_list() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let bundle = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/nodes/n1/services",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    let version = bundle["resourceVersion"].as_str().unwrap();
    let uri = format!("/api/v1/nodes/n1/services?watch=true&resourceVersion={version}");
    let mut body = app.watch(&admin, &uri).await;
    app.apply_yaml(&admin, SERVICE).await.expect(StatusCode::OK);
    app.api(
        &admin,
        Method::DELETE,
        "/api/v1/projects/shop/services/web",
        Value::Null,
    )
    .await
    .expect(StatusCode::OK);
    // The service added, then deleted (the controller is not running: no
    // endpoints were written).
    let events = watch_events(&mut body, 2).await;
    let text = format!("{events:?}");
    assert_eq!(events[0]["type"], "ADDED", "{text}");
    assert_eq!(events[0]["object"]["kind"], "Service");
    assert_eq!(events[0]["object"]["metadata"]["name"], "web");
    assert_eq!(events[1]["type"], "DELETED", "{text}");
    assert_eq!(events[1]["object"]["kind"], "Service");
}
