//! Scheduling on live data with real containers: two agents as two hosts
//! (their own network namespaces) report their load with
//! `--load-source pods` (both share this machine's /proc, which could not
//! tell them apart). At equal load the node that pulled the image for an
//! earlier pod gets the next pod; the node running a CPU burner does not
//! get the next pods while the other has room; `describe pod` names the
//! scores and `top nodes` shows the burner's node busy.

use std::time::Duration;

use serde_json::Value;

use super::{Cli, Node, NodeSpec, TestServer, prerequisites, push_demo_image, wait_for};

/// One replica of `image` named `name` running `script`, pinned to `node`
/// if given. Idle pods request little CPU and the burner much, so that
/// the allocation scores favour the idle node too and only the load
/// decides against the burner's node.
fn deployment(name: &str, image: &str, node: Option<&str>, script: &str) -> String {
    let cpu = if script.contains("while") {
        "500m"
    } else {
        "10m"
    };
    let selector = node
        .map(|node| format!("      nodeSelector: {{kubernetes.io/hostname: {node}}}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{selector}      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: {image}
          command: ["/bin/sh", "-c", "{script}"]
          resources:
            requests: {{cpu: {cpu}, memory: 16Mi}}
            limits: {{cpu: "1", memory: 32Mi}}
"#
    )
}

/// The node the pod of deployment `name` runs on, once it runs.
fn running_on(cli: &Cli, name: &str) -> String {
    wait_for(&format!("{name} running"), Duration::from_secs(60), || {
        let pod = cli.pods("shop").into_iter().find(|p| {
            p["metadata"]["labels"]["app"] == name && p["status"]["phase"] == "Running"
        })?;
        pod["spec"]["nodeName"].as_str().map(str::to_string)
    })
}

fn pod_named(cli: &Cli, app: &str) -> Value {
    let pods = cli.pods("shop");
    let pod = pods.iter().find(|p| p["metadata"]["labels"]["app"] == app);
    pod.cloned()
        .unwrap_or_else(|| panic!("no pod of {app}: {pods:?}"))
}

/// `wharf top nodes -o json`, by node name.
fn node_cpu(cli: &Cli, node: &str) -> Option<f64> {
    let rows = cli.json(&["top", "nodes"]);
    let row = rows.as_array()?.iter().find(|r| r["name"] == node)?.clone();
    row["cpuCores"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_go_to_the_idle_node_and_to_the_node_holding_their_image() {
    if !prerequisites("live_scheduling") {
        return;
    }
    let _hosts = super::host_namespaces(&[("wmda", "10.109.250"), ("wmdb", "10.109.251")]).await;
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _nodes: Vec<Node> = [
        ("wmd-a", "wmda", "wmda-", "10.109.250.2"),
        ("wmd-b", "wmdb", "wmdb-", "10.109.251.2"),
    ]
    .into_iter()
    .map(|(name, host, prefix, address)| {
        let spec = NodeSpec {
            name,
            bridge: "wmdbr0",
            netns_prefix: prefix,
            pod_cidr: "10.109.0.0/24",
            host_netns: Some(host),
            address: Some(address),
        };
        let args = [
            "--load-source",
            "pods",
            "--status-interval",
            "2s",
            "--usage-interval",
            "2s",
        ];
        Node::start_with(&cli, spec, &robot, &args)
    })
    .collect();
    super::wait_nodes_ready(&cli, 2, Duration::from_secs(20));
    let image = format!("{}/shop/web:1.0", server.host());
    let idle = "trap 'exit 0' TERM; sleep 3600 & wait";

    // Equal (no) load: an earlier pod pulls the image onto wmd-b, so the
    // next pod goes there, although wmd-a comes first by name.
    cli.run_with(
        &["apply", "-f", "-"],
        &deployment("warm", &image, Some("wmd-b"), idle),
    );
    assert_eq!(running_on(&cli, "warm"), "wmd-b");
    wait_for("wmd-b's cache reported", Duration::from_secs(20), || {
        let nodes = cli.json(&["get", "nodes"]);
        let node = nodes["items"]
            .as_array()?
            .iter()
            .find(|n| n["metadata"]["name"] == "wmd-b")?;
        let layers = node["status"]["layers"].as_array()?;
        (!layers.is_empty()).then_some(())
    });
    cli.run_with(
        &["apply", "-f", "-"],
        &deployment("local", &image, None, idle),
    );
    assert_eq!(running_on(&cli, "local"), "wmd-b");
    let scores = pod_named(&cli, "local")["metadata"]["annotations"]["wharf.io/scheduling-scores"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(scores.contains("image locality 100.0"), "{scores}");

    // A CPU burner on wmd-a: once its load shows, the next pods go to wmd-b.
    let burn = "trap 'exit 0' TERM; while :; do :; done";
    cli.run_with(
        &["apply", "-f", "-"],
        &deployment("burner", &image, Some("wmd-a"), burn),
    );
    assert_eq!(running_on(&cli, "burner"), "wmd-a");
    // The machine is shared (CI, other tests): ask for a clear margin,
    // not a full core.
    wait_for("wmd-a busy", Duration::from_secs(90), || {
        let (a, b) = (node_cpu(&cli, "wmd-a"), node_cpu(&cli, "wmd-b"));
        eprintln!("cores busy: wmd-a {a:?}, wmd-b {b:?}");
        (a? > 0.2 && b? < 0.05).then_some(())
    });
    for name in ["next-1", "next-2"] {
        cli.run_with(&["apply", "-f", "-"], &deployment(name, &image, None, idle));
        assert_eq!(running_on(&cli, name), "wmd-b", "{name} avoids the burner");
    }
    let described = cli.run(&[
        "describe",
        "pod",
        "-p",
        "shop",
        &super::name_of(&pod_named(&cli, "next-1")),
    ]);
    let line = described
        .lines()
        .find(|l| l.starts_with("Scheduling:"))
        .unwrap_or_else(|| panic!("no scores: {described}"));
    for score in [
        "wmd-b scored",
        "load ",
        "image locality 100.0",
        "allocation ",
        "node spread ",
    ] {
        assert!(line.contains(score), "{score} missing: {line}");
    }
    let nodes = cli.run(&["top", "nodes", "--sort", "cpu"]);
    let first = nodes.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with("wmd-a"), "the busy node first: {nodes}");
    let pods = cli.json(&["top", "pods", "-p", "shop", "--sort", "cpu"]);
    let busiest = &pods[0];
    assert!(
        busiest["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("burner-"),
        "{pods}"
    );
    assert!(
        busiest["cpuCores"].as_f64().unwrap_or_default() > 0.1,
        "{pods}"
    );
}
