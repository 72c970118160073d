//! The pool autoscaler's arithmetic, without IO: what a new machine of a
//! pool would look like to the scheduler, and how many of them pending
//! pods need. The fit itself is the scheduler core's: pods are placed on
//! a snapshot holding the pool's nodes plus hypothetical ones, exactly as
//! the scheduling loop would place them.

use std::collections::BTreeSet;

use wharf_api::{
    Cluster, LABEL_CLUSTER, LABEL_CLUSTER_KIND, LABEL_IDC, LABEL_MACHINE_CLASS, LABEL_POOL,
    LABEL_TIER, MachineClass, Pool, QuantityRange, parse_cpu_millis, parse_memory_bytes,
};
use wharf_scheduler::{NodeInfo, PodInfo, Resources, Scheduler, Snapshot};

use crate::scheduling::scheduler_taint;

/// Pod slots of a machine the autoscaler has not seen yet (the agent's
/// default).
const TEMPLATE_PODS: u32 = 110;

/// The smallest amount a range promises: its `min`, else its `max`.
fn least(range: Option<&QuantityRange>) -> Option<&str> {
    let range = range?;
    range.min.as_deref().or(range.max.as_deref())
}

/// Node `name` as a new machine of `class` would join `pool` of `cluster`:
/// the class's least capacity (a machine of the class has at least that),
/// the pool's labels and taints and the inventory labels.
pub(crate) fn template_node(
    name: &str,
    cluster: &Cluster,
    pool: &Pool,
    class: &MachineClass,
) -> Result<NodeInfo, String> {
    let class_name = &class.metadata.name;
    let cpu = least(class.spec.cpu.as_ref())
        .ok_or_else(|| format!("machine class {class_name} gives no cpu"))?;
    let memory = least(class.spec.memory.as_ref())
        .ok_or_else(|| format!("machine class {class_name} gives no memory"))?;
    let cpu = parse_cpu_millis("cpu", cpu).map_err(|e| e.to_string())?;
    let memory = parse_memory_bytes("memory", memory).map_err(|e| e.to_string())?;
    let mut node = NodeInfo::new(name, Resources::new(cpu, memory, TEMPLATE_PODS));
    node.labels = pool.spec.labels.clone();
    let inventory = [
        (LABEL_POOL, pool.metadata.name.as_str()),
        (LABEL_CLUSTER, cluster.metadata.name.as_str()),
        (LABEL_CLUSTER_KIND, cluster.spec.kind.as_str()),
        (LABEL_MACHINE_CLASS, class_name.as_str()),
        (LABEL_TIER, class.spec.tier.as_str()),
    ];
    for (key, value) in inventory {
        node.labels.insert(key.into(), value.into());
    }
    if let Some(idc) = &cluster.spec.idc {
        node.labels.insert(LABEL_IDC.into(), idc.clone());
    }
    node.taints = pool.spec.taints.iter().map(scheduler_taint).collect();
    Ok(node)
}

/// What pending pods need of a pool.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ScaleUpPlan {
    /// New machines to make.
    pub new_machines: u32,
    /// The pods (indices into those given) a new machine is for.
    pub helped: Vec<usize>,
    /// Nodes already there (or on their way) that pods would be placed
    /// on: not unused, whatever their pods now.
    pub awaited: BTreeSet<String>,
}

/// How many new machines like `template` the `pending` pods need, at most
/// `room`, on top of what `snapshot` (the pool's nodes and machines on
/// their way) already offers. Pods that would not fit even a new machine
/// are left out: more machines would not help them.
pub(crate) fn machines_needed(
    scheduler: &Scheduler,
    mut snapshot: Snapshot,
    template: &NodeInfo,
    pending: &[PodInfo],
    room: u32,
) -> ScaleUpPlan {
    let mut plan = ScaleUpPlan::default();
    for (index, pod) in pending.iter().enumerate() {
        if let Ok(placement) = scheduler.schedule(&mut snapshot, pod) {
            let _ = snapshot.assume(placement.node, pod);
            if placement.node_name.starts_with(NEW_MACHINE) {
                plan.helped.push(index);
            } else {
                plan.awaited.insert(placement.node_name);
            }
            continue;
        }
        if plan.new_machines == room {
            continue;
        }
        let name = format!("{NEW_MACHINE}{}", plan.new_machines);
        let mut machine = template.clone();
        machine.name = name.clone();
        let id = snapshot.upsert_node(machine);
        if scheduler.schedule(&mut snapshot, pod).is_ok() {
            let _ = snapshot.assume(id, pod);
            plan.new_machines += 1;
            plan.helped.push(index);
        } else {
            snapshot.remove_node(&name);
        }
    }
    plan
}

