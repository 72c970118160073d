//! HorizontalPodAutoscalers over the API: applied by developers as
//! Kubernetes writes them, read by guests, deleted by maintainers,
//! audited; a field Wharf cannot honour is refused by name with nothing
//! stored; deleting the project deletes them.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::Value;

const HPA: &str = "
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 10}
";

const PATH: &str = "/api/v1/projects/shop/horizontalpodautoscalers/web";

#[tokio::test]
async fn autoscalers_are_authorized_as_deployments_and_audited() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;

    app.apply_yaml(&guest, HPA)
        .await
        .expect(StatusCode::FORBIDDEN);
    let applied = app
        .apply_yaml(&developer, HPA)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(applied["results"][0]["action"], "created", "{applied}");
    assert_eq!(applied["results"][0]["warnings"], serde_json::json!([]));
    let web = app
        .api(&guest, Method::GET, PATH, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(web["spec"]["maxReplicas"], 3, "{web}");
    assert_eq!(
        web["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        10
    );
    let list = app
        .api(
            &guest,
            Method::GET,
            "/api/v1/projects/shop/horizontalpodautoscalers",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(list["items"][0]["metadata"]["name"], "web", "{list}");

    // Refused naming the field; nothing is stored.
    let zero_max = HPA.replace("maxReplicas: 3", "maxReplicas: 0");
    let pods_metric = HPA.replace("- type: Resource", "- type: Pods");
    for (bad, field) in [
        (zero_max, "spec.maxReplicas"),
        (pods_metric, "spec.metrics[0].type"),
    ] {
        let refused = app
            .apply_yaml(&developer, &bad.replace("name: web,", "name: api,"))
            .await
            .expect(StatusCode::BAD_REQUEST);
        assert!(refused.text().contains(field), "{}", refused.text());
    }
    app.api(
        &guest,
        Method::GET,
        "/api/v1/projects/shop/horizontalpodautoscalers/api",
        Value::Null,
    )
    .await
    .expect(StatusCode::NOT_FOUND);

    app.api(&developer, Method::DELETE, PATH, Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&admin, Method::DELETE, PATH, Value::Null)
        .await
        .expect(StatusCode::OK);
    app.api(&guest, Method::GET, PATH, Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);
    let applied = app.audit_events("horizontalpodautoscaler.apply").await;
    assert!(
        applied
            .iter()
            .any(|e| e.resource == "shop/horizontalpodautoscaler/web"),
        "{applied:?}"
    );
    assert_eq!(
        app.audit_events("horizontalpodautoscaler.delete")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn deleting_the_project_deletes_its_autoscalers() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    app.apply_yaml(&admin, HPA).await.expect(StatusCode::OK);
    app.api(&admin, Method::DELETE, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.create_project(&admin, "shop", false).await;
    app.api(&admin, Method::GET, PATH, Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);
}
