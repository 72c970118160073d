//! Issue 15, Show 4 with processes: a real server autoscales pool `burst`
//! of a cloud cluster on moto's EC2 emulator. Each instance it creates
//! carries, as its UserData, a join line for the pool with its own
//! single-use token; `wharf agent` processes (`--runtime none`) then take
//! the instances' identities exactly as the UserData would make them
//! (named after the instance, labelled with its id, joining with its
//! token), the pods are placed on them, and scaled to zero the instances
//! are terminated and the nodes removed. A token used once is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::TestServer;
use common::cli::{fails, log_in_as_admin, ok, run, wharf};
use serde_json::Value;
use wharf_testkit::moto::MotoServer;

/// An agent started as an instance's UserData would start it, killed on
/// drop (its machine is gone).
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An instance and the join line its UserData runs.
struct Instance {
    id: String,
    user_data: String,
}

impl Instance {
    /// The value the join line gives `name` (`NAME='value'`).
    fn setting(&self, name: &str) -> String {
        let line = &self.user_data;
        let start = line.find(&format!("{name}='")).unwrap() + name.len() + 2;
        let end = start + line[start..].find('\'').unwrap();
        line[start..end].to_string()
    }

    /// `wharf agent` as the join script starts it on this instance:
    /// named after it, labelled with its id (what the UserData exports),
    /// with its join token. No containers: `--runtime none`.
    fn agent(&self, home: &Path, node_dir: &Path) -> Command {
        let mut agent = wharf(home);
        agent
            .args(["agent", "--server", &self.setting("WHARF_SERVER")])
            .args(["--name", &self.id, "--node-dir", path(node_dir)])
            .args(["--labels", &format!("wharf.io/instance-id={}", self.id)])
            .args(["--runtime", "none", "--status-interval", "10m"])
            .env("WHARF_JOIN_TOKEN", self.setting("WHARF_JOIN_TOKEN"));
        agent
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An EC2 Query API call to moto (which does not check signatures but
/// reads the region from the credential scope).
fn ec2(endpoint: &str, query: &str) -> String {
    let out = Command::new("curl")
        .args(["-fsS", "-H"])
        .arg(
            "Authorization: AWS4-HMAC-SHA256 \
             Credential=AKIDWHARF/20260101/us-east-1/ec2/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .arg(format!("{endpoint}/?Version=2016-11-15&{query}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The texts of every `<tag>` element in `xml`.
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    xml.split(&open)
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_string())
        .collect()
}

/// The pool's live instances in moto, with their UserData decoded.
fn instances(endpoint: &str) -> Vec<Instance> {
    let listed = ec2(
        endpoint,
        "Action=DescribeInstances&Filter.1.Name=tag:wharf.io/pool&Filter.1.Value.1=burst\
         &Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running",
    );
    elements(&listed, "instanceId")
        .into_iter()
        .map(|id| {
            let query =
                format!("Action=DescribeInstanceAttribute&InstanceId={id}&Attribute=userData");
            let attribute = ec2(endpoint, &query);
            let encoded = elements(&attribute, "value").pop().unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            Instance {
                id,
                user_data: String::from_utf8(decoded).unwrap(),
            }
        })
        .collect()
}

/// Waits up to 90 s for `check` (the autoscaler looks every 10 s).
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn items(home: &Path, what: &[&str]) -> Vec<Value> {
    let out = ok(run(home, &[what, &["-o", "json"]].concat(), ""));
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// A cloud cluster on moto, 2-cpu machines, pool `burst` autoscaled from
/// 0 to 3 (idle machines go after 2 s), and the provider's keys.
fn inventory(endpoint: &str) -> String {
    format!(
        r#"
apiVersion: wharf.io/v1
kind: Cluster
metadata: {{name: aws}}
spec:
  kind: cloud
  provider:
    driver: ec2
    credentialsSecret: aws-keys
    settings: {{endpoint: "{endpoint}", region: us-east-1, imageId: ami-wharf0001, instanceType: t3.small}}
---
apiVersion: wharf.io/v1
kind: MachineClass
metadata: {{name: c2}}
spec: {{cpu: {{min: "2"}}, memory: {{min: 1Gi}}, pricePerHour: 0.02}}
---
apiVersion: wharf.io/v1
kind: Pool
metadata: {{name: burst}}
spec:
  cluster: aws
  autoscale: {{min: 0, max: 3, machineClass: c2, scaleDownDelaySeconds: 2}}
---
apiVersion: v1
kind: Secret
metadata: {{name: aws-keys, namespace: wharf-system}}
stringData: {{accessKeyId: AKIDWHARF, secretAccessKey: test-only}}
"#
    )
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: batch, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: batch}}
  template:
    metadata: {labels: {app: batch}}
    spec:
      nodeSelector: {wharf.io/pool: burst}
      containers:
        - {name: main, image: shop/batch:1, resources: {requests: {cpu: 1500m, memory: 256Mi}}}
";

fn apply(home: &Path, yaml: &str) {
    let file = home.join("manifest.yaml");
    std::fs::write(&file, yaml).unwrap();
    ok(run(home, &["apply", "-f", path(&file)], ""));
}

#[test]
fn cloud_instances_join_their_pool_with_their_user_data_and_go_when_idle() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let server = TestServer::start();
    let admin = tempfile::tempdir().unwrap();
    let home = admin.path();
    log_in_as_admin(home, &server.url());
    for project in ["shop", "wharf-system"] {
        ok(run(home, &["project", "create", project], ""));
    }
    apply(home, &inventory(&moto.endpoint));
    ok(run(home, &["pool", "grant", "burst", "shop"], ""));

    // Three 1.5-cpu pods and no node: three 2-cpu instances, no more.
    apply(home, DEPLOYMENT);
    wait_for("three instances in moto", || {
        instances(&moto.endpoint).len() == 3
    });
    std::thread::sleep(Duration::from_secs(12));
    let made = instances(&moto.endpoint);
    assert_eq!(made.len(), 3, "no more than the pods need");

    // Each instance's UserData joins pool burst with a token of its own.
    let mut tokens: Vec<String> = made.iter().map(|i| i.setting("WHARF_JOIN_TOKEN")).collect();
    for instance in &made {
        let data = &instance.user_data;
        assert!(data.starts_with("#!/bin/sh\n"), "{data}");
        assert!(data.contains("WHARF_NODE_NAME=\"$id\""), "{data}");
        assert_eq!(instance.setting("WHARF_POOL"), "burst", "{data}");
        assert_eq!(instance.setting("WHARF_SERVER"), server.url(), "{data}");
        assert!(data.contains("curl -fsSL '"), "{data}");
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "one token per instance");

    // The instances boot: agents with their identities join the pool.
    let machines = tempfile::tempdir().unwrap();
    let node_dir = |id: &str| -> PathBuf { machines.path().join(id) };
    let mut agents: Vec<(String, Agent)> = made
        .iter()
        .map(|instance| {
            let child = instance
                .agent(home, &node_dir(&instance.id))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (instance.id.clone(), Agent(child))
        })
        .collect();
    wait_for("the pods placed on the instances' nodes", || {
        let pods = items(home, &["get", "pods", "-p", "shop"]);
        let ids: Vec<&str> = made.iter().map(|i| i.id.as_str()).collect();
        pods.len() == 3
            && pods
                .iter()
                .all(|p| ids.contains(&p["spec"]["nodeName"].as_str().unwrap_or("")))
    });
    let nodes = items(home, &["get", "nodes"]);
    assert_eq!(nodes.len(), 3, "{nodes:#?}");
    for node in &nodes {
        let name = node["metadata"]["name"].as_str().unwrap();
        let labels = &node["metadata"]["labels"];
        assert_eq!(labels["wharf.io/pool"], "burst", "{node:#}");
        assert_eq!(labels["wharf.io/instance-id"], name, "{node:#}");
    }

    // A token works once: the same UserData run again is refused.
    let again = fails(
        made[0]
            .agent(home, &machines.path().join("again"))
            .output()
            .unwrap(),
    );
    assert!(again.contains("join token already used"), "{again}");

    // Scaled to zero: the idle instances are terminated, their agents die
    // with them, and their nodes are removed.
    ok(run(
        home,
        &[
            "scale",
            "deployment",
            "batch",
            "--replicas",
            "0",
            "-p",
            "shop",
        ],
        "",
    ));
    wait_for("the pods gone", || {
        items(home, &["get", "pods", "-p", "shop"]).is_empty()
    });
    wait_for("the instances terminated", || {
        let live = instances(&moto.endpoint);
        agents.retain(|(id, _)| live.iter().any(|i| &i.id == id));
        live.is_empty()
    });
    wait_for("the nodes removed", || {
        items(home, &["get", "nodes"]).is_empty()
    });
    // And their credentials revoked: a copy of a machine's disk logs in
    // no more.
    for instance in &made {
        let saved = std::fs::read(node_dir(&instance.id).join("credential.json")).unwrap();
        let saved: Value = serde_json::from_slice(&saved).unwrap();
        let name = saved["name"].as_str().unwrap();
        let secret = format!("{}\n", saved["secret"].as_str().unwrap());
        let elsewhere = tempfile::tempdir().unwrap();
        let login = ["login", &server.url(), "-u", name, "--password-stdin"];
        let refused = fails(run(elsewhere.path(), &login, &secret));
        assert!(!refused.is_empty(), "{name}");
    }
}
