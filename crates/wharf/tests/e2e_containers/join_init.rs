//! A second machine joins a pool with an init profile: a network namespace
//! stands for it, `wharf node join-command`'s line runs there, and the
//! agent it starts (runc, in that namespace) runs the profile before the
//! node takes pods; a changed profile runs again.
//!
//! The line runs under `nsenter --net`, not `ip netns exec`: the latter
//! also remounts `/sys` for the namespace, which hides the cgroup
//! hierarchy runc needs. A machine's agent needs nothing else: no
//! `--host-netns` (it is already in its host's namespace).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::common::cli::ok;
use super::common::{TestServer, require_tool};
use super::{Cli, prerequisites, push_demo_image, trimmed_stdout, wait_for};

const HOST: &str = "wri-m1";
const NODE: &str = "wri-join-1";
const BRIDGE: &str = "wri0";
const PREFIX: &str = "wri-";
const POOL: &str = "wri-pool";

/// The pool with its init profile: a per-namespace sysctl, a file with a
/// mode, a script slow enough that the not-yet-initialized node is seen.
fn pool_yaml(dir: &Path, files: &[(&str, &str)]) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|(name, content)| {
            format!(
                "{{path: '{}', content: '{content}', mode: '0640'}}",
                dir.join(name).display()
            )
        })
        .collect();
    format!(
        "apiVersion: wharf.io/v1
kind: Cluster
metadata: {{name: wri-lab}}
spec: {{kind: physical, idc: lab}}
---
apiVersion: wharf.io/v1
kind: Pool
metadata: {{name: {POOL}}}
spec:
  cluster: wri-lab
  init:
    sysctls: {{net.ipv4.ip_default_ttl: '77'}}
    files: [{}]
    script: 'sleep 3; echo initialized'
",
        files.join(", ")
    )
}

fn web(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: wri-web, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: wri-web}}}}
  template:
    metadata: {{labels: {{app: wri-web}}}}
    spec:
      containers:
        - name: web
          image: {image}
          command: ["/bin/sh", "-c"]
          args: ["trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"]
          resources: {{requests: {{cpu: 100m, memory: 32Mi}}}}
"#
    )
}

/// What the joined machine leaves behind, removed on drop even when the
/// test fails: the agent (by the pid the join script wrote), its
/// containers, pod namespaces and mounts, its runc root.
struct Machine {
    dir: tempfile::TempDir,
    runc_root: PathBuf,
}

