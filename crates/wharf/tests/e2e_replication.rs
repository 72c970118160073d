//! Replication between data centres for real (root, network namespaces):
//! each Wharf server runs in its own network namespace with its own
//! address, like an IDC; IDCs are linked by veth pairs that a test cuts and
//! restores. Covered: one master feeding two slaves (with deletions as the
//! policy says), main -> sub -> branch, dual-master through a partition
//! (nothing lost, no loop, conflicts resolved the same way on both sides;
//! deletes made during the cut neither undone nor left behind),
//! `kill -9` of the source in the middle of a 1 GiB copy, and push and
//! pull replication with Debian's docker-registry.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::{ok, run_with_stdin, wharf};
use common::docker_registry::DockerRegistry;
use common::image::{Blob, sha256};
use common::registry::RegistryClient;
use common::server::{ADMIN_PASSWORD, admin_credentials, log_tail, spawn_listening};
use common::{Image, Layer, require_root, require_tool};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use wharf_net::Ipv4Cidr;
use wharf_net::testing::HostNamespace;
use wharf_oci::{Digest, RepositoryName};
use wharf_replication::{EndpointKind, Manifest, RegistryAccess, RemoteOptions, RemoteRegistry};

fn prerequisites(test: &str) -> bool {
    require_root(test) && require_tool("ip", "apt-get install iproute2")
}

const PORT: u16 = 7700;

/// One data centre: a namespace with a management link to the host (the
/// test talks to the server through it) and a Wharf server inside.
struct Idc {
    name: String,
    ns: HostNamespace,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    registry: RegistryClient,
}

impl Idc {
    /// IDC `name` in namespace `<prefix><name>`, managed over 10.77.`net`.0/24.
    async fn start(prefix: &str, name: &str, net: u8, args: &[&str]) -> Idc {
        let ns_name = format!("{prefix}{name}");
        let _ = Command::new("ip")
            .args(["netns", "delete", &ns_name])
            .stderr(Stdio::null())
            .status();
        let cidr = |host: u8| -> Ipv4Cidr { format!("10.77.{net}.{host}/24").parse().unwrap() };
        let ns = HostNamespace::create(&ns_name, cidr(1), cidr(2))
            .await
            .unwrap();
        let mut idc = Idc {
            name: name.to_string(),
            ns,
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            registry: RegistryClient::new(Some(admin_credentials())),
        };
        idc.spawn();
        let output = idc.cli_with_stdin(
            &["login", &idc.url(), "-u", "admin", "--password-stdin"],
            ADMIN_PASSWORD,
        );
        ok(output);
        ok(idc.cli(&["project", "create", "shop"]));
        idc
    }

    fn address(&self) -> String {
        self.ns.ns_side().addr.to_string()
    }

