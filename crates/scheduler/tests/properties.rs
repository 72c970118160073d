//! Property tests over random clusters and pod sequences: placements respect
//! every hard constraint, explanations count every node once and agree with
//! an independent model, replicas spread evenly, bin packing packs, and
//! decisions depend only on the snapshot's contents.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use wharf_scheduler::{
    FilterReason, HostPort, IDC_LABEL, MACHINE_CLASS_LABEL, NodeInfo, POOL_LABEL, PodInfo,
    Resources, Scheduler, SchedulerConfig, Snapshot, Strategy as Packing, Taint, TaintEffect,
    Toleration, TolerationOperator,
};

fn taints() -> Vec<Taint> {
    vec![
        Taint::new("dedicated", "gpu", TaintEffect::NoSchedule),
        Taint::new("dedicated", "db", TaintEffect::NoSchedule),
        Taint::new("spot", "", TaintEffect::PreferNoSchedule),
        Taint::new("maint", "", TaintEffect::NoExecute),
    ]
}

fn tolerations() -> Vec<Toleration> {
    vec![
        Toleration::equal("dedicated", "gpu"),
        Toleration::exists("dedicated"),
        Toleration::exists("spot"),
        Toleration::everything(),
        Toleration::exists("maint").with_effect(TaintEffect::NoExecute),
        Toleration::exists("maint").with_effect(TaintEffect::NoSchedule),
    ]
}

fn ports() -> Vec<HostPort> {
    vec![HostPort::tcp(80), HostPort::tcp(443), HostPort::udp(80)]
}

const IMAGES: [(&str, u64); 2] = [("img/a", 100 << 20), ("img/b", 800 << 20)];

fn subset<T: Clone + std::fmt::Debug + 'static>(
    items: Vec<T>,
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    let len = items.len();
    prop::sample::subsequence(items, 0..=max.min(len))
}

prop_compose! {
    fn arb_node()(
        ready in prop::bool::weighted(0.9),
        schedulable in prop::bool::weighted(0.9),
        pool in prop::option::of(prop::sample::select(vec!["web", "db"])),
        idc in prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        disk in prop::option::of(prop::sample::select(vec!["ssd", "hdd"])),
        class in prop::option::of(0u32..4),
        taints in subset(taints(), 2),
        capacity in (0u64..8000, 0u64..16_000, 0u32..6),
        used in (0u64..=100, 0u64..=100, 0u32..=100),
        host_ports in subset(ports(), 1),
        images in subset(IMAGES.to_vec(), 2),
        owners in subset(vec![("x", 1u32), ("y", 2u32)], 2),
        load in prop::option::of(0.0f32..=1.0),
    ) -> NodeInfo {
        let (cpu, memory, pods) = capacity;
        let mut node = NodeInfo::new("", Resources::new(cpu, memory, pods));
        node.ready = ready;
        node.schedulable = schedulable;
        for (key, value) in [(POOL_LABEL, pool), (IDC_LABEL, idc), ("disk", disk)] {
            if let Some(value) = value {
                node.labels.insert(key.into(), value.into());
            }
        }
        if let Some(class) = class {
            node.labels.insert(MACHINE_CLASS_LABEL.into(), class.to_string());
        }
        node.taints = taints;
        // Reported usage stays within capacity so "never over capacity" is
        // exactly what the scheduler must keep.
        node.allocated = Resources::new(cpu * used.0 / 100, memory * used.1 / 100, pods * used.2 / 100);
        node.host_ports = host_ports.into_iter().collect();
        node.layers = (!images.is_empty()).then(|| images.into_iter().map(|(i, _)| i.to_string()).collect());
        node.owners = owners.into_iter().map(|(o, n)| (o.to_string(), n)).collect();
        node.load = load;
        node
    }
}

