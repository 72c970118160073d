//! Cost accounting end to end: the cost recorder, fed minutes by a test
//! clock, records three hours of two priced nodes (0.37 and 1.13 an hour)
//! with pods started and stopped at known minutes; a real server then
//! serves that history and `wharf cost report` shows it in table, JSON and
//! CSV. Every grouping reconciles to the cent with the nodes' cost
//! (3 h x 1.50 = 4.50), and a project member sees only their project.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::TestServer;
use common::api::ApiClient;
use common::cli::{log_in_as_admin, ok, run as wharf};
use common::server::admin_credentials;
use http::Method;
use serde_json::{Value, json};
use wharf_api::{Node, Pod, rfc3339};
use wharf_control::Objects;
use wharf_control::cost::{CostHistory, CostRecorder};
use wharf_store::{RedbStore, RedbStoreOptions};

/// 2026-01-01T00:00:00Z in unix minutes.
const START: u64 = 29_454_720;
/// Minutes recorded.
const MINUTES: u64 = 180;

fn node(name: &str, pool: &str, class: &str, price: f64) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"wharf.io/pool": pool,
            "wharf.io/machine-class": class, "wharf.io/cluster": "dc1"}},
        "spec": {"costPerHour": price},
        "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}}
    }))
    .unwrap()
}

fn pod(project: &str, deployment: &str, node: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{deployment}-1"), "project": project,
            "ownerReferences": [{"kind": "Deployment", "name": deployment, "uid": "u"}]},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "i",
            "resources": {"requests": {"cpu": cpu, "memory": "2Gi"}}}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

/// Records `MINUTES` minutes from `START` into `dir/cost`: web (shop) on
/// the old node for minutes 0-89, db (bank) on the new one for 30-149.
async fn record_history(dir: &Path) {
    let store = RedbStore::open(&dir.join("state.redb"), RedbStoreOptions::default()).unwrap();
    let objects = Objects::new(Arc::new(store));
    objects
        .create(node("wrc-old", "old", "legacy-12c16g", 0.37))
        .await
        .unwrap();
    objects
        .create(node("wrc-new", "new", "std-32c32g", 1.13))
        .await
        .unwrap();
    let now = Arc::new(AtomicU64::new(0));
    let clock = now.clone();
    let history = CostHistory::open(&dir.join("cost")).unwrap();
    let recorder = CostRecorder::new(objects.clone(), Default::default(), history)
        .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    for minute in 0..MINUTES {
        match minute {
            0 => drop(objects.create(pod("shop", "web", "wrc-old", "1")).await),
            30 => drop(objects.create(pod("bank", "db", "wrc-new", "2")).await),
            90 => drop(objects.delete::<Pod>(Some("shop"), "web-1", None).await),
            150 => drop(objects.delete::<Pod>(Some("bank"), "db-1", None).await),
            _ => {}
        }
        // Just past the end of `minute`: that minute is the one closed.
        now.store((START + minute + 1) * 60_000 + 500, Ordering::SeqCst);
        let recorded = recorder.record_closed_minute().await.unwrap();
        assert_eq!(recorded, Some(START + minute));
    }
}

/// Copies the recorded history into the server's, each file whole (the
/// server's own recorder reads the directory meanwhile).
fn install_history(from: &Path, server: &TestServer) {
    let into = server.data_dir().join("cost");
    for entry in std::fs::read_dir(from.join("cost")).unwrap() {
        let entry = entry.unwrap();
        let partial = into.join(format!("{}.part", entry.file_name().to_string_lossy()));
        std::fs::copy(entry.path(), &partial).unwrap();
        std::fs::rename(&partial, into.join(entry.file_name())).unwrap();
    }
}

fn cents(text: &str) -> u64 {
    let (units, cents) = text.split_once('.').unwrap();
    units.parse::<u64>().unwrap() * 100 + cents.parse::<u64>().unwrap()
}

fn report(home: &Path, by: &str, format: &str) -> String {
    let since = rfc3339(START * 60_000);
    let until = rfc3339((START + MINUTES) * 60_000);
    ok(wharf(
        home,
        &[
            "cost", "report", "--by", by, "--since", &since, "--until", &until, "-o", format,
        ],
        "",
    ))
}

/// The nodes' cost for the three hours: (0.37 + 1.13) x 3.
const NODE_COST_CENTS: u64 = 450;

