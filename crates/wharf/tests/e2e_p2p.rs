//! The P2P show of issue 17, as root with real agents, runc and shaped
//! links: 20 `wharf agent` processes, each inside its own network namespace
//! of a lab network (`wharf_net::lab`, prefix `wpp`, 10.123.0.0/16) whose
//! link is shaped with tc tbf in both directions, each joined with its own
//! node credential and running its pods inside its namespace. One image of
//! 128 MiB in five layers (busybox and four of 32 MiB of random bytes) is
//! pushed with skopeo; a Deployment of 20 replicas lands one pod per node
//! (`--max-pods 1`); every pod must run, every node must report the whole
//! image in its cache (pods running means every layer was digest-checked),
//! and the registry's own counter of blob bytes sent says what the origin
//! served, against the image's size.
//!
//! Sides, in one run, each with fresh agents and a fresh image: `registry`
//! (every node pulls straight from the registry: the origin serves 20
//! images, `--p2p=false`) and `p2p` (the origin serves at most 1.2
//! images). The test prints the tracker's metrics with each side.
//!
//! The nodes' directories live on a tmpfs (20 caches of 128 MiB, twice
//! over with P2P's blob cache): disk space is not what this shows.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{ok, run_with_stdin, wharf};
use common::server::ADMIN_PASSWORD;
use common::skopeo::Skopeo;
use common::{Image, Layer, OciLayout, TestServer, require, require_root, require_tool};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_net::lab::{LabMachine, LabNetwork, LabSpec};

/// Agents, one per lab machine.
const NODES: usize = 20;
/// Each machine's link, per direction: 32 MiB/s (268 Mbit/s).
const RATE: u64 = 32 << 20;
/// The random layers: four of 32 MiB (with busybox's, 128 MiB and a bit).
const RANDOM_LAYERS: usize = 4;
const LAYER_BYTES: usize = 32 << 20;
/// The most the origin may serve with P2P, in images.
const P2P_ORIGIN_LIMIT: f64 = 1.2;
const POOL: &str = "wpp-pool";

/// How the nodes of one side pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Straight from the registry: P2P off.
    Registry,
    /// Through peers, one seed per IDC going to the registry.
    P2p,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Registry => "registry",
            Side::P2p => "p2p",
        }
    }

    /// The agents' P2P switch for this side.
    fn agent_args(self) -> &'static [&'static str] {
        match self {
            Side::Registry => &["--p2p=false"],
            Side::P2p => &["--p2p=true"],
        }
    }
}

fn sides() -> Vec<Side> {
    vec![Side::Registry, Side::P2p]
}

fn prerequisites() -> bool {
    let test = "the P2P show";
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
            mem_available() > SCRATCH_BYTES + (2 << 30),
            &format!(
                "{test} needs {} GiB of memory available for its tmpfs and 2 GiB to spare",
                SCRATCH_BYTES >> 30
            ),
        )
}

/// The tmpfs: 20 caches of a 128 MiB image, each with room for P2P's
/// blob cache and a layer unpacking, and the server's copies.
const SCRATCH_BYTES: u64 = 8 << 30;

fn mem_available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib << 10
}

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_in_shaped_namespaces_pull_one_128_mib_image() {
    if !prerequisites() {
        return;
    }
    let started = Instant::now();
    let lab = LabNetwork::create(LabSpec::wpp(NODES, Some(RATE)))
        .await
        .unwrap();
    let scratch = Tmpfs::mount(SCRATCH_BYTES);
    let server = TestServer::options()
        .args(&["--listen", &format!("{}:0", lab.host_address())])
        .start();
    let cli = Cli::login(&server);
    let api = server.admin().await;
    api.create_project("shop", false, None).await;
    cli.run_with(&["apply", "-f", "-"], &pool_yaml());
    cli.run(&["pool", "grant", POOL, "shop"]);
    for side in sides() {
        let shown = show_side(&server, &cli, &lab, &scratch.dir, side).await;
        eprintln!(
            "{}: {NODES} pods running in {:.1} s; origin served {:.1} MiB for an image of {:.1} MiB: {:.2} images",
            side.name(),
            shown.elapsed.as_secs_f64(),
            shown.origin_bytes as f64 / f64::from(1 << 20),
            shown.image_bytes as f64 / f64::from(1 << 20),
            shown.ratio(),
        );
        match side {
            Side::Registry => {
                // Every node fetched every blob once; a retried request
                // may add a little.
                assert!(
                    shown.ratio() >= NODES as f64 && shown.ratio() <= NODES as f64 * 1.05,
                    "straight from the registry, the origin serves {NODES} images: {:.2}",
                    shown.ratio()
                );
            }
            Side::P2p => assert!(
                shown.ratio() <= P2P_ORIGIN_LIMIT,
                "with P2P the origin serves at most {P2P_ORIGIN_LIMIT} images: {:.2}",
                shown.ratio()
            ),
        }
    }
    eprintln!("the show took {:.1} s", started.elapsed().as_secs_f64());
}