prop_compose! {
    fn arb_pod()(
        requests in (0u64..3000, 0u64..6000),
        pool in prop::option::of(prop::sample::select(vec!["web", "db", "batch"])),
        idc in prop::option::of(prop::sample::select(vec!["a", "b"])),
        disk in prop::option::of(prop::sample::select(vec!["ssd"])),
        tolerations in subset(tolerations(), 2),
        host_ports in subset(ports(), 2),
        images in subset(IMAGES.to_vec(), 2),
        owner in prop::option::of(prop::sample::select(vec!["x", "y", "z"])),
        critical in any::<bool>(),
    ) -> PodInfo {
        let mut pod = PodInfo::new(requests.0, requests.1).with_critical(critical);
        for (key, value) in [(POOL_LABEL, pool), (IDC_LABEL, idc), ("disk", disk)] {
            if let Some(value) = value {
                pod = pod.with_selector(key, value);
            }
        }
        pod.tolerations = tolerations;
        pod.host_ports = host_ports;
        pod.layers = (!images.is_empty()).then(|| images.into_iter().map(|(i, s)| (i.to_string(), s)).collect());
        pod.owner = owner.map(str::to_string);
        pod
    }
}

fn named(nodes: Vec<NodeInfo>) -> Vec<NodeInfo> {
    nodes
        .into_iter()
        .enumerate()
        .map(|(i, mut node)| {
            node.name = format!("n{i:02}");
            node
        })
        .collect()
}

fn arb_config() -> impl Strategy<Value = SchedulerConfig> {
    prop::sample::select(vec![Packing::LeastAllocated, Packing::MostAllocated]).prop_map(
        |strategy| SchedulerConfig {
            strategy,
            ..SchedulerConfig::default()
        },
    )
}

/// An independent model of a node, written without the crate's filter code.
struct ModelNode {
    info: NodeInfo,
    used: Resources,
    ports: BTreeSet<HostPort>,
}

impl ModelNode {
    fn new(info: &NodeInfo) -> Self {
        ModelNode {
            info: info.clone(),
            used: info.allocated,
            ports: info.host_ports.clone(),
        }
    }

    fn first_failure(&self, pod: &PodInfo) -> Option<FilterReason> {
        let info = &self.info;
        if !info.ready {
            return Some(FilterReason::NotReady);
        }
        if !info.schedulable {
            return Some(FilterReason::Unschedulable);
        }
        if let Some(pool) = pod.node_selector.get(POOL_LABEL)
            && info.labels.get(POOL_LABEL) != Some(pool)
        {
            return Some(FilterReason::NotInPool(pool.clone()));
        }
        if pod
            .node_selector
            .iter()
            .any(|(k, v)| info.labels.get(k) != Some(v))
        {
            return Some(FilterReason::NodeSelectorMismatch);
        }
        let blocking = |t: &&Taint| t.effect != TaintEffect::PreferNoSchedule;
        if let Some(taint) = info
            .taints
            .iter()
            .filter(blocking)
            .find(|t| !model_tolerated(pod, t))
        {
            return Some(FilterReason::UntoleratedTaint(taint.key.clone()));
        }
        let cap = info.capacity;
        let want = pod.requests;
        if self.used.pods + want.pods > cap.pods {
            return Some(FilterReason::InsufficientPods);
        }
        if self.used.cpu_millis + want.cpu_millis > cap.cpu_millis {
            return Some(FilterReason::InsufficientCpu);
        }
        if self.used.memory_bytes + want.memory_bytes > cap.memory_bytes {
            return Some(FilterReason::InsufficientMemory);
        }
        pod.host_ports
            .iter()
            .find(|p| self.ports.contains(p))
            .map(|&p| FilterReason::HostPortConflict(p))
    }

    fn place(&mut self, pod: &PodInfo) {
        self.used.cpu_millis += pod.requests.cpu_millis;
        self.used.memory_bytes += pod.requests.memory_bytes;
        self.used.pods += pod.requests.pods;
        self.ports.extend(pod.host_ports.iter().copied());
    }
}