    /// The management URL (from the host).
    fn url(&self) -> String {
        format!("http://{}:{PORT}", self.address())
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.ns.name()])
            .arg(env!("CARGO_BIN_EXE_wharf"))
            .arg("server")
            .args(["--listen", &format!("0.0.0.0:{PORT}")])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--instance", &format!("idc-{}", self.name)])
            .args(["--gc-interval", "0"])
            .args(&self.args)
            .env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stderr(log);
        let log_path = self.log_path();
        let (child, _, _) = spawn_listening(&mut command, || log_tail(&log_path, 40));
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, "")
    }

    fn cli_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut command = wharf(&self.home());
        command.args(args);
        run_with_stdin(command, input)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&ok(self.cli(&all))).unwrap()
    }

    /// Makes `other` an endpoint of this IDC, reached at `address`.
    fn add_endpoint(&self, other: &Idc, address: &str) {
        let url = format!("http://{address}:{PORT}");
        ok(self.cli_with_stdin(
            &[
                "replication",
                "endpoint",
                "add",
                &other.name,
                "--url",
                &url,
                "--username",
                "admin",
                "--password-stdin",
            ],
            ADMIN_PASSWORD,
        ));
    }

    async fn push(&self, repo: &str, tag: &str, image: &Image) {
        let (status, body) = self
            .registry
            .push_image(&self.url(), repo, tag, image)
            .await;
        assert_eq!(status, StatusCode::CREATED, "push to {}: {body}", self.name);
    }

    /// Deletes the tag `repo:tag` as a client would.
    async fn delete(&self, repo: &str, tag: &str) {
        let url = common::registry::url(&self.url(), &format!("/v2/{repo}/manifests/{tag}"));
        let response = self
            .registry
            .request(Method::DELETE, url)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "delete at {}",
            self.name
        );
    }

    /// The digest `repo:tag` points at, if it exists.
    async fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        digest_at(&self.registry, &self.url(), repo, tag).await
    }

    async fn wait_for(&self, repo: &str, tag: &str, digest: Option<&str>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let current = self.digest(repo, tag).await;
            if current.as_deref() == digest {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "idc {}: {repo}:{tag} is {current:?}, expected {digest:?}\njobs: {}\nlog:\n{}",
                    self.name,
                    String::from_utf8_lossy(&self.cli(&["replication", "jobs"]).stdout),
                    self.log(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every task of every job of `policy`.
    fn tasks(&self, policy: &str) -> Vec<Value> {
        let jobs = self.json(&["replication", "jobs", "--policy", policy, "--limit", "1000"]);
        let mut tasks = Vec::new();
        for job in jobs_of(&jobs) {
            let detail = self.json(&["replication", "jobs", job["id"].as_str().unwrap()]);
            tasks.extend(detail["taskList"].as_array().cloned().unwrap_or_default());
        }
        tasks
    }

    /// Waits until no job is pending or running.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = self.json(&["replication", "jobs", "--limit", "1000"]);
            let busy = jobs_of(&jobs)
                .iter()
                .any(|j| matches!(j["state"].as_str(), Some("pending" | "running")));
            if !busy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "idc {}: jobs still busy: {jobs}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Idc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- idc {} log ---\n{}", self.name, self.log(40));
        }
    }
}

fn jobs_of(value: &Value) -> Vec<Value> {
    value
        .as_array()
        .or_else(|| value["items"].as_array())
        .cloned()
        .unwrap_or_default()
}

