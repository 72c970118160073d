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
//!
//! The show's faults (a peer serving corrupt pieces, the seed killed
//! mid-download) are in `e2e_p2p/faults.rs`, on a lab of their own (`wpf`,
//! 10.126.0.0/16) so that they run beside this one; what all share (agents
//! in lab machines, the CLI, pushes, metrics, the tmpfs) is
//! `e2e_p2p/fleet.rs`.

mod common;
#[path = "e2e_p2p/faults.rs"]
mod faults;
#[path = "e2e_p2p/fleet.rs"]
mod fleet;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestServer;
use fleet::{
    Agents, Cli, LabPool, Tmpfs, deployment, nodes_of, origin_bytes, pods_of, prerequisites,
    push_image, ready_nodes, running_pods, wait_for,
};
use wharf_net::lab::{LabNetwork, LabSpec};

/// Agents, one per lab machine.
const NODES: usize = 20;
/// Each machine's link, per direction: 32 MiB/s (268 Mbit/s).
const RATE: u64 = 32 << 20;
/// The random layers: four of 32 MiB (with busybox's, 128 MiB and a bit).
const RANDOM_LAYERS: usize = 4;
const LAYER_BYTES: usize = 32 << 20;
/// The most the origin may serve with P2P, in images.
const P2P_ORIGIN_LIMIT: f64 = 1.2;
/// The label that puts a node on a side.
const SIDE_LABEL: &str = "wpp-side";

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

/// The tmpfs: 20 caches of a 128 MiB image, each with room for P2P's
/// blob cache and a layer unpacking, and the server's copies.
const SCRATCH_BYTES: u64 = 8 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_in_shaped_namespaces_pull_one_128_mib_image() {
    if !prerequisites("the P2P show", SCRATCH_BYTES) {
        return;
    }
    let started = Instant::now();
    let lab = LabNetwork::create(LabSpec::wpp(NODES, Some(RATE)))
        .await
        .unwrap();
    let scratch = Tmpfs::mount("wpp", SCRATCH_BYTES);
    let server = TestServer::options()
        .args(&["--listen", &format!("{}:0", lab.host_address())])
        .start();
    let cli = Cli::login(&server);
    let api = server.admin().await;
    api.create_project("shop", false, None).await;
    let pool = LabPool::of(&lab);
    pool.create(&cli, "shop");
    for side in sides() {
        let shown = show_side(&server, &cli, &lab, &pool, &scratch.dir, side).await;
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
    pool: &LabPool,
    scratch: &Path,
    side: Side,
) -> Shown {
    let tag = side.name();
    let image_bytes = push_image(server, "shop/big", tag, RANDOM_LAYERS, LAYER_BYTES)
        .await
        .bytes;
    let mut agents = Agents::new(scratch.join(side.name()));
    for machine in lab.machines() {
        let token = pool.join_token(server).await;
        let name = format!("wpp-{}-{}", side.name(), machine.index);
        let labels = format!("{SIDE_LABEL}={}", side.name());
        agents.start(
            server,
            lab,
            machine,
            &name,
            &labels,
            side.agent_args(),
            &token,
        );
    }
    wait_for(
        &format!("{NODES} {tag} nodes ready"),
        Duration::from_secs(60),
        || (ready_nodes(cli, SIDE_LABEL, side.name()) == NODES).then_some(()),
    );
    let before = origin_bytes(server).await;
    let started = Instant::now();
    let image = format!("{}/shop/big:{tag}", server.host());
    let name = deployment_name(side);
    let selector = (SIDE_LABEL, side.name());
    cli.run_with(
        &["apply", "-f", "-"],
        &deployment(&name, NODES, selector, &image),
    );
    let pods = wait_for(
        &format!("{NODES} {tag} pods running"),
        Duration::from_secs(240),
        || running_pods(cli, &name, NODES),
    );
    let elapsed = started.elapsed();
    let origin_bytes = origin_bytes(server).await - before;
    let nodes = nodes_of(&pods);
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
    cli.run(&["delete", "deployment", &name, "-p", "shop"]);
    wait_for(
        &format!("the {tag} pods gone"),
        Duration::from_secs(90),
        || pods_of(cli, &name).is_empty().then_some(()),
    );
    drop(agents);
    Shown {
        elapsed,
        origin_bytes,
        image_bytes,
    }
}

fn deployment_name(side: Side) -> String {
    format!("big-{}", side.name())
}
