//! Scheduling on live data through the API: nodes reporting different
//! loads and layer caches (as simulated agents do), pods placed by the
//! control plane's scheduler, and the scores it notes on each pod.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// The registry authority pods name images of this server by.
const HERE: &str = "wharf.test:7700";

async fn node(app: &TestApp, admin: &str, name: &str, status: Value) {
    let mut status = status;
    status["capacity"] = json!({"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110});
    let node = json!({"metadata": {"name": name}, "status": status});
    app.api(admin, Method::POST, "/api/v1/nodes", node)
        .await
        .expect(StatusCode::OK);
    let beat = format!("/api/v1/nodes/{name}/heartbeat");
    app.api(admin, Method::PUT, &beat, json!({"ttlSeconds": 60}))
        .await
        .expect(StatusCode::OK);
}

/// Project `shop` with image `shop/app:1` of two layers (3000 and 1000
/// bytes, base first); their contents.
async fn push_two_layer_image(app: &TestApp, admin: &str) -> (Vec<u8>, Vec<u8>) {
    app.create_project(admin, "shop", false).await;
    let token = app
        .token_for("admin", ADMIN_PASSWORD, "repository:shop/app:pull,push")
        .await;
    let (base, top, config) = (vec![7u8; 3000], vec![9u8; 1000], b"{}".to_vec());
    for blob in [&base, &top, &config] {
        let uri = format!("/v2/shop/app/blobs/uploads/?digest={}", sha256(blob));
        app.v2(&token, Method::POST, &uri, &[], blob.clone())
            .await
            .expect(StatusCode::CREATED);
    }
    let layer = |blob: &Vec<u8>| {
        json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
               "digest": sha256(blob), "size": blob.len()})
    };
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": 2},
        "layers": [layer(&base), layer(&top)]});
    let content_type = (
        "content-type",
        "application/vnd.oci.image.manifest.v1+json".into(),
    );
    app.v2(
        &token,
        Method::PUT,
        "/v2/shop/app/manifests/1",
        &[content_type],
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await
    .expect(StatusCode::CREATED);
    (base, top)
}

/// Starts the controllers once every node is ready.
async fn start(app: &TestApp, admin: &str) -> wharf_control::Running {
    let running = app.app.control.start("test".into());
    wait_for(|| async {
        let nodes = app
            .api(admin, Method::GET, "/api/v1/nodes", Value::Null)
            .await
            .json();
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .all(|n| n["status"]["ready"] == true)
            .then_some(())
    })
    .await;
    running
}

async fn wait_for<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deploys one replica of `image` as `name` and returns its pod once
/// bound.
async fn place(app: &TestApp, admin: &str, name: &str, image: &str) -> Value {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n        - name: c\n          \
         image: {image}\n          resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}\n"
    );
    app.apply_yaml(admin, &yaml).await.expect(StatusCode::OK);
    wait_for(|| async {
        let pods = app
            .api(
                admin,
                Method::GET,
                &format!("/api/v1/projects/shop/pods?labelSelector=app%3D{name}"),
                Value::Null,
            )
            .await
            .json();
        let pod = pods["items"].as_array()?.first()?.clone();
        pod["spec"]["nodeName"].is_string().then_some(pod)
    })
    .await
}

