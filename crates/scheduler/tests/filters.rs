//! Hard constraints one by one: each filter rules nodes out with its own
//! reason, a node is counted under the first filter it fails, and the
//! explanation reads like Kubernetes'.

use wharf_scheduler::{
    FilterReason, HostPort, NodeInfo, POOL_LABEL, PodInfo, Resources, Scheduler, Snapshot, Taint,
    TaintEffect, Toleration, Unschedulable,
};

const GIB: u64 = 1 << 30;

fn node(name: &str) -> NodeInfo {
    NodeInfo::new(name, Resources::new(4000, 8 * GIB, 10))
}

fn pod() -> PodInfo {
    PodInfo::new(1000, GIB)
}

/// Schedules `pod` on a one-node cluster and returns the refusal reason.
fn refusal(node: NodeInfo, pod: &PodInfo) -> Option<FilterReason> {
    let mut snapshot = Snapshot::from_nodes([node]);
    match Scheduler::default().schedule(&mut snapshot, pod) {
        Ok(_) => None,
        Err(refused) => {
            assert_eq!(refused.reasons.len(), 1, "{}", refused.message);
            Some(refused.reasons[0].reason.clone())
        }
    }
}

#[test]
fn not_ready_nodes_are_skipped() {
    let mut sick = node("a");
    sick.ready = false;
    assert_eq!(refusal(sick, &pod()), Some(FilterReason::NotReady));
}

#[test]
fn a_required_node_is_the_only_one_and_explains_itself() {
    let mut snapshot = Snapshot::from_nodes([node("a"), node("b"), node("c")]);
    let scheduler = Scheduler::default();
    let bound = pod().with_required_node("b");
    for _ in 0..3 {
        let placement = scheduler.schedule(&mut snapshot, &bound).unwrap();
        assert_eq!(placement.node_name, "b", "even when others score higher");
        assert_eq!(placement.feasible_nodes, 1);
        snapshot.assume(placement.node, &bound).unwrap();
    }
    // Full now: the required node is counted under its own reason.
    let big = PodInfo::new(2000, GIB).with_required_node("b");
    let refused = scheduler.schedule(&mut snapshot, &big).unwrap_err();
    assert_eq!(
        refused.message,
        "0/3 nodes are available: 2 volume node affinity conflict, 1 insufficient cpu."
    );
    let mut sick = node("b");
    sick.ready = false;
    snapshot.upsert_node(sick);
    let refused = scheduler.schedule(&mut snapshot, &bound).unwrap_err();
    assert_eq!(refused.count(&FilterReason::NotReady), 1);
    assert_eq!(refused.count(&FilterReason::VolumeNodeConflict), 2);
    let gone = pod().with_required_node("z");
    let refused = scheduler.schedule(&mut snapshot, &gone).unwrap_err();
    assert_eq!(refused.count(&FilterReason::VolumeNodeConflict), 3);
    assert!(scheduler.schedule(&mut snapshot, &pod()).is_ok());
}

#[test]
fn cordoned_nodes_are_skipped() {
    let mut cordoned = node("a");
    cordoned.schedulable = false;
    assert_eq!(refusal(cordoned, &pod()), Some(FilterReason::Unschedulable));
}

#[test]
fn node_selector_needs_every_label_with_its_value() {
    let labelled = node("a")
        .with_label("disk", "ssd")
        .with_label("gpu", "a100");
    assert_eq!(
        refusal(labelled.clone(), &pod().with_selector("disk", "ssd")),
        None
    );
    assert_eq!(
        refusal(
            labelled.clone(),
            &pod()
                .with_selector("disk", "ssd")
                .with_selector("gpu", "h100")
        ),
        Some(FilterReason::NodeSelectorMismatch)
    );
    assert_eq!(
        refusal(labelled, &pod().with_selector("zone", "x")),
        Some(FilterReason::NodeSelectorMismatch)
    );
}

#[test]
fn pool_mismatch_has_its_own_reason() {
    let db = node("a").with_label(POOL_LABEL, "db");
    let web_pod = pod().with_selector(POOL_LABEL, "web");
    assert_eq!(
        refusal(db, &web_pod),
        Some(FilterReason::NotInPool("web".into()))
    );
    assert_eq!(
        refusal(node("b"), &web_pod),
        Some(FilterReason::NotInPool("web".into()))
    );
    assert_eq!(
        refusal(node("c").with_label(POOL_LABEL, "web"), &web_pod),
        None
    );
}