/// Name prefix of the hypothetical machines (no node name has a space).
const NEW_MACHINE: &str = "new machine ";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wharf_api::{ClusterKind, ClusterSpec, MachineClassSpec, ObjectMeta, PoolSpec, Tier};
    use wharf_scheduler::SchedulerConfig;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Cloud cluster `aws`, pool `burst` in it, class `c2` (2 cpu, 4 GiB).
    pub(crate) fn inventory() -> (Cluster, Pool, MachineClass) {
        let cluster = Cluster {
            metadata: meta("aws"),
            spec: ClusterSpec {
                kind: ClusterKind::Cloud,
                idc: Some("eu-west-1a".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let pool = Pool {
            metadata: meta("burst"),
            spec: PoolSpec {
                cluster: "aws".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let class = MachineClass {
            metadata: meta("c2"),
            spec: MachineClassSpec {
                cpu: Some(QuantityRange {
                    min: Some("2".into()),
                    max: Some("4".into()),
                }),
                memory: Some(QuantityRange {
                    min: None,
                    max: Some("4Gi".into()),
                }),
                price_per_hour: 0.1,
                tier: Tier::Batch,
            },
            ..Default::default()
        };
        (cluster, pool, class)
    }

    #[test]
    fn the_template_has_the_least_capacity_and_the_inventory_labels() {
        let (cluster, pool, class) = inventory();
        let node = template_node("t", &cluster, &pool, &class).unwrap();
        assert_eq!(node.capacity, Resources::new(2000, 4 << 30, TEMPLATE_PODS));
        assert_eq!(node.labels[LABEL_POOL], "burst");
        assert_eq!(node.labels[LABEL_CLUSTER_KIND], "cloud");
        assert_eq!(node.labels[LABEL_TIER], "batch");
        assert_eq!(node.labels[LABEL_IDC], "eu-west-1a");
        let mut vague = class.clone();
        vague.spec.cpu = None;
        assert_eq!(
            template_node("t", &cluster, &pool, &vague).unwrap_err(),
            "machine class c2 gives no cpu"
        );
    }

    #[test]
    fn only_as_many_machines_as_the_pods_need_up_to_the_room() {
        let (cluster, pool, class) = inventory();
        let template = template_node("t", &cluster, &pool, &class).unwrap();
        let scheduler = Scheduler::new(SchedulerConfig::default());
        let pod = PodInfo::new(1500, 1 << 30).with_selector(LABEL_POOL, "burst");
        // 1.5 cpu each on 2-cpu machines: one machine per pod.
        let three = vec![pod.clone(); 3];
        let plan = machines_needed(&scheduler, Snapshot::new(), &template, &three, 5);
        assert_eq!((plan.new_machines, plan.helped), (3, vec![0, 1, 2]));
        let plan = machines_needed(&scheduler, Snapshot::new(), &template, &three, 2);
        assert_eq!(
            (plan.new_machines, plan.helped),
            (2, vec![0, 1]),
            "capped by the room"
        );
        // A machine on its way takes one of them.
        let mut coming = template.clone();
        coming.name = "i-1".into();
        let on_its_way = Snapshot::from_nodes([coming]);
        let plan = machines_needed(&scheduler, on_its_way, &template, &three, 5);
        assert_eq!(plan.new_machines, 2);
        assert_eq!(plan.awaited, BTreeSet::from(["i-1".to_string()]));
        // Small pods share a machine.
        let small = vec![PodInfo::new(500, 1 << 20); 3];
        let plan = machines_needed(&scheduler, Snapshot::new(), &template, &small, 5);
        assert_eq!(plan.new_machines, 1);
        // Pods for another pool, or too big for the class, need nothing.
        let elsewhere = vec![
            PodInfo::new(100, 1 << 20).with_selector(LABEL_POOL, "core"),
            PodInfo::new(8000, 1 << 20),
        ];
        let plan = machines_needed(&scheduler, Snapshot::new(), &template, &elsewhere, 5);
        assert_eq!(plan, ScaleUpPlan::default());
    }
}
