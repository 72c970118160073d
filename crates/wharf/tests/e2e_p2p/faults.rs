//! Issue 17's faults, with real agents in a shaped lab of their own
//! (`wharf_net::lab` prefix `wpf`, 10.126.0.0/16, six machines at 32 MiB/s
//! per direction): pulls complete correctly when a peer serves corrupt
//! pieces or when the seed dies mid-download, and the origin stays bounded.
//!
//! - A corrupt peer: one node pulls the image alone (a one-replica
//!   Deployment pinned to it), then bytes in the middle of every blob of
//!   its P2P cache are flipped (disk rot, or a hostile node: the cache is
//!   served as it is on disk). The five others then pull through peers.
//!   Every pod runs, every other node's cached blobs hash to their names,
//!   the server counts the bad parents (`wharf_p2p_bad_parent_reports_total`)
//!   and the agents' logs name the corrupt node and why; the origin serves
//!   at most [`CORRUPT_ORIGIN_LIMIT`] images.
//! - The seed killed: the seed's link is slowed to [`SEED_RATE`] so that it
//!   is mid-download when the five others start and take pieces from it;
//!   it gets SIGKILL once its link has carried pieces to them and the
//!   registry has sent less than the image. The others' pods all run,
//!   their caches verify, the tracker promoted one of them to seed
//!   (`wharf_p2p_back_to_source_total` rises after the kill), and the
//!   origin serves at most [`SEED_KILLED_ORIGIN_LIMIT`] images.
//!
//! Both tests use the lab's names, so they take turns ([`LAB`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wharf_net::lab::{LabNetwork, LabSpec};
use wharf_oci::Digest;

use crate::common::TestServer;
use crate::fleet::{
    Agents, Cli, LabPool, Pushed, Tmpfs, deployment, metric, nodes_of, origin_bytes, pods_of,
    prerequisites, push_image, ready_nodes, running_pods, server_metrics, sha256_hex, wait_for,
    wait_until,
};

/// Machines, one agent each: one that pulls first (the corrupt one, or the
/// seed) and five others.
const MACHINES: usize = 6;
/// Each machine's link, per direction: 32 MiB/s.
const RATE: u64 = 32 << 20;
/// The killed seed's link, per direction: the image alone takes it a
/// minute, a wide window for the others to start and take pieces from it
/// on a loaded machine.
const SEED_RATE: u64 = 2 << 20;
/// Two random layers of 64 MiB (16 pieces each) beside busybox's.
const RANDOM_LAYERS: usize = 2;
const LAYER_BYTES: usize = 64 << 20;
/// The most the origin may serve for the corrupt peer's show, in images:
/// the corrupt node's own pull, then the image once more through the node
/// the tracker makes the IDC's seed once the others have blocklisted the
/// only complete peer (the pieces it still lacks), with a few range
/// fallbacks on top: 1.29 and 1.50 measured with the rarest-first
/// downloader, up to 1.72 before it; 6 would be every node back at the
/// registry.
const CORRUPT_ORIGIN_LIMIT: f64 = 2.5;
/// The most the origin may serve when the seed is killed, in images: what
/// the dead seed fetched, and the rest once more through a promoted seed,
/// with range fallbacks on top (1.12 measured).
const SEED_KILLED_ORIGIN_LIMIT: f64 = 2.0;
/// Six caches of a 129 MiB image, each twice (P2P's blob cache and the
/// unpacked layers), with room to spare.
const SCRATCH_BYTES: u64 = 3 << 30;
/// The label saying which part a node plays.
const ROLE: &str = "wpf-role";
/// The others' Deployment and role.
const OTHERS: &str = "others";