/// What one side showed.
struct Shown {
    elapsed: Duration,
    origin_bytes: u64,
    image_bytes: u64,
}

impl Shown {
    /// Origin bytes in images.
    fn ratio(&self) -> f64 {
        self.origin_bytes as f64 / self.image_bytes as f64
    }
}

/// Starts `NODES` fresh agents for `side`, pushes a fresh image, runs the
/// Deployment on them and measures; leaves no pod, agent or cache behind.
async fn show_side(
    server: &TestServer,
    cli: &Cli,
    lab: &LabNetwork,
    scratch: &Path,
    side: Side,
) -> Shown {
    let tag = side.name();
    let image_bytes = push_image(server, tag).await;
    let mut agents = Agents::new(scratch.join(side.name()));
    for machine in lab.machines() {
        let token = join_token(server).await;
        agents.start(server, machine, side, &token);
    }
    wait_for(
        &format!("{NODES} {tag} nodes ready"),
        Duration::from_secs(60),
        || (ready_nodes(cli, side) == NODES).then_some(()),
    );
    let before = origin_bytes(server).await;
    let started = Instant::now();
    let image = format!("{}/shop/big:{tag}", server.host());
    cli.run_with(&["apply", "-f", "-"], &deployment(side, &image));
    let pods = wait_for(
        &format!("{NODES} {tag} pods running"),
        Duration::from_secs(240),
        || running_pods(cli, side),
    );
    let elapsed = started.elapsed();
    let origin_bytes = origin_bytes(server).await - before;
    let mut nodes: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), NODES, "one pod per node: {nodes:?}");
    // Each node reports (every 2 s) the whole image in its cache: every
    // layer it unpacked matched its digest and diff_id.
    let reference = format!("shop/big:{tag}");
    let distribution = wait_for(
        "every node's cache reported whole",
        Duration::from_secs(30),
        || {
            let shown = cli.json(&["image", "distribution", &reference]);
            let complete = shown["nodes"]
                .as_array()?
                .iter()
                .filter(|n| n["complete"] == true)
                .count();
            (complete == NODES).then_some(shown)
        },
    );
    assert_eq!(
        distribution["layers"].as_array().map(Vec::len),
        Some(RANDOM_LAYERS + 1),
        "{distribution}"
    );
    cli.run(&["delete", "deployment", &deployment_name(side), "-p", "shop"]);
    wait_for(
        &format!("the {tag} pods gone"),
        Duration::from_secs(90),
        || no_pods_left(cli, side).then_some(()),
    );
    drop(agents);
    Shown {
        elapsed,
        origin_bytes,
        image_bytes,
    }
}

/// The lab's cluster (one IDC) and the pool every agent joins.
fn pool_yaml() -> String {
    format!(
        "apiVersion: wharf.io/v1
kind: Cluster
metadata: {{name: wpp-lab}}
spec: {{kind: physical, idc: wpp-idc}}
---
apiVersion: wharf.io/v1
kind: Pool
metadata: {{name: {POOL}}}
spec: {{cluster: wpp-lab}}
"
    )
}

/// A single-use join token for the pool.
async fn join_token(server: &TestServer) -> String {
    let api = server.admin().await;
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/api/v1/pools/{POOL}/join-tokens"),
            Some(json!({"ttlSeconds": 600})),
        )
        .await;
    assert!(status.is_success(), "a join token: {status} {body}");
    body["token"].as_str().unwrap().to_string()
}

/// Pushes `shop/big:<tag>` with skopeo: busybox, then the random layers
/// (fresh bytes each time, so no cache anywhere holds them); returns the
/// bytes a pull downloads (layers and config).
async fn push_image(server: &TestServer, tag: &str) -> u64 {
    let layers = tokio::task::spawn_blocking(|| {
        let mut layers = vec![Layer::from_tar(&busybox_tar())];
        let files: Vec<String> = (0..RANDOM_LAYERS).map(|i| format!("data/{i}")).collect();
        for file in &files {
            layers.push(Layer::random(&[(file.as_str(), LAYER_BYTES)]));
        }
        layers
    })
    .await
    .unwrap();
    let arch = wharf_image::Platform::host().architecture;
    let image = Image::new(&arch, &layers);
    let size: u64 = image.config.size() + image.layers.iter().map(|l| l.size()).sum::<u64>();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path());
    layout.add_image(&image, tag);
    let skopeo = Skopeo::new(server);
    skopeo
        .copy(
            &layout.reference(tag),
            &skopeo.image(&format!("shop/big:{tag}")),
            &[],
        )
        .await;
    size
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

fn deployment_name(side: Side) -> String {
    format!("big-{}", side.name())
}