/// The groups of a JSON report's rows, in order.
fn groups(report: &Value) -> Vec<&str> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["group"].as_str().unwrap())
        .collect()
}

fn check_json(home: &Path, by: &str) -> Value {
    let answer: Value = serde_json::from_str(&report(home, by, "json")).unwrap();
    assert_eq!(answer["minutesRecorded"], MINUTES, "{answer}");
    let rows = answer["rows"].as_array().unwrap();
    let sum: u64 = rows
        .iter()
        .map(|r| (r["total"].as_f64().unwrap() * 100.0).round() as u64)
        .sum();
    assert_eq!(sum, NODE_COST_CENTS, "{by}: {answer}");
    assert_eq!(answer["total"]["total"], 4.5, "{by}");
    let micros: u64 = rows
        .iter()
        .map(|r| {
            let m = &r["micros"];
            m["used"].as_u64().unwrap()
                + m["idle"].as_u64().unwrap()
                + m["unallocated"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(micros, 4_500_000, "{by}: the micro-units are exact");
    answer
}

fn check_csv(home: &Path, by: &str) {
    let csv = report(home, by, "csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("group,used,idle,unallocated,total"));
    let mut sum = 0;
    for line in lines {
        let fields: Vec<&str> = line.rsplitn(5, ',').collect();
        let parts: u64 = fields[1..4].iter().map(|f| cents(f)).sum();
        assert_eq!(parts, cents(fields[0]), "{line}");
        sum += cents(fields[0]);
    }
    assert_eq!(sum, NODE_COST_CENTS, "{by}: {csv}");
}

fn check_table(home: &Path, by: &str) -> String {
    let table = report(home, by, "table");
    let mut sum = 0;
    let mut total = None;
    for line in table.lines().skip(2) {
        let figure = cents(line.split_whitespace().last().unwrap());
        if line.starts_with("TOTAL") {
            total = Some(figure);
        } else {
            sum += figure;
        }
    }
    assert_eq!(total, Some(NODE_COST_CENTS), "{table}");
    assert_eq!(sum, NODE_COST_CENTS, "{table}");
    table
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cost_report_reconciles_to_the_cent_in_every_format() {
    let recorded = tempfile::tempdir().unwrap();
    record_history(recorded.path()).await;
    let server = TestServer::start();
    install_history(recorded.path(), &server);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    log_in_as_admin(home, &server.url());
    for by in ["project", "pool", "cluster", "deployment", "class"] {
        check_json(home, by);
        check_csv(home, by);
        check_table(home, by);
    }
    // Web: 1 of 4 cores and 2 of 8 GiB of the 0.37 node for 90 minutes,
    // all requested and none used: idle. The weights make a core 15 and
    // a GiB 2, so the node's 76 weight units cost 0.37 an hour; web held
    // 15 + 4 = 19 of them: 0.37 x 19/76 x 1.5 h = 0.13875, less the
    // micro-units each minute's division rounds away (they stay with the
    // node, as unallocated).
    let projects = check_json(home, "project");
    assert_eq!(groups(&projects), ["bank", "shop", "(unallocated)"]);
    let shop = &projects["rows"][1];
    assert_eq!(shop["micros"]["idle"], 138_660, "{shop}");
    assert_eq!(shop["micros"]["used"], 0, "{shop}");
    let table = check_table(home, "pool");
    assert!(table.contains("new ") && table.contains("old "), "{table}");
    assert!(table.contains("(180 minutes recorded)"), "{table}");

    // A member of shop reads shop's row only: no other project, no
    // unallocated cost.
    let api = ApiClient::login(&server.url(), &admin_credentials())
        .await
        .unwrap();
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/users",
            json!({"name": "alice", "password": "Alice-pass-1"}),
        ),
        (Method::POST, "/api/v1/projects", json!({"name": "shop"})),
        (
            Method::PUT,
            "/api/v1/projects/shop/members/alice",
            json!({"role": "guest"}),
        ),
    ] {
        let (status, reply) = api.call(method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {reply}");
    }
    let alice = tempfile::tempdir().unwrap();
    ok(wharf(
        alice.path(),
        &["login", &server.url(), "-u", "alice", "--password-stdin"],
        "Alice-pass-1\n",
    ));
    let own: Value = serde_json::from_str(&report(alice.path(), "project", "json")).unwrap();
    assert_eq!(groups(&own), ["shop"], "{own}");
}
