//! Keeping one snapshot alive: assume and forget, node updates and removals,
//! node ids, and cached selector verdicts that follow label and taint
//! changes.

use wharf_scheduler::{
    FilterReason, HostPort, NodeInfo, POOL_LABEL, PodInfo, Resources, Scheduler, Snapshot,
    SnapshotError, Taint, TaintEffect,
};

const GIB: u64 = 1 << 30;

fn node(name: &str) -> NodeInfo {
    NodeInfo::new(name, Resources::new(4000, 8 * GIB, 10))
}

#[test]
fn assume_and_forget_round_trip() {
    let mut snapshot = Snapshot::from_nodes([node("a")]);
    let id = snapshot.node_id("a").expect("a");
    let pod = PodInfo::new(1000, GIB)
        .with_owner("shop/web")
        .with_host_port(HostPort::tcp(8080));
    snapshot.assume(id, &pod).expect("assume");
    assert_eq!(snapshot.requested(id), Some(Resources::new(1000, GIB, 1)));
    assert_eq!(snapshot.replicas_on_node(id, "shop/web"), 1);
    assert_eq!(snapshot.replicas_in_idc("", "shop/web"), 1);
    assert_eq!(
        snapshot.check_fit(id, &pod),
        Ok(Some(FilterReason::HostPortConflict(HostPort::tcp(8080))))
    );
    snapshot.forget(id, &pod).expect("forget");
    assert_eq!(snapshot.requested(id), Some(Resources::ZERO));
    assert_eq!(snapshot.replicas_on_node(id, "shop/web"), 0);
    assert_eq!(snapshot.check_fit(id, &pod), Ok(None));
}

#[test]
fn forget_refuses_pods_that_were_not_assumed_and_changes_nothing() {
    let mut snapshot = Snapshot::from_nodes([node("a")]);
    let id = snapshot.node_id("a").expect("a");
    let web = PodInfo::new(1000, GIB).with_owner("shop/web");
    snapshot.assume(id, &web).expect("assume");
    let not_assumed = Err(SnapshotError::NotAssumed { node: "a".into() });
    assert_eq!(snapshot.forget(id, &PodInfo::new(2000, GIB)), not_assumed);
    assert_eq!(
        snapshot.forget(id, &web.clone().with_owner("shop/db")),
        not_assumed
    );
    assert_eq!(
        snapshot.forget(id, &web.clone().with_host_port(HostPort::tcp(1))),
        not_assumed
    );
    assert_eq!(
        snapshot.forget(id, &PodInfo::new(1000, GIB).with_owner("unknown")),
        not_assumed
    );
    assert_eq!(snapshot.requested(id), Some(Resources::new(1000, GIB, 1)));
    assert_eq!(snapshot.replicas_on_node(id, "shop/web"), 1);
    snapshot.forget(id, &web).expect("the real one");
    assert_eq!(snapshot.forget(id, &web), not_assumed);
}

#[test]
fn assume_refuses_counter_overflow() {
    let mut big = node("a");
    big.allocated = Resources::new(u64::MAX - 10, 0, 0);
    let mut snapshot = Snapshot::from_nodes([big]);
    let id = snapshot.node_id("a").expect("a");
    assert_eq!(
        snapshot.assume(id, &PodInfo::new(11, 0)),
        Err(SnapshotError::Overflow { node: "a".into() })
    );
    assert_eq!(
        snapshot.requested(id),
        Some(Resources::new(u64::MAX - 10, 0, 0))
    );
}

#[test]
fn node_updates_keep_assumed_pods() {
    let mut snapshot = Snapshot::from_nodes([node("a")]);
    let id = snapshot.node_id("a").expect("a");
    let pod = PodInfo::new(1000, GIB).with_owner("shop/web");
    snapshot.assume(id, &pod).expect("assume");
    let mut reported = node("a");
    reported.allocated = Resources::new(500, 0, 1);
    assert_eq!(snapshot.upsert_node(reported), id, "same node, same id");
    assert_eq!(snapshot.requested(id), Some(Resources::new(1500, GIB, 2)));
    assert_eq!(snapshot.replicas_on_node(id, "shop/web"), 1);
    // Once the control plane counts the pod in the node's report, it
    // forgets the assumption.
    let mut reported = node("a");
    reported.allocated = Resources::new(1500, GIB, 2);
    reported.owners.insert("shop/web".into(), 1);
    snapshot.upsert_node(reported);
    snapshot.forget(id, &pod).expect("forget");
    assert_eq!(snapshot.requested(id), Some(Resources::new(1500, GIB, 2)));
    assert_eq!(snapshot.replicas_on_node(id, "shop/web"), 1);
}

