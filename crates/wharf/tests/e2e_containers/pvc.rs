//! PersistentVolumeClaims for real, on two nodes: a Deployment writes into
//! its claim, which is bound to that pod's node; the data outlives the
//! Deployment, and the next Deployment using the claim lands on the same
//! node and reads it; with that node cordoned a pod of the claim waits,
//! naming the claim and its node; deleting the claim once no pod uses it
//! removes its directory from the node.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::common::TestServer;
use super::{
    Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, running_pods, wait_for,
    wait_nodes_ready,
};

const CLAIM: &str = "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
";

/// A one-replica Deployment running `script` with claim `data` at `/data`.
fn claim_deployment(name: &str, image: &str, script: &str) -> String {
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
      terminationGracePeriodSeconds: 1
      volumes:
        - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
      containers:
        - name: main
          image: {image}
          command: [/bin/sh, -c, '{script}']
          volumeMounts:
            - {{name: data, mountPath: /data}}
"#
    )
}

fn claim(cli: &Cli) -> Value {
    cli.json(&["get", "pvc", "data", "-p", "shop"])
}

/// The claim's directory on `node`, from its uid.
fn claim_dir(node: &Node, uid: &str) -> PathBuf {
    node.node_dir().join("claims/shop").join(uid)
}

fn pods_named(cli: &Cli, prefix: &str) -> Vec<Value> {
    cli.pods("shop")
        .into_iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_keeps_its_data_on_its_node_for_the_next_pod() {
    if !prerequisites("persistent volume claims") {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let nodes: Vec<Node> = [
        ("wtp-a", "wtpbr0", "wtpa-", "10.87.1.0/24"),
        ("wtp-b", "wtpbr1", "wtpb-", "10.87.2.0/24"),
    ]
    .into_iter()
    .map(|(name, bridge, prefix, cidr)| {
        Node::start(&cli, NodeSpec::local(name, bridge, prefix, cidr), &robot)
    })
    .collect();
    wait_nodes_ready(&cli, 2, Duration::from_secs(30));
    let image = format!("{}/shop/web:1.0", server.host());

    cli.run_with(&["apply", "-f", "-"], CLAIM);
    let table = cli.run(&["get", "persistentvolumeclaims", "-p", "shop"]);
    assert!(
        table.contains("data") && table.contains("Pending"),
        "{table}"
    );
    let uid = claim(&cli)["metadata"]["uid"].as_str().unwrap().to_string();

    // The first pod binds the claim to its node and writes there.
    let writer = claim_deployment("writer", &image, "echo kept > /data/msg; exec sleep 3600");
    cli.run_with(&["apply", "-f", "-"], &writer);
    let pods = wait_for("the writer running", Duration::from_secs(60), || {
        running_pods(&cli, "writer-", 1)
    });
    let bound_to = pods[0]["spec"]["nodeName"].as_str().unwrap().to_string();
    let bound = claim(&cli);
    assert_eq!(bound["status"]["phase"], "Bound", "{bound}");
    assert_eq!(
        bound["status"]["nodeName"].as_str(),
        Some(bound_to.as_str())
    );
    assert_eq!(
        bound["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].as_str(),
        Some(bound_to.as_str())
    );
    let node = nodes.iter().find(|n| n.spec.name == bound_to).unwrap();
    let file = claim_dir(node, &uid).join("msg");
    wait_for("the file on the node", Duration::from_secs(10), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.trim() == "kept")
    });
    let described = cli.run(&["describe", "pvc", "data", "-p", "shop"]);
    assert!(
        described.contains(&bound_to) && described.contains(&name_of(&pods[0])),
        "{described}"
    );

    // The Deployment goes; the data stays.
    cli.run(&["delete", "deployment", "writer", "-p", "shop"]);
    wait_for("the writer gone", Duration::from_secs(60), || {
        pods_named(&cli, "writer-").is_empty().then_some(())
    });
    assert!(file.exists(), "the claim's data outlives its pods");

    // The next pod of the claim lands on its node and reads the data.
    let reader = claim_deployment(
        "reader",
        &image,
        "test \"$(cat /data/msg)\" = kept || exit 1; exec sleep 3600",
    );
    cli.run_with(&["apply", "-f", "-"], &reader);
    let pods = wait_for("the reader running", Duration::from_secs(60), || {
        running_pods(&cli, "reader-", 1)
    });
    assert_eq!(
        pods[0]["spec"]["nodeName"].as_str(),
        Some(bound_to.as_str())
    );
    cli.run(&["delete", "deployment", "reader", "-p", "shop"]);
    wait_for("the reader gone", Duration::from_secs(60), || {
        pods_named(&cli, "reader-").is_empty().then_some(())
    });

    // With the claim's node cordoned, a pod of the claim waits, saying why,
    // though the other node has room.
    cli.run(&["node", "cordon", &bound_to]);
    cli.run_with(&["apply", "-f", "-"], &reader);
    let message = wait_for("the pod waiting", Duration::from_secs(30), || {
        let pods = pods_named(&cli, "reader-");
        let message = pods.first()?["status"]["message"].as_str()?.to_string();
        message.contains("persistentvolumeclaim").then_some(message)
    });
    assert!(
        message.contains("\"data\"") && message.contains(&bound_to),
        "{message}"
    );
    assert!(pods_named(&cli, "reader-")[0]["spec"]["nodeName"].is_null());
    cli.run(&["delete", "deployment", "reader", "-p", "shop"]);
    wait_for("the waiting pod gone", Duration::from_secs(60), || {
        pods_named(&cli, "reader-").is_empty().then_some(())
    });

    // No pod uses it: deleting the claim removes its directory on the node.
    cli.run(&["delete", "pvc", "data", "-p", "shop"]);
    wait_for(
        "the claim's directory removed",
        Duration::from_secs(90),
        || (!claim_dir(node, &uid).exists()).then_some(()),
    );
    cli.run(&["node", "uncordon", &bound_to]);
}
