//! Services through the CLI against a real server: `apply` allocates a
//! cluster IP from `--service-cidr`, `get`/`describe` show it with the
//! ports and endpoints (which the leader's controller keeps), and `delete`
//! removes the service with its endpoints.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::{fails, ok, run as wharf};
use common::server::ADMIN_PASSWORD;

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

#[test]
fn services_apply_show_and_delete_through_the_cli() {
    let _server = TestServer::start_with(&["--service-cidr", "10.195.0.0/16"]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    ok(wharf(
        home,
        &["login", &_server.url(), "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    ));
    ok(wharf(home, &["project", "create", "shop"], ""));

    let out = ok(wharf(home, &["apply", "-f", "-"], SERVICE));
    assert!(out.contains("service/web created"), "{out}");
    let table = ok(wharf(home, &["get", "svc", "-p", "shop"], ""));
    let row = table.lines().nth(1).unwrap_or_default();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[..2], ["web", "ClusterIP"], "{table}");
    assert!(columns[2].starts_with("10.195."), "{table}");
    assert_eq!(columns[3], "80/TCP", "{table}");

    // The controller makes the endpoints: none ready, since no pod matches.
    let deadline = Instant::now() + Duration::from_secs(10);
    let endpoints = loop {
        let listed = wharf(home, &["get", "endpoints", "web", "-p", "shop"], "");
        if listed.status.success() {
            break String::from_utf8_lossy(&listed.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "no endpoints for service web");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        endpoints.contains("web") && endpoints.contains("<none>"),
        "{endpoints}"
    );

    let described = ok(wharf(home, &["describe", "svc", "web", "-p", "shop"], ""));
    for line in [
        "http 80/TCP",
        "http/TCP",
        "Selector:",
        "app=web",
        columns[2],
    ] {
        assert!(described.contains(line), "{line}: {described}");
    }

    // A NodePort is refused naming the field.
    let node_port = SERVICE.replace("  selector:", "  type: NodePort\n  selector:");
    let err = fails(wharf(home, &["apply", "-f", "-"], &node_port));
    assert!(err.contains("spec.type"), "{err}");

    let out = ok(wharf(home, &["delete", "svc", "web", "-p", "shop"], ""));
    assert!(out.contains("service/web deleted"), "{out}");
    fails(wharf(home, &["get", "svc", "web", "-p", "shop"], ""));
    fails(wharf(home, &["get", "endpoints", "web", "-p", "shop"], ""));
}
