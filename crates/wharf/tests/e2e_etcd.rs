//! The whole server on etcd (`--store etcd://...`): registry metadata,
//! identities and cluster objects live there and survive a restart.

mod common;

use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{Image, TestServer, require_tool};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_etcd_and_keeps_its_state() {
    if !require_tool("etcd", "apt-get install etcd-server") {
        return;
    }
    let etcd = Etcd::start();
    let mut server = TestServer::start_with(&["--store", &etcd.store_arg()]);
    assert!(
        !server.data_dir().join("state.redb").exists(),
        "no embedded store when on etcd"
    );
    let admin = server.admin().await;
    admin.create_project("shop", false, None).await;

    // Registry metadata on etcd.
    let image = Image::sample();
    let (status, body) = server
        .registry()
        .push_image(&server.url(), "shop/app", "v1", &image)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Cluster objects on etcd, with the controllers leading through it.
    admin
        .expect(
            Method::POST,
            "/api/v1/nodes",
            Some(json!({"metadata": {"name": "n1"}, "status": {"capacity": {"cpuMillis": 2000, "memoryBytes": 4u64 << 30, "pods": 10}}})),
            StatusCode::OK,
        )
        .await;
    admin
        .expect(
            Method::PUT,
            "/api/v1/nodes/n1/heartbeat",
            Some(json!({"ttlSeconds": 60})),
            StatusCode::OK,
        )
        .await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "shop/app:v1"}]}}},
    });
    // JSON is YAML: apply takes it as it is.
    let (status, body) = admin
        .call(Method::POST, "/api/v1/apply", Some(deployment))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = admin
            .expect(
                Method::GET,
                "/api/v1/projects/shop/pods",
                None,
                StatusCode::OK,
            )
            .await;
        let items = pods["items"].as_array().unwrap();
        if items.len() == 2 && items.iter().all(|p| p["spec"]["nodeName"] == "n1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods never bound on etcd: {pods}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Restart: everything comes back from etcd.
    server.restart();
    let (status, manifest) = server
        .registry()
        .get_manifest(&server.url(), "shop/app", "v1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(manifest, image.manifest.bytes.to_vec());
    let admin = server.admin().await;
    let deployment = admin
        .expect(
            Method::GET,
            "/api/v1/projects/shop/deployments/web",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(deployment["spec"]["replicas"], 2);
}
