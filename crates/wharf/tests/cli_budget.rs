//! Cost budgets end to end: the cost recorder, fed minutes by a test
//! clock, records the last two hours of a priced node running a pod of
//! project shop and one of bank; a real server starts on that history and
//! evaluates budgets every 300 ms. Shop's budget (applied as YAML) is
//! small enough that the month's forecast reaches 80% while the spend is
//! far below: one Warning event, one signed webhook notification naming
//! the project, the budget, the forecast and the threshold, and no second
//! one. A maintainer of bank neither reads nor sets shop's budget.
//!
//! The server's clock is the real one, so the history ends at the minute
//! the test starts, inside the current month.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::TestServer;
use common::api::ApiClient;
use common::cli::{fails, log_in_as_admin, ok, run as wharf};
use common::server::admin_credentials;
use common::webhook::Webhook;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_api::{BudgetPeriod, Node, Pod, budget_forecast, micros_text};
use wharf_control::Objects;
use wharf_control::cost::{CostHistory, CostRecorder};
use wharf_store::{RedbStore, RedbStoreOptions};

const SECRET: &str = "budget-hook-secret";
/// Minutes of history recorded (fewer at the very start of a month).
const MINUTES: u64 = 120;

fn now_minute() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_secs() / 60
}

/// Waits, in the rare case the month has just begun or is about to end,
/// until there are ten minutes of this month behind and plenty ahead.
fn month_with_room() -> u64 {
    loop {
        let minute = now_minute();
        let (start, end) = BudgetPeriod::Monthly.bounds(minute);
        if minute >= start + 10 && end - minute >= 30 {
            return minute;
        }
        std::thread::sleep(Duration::from_secs(20));
    }
}

fn node() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "wrg-node", "labels": {"wharf.io/pool": "old"}},
        "spec": {"costPerHour": 0.6},
        "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}}
    }))
    .unwrap()
}