async fn digest_at(registry: &RegistryClient, base: &str, repo: &str, tag: &str) -> Option<String> {
    let url = common::registry::url(base, &format!("/v2/{repo}/manifests/{tag}"));
    let response = registry
        .request(Method::HEAD, url)
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A veth pair between two IDCs, `10.78.<net>.1/30` on `a`, `.2` on `b`.
struct Link {
    ends: [(String, String); 2],
}

impl Link {
    fn connect(a: &Idc, b: &Idc, net: u8) -> Link {
        let (a_if, b_if) = (format!("to-{}", b.name), format!("to-{}", a.name));
        run(&[
            "ip",
            "-n",
            a.ns.name(),
            "link",
            "add",
            &a_if,
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "netns",
            b.ns.name(),
        ]);
        for (ns, ifname, host) in [(a.ns.name(), &a_if, 1), (b.ns.name(), &b_if, 2)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.78.{net}.{host}/30"),
                "dev",
                ifname,
            ]);
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        Link {
            ends: [
                (a.ns.name().to_string(), a_if),
                (b.ns.name().to_string(), b_if),
            ],
        }
    }

    /// Takes both ends down: the IDCs cannot reach each other.
    fn cut(&self) {
        for (ns, ifname) in &self.ends {
            run(&["ip", "-n", ns, "link", "set", ifname, "down"]);
        }
    }

    fn restore(&self) {
        for (ns, ifname) in &self.ends {
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?}");
}

fn small_image(seed: &str) -> Image {
    Image::new("amd64", &[Layer::random(&[(&format!("etc/{seed}"), 2048)])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_feeds_two_slaves_over_their_links() {
    if !prerequisites("master_feeds_two_slaves_over_their_links") {
        return;
    }
    let master = Idc::start("wrpm", "a", 31, &[]).await;
    let b = Idc::start("wrpm", "b", 32, &[]).await;
    let c = Idc::start("wrpm", "c", 33, &[]).await;
    let _ab = Link::connect(&master, &b, 31);
    let _ac = Link::connect(&master, &c, 32);
    master.add_endpoint(&b, "10.78.31.2");
    master.add_endpoint(&c, "10.78.32.2");
    ok(master.cli(&[
        "replication",
        "policy",
        "add",
        "to-b",
        "--endpoint",
        "b",
        "--project",
        "shop",
        "--on-event",
        "--replicate-deletion",
    ]));
    ok(master.cli(&[
        "replication",
        "policy",
        "add",
        "to-c",
        "--endpoint",
        "c",
        "--project",
        "shop",
        "--on-event",
    ]));

    let image = small_image("one");
    master.push("shop/web", "1.0", &image).await;
    let digest = image.manifest.digest.to_string();
    b.wait_for("shop/web", "1.0", Some(&digest), Duration::from_secs(20))
        .await;
    c.wait_for("shop/web", "1.0", Some(&digest), Duration::from_secs(20))
        .await;

    master.delete("shop/web", "1.0").await;
    b.wait_for("shop/web", "1.0", None, Duration::from_secs(20))
        .await;
    master.settle().await;
    assert_eq!(
        c.digest("shop/web", "1.0").await.as_deref(),
        Some(digest.as_str())
    );
    let tasks = master.tasks("to-b");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.iter().all(|t| t["state"] == "succeeded"), "{tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_sub_branch_each_hop_triggered_by_the_arrival() {
    if !prerequisites("main_sub_branch_each_hop_triggered_by_the_arrival") {
        return;
    }
    let main = Idc::start("wrph", "main", 41, &[]).await;
    let sub = Idc::start("wrph", "sub", 42, &[]).await;
    let branch = Idc::start("wrph", "branch", 43, &[]).await;
    // No link between main and branch: the image can only travel via sub.
    let _ms = Link::connect(&main, &sub, 41);
    let _sb = Link::connect(&sub, &branch, 42);
    main.add_endpoint(&sub, "10.78.41.2");
    sub.add_endpoint(&branch, "10.78.42.2");
    ok(main.cli(&[
        "replication",
        "policy",
        "add",
        "down",
        "--endpoint",
        "sub",
        "--on-event",
    ]));
    ok(sub.cli(&[
        "replication",
        "policy",
        "add",
        "down",
        "--endpoint",
        "branch",
        "--on-event",
    ]));

    let image = small_image("hop");
    main.push("shop/api", "v1", &image).await;
    let digest = image.manifest.digest.to_string();
    branch
        .wait_for("shop/api", "v1", Some(&digest), Duration::from_secs(30))
        .await;
    sub.settle().await;
    let hop = sub.tasks("down");
    assert_eq!(hop.len(), 1, "{hop:?}");
    assert_eq!(
        hop[0]["origin"]
            .as_str()
            .map(|o| o.starts_with("idc-main;")),
        Some(true),
        "{hop:?}"
    );
}

/// Two IDCs `a` and `b` (namespaces `<prefix>a`, `<prefix>b`, management
/// nets `net` and `net + 1`) linked by one veth pair, with policies `peer`
/// to each other on events, deletions replicated, and one tag written on
/// each side and replicated: `shop/x:1` from a (returned), `shop/y:1`
/// from b.
async fn dual_master(prefix: &str, net: u8, args: &[&str]) -> (Idc, Idc, Link, Image) {
    let a = Idc::start(prefix, "a", net, args).await;
    let b = Idc::start(prefix, "b", net + 1, args).await;
    let link = Link::connect(&a, &b, net);
    a.add_endpoint(&b, &format!("10.78.{net}.2"));
    b.add_endpoint(&a, &format!("10.78.{net}.1"));
    for (idc, peer) in [(&a, "b"), (&b, "a")] {
        ok(idc.cli(&[
            "replication",
            "policy",
            "add",
            "peer",
            "--endpoint",
            peer,
            "--on-event",
            "--replicate-deletion",
        ]));
    }
    let (x, y) = (small_image("x"), small_image("y"));
    a.push("shop/x", "1", &x).await;
    b.push("shop/y", "1", &y).await;
    let within = Duration::from_secs(20);
    b.wait_for("shop/x", "1", Some(x.manifest.digest.as_str()), within)
        .await;
    a.wait_for("shop/y", "1", Some(y.manifest.digest.as_str()), within)
        .await;
    (a, b, link, x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_master_survives_a_partition_without_loss_or_loops() {
    if !prerequisites("dual_master_survives_a_partition_without_loss_or_loops") {
        return;
    }
    let args = [
        "--replication-reconcile",
        "2s",
        "--replication-attempts",
        "2",
        "--replication-retry",
        "200ms",
        "--replication-timeout",
        "3s",
    ];
    let (a, b, link, x) = dual_master("wrpd", 51, &args).await;

    link.cut();
    let (p, q) = (small_image("p"), small_image("q"));
    let (mine, theirs) = (small_image("c-a"), small_image("c-b"));
    a.push("shop/p", "1", &p).await;
    b.push("shop/q", "1", &q).await;
    a.push("shop/c", "1", &mine).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.push("shop/c", "1", &theirs).await;
    // Long enough for the event jobs to fail against the cut link.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(b.digest("shop/p", "1").await, None, "the link is cut");
    link.restore();

    // Reconcile passes repair what the failed event jobs could not copy.
    let within = Duration::from_secs(30);
    b.wait_for("shop/p", "1", Some(p.manifest.digest.as_str()), within)
        .await;
    a.wait_for("shop/q", "1", Some(q.manifest.digest.as_str()), within)
        .await;
    // Both sides wrote shop/c:1; the later write (b's) wins on both.
    a.wait_for("shop/c", "1", Some(theirs.manifest.digest.as_str()), within)
        .await;
    assert_eq!(
        b.digest("shop/c", "1").await.as_deref(),
        Some(theirs.manifest.digest.as_str())
    );
    // A few more reconcile passes: nothing moves back and forth.
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.settle().await;
    b.settle().await;
    for (idc, came_from_peer) in [(&a, ["shop/y", "shop/q"]), (&b, ["shop/x", "shop/p"])] {
        let mut copies: HashMap<String, usize> = HashMap::new();
        for task in idc
            .tasks("peer")
            .iter()
            .filter(|t| t["state"] == "succeeded")
        {
            *copies
                .entry(format!(
                    "{}:{}@{}",
                    task["repository"], task["reference"], task["digest"]
                ))
                .or_default() += 1;
        }
        for (artifact, count) in &copies {
            assert_eq!(
                *count, 1,
                "idc {}: {artifact} crossed {count} times",
                idc.name
            );
        }
        for repo in came_from_peer {
            assert!(
                !copies.keys().any(|k| k.starts_with(&format!("\"{repo}\""))),
                "idc {} sent {repo} back: {copies:?}",
                idc.name
            );
        }
    }
    assert_eq!(
        b.digest("shop/c", "1").await.as_deref(),
        Some(theirs.manifest.digest.as_str())
    );
    assert_eq!(
        a.digest("shop/x", "1").await.as_deref(),
        Some(x.manifest.digest.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_master_delete_during_a_cut_is_not_undone() {
    if !prerequisites("dual_master_delete_during_a_cut_is_not_undone") {
        return;
    }
    // The periodic reconcile pass keeps its default (5 minutes): only the
    // tombstones and the probe of the healed link can make this converge
    // within the test's deadline.
    let args = [
        "--replication-attempts",
        "2",
        "--replication-retry",
        "200ms",
        "--replication-timeout",
        "3s",
        "--replication-probe",
        "500ms",
    ];
    let (a, b, link, _) = dual_master("wrpx", 81, &args).await;

    link.cut();
    // a deletes a tag it first wrote (x) and one b first wrote (y); both
    // sides write something new.
    a.delete("shop/x", "1").await;
    a.delete("shop/y", "1").await;
    let (from_a, from_b) = (small_image("u"), small_image("v"));
    a.push("shop/u", "1", &from_a).await;
    b.push("shop/v", "1", &from_b).await;
    // The event jobs give up against the cut link.
    a.settle().await;
    b.settle().await;
    assert!(b.digest("shop/x", "1").await.is_some(), "the link is cut");

    let restored = Instant::now();
    link.restore();
    let within = Duration::from_secs(30);
    b.wait_for("shop/x", "1", None, within).await;
    b.wait_for("shop/y", "1", None, within).await;
    b.wait_for("shop/u", "1", Some(from_a.manifest.digest.as_str()), within)
        .await;
    a.wait_for("shop/v", "1", Some(from_b.manifest.digest.as_str()), within)
        .await;
    eprintln!(
        "both sides agree {} ms after the link came back",
        restored.elapsed().as_millis()
    );

    // Later passes (probe-triggered and manual) change nothing: the deletes
    // are not undone, nothing else is lost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.settle().await;
    b.settle().await;
    for idc in [&a, &b] {
        ok(idc.cli(&["replication", "reconcile"]));
    }
    a.settle().await;
    b.settle().await;
    for (repo, expected) in [
        ("shop/x", None),
        ("shop/y", None),
        ("shop/u", Some(from_a.manifest.digest.to_string())),
        ("shop/v", Some(from_b.manifest.digest.to_string())),
    ] {
        for idc in [&a, &b] {
            assert_eq!(
                idc.digest(repo, "1").await,
                expected,
                "idc {}: {repo}:1",
                idc.name
            );
        }
    }
    // Each delete crossed once, from a, carrying a's delete origin.
    let deletes: Vec<Value> = a
        .tasks("peer")
        .into_iter()
        .filter(|t| t["kind"] == "delete" && t["state"] == "succeeded")
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert!(
        deletes.iter().all(|t| t["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("idc-a;"))),
        "{deletes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_1_gib_copy_resumes_and_verifies() {
    if !prerequisites("kill_9_in_a_1_gib_copy_resumes_and_verifies") {
        return;
    }
    let mut a = Idc::start("wrpk", "a", 61, &["--replication-chunk", "64MiB"]).await;
    let b = Idc::start("wrpk", "b", 62, &[]).await;
    let _link = Link::connect(&a, &b, 61);
    a.add_endpoint(&b, "10.78.61.2");
    // Paced so that the kill lands in the middle of the copy.
    ok(a.cli(&[
        "replication",
        "policy",
        "add",
        "big",
        "--endpoint",
        "b",
        "--bandwidth",
        "200MiB/s",
    ]));

    let layer = Blob::new(
        "application/vnd.oci.image.layer.v1.tar",
        pseudo_random(1 << 30),
    );
    let layer_digest = layer.digest.clone();
    let image = image_of(layer);
    a.push("shop/big", "1", &image).await;
    let job: Value =
        serde_json::from_str(&ok(a.cli(&["replication", "run", "big", "-o", "json"]))).unwrap();
    let id = job["id"].as_str().unwrap().to_string();

    let started = Instant::now();
    loop {
        let detail = a.json(&["replication", "jobs", &id]);
        if detail["taskList"][0]["resume"]["offset"]
            .as_u64()
            .unwrap_or(0)
            >= 256 << 20
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill();
    assert_eq!(b.digest("shop/big", "1").await, None);
    a.restart();
    b.wait_for(
        "shop/big",
        "1",
        Some(image.manifest.digest.as_str()),
        Duration::from_secs(90),
    )
    .await;
    let log = std::fs::read_to_string(a.log_path()).unwrap();
    assert!(
        log.contains("resuming blob upload"),
        "the copy started over:\n{}",
        a.log(30)
    );

    // What b serves is what a had, byte for byte.
    let url = common::registry::url(&b.url(), &format!("/v2/shop/big/blobs/{layer_digest}"));
    let body = b
        .registry
        .request(Method::GET, url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&body), layer_digest);
    a.settle().await;
    let detail = a.json(&["replication", "jobs", &id]);
    assert_eq!(detail["state"], "succeeded", "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_and_pull_from_docker_registry() {
    if !prerequisites("push_to_and_pull_from_docker_registry")
        || !require_tool("docker-registry", "apt-get install docker-registry")
    {
        return;
    }
    let a = Idc::start("wrpr", "a", 71, &[]).await;
    let dr_ns = HostNamespace::create(
        "wrprdr",
        "10.77.72.1/24".parse().unwrap(),
        "10.77.72.2/24".parse().unwrap(),
    )
    .await
    .unwrap();
    let dr = DockerRegistry::start(&dr_ns);
    run(&[
        "ip",
        "-n",
        a.ns.name(),
        "link",
        "add",
        "to-dr",
        "type",
        "veth",
        "peer",
        "name",
        "to-a",
        "netns",
        dr_ns.name(),
    ]);
    run(&[
        "ip",
        "-n",
        a.ns.name(),
        "addr",
        "add",
        "10.78.71.1/30",
        "dev",
        "to-dr",
    ]);
    run(&["ip", "-n", a.ns.name(), "link", "set", "to-dr", "up"]);
    run(&[
        "ip",
        "-n",
        dr_ns.name(),
        "addr",
        "add",
        "10.78.71.2/30",
        "dev",
        "to-a",
    ]);
    run(&["ip", "-n", dr_ns.name(), "link", "set", "to-a", "up"]);
    ok(a.cli(&[
        "replication",
        "endpoint",
        "add",
        "dr",
        "--url",
        "http://10.78.71.2:5000",
        "--kind",
        "registry",
    ]));
    ok(a.cli(&[
        "replication",
        "policy",
        "add",
        "out",
        "--endpoint",
        "dr",
        "--project",
        "shop",
    ]));
    ok(a.cli(&[
        "replication",
        "policy",
        "add",
        "in",
        "--endpoint",
        "dr",
        "--direction",
        "pull",
        "--project",
        "lib",
    ]));
    // Project `lib` does not exist at `a`: the pull creates it.

    let pushed = Image::sample();
    a.push("shop/app", "2.1", &pushed).await;
    ok(a.cli(&["replication", "run", "out", "--wait"]));
    let anonymous = RegistryClient::new(None);
    assert_eq!(
        digest_at(&anonymous, &dr.url(), "shop/app", "2.1")
            .await
            .as_deref(),
        Some(pushed.manifest.digest.as_str())
    );

    // The distribution registry takes no single-request uploads: push the
    // way docker does (POST, PATCH, PUT) with the replication client.
    let upstream = small_image("upstream");
    let plain = RemoteRegistry::new(
        "dr",
        EndpointKind::Registry,
        &dr.url(),
        None,
        RemoteOptions::default(),
    )
    .unwrap();
    push_with(&plain, "lib/base", "3", &upstream).await;
    ok(a.cli(&["replication", "run", "in", "--wait"]));
    assert_eq!(
        a.digest("lib/base", "3").await.as_deref(),
        Some(upstream.manifest.digest.as_str())
    );
    // A second run finds everything there and copies nothing.
    ok(a.cli(&["replication", "run", "in", "--wait"]));
    let tasks = a.tasks("in");
    assert_eq!(
        tasks.iter().filter(|t| t["state"] == "succeeded").count(),
        1,
        "{tasks:?}"
    );
}

/// Pushes `image` through any registry client.
async fn push_with(registry: &dyn RegistryAccess, repo: &str, tag: &str, image: &Image) {
    let repo: RepositoryName = repo.parse().unwrap();
    for blob in image.blobs().into_iter().skip(1) {
        let session = registry.start_upload(&repo).await.unwrap();
        let bytes = Bytes::from(blob.bytes.clone());
        let len = bytes.len() as u64;
        let body = futures_util::stream::once(async move { Ok(bytes) }).boxed();
        let session = registry
            .append_upload(&repo, &session, 0, len, body)
            .await
            .unwrap();
        let digest: Digest = blob.digest.as_str().parse().unwrap();
        registry
            .finish_upload(&repo, &session, &digest)
            .await
            .unwrap();
    }
    let manifest = Manifest {
        digest: image.manifest.digest.as_str().parse().unwrap(),
        media_type: image.manifest.media_type.clone(),
        bytes: Bytes::from(image.manifest.bytes.clone()),
    };
    registry
        .put_manifest(&repo, tag, &manifest, None)
        .await
        .unwrap();
}

/// Fast deterministic bytes (xorshift), incompressible enough for a layer.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// An image of one prepared layer blob (no tar structure needed to replicate).
fn image_of(layer: Blob) -> Image {
    let config = Blob::json(
        "application/vnd.oci.image.config.v1+json",
        &serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.digest.as_str()]}}),
    );
    let manifest = Blob::json(
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }),
    );
    Image {
        architecture: "amd64".into(),
        config,
        layers: vec![layer],
        manifest,
    }
}
