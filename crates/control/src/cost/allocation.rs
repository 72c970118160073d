//! One node's cost for one minute, shared out among its pods. Pure: the
//! recorder gathers the snapshot, this does the arithmetic, in integer
//! micro-units so that every minute reconciles exactly:
//! node cost = Σ pods' (used + idle) + unallocated.
//!
//! - A node's price per hour becomes micro-units per minute with the
//!   hour's remainder spread over its minutes, so 60 minutes cost exactly
//!   the hourly price.
//! - The minute's cost is split into a CPU share and a memory share in
//!   proportion to the node's capacity weighted by OpenCost's default
//!   relative prices: a core weighs [`CPU_WEIGHT_PER_CORE`], a GiB
//!   [`MEMORY_WEIGHT_PER_GIB`] (0.031611 $/core-hour against
//!   0.004237 $/GiB-hour is about 7.5 to 1).
//! - Each pod is allocated max(request, usage) of each resource, as
//!   OpenCost does; when a node's pods together hold more than it has
//!   (usage above requests), they are scaled down so they never hold more
//!   than the node's cost. A pod's cost of a resource is its share of
//!   the resource's price; the part its usage covers is `used`, the rest
//!   (requested but unused) is `idle`.

use wharf_api::CostMicros;

/// Weight of one core in the CPU/memory split of a node's price.
pub const CPU_WEIGHT_PER_CORE: u128 = 15;
/// Weight of one GiB of memory in the split.
pub const MEMORY_WEIGHT_PER_GIB: u128 = 2;

const GIB: u128 = 1 << 30;

/// What one node is, for one minute.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeMinute {
    /// Its `wharf.io/pool`, `wharf.io/cluster` and `wharf.io/machine-class`
    /// labels (`-` when absent).
    pub groups: NodeGroups,
    /// Its price, micro-units per hour.
    pub price_micros_per_hour: u64,
    /// CPU capacity, millicores.
    pub cpu_millis: u64,
    /// Memory capacity, bytes.
    pub memory_bytes: u64,
    /// The pods bound to it.
    pub pods: Vec<PodMinute>,
}

/// A node's labels a report groups by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeGroups {
    /// `wharf.io/pool`.
    pub pool: String,
    /// `wharf.io/cluster`.
    pub cluster: String,
    /// `wharf.io/machine-class`.
    pub class: String,
}

/// One pod on a node, for one minute.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodMinute {
    /// Its project.
    pub project: String,
    /// Its deployment (`-` for none).
    pub deployment: String,
    /// Requested CPU, millicores.
    pub cpu_request: u64,
    /// Requested memory, bytes.
    pub memory_request: u64,
    /// Measured CPU, millicores (0 when not measured).
    pub cpu_usage: u64,
    /// Measured memory working set, bytes (0 when not measured).
    pub memory_usage: u64,
}

/// Where a row of history belongs: the node's groups, and the pods'
/// project and deployment (both empty for the node's unallocated cost).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// The node's groups.
    pub node: NodeGroups,
    /// The project; empty for unallocated cost.
    pub project: String,
    /// The deployment; empty for unallocated cost.
    pub deployment: String,
}

/// A node's cost in the minute `minute` (unix minutes) of an hourly
/// price: the hour's micro-units spread so its 60 minutes sum to it.
///
/// ```
/// use wharf_control::cost::minute_cost;
/// let hour: u64 = (0..60).map(|m| minute_cost(1_000_001, m)).sum();
/// assert_eq!(hour, 1_000_001);
/// ```
pub fn minute_cost(price_micros_per_hour: u64, minute: u64) -> u64 {
    let m = minute % 60;
    let upto = |k: u64| (price_micros_per_hour as u128 * k as u128 / 60) as u64;
    upto(m + 1) - upto(m)
}

/// Splits `cost` into its CPU and memory shares by the node's capacity
/// (weighted as the module says); all CPU when the node reports neither.
pub fn split_cost(cost: u64, cpu_millis: u64, memory_bytes: u64) -> (u64, u64) {
    // Both weights scaled by 1000 * GiB to stay in integers.
    let cpu = CPU_WEIGHT_PER_CORE * cpu_millis as u128 * GIB;
    let memory = MEMORY_WEIGHT_PER_GIB * memory_bytes as u128 * 1000;
    if cpu + memory == 0 {
        return (cost, 0);
    }
    let cpu_share = (cost as u128 * cpu / (cpu + memory)) as u64;
    (cpu_share, cost - cpu_share)
}

