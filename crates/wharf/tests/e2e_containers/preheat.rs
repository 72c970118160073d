//! Preheat on push warms the pool's seed peer before the deployment is
//! applied: a policy of project `shop`, two agents of pool `core` as two
//! hosts (their own network namespaces) with `wph-b` labelled the seed,
//! then a push. The seed's cache holds the image (`wharf image
//! distribution`) and the other node's does not, before any pod exists;
//! a Deployment pinned to the seed then runs from the warm cache.

use std::time::Duration;

use super::common::skopeo::Skopeo;
use super::{Cli, Node, NodeSpec, TestServer, prerequisites, wait_for};

fn pinned_deployment(image: &str, node: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: warm, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: warm}}}}
  template:
    metadata: {{labels: {{app: warm}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: {image}
          command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
          resources:
            requests: {{cpu: 10m, memory: 16Mi}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preheat_on_push_warms_the_pools_seed_before_the_deployment() {
    if !prerequisites("preheat") {
        return;
    }
    let _hosts = super::host_namespaces(&[("wpha", "10.124.250"), ("wphb", "10.124.251")]).await;
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let api = server.admin().await;
    api.create_project("shop", false, None).await;
    let robot = api.create_robot("shop", "node", "pull").await;
    let _nodes: Vec<Node> = [
        (
            "wph-a",
            "wpha",
            "wpha-",
            "10.124.250.2",
            "wharf.io/pool=core",
        ),
        (
            "wph-b",
            "wphb",
            "wphb-",
            "10.124.251.2",
            "wharf.io/pool=core,wharf.io/p2p-seed=true",
        ),
    ]
    .into_iter()
    .map(|(name, host, prefix, address, labels)| {
        let spec = NodeSpec {
            name,
            bridge: "wphbr0",
            netns_prefix: prefix,
            pod_cidr: "10.124.0.0/24",
            host_netns: Some(host),
            address: Some(address),
        };
        Node::start_with(
            &cli,
            spec,
            &robot,
            &["--labels", labels, "--status-interval", "30s"],
        )
    })
    .collect();
    super::wait_nodes_ready(&cli, 2, Duration::from_secs(20));

    let created = cli.run(&[
        "image",
        "preheat",
        "policy",
        "create",
        "releases",
        "-p",
        "shop",
        "--repository",
        "web",
        "--tag",
        "1.*",
    ]);
    assert!(created.contains("warm seeds"), "{created}");

    // The push: the demo image as shop/web:1.0, with skopeo.
    let layout = tempfile::tempdir().unwrap();
    cli.run(&[
        "demo-image",
        "--output",
        layout.path().to_str().unwrap(),
        "--tag",
        "1.0",
    ]);
    let skopeo = Skopeo::new(&server);
    skopeo
        .copy(
            &format!("oci:{}:1.0", layout.path().display()),
            &skopeo.image("shop/web:1.0"),
            &[],
        )
        .await;

    // The policy's preheat targets the labelled seed only, and finishes.
    let preheat = wait_for("the preheat done", Duration::from_secs(60), || {
        let list = cli.json(&["image", "preheat", "status", "-p", "shop"]);
        let first = list.as_array()?.first()?.clone();
        (first["status"]["phase"] == "Succeeded" || first["status"]["phase"] == "Failed")
            .then_some(first)
    });
    assert_eq!(preheat["status"]["phase"], "Succeeded", "{preheat}");
    assert_eq!(preheat["spec"]["policy"], "releases");
    let nodes = preheat["status"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{preheat}");
    assert_eq!(nodes[0]["node"], "wph-b");
    assert!(nodes[0]["bytes"].as_u64() > Some(0), "{preheat}");
    let name = preheat["metadata"]["name"].as_str().unwrap();
    let shown = cli.run(&["image", "preheat", "status", name, "-p", "shop"]);
    assert!(shown.contains("Succeeded (1/1 nodes done)"), "{shown}");

    // No pod exists yet, and the seed's cache holds the whole image: it
    // reported its cache right after the preheat (not at its 30 s status).
    assert!(cli.pods("shop").is_empty());
    let distribution = wait_for("the seed's cache reported", Duration::from_secs(10), || {
        let shown = cli.json(&["image", "distribution", "shop/web:1.0"]);
        (shown["nodes"][0]["complete"] == true).then_some(shown)
    });
    let holders = distribution["nodes"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "only the seed holds it: {distribution}");
    assert_eq!(holders[0]["node"], "wph-b");
    assert_eq!(holders[0]["complete"], true, "{distribution}");

    // Then the rollout: the pod on the seed starts from the warm cache.
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(&["apply", "-f", "-"], &pinned_deployment(&image, "wph-b"));
    wait_for(
        "the pod running on the seed",
        Duration::from_secs(60),
        || {
            let pods = cli.pods("shop");
            let pod = pods.iter().find(|p| p["status"]["phase"] == "Running")?;
            (pod["spec"]["nodeName"] == "wph-b").then_some(())
        },
    );
}