fn model_tolerated(pod: &PodInfo, taint: &Taint) -> bool {
    pod.tolerations.iter().any(|t| {
        let effect = t.effect.is_none_or(|e| e == taint.effect);
        let key = t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key);
        let value = t.operator == TolerationOperator::Exists || t.value == taint.value;
        effect && key && value
    })
}

/// Schedules `pods` one by one, checking every decision against the model.
fn check_sequence(
    nodes: &[NodeInfo],
    pods: &[PodInfo],
    config: SchedulerConfig,
) -> Result<(), TestCaseError> {
    let scheduler = Scheduler::new(config);
    let mut snapshot = Snapshot::from_nodes(nodes.iter().cloned());
    let mut model: Vec<ModelNode> = nodes.iter().map(ModelNode::new).collect();
    for pod in pods {
        let failures: Vec<Option<FilterReason>> =
            model.iter().map(|m| m.first_failure(pod)).collect();
        for (m, expected) in model.iter().zip(&failures) {
            let id = snapshot
                .node_id(&m.info.name)
                .expect("node is in the snapshot");
            prop_assert_eq!(&snapshot.check_fit(id, pod).expect("live node"), expected);
        }
        let feasible = failures.iter().filter(|f| f.is_none()).count();
        match scheduler.schedule(&mut snapshot, pod) {
            Ok(placement) => {
                let index = model
                    .iter()
                    .position(|m| m.info.name == placement.node_name)
                    .expect("placement names a node");
                prop_assert_eq!(&failures[index], &None, "placed on an infeasible node");
                prop_assert_eq!(placement.feasible_nodes, feasible);
                prop_assert!((0.0..=100.0).contains(&placement.score));
                snapshot
                    .assume(placement.node, pod)
                    .expect("assume a placed pod");
                model[index].place(pod);
                let node = &model[index];
                prop_assert!(
                    node.used.fits_in(node.info.capacity),
                    "over capacity: {:?}",
                    node.used
                );
                prop_assert_eq!(snapshot.requested(placement.node), Some(node.used));
            }
            Err(refused) => {
                prop_assert_eq!(feasible, 0, "refused although a node fits");
                prop_assert_eq!(refused.total_nodes, nodes.len());
                let counted: usize = refused.reasons.iter().map(|r| r.nodes).sum();
                prop_assert_eq!(counted, nodes.len());
                let mut expected: BTreeMap<FilterReason, usize> = BTreeMap::new();
                for reason in failures.into_iter().flatten() {
                    *expected.entry(reason).or_default() += 1;
                }
                let actual: BTreeMap<FilterReason, usize> = refused
                    .reasons
                    .iter()
                    .map(|r| (r.reason.clone(), r.nodes))
                    .collect();
                prop_assert_eq!(actual, expected);
                let prefix = format!("0/{} nodes are available", nodes.len());
                prop_assert!(refused.message.starts_with(&prefix));
            }
        }
    }
    Ok(())
}

type Decision = Result<(String, f32), String>;

fn decisions(nodes: &[NodeInfo], pods: &[PodInfo], config: SchedulerConfig) -> Vec<Decision> {
    let scheduler = Scheduler::new(config);
    let mut snapshot = Snapshot::from_nodes(nodes.iter().cloned());
    pods.iter()
        .map(|pod| match scheduler.schedule(&mut snapshot, pod) {
            Ok(placement) => {
                snapshot
                    .assume(placement.node, pod)
                    .expect("assume a placed pod");
                Ok((placement.node_name, placement.score))
            }
            Err(refused) => Err(refused.message),
        })
        .collect()
}

