//! Alerts over the API: rules read by a project's members and written by
//! maintainers, receivers whose secret never comes back, audited; and on a
//! running server, samples pushed like an agent's firing a rule, a local
//! webhook receiving the signed notification (after one failed attempt,
//! retried), the resolution when the data stops, and a silence holding a
//! notification back until it is expired.

mod common;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wharf_server::{RetryPolicy, SIGNATURE_HEADER, ServerConfig, webhook_signature};

const SECRET: &str = "hook-secret-1";

fn rule() -> Value {
    json!({
        "metadata": {"name": "cpu-high", "labels": {"team": "web"}},
        "spec": {
            "metric": "container.cpu.usage_seconds", "rate": true, "aggregation": "sum",
            "by": ["pod"], "windowSeconds": 5, "op": ">", "threshold": 0.5,
            "severity": "critical", "labels": {"team": "web"},
            "annotations": {"summary": "a pod burns more than half a core"}
        }
    })
}

#[tokio::test]
async fn rules_and_receivers_follow_the_roles_and_keep_secrets() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;
    app.create_user(&admin, "mia", "mia-password-1").await;
    app.add_member(&admin, "shop", "mia", "maintainer").await;
    let maintainer = app.api_login("mia", "mia-password-1").await;
    let rules = "/api/v1/projects/shop/alerts/rules";

    app.api(&developer, Method::POST, rules, rule())
        .await
        .expect(StatusCode::FORBIDDEN);
    let created = app
        .api(&maintainer, Method::POST, rules, rule())
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(created["metadata"]["project"], "shop", "{created}");
    let listed = app
        .api(&guest, Method::GET, rules, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(listed[0]["spec"]["threshold"], 0.5);
    // The cluster's rules are the administrators'; a project's are not among them.
    app.api(
        &maintainer,
        Method::GET,
        "/api/v1/alerts/rules",
        Value::Null,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let cluster = app
        .api(&admin, Method::GET, "/api/v1/alerts/rules", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(cluster, json!([]));
    let mut bad = rule();
    bad["spec"]["tags"] = json!("nokey");
    let refused = app
        .api(&maintainer, Method::POST, rules, bad)
        .await
        .expect(StatusCode::BAD_REQUEST)
        .json();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.tags")
    );

    let receivers = "/api/v1/projects/shop/alerts/receivers";
    let receiver = json!({"metadata": {"name": "ops"},
        "spec": {"url": "http://127.0.0.1:9/hook", "secret": SECRET}});
    app.api(&developer, Method::GET, receivers, Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    let made = app
        .api(&maintainer, Method::POST, receivers, receiver)
        .await
        .expect(StatusCode::CREATED);
    let listed = app
        .api(&maintainer, Method::GET, receivers, Value::Null)
        .await
        .expect(StatusCode::OK);
    for text in [made.text(), listed.text()] {
        assert!(!text.contains("secret") && !text.contains(SECRET), "{text}");
    }

    let silence = json!({"matchers": {"alertname": "cpu-high"},
        "endsAt": now_ms() + 60_000, "comment": "deploying"});
    app.api(
        &guest,
        Method::POST,
        "/api/v1/projects/shop/alerts/silences",
        silence.clone(),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let made = app
        .api(
            &maintainer,
            Method::POST,
            "/api/v1/projects/shop/alerts/silences",
            silence,
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(made["spec"]["author"], "mia", "{made}");

    app.api(
        &maintainer,
        Method::DELETE,
        &format!("{rules}/cpu-high"),
        Value::Null,
    )
    .await
    .expect(StatusCode::OK);
    app.flush_audit().await;
    for action in [
        "alertrule.apply",
        "alertrule.delete",
        "alertreceiver.apply",
        "silence.create",
    ] {
        assert!(
            !app.audit_events(action).await.is_empty(),
            "{action} audited"
        );
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the test webhook received: signature header and body.
type Received = (String, Vec<u8>);

/// A webhook on a loopback port that fails its first request with a 503,
/// then records and accepts every request.
async fn webhook() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (sent, received) = mpsc::unbounded_channel();
    let failed_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook = move |State((sent, failed)): State<(
        mpsc::UnboundedSender<Received>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    )>,
                     headers: HeaderMap,
                     body: axum::body::Bytes| async move {
        if !failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return AxumStatus::SERVICE_UNAVAILABLE;
        }
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let _ = sent.send((signature, body.to_vec()));
        AxumStatus::OK
    };
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state((sent, failed_once));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

/// The next notification, its signature checked.
async fn next_notification(received: &mut mpsc::UnboundedReceiver<Received>) -> Value {
    let (signature, body) = tokio::time::timeout(Duration::from_secs(20), received.recv())
        .await
        .expect("a notification within 20 s")
        .unwrap();
    assert_eq!(signature, webhook_signature(SECRET.as_bytes(), &body));
    assert_ne!(signature, webhook_signature(b"another secret", &body));
    serde_json::from_slice(&body).unwrap()
}

/// Pushes a burning container's CPU counter, one sample a second over the
/// last `seconds`, one core busy.
async fn burn(client: &reqwest::Client, served: &Serving, seconds: u64, from: f64) {
    let now = now_ms() / 1000;
    let samples: Vec<Value> = (0..=seconds)
        .map(|i| {
            json!({"endpoint": "wmc-n1", "metric": "container.cpu.usage_seconds",
                "tags": "project=shop,pod=burner,container=main",
                "value": from + i as f64, "timestamp": now - seconds + i,
                "counterType": "COUNTER", "step": 1})
        })
        .collect();
    let reply = client
        .post(format!("{}/api/v1/nodes/wmc-n1/metrics", served.url))
        .bearer_auth(&served.token)
        .json(&samples)
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        StatusCode::OK,
        "{}",
        reply.text().await.unwrap()
    );
}

async fn call(
    client: &reqwest::Client,
    served: &Serving,
    method: Method,
    path: &str,
    body: Value,
) -> Value {
    let mut request = client
        .request(method, format!("{}{path}", served.url))
        .bearer_auth(&served.token);
    if !body.is_null() {
        request = request.json(&body);
    }
    let reply = request.send().await.unwrap();
    assert!(reply.status().is_success(), "{path}: {}", reply.status());
    reply.json().await.unwrap()
}

/// The rule's only alert, once `ready` says it is as wanted.
async fn wait_for_alert(
    client: &reqwest::Client,
    served: &Serving,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let path = "/api/v1/projects/shop/alerts/rules/cpu-high";
    for _ in 0..100 {
        let rule = call(client, served, Method::GET, path, Value::Null).await;
        if let Some(alert) = rule["status"]["alerts"].get(0).filter(|a| ready(a)) {
            return alert.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the alert never got as wanted");
}

#[tokio::test]
async fn pushed_samples_fire_a_signed_notification_that_resolves_and_a_silence_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.admin_password = Some(ADMIN_PASSWORD.into());
    config.gc_interval = None;
    config.alert_eval_interval = Duration::from_millis(300);
    config.alert_retry = RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
    };
    let served = serve(config, ADMIN_PASSWORD).await;
    let client = reqwest::Client::new();
    call(
        &client,
        &served,
        Method::POST,
        "/api/v1/projects",
        json!({"name": "shop"}),
    )
    .await;
    let (url, mut received) = webhook().await;
    let receiver = json!({"metadata": {"name": "ops"}, "spec": {"url": url, "secret": SECRET}});
    call(
        &client,
        &served,
        Method::POST,
        "/api/v1/projects/shop/alerts/receivers",
        receiver,
    )
    .await;
    call(
        &client,
        &served,
        Method::POST,
        "/api/v1/projects/shop/alerts/rules",
        rule(),
    )
    .await;

    burn(&client, &served, 10, 0.0).await;
    let firing = next_notification(&mut received).await;
    assert_eq!(firing["status"], "firing", "{firing}");
    assert_eq!(firing["rule"], "cpu-high");
    assert_eq!(firing["project"], "shop");
    assert_eq!(firing["groupLabels"], json!({"pod": "burner"}));
    assert_eq!(
        firing["annotations"]["summary"],
        "a pod burns more than half a core"
    );
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "cpu-high");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["team"], "web");
    assert!(
        (alert["value"].as_f64().unwrap() - 1.0).abs() < 0.01,
        "{alert}"
    );

    // No more samples: the window empties and the alert resolves.
    let resolved = next_notification(&mut received).await;
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["id"].as_str().map(str::len), Some(22));
    let log = call(
        &client,
        &served,
        Method::GET,
        "/api/v1/projects/shop/alerts/receivers/ops/deliveries",
        Value::Null,
    )
    .await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    let first = &log[1];
    assert_eq!(
        (first["state"].as_str(), first["attempts"].as_u64()),
        (Some("delivered"), Some(2)),
        "the first attempt got a 503 and was retried: {first}"
    );
    assert_eq!(first["status"], "firing");

    // Silenced: it fires, shows the silence, and nobody is told.
    let silence = json!({"matchers": {"alertname": "cpu-high", "pod": "burner"},
        "endsAt": now_ms() + 600_000, "comment": "load test"});
    let silence = call(
        &client,
        &served,
        Method::POST,
        "/api/v1/projects/shop/alerts/silences",
        silence,
    )
    .await;
    let name = silence["metadata"]["name"].as_str().unwrap().to_owned();
    burn(&client, &served, 10, 100.0).await;
    let alert = wait_for_alert(&client, &served, |a| a["state"] == "firing").await;
    assert_eq!(alert["silencedBy"], name.as_str(), "{alert}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        received.try_recv().is_err(),
        "a silenced alert is not notified"
    );
    // Expired while it still fires: the firing is told now.
    burn(&client, &served, 2, 200.0).await;
    call(
        &client,
        &served,
        Method::POST,
        &format!("/api/v1/projects/shop/alerts/silences/{name}/expire"),
        Value::Null,
    )
    .await;
    let told = next_notification(&mut received).await;
    assert_eq!(told["status"], "firing", "{told}");
    let rule = call(
        &client,
        &served,
        Method::GET,
        "/api/v1/projects/shop/alerts/rules/cpu-high",
        Value::Null,
    )
    .await;
    let history: Vec<&str> = rule["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["to"].as_str())
        .collect();
    assert_eq!(&history[..3], ["firing", "resolved", "firing"], "{rule}");
    let _ = served.stop.send(());
}
