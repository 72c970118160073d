//! What the P2P shows share: real `wharf agent` processes, one per machine
//! of a `wharf_net::lab` network (pods nested in that machine's namespace),
//! joined to one pool with their own node credentials; images pushed with
//! skopeo; Deployments applied and watched with the CLI; the server's
//! `/metrics`; a tmpfs for the nodes' caches. Every name a lab's agents
//! create (their bridge, their pods' namespaces, their pod subnets) carries
//! the lab's prefix and address range, so that labs of different prefixes
//! run side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use wharf_net::lab::{LabMachine, LabNetwork};
use wharf_oci::Digest;

use crate::common::cli::{ok, run_with_stdin, wharf};
use crate::common::server::ADMIN_PASSWORD;
use crate::common::skopeo::Skopeo;
use crate::common::{Image, Layer, OciLayout, TestServer, require, require_root, require_tool};

/// What every show needs from the machine: root, runc, iproute2, nsenter,
/// skopeo, busybox, and `scratch_bytes` of memory for its tmpfs with 2 GiB
/// to spare.
pub fn prerequisites(test: &str, scratch_bytes: u64) -> bool {
    require_root(test)
        && require_tool("runc", "apt-get install runc")
        && require_tool("ip", "apt-get install iproute2")
        && require_tool("tc", "apt-get install iproute2")
        && require_tool("nsenter", "apt-get install util-linux")
        && require_tool("skopeo", "apt-get install skopeo")
        && require(
            Path::new("/bin/busybox").exists(),
            "/bin/busybox not installed: apt-get install busybox-static",
        )
        && require(
            mem_available() > scratch_bytes + (2 << 30),
            &format!(
                "{test} needs {} MiB of memory available for its tmpfs and 2 GiB to spare",
                scratch_bytes >> 20
            ),
        )
}

fn mem_available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib << 10
}

/// Polls `check` every 250 ms until it gives a value; fails the test,
/// naming `what`, after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The async [`wait_for`]: awaits `check` every 250 ms until it gives a
/// value; fails the test, naming `what`, after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The cluster (one IDC) and pool of a lab, named after its prefix.
pub struct LabPool {
    /// The pool every agent joins: `<prefix>-pool`.
    pub name: String,
    prefix: String,
}

impl LabPool {
    /// The pool of `lab`.
    pub fn of(lab: &LabNetwork) -> LabPool {
        let prefix = lab.spec().prefix.clone();
        LabPool {
            name: format!("{prefix}-pool"),
            prefix,
        }
    }

    /// Creates the cluster and pool and grants the pool to `project`.
    pub fn create(&self, cli: &Cli, project: &str) {
        let prefix = &self.prefix;
        let yaml = format!(
            "apiVersion: wharf.io/v1
kind: Cluster
metadata: {{name: {prefix}-lab}}
spec: {{kind: physical, idc: {prefix}-idc}}
---
apiVersion: wharf.io/v1
kind: Pool
metadata: {{name: {pool}}}
spec: {{cluster: {prefix}-lab}}
",
            pool = self.name
        );
        cli.run_with(&["apply", "-f", "-"], &yaml);
        cli.run(&["pool", "grant", &self.name, project]);
    }

    /// A single-use join token for the pool.
    pub async fn join_token(&self, server: &TestServer) -> String {
        let api = server.admin().await;
        let (status, body) = api
            .call(
                Method::POST,
                &format!("/api/v1/pools/{}/join-tokens", self.name),
                Some(json!({"ttlSeconds": 600})),
            )
            .await;
        assert!(status.is_success(), "a join token: {status} {body}");
        body["token"].as_str().unwrap().to_string()
    }
}

/// What [`push_image`] pushed.
pub struct Pushed {
    /// The layers' digests and sizes, busybox's first.
    pub layers: Vec<(Digest, u64)>,
    /// The bytes a pull downloads: layers and config.
    pub bytes: u64,
}

/// Pushes `<repository>:<tag>` with skopeo: busybox, then `random_layers`
/// layers of `layer_bytes` random bytes each (fresh bytes each time, so no
/// cache anywhere holds them).
pub async fn push_image(
    server: &TestServer,
    repository: &str,
    tag: &str,
    random_layers: usize,
    layer_bytes: usize,
) -> Pushed {
    let layers = tokio::task::spawn_blocking(move || {
        let mut layers = vec![Layer::from_tar(&busybox_tar())];
        let files: Vec<String> = (0..random_layers).map(|i| format!("data/{i}")).collect();
        for file in &files {
            layers.push(Layer::random(&[(file.as_str(), layer_bytes)]));
        }
        layers
    })
    .await
    .unwrap();
    let arch = wharf_image::Platform::host().architecture;
    let image = Image::new(&arch, &layers);
    let bytes: u64 = image.config.size() + image.layers.iter().map(|l| l.size()).sum::<u64>();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path());
    layout.add_image(&image, tag);
    let skopeo = Skopeo::new(server);
    skopeo
        .copy(
            &layout.reference(tag),
            &skopeo.image(&format!("{repository}:{tag}")),
            &[],
        )
        .await;
    Pushed {
        layers: image
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size()))
            .collect(),
        bytes,
    }
}

