//! The component flow (`wharf commit deployment`) with real runc,
//! overlayfs, pool addresses and registry pushes: a 3-replica HTTP
//! deployment on pool IPs is committed pod by pod, indexed, its pinned
//! specs stored in the registry (read back with oras), handed over to the
//! pinned deployments on the same addresses with the state each pod had,
//! and rolled back onto the same addresses; a registry that refuses the
//! second push stops the flow at that step with the component serving on
//! its original pods.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

use super::common::cli::wharf;
use super::common::{TestServer, require_tool};
use super::{
    Cli, Node, NodeSpec, ip_of, name_of, pool_yaml, prerequisites, push_demo_image, running_pods,
    wait_for, wait_node_ready,
};

const NODE: &str = "wcf-1";
const TAG: &str = "20261207";

/// `replicas` pods serving `/www` on pool addresses; each writes, once,
/// which pod it was born in: a pod of a snapshot keeps its origin's file.
fn component(name: &str, image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: shop
  annotations: {{wharf.io/ip-pool: cf-pool}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: web
          image: {image}
          command: ["/bin/sh", "-c"]
          args: ["[ -f /www/born.txt ] || hostname > /www/born.txt; trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"]
          resources:
            requests: {{cpu: 10m, memory: 16Mi}}
"#
    )
}

/// Running pods of deployment `name` (generated names `name-<hash>-<id>`,
/// not those of the pinned `name-<ip>` deployments).
fn originals(cli: &Cli, name: &str, count: usize) -> Option<Vec<Value>> {
    let pods = running_pods(cli, &format!("{name}-"), count)?;
    pods.iter()
        .all(|p| !name_of(p).starts_with(&format!("{name}-10-")))
        .then_some(pods)
}

fn born_in(node: &Node, ip: Ipv4Addr) -> Option<String> {
    node.curl(&ip.to_string(), "/born.txt")
}

