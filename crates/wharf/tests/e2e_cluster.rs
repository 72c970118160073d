//! The cluster end to end with real processes: a server, two node agents,
//! and the CLI applying, scaling and inspecting a Deployment.

mod common;
#[path = "e2e_cluster/live_load.rs"]
mod live_load;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::{ok, run_with_stdin, wharf};
use common::server::ADMIN_PASSWORD;
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: shop/web:1.0
          ports: [{containerPort: 80}]
          resources:
            requests: {cpu: 100m, memory: 32Mi}
"#;

/// A background `wharf agent`, killed on drop.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(home: &Path, name: &str, labels: &str) -> AgentProcess {
    background_agent(
        home,
        &[
            "--name",
            name,
            "--labels",
            labels,
            "--heartbeat-ttl",
            "6s",
            "--cost-per-hour",
            "0.5",
            // Scheduling only: the containers are e2e_containers' business.
            "--runtime",
            "none",
        ],
    )
}

/// A CLI home logged in to `server` as `admin`, with project `shop`.
fn shop_session(server: &TestServer) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let mut login = wharf(home.path());
    login.args(["login", &server.url(), "-u", "admin", "--password-stdin"]);
    ok(run_with_stdin(login, &format!("{ADMIN_PASSWORD}\n")));
    ok(wharf(home.path())
        .args(["project", "create", "shop"])
        .output()
        .unwrap());
    home
}

/// `wharf agent ARGS` in the background, killed on drop.
fn background_agent(home: &Path, args: &[&str]) -> AgentProcess {
    let child = wharf(home)
        .arg("agent")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    AgentProcess(child)
}

fn get_json(home: &Path, args: &[&str]) -> Value {
    let mut command = wharf(home);
    command.arg("get").args(args).args(["-o", "json"]);
    serde_json::from_str(&ok(command.output().unwrap())).unwrap()
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bound_pods(home: &Path) -> Vec<(String, String)> {
    let list = get_json(home, &["pods", "-p", "shop"]);
    let items = list["items"]
        .as_array()
        .or(list.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn two_agents_run_a_deployment_that_scales() {
    let server = TestServer::start();
    let home = shop_session(&server);
    let home = home.path();

    let _a = start_agent(
        home,
        "node-a",
        "wharf.io/pool=web,wharf.io/idc=bj1,wharf.io/cluster-kind=physical,wharf.io/machine-class=3",
    );
    let _b = start_agent(
        home,
        "node-b",
        "wharf.io/pool=web,wharf.io/idc=sh1,wharf.io/cluster-kind=vm,wharf.io/machine-class=1",
    );
    let nodes = wait_for("two ready nodes", || {
        let list = get_json(home, &["nodes"]);
        let items = list["items"]
            .as_array()
            .or(list.as_array())
            .cloned()
            .unwrap_or_default();
        (items.len() == 2 && items.iter().all(|n| n["status"]["ready"] == true)).then_some(items)
    });
    for node in &nodes {
        assert_eq!(node["metadata"]["labels"]["wharf.io/pool"], "web");
        assert!(
            node["status"]["capacity"]["cpuMillis"].as_u64().unwrap() >= 1000,
            "capacity from the machine"
        );
        assert_eq!(node["spec"]["costPerHour"], 0.5);
    }
    let table = ok(wharf(home).args(["get", "nodes"]).output().unwrap());
    assert!(
        table.contains("node-a") && table.contains("Ready"),
        "{table}"
    );

    let manifest = home.join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    let applied = ok(wharf(home)
        .args(["apply", "-f"])
        .arg(&manifest)
        .output()
        .unwrap());
    assert!(applied.contains("deployment.apps/web created"), "{applied}");

    let spread = |count: usize| {
        wait_for(&format!("{count} bound pods"), || {
            let pods = bound_pods(home);
            (pods.len() == count && pods.iter().all(|(_, node)| !node.is_empty())).then_some(pods)
        })
    };
    let pods = spread(3);
    let nodes_used: std::collections::BTreeSet<&String> = pods.iter().map(|(_, n)| n).collect();
    assert_eq!(nodes_used.len(), 2, "3 replicas use both nodes: {pods:?}");

    ok(wharf(home)
        .args([
            "scale",
            "deployment",
            "web",
            "--replicas",
            "5",
            "-p",
            "shop",
        ])
        .output()
        .unwrap());
    let pods = spread(5);
    for node in ["node-a", "node-b"] {
        let on = pods.iter().filter(|(_, n)| n == node).count();
        assert!((2..=3).contains(&on), "{node} holds {on} of 5: {pods:?}");
    }
    ok(wharf(home)
        .args([
            "scale",
            "deployment",
            "web",
            "--replicas",
            "2",
            "-p",
            "shop",
        ])
        .output()
        .unwrap());
    spread(2);

    // The agents report what they hold; describe shows the pod's node and events.
    let (name, node) = bound_pods(home).remove(0);
    let described = ok(wharf(home)
        .args(["describe", "pod", &name, "-p", "shop"])
        .output()
        .unwrap());
    assert!(described.contains(&node), "{described}");
    let deployment = get_json(home, &["deployment", "web", "-p", "shop"]);
    assert_eq!(deployment["status"]["scheduledReplicas"], 2);

    ok(wharf(home)
        .args(["delete", "-f"])
        .arg(&manifest)
        .output()
        .unwrap());
    wait_for("no pods", || bound_pods(home).is_empty().then_some(()));
}

#[test]
fn a_simulated_fleet_registers_and_runs_pods() {
    let server = TestServer::start();
    let home = shop_session(&server);
    let home = home.path();
    let _fleet = background_agent(home, &["--name", "hollow", "--simulate", "40"]);
    wait_for("40 ready simulated nodes", || {
        let list = get_json(home, &["nodes"]);
        let items = list["items"]
            .as_array()
            .or(list.as_array())
            .cloned()
            .unwrap_or_default();
        (items
            .iter()
            .filter(|n| n["status"]["ready"] == true)
            .count()
            == 40)
            .then_some(())
    });
    let manifest = home.join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT.replace("replicas: 3", "replicas: 60")).unwrap();
    ok(wharf(home)
        .args(["apply", "-f"])
        .arg(&manifest)
        .output()
        .unwrap());
    wait_for("60 running pods", || {
        let list = get_json(home, &["pods", "-p", "shop"]);
        let items = list["items"]
            .as_array()
            .or(list.as_array())
            .cloned()
            .unwrap_or_default();
        (items.len() == 60 && items.iter().all(|p| p["status"]["phase"] == "Running")).then_some(())
    });
}