/// One resource's price shared among pods: each pod's (used, idle).
fn share(price: u64, capacity: u64, pods: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let allocations: Vec<u64> = pods.iter().map(|&(req, used)| req.max(used)).collect();
    let held: u128 = allocations.iter().map(|&a| a as u128).sum();
    let denominator = held.max(capacity as u128);
    if denominator == 0 {
        return vec![(0, 0); pods.len()];
    }
    let part = |amount: u64| (price as u128 * amount as u128 / denominator) as u64;
    pods.iter()
        .zip(allocations)
        .map(|(&(_, used), allocation)| {
            let cost = part(allocation);
            let used = part(used.min(allocation));
            (used, cost - used)
        })
        .collect()
}

/// The node's minute as rows: one per (project, deployment) of its pods,
/// and one for its unallocated cost (when not zero). Sums to
/// [`minute_cost`] exactly.
pub fn allocate(node: &NodeMinute, minute: u64) -> Vec<(RowKey, CostMicros)> {
    let cost = minute_cost(node.price_micros_per_hour, minute);
    let (cpu_price, memory_price) = split_cost(cost, node.cpu_millis, node.memory_bytes);
    let shares = |price, capacity, demand: fn(&PodMinute) -> (u64, u64)| {
        share(
            price,
            capacity,
            &node.pods.iter().map(demand).collect::<Vec<_>>(),
        )
    };
    let cpu = shares(cpu_price, node.cpu_millis, |p| (p.cpu_request, p.cpu_usage));
    let memory = shares(memory_price, node.memory_bytes, |p| {
        (p.memory_request, p.memory_usage)
    });
    let mut rows: Vec<(RowKey, CostMicros)> = Vec::new();
    let mut held = 0;
    for ((pod, cpu), memory) in node.pods.iter().zip(cpu).zip(memory) {
        let amounts = CostMicros {
            used: cpu.0 + memory.0,
            idle: cpu.1 + memory.1,
            unallocated: 0,
        };
        held += amounts.total();
        let key = RowKey {
            node: node.groups.clone(),
            project: pod.project.clone(),
            deployment: pod.deployment.clone(),
        };
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, row)) => row.add(&amounts),
            None => rows.push((key, amounts)),
        }
    }
    if cost > held {
        rows.push((
            RowKey {
                node: node.groups.clone(),
                ..RowKey::default()
            },
            CostMicros {
                unallocated: cost - held,
                ..CostMicros::default()
            },
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(project: &str, cpu: (u64, u64), memory: (u64, u64)) -> PodMinute {
        PodMinute {
            project: project.into(),
            deployment: "web".into(),
            cpu_request: cpu.0,
            cpu_usage: cpu.1,
            memory_request: memory.0,
            memory_usage: memory.1,
        }
    }

    fn node(pods: Vec<PodMinute>) -> NodeMinute {
        NodeMinute {
            // 1.20 an hour: 20,000 micro-units a minute.
            price_micros_per_hour: 1_200_000,
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pods,
            ..NodeMinute::default()
        }
    }

    fn sum(rows: &[(RowKey, CostMicros)]) -> u64 {
        rows.iter().map(|(_, m)| m.total()).sum()
    }

    #[test]
    fn the_price_splits_by_weighted_capacity() {
        // 4 cores weigh 60, 8 GiB weigh 16.
        assert_eq!(split_cost(76_000, 4000, 8 << 30), (60_000, 16_000));
        assert_eq!(split_cost(7, 0, 0), (7, 0));
    }

    #[test]
    fn a_pod_pays_for_what_it_requests_and_uses_the_rest_is_unallocated() {
        // Half the CPU requested, a quarter used; no memory.
        let rows = allocate(&node(vec![pod("shop", (2000, 1000), (0, 0))]), 0);
        let (cpu_price, _) = split_cost(20_000, 4000, 8 << 30);
        assert_eq!(rows[0].1.used, cpu_price / 4);
        assert_eq!(rows[0].1.idle, cpu_price / 4);
        assert_eq!(rows[1].0.project, "", "the unallocated row");
        assert_eq!(sum(&rows), 20_000);
    }

    #[test]
    fn usage_above_requests_counts_but_never_more_than_the_node() {
        let rows = allocate(
            &node(vec![
                pod("a", (1000, 4000), (8 << 30, 8 << 30)),
                pod("b", (4000, 0), (0, 1 << 30)),
            ]),
            7,
        );
        // Only the micro-units the division rounds away are left over.
        assert_eq!(sum(&rows), 20_000);
        assert!(rows[2].1.unallocated <= 2, "{rows:?}");
        let rows = allocate(
            &node(vec![pod("a", (3, 5), (11, 13)), pod("a", (7, 1), (17, 2))]),
            7,
        );
        assert_eq!(rows.len(), 2, "one row per deployment, one unallocated");
        assert_eq!(sum(&rows), 20_000);
    }
}
