//! Kubernetes YAML as kubectl writes it, through the CLI against a real
//! server: an exported manifest (`creationTimestamp: null`, bare-number
//! quantities, int-or-string fields) applies, reads back with Kubernetes'
//! names and kinds, and a `-p` that contradicts the manifest's namespace is
//! refused with nothing created.

mod common;

use common::TestServer;
use common::cli::{fails, ok, run as wharf};
use common::server::ADMIN_PASSWORD;
use serde_json::Value;

/// What `kubectl create ... --dry-run=client -o yaml` and `kubectl get -o
/// yaml` write, with Kubernetes' own forms of numbers and ports.
const EXPORTED: &str = r#"apiVersion: v1
data:
  mode: prod
kind: ConfigMap
metadata:
  creationTimestamp: null
  name: app
  namespace: shop
---
apiVersion: v1
data:
  password: czNjcmV0
kind: Secret
metadata:
  creationTimestamp: null
  name: db
  namespace: shop
type: Opaque
---
apiVersion: apps/v1
kind: Deployment
metadata:
  creationTimestamp: null
  name: web
  namespace: shop
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 25%}
  template:
    metadata:
      creationTimestamp: null
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: 127.0.0.1:1/shop/web:1.0
          ports:
            - {containerPort: 8080, name: http}
          readinessProbe:
            httpGet: {path: /, port: http}
          resources:
            requests: {cpu: 2, memory: 1073741824}
            limits: {cpu: 2.5, memory: 1073741824}
status: {}
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A server, and the administrator's CLI home with `projects` created.
fn admin_with(projects: &[&str]) -> (TestServer, tempfile::TempDir) {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    ok(wharf(
        home.path(),
        &["login", &server.url(), "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    ));
    for project in projects {
        ok(wharf(home.path(), &["project", "create", project], ""));
    }
    (server, home)
}

#[test]
fn exported_manifests_apply_and_read_back_as_kubernetes_objects() {
    let (_server, home) = admin_with(&["shop", "other"]);
    let home = home.path();

    // `-p` naming another project than the manifest's namespace: refused
    // as kubectl does, and nothing of the manifest is created anywhere.
    let err = fails(wharf(home, &["apply", "-f", "-", "-p", "other"], EXPORTED));
    assert!(
        err.contains("project shop (metadata.namespace)") && err.contains("project other"),
        "{err}"
    );
    for project in ["shop", "other"] {
        for kind in ["deployments", "configmaps", "secrets"] {
            let listed = json(&ok(wharf(
                home,
                &["get", kind, "-p", project, "-o", "json"],
                "",
            )));
            assert_eq!(listed["items"], Value::Array(vec![]), "{kind} in {project}");
        }
    }

    // Applied as exported, without a warning: the probe is honoured and its
    // port is the name of a containerPort.
    let applied = wharf(home, &["apply", "-f", "-"], EXPORTED);
    let warnings = String::from_utf8_lossy(&applied.stderr).into_owned();
    let out = ok(applied);
    for object in ["configmap/app", "secret/db", "deployment.apps/web"] {
        assert!(out.contains(&format!("{object} created")), "{out}");
    }
    assert_eq!(warnings.lines().count(), 0, "{warnings}");

    let deployment = json(&ok(wharf(
        home,
        &["get", "deployment", "web", "-p", "shop", "-o", "json"],
        "",
    )));
    let created = deployment["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap();
    assert!(wharf_api::parse_rfc3339(created).is_some(), "{created}");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["requests"]["cpu"], "2");
    assert_eq!(container["resources"]["requests"]["memory"], "1073741824");
    assert_eq!(container["resources"]["limits"]["cpu"], "2.5");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        (&rolling["maxSurge"], &rolling["maxUnavailable"]),
        (&1.into(), &"25%".into())
    );

    // Every object says what it is, a Secret with its values withheld too.
    for (kind, name, expected) in [
        ("configmap", "app", ("v1", "ConfigMap")),
        ("secret", "db", ("v1", "Secret")),
        ("deployment", "web", ("apps/v1", "Deployment")),
    ] {
        let object = json(&ok(wharf(
            home,
            &["get", kind, name, "-p", "shop", "-o", "json"],
            "",
        )));
        assert_eq!(
            (object["apiVersion"].as_str(), object["kind"].as_str()),
            (Some(expected.0), Some(expected.1)),
            "{object}"
        );
    }
    let secret = ok(wharf(
        home,
        &["get", "secret", "db", "-p", "shop", "-o", "yaml"],
        "",
    ));
    assert!(
        secret.contains("apiVersion: v1\n") && secret.contains("kind: Secret\n"),
        "{secret}"
    );
    assert!(!secret.contains("czNjcmV0"), "{secret}");
}

/// Deployment `name` labelled `app: NAME`, with no replicas.
fn labelled(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {name}}}}}\n\
         spec:\n  replicas: 0\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n\
         \x20   metadata: {{labels: {{app: {name}}}}}\n    spec:\n\
         \x20     containers: [{{name: main, image: '127.0.0.1:1/shop/{name}:1'}}]\n---\n"
    )
}