impl Machine {
    fn node_dir(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    fn in_host(&self, argv: &[&str]) -> Option<String> {
        let mut command = Command::new("nsenter");
        trimmed_stdout(command.arg(format!("--net=/run/netns/{HOST}")).args(argv))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.node_dir().join("agent.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        let list = Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(["list", "-q"])
            .output();
        for id in list
            .map(|o| o.stdout)
            .unwrap_or_default()
            .split(|&b| b == b'\n')
        {
            if !id.is_empty() {
                let id = String::from_utf8_lossy(id).to_string();
                let mut delete = Command::new("runc");
                delete.arg("--root").arg(&self.runc_root);
                let _ = delete.args(["delete", "--force", &id]).output();
            }
        }
        let node_dir = self.node_dir().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mount in mounts.lines().filter_map(|l| l.split_whitespace().nth(4)) {
            if mount.starts_with(&node_dir) {
                let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let namespaces = Command::new("ip").args(["netns", "list"]).output();
        let namespaces = namespaces.map(|o| o.stdout).unwrap_or_default();
        for line in String::from_utf8_lossy(&namespaces).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(PREFIX) && name != HOST {
                let _ = Command::new("ip").args(["netns", "delete", name]).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.runc_root);
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.node_dir().join("agent.log"));
            eprintln!("--- agent {NODE} log ---\n{}", log.unwrap_or_default());
        }
    }
}

fn node(cli: &Cli) -> Option<Value> {
    let nodes = cli.json(&["get", "nodes"]);
    let items = nodes["items"].as_array().cloned().unwrap_or_default();
    items.into_iter().find(|n| n["metadata"]["name"] == NODE)
}

fn initialized(node: &Value) -> Option<&Value> {
    let conditions = node["status"]["conditions"].as_array()?;
    conditions.iter().find(|c| c["type"] == "Initialized")
}

fn tainted(node: &Value) -> bool {
    let taints = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    taints
        .iter()
        .any(|t| t["key"] == "wharf.io/not-initialized" && t["effect"] == "NoSchedule")
}

/// The node once Initialized is `True` for profile `hash` (any, if `None`).
fn wait_initialized(cli: &Cli, not_hash: Option<&str>) -> Value {
    wait_for("the node initialized", Duration::from_secs(60), || {
        let node = node(cli)?;
        let done = initialized(&node)?["status"] == "True"
            && node["status"]["initialization"]["profileHash"].as_str() != not_hash;
        (done && !tainted(&node)).then_some(node)
    })
}

fn seconds(time: &Value) -> u64 {
    let text = time.as_str().unwrap();
    let date = Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&date.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_in_a_namespace_joins_runs_its_pools_init_profile_then_pods() {
    let test = "joining a machine with an init profile";
    if !prerequisites(test) || !require_tool("nsenter", "apt-get install util-linux") {
        return;
    }
    let host = wharf_net::testing::HostNamespace::create(
        HOST,
        "10.246.1.1/24".parse().unwrap(),
        "10.246.1.2/24".parse().unwrap(),
    )
    .await
    .unwrap();
    // On the uplink's machine side: what the join line names is reachable
    // from the namespace, and the CLI on the machine uses it too.
    let server = TestServer::options()
        .args(&["--listen", "10.246.1.1:0"])
        .start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let files = tempfile::tempdir().unwrap();
    cli.run_with(
        &["apply", "-f", "-"],
        &pool_yaml(files.path(), &[("motd", "core machine")]),
    );
    cli.run(&["pool", "grant", POOL, "shop"]);

    let line = cli.run(&["node", "join-command", "--pool", POOL, "--ttl", "10m"]);
    let line = line.trim().to_string();
    assert!(line.contains("WHARF_SERVER='http://10.246.1.1:"), "{line}");
    let machine = Machine {
        dir: tempfile::tempdir().unwrap(),
        runc_root: PathBuf::from(format!("/run/wharf-e2e/{NODE}")),
    };
    let agent_args = format!(
        "--runtime runc --lease-ttl 6s --init-interval 1s --address 10.246.1.2 \
         --logs-listen 10.246.1.2:0 --runc-root {} --bridge {BRIDGE} --netns-prefix {PREFIX} \
         --pod-cidr 10.116.0.0/24 --registry-user {}",
        machine.runc_root.display(),
        robot.user
    );
    let joined = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{HOST}"))
        .args(["sh", "-c", &line])
        .env("WHARF_NODE_NAME", NODE)
        .env("WHARF_NODE_DIR", machine.node_dir())
        .env("WHARF_BIN", machine.dir.path().join("bin/wharf"))
        .env("WHARF_NO_SYSTEMD", "1")
        .env("WHARF_AGENT_ARGS", &agent_args)
        .env("WHARF_REGISTRY_PASSWORD", &robot.password)
        .output()
        .unwrap();
    let said = ok(joined);
    assert!(said.contains("systemd is not running here"), "{said}");

    // Registered, tainted and not Initialized while the profile runs; a
    // Deployment applied now waits, naming the taint.
    let waiting = wait_for("the node registered", Duration::from_secs(30), || {
        node(&cli).filter(|n| tainted(n) && initialized(n).is_some_and(|c| c["status"] == "False"))
    });
    assert_eq!(waiting["metadata"]["labels"]["wharf.io/pool"], POOL);
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(&["apply", "-f", "-"], &web(&image));
    let pending = wait_for(
        "the pod pending on the taint",
        Duration::from_secs(10),
        || {
            let pods = cli.pods("shop");
            let pod = pods
                .into_iter()
                .find(|p| p["status"]["phase"] == "Pending")?;
            let why = format!("{} {}", pod["status"]["reason"], pod["status"]["message"]);
            why.contains("wharf.io/not-initialized").then_some(why)
        },
    );
    assert!(pending.contains("Unschedulable"), "{pending}");

    let ready = wait_initialized(&cli, None);
    let condition = initialized(&ready).unwrap().clone();
    let run = &ready["status"]["initialization"];
    assert_eq!(run["state"], "Succeeded", "{run}");
    let first_hash = run["profileHash"].as_str().unwrap().to_string();
    assert!(first_hash.starts_with("sha256:"));
    let described = cli.run(&["describe", "node", NODE]);
    assert!(described.contains("Initialized:"), "{described}");

    // The pod runs on the machine and answers from inside its namespace.
    let pod = wait_for("the pod running", Duration::from_secs(90), || {
        let pods = cli.pods("shop");
        pods.into_iter().find(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"][0]["ready"] == true
        })
    });
    assert_eq!(pod["spec"]["nodeName"], NODE);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let answer = wait_for("the pod answering HTTP", Duration::from_secs(15), || {
        machine.in_host(&[
            "curl",
            "-sf",
            "-m",
            "3",
            &format!("http://{ip}/cgi-bin/hostname"),
        ])
    });
    assert_eq!(answer, pod["metadata"]["name"].as_str().unwrap());
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .map(|c| seconds(&c["lastTransitionTime"]))
        .unwrap();
    assert!(
        seconds(&condition["lastTransitionTime"]) <= scheduled,
        "initialized {condition} after the pod was scheduled ({scheduled})"
    );

    // The profile's sysctl is the namespace's (the machine's is untouched),
    // its file is there with its mode.
    let ttl = machine.in_host(&["cat", "/proc/sys/net/ipv4/ip_default_ttl"]);
    assert_eq!(ttl.as_deref(), Some("77"));
    let motd = files.path().join("motd");
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "core machine");
    let mode = std::fs::metadata(&motd).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o640);
    let log = std::fs::read_to_string(machine.node_dir().join("init-script.log")).unwrap();
    assert_eq!(log, "initialized\n", "the script's output is kept");

