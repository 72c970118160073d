//! Soft preferences one by one, each with only its own weight switched on
//! (or against the defaults where the interplay matters), and tie-breaking.

use wharf_scheduler::{
    IDC_LABEL, MACHINE_CLASS_LABEL, NodeInfo, PodInfo, Resources, Scheduler, SchedulerConfig,
    ScoreWeights, Snapshot, Strategy, Taint, TaintEffect, Toleration,
};

const GIB: u64 = 1 << 30;

fn node(name: &str) -> NodeInfo {
    NodeInfo::new(name, Resources::new(8000, 16 * GIB, 110))
}

fn with_usage(name: &str, cpu: u64, memory: u64) -> NodeInfo {
    let mut n = node(name);
    n.allocated = Resources::new(cpu, memory, 1);
    n
}

fn only(weights: ScoreWeights) -> Scheduler {
    Scheduler::new(SchedulerConfig {
        weights,
        ..SchedulerConfig::default()
    })
}

fn pick(scheduler: &Scheduler, nodes: Vec<NodeInfo>, pod: &PodInfo) -> String {
    let mut snapshot = Snapshot::from_nodes(nodes);
    scheduler
        .schedule(&mut snapshot, pod)
        .expect("a node fits")
        .node_name
}

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let scheduler = only(ScoreWeights {
        allocation: 1,
        ..ScoreWeights::none()
    });
    let nodes = vec![
        with_usage("a", 6000, 12 * GIB),
        with_usage("b", 1000, 2 * GIB),
    ];
    assert_eq!(pick(&scheduler, nodes, &PodInfo::new(500, GIB)), "b");
}

#[test]
fn most_allocated_prefers_the_fuller_node_that_still_fits() {
    let scheduler = Scheduler::new(SchedulerConfig {
        strategy: Strategy::MostAllocated,
        weights: ScoreWeights {
            allocation: 1,
            ..ScoreWeights::none()
        },
        ..SchedulerConfig::default()
    });
    let nodes = vec![
        with_usage("a", 6000, 12 * GIB),
        with_usage("b", 1000, 2 * GIB),
        with_usage("c", 7800, 15 * GIB),
    ];
    assert_eq!(pick(&scheduler, nodes, &PodInfo::new(500, GIB)), "a");
}

#[test]
fn bin_packing_fills_nodes_one_after_another() {
    let scheduler = Scheduler::new(SchedulerConfig {
        strategy: Strategy::MostAllocated,
        ..SchedulerConfig::default()
    });
    let mut snapshot = Snapshot::from_nodes((0..6).map(|i| node(&format!("n{i}"))));
    let pod = PodInfo::new(2000, 4 * GIB);
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let placement = scheduler.schedule(&mut snapshot, &pod).expect("room");
        snapshot.assume(placement.node, &pod).expect("assume");
        used.insert(placement.node_name);
    }
    assert_eq!(used.len(), 2, "4 pods fill a node: {used:?}");
}

#[test]
fn balanced_allocation_avoids_stranding_a_resource() {
    let scheduler = only(ScoreWeights {
        balanced: 1,
        ..ScoreWeights::none()
    });
    // On "a" the cpu-heavy pod would leave cpu nearly full and memory idle.
    let nodes = vec![with_usage("a", 4000, 0), with_usage("b", 0, 8 * GIB)];
    assert_eq!(pick(&scheduler, nodes, &PodInfo::new(3000, GIB / 4)), "b");
}

