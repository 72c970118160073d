//! `GET /metrics`: the Prometheus scrape target. Agents' pushed samples
//! come out under their Prometheus names, the server's own counters move
//! with the requests it serves, and only administrators and metrics:read
//! robots may scrape, the robot only while it is enabled.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sample(endpoint: &str, metric: &str, tags: &str, value: f64, kind: &str) -> Value {
    json!({"endpoint": endpoint, "metric": metric, "tags": tags, "value": value,
           "timestamp": now(), "counterType": kind, "step": 10})
}

/// Creates a metrics:read robot in `project`; returns its name and token.
async fn metrics_robot(app: &TestApp, admin: &str, project: &str) -> (String, String) {
    let reply = app
        .api(
            admin,
            Method::POST,
            &format!("/api/v1/projects/{project}/robots"),
            json!({"name": "prometheus", "system_permissions": ["metrics:read"]}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(
        reply["robot"]["system_permissions"],
        json!(["metrics:read"])
    );
    assert_eq!(reply["robot"]["permissions"], json!([]));
    (
        reply["robot"]["name"].as_str().unwrap().to_string(),
        reply["token"].as_str().unwrap().to_string(),
    )
}

async fn scrape(app: &TestApp, token: &str) -> String {
    let reply = app
        .send(
            Method::GET,
            "/metrics",
            &[("authorization", format!("Bearer {token}"))],
            Vec::new(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    String::from_utf8(reply.body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_scrape_federates_pushed_series_and_the_servers_own_metrics() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let batch = json!([
        sample("wmb-n1", "cpu.busy", "", 37.5, "GAUGE"),
        sample(
            "wmb-n1",
            "df.bytes.used",
            "mount=/,fstype=ext4",
            1e9,
            "GAUGE"
        ),
        sample("wmb-n1", "net.if.in.bytes", "iface=eth0", 5000.0, "COUNTER"),
        sample(
            "wmb-n1",
            "container.mem.working_set",
            "project=shop,pod=web-1,container=app",
            52428800.0,
            "GAUGE"
        ),
    ]);
    app.api(&admin, Method::POST, "/api/v1/nodes/wmb-n1/metrics", batch)
        .await
        .expect(StatusCode::OK);

    let text = scrape(&app, &admin).await;
    for line in [
        "node_cpu_busy{node=\"wmb-n1\"} 37.5\n",
        "node_df_bytes_used{node=\"wmb-n1\",fstype=\"ext4\",mount=\"/\"} 1000000000\n",
        "node_net_if_in_bytes_total{node=\"wmb-n1\",iface=\"eth0\"} 5000\n",
        "container_mem_working_set{node=\"wmb-n1\",container=\"app\",pod=\"web-1\",project=\"shop\"} 52428800\n",
        "# TYPE node_net_if_in_bytes_total counter\n",
        "wharf_metrics_series 4\n",
        // The push itself, counted under its route template.
        "wharf_http_requests_total{method=\"POST\",route=\"/api/v1/nodes/{node}/metrics\",status=\"200\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    for name in [
        "wharf_http_request_duration_seconds_bucket",
        "wharf_store_operations_total{op=\"txn\",result=\"ok\"}",
        "wharf_registry_blob_bytes_received_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[tokio::test]
async fn only_admins_and_enabled_metrics_robots_may_scrape() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "ops", false).await;
    let anonymous = app.send(Method::GET, "/metrics", &[], Vec::new()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Project admins cannot hand out a cluster-wide reader.
    app.create_user(&admin, "lead", "lead-password").await;
    app.add_member(&admin, "ops", "lead", "projectAdmin").await;
    let lead = app.api_login("lead", "lead-password").await;
    let attempts = [
        (
            &lead,
            json!({"system_permissions": ["metrics:read"]}),
            StatusCode::FORBIDDEN,
        ),
        (
            &admin,
            json!({"system_permissions": ["metrics:write"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &admin,
            json!({"actions": "pull", "system_permissions": ["metrics:read"]}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (token, mut body, expected) in attempts {
        body["name"] = json!("prom");
        let reply = app
            .api(
                token,
                Method::POST,
                "/api/v1/projects/ops/robots",
                body.clone(),
            )
            .await;
        assert_eq!(reply.status, expected, "{body}");
    }
    let denied = app
        .send(
            Method::GET,
            "/metrics",
            &[("authorization", format!("Bearer {lead}"))],
            Vec::new(),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let (robot, token) = metrics_robot(&app, &admin, "ops").await;
    assert_eq!(robot, "robot$ops+prometheus");
    assert!(
        scrape(&app, &token)
            .await
            .contains("wharf_http_requests_total")
    );
    // Revoking the robot stops the scrape at once.
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/projects/ops/robots/prometheus/disabled",
        json!({"disabled": true}),
    )
    .await
    .expect(StatusCode::OK);
    let revoked = app
        .send(
            Method::GET,
            "/metrics",
            &[("authorization", format!("Bearer {token}"))],
            Vec::new(),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn registry_blob_bytes_are_counted_both_ways() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let token = app
        .token_for("admin", ADMIN_PASSWORD, "repository:shop/app:pull,push")
        .await;
    let blob = vec![7u8; 3000];
    let digest = sha256(&blob);
    app.v2(
        &token,
        Method::POST,
        &format!("/v2/shop/app/blobs/uploads/?digest={digest}"),
        &[],
        blob.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    let fetched = app
        .v2(
            &token,
            Method::GET,
            &format!("/v2/shop/app/blobs/{digest}"),
            &[],
            Vec::new(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(fetched.body.len(), 3000);

    let text = scrape(&app, &admin).await;
    for line in [
        "wharf_registry_blob_bytes_received_total 3000\n",
        "wharf_registry_blob_bytes_sent_total 3000\n",
        "wharf_http_requests_total{method=\"GET\",route=\"/v2/{name}/blobs/{digest}\",status=\"200\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