#[test]
fn no_schedule_and_no_execute_taints_need_tolerations() {
    for effect in [TaintEffect::NoSchedule, TaintEffect::NoExecute] {
        let tainted = node("a").with_taint(Taint::new("dedicated", "gpu", effect));
        assert_eq!(
            refusal(tainted.clone(), &pod()),
            Some(FilterReason::UntoleratedTaint("dedicated".into()))
        );
        assert_eq!(
            refusal(
                tainted.clone(),
                &pod().with_toleration(Toleration::equal("dedicated", "db"))
            ),
            Some(FilterReason::UntoleratedTaint("dedicated".into()))
        );
        assert_eq!(
            refusal(
                tainted.clone(),
                &pod().with_toleration(Toleration::equal("dedicated", "gpu"))
            ),
            None
        );
        assert_eq!(
            refusal(tainted, &pod().with_toleration(Toleration::everything())),
            None
        );
    }
}

#[test]
fn prefer_no_schedule_taints_do_not_filter() {
    let soft = node("a").with_taint(Taint::new("spot", "", TaintEffect::PreferNoSchedule));
    assert_eq!(refusal(soft, &pod()), None);
}

#[test]
fn toleration_limited_to_another_effect_does_not_help() {
    let tainted = node("a").with_taint(Taint::new("maint", "", TaintEffect::NoExecute));
    let wrong = Toleration::exists("maint").with_effect(TaintEffect::NoSchedule);
    assert_eq!(
        refusal(tainted.clone(), &pod().with_toleration(wrong)),
        Some(FilterReason::UntoleratedTaint("maint".into()))
    );
    let right = Toleration::exists("maint").with_effect(TaintEffect::NoExecute);
    assert_eq!(refusal(tainted, &pod().with_toleration(right)), None);
}

#[test]
fn resources_are_checked_against_what_is_left() {
    let mut full = node("a");
    full.allocated = Resources::new(3500, 2 * GIB, 3);
    assert_eq!(
        refusal(full.clone(), &pod()),
        Some(FilterReason::InsufficientCpu)
    );
    assert_eq!(refusal(full.clone(), &PodInfo::new(500, 6 * GIB)), None);
    assert_eq!(
        refusal(full.clone(), &PodInfo::new(500, 6 * GIB + 1)),
        Some(FilterReason::InsufficientMemory)
    );
    full.allocated.pods = 10;
    assert_eq!(
        refusal(full, &PodInfo::new(0, 0)),
        Some(FilterReason::InsufficientPods)
    );
}

#[test]
fn assumed_pods_use_up_room() {
    let mut snapshot = Snapshot::from_nodes([node("a")]);
    let scheduler = Scheduler::default();
    let big = PodInfo::new(3000, GIB);
    let placement = scheduler.schedule(&mut snapshot, &big).expect("fits once");
    snapshot.assume(placement.node, &big).expect("assume");
    let refused = scheduler
        .schedule(&mut snapshot, &big)
        .expect_err("no room left");
    assert_eq!(refused.count(&FilterReason::InsufficientCpu), 1);
}

#[test]
fn host_ports_conflict_with_reported_and_assumed_pods() {
    let mut busy = node("a");
    busy.host_ports.insert(HostPort::tcp(80));
    let web = pod().with_host_port(HostPort::tcp(80));
    assert_eq!(
        refusal(busy.clone(), &web),
        Some(FilterReason::HostPortConflict(HostPort::tcp(80)))
    );
    assert_eq!(
        refusal(busy, &pod().with_host_port(HostPort::udp(80))),
        None
    );

    let mut snapshot = Snapshot::from_nodes([node("b")]);
    let scheduler = Scheduler::default();
    let dns = pod().with_host_port(HostPort::udp(53));
    let placement = scheduler.schedule(&mut snapshot, &dns).expect("port free");
    snapshot.assume(placement.node, &dns).expect("assume");
    let refused = scheduler
        .schedule(&mut snapshot, &dns)
        .expect_err("port taken");
    assert_eq!(
        refused.message,
        "0/1 nodes are available: 1 host port 53/udp in use."
    );
    snapshot.forget(placement.node, &dns).expect("forget");
    assert!(scheduler.schedule(&mut snapshot, &dns).is_ok());
}

