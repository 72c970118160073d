//! Autoscalers through the CLI against a real server synced every second:
//! `autoscale` creates (and then updates) the HPA named like the
//! deployment, `get hpa` shows it as kubectl does, `describe hpa` shows
//! the controller's conditions (no metrics yet: no node runs the pods; a
//! missing target), and `delete hpa` removes it.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::{fails, ok, run as wharf};
use common::server::ADMIN_PASSWORD;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web:1, resources: {requests: {cpu: 100m}}}]
";

const GHOST: &str = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ghost, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}
  maxReplicas: 2
";

/// `describe hpa NAME` once it contains `text` (the controller syncs
/// every second).
fn described_with(home: &std::path::Path, name: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let described = ok(wharf(home, &["describe", "hpa", name, "-p", "shop"], ""));
        if described.contains(text) {
            return described;
        }
        assert!(Instant::now() < deadline, "no {text}: {described}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn autoscalers_are_made_shown_and_deleted_through_the_cli() {
    let server = TestServer::start_with(&["--hpa-sync-period", "1s"]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    ok(wharf(
        home,
        &["login", &server.url(), "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    ));
    ok(wharf(home, &["project", "create", "shop"], ""));
    let err = fails(wharf(
        home,
        &["autoscale", "deployment", "web", "--max", "3", "-p", "shop"],
        "",
    ));
    assert!(err.contains("deployment.apps/web"), "{err}");
    ok(wharf(home, &["apply", "-f", "-"], DEPLOYMENT));

    let autoscale = [
        "autoscale",
        "deployment",
        "web",
        "--min",
        "1",
        "--max",
        "3",
        "--cpu-percent",
        "50",
        "-p",
        "shop",
    ];
    let out = ok(wharf(home, &autoscale, ""));
    assert!(
        out.contains("horizontalpodautoscaler.autoscaling/web autoscaled"),
        "{out}"
    );
    let table = ok(wharf(home, &["get", "hpa", "-p", "shop"], ""));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["web", "Deployment/web", "cpu:", "<unknown>/50%", "1"],
        "{table}"
    );
    assert_eq!(row[5], "3", "{table}");

    // Again with other bounds: the same autoscaler, updated.
    let mut wider = autoscale;
    wider[6] = "5";
    ok(wharf(home, &wider, ""));
    let one = ok(wharf(
        home,
        &["get", "hpa", "web", "-p", "shop", "-o", "json"],
        "",
    ));
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["spec"]["maxReplicas"], 5, "{one}");
    assert_eq!(
        one["metadata"]["ownerReferences"][0]["name"], "web",
        "{one}"
    );

    // No node runs the pod, so there is nothing to measure.
    let described = described_with(home, "web", "FailedGetResourceMetric");
    for line in [
        "Reference:",
        "Deployment/web",
        "resource cpu on pods (as a percentage of request):",
        "<unknown> / 50%",
        "Min replicas:",
        "Max replicas:",
        "ScalingActive:",
    ] {
        assert!(described.contains(line), "{line}: {described}");
    }
    // An applied autoscaler of a deployment that does not exist says so.
    let out = ok(wharf(home, &["apply", "-f", "-"], GHOST));
    assert!(
        out.contains("horizontalpodautoscaler.autoscaling/ghost created"),
        "{out}"
    );
    let described = described_with(home, "ghost", "FailedGetScale");
    assert!(
        described.contains("deployment ghost not found"),
        "{described}"
    );

    let out = ok(wharf(home, &["delete", "hpa", "web", "-p", "shop"], ""));
    assert!(
        out.contains("horizontalpodautoscaler.autoscaling/web deleted"),
        "{out}"
    );
    fails(wharf(home, &["get", "hpa", "web", "-p", "shop"], ""));
    // The deployment keeps its replicas.
    let web = ok(wharf(
        home,
        &["get", "deploy", "web", "-p", "shop", "-o", "json"],
        "",
    ));
    let web: serde_json::Value = serde_json::from_str(&web).unwrap();
    assert_eq!(web["spec"]["replicas"], 1);
}
