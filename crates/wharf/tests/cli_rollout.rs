//! Rollouts through the CLI against a real server and a simulated fleet
//! (`wharf agent --simulate`, whose pods report running and ready): apply,
//! `set image`, `rollout status|history|undo|pause|resume|restart`, and who
//! may change a rollout (developers and above) or read it (guests too).

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::{fails, ok, run, wharf};
use common::server::ADMIN_PASSWORD;
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 4
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: shop/web:1
          resources:
            requests: {cpu: 10m, memory: 8Mi}
"#;

/// A background simulated fleet, killed on drop.
struct Fleet(Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_in(home: &Path, url: &str, user: &str, password: &str) {
    let login = ["login", url, "-u", user, "--password-stdin"];
    ok(run(home, &login, &format!("{password}\n")));
}

fn deployment(home: &Path) -> Value {
    let out = ok(run(
        home,
        &["get", "deployment", "web", "-p", "shop", "-o", "json"],
        "",
    ));
    serde_json::from_str(&out).unwrap()
}

fn image(home: &Path) -> String {
    let d = deployment(home);
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn rollout(home: &Path, args: &[&str]) -> String {
    let mut all = vec!["rollout"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-p", "shop"]);
    ok(run(home, &all, ""))
}

#[test]
fn rollouts_from_the_command_line() {
    let server = TestServer::start();
    let url = server.url();
    let admin = tempfile::tempdir().unwrap();
    let home = admin.path();
    log_in(home, &url, "admin", ADMIN_PASSWORD);
    ok(run(home, &["project", "create", "shop"], ""));
    let _fleet = Fleet(
        wharf(home)
            .args(["agent", "--name", "wtr-sim", "--simulate", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let manifest = home.join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    ok(run(home, &["apply", "-f", manifest.to_str().unwrap()], ""));
    let out = rollout(home, &["status", "deployment/web", "--timeout", "60s"]);
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );

    // Applying the same YAML again keeps the revision the controller set.
    ok(run(home, &["apply", "-f", manifest.to_str().unwrap()], ""));
    let d = deployment(home);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // set image starts a rollout and records the command as its cause.
    ok(run(
        home,
        &[
            "set",
            "image",
            "deployment/web",
            "web=shop/web:2",
            "-p",
            "shop",
        ],
        "",
    ));
    let out = rollout(home, &["status", "deploy", "web", "--timeout", "60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = deployment(home);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(d["status"]["updatedReplicas"], 4);
    assert_eq!(d["status"]["availableReplicas"], 4);
    let table = ok(run(home, &["get", "deployments", "-p", "shop"], ""));
    assert!(
        table.starts_with("NAME  READY  UP-TO-DATE  AVAILABLE"),
        "{table}"
    );
    let history = rollout(home, &["history", "deployment/web"]);
    assert!(history.contains("1         <none>"), "{history}");
    assert!(
        history.contains("2         wharf set image deployment/web web=shop/web:2"),
        "{history}"
    );
    let one = rollout(home, &["history", "deployment/web", "--revision", "1"]);
    assert!(one.contains("image: shop/web:1"), "{one}");

    // A guest reads the history but may not change the rollout.
    let guest = tempfile::tempdir().unwrap();
    ok(run(
        home,
        &["user", "create", "gus", "--password-stdin"],
        "gus-password\n",
    ));
    ok(run(
        home,
        &["project", "member", "add", "shop", "gus", "--role", "guest"],
        "",
    ));
    log_in(guest.path(), &url, "gus", "gus-password");
    rollout(guest.path(), &["history", "deployment/web"]);
    fails(run(
        guest.path(),
        &["rollout", "undo", "deployment/web", "-p", "shop"],
        "",
    ));
    fails(run(
        guest.path(),
        &["rollout", "pause", "deployment/web", "-p", "shop"],
        "",
    ));
    assert_eq!(image(home), "shop/web:2");

    // Undo brings v1 back as revision 3.
    assert!(rollout(home, &["undo", "deployment/web"]).contains("rolled back"));
    assert_eq!(image(home), "shop/web:1");
    rollout(home, &["status", "deployment/web", "--timeout", "60s"]);
    let history = rollout(home, &["history", "deployment/web"]);
    let numbers: Vec<&str> = history.lines().skip(2).map(|l| &l[..1]).collect();
    assert_eq!(numbers, ["2", "3"], "{history}");
    let err = fails(run(
        home,
        &[
            "rollout",
            "undo",
            "deployment/web",
            "--to-revision",
            "9",
            "-p",
            "shop",
        ],
        "",
    ));
    assert!(err.contains("no revision 9"), "{err}");

    // Paused: a template change waits for resume.
    rollout(home, &["pause", "deployment/web"]);
    ok(run(
        home,
        &[
            "set",
            "image",
            "deployment/web",
            "web=shop/web:3",
            "-p",
            "shop",
        ],
        "",
    ));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(deployment(home)["status"]["updatedReplicas"], 0);
    rollout(home, &["resume", "deployment/web"]);
    rollout(home, &["status", "deployment/web", "--timeout", "60s"]);

    // Restart: the same template with a new restartedAt, a new revision.
    rollout(home, &["restart", "deployment/web"]);
    let started = Instant::now();
    rollout(home, &["status", "deployment/web", "--timeout", "60s"]);
    assert!(started.elapsed() < Duration::from_secs(60));
    let d = deployment(home);
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "5"
    );
}