/// A change the control plane might apply to a long-lived snapshot.
#[derive(Clone, Debug)]
enum Op {
    Upsert(usize, NodeInfo),
    Remove(usize),
    Schedule(PodInfo),
    Forget(usize),
    Load(usize, Option<f32>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0usize..6, arb_node()).prop_map(|(i, node)| Op::Upsert(i, node)),
        1 => (0usize..6).prop_map(Op::Remove),
        5 => arb_pod().prop_map(Op::Schedule),
        1 => (0usize..8).prop_map(Op::Forget),
        1 => (0usize..6, prop::option::of(0.0f32..=1.0)).prop_map(|(i, l)| Op::Load(i, l)),
    ]
}

/// Applies `ops` to one long-lived snapshot and checks each decision
/// against a snapshot rebuilt from scratch with the same nodes and pods.
fn check_incremental(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let scheduler = Scheduler::default();
    let mut live = Snapshot::new();
    let mut nodes: BTreeMap<String, NodeInfo> = BTreeMap::new();
    let mut assumed: Vec<(String, PodInfo)> = Vec::new();
    for op in ops {
        match op {
            Op::Upsert(i, mut node) => {
                node.name = format!("n{i}");
                nodes.insert(node.name.clone(), node.clone());
                live.upsert_node(node);
            }
            Op::Remove(i) => {
                let name = format!("n{i}");
                prop_assert_eq!(
                    live.remove_node(&name).is_some(),
                    nodes.remove(&name).is_some()
                );
                assumed.retain(|(node, _)| *node != name);
                prop_assert_eq!(live.node_id(&name), None);
            }
            Op::Forget(k) if k < assumed.len() => {
                let (name, pod) = assumed.remove(k);
                let id = live.node_id(&name).expect("assumed on a live node");
                live.forget(id, &pod).expect("forget an assumed pod");
            }
            Op::Forget(_) => {}
            Op::Load(i, load) => {
                let name = format!("n{i}");
                if let (Some(id), Some(node)) = (live.node_id(&name), nodes.get_mut(&name)) {
                    live.set_node_load(id, load).expect("live node");
                    node.load = load;
                }
            }
            Op::Schedule(pod) => {
                let mut rebuilt = Snapshot::from_nodes(nodes.values().rev().cloned());
                for (name, pod) in &assumed {
                    let id = rebuilt.node_id(name).expect("node exists");
                    rebuilt.assume(id, pod).expect("assume again");
                }
                let ours = scheduler.schedule(&mut live, &pod);
                let fresh = scheduler.schedule(&mut rebuilt, &pod);
                match (&ours, &fresh) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(&a.node_name, &b.node_name);
                        prop_assert_eq!(a.score, b.score);
                        prop_assert_eq!(a.feasible_nodes, b.feasible_nodes);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(&a.message, &b.message),
                    _ => prop_assert!(false, "live {:?} but rebuilt {:?}", ours, fresh),
                }
                if let Ok(placement) = ours {
                    live.assume(placement.node, &pod)
                        .expect("assume a placed pod");
                    assumed.push((placement.node_name, pod));
                }
            }
        }
        prop_assert_eq!(live.len(), nodes.len());
    }
    Ok(())
}

fn roomy_node(name: String) -> NodeInfo {
    NodeInfo::new(name, Resources::new(64_000, 256 << 30, 110))
}

/// Places `replicas` identical pods of one owner; returns node names chosen.
fn place_replicas(snapshot: &mut Snapshot, replicas: usize) -> Vec<String> {
    let scheduler = Scheduler::default();
    let pod = PodInfo::new(100, 100 << 20).with_owner("shop/web");
    (0..replicas)
        .map(|_| {
            let placement = scheduler.schedule(snapshot, &pod).expect("plenty of room");
            snapshot.assume(placement.node, &pod).expect("assume");
            placement.node_name
        })
        .collect()
}