#[test]
fn scale_takes_a_selector_as_kubectl_does() {
    let (_server, home) = admin_with(&["shop"]);
    let home = home.path();
    let manifest: String = ["web", "api", "db"].map(labelled).concat();
    ok(wharf(home, &["apply", "-f", "-"], &manifest));

    let scale = |selector: &str| {
        let args = ["scale", "deployment", "-p", "shop", "-l", selector];
        wharf(home, &[&args[..], &["--replicas", "2"]].concat(), "")
    };
    let scaled = ok(scale("app in (web,api)"));
    assert_eq!(
        scaled,
        "deployment.apps/api scaled\ndeployment.apps/web scaled\n"
    );
    for (name, replicas) in [("web", 2), ("api", 2), ("db", 0)] {
        let deployment = json(&ok(wharf(
            home,
            &["get", "deployment", name, "-p", "shop", "-o", "json"],
            "",
        )));
        assert_eq!(deployment["spec"]["replicas"], replicas, "{name}");
    }
    let err = fails(scale("app=nothing"));
    assert!(
        err.contains("no deployments in project shop match app=nothing"),
        "{err}"
    );
    // A name and a selector together are refused, as by kubectl.
    fails(wharf(
        home,
        &[
            "scale",
            "deployment",
            "db",
            "-l",
            "app=db",
            "-p",
            "shop",
            "--replicas",
            "1",
        ],
        "",
    ));
}

/// Samples an agent pushed, read back with `wharf metrics query` in every
/// output format; an unknown metric is a clear error.
#[test]
fn metrics_query_prints_a_table_json_csv_and_a_chart() {
    let (server, home) = admin_with(&[]);
    let home = home.path();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // On a step boundary, so that points keep their own timestamps.
    let start = now - now % 10 - 300;
    let samples: Vec<Value> = (0..30)
        .map(|i| {
            serde_json::json!({"endpoint": "wts-cli", "metric": "cpu.busy", "tags": "core=0",
                "value": i as f64, "timestamp": start + i * 10, "counterType": "GAUGE", "step": 10})
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(async {
        let api =
            common::api::ApiClient::login(&server.url(), &common::server::admin_credentials())
                .await
                .unwrap();
        api.call(
            reqwest::Method::POST,
            "/api/v1/nodes/wts-cli/metrics",
            Some(Value::Array(samples)),
        )
        .await
    });
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    let range = [
        "--start",
        &start.to_string(),
        "--end",
        &(start + 290).to_string(),
    ];
    let query = |extra: &[&str]| {
        let mut args = vec![
            "metrics", "query", "cpu.busy", "--tags", "core=0", "--step", "10s",
        ];
        args.extend_from_slice(&range);
        args.extend_from_slice(extra);
        ok(wharf(home, &args, ""))
    };
    let table = query(&[]);
    assert!(table.starts_with("SERIES"), "{table}");
    assert!(
        table.contains("core=0,endpoint=wts-cli  30      29    0    14.500  29"),
        "{table}"
    );
    let answer = json(&query(&["-o", "json"]));
    assert_eq!(answer["resolution"], "raw");
    assert_eq!(answer["series"][0]["points"][29][1], 29.0);
    let csv = query(&["-o", "csv"]);
    assert_eq!(csv.lines().count(), 31, "{csv}");
    assert!(
        csv.contains(&format!("\"core=0,endpoint=wts-cli\",{},29", start + 290)),
        "{csv}"
    );
    let chart = query(&["-o", "chart"]);
    assert!(
        chart.contains('█') && chart.contains("30 points, 10s step, raw"),
        "{chart}"
    );
    let summed = query(&["--agg", "sum", "--by", "endpoint", "-o", "json"]);
    assert_eq!(
        json(&summed)["series"][0]["labels"],
        serde_json::json!({"endpoint": "wts-cli"})
    );

    let err = fails(wharf(home, &["metrics", "query", "no.such.metric"], ""));
    assert!(err.contains("unknown metric \"no.such.metric\""), "{err}");
}