/// `NODES` replicas of `image` on this side's nodes, one per node (each
/// node has one pod slot).
fn deployment(side: Side, image: &str) -> String {
    let name = deployment_name(side);
    let side = side.name();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: {NODES}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{wpp-side: {side}}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: {image}
          command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
          resources: {{requests: {{cpu: 10m, memory: 8Mi}}, limits: {{memory: 32Mi}}}}
"#
    )
}

fn pods_of(cli: &Cli, side: Side) -> Vec<Value> {
    let name = deployment_name(side);
    let list = cli.json(&["get", "pods", "-p", "shop"]);
    list["items"]
        .as_array()
        .or(list.as_array())
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == name.as_str())
        .collect()
}

fn running_pods(cli: &Cli, side: Side) -> Option<Vec<Value>> {
    let pods = pods_of(cli, side);
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
    let running = pods.len() == NODES && pods.iter().all(|p| p["status"]["phase"] == "Running");
    running.then_some(pods)
}

/// Whether no pod of the side is left.
fn no_pods_left(cli: &Cli, side: Side) -> bool {
    pods_of(cli, side).is_empty()
}

fn ready_nodes(cli: &Cli, side: Side) -> usize {
    let nodes = cli.json(&["get", "nodes"]);
    nodes["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|n| {
                n["metadata"]["labels"]["wpp-side"] == side.name()
                    && n["status"]["ready"] == true
                    && n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty())
            })
            .count()
    })
}

/// The registry's `wharf_registry_blob_bytes_sent_total`, read as admin.
async fn origin_bytes(server: &TestServer) -> u64 {
    let api = server.admin().await;
    let response = server
        .client()
        .get(format!("{}/metrics", server.url()))
        .bearer_auth(api.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    // The tracker's own view, for whoever reads the test's output.
    for line in text.lines().filter(|l| l.starts_with("wharf_p2p_")) {
        println!("  {line}");
    }
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("wharf_registry_blob_bytes_sent_total "))
        .unwrap_or_else(|| panic!("no blob bytes sent in:\n{text}"));
    value.trim().parse::<f64>().unwrap() as u64
}

/// An operator's CLI session with the test server.
struct Cli {
    home: tempfile::TempDir,
}

impl Cli {
    fn login(server: &TestServer) -> Cli {
        let home = tempfile::tempdir().unwrap();
        let mut login = wharf(home.path());
        login.args(["login", &server.url(), "-u", "admin", "--password-stdin"]);
        ok(run_with_stdin(login, &format!("{ADMIN_PASSWORD}\n")));
        Cli { home }
    }

    fn run(&self, args: &[&str]) -> String {
        ok(wharf(self.home.path()).args(args).output().unwrap())
    }

    fn run_with(&self, args: &[&str], stdin: &str) -> String {
        let mut command = wharf(self.home.path());
        command.args(args);
        ok(run_with_stdin(command, stdin))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&all)).unwrap()
    }
}

/// The agents of one side, each inside its lab machine. Dropping them kills
/// them and removes their containers, mounts and caches (the lab removes
/// their pods' namespaces).
struct Agents {
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
    fn new(dir: PathBuf) -> Agents {
        std::fs::create_dir_all(&dir).unwrap();
        Agents {
            dir,
            running: Vec::new(),
        }
    }

    fn start(&mut self, server: &TestServer, machine: &LabMachine, side: Side, token: &str) {
        let index = machine.index;
        let name = format!("wpp-{}-{index}", side.name());
        let dir = self.dir.join(&name);
        let runc_root = PathBuf::from(format!("/run/wharf-e2e/{name}"));
        let address = machine.address.to_string();
        let mut command = machine.std_command(env!("CARGO_BIN_EXE_wharf"));
        command
            .args(["agent", "--server", &server.url(), "--name", &name])
            .args(["--labels", &format!("wpp-side={}", side.name())])
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
            .args(["--bridge", "wppbr1"])
            .args(["--netns-prefix", &format!("wpp{index}p-")])
            .args(["--pod-cidr", &format!("10.123.{}.0/24", 100 + index)])
            .args(["--load-source", "pods", "--metrics-interval", "0"])
            .args(["--status-interval", "2s", "--init-interval", "1s"])
            .args(["--image-disk-reserve", "64MiB"])
            .args(side.agent_args())
            .env("WHARF_JOIN_TOKEN", token)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap());
        let child = command.spawn().unwrap();
        self.running.push(Agent {
            child,
            name,
            dir,
            runc_root,
        });
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
                let log = std::fs::read_to_string(self.dir.join(format!("{}.log", agent.name)));
                let log = log.unwrap_or_default();
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
struct Tmpfs {
    dir: PathBuf,
    _holder: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Tmpfs {
        let holder = tempfile::Builder::new()
            .prefix("wharf-wpp-")
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
