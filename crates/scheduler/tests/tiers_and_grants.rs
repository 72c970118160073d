//! Placement by tier (required and preferred node affinity) and machine
//! permissions (pool grants and their quotas), as the seed's cluster of old
//! and new machines needs them.

use wharf_scheduler::{
    FilterReason, LabelRequirement, NodeAffinity, NodeInfo, NodeSelectorTerm, POOL_LABEL, PodInfo,
    PoolAccess, PoolQuota, Resources, Scheduler, Snapshot, TIER_LABEL,
};

const GIB: u64 = 1 << 30;

/// Two old 12c16g batch machines and two new 32c32g core machines.
fn seed_cluster() -> Snapshot {
    let old = |name: &str| {
        NodeInfo::new(name, Resources::new(12_000, 16 * GIB, 110))
            .with_label(POOL_LABEL, "batch")
            .with_label(TIER_LABEL, "batch")
    };
    let new = |name: &str| {
        NodeInfo::new(name, Resources::new(32_000, 32 * GIB, 110))
            .with_label(POOL_LABEL, "core")
            .with_label(TIER_LABEL, "core")
    };
    Snapshot::from_nodes([old("old-1"), old("old-2"), new("new-1"), new("new-2")])
}

fn tier(name: &str) -> NodeSelectorTerm {
    NodeSelectorTerm::of(LabelRequirement::is_in(TIER_LABEL, [name]))
}

fn placed(snapshot: &mut Snapshot, pod: &PodInfo) -> String {
    let placement = Scheduler::default().schedule(snapshot, pod).unwrap();
    snapshot.assume(placement.node, pod).unwrap();
    placement.node_name
}

#[test]
fn a_required_tier_keeps_pods_on_its_machines_and_names_it_when_full() {
    let mut snapshot = seed_cluster();
    let core = PodInfo::new(10_000, 4 * GIB)
        .with_owner("shop/web")
        .with_affinity(NodeAffinity::default().with_required(tier("core")));
    for _ in 0..6 {
        assert!(placed(&mut snapshot, &core).starts_with("new-"));
    }
    let refused = Scheduler::default()
        .schedule(&mut snapshot, &core)
        .unwrap_err();
    assert_eq!(
        refused.message,
        "0/4 nodes are available: 2 insufficient cpu, 2 not in tier core."
    );
    assert_eq!(
        refused.count(&FilterReason::NodeAffinityMismatch(
            "not in tier core".into()
        )),
        2
    );
}

#[test]
fn a_preferred_tier_wins_while_it_has_room_then_spills_over() {
    let mut snapshot = seed_cluster();
    let core = PodInfo::new(10_000, 4 * GIB)
        .with_owner("shop/web")
        .with_affinity(NodeAffinity::default().with_preferred(100, tier("core")));
    for _ in 0..6 {
        let placement = Scheduler::default().schedule(&mut snapshot, &core).unwrap();
        assert!(placement.node_name.starts_with("new-"), "{placement:?}");
        assert_eq!(placement.scores.node_affinity, Some(100.0));
        snapshot.assume(placement.node, &core).unwrap();
    }
    let spilled = Scheduler::default().schedule(&mut snapshot, &core).unwrap();
    assert!(spilled.node_name.starts_with("old-"));
    assert_eq!(spilled.scores.node_affinity, Some(0.0));
    let plain = Scheduler::default()
        .schedule(&mut snapshot, &PodInfo::new(100, GIB))
        .unwrap();
    assert_eq!(plain.scores.node_affinity, None);
}

#[test]
fn managed_pools_take_only_granted_projects() {
    let mut snapshot = seed_cluster();
    snapshot.set_pool_access(PoolAccess::default().with_pool("core").with_grant(
        "batch",
        "b",
        PoolQuota::default(),
    ));
    let pod = PodInfo::new(1000, GIB).with_project("b");
    for _ in 0..4 {
        assert!(placed(&mut snapshot, &pod).starts_with("old-"));
    }
    let must_be_core = pod
        .clone()
        .with_affinity(NodeAffinity::default().with_required(tier("core")));
    let refused = Scheduler::default()
        .schedule(&mut snapshot, &must_be_core)
        .unwrap_err();
    assert_eq!(
        refused.message,
        "0/4 nodes are available: 2 not in tier core, 2 pool core: project b has no grant."
    );
    snapshot.set_pool_access(
        PoolAccess::default()
            .with_grant("core", "b", PoolQuota::default())
            .with_grant("batch", "b", PoolQuota::default()),
    );
    assert!(placed(&mut snapshot, &must_be_core).starts_with("new-"));
}

#[test]
fn a_grant_quota_stops_the_pod_beyond_it() {
    let mut snapshot = seed_cluster();
    let quota = PoolQuota {
        cpu_millis: Some(3000),
        ..PoolQuota::default()
    };
    snapshot.set_pool_access(
        PoolAccess::default()
            .with_grant("core", "b", quota)
            .with_pool("batch"),
    );
    let pod = PodInfo::new(1000, GIB).with_project("b");
    for _ in 0..3 {
        assert!(placed(&mut snapshot, &pod).starts_with("new-"));
    }
    assert_eq!(
        snapshot.pool_requested("core", "b"),
        Resources::new(3000, 3 * GIB, 3)
    );
    let refused = Scheduler::default()
        .schedule(&mut snapshot, &pod)
        .unwrap_err();
    assert_eq!(
        refused.message,
        "0/4 nodes are available: 2 pool batch: project b has no grant, \
         2 pool core: project b would exceed its cpu quota of 3000m."
    );
    let id = snapshot.node_id("new-1").unwrap();
    assert_eq!(
        snapshot.check_fit(id, &pod).unwrap().unwrap().to_string(),
        "pool core: project b would exceed its cpu quota of 3000m"
    );
    // Freeing one pod's worth makes room again.
    let holder = ["new-1", "new-2"]
        .into_iter()
        .filter_map(|name| snapshot.node_id(name))
        .find(|&id| snapshot.requested(id).is_some_and(|r| r.pods > 0))
        .unwrap();
    snapshot.forget(holder, &pod).unwrap();
    assert!(placed(&mut snapshot, &pod).starts_with("new-"));
}