/// The `wpf` lab's namespaces, links and bridge are one set of names:
/// the tests here take turns with it.
static LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `wpf` lab with a server on its bridge, project `shop` and the lab's
/// pool. Dropped in field order: the server, then the caches' tmpfs, the
/// network, and the lab's turn last.
struct FaultLab {
    server: TestServer,
    cli: Cli,
    pool: LabPool,
    scratch: Tmpfs,
    network: LabNetwork,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl FaultLab {
    async fn start(test: &str) -> Option<FaultLab> {
        if !prerequisites(test, SCRATCH_BYTES) {
            return None;
        }
        let turn = LAB.lock().await;
        let network = LabNetwork::create(LabSpec::wpf(MACHINES, Some(RATE)))
            .await
            .unwrap();
        let scratch = Tmpfs::mount("wpf", SCRATCH_BYTES);
        let server = TestServer::options()
            .args(&["--listen", &format!("{}:0", network.host_address())])
            .start();
        let cli = Cli::login(&server);
        server
            .admin()
            .await
            .create_project("shop", false, None)
            .await;
        let pool = LabPool::of(&network);
        pool.create(&cli, "shop");
        Some(FaultLab {
            server,
            cli,
            pool,
            scratch,
            network,
            _turn: turn,
        })
    }

    /// Starts one agent per machine, named `wpf-<show>-<index>`, with P2P
    /// on: machine 0's labelled `wpf-role=<first>`, the others'
    /// `wpf-role=others`; waits until all are ready. Returns their names.
    async fn start_agents(&self, agents: &mut Agents, show: &str, first: &str) -> Vec<String> {
        let mut names = Vec::new();
        for machine in self.network.machines() {
            let name = format!("wpf-{show}-{}", machine.index);
            let role = if machine.index == 0 { first } else { OTHERS };
            let token = self.pool.join_token(&self.server).await;
            agents.start(
                &self.server,
                &self.network,
                machine,
                &name,
                &format!("{ROLE}={role}"),
                &["--p2p=true"],
                &token,
            );
            names.push(name);
        }
        wait_for(
            &format!("the {show} nodes ready"),
            Duration::from_secs(90),
            || {
                let ready = ready_nodes(&self.cli, ROLE, first) == 1
                    && ready_nodes(&self.cli, ROLE, OTHERS) == MACHINES - 1;
                ready.then_some(())
            },
        );
        names
    }

    /// Applies a Deployment `name` of `replicas` pods of `image` on the
    /// nodes with role `name`.
    fn deploy(&self, name: &str, replicas: usize, image: &str) {
        let yaml = deployment(name, replicas, (ROLE, name), image);
        self.cli.run_with(&["apply", "-f", "-"], &yaml);
    }

    /// Deletes the Deployment `name` and waits for its pods to go, so that
    /// their agents remove their containers.
    fn undeploy(&self, name: &str) {
        self.cli.run(&["delete", "deployment", name, "-p", "shop"]);
        wait_for(
            &format!("the pods of {name} gone"),
            Duration::from_secs(90),
            || pods_of(&self.cli, name).is_empty().then_some(()),
        );
    }

    /// The image reference the pods pull.
    fn image(&self, tag: &str) -> String {
        format!("{}/shop/big:{tag}", self.server.host())
    }

    /// What the registry sent so far: the origin's bytes.
    async fn origin(&self) -> u64 {
        let text = server_metrics(&self.server).await;
        metric(&text, "wharf_registry_blob_bytes_sent_total") as u64
    }

    /// Bytes the registry sent since `before`.
    async fn origin_since(&self, before: u64) -> u64 {
        self.origin().await - before
    }
}

/// Flips 64 bytes in the middle of the file at `path` (`size` bytes),
/// in place: the piece server reads the file again for every piece.
fn corrupt_middle(path: &Path, size: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    assert_eq!(file.metadata().unwrap().len(), size, "{}", path.display());
    let len = 64.min(size);
    let offset = (size - len) / 2;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, offset).unwrap();
    bytes.iter_mut().for_each(|b| *b = !*b);
    file.write_all_at(&bytes, offset).unwrap();
    file.sync_all().unwrap();
    assert_eq!(file.metadata().unwrap().len(), size, "the size is kept");
}

/// Checks a node's P2P cache in `dir`: it holds every layer, and every
/// blob in it hashes to its name. Returns what is wrong, if anything.
fn cache_faults(dir: &Path, layers: &[(Digest, u64)]) -> Vec<String> {
    let mut faults = Vec::new();
    for (digest, _) in layers {
        if !dir.join(digest.hex()).is_file() {
            faults.push(format!("{} lacks layer {digest}", dir.display()));
        }
    }
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let hashed = sha256_hex(&path);
        if hashed != name {
            faults.push(format!("{} hashes to {hashed}", path.display()));
        }
    }
    faults
}

