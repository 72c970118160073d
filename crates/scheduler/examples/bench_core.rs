//! Micro benchmark of the scheduler core: places 10,000 pods (200
//! deployments with mixed pools, tolerations, images and criticality) onto
//! 5,000 nodes (pools, IDCs, machine classes, taints, images, live load),
//! one by one with `assume`, and prints pods per second.
//!
//! ```text
//! cargo run --release -p wharf-scheduler --example bench_core [NODES] [PODS] [MAX_NODES_TO_SCORE]
//! ```

use std::time::Instant;

use wharf_scheduler::{
    IDC_LABEL, MACHINE_CLASS_LABEL, NodeInfo, POOL_LABEL, PodInfo, Resources, Scheduler,
    SchedulerConfig, Snapshot, Taint, TaintEffect, Toleration,
};

/// Deterministic xorshift generator, so every run builds the same cluster.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const POOLS: [&str; 3] = ["web", "db", "batch"];
const IMAGES: usize = 40;

fn image(i: usize) -> String {
    format!("registry.local/team/app-{i}:1.0")
}

fn node(rng: &mut Rng, i: usize) -> NodeInfo {
    let mut node = NodeInfo::new(
        format!("node-{i:05}"),
        Resources::new(32_000, (64 + 64 * rng.below(2)) << 30, 110),
    )
    .with_label(IDC_LABEL, format!("idc-{}", rng.below(4)))
    .with_label(MACHINE_CLASS_LABEL, (1 + rng.below(4)).to_string())
    .with_label("wharf.io/cluster-kind", "physical");
    let pool = rng.below(10);
    if pool < 9 {
        node = node.with_label(POOL_LABEL, POOLS[(pool % 3) as usize]);
    }
    match rng.below(100) {
        0..5 => node = node.with_taint(Taint::new("dedicated", "gpu", TaintEffect::NoSchedule)),
        5..15 => node = node.with_taint(Taint::new("spot", "", TaintEffect::PreferNoSchedule)),
        _ => {}
    }
    for _ in 0..rng.below(8) {
        node = node.with_layers([image(rng.below(IMAGES as u64) as usize)]);
    }
    node.ready = rng.below(100) >= 2;
    node.schedulable = rng.below(100) >= 1;
    node.load = (rng.below(5) > 0).then(|| rng.below(100) as f32 / 100.0);
    node
}

fn deployment(rng: &mut Rng, i: usize) -> PodInfo {
    let mut pod = PodInfo::new(250 * (1 + rng.below(8)), (256 << 20) * (1 + rng.below(16)))
        .with_owner(format!("project-{}/deploy-{i}", i % 17))
        .with_layer(
            image(rng.below(IMAGES as u64) as usize),
            (50 + rng.below(450)) << 20,
        )
        .with_critical(rng.below(4) == 0);
    if rng.below(5) > 0 {
        pod = pod.with_selector(POOL_LABEL, POOLS[rng.below(3) as usize]);
    }
    if rng.below(10) == 0 {
        pod = pod.with_toleration(Toleration::equal("dedicated", "gpu"));
    }
    if rng.below(10) == 0 {
        pod = pod.with_selector(IDC_LABEL, format!("idc-{}", rng.below(4)));
    }
    pod
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let nodes = args.first().copied().unwrap_or(5_000);
    let pods = args.get(1).copied().unwrap_or(10_000);
    let max_nodes_to_score = args.get(2).map(|&n| n as u32);
    let scheduler = Scheduler::new(SchedulerConfig {
        max_nodes_to_score,
        ..SchedulerConfig::default()
    });
    println!("{pods} pods onto {nodes} nodes, max_nodes_to_score {max_nodes_to_score:?}");
    run("mixed selectors and taints", &scheduler, nodes, pods, false);
    run(
        "no selectors (every node scored)",
        &scheduler,
        nodes,
        pods,
        true,
    );
}

fn run(scenario: &str, scheduler: &Scheduler, nodes: usize, pods: usize, open: bool) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let build = Instant::now();
    let mut snapshot = Snapshot::from_nodes((0..nodes).map(|i| node(&mut rng, i)));
    let build = build.elapsed();
    let deployments: Vec<PodInfo> = (0..200)
        .map(|i| deployment(&mut rng, i))
        .map(|mut pod| {
            if open {
                pod.node_selector.clear();
            }
            pod
        })
        .collect();

    let start = Instant::now();
    let (mut placed, mut refused) = (0usize, 0usize);
    for i in 0..pods {
        let pod = &deployments[i % deployments.len()];
        match scheduler.schedule_from(&mut snapshot, pod, i) {
            Ok(placement) => {
                snapshot
                    .assume(placement.node, pod)
                    .expect("a placed pod can be assumed");
                placed += 1;
            }
            Err(_) => refused += 1,
        }
    }
    let elapsed = start.elapsed();
    let per_pod = elapsed.as_secs_f64() / pods.max(1) as f64;
    println!("{scenario}: {placed} placed, {refused} unschedulable");
    println!("  snapshot build: {:.1} ms", build.as_secs_f64() * 1e3);
    println!(
        "  schedule + assume: {:.1} ms total, {:.1} us/pod, {:.1} ns/node, {:.0} pods/s",
        elapsed.as_secs_f64() * 1e3,
        per_pod * 1e6,
        per_pod * 1e9 / nodes.max(1) as f64,
        1.0 / per_pod
    );
}
