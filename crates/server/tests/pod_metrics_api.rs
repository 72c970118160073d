//! Pods' CPU and memory over the API: only administrators and node agents
//! report samples; project members read the rates from two samples of the
//! pod's own node.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn report(uid: &str, at_ms: u64, cpu_ns: u64) -> Value {
    json!([{
        "project": "shop",
        "name": "web-1",
        "uid": uid,
        "timestampMs": at_ms,
        "containers": [{"name": "web", "cpuUsageNs": cpu_ns, "memoryWorkingSetBytes": 12u64 << 20}],
    }])
}

#[tokio::test]
async fn nodes_report_usage_and_members_read_pod_metrics() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    app.create_user(&admin, "gus", "a-long-password").await;
    app.add_member(&admin, "shop", "gus", "guest").await;
    let guest = app.api_login("gus", "a-long-password").await;
    let metrics = "/api/v1/projects/shop/pods/web-1/metrics";
    let usage = "/api/v1/nodes/n1/usage";
    let mut pod = wharf_api::Pod::default();
    pod.metadata.name = "web-1".into();
    pod.metadata.project = Some("shop".into());
    pod.spec.node_name = Some("n1".into());
    let pod = app.app.control.objects().create(pod).await.unwrap();
    let uid = pod.metadata.uid.as_str();

    app.api(&guest, Method::PUT, usage, report(uid, 1_000, 0))
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&admin, Method::PUT, usage, report(uid, 1_000, 0))
        .await
        .expect(StatusCode::NO_CONTENT);
    // One sample gives no rate yet.
    app.api(&guest, Method::GET, metrics, Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);
    // A quarter of a core over 10 s.
    app.api(
        &admin,
        Method::PUT,
        usage,
        report(uid, 11_000, 2_500_000_000),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    // Another node's samples of it are not the pod's.
    let elsewhere = "/api/v1/nodes/n2/usage";
    for (at, cpu) in [(12_000, 0), (13_000, 9_000_000_000)] {
        app.api(&admin, Method::PUT, elsewhere, report(uid, at, cpu))
            .await
            .expect(StatusCode::NO_CONTENT);
    }
    let pod = app
        .api(&guest, Method::GET, metrics, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(pod["windowMs"], 10_000, "{pod}");
    assert_eq!(pod["containers"][0]["cpuMillicores"], 250, "{pod}");
    assert_eq!(pod["containers"][0]["memoryBytes"], 12u64 << 20, "{pod}");
    let all = app
        .api(
            &guest,
            Method::GET,
            "/api/v1/projects/shop/podmetrics",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(all[0]["name"], "web-1", "{all}");
}