/// A layer with the static busybox as `/bin/sh` and the directories a
/// container needs.
fn busybox_tar() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind, mode, size| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    };
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "data"] {
        let mut dir_header = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut dir_header, dir, std::io::empty())
            .unwrap();
    }
    let mut file = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    tar.append_data(&mut file, "bin/busybox", &busybox[..])
        .unwrap();
    for applet in ["sh", "sleep"] {
        let mut link = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut link, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    tar.into_inner().unwrap()
}

/// `replicas` pods of `image` in project `shop` on the nodes labelled
/// `selector` (`key`, `value`), one per node (each node has one pod slot).
pub fn deployment(name: &str, replicas: usize, selector: (&str, &str), image: &str) -> String {
    let (key, value) = selector;
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{{key}: {value}}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: {image}
          command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
          resources: {{requests: {{cpu: 10m, memory: 8Mi}}, limits: {{memory: 32Mi}}}}
"#
    )
}

/// The pods of Deployment `name` in project `shop`.
pub fn pods_of(cli: &Cli, name: &str) -> Vec<Value> {
    let list = cli.json(&["get", "pods", "-p", "shop"]);
    list["items"]
        .as_array()
        .or(list.as_array())
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == name)
        .collect()
}

/// Deployment `name`'s pods once `replicas` of them run; fails the test
/// at once when a pull failed.
pub fn running_pods(cli: &Cli, name: &str, replicas: usize) -> Option<Vec<Value>> {
    let pods = pods_of(cli, name);
    let failed: Vec<String> = pods
        .iter()
        .filter(|p| {
            matches!(
                p["status"]["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
        .map(|p| p["status"]["message"].to_string())
        .collect();
    assert!(failed.is_empty(), "pulls failed: {failed:?}");
    let running = pods.len() == replicas && pods.iter().all(|p| p["status"]["phase"] == "Running");
    running.then_some(pods)
}

/// The nodes the pods run on, each once.
pub fn nodes_of(pods: &[Value]) -> Vec<String> {
    let mut nodes: Vec<String> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Ready, untainted nodes labelled `key=value`.
pub fn ready_nodes(cli: &Cli, key: &str, value: &str) -> usize {
    let nodes = cli.json(&["get", "nodes"]);
    nodes["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|n| {
                n["metadata"]["labels"][key] == value
                    && n["status"]["ready"] == true
                    && n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty())
            })
            .count()
    })
}

/// The server's `/metrics`, read as admin.
pub async fn server_metrics(server: &TestServer) -> String {
    let api = server.admin().await;
    let response = server
        .client()
        .get(format!("{}/metrics", server.url()))
        .bearer_auth(api.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// The value of the label-free metric `name` in `text`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The registry's `wharf_registry_blob_bytes_sent_total`: what the origin
/// served. Prints the tracker's metrics with it, for whoever reads the
/// test's output.
pub async fn origin_bytes(server: &TestServer) -> u64 {
    let text = server_metrics(server).await;
    for line in text.lines().filter(|l| l.starts_with("wharf_p2p_")) {
        println!("  {line}");
    }
    metric(&text, "wharf_registry_blob_bytes_sent_total") as u64
}

/// The SHA-256 of the file at `path`, as a digest's hex.
pub fn sha256_hex(path: &Path) -> String {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    hex::encode(hasher.finalize())
}

/// An operator's CLI session with the test server.
pub struct Cli {
    home: tempfile::TempDir,
}

impl Cli {
    /// Logs in as the administrator.
    pub fn login(server: &TestServer) -> Cli {
        let home = tempfile::tempdir().unwrap();
        let mut login = wharf(home.path());
        login.args(["login", &server.url(), "-u", "admin", "--password-stdin"]);
        ok(run_with_stdin(login, &format!("{ADMIN_PASSWORD}\n")));
        Cli { home }
    }

    /// Runs `wharf ARGS`, which must succeed; its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        ok(wharf(self.home.path()).args(args).output().unwrap())
    }

    /// The same with `stdin` as its input.
    pub fn run_with(&self, args: &[&str], stdin: &str) -> String {
        let mut command = wharf(self.home.path());
        command.args(args);
        ok(run_with_stdin(command, stdin))
    }

    /// `wharf ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&all)).unwrap()
    }
}

/// Agents, each inside its lab machine. Dropping them kills them and
/// removes their containers, mounts and caches (the lab removes their
/// pods' namespaces).
pub struct Agents {
    dir: PathBuf,
    running: Vec<Agent>,
}

struct Agent {
    child: Child,
    name: String,
    dir: PathBuf,
    runc_root: PathBuf,
}

impl Agents {
    /// Agents keeping their directories and logs under `dir`.
    pub fn new(dir: PathBuf) -> Agents {
        std::fs::create_dir_all(&dir).unwrap();
        Agents {
            dir,
            running: Vec::new(),
        }
    }

    /// Starts agent `name` inside `machine` of `lab`, joined with `token`,
    /// with `labels` (`k=v,...`) and `extra` flags. Its bridge, its pods'
    /// namespaces and subnet carry the lab's prefix and range: bridge
    /// `<prefix>br1` inside the machine, namespaces `<prefix><index>p-*`,
    /// pods on `10.<lab>.<100 + index>.0/24`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        server: &TestServer,
        lab: &LabNetwork,
        machine: &LabMachine,
        name: &str,
        labels: &str,
        extra: &[&str],
        token: &str,
    ) {
        let spec = lab.spec();
        assert_eq!(spec.host.prefix_len, 16, "pod subnets need a /16 lab");
        let [a, b, _, _] = spec.host.addr.octets();
        let prefix = &spec.prefix;
        let index = machine.index;
        let dir = self.dir.join(name);
        let runc_root = PathBuf::from(format!("/run/wharf-e2e/{name}"));
        let address = machine.address.to_string();
        let mut command = machine.std_command(env!("CARGO_BIN_EXE_wharf"));
        command
            .args(["agent", "--server", &server.url(), "--name", name])
            .args(["--labels", labels])
            // Heartbeats share the shaped link with the layers: a short
            // lease fences pods while a node's link is full.
            .args(["--runtime", "runc", "--lease-ttl", "20s", "--max-pods", "1"])
            .args(["--address", &address])
            .args(["--logs-listen", &format!("{address}:0")])
            .arg("--node-dir")
            .arg(dir.join("node"))
            .arg("--runc-root")
            .arg(&runc_root)
            // The bridge and the pods' namespaces are the machine's own.
            .args(["--bridge", &format!("{prefix}br1")])
            .args(["--netns-prefix", &format!("{prefix}{index}p-")])
            .args(["--pod-cidr", &format!("{a}.{b}.{}.0/24", 100 + index)])
            .args(["--load-source", "pods", "--metrics-interval", "0"])
            .args(["--status-interval", "2s", "--init-interval", "1s"])
            .args(["--image-disk-reserve", "64MiB"])
            .args(extra)
            .env("WHARF_JOIN_TOKEN", token)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log_path(name)).unwrap());
        // `nsenter` execs the agent (no `--fork`): the child is the agent.
        let child = command.spawn().unwrap();
        self.running.push(Agent {
            child,
            name: name.to_string(),
            dir,
            runc_root,
        });
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Agent `name`'s log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Agent `name`'s P2P blob cache: `<node dir>/blobs/sha256`.
    pub fn blob_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("node/blobs/sha256")
    }

    /// Kills agent `name` with SIGKILL, as a machine dying would: no
    /// goodbye to the tracker or the server.
    pub fn kill(&mut self, name: &str) {
        let agent = self
            .running
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name}"));
        agent.child.kill().unwrap();
        agent.child.wait().unwrap();
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for agent in &mut self.running {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
        }
        for agent in &self.running {
            let listed = Command::new("runc")
                .arg("--root")
                .arg(&agent.runc_root)
                .args(["list", "-q"])
                .output();
            let ids = listed.map(|o| o.stdout).unwrap_or_default();
            for id in String::from_utf8_lossy(&ids)
                .lines()
                .filter(|l| !l.is_empty())
            {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&agent.runc_root)
                    .args(["delete", "--force", id])
                    .output();
            }
            let _ = std::fs::remove_dir_all(&agent.runc_root);
        }
        let prefix = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        // Deepest first.
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in ours {
            let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
        }
        if std::thread::panicking() {
            for agent in &self.running {
                let log = self.log(&agent.name);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!(
                    "--- agent {} ({}) log, last lines ---\n{}",
                    agent.name,
                    agent.dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tmpfs on a fresh directory; unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub dir: PathBuf,
    _holder: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes (mode 0700) named after `prefix`.
    pub fn mount(prefix: &str, size: u64) -> Tmpfs {
        let holder = tempfile::Builder::new()
            .prefix(&format!("wharf-{prefix}-"))
            .tempdir()
            .unwrap();
        let dir = holder.path().to_path_buf();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs {
            dir,
            _holder: holder,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.dir).status();
    }
}