#[test]
fn each_node_counts_once_under_its_first_failure() {
    let mut everything_wrong = node("a").with_label(POOL_LABEL, "db");
    everything_wrong.ready = false;
    everything_wrong.schedulable = false;
    everything_wrong.allocated = Resources::new(4000, 8 * GIB, 10);
    let web_pod = pod().with_selector(POOL_LABEL, "web");
    assert_eq!(
        refusal(everything_wrong.clone(), &web_pod),
        Some(FilterReason::NotReady)
    );
    everything_wrong.ready = true;
    assert_eq!(
        refusal(everything_wrong.clone(), &web_pod),
        Some(FilterReason::Unschedulable)
    );
    everything_wrong.schedulable = true;
    assert_eq!(
        refusal(everything_wrong.clone(), &web_pod),
        Some(FilterReason::NotInPool("web".into()))
    );
    everything_wrong
        .labels
        .insert(POOL_LABEL.into(), "web".into());
    everything_wrong
        .taints
        .push(Taint::new("k", "", TaintEffect::NoSchedule));
    assert_eq!(
        refusal(everything_wrong.clone(), &web_pod),
        Some(FilterReason::UntoleratedTaint("k".into()))
    );
    everything_wrong.taints.clear();
    assert_eq!(
        refusal(everything_wrong, &web_pod),
        Some(FilterReason::InsufficientPods)
    );
}

#[test]
fn explanation_counts_every_node_and_reads_like_kubernetes() {
    let short_of_memory = |name: &str| {
        let mut n = node(name).with_label(POOL_LABEL, "web");
        n.allocated.memory_bytes = 7 * GIB + GIB / 2;
        n
    };
    let mut snapshot = Snapshot::from_nodes([
        short_of_memory("a"),
        short_of_memory("b"),
        short_of_memory("c"),
        node("d").with_label(POOL_LABEL, "db"),
        node("e"),
    ]);
    let refused = Scheduler::default()
        .schedule(&mut snapshot, &pod().with_selector(POOL_LABEL, "web"))
        .expect_err("nothing fits");
    assert_eq!(refused.total_nodes, 5);
    assert_eq!(
        refused.message,
        "0/5 nodes are available: 3 insufficient memory, 2 not in pool web."
    );
    assert_eq!(refused.count(&FilterReason::InsufficientMemory), 3);
    assert_eq!(refused.count(&FilterReason::NotInPool("web".into())), 2);
    assert_eq!(refused.to_string(), refused.message);
}

#[test]
fn explanation_skips_removed_nodes_and_handles_an_empty_cluster() {
    let mut snapshot = Snapshot::from_nodes([node("a"), node("b")]);
    snapshot.remove_node("a");
    let huge = PodInfo::new(10_000, GIB);
    let refused = Scheduler::default()
        .schedule(&mut snapshot, &huge)
        .expect_err("too big");
    assert_eq!(
        refused.message,
        "0/1 nodes are available: 1 insufficient cpu."
    );
    snapshot.remove_node("b");
    let refused = Scheduler::default()
        .schedule(&mut snapshot, &huge)
        .expect_err("no nodes");
    assert_eq!(refused, Unschedulable::new(0, Vec::new()));
    assert_eq!(refused.message, "0/0 nodes are available.");
}

#[test]
fn filters_stay_hard_with_a_scoring_limit() {
    let config = wharf_scheduler::SchedulerConfig {
        max_nodes_to_score: Some(1),
        ..Default::default()
    };
    let mut snapshot = Snapshot::from_nodes([
        node("a").with_label(POOL_LABEL, "db"),
        node("b").with_label(POOL_LABEL, "web"),
        node("c").with_label(POOL_LABEL, "db"),
    ]);
    let scheduler = Scheduler::new(config);
    let web_pod = pod().with_selector(POOL_LABEL, "web");
    for start in 0..5 {
        let placement = scheduler
            .schedule_from(&mut snapshot, &web_pod, start)
            .expect("b fits");
        assert_eq!(placement.node_name, "b");
        assert_eq!(placement.feasible_nodes, 1);
    }
}
