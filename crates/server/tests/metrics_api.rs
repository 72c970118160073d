//! Node and container metrics over the API: agents (administrators) push
//! falcon samples, callers query them; bad samples are named; readers of a
//! project see only its series; the downsampled history outlives a restart.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_server::ServerConfig;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sample(endpoint: &str, metric: &str, tags: &str, at: i64, value: f64, kind: &str) -> Value {
    json!({"endpoint": endpoint, "metric": metric, "tags": tags, "value": value,
           "timestamp": at, "counterType": kind, "step": 10})
}

const PUSH: &str = "/api/v1/nodes/wts-n1/metrics";

#[tokio::test]
async fn agents_push_samples_and_admins_query_them_with_rates_and_aggregation() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let t = now() - now() % 60 - 60;
    let mut batch = Vec::new();
    for i in 0..4 {
        let at = t + i * 10;
        batch.push(sample(
            "wts-n1",
            "cpu.busy",
            "",
            at,
            10.0 * i as f64,
            "GAUGE",
        ));
        batch.push(sample("wts-n2", "cpu.busy", "", at, 50.0, "GAUGE"));
        batch.push(sample(
            "wts-n1",
            "net.if.in.bytes",
            "iface=eth0",
            at,
            1000.0 * i as f64,
            "COUNTER",
        ));
    }
    let stored = app
        .api(&admin, Method::POST, PUSH, Value::Array(batch))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(stored, json!({"stored": 12, "skipped": 0}));

    let range = format!("start={t}&end={}", t + 30);
    let uri = format!("/api/v1/metrics/query?metric=cpu.busy&endpoint=wts-n1&{range}&step=10");
    let answer = app
        .api(&admin, Method::GET, &uri, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(answer["resolution"], "raw", "{answer}");
    assert_eq!(answer["series"][0]["labels"], json!({"endpoint": "wts-n1"}));
    assert_eq!(answer["series"][0]["points"][3], json!([t + 30, 30.0]));

    let uri = format!(
        "/api/v1/metrics/query?metric=net.if.in.bytes&tags=iface=eth0&{range}&step=10&rate=true"
    );
    let rates = app
        .api(&admin, Method::GET, &uri, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        rates["series"][0]["points"][0],
        json!([t + 10, 100.0]),
        "{rates}"
    );

    let uri = format!("/api/v1/metrics/query?metric=cpu.busy&{range}&step=60&agg=max");
    let max = app
        .api(&admin, Method::GET, &uri, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(max["resolution"], "1m");
    assert_eq!(max["series"][0]["points"], json!([[t, 50.0]]), "{max}");
}

#[tokio::test]
async fn bad_pushes_and_queries_get_4xx_naming_the_sample_field_or_limit() {
    let app = TestApp::with(|c| c.metrics.series_per_endpoint = 2).await;
    let admin = app.admin_token().await;
    let t = now();
    let bad = json!([
        sample("wts-n1", "cpu.busy", "", t, 1.0, "GAUGE"),
        sample("wts-n1", "cpu busy", "", t, 1.0, "GAUGE"),
    ]);
    let refused = |method: Method, uri: String, body: Value, status: StatusCode| {
        let (app, admin) = (&app, &admin);
        async move {
            let reply = app
                .api(admin, method, &uri, body)
                .await
                .expect(status)
                .json();
            reply["error"]["message"].as_str().unwrap().to_string()
        }
    };
    let push = |body: Value, status| refused(Method::POST, PUSH.into(), body, status);
    let message = push(bad, StatusCode::BAD_REQUEST).await;
    assert!(message.starts_with("sample 1: metric:"), "{message}");
    let future = json!([sample("wts-n1", "cpu.busy", "", t + 3600, 1.0, "GAUGE")]);
    let message = push(future, StatusCode::BAD_REQUEST).await;
    assert!(message.starts_with("sample 0: timestamp:"), "{message}");
    let zero_step = json!([{"endpoint": "wts-n1", "metric": "m", "value": 1.0, "timestamp": t, "counterType": "GAUGE", "step": 0}]);
    let message = push(zero_step, StatusCode::BAD_REQUEST).await;
    assert!(message.starts_with("sample 0: step:"), "{message}");
    // Nothing of the bad batches was stored.
    let uri = "/api/v1/metrics/query?metric=cpu.busy";
    app.api(&admin, Method::GET, uri, Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);

    let flood: Vec<Value> = (0..3)
        .map(|i| sample("wts-n1", "disk.util", &format!("dev=d{i}"), t, 1.0, "GAUGE"))
        .collect();
    let message = push(Value::Array(flood), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(message.contains("more than 2 series"), "{message}");

    let one = json!([sample("wts-n1", "cpu.busy", "", t, 1.0, "GAUGE")]);
    app.api(&admin, Method::POST, PUSH, one)
        .await
        .expect(StatusCode::OK);
    let query = |range: i64, step: i64| {
        let uri = format!(
            "/api/v1/metrics/query?metric=cpu.busy&start={}&end={t}&step={step}",
            t - range
        );
        refused(Method::GET, uri, Value::Null, StatusCode::BAD_REQUEST)
    };
    let message = query(86_400, 1).await;
    assert!(message.contains("more than 11000"), "{message}");
    let message = query(100 * 86_400, 86_400).await;
    assert!(message.contains("kept 2160h"), "{message}");
    let bad_agg = "/api/v1/metrics/query?metric=cpu.busy&agg=median";
    app.api(&admin, Method::GET, bad_agg, Value::Null)
        .await
        .expect(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn project_readers_query_only_their_projects_series() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, _) = app.shop_with_guest_and_developer(&admin).await;
    app.create_project(&admin, "other", false).await;
    let t = now();
    let batch = json!([
        sample(
            "wts-n1",
            "container.mem.working_set",
            "project=shop,pod=web",
            t,
            5.0,
            "GAUGE"
        ),
        sample(
            "wts-n1",
            "container.mem.working_set",
            "project=other,pod=db",
            t,
            7.0,
            "GAUGE"
        ),
    ]);
    // Pushing is for agents (administrators) only.
    app.api(&guest, Method::POST, PUSH, batch.clone())
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&admin, Method::POST, PUSH, batch)
        .await
        .expect(StatusCode::OK);
    let query = |tags: &str| {
        format!("/api/v1/metrics/query?metric=container.mem.working_set&tags={tags}&step=10")
    };
    let own = app
        .api(&guest, Method::GET, &query("project=shop"), Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(own["series"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["series"][0]["labels"]["pod"], "web");
    app.api(&guest, Method::GET, &query(""), Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&guest, Method::GET, &query("project!=shop"), Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&guest, Method::GET, &query("project=other"), Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    let all = app
        .api(&admin, Method::GET, &query(""), Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(all["series"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_server_restart_keeps_the_downsampled_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.admin_password = Some(ADMIN_PASSWORD.into());
    config.gc_interval = None;
    let t = now() - now() % 60 - 120;
    let serving = serve(config.clone(), ADMIN_PASSWORD).await;
    let client = reqwest::Client::new();
    let batch: Vec<Value> = (0..12)
        .map(|i| sample("wts-n1", "load.1min", "", t + i * 10, i as f64, "GAUGE"))
        .collect();
    let pushed = client
        .post(format!("{}{PUSH}", serving.url))
        .bearer_auth(&serving.token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::OK);
    serving.stop.send(()).unwrap();
    serving.running.await.unwrap().unwrap();

    let app = wharf_server::App::open(&config).await.unwrap();
    let restarted = TestApp { dir, app };
    let admin = restarted.admin_token().await;
    let uri = format!(
        "/api/v1/metrics/query?metric=load.1min&start={t}&end={}&step=60",
        t + 119
    );
    let answer = restarted
        .api(&admin, Method::GET, &uri, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(answer["resolution"], "1m");
    assert_eq!(
        answer["series"][0]["points"],
        json!([[t, 2.5], [t + 60, 8.5]]),
        "{answer}"
    );
}