#[test]
fn replicas_of_one_owner_spread_over_nodes() {
    let mut snapshot = Snapshot::from_nodes([node("a"), node("b"), node("c")]);
    let scheduler = only(ScoreWeights {
        node_spread: 1,
        ..ScoreWeights::none()
    });
    let pod = PodInfo::new(100, GIB).with_owner("shop/web");
    let mut names = Vec::new();
    for _ in 0..3 {
        let placement = scheduler.schedule(&mut snapshot, &pod).expect("room");
        snapshot.assume(placement.node, &pod).expect("assume");
        names.push(placement.node_name);
    }
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn reported_replicas_count_for_spreading() {
    let mut busy = node("a");
    busy.owners.insert("shop/web".into(), 2);
    let pod = PodInfo::new(100, GIB).with_owner("shop/web");
    assert_eq!(
        pick(&Scheduler::default(), vec![busy, node("b")], &pod),
        "b"
    );
}

#[test]
fn replicas_land_in_another_idc_before_doubling_up() {
    let mut snapshot = Snapshot::from_nodes([
        node("a1").with_label(IDC_LABEL, "east"),
        node("a2").with_label(IDC_LABEL, "east"),
        node("a3").with_label(IDC_LABEL, "east"),
        node("b1").with_label(IDC_LABEL, "west"),
    ]);
    let scheduler = Scheduler::default();
    let pod = PodInfo::new(100, GIB).with_owner("shop/web");
    let mut names = Vec::new();
    for _ in 0..2 {
        let placement = scheduler.schedule(&mut snapshot, &pod).expect("room");
        snapshot.assume(placement.node, &pod).expect("assume");
        names.push(placement.node_name);
    }
    names.sort();
    assert_eq!(names, ["a1", "b1"]);
    assert_eq!(snapshot.replicas_in_idc("east", "shop/web"), 1);
    assert_eq!(snapshot.replicas_in_idc("west", "shop/web"), 1);
}

#[test]
fn other_owners_do_not_affect_spreading() {
    let mut busy = node("a");
    busy.owners.insert("shop/db".into(), 5);
    let scheduler = only(ScoreWeights {
        node_spread: 1,
        ..ScoreWeights::none()
    });
    let pod = PodInfo::new(100, GIB).with_owner("shop/web");
    assert_eq!(pick(&scheduler, vec![busy, node("b")], &pod), "a");
}

#[test]
fn image_locality_prefers_nodes_holding_more_image_bytes() {
    let scheduler = only(ScoreWeights {
        image_locality: 1,
        ..ScoreWeights::none()
    });
    // A base layer of 500 MiB and an app layer of 30 MiB.
    let pod = PodInfo::new(100, GIB)
        .with_layer("sha256:base", 500 << 20)
        .with_layer("sha256:app", 30 << 20);
    let nodes = vec![
        node("a").with_layers(["sha256:other"]),
        node("b").with_layers(["sha256:app"]),
        node("c").with_layers(["sha256:base"]),
    ];
    assert_eq!(pick(&scheduler, nodes, &pod), "c", "most bytes not pulled");
    let nodes = vec![
        node("a").with_layers(["sha256:base"]),
        node("b").with_layers(["sha256:base", "sha256:app"]),
    ];
    assert_eq!(pick(&scheduler, nodes, &pod), "b");
    let mut snapshot = Snapshot::from_nodes([node("b").with_layers(["sha256:app"])]);
    let placed = scheduler.schedule(&mut snapshot, &pod).expect("fits");
    let share = 100.0 * 30.0 / 530.0;
    assert!((placed.scores.image_locality - share).abs() < 0.01);
}

#[test]
fn image_locality_is_neutral_without_a_cache_report_or_known_layers() {
    let scheduler = only(ScoreWeights {
        image_locality: 1,
        ..ScoreWeights::none()
    });
    let pod = PodInfo::new(100, GIB).with_layer("sha256:base", 100 << 20);
    // "a" has a report without the layer: 0 < neutral 50 of unreported "b".
    let nodes = vec![node("a").with_layers(["sha256:other"]), node("b")];
    assert_eq!(pick(&scheduler, nodes, &pod), "b");
    let mut snapshot = Snapshot::from_nodes([node("b")]);
    let placed = scheduler.schedule(&mut snapshot, &pod).expect("fits");
    assert_eq!(placed.scores.image_locality, 50.0);
    // An image of unknown layers (hosted elsewhere) is neutral everywhere,
    // so the name decides.
    let nodes = vec![node("a"), node("b").with_layers(["sha256:base"])];
    assert_eq!(pick(&scheduler, nodes, &PodInfo::new(100, GIB)), "a");
}

#[test]
fn lower_live_load_wins_and_unknown_load_sits_in_the_middle() {
    let scheduler = only(ScoreWeights {
        load: 1,
        ..ScoreWeights::none()
    });
    let loaded = |name: &str, load: Option<f32>| {
        let mut n = node(name);
        n.load = load;
        n
    };
    let mut snapshot = Snapshot::from_nodes([loaded("c", None)]);
    let placed = scheduler.schedule(&mut snapshot, &PodInfo::new(100, GIB));
    assert_eq!(
        placed.expect("fits").scores.load,
        50.0,
        "unreported: neutral"
    );
    let pod = PodInfo::new(100, GIB);
    let nodes = vec![
        loaded("a", Some(0.9)),
        loaded("b", Some(0.2)),
        loaded("c", None),
    ];
    assert_eq!(pick(&scheduler, nodes, &pod), "b");
    let nodes = vec![loaded("a", Some(0.9)), loaded("c", None)];
    assert_eq!(pick(&scheduler, nodes, &pod), "c");
    let nodes = vec![loaded("a", Some(0.1)), loaded("c", None)];
    assert_eq!(pick(&scheduler, nodes, &pod), "a");
}

#[test]
fn a_loaded_node_loses_to_an_idle_one_with_default_weights() {
    let scheduler = Scheduler::default();
    let pod = PodInfo::new(100, GIB);
    // Same room; "a" runs a cpu burner (busy, and a run queue of 8 on 8 cores).
    let mut busy = node("a").with_load(0.95);
    busy.load_average = Some(8.0);
    let idle = node("b").with_load(0.05);
    let mut snapshot = Snapshot::from_nodes([busy, idle]);
    let placed = scheduler.schedule(&mut snapshot, &pod).expect("fits");
    assert_eq!(placed.node_name, "b");
    assert!((placed.scores.load - 95.0).abs() < 0.01);
    let text = placed.scores.describe(&ScoreWeights::default());
    assert!(
        text.contains("load 95.0") && text.contains("node spread 100.0 x2"),
        "{text}"
    );
}

#[test]
fn load_updates_from_heartbeats_change_the_choice() {
    let scheduler = only(ScoreWeights {
        load: 1,
        ..ScoreWeights::none()
    });
    let mut snapshot = Snapshot::from_nodes([node("a"), node("b")]);
    let a = snapshot.node_id("a").expect("a");
    snapshot.set_node_load(a, Some(0.95)).expect("live node");
    let pod = PodInfo::new(100, GIB);
    assert_eq!(
        scheduler
            .schedule(&mut snapshot, &pod)
            .expect("fits")
            .node_name,
        "b"
    );
    assert_eq!(snapshot.node(a).and_then(|n| n.load), Some(0.95));
}

#[test]
fn critical_pods_prefer_newer_machines_and_the_rest_older_ones() {
    let scheduler = only(ScoreWeights {
        machine_class: 1,
        ..ScoreWeights::none()
    });
    let nodes = || {
        vec![
            node("a").with_label(MACHINE_CLASS_LABEL, "2"),
            node("b").with_label(MACHINE_CLASS_LABEL, "5"),
            node("c").with_label(MACHINE_CLASS_LABEL, "3"),
            node("d"),
        ]
    };
    let core = PodInfo::new(100, GIB).with_critical(true);
    assert_eq!(pick(&scheduler, nodes(), &core), "b");
    let batch = PodInfo::new(100, GIB);
    assert_eq!(
        pick(&scheduler, nodes(), &batch),
        "d",
        "missing class counts as 0"
    );
}

#[test]
fn machine_class_range_follows_node_changes() {
    let scheduler = only(ScoreWeights {
        machine_class: 1,
        ..ScoreWeights::none()
    });
    let core = PodInfo::new(100, GIB).with_critical(true);
    let mut snapshot = Snapshot::from_nodes([
        node("a").with_label(MACHINE_CLASS_LABEL, "2"),
        node("b").with_label(MACHINE_CLASS_LABEL, "1"),
    ]);
    assert_eq!(
        scheduler
            .schedule(&mut snapshot, &core)
            .expect("fits")
            .node_name,
        "a"
    );
    snapshot.upsert_node(node("b").with_label(MACHINE_CLASS_LABEL, "9"));
    assert_eq!(
        scheduler
            .schedule(&mut snapshot, &core)
            .expect("fits")
            .node_name,
        "b"
    );
    snapshot.remove_node("b");
    snapshot.upsert_node(node("c").with_label(MACHINE_CLASS_LABEL, "3"));
    assert_eq!(
        scheduler
            .schedule(&mut snapshot, &core)
            .expect("fits")
            .node_name,
        "c"
    );
}

#[test]
fn prefer_no_schedule_taints_push_pods_elsewhere_unless_tolerated() {
    let spot = Taint::new("spot", "", TaintEffect::PreferNoSchedule);
    let nodes = || vec![node("a").with_taint(spot.clone()), node("b")];
    let scheduler = Scheduler::default();
    assert_eq!(pick(&scheduler, nodes(), &PodInfo::new(100, GIB)), "b");
    let tolerant = PodInfo::new(100, GIB).with_toleration(Toleration::exists("spot"));
    assert_eq!(pick(&scheduler, nodes(), &tolerant), "a");
    // Still a place of last resort.
    let mut full = node("b");
    full.allocated = full.capacity;
    assert_eq!(
        pick(
            &scheduler,
            vec![node("a").with_taint(spot), full],
            &PodInfo::new(100, GIB)
        ),
        "a"
    );
}

#[test]
fn equal_scores_go_to_the_smallest_name() {
    let nodes = || vec![node("c"), node("a"), node("b")];
    assert_eq!(
        pick(&Scheduler::default(), nodes(), &PodInfo::new(100, GIB)),
        "a"
    );
    assert_eq!(
        pick(
            &only(ScoreWeights::none()),
            nodes(),
            &PodInfo::new(100, GIB)
        ),
        "a"
    );
    let mut snapshot = Snapshot::from_nodes(nodes());
    snapshot.remove_node("a");
    snapshot.upsert_node(node("0"));
    let placement = Scheduler::default()
        .schedule(&mut snapshot, &PodInfo::new(100, GIB))
        .expect("fits");
    assert_eq!(placement.node_name, "0");
}

#[test]
fn scores_are_weighted_means_between_0_and_100() {
    let mut snapshot = Snapshot::from_nodes([node("a")]);
    let placement = Scheduler::default()
        .schedule(&mut snapshot, &PodInfo::new(0, 0))
        .expect("fits");
    assert!(
        (0.0..=100.0).contains(&placement.score),
        "{}",
        placement.score
    );
    let placement = only(ScoreWeights::none())
        .schedule(&mut snapshot, &PodInfo::new(0, 0))
        .expect("fits");
    assert_eq!(placement.score, 0.0);
}

#[test]
fn request_less_pods_still_spread() {
    let mut snapshot = Snapshot::from_nodes([node("a"), node("b")]);
    let scheduler = only(ScoreWeights {
        allocation: 1,
        ..ScoreWeights::none()
    });
    let pod = PodInfo::new(0, 0);
    let first = scheduler.schedule(&mut snapshot, &pod).expect("fits");
    snapshot.assume(first.node, &pod).expect("assume");
    // Zero requests count as 100m / 200 MiB for scoring only, yet the
    // assumed pod took nothing, so both nodes still look the same.
    let second = scheduler.schedule(&mut snapshot, &pod).expect("fits");
    assert_eq!(first.node_name, second.node_name);
    let small = PodInfo::new(1, 1);
    snapshot.assume(first.node, &small).expect("assume");
    let third = scheduler.schedule(&mut snapshot, &pod).expect("fits");
    assert_ne!(third.node_name, first.node_name);
}

#[test]
fn scoring_limit_scores_the_first_feasible_nodes_from_the_start_offset() {
    let scheduler = Scheduler::new(SchedulerConfig {
        max_nodes_to_score: Some(2),
        ..SchedulerConfig::default()
    });
    let mut snapshot = Snapshot::from_nodes([
        with_usage("a", 7000, 0),
        with_usage("b", 0, 0),
        with_usage("c", 4000, 0),
        with_usage("d", 6000, 0),
    ]);
    let pod = PodInfo::new(100, GIB);
    let from = |snapshot: &mut Snapshot, start| {
        let placement = scheduler
            .schedule_from(snapshot, &pod, start)
            .expect("fits");
        (placement.node_name, placement.feasible_nodes)
    };
    assert_eq!(from(&mut snapshot, 0), ("b".to_string(), 2));
    assert_eq!(from(&mut snapshot, 2), ("c".to_string(), 2));
    // From d the scan wraps around to a; d has more room.
    assert_eq!(from(&mut snapshot, 3), ("d".to_string(), 2));
    let everything = Scheduler::default()
        .schedule(&mut snapshot, &pod)
        .expect("fits");
    assert_eq!(
        (everything.node_name.as_str(), everything.feasible_nodes),
        ("b", 4)
    );
}