    // The token was for one machine: refused, nothing changes.
    let token = setting(&line, "WHARF_JOIN_TOKEN");
    let reused = server
        .client()
        .post(format!("{}/api/v1/join", server.url()))
        .json(&json!({"token": token, "node": "wri-join-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 401);
    let text = reused.text().await.unwrap();
    assert!(text.contains("already used"), "{text}");
    let nodes = cli.json(&["get", "nodes"]);
    assert_eq!(nodes["items"].as_array().unwrap().len(), 1, "{nodes}");

    // A changed profile (another file) runs again.
    cli.run_with(
        &["apply", "-f", "-"],
        &pool_yaml(
            files.path(),
            &[("motd", "core machine"), ("limits", "nofile 65536")],
        ),
    );
    let again = wait_initialized(&cli, Some(&first_hash));
    assert_ne!(
        again["status"]["initialization"]["profileHash"].as_str(),
        Some(first_hash.as_str())
    );
    let limits = std::fs::read_to_string(files.path().join("limits")).unwrap();
    assert_eq!(limits, "nofile 65536");

    cli.run(&["delete", "deployment", "wri-web", "-p", "shop"]);
    drop(machine);
    host.delete().await.unwrap();
}

/// The value the join line gives `name` (`NAME='value'`).
fn setting(line: &str, name: &str) -> String {
    let start = line.find(&format!("{name}='")).unwrap() + name.len() + 2;
    let end = start + line[start..].find('\'').unwrap();
    line[start..end].to_string()
}