/// Runs `wharf ARGS` as the developer; its output, or the failure.
fn run(home: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let output = wharf(home).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

/// The pinned spec of `image` pulled back with the oras Python SDK.
fn oras_pull_spec(server: &TestServer, user: &str, password: &str, reference: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let script = r#"
import os, sys, time, types
import oras.client, oras.decorator
oras.decorator.time = types.SimpleNamespace(sleep=lambda s: time.sleep(min(s, 0.2)))
client = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
# Without docker, oras records the login in a docker config: keep it ours.
client.login(username=os.environ["ORAS_USER"], password=os.environ["ORAS_PASSWORD"],
             hostname=sys.argv[1], config_path=os.path.join(sys.argv[4], "config.json"))
for path in client.pull(target=sys.argv[2], outdir=sys.argv[3]):
    print(path)
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, &server.host(), reference])
        .arg(out.path())
        .arg(config.path())
        .env("ORAS_USER", user)
        .env("ORAS_PASSWORD", password)
        .output()
        .unwrap();
    assert!(output.status.success(), "oras pull {reference}: {output:?}");
    std::fs::read_to_string(out.path().join("deployment.yaml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_moves_onto_its_snapshots_on_the_same_addresses_and_back() {
    if !(prerequisites("the component flow")
        && require_tool("python3", "apt-get install python3")
        && super::common::require(
            std::process::Command::new("python3")
                .args(["-c", "import oras.client"])
                .output()
                .is_ok_and(|o| o.status.success()),
            "the oras Python SDK is missing: scripts/install-deps installs it",
        ))
    {
        return;
    }
    // Blobs over 4 MiB are refused: how the registry refuses one push.
    let server = TestServer::start_with(&["--max-blob-size", "4MiB"]);
    let cli = Cli::login(&server);
    push_demo_image(&server, &cli).await;
    let api = server.admin().await;
    let developer = api.create_member("shop", "release", "developer").await;
    assert_eq!(
        cli.run_with(
            &["ippool", "import", "-"],
            &pool_yaml("cf-pool", "10.119.3")
        )
        .trim(),
        "ippool/cf-pool created"
    );
    let robot = super::commit::node_credential(&server, NODE).await;
    let node = Node::start(
        &cli,
        NodeSpec::local(NODE, "wcfbr1", "wcf", "10.119.2.0/24"),
        &robot,
    );
    wait_node_ready(&cli);
    let home = tempfile::tempdir().unwrap();
    let mut login = wharf(home.path());
    login.args([
        "login",
        &server.url(),
        "-u",
        &developer.user,
        "--password-stdin",
    ]);
    super::common::cli::ok(super::common::cli::run_with_stdin(
        login,
        &format!("{}\n", developer.password),
    ));
    let image = format!("{}/shop/web:1.0", server.host());

    // A registry refusal mid-flow: the second pod (by name, the flow's
    // order) holds 6 MiB of new data, a blob the registry refuses.
    cli.run_with(&["apply", "-f", "-"], &component("api", &image, 3));
    let pods = wait_for("3 api pods running", Duration::from_secs(90), || {
        originals(&cli, "api", 3)
    });
    let mut names: Vec<String> = pods.iter().map(name_of).collect();
    names.sort();
    cli.run(&[
        "exec",
        "-p",
        "shop",
        &names[1],
        "--",
        "dd",
        "if=/dev/urandom",
        "of=/www/big",
        "bs=1M",
        "count=6",
    ]);
    let before: BTreeMap<Ipv4Addr, String> = pods.iter().map(|p| (ip_of(p), name_of(p))).collect();
    let failed = run(
        home.path(),
        &[
            "commit",
            "deployment",
            "api",
            "-p",
            "shop",
            "--tag",
            TAG,
            "--timeout",
            "5m",
        ],
    )
    .expect_err("the flow fails");
    assert!(failed.contains(&names[1]), "the pod is named: {failed}");
    assert!(failed.contains("commit"), "the step is named: {failed}");
    let (_, shown) = api
        .call(
            reqwest::Method::GET,
            "/api/v1/projects/shop/deployments/api/commit",
            None,
        )
        .await;
    assert_eq!(shown["status"]["phase"], "Failed", "{shown}");
    assert_eq!(shown["status"]["failure"]["step"], "commit", "{shown}");
    assert_eq!(
        shown["status"]["failure"]["pod"],
        names[1].as_str(),
        "{shown}"
    );
    let message = shown["status"]["failure"]["message"].as_str().unwrap();
    assert!(message.contains("push"), "the commit's own step: {message}");
    // Every address still served by its original pod, nothing pinned.
    let still = originals(&cli, "api", 3).expect("the originals still run");
    let after: BTreeMap<Ipv4Addr, String> = still.iter().map(|p| (ip_of(p), name_of(p))).collect();
    assert_eq!(after, before);
    for (ip, pod) in &before {
        assert_eq!(born_in(&node, *ip).as_deref(), Some(pod.as_str()));
    }
    let deployments = cli.run(&["get", "deployments", "-p", "shop"]);
    assert!(!deployments.contains("api-10-"), "{deployments}");

    // The whole flow on `web`.
    cli.run_with(&["apply", "-f", "-"], &component("web", &image, 3));
    let pods = wait_for("3 web pods running", Duration::from_secs(90), || {
        originals(&cli, "web", 3)
    });
    let born: BTreeMap<Ipv4Addr, String> = pods.iter().map(|p| (ip_of(p), name_of(p))).collect();
    for (ip, pod) in &born {
        let answer = wait_for("the pod to answer", Duration::from_secs(15), || {
            born_in(&node, *ip)
        });
        assert_eq!(&answer, pod);
    }
    // The node's cache holds the whole image it runs, as it reports it
    // (with its status, every 30 s).
    let distribution = wait_for("the node's cache reported", Duration::from_secs(75), || {
        let shown = cli.json(&["image", "distribution", "shop/web:1.0"]);
        (shown["nodes"][0]["complete"] == true).then_some(shown)
    });
    assert_eq!(distribution["nodes"][0]["node"], NODE, "{distribution}");
    for layer in distribution["layers"].as_array().unwrap() {
        assert_eq!(layer["nodes"], serde_json::json!([NODE]), "{distribution}");
    }

    // What the flow asks of every pod first: a check that measures and
    // pauses, writes and pushes nothing.
    let some_pod = born.values().next().unwrap();
    let (status, measured) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/projects/shop/pods/{some_pod}/commit"),
            Some(serde_json::json!({"image": "shop/checked:1", "checkOnly": true})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{measured}");
    assert_eq!(measured["phase"], "measured", "{measured}");
    assert!(measured["bytes"].as_u64() > Some(0), "born.txt: {measured}");
    let described = cli.run(&["describe", "pod", "-p", "shop", some_pod]);
    assert!(
        !described.contains("Commit"),
        "a check is no commit: {described}"
    );
    let repositories = cli.run(&["image", "list", "shop"]);
    assert!(!repositories.contains("checked"), "{repositories}");

    let progress = run(
        home.path(),
        &[
            "commit",
            "deployment",
            "web",
            "-p",
            "shop",
            "--tag",
            TAG,
            "--timeout",
            "8m",
        ],
    )
    .unwrap_or_else(|e| panic!("the flow: {e}"));
    assert!(progress.contains("Done"), "{progress}");

    // Images named per the rule, and the index holds the three pairs.
    let index = cli.json(&["commit", "list"]);
    let pairs: BTreeSet<(String, String)> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["image"].as_str().unwrap().to_string(),
                e["ip"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(image, _)| image.starts_with("shop/shop-web-"))
        .collect();
    let expected: BTreeSet<(String, String)> = born
        .keys()
        .map(|ip| (format!("shop/shop-web-{ip}:{TAG}"), ip.to_string()))
        .collect();
    assert_eq!(pairs, expected);
    let one_ip = born.keys().next().unwrap().to_string();
    let by_ip = cli.json(&["commit", "list", "--ip", &one_ip]);
    assert_eq!(by_ip.as_array().unwrap().len(), 1, "{by_ip}");

    // The pinned specs: from the API, and from the registry with oras.
    let specs = cli.run(&["commit", "specs", "web", "-p", "shop"]);
    for ip in born.keys() {
        assert!(
            specs.contains(&format!("wharf.io/fixed-ip: {ip}"))
                || specs.contains(&format!("wharf.io/fixed-ip: '{ip}'")),
            "{ip} in {specs}"
        );
        let yaml = oras_pull_spec(
            &server,
            &developer.user,
            &developer.password,
            &format!("{}/shop/shop-web-{ip}:{TAG}.deployment", server.host()),
        );
        assert!(
            yaml.contains(&format!("shop/shop-web-{ip}:{TAG}")),
            "{yaml}"
        );
        assert!(yaml.contains("kind: Deployment"), "{yaml}");
    }

    // After the takeover: each address served by its pinned pod, which
    // runs the snapshot of the pod that had it (its born.txt).
    for (ip, origin) in &born {
        let pinned = format!("web-{}", ip.to_string().replace('.', "-"));
        let pod = wait_for("the pinned pod running", Duration::from_secs(30), || {
            running_pods(&cli, &format!("{pinned}-"), 1)
        });
        assert_eq!(ip_of(&pod[0]), *ip);
        assert_eq!(pod[0]["metadata"]["labels"]["ip"], ip.to_string());
        let image = pod[0]["spec"]["containers"][0]["image"].as_str().unwrap();
        assert!(
            image.ends_with(&format!("shop/shop-web-{ip}:{TAG}")),
            "{image}"
        );
        let answer = wait_for("the pinned pod to answer", Duration::from_secs(15), || {
            born_in(&node, *ip)
        });
        assert_eq!(&answer, origin, "{ip} serves its snapshot's state");
    }
    let original = cli.json(&["get", "deployment", "web", "-p", "shop"]);
    assert_eq!(original["spec"]["replicas"], 0, "{original}");
    assert_eq!(
        original["metadata"]["annotations"]["wharf.io/commit-replicas"],
        "3"
    );
    let left: Vec<String> = cli
        .pods("shop")
        .iter()
        .map(name_of)
        .filter(|n| n.starts_with("web-") && !n.starts_with("web-10-"))
        .collect();
    assert!(left.is_empty(), "original pods left: {left:?}");

    // Rollback: the original deployment back, on the same addresses.
    let progress = run(
        home.path(),
        &["commit", "rollback", "web", "-p", "shop", "--timeout", "8m"],
    )
    .unwrap_or_else(|e| panic!("the rollback: {e}"));
    assert!(progress.contains("RolledBack"), "{progress}");
    let pods = wait_for("3 original web pods again", Duration::from_secs(60), || {
        originals(&cli, "web", 3)
    });
    let ips: BTreeSet<Ipv4Addr> = pods.iter().map(ip_of).collect();
    assert_eq!(ips, born.keys().copied().collect::<BTreeSet<_>>());
    for pod in &pods {
        assert_eq!(
            pod["spec"]["containers"][0]["image"], image,
            "the original image"
        );
        // A fresh pod of the original image: born again, as itself.
        let answer = wait_for("the pod to answer", Duration::from_secs(15), || {
            born_in(&node, ip_of(pod))
        });
        assert_eq!(answer, name_of(pod));
    }
    let deployments = cli.run(&["get", "deployments", "-p", "shop"]);
    assert!(!deployments.contains("web-10-"), "{deployments}");
    let original = cli.json(&["get", "deployment", "web", "-p", "shop"]);
    assert_eq!(original["spec"]["replicas"], 3, "{original}");
}