fn scores(pod: &Value) -> String {
    pod["metadata"]["annotations"]["wharf.io/scheduling-scores"]
        .as_str()
        .unwrap_or_else(|| panic!("no scores noted: {pod}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_less_loaded_node_gets_the_pods_and_a_silent_node_scores_neutral() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    // "a-busy" runs a cpu burner; name order alone would pick it.
    let busy = json!({"cpuLoad": 0.95, "loadAverage": 3.9, "memoryAvailableBytes": 7u64 << 30});
    node(&app, &admin, "a-busy", busy).await;
    let idle = json!({"cpuLoad": 0.05, "loadAverage": 0.2, "memoryAvailableBytes": 7u64 << 30});
    node(&app, &admin, "b-idle", idle).await;
    let _controllers = start(&app, &admin).await;
    for name in ["one", "two", "three"] {
        let pod = place(&app, &admin, name, "docker.io/library/busybox:1").await;
        assert_eq!(pod["spec"]["nodeName"], "b-idle", "{pod}");
        let scores = scores(&pod);
        assert!(scores.starts_with("b-idle scored "), "{scores}");
        assert!(scores.contains("best of 2 feasible nodes"), "{scores}");
        assert!(scores.contains("load 95.0"), "{scores}");
        assert!(
            scores.contains("image locality 50.0"),
            "hosted elsewhere: {scores}"
        );
    }

    // A node whose lease runs out loses its load summary: a report from
    // before an outage is stale.
    let beat = "/api/v1/nodes/a-busy/heartbeat";
    app.api(&admin, Method::PUT, beat, json!({"ttlSeconds": 1}))
        .await
        .expect(StatusCode::OK);
    let node = wait_for(|| async {
        let node = app
            .api(&admin, Method::GET, "/api/v1/nodes/a-busy", Value::Null)
            .await
            .json();
        (node["status"]["ready"] == false).then_some(node)
    })
    .await;
    for field in ["cpuLoad", "loadAverage", "memoryAvailableBytes", "layers"] {
        assert!(node["status"][field].is_null(), "{field} kept: {node}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_equal_load_the_node_with_the_image_layers_gets_the_pod() {
    let app = TestApp::with(|config| config.public_url = Some(format!("http://{HERE}"))).await;
    let admin = app.admin_token().await;
    let (base, top) = push_two_layer_image(&app, &admin).await;

    let cached = |layers: Value| json!({"cpuLoad": 0.1, "memoryAvailableBytes": 7u64 << 30, "layers": layers});
    node(&app, &admin, "a-empty", cached(json!([]))).await;
    let base_only = json!([{"digest": sha256(&base), "sizeBytes": 3000}]);
    node(&app, &admin, "b-base", cached(base_only)).await;
    let both = json!([{"digest": sha256(&base), "sizeBytes": 3000}, {"digest": sha256(&top), "sizeBytes": 1000}]);
    node(&app, &admin, "c-both", cached(both)).await;
    let _controllers = start(&app, &admin).await;

    let pod = place(&app, &admin, "app", &format!("{HERE}/shop/app:1")).await;
    assert_eq!(pod["spec"]["nodeName"], "c-both", "{pod}");
    assert!(
        scores(&pod).contains("image locality 100.0"),
        "{}",
        scores(&pod)
    );
    // Without the node that has it all, the one that would pull least.
    let gone = app
        .api(&admin, Method::DELETE, "/api/v1/nodes/c-both", Value::Null)
        .await;
    assert!(gone.status.is_success(), "{}", gone.status);
    let pod = place(&app, &admin, "again", &format!("{HERE}/shop/app:1")).await;
    assert_eq!(pod["spec"]["nodeName"], "b-base", "{pod}");
    assert!(
        scores(&pod).contains("image locality 75.0"),
        "{}",
        scores(&pod)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_images_distribution_names_the_nodes_holding_each_layer() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (base, top) = push_two_layer_image(&app, &admin).await;
    let cached = |layers: Value| json!({"layers": layers});
    node(&app, &admin, "a-empty", cached(json!([]))).await;
    node(
        &app,
        &admin,
        "b-base",
        cached(json!([{"digest": sha256(&base), "sizeBytes": 3000}])),
    )
    .await;
    let both = json!([{"digest": sha256(&top), "sizeBytes": 1000}, {"digest": sha256(&base), "sizeBytes": 3000},
        {"digest": sha256(b"another image's"), "sizeBytes": 5}]);
    let mut status = cached(both);
    status["capacity"] = json!({"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110});
    let labelled = json!({"metadata": {"name": "c-both", "labels": {"wharf.io/idc": "east"}}, "status": status});
    app.api(&admin, Method::POST, "/api/v1/nodes", labelled)
        .await
        .expect(StatusCode::OK);
    node(&app, &admin, "d-silent", json!({})).await;

    let uri = "/api/v1/projects/shop/repositories/app/artifacts/1/distribution";
    let shown = app.api(&admin, Method::GET, uri, Value::Null).await;
    let shown = shown.expect(StatusCode::OK).json();
    assert_eq!(shown["repository"], "shop/app");
    assert_eq!(
        shown["layers"],
        json!([
            {"digest": sha256(&base), "size": 3000, "nodes": ["b-base", "c-both"]},
            {"digest": sha256(&top), "size": 1000, "nodes": ["c-both"]},
        ])
    );
    assert_eq!(
        shown["nodes"],
        json!([
            {"node": "c-both", "idc": "east", "layers": 2, "bytes": 4000, "complete": true},
            {"node": "b-base", "layers": 1, "bytes": 3000, "complete": false},
        ])
    );
    assert_eq!(shown["unreported"], json!(["d-silent"]));
    // Readers of the project only.
    app.create_user(&admin, "stranger", "stranger-password-1")
        .await;
    let stranger = app.api_login("stranger", "stranger-password-1").await;
    app.api(&stranger, Method::GET, uri, Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
}