/// Checks the P2P caches of `nodes` off the runtime's threads (hundreds of
/// MiB to hash); fails the test naming every fault.
async fn assert_caches_verify(agents: &Agents, nodes: &[String], pushed: &Pushed) {
    let dirs: Vec<PathBuf> = nodes.iter().map(|n| agents.blob_dir(n)).collect();
    let layers = pushed.layers.clone();
    let faults = tokio::task::spawn_blocking(move || {
        dirs.iter()
            .flat_map(|dir| cache_faults(dir, &layers))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(faults.is_empty(), "caches that do not verify: {faults:#?}");
}

/// Waits for the others' pods (one per node, none on `excluded`) to run.
fn others_running(lab: &FaultLab, excluded: &str) -> Vec<String> {
    let pods = wait_for(
        "the other nodes' pods running",
        Duration::from_secs(240),
        || running_pods(&lab.cli, OTHERS, MACHINES - 1),
    );
    let nodes = nodes_of(&pods);
    assert_eq!(nodes.len(), MACHINES - 1, "one pod per node: {nodes:?}");
    assert!(!nodes.iter().any(|n| n == excluded), "{nodes:?}");
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_pieces_is_blocklisted_and_every_pull_completes() {
    let Some(lab) = FaultLab::start("the corrupt peer show").await else {
        return;
    };
    let started = Instant::now();
    let pushed = push_image(
        &lab.server,
        "shop/big",
        "corrupt",
        RANDOM_LAYERS,
        LAYER_BYTES,
    )
    .await;
    let mut agents = Agents::new(lab.scratch.dir.join("corrupt"));
    let names = lab.start_agents(&mut agents, "corrupt", "corrupt").await;
    let corrupt = &names[0];
    let image = lab.image("corrupt");

    let before = lab.origin().await;
    lab.deploy("corrupt", 1, &image);
    wait_for(
        "the corrupt node's pod running",
        Duration::from_secs(180),
        || running_pods(&lab.cli, "corrupt", 1),
    );
    let alone = lab.origin_since(before).await;
    let blobs = agents.blob_dir(corrupt);
    for (digest, size) in &pushed.layers {
        let path = blobs.join(digest.hex());
        corrupt_middle(&path, *size);
        assert_ne!(
            sha256_hex(&path),
            digest.hex(),
            "{} corrupted",
            path.display()
        );
    }

    let bad_before = metric(
        &server_metrics(&lab.server).await,
        "wharf_p2p_bad_parent_reports_total",
    );
    let pulling = Instant::now();
    lab.deploy(OTHERS, MACHINES - 1, &image);
    let others = others_running(&lab, corrupt);
    let pulled_in = pulling.elapsed();
    // With the tracker's metrics, for whoever reads the output.
    let origin = origin_bytes(&lab.server).await - before;
    assert_caches_verify(&agents, &others, &pushed).await;

    let bad_reports = metric(
        &server_metrics(&lab.server).await,
        "wharf_p2p_bad_parent_reports_total",
    ) - bad_before;
    // Which parent and why is in the agents' logs.
    let detected: Vec<&String> = others
        .iter()
        .filter(|node| {
            agents.log(node).lines().any(|line| {
                line.contains("dropping a parent for the blob")
                    && line.contains(&format!("parent={corrupt} "))
                    && line.contains("not matching the manifest")
            })
        })
        .collect();
    let ratio = |bytes: u64| bytes as f64 / pushed.bytes as f64;
    eprintln!(
        "corrupt peer: the corrupt node alone took {:.2} images from the origin; \
         {} other pods running {:.1} s after their Deployment; {} of them caught the \
         corrupt node; {bad_reports} bad parent reports; origin {:.1} MiB for an image \
         of {:.1} MiB: {:.2} images; the show took {:.1} s",
        ratio(alone),
        others.len(),
        pulled_in.as_secs_f64(),
        detected.len(),
        origin as f64 / f64::from(1 << 20),
        pushed.bytes as f64 / f64::from(1 << 20),
        ratio(origin),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        bad_reports >= 1.0,
        "the tracker counted no bad parent report"
    );
    assert!(
        !detected.is_empty(),
        "no node logged dropping {corrupt} for a piece not matching the manifest"
    );
    assert!(
        ratio(origin) <= CORRUPT_ORIGIN_LIMIT,
        "with a corrupt peer the origin serves at most {CORRUPT_ORIGIN_LIMIT} images: {:.2}",
        ratio(origin)
    );
    lab.undeploy(OTHERS);
    lab.undeploy("corrupt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_seed_mid_download_falls_back_without_a_failed_pull() {
    let Some(lab) = FaultLab::start("the killed seed show").await else {
        return;
    };
    let started = Instant::now();
    let pushed = push_image(&lab.server, "shop/big", "seed", RANDOM_LAYERS, LAYER_BYTES).await;
    let mut agents = Agents::new(lab.scratch.dir.join("seed"));
    let names = lab.start_agents(&mut agents, "seed", "seed").await;
    let seed = names[0].clone();
    let seed_link = lab.network.machines()[0].host_veth.clone();
    lab.network.set_rate(0, SEED_RATE).await.unwrap();
    let image = lab.image("seed");

    let before = lab.origin().await;
    lab.deploy("seed", 1, &image);
    // The seed is on its way: the registry has sent it a few pieces.
    let mid_way = |sent: u64| {
        assert!(
            sent < pushed.bytes,
            "the seed fetched the whole image ({sent} of {} bytes) before it could be killed mid-way",
            pushed.bytes
        );
    };
    wait_until(
        "the seed fetching from the registry",
        Duration::from_secs(120),
        || async {
            let sent = lab.origin_since(before).await;
            mid_way(sent);
            (sent >= 8 << 20).then_some(())
        },
    )
    .await;
    // What the seed sends goes out through its link: the host end
    // receives it. Its reports and heartbeats are a few KiB; 8 MiB more
    // are pieces the others took from it.
    let uplink = || link_received(&seed_link);
    let quiet = uplink();
    lab.deploy(OTHERS, MACHINES - 1, &image);
    let pulling = Instant::now();
    let served = wait_until(
        "the others taking pieces from the seed",
        Duration::from_secs(120),
        || async {
            mid_way(lab.origin_since(before).await);
            let served = uplink() - quiet;
            (served >= 8 << 20).then_some(served)
        },
    )
    .await;
    let at_kill = lab.origin_since(before).await;
    mid_way(at_kill);
    let seeds_before = metric(
        &server_metrics(&lab.server).await,
        "wharf_p2p_back_to_source_total",
    );
    agents.kill(&seed);
    let killed_after = pulling.elapsed();

    let others = others_running(&lab, &seed);
    let pulled_in = pulling.elapsed();
    let origin = origin_bytes(&lab.server).await - before;
    assert_caches_verify(&agents, &others, &pushed).await;
    let metrics = server_metrics(&lab.server).await;
    let promoted = metric(&metrics, "wharf_p2p_back_to_source_total") - seeds_before;
    let ratio = |bytes: u64| bytes as f64 / pushed.bytes as f64;
    eprintln!(
        "seed killed: {:.1} s after the others' Deployment, having served them {:.1} MiB and \
         taken {:.2} images from the origin; {} other pods running {:.1} s after their \
         Deployment; {promoted} seeds promoted, bad parent reports {}; origin {:.1} MiB for \
         an image of {:.1} MiB: {:.2} images; the show took {:.1} s",
        killed_after.as_secs_f64(),
        served as f64 / f64::from(1 << 20),
        ratio(at_kill),
        others.len(),
        pulled_in.as_secs_f64(),
        metric(&metrics, "wharf_p2p_bad_parent_reports_total"),
        origin as f64 / f64::from(1 << 20),
        pushed.bytes as f64 / f64::from(1 << 20),
        ratio(origin),
        started.elapsed().as_secs_f64(),
    );
    // No other node held the random layers whole when the seed died: the
    // tracker sent one of them to the registry in its place.
    assert!(promoted >= 1.0, "no node was promoted to seed");
    assert!(
        ratio(origin) <= SEED_KILLED_ORIGIN_LIMIT,
        "with the seed killed the origin serves at most {SEED_KILLED_ORIGIN_LIMIT} images: {:.2}",
        ratio(origin)
    );
    lab.undeploy(OTHERS);
    // The seed's pod stays with its dead node; the server goes with the lab.
    lab.cli.run(&["delete", "deployment", "seed", "-p", "shop"]);
}

/// Bytes the host end of a lab link received: what its machine sent.
fn link_received(host_veth: &str) -> u64 {
    let path = format!("/sys/class/net/{host_veth}/statistics/rx_bytes");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .parse()
        .unwrap()
}
