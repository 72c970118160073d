//! Alerts through the CLI against a real server evaluating every 300 ms:
//! a receiver added with its secret on stdin (never shown again), a rule
//! on a pod's CPU, samples pushed as an agent pushes them firing it, the
//! signed notification received, `alert list`, a silence holding the next
//! firing back until `silence expire`, `alert history` and the receiver's
//! delivery log.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::api::ApiClient;
use common::cli::{fails, ok, run as wharf};
use common::server::{ADMIN_PASSWORD, admin_credentials};
use common::webhook::{SILENCE_CPU_HIGH, Webhook, cpu_rule_args};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "cli-hook-secret";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One busy core over the last ten seconds, as a container's counter.
async fn burn(api: &ApiClient, from: f64) {
    let t = now();
    let samples: Vec<Value> = (0..=10)
        .map(|i| {
            json!({"endpoint": "wmc-cli", "metric": "container.cpu.usage_seconds",
                "tags": "project=shop,pod=burner,container=main", "value": from + i as f64,
                "timestamp": t - 10 + i, "counterType": "COUNTER", "step": 1})
        })
        .collect();
    api.expect(
        Method::POST,
        "/api/v1/nodes/wmc-cli/metrics",
        Some(Value::Array(samples)),
        StatusCode::OK,
    )
    .await;
}

/// `alert list` once it contains `text`.
fn listed_with(home: &std::path::Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = ok(wharf(home, &["alert", "list", "-p", "shop"], ""));
        if listed.contains(text) {
            return listed;
        }
        assert!(Instant::now() < deadline, "no {text}: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_are_ruled_silenced_and_delivered_through_the_cli() {
    let server = TestServer::start_with(&["--alert-eval-interval", "300ms"]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    ok(wharf(
        home,
        &["login", &server.url(), "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    ));
    ok(wharf(home, &["project", "create", "shop"], ""));
    let api = ApiClient::login(&server.url(), &admin_credentials())
        .await
        .unwrap();
    let hook = Webhook::start("127.0.0.1:0", SECRET);
    let receiver = hook.receiver_args();
    ok(wharf(home, &receiver, &format!("{SECRET}\n")));
    let listed = ok(wharf(
        home,
        &["alert", "receiver", "list", "-p", "shop", "-o", "json"],
        "",
    ));
    assert!(
        listed.contains(&hook.url) && !listed.contains(SECRET),
        "{listed}"
    );

    let err = fails(wharf(
        home,
        &[
            "alert",
            "rule",
            "add",
            "x",
            "--metric",
            "m",
            "--condition",
            "0.5",
            "-p",
            "shop",
        ],
        "",
    ));
    assert!(err.contains("operator"), "{err}");
    let rule = cpu_rule_args("5s", ">0.5");
    ok(wharf(home, &rule, ""));
    let rules = ok(wharf(home, &["alert", "rule", "list", "-p", "shop"], ""));
    assert!(
        rules.contains("sum(rate(container.cpu.usage_seconds{}[5s])) by pod")
            && rules.contains("> 0.5"),
        "{rules}"
    );

    burn(&api, 0.0).await;
    let firing = hook
        .next(Duration::from_secs(20))
        .expect("a firing notification");
    assert_eq!(firing["status"], "firing", "{firing}");
    assert_eq!(firing["alerts"][0]["labels"]["pod"], "burner");
    let listed = listed_with(home, "firing");
    assert!(listed.contains("pod=burner"), "{listed}");
    let resolved = hook
        .next(Duration::from_secs(20))
        .expect("a resolved notification");
    assert_eq!(resolved["status"], "resolved", "{resolved}");

    let mut add = SILENCE_CPU_HIGH.to_vec();
    add.extend(["--comment", "load test", "-o", "json"]);
    let silenced = ok(wharf(home, &add, ""));
    let silence: Value = serde_json::from_str(&silenced).unwrap();
    let name = silence["metadata"]["name"].as_str().unwrap();
    let silences = ok(wharf(home, &["alert", "silence", "list", "-p", "shop"], ""));
    assert!(
        silences.contains(name) && silences.contains("active") && silences.contains("admin"),
        "{silences}"
    );
    burn(&api, 100.0).await;
    listed_with(home, name);
    assert!(hook.next(Duration::from_millis(700)).is_none(), "silenced");
    burn(&api, 200.0).await;
    ok(wharf(
        home,
        &["alert", "silence", "expire", name, "-p", "shop"],
        "",
    ));
    let told = hook
        .next(Duration::from_secs(20))
        .expect("told once the silence ended");
    assert_eq!(told["status"], "firing");
    let silences = ok(wharf(home, &["alert", "silence", "list", "-p", "shop"], ""));
    assert!(silences.contains("expired"), "{silences}");

    let history = ok(wharf(
        home,
        &["alert", "history", "-p", "shop", "--rule", "cpu-high"],
        "",
    ));
    assert!(
        history.contains("- -> firing") && history.contains("firing -> resolved"),
        "{history}"
    );
    let log = ok(wharf(
        home,
        &["alert", "receiver", "deliveries", "ops", "-p", "shop"],
        "",
    ));
    assert_eq!(log.matches("delivered").count(), 3, "{log}");
    ok(wharf(
        home,
        &["alert", "rule", "delete", "cpu-high", "-p", "shop"],
        "",
    ));
    ok(wharf(
        home,
        &["alert", "receiver", "delete", "ops", "-p", "shop"],
        "",
    ));
    let err = fails(wharf(
        home,
        &["alert", "rule", "list", "--cluster", "-p", "shop"],
        "",
    ));
    assert!(err.contains("cannot be used with"), "{err}");
}