fn spread_of(counts: impl Iterator<Item = u32>) -> u32 {
    let counts: Vec<u32> = counts.collect();
    counts.iter().max().copied().unwrap_or(0) - counts.iter().min().copied().unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn placements_respect_constraints_and_explanations_add_up(
        nodes in prop::collection::vec(arb_node(), 0..12).prop_map(named),
        pods in prop::collection::vec(arb_pod(), 1..30),
        config in arb_config(),
    ) {
        check_sequence(&nodes, &pods, config)?;
    }

    #[test]
    fn a_patched_snapshot_decides_like_a_rebuilt_one(ops in prop::collection::vec(arb_op(), 1..40)) {
        check_incremental(ops)?;
    }

    #[test]
    fn same_snapshot_and_pods_give_same_placements(
        nodes in prop::collection::vec(arb_node(), 1..10).prop_map(named),
        pods in prop::collection::vec(arb_pod(), 1..20),
        config in arb_config(),
    ) {
        let first = decisions(&nodes, &pods, config);
        prop_assert_eq!(&first, &decisions(&nodes, &pods, config));
        let mut reversed = nodes.clone();
        reversed.reverse();
        prop_assert_eq!(&first, &decisions(&reversed, &pods, config));
    }

    #[test]
    fn replicas_spread_evenly_over_identical_nodes(nodes in 1usize..=8, replicas in 1usize..=40) {
        let mut snapshot = Snapshot::from_nodes((0..nodes).map(|i| roomy_node(format!("n{i}"))));
        place_replicas(&mut snapshot, replicas);
        let counts = snapshot.nodes().map(|(id, _)| snapshot.replicas_on_node(id, "shop/web"));
        prop_assert!(spread_of(counts) <= 1);
    }

    #[test]
    fn replicas_spread_evenly_over_idcs_and_nodes(
        idcs in 2usize..=4,
        per_idc in 1usize..=4,
        replicas in 1usize..=40,
        order in Just((0..16).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        // Names are shuffled against IDCs so name order cannot do the spreading.
        let nodes = order.iter().filter(|&&i| i < idcs * per_idc).map(|&i| {
            roomy_node(format!("n{:02}", order[i])).with_label(IDC_LABEL, format!("idc-{}", i % idcs))
        });
        let mut snapshot = Snapshot::from_nodes(nodes);
        place_replicas(&mut snapshot, replicas);
        let per_node = snapshot.nodes().map(|(id, _)| snapshot.replicas_on_node(id, "shop/web"));
        prop_assert!(spread_of(per_node) <= 1);
        let per_idc = (0..idcs).map(|i| snapshot.replicas_in_idc(&format!("idc-{i}"), "shop/web"));
        prop_assert!(spread_of(per_idc) <= 1);
    }

    #[test]
    fn bin_packing_uses_no_more_nodes_than_spreading(
        requests in prop::collection::vec((1u64..=1000, 1u64..=2000), 1..30),
    ) {
        let used = |strategy| {
            let config = SchedulerConfig { strategy, ..SchedulerConfig::default() };
            let scheduler = Scheduler::new(config);
            let mut snapshot = Snapshot::from_nodes(
                (0..8).map(|i| NodeInfo::new(format!("n{i}"), Resources::new(8000, 16_000, 110))),
            );
            let mut names = BTreeSet::new();
            for &(cpu, memory) in &requests {
                let pod = PodInfo::new(cpu, memory);
                let placement = scheduler.schedule(&mut snapshot, &pod).expect("room for all");
                snapshot.assume(placement.node, &pod).expect("assume");
                names.insert(placement.node_name);
            }
            names.len()
        };
        let packed = used(Packing::MostAllocated);
        let spread = used(Packing::LeastAllocated);
        prop_assert!(packed <= spread, "most-allocated used {} nodes, least-allocated {}", packed, spread);
        let total_cpu: u64 = requests.iter().map(|r| r.0).sum();
        let total_memory: u64 = requests.iter().map(|r| r.1).sum();
        let lower_bound = total_cpu.div_ceil(8000).max(total_memory.div_ceil(16_000)) as usize;
        prop_assert!(packed <= lower_bound * 2 + 1, "{} nodes for a {}-node load", packed, lower_bound);
    }
}
