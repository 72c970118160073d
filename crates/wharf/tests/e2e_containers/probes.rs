//! Probes on real containers: a failed liveness probe restarts the
//! container (restartCount, lastState, events), readiness moves the pod's
//! `Ready` condition both ways, a startup probe holds liveness off, and
//! tcpSocket and httpGet reach the pod's address from the node.

use std::time::Duration;

use serde_json::Value;

use super::common::cli::ok;
use super::exec::exec;
use super::{Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, wait_for};

/// A one-replica deployment of the demo image running `script` (busybox
/// sh) with port 80 named `http` and `probes` (YAML lines at the
/// container's indentation).
fn probed(name: &str, image: &str, script: &str, probes: &str) -> String {
    let container = format!("          ports: [{{name: http, containerPort: 80}}]\n{probes}");
    super::sec::deployment(name, image, "", &container, script)
}

/// The one pod of deployment `name`, once it has an address.
fn pod_of(cli: &Cli, name: &str) -> Option<Value> {
    cli.pods("shop")
        .into_iter()
        .find(|p| name_of(p).starts_with(&format!("{name}-")) && p["status"]["podIP"].is_string())
}

fn ready(pod: &Value) -> bool {
    pod["status"]["containerStatuses"][0]["ready"] == true
}

fn condition(pod: &Value, kind: &str) -> String {
    let conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let found = conditions.iter().find(|c| c["type"] == kind);
    found.map_or_else(String::new, |c| {
        c["status"].as_str().unwrap_or_default().to_string()
    })
}

fn restarts(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until deployment `name`'s pod satisfies `check`.
fn wait_pod(cli: &Cli, what: &str, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, Duration::from_secs(60), || {
        pod_of(cli, name).filter(|p| check(p))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_restart_unhealthy_containers_and_move_readiness() {
    if !prerequisites("probes") {
        return;
    }
    let server = super::common::TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start(
        &cli,
        NodeSpec {
            name: "wtq-1",
            bridge: "wtqbr1",
            netns_prefix: "wtq1-",
            pod_cidr: "10.91.1.0/24",
            host_netns: None,
            address: None,
        },
        &robot,
    );
    let image = format!("{}/shop/web:1.0", server.host());
    let serve =
        "mkdir -p /tmp/www && echo ok > /tmp/www/healthz && exec httpd -f -p 80 -h /tmp/www";
    let liveness = "          livenessProbe:\n            httpGet: {path: /healthz, port: http}\n            periodSeconds: 1\n            failureThreshold: 2\n";
    cli.run_with(
        &["apply", "-f", "-"],
        &probed("live", &image, serve, liveness),
    );
    let readiness = "          readinessProbe:\n            exec: {command: [cat, /tmp/ready]}\n            periodSeconds: 1\n            failureThreshold: 1\n";
    cli.run_with(
        &["apply", "-f", "-"],
        &probed("gate", &image, serve, readiness),
    );
    let startup = "          startupProbe:\n            exec: {command: [cat, /tmp/started]}\n            periodSeconds: 1\n            failureThreshold: 60\n          livenessProbe:\n            exec: {command: [cat, /tmp/alive]}\n            periodSeconds: 1\n            failureThreshold: 1\n          readinessProbe:\n            tcpSocket: {port: 80}\n            periodSeconds: 1\n";
    cli.run_with(
        &["apply", "-f", "-"],
        &probed("slow", &image, serve, startup),
    );

    // Liveness: the server answers 404 once its health file is gone; two
    // failures later the container is killed and runs again.
    let live = wait_pod(&cli, "the live pod ready", "live", ready);
    assert_eq!(condition(&live, "Ready"), "True", "{live}");
    let live_name = name_of(&live);
    ok(exec(&cli, &live_name, &["rm", "/tmp/www/healthz"]));
    let restarted = wait_pod(&cli, "the live pod restarted", "live", |p| {
        restarts(p) >= 1 && ready(p)
    });
    let last = &restarted["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert!(
        last["exitCode"].as_i64().is_some_and(|c| c != 0),
        "{restarted}"
    );
    let described = cli.run(&["describe", "pod", "-p", "shop", &live_name]);
    assert!(described.contains("Unhealthy"), "{described}");
    assert!(described.contains("statuscode: 404"), "{described}");
    assert!(
        described.contains("failed liveness probe, will be restarted"),
        "{described}"
    );
    assert!(
        described.contains("http-get http://:http/healthz"),
        "{described}"
    );

    // Readiness: not ready until the file exists, then ready, then not.
    let gate = wait_pod(&cli, "the gate pod running", "gate", |p| {
        p["status"]["phase"] == "Running" && condition(p, "Ready") == "False"
    });
    assert!(!ready(&gate));
    let gate_name = name_of(&gate);
    let table = cli.run(&["get", "pods", "-p", "shop"]);
    let row = table.lines().find(|l| l.starts_with(&gate_name)).unwrap();
    assert!(row.contains("0/1"), "{table}");
    ok(exec(&cli, &gate_name, &["touch", "/tmp/ready"]));
    let gate = wait_pod(&cli, "the gate pod ready", "gate", |p| {
        condition(p, "Ready") == "True"
    });
    assert!(ready(&gate) && condition(&gate, "ContainersReady") == "True");
    let table = cli.run(&["get", "pods", "-p", "shop"]);
    let row = table.lines().find(|l| l.starts_with(&gate_name)).unwrap();
    assert!(row.contains("1/1"), "{table}");
    ok(exec(&cli, &gate_name, &["rm", "/tmp/ready"]));
    let gate = wait_pod(&cli, "the gate pod unready", "gate", |p| {
        condition(p, "Ready") == "False"
    });
    assert_eq!(restarts(&gate), 0, "readiness never restarts: {gate}");
    let yaml = cli.run(&["get", "pod", "-p", "shop", &gate_name, "-o", "yaml"]);
    assert!(yaml.contains("lastTransitionTime"), "{yaml}");

    // Startup: its liveness probe would fail at once, but is held off
    // until the startup probe passes; then tcpSocket readiness passes.
    let slow = wait_pod(&cli, "the slow pod running", "slow", |p| {
        p["status"]["phase"] == "Running"
    });
    std::thread::sleep(Duration::from_secs(4));
    let slow = pod_of(&cli, "slow").unwrap_or(slow);
    assert_eq!(restarts(&slow), 0, "liveness held off: {slow}");
    assert!(!ready(&slow), "not started, so not ready: {slow}");
    ok(exec(
        &cli,
        &name_of(&slow),
        &["touch", "/tmp/alive", "/tmp/started"],
    ));
    let slow = wait_pod(&cli, "the slow pod ready", "slow", ready);
    assert_eq!(restarts(&slow), 0, "{slow}");
}
