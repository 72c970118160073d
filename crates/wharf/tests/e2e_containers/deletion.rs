//! Honest deletion with real containers: a pod whose container ignores
//! SIGTERM stays `Terminating` (with its deletion timestamp) for its grace
//! period, is killed, and its address stops answering before the pod
//! leaves `get pods`; `wharf delete` waits for that, `--force
//! --grace-period=0` does not; and a Deployment deleted just before the
//! server dies still loses every pod once the server is back.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::TestServer;
use super::common::cli::{ok, run_with_stdin, wharf};
use super::common::server::ADMIN_PASSWORD;
use super::{
    Cli, Node, NodeSpec, ip_of, name_of, pool_yaml, prerequisites, push_demo_image, running_pods,
    wait_for, wait_node_ready,
};

/// A Deployment whose only process ignores SIGTERM and serves HTTP on port
/// 80 from an address of `pool`, with a grace period of `grace` seconds.
fn stubborn_deployment(name: &str, image: &str, pool: &str, replicas: u32, grace: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: shop
  annotations: {{wharf.io/ip-pool: {pool}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
        - name: web
          image: {image}
          command: ["/bin/sh", "-c", "trap '' TERM; httpd -f -p 80 -h /www"]
"#
    )
}

fn node_spec(n: u8) -> NodeSpec {
    // Leaked once per test: NodeSpec holds static names.
    let leak = |text: String| -> &'static str { Box::leak(text.into_boxed_str()) };
    NodeSpec {
        name: leak(format!("e2e-del-{n}")),
        bridge: leak(format!("wtd{n}")),
        netns_prefix: leak(format!("wtd{n}-")),
        pod_cidr: leak(format!("10.84.{}.0/24", 100 + n)),
        host_netns: None,
        address: None,
    }
}

/// A server with the demo image and pool `del-pool` (10.84.N.0/24), and
/// node `e2e-del-N`, ready.
async fn server_and_node(n: u8) -> (TestServer, Cli, Node) {
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let pool = pool_yaml("del-pool", &format!("10.84.{n}"));
    cli.run_with(&["ippool", "import", "-"], &pool);
    let node = Node::start(&cli, node_spec(n), &robot);
    wait_node_ready(&cli);
    (server, cli, node)
}

/// The one running pod whose name starts with `prefix`, once it answers
/// HTTP: its name and address.
fn one_answering_pod(cli: &Cli, node: &Node, prefix: &str) -> (String, Ipv4Addr) {
    let pods = wait_for("the pod running", Duration::from_secs(60), || {
        running_pods(cli, prefix, 1)
    });
    let (name, ip) = (name_of(&pods[0]), ip_of(&pods[0]));
    wait_for("the pod to answer", Duration::from_secs(10), || {
        node.curl(&ip.to_string(), "/")
    });
    (name, ip)
}

fn pod_named(cli: &Cli, name: &str) -> Option<Value> {
    cli.pods("shop").into_iter().find(|p| name_of(p) == name)
}

/// Watches pod `name` (at `ip`) until it leaves `get pods`: checks it is
/// `Terminating` with its deletion time while it is listed, and that its
/// address answered during the grace period (SIGTERM was ignored) and no
/// longer answers once it is gone. Returns when it was gone.
fn watch_termination(cli: &Cli, node: &Node, name: &str, ip: Ipv4Addr, grace: u64) -> Instant {
    let ip = ip.to_string();
    let mut answered_while_terminating = false;
    let mut seen_terminating = false;
    let deadline = Instant::now() + Duration::from_secs(grace + 60);
    loop {
        assert!(Instant::now() < deadline, "pod {name} never went");
        let Some(pod) = pod_named(cli, name) else {
            let gone = Instant::now();
            assert_eq!(
                node.curl(&ip, "/"),
                None,
                "{ip} still answers after {name} left get pods"
            );
            assert!(
                answered_while_terminating,
                "{name} never answered during its grace"
            );
            return gone;
        };
        let meta = &pod["metadata"];
        if !seen_terminating && meta["deletionTimestamp"].is_null() {
            // The deletion is still on its way.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        seen_terminating = true;
        let stamp = meta["deletionTimestamp"].as_str().unwrap_or_default();
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z'),
            "deletionTimestamp as Kubernetes writes it: {meta}"
        );
        assert_eq!(meta["deletionGracePeriodSeconds"], grace, "{meta}");
        assert!(meta["creationTimestamp"].is_string(), "{meta}");
        let table = cli.run(&["get", "pods", "-p", "shop"]);
        let row = table.lines().find(|l| l.starts_with(name));
        if let Some(row) = row {
            assert!(row.contains("Terminating"), "{table}");
        }
        if node.curl(&ip, "/").is_some() {
            answered_while_terminating = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_ignoring_sigterm_terminate_for_their_grace_and_release_their_address_first() {
    if !prerequisites("graceful deletion") {
        return;
    }
    let (server, cli, node) = server_and_node(1).await;
    let image = format!("{}/shop/web:1.0", server.host());
    let manifest = stubborn_deployment("stubborn", &image, "del-pool", 1, 8);
    cli.run_with(&["apply", "-f", "-"], &manifest);
    let (name, ip) = one_answering_pod(&cli, &node, "stubborn-");

    // A pod, with a grace period of its own: `delete` waits until it is gone.
    let started = Instant::now();
    let mut delete = wharf(cli.home.path())
        .args(["delete", "pod", &name, "-p", "shop", "--grace-period", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the pod Terminating", Duration::from_secs(10), || {
        pod_named(&cli, &name).filter(|p| p["metadata"]["deletionTimestamp"].is_string())
    });
    assert!(delete.try_wait().unwrap().is_none(), "delete did not wait");
    let gone = watch_termination(&cli, &node, &name, ip, 4);
    let deleted = delete.wait_with_output().unwrap();
    let returned = Instant::now();
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(pod_named(&cli, &name).is_none());
    assert!(
        String::from_utf8_lossy(&deleted.stdout).contains(&format!("pod/{name} deleted")),
        "{deleted:?}"
    );
    assert!(
        gone.duration_since(started) >= Duration::from_secs(3),
        "the pod went before its grace period ended: {:?}",
        gone.duration_since(started)
    );
    assert!(
        returned.duration_since(started) >= Duration::from_secs(3),
        "delete returned before the pod was gone"
    );

    // The Deployment made a replacement at once; deleting the Deployment
    // stops it with its own grace period (8 s), through the same path.
    let (name, ip) = one_answering_pod(&cli, &node, "stubborn-");
    let started = Instant::now();
    cli.run(&["delete", "deployment", "stubborn", "-p", "shop"]);
    let gone = watch_termination(&cli, &node, &name, ip, 8);
    assert!(gone.duration_since(started) >= Duration::from_secs(6));
    wait_for("the node clean", Duration::from_secs(30), || {
        (node.containers().is_empty() && node.namespaces().is_empty()).then_some(())
    });
    let shown = cli.json(&["ippool", "show", "del-pool"]);
    assert_eq!(shown["summary"]["used"], 0, "{shown}");

    // --force --grace-period=0 removes the object at once, with a warning;
    // the node stops the containers on its own afterwards.
    cli.run_with(&["apply", "-f", "-"], &manifest);
    let pods = wait_for("a new pod running", Duration::from_secs(60), || {
        running_pods(&cli, "stubborn-", 1)
    });
    let name = name_of(&pods[0]);
    cli.run(&[
        "scale",
        "deployment",
        "stubborn",
        "--replicas",
        "0",
        "-p",
        "shop",
    ]);
    wait_for("the scale-down asked", Duration::from_secs(10), || {
        pod_named(&cli, &name)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_string())
            .map(drop)
    });
    let started = Instant::now();
    let forced = wharf(cli.home.path())
        .args([
            "delete",
            "pod",
            &name,
            "-p",
            "shop",
            "--force",
            "--grace-period=0",
        ])
        .output()
        .unwrap();
    assert!(forced.status.success(), "{forced:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "--force waited: {:?}",
        started.elapsed()
    );
    let warning = String::from_utf8_lossy(&forced.stderr);
    assert!(warning.contains("may keep running"), "{warning}");
    assert!(pod_named(&cli, &name).is_none(), "gone at once");
    wait_for(
        "the forced pod's containers gone",
        Duration::from_secs(30),
        || node.containers().is_empty().then_some(()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_deleted_as_the_server_dies_loses_every_pod_after_the_restart() {
    if !prerequisites("deletion across a server restart") {
        return;
    }
    let (mut server, cli, mut node) = server_and_node(2).await;
    let image = format!("{}/shop/web:1.0", server.host());
    let manifest = stubborn_deployment("restarted", &image, "del-pool", 3, 2);
    cli.run_with(&["apply", "-f", "-"], &manifest);
    wait_for("3 pods running", Duration::from_secs(90), || {
        running_pods(&cli, "restarted-", 3)
    });

    // The agent is down, the Deployment goes and the server dies at once:
    // whatever its controllers did or did not do, nobody stopped a pod yet.
    node.crash();
    cli.run(&[
        "delete",
        "deployment",
        "restarted",
        "-p",
        "shop",
        "--wait=false",
    ]);
    server.kill();
    server.restart();
    let mut login = wharf(cli.home.path());
    login.args(["login", &server.url(), "-u", "admin", "--password-stdin"]);
    ok(run_with_stdin(login, &format!("{ADMIN_PASSWORD}\n")));
    node.spawn();

    wait_for("every pod gone", Duration::from_secs(90), || {
        cli.pods("shop").is_empty().then_some(())
    });
    wait_for("the node clean", Duration::from_secs(30), || {
        (node.containers().is_empty() && node.namespaces().is_empty()).then_some(())
    });
    let shown = cli.json(&["ippool", "show", "del-pool"]);
    assert_eq!(shown["summary"]["used"], 0, "{shown}");
}