fn pod(project: &str, deployment: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{deployment}-1"), "project": project,
            "ownerReferences": [{"kind": "Deployment", "name": deployment, "uid": "u"}]},
        "spec": {"nodeName": "wrg-node", "containers": [{"name": "main", "image": "i",
            "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

/// Records the minutes `[from, until)` into `dir/cost` with web (shop)
/// and db (bank) on the node throughout; returns the history files.
async fn record_history(dir: &Path, from: u64, until: u64) -> Vec<(String, Vec<u8>)> {
    let store = RedbStore::open(&dir.join("state.redb"), RedbStoreOptions::default()).unwrap();
    let objects = Objects::new(Arc::new(store));
    objects.create(node()).await.unwrap();
    objects.create(pod("shop", "web", "1")).await.unwrap();
    objects.create(pod("bank", "db", "2")).await.unwrap();
    let now = Arc::new(AtomicU64::new(0));
    let clock = now.clone();
    let history = CostHistory::open(&dir.join("cost")).unwrap();
    let recorder = CostRecorder::new(objects, Default::default(), history)
        .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    for minute in from..until {
        now.store((minute + 1) * 60_000 + 500, Ordering::SeqCst);
        assert_eq!(recorder.record_closed_minute().await.unwrap(), Some(minute));
    }
    std::fs::read_dir(dir.join("cost"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = format!("cost/{}", e.file_name().to_string_lossy());
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Shop's spend in the recorded minutes, as the report counts it.
fn shop_spend(dir: &Path, from: u64, until: u64) -> u64 {
    let history = CostHistory::open(&dir.join("cost")).unwrap();
    let window = history.read(from, until).unwrap();
    window
        .rows
        .iter()
        .filter(|(key, _)| key.project == "shop")
        .map(|(_, m)| m.used + m.idle)
        .sum()
}

async fn expect_ok(api: &ApiClient, method: Method, path: &str, body: Value) {
    let (status, reply) = api.call(method, path, Some(body)).await;
    assert!(status.is_success(), "{path}: {reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_warns_once_when_the_forecast_reaches_a_threshold() {
    let minute = month_with_room();
    let (period_start, period_end) = BudgetPeriod::Monthly.bounds(minute);
    let from = period_start.max(minute - MINUTES);
    let recorded = tempfile::tempdir().unwrap();
    let files = record_history(recorded.path(), from, minute).await;
    let spent = shop_spend(recorded.path(), from, minute);
    assert!(spent > 0);
    // Every recorded minute is shop's rate: the forecast extrapolates it
    // over the rest of the month. A budget of 10/9 of it puts the
    // forecast at 90%, the spend far below 80%.
    let forecast = budget_forecast(spent, spent, minute - from, period_end - minute);
    let amount = (forecast as f64 / 0.9 / 1e6 * 100.0).round() / 100.0;
    assert!((spent as f64) < 0.7 * amount * 1e6, "{spent} of {amount}");

    let mut options = TestServer::options().args(&["--alert-eval-interval", "300ms"]);
    for (name, bytes) in files {
        options = options.data_file(&name, bytes);
    }
    let server = options.start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    log_in_as_admin(home, &server.url());
    let api = ApiClient::login(&server.url(), &admin_credentials())
        .await
        .unwrap();
    for project in ["shop", "bank"] {
        ok(wharf(home, &["project", "create", project], ""));
    }
    let hook = Webhook::start("127.0.0.1:0", SECRET);
    ok(wharf(home, &hook.receiver_args(), &format!("{SECRET}\n")));

    // Bad budgets are refused with the field named, and nothing is kept.
    let err = fails(wharf(
        home,
        &["cost", "budget", "set", "shop", "--amount", "0"],
        "",
    ));
    assert!(err.contains("spec.amount"), "{err}");
    let err = fails(wharf(
        home,
        &[
            "cost",
            "budget",
            "set",
            "shop",
            "--amount",
            "5",
            "--threshold",
            "0",
        ],
        "",
    ));
    assert!(err.contains("spec.thresholds"), "{err}");
    let err = fails(wharf(
        home,
        &["cost", "budget", "set", "nosuch", "--amount", "5"],
        "",
    ));
    assert!(err.contains("nosuch"), "{err}");
    let manifest = "apiVersion: wharf.io/v1\nkind: CostBudget\nspec: {project: shop, amount: -5}\n";
    let bad = home.join("bad.yaml");
    std::fs::write(&bad, manifest).unwrap();
    let err = fails(wharf(home, &["apply", "-f", bad.to_str().unwrap()], ""));
    assert!(err.contains("spec.amount"), "{err}");
    let (_, listed) = api.call(Method::GET, "/api/v1/cost/budgets", None).await;
    assert_eq!(listed["items"], json!([]), "{listed}");

    // Bank's by the CLI, far above its forecast; shop's as YAML.
    ok(wharf(
        home,
        &[
            "cost", "budget", "set", "bank", "--amount", "1000000", "--period", "monthly",
        ],
        "",
    ));
    let yaml = format!(
        "apiVersion: wharf.io/v1\nkind: CostBudget\nmetadata: {{name: shop}}\n\
         spec: {{project: shop, amount: {amount}, period: monthly, thresholds: [100, 80]}}\n"
    );
    let file = home.join("budget.yaml");
    std::fs::write(&file, yaml).unwrap();
    let applied = ok(wharf(home, &["apply", "-f", file.to_str().unwrap()], ""));
    assert!(applied.contains("costbudget"), "{applied}");

    let notice = hook
        .next(Duration::from_secs(20))
        .expect("a budget notification");
    assert_eq!(notice["status"], "firing", "{notice}");
    assert_eq!(notice["project"], "shop", "{notice}");
    assert_eq!(notice["rule"], "CostBudget", "{notice}");
    let labels = &notice["alerts"][0]["labels"];
    assert_eq!(labels["alertname"], "CostBudget", "{notice}");
    assert_eq!(labels["budget"], "shop", "{notice}");
    assert_eq!(labels["measure"], "forecast", "{notice}");
    assert_eq!(labels["threshold"], "80", "{notice}");
    let annotations = &notice["annotations"];
    assert_eq!(annotations["spent"], micros_text(spent), "{notice}");
    assert_eq!(annotations["threshold"], "80", "{notice}");
    let told: f64 = annotations["forecast"].as_str().unwrap().parse().unwrap();
    assert!(
        told >= 0.8 * amount && told < amount,
        "forecast {told} of {amount}: {notice}"
    );
    let summary = annotations["summary"].as_str().unwrap();
    assert!(summary.contains("reaches 80%"), "{summary}");
    // Evaluations go on; the threshold is not told again.
    assert!(
        hook.next(Duration::from_secs(3)).is_none(),
        "told once per threshold and period"
    );

    let (status, events) = api
        .call(Method::GET, "/api/v1/projects/shop/events", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let warnings: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "BudgetForecastExceeded")
        .collect();
    assert_eq!(warnings.len(), 1, "{events}");
    assert_eq!(warnings[0]["type"], "Warning");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("reaches 80%"),
        "{events}"
    );

    let listed = ok(wharf(home, &["cost", "budget", "list"], ""));
    let shop = listed.lines().find(|l| l.starts_with("shop")).unwrap();
    assert!(
        shop.contains(&micros_text(spent)) && shop.contains("forecast >= 80%"),
        "{listed}"
    );
    assert!(listed.contains("bank") && listed.contains("ok"), "{listed}");

    // A maintainer of bank sees bank's budget only, and sets none.
    expect_ok(
        &api,
        Method::POST,
        "/api/v1/users",
        json!({"name": "bob", "password": "Bob-pass-1"}),
    )
    .await;
    expect_ok(
        &api,
        Method::PUT,
        "/api/v1/projects/bank/members/bob",
        json!({"role": "maintainer"}),
    )
    .await;
    let bob = tempfile::tempdir().unwrap();
    let bob = bob.path();
    ok(wharf(
        bob,
        &["login", &server.url(), "-u", "bob", "--password-stdin"],
        "Bob-pass-1\n",
    ));
    let seen = ok(wharf(bob, &["cost", "budget", "list", "-o", "json"], ""));
    let seen: Value = serde_json::from_str(&seen).unwrap();
    let projects: Vec<&str> = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["spec"]["project"].as_str().unwrap())
        .collect();
    assert_eq!(projects, ["bank"], "{seen}");
    let bob_api = ApiClient::login(
        &server.url(),
        &common::registry::Credentials::new("bob", "Bob-pass-1"),
    )
    .await
    .unwrap();
    let (status, reply) = bob_api
        .call(Method::GET, "/api/v1/cost/budgets/shop", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    let (status, _) = bob_api
        .call(Method::GET, "/api/v1/cost/budgets/bank", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let err = fails(wharf(
        bob,
        &["cost", "budget", "set", "shop", "--amount", "1"],
        "",
    ));
    assert!(err.contains("clusterAdmin"), "{err}");
    let err = fails(wharf(bob, &["cost", "budget", "delete", "shop"], ""));
    assert!(err.contains("clusterAdmin"), "{err}");
    let kept: Value = api
        .call(Method::GET, "/api/v1/cost/budgets/shop", None)
        .await
        .1;
    assert_eq!(kept["spec"]["amount"], json!(amount), "{kept}");

    ok(wharf(home, &["cost", "budget", "delete", "bank"], ""));
    let listed = ok(wharf(home, &["cost", "budget", "list"], ""));
    assert!(!listed.contains("bank"), "{listed}");
    // A project's budget goes with it.
    let (status, reply) = api
        .call(Method::DELETE, "/api/v1/projects/shop", None)
        .await;
    assert!(status.is_success(), "{reply}");
    let (status, reply) = api
        .call(Method::GET, "/api/v1/cost/budgets/shop", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
}