#[test]
fn label_and_taint_changes_reach_cached_selector_verdicts() {
    let scheduler = Scheduler::default();
    let mut snapshot = Snapshot::from_nodes([node("a").with_label(POOL_LABEL, "db")]);
    let web_pod = PodInfo::new(100, GIB).with_selector(POOL_LABEL, "web");
    assert!(scheduler.schedule(&mut snapshot, &web_pod).is_err());
    snapshot.upsert_node(node("a").with_label(POOL_LABEL, "web"));
    assert!(scheduler.schedule(&mut snapshot, &web_pod).is_ok());
    let tainted = node("a")
        .with_label(POOL_LABEL, "web")
        .with_taint(Taint::new("maint", "", TaintEffect::NoExecute));
    snapshot.upsert_node(tainted);
    let refused = scheduler
        .schedule(&mut snapshot, &web_pod)
        .expect_err("tainted");
    assert_eq!(
        refused.message,
        "0/1 nodes are available: 1 untolerated taint maint."
    );
    let mut cordoned = node("a").with_label(POOL_LABEL, "web");
    cordoned.schedulable = false;
    snapshot.upsert_node(cordoned);
    let refused = scheduler
        .schedule(&mut snapshot, &web_pod)
        .expect_err("cordoned");
    assert_eq!(refused.message, "0/1 nodes are available: 1 cordoned.");
}

#[test]
fn removed_nodes_are_gone_and_their_ids_stay_invalid() {
    let scheduler = Scheduler::default();
    let mut snapshot = Snapshot::from_nodes([node("a"), node("b")]);
    let a = snapshot.node_id("a").expect("a");
    let pod = PodInfo::new(100, GIB).with_owner("shop/web");
    snapshot.assume(a, &pod).expect("assume");
    assert_eq!(snapshot.remove_node("a"), Some(a));
    assert_eq!(snapshot.remove_node("a"), None);
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot.node(a), None);
    assert_eq!(snapshot.assume(a, &pod), Err(SnapshotError::UnknownNode(a)));
    assert_eq!(
        snapshot.replicas_in_idc("", "shop/web"),
        0,
        "replicas left with the node"
    );
    // The slot is reused, under a new id.
    let c = snapshot.upsert_node(node("c"));
    assert_eq!(c.index(), a.index());
    assert_ne!(c, a);
    assert_eq!(snapshot.forget(a, &pod), Err(SnapshotError::UnknownNode(a)));
    assert_eq!(snapshot.requested(c), Some(Resources::ZERO));
    let names: Vec<&str> = snapshot.nodes().map(|(_, n)| n.name.as_str()).collect();
    assert_eq!(names, ["c", "b"]);
    let placement = scheduler.schedule(&mut snapshot, &pod).expect("fits");
    assert_ne!(placement.node_name, "a");
}

#[test]
fn from_nodes_keeps_the_last_node_of_a_name() {
    let mut second = node("a");
    second.ready = false;
    let snapshot = Snapshot::from_nodes([node("a"), second]);
    assert_eq!(snapshot.len(), 1);
    let id = snapshot.node_id("a").expect("a");
    assert_eq!(snapshot.node(id).map(|n| n.ready), Some(false));
    assert!(!snapshot.is_empty());
}

#[test]
fn unknown_ids_are_reported() {
    let mut other = Snapshot::from_nodes([node("x"), node("y")]);
    let y = other.node_id("y").expect("y");
    let mut snapshot = Snapshot::from_nodes([node("a")]);
    assert_eq!(
        snapshot.set_node_load(y, Some(0.5)),
        Err(SnapshotError::UnknownNode(y))
    );
    assert_eq!(
        snapshot.check_fit(y, &PodInfo::new(1, 1)),
        Err(SnapshotError::UnknownNode(y))
    );
    assert_eq!(
        SnapshotError::UnknownNode(y).to_string(),
        "no node with id 1"
    );
    other.remove_node("y");
}

#[test]
fn a_batch_sees_its_own_placements() {
    let scheduler = Scheduler::default();
    let mut snapshot = Snapshot::from_nodes([node("a"), node("b")]);
    let pod = PodInfo::new(1500, GIB);
    let mut placed = 0;
    while let Ok(placement) = scheduler.schedule(&mut snapshot, &pod) {
        snapshot.assume(placement.node, &pod).expect("assume");
        placed += 1;
    }
    assert_eq!(placed, 4, "two 1500m pods per 4000m node");
    for (id, _) in snapshot.nodes() {
        assert_eq!(
            snapshot.requested(id),
            Some(Resources::new(3000, 2 * GIB, 2))
        );
    }
}
