//! Per-node storage: the reported node, the pods assumed on top of it, and
//! the compact numbers the hot loop reads.

use crate::intern::Interner;
use crate::score;
use crate::{HostPort, NodeInfo, Resources};

/// The numbers the scheduler reads for every node of every pod, packed into
/// one 48-byte record so a pass over 5,000 nodes stays in cache and needs
/// no pointer chasing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HotNode {
    pub(crate) free_cpu: u64,
    pub(crate) free_memory: u64,
    /// `1 / capacity`, so scoring multiplies instead of dividing.
    pub(crate) inverse_cpu: f32,
    pub(crate) inverse_memory: f32,
    pub(crate) free_pods: u32,
    /// Dense IDC id (unlabelled nodes share the id of "").
    pub(crate) idc: u32,
    pub(crate) load_score: f32,
    /// Machine class, normalised over the cluster's classes.
    pub(crate) class_score: f32,
    /// Position of the node's name in name order, for tie-breaking
    /// without string comparisons.
    pub(crate) rank: u32,
    /// Whether the node reports its layer cache (else image locality is
    /// neutral for it).
    pub(crate) layers_known: bool,
}

impl HotNode {
    /// An empty slot: nothing fits (the static filters exclude it anyway).
    pub(crate) const VACANT: HotNode = HotNode {
        free_cpu: 0,
        free_memory: 0,
        inverse_cpu: 0.0,
        inverse_memory: 0.0,
        free_pods: 0,
        idc: 0,
        load_score: 0.0,
        class_score: 0.0,
        rank: u32::MAX,
        layers_known: false,
    };

    /// Updates the fields that follow from the node's own state; rank and
    /// class score depend on the other nodes and are refreshed separately.
    pub(crate) fn update_from(&mut self, state: &NodeState) {
        let free = state.free();
        let capacity = state.info.capacity;
        self.free_cpu = free.cpu_millis;
        self.free_memory = free.memory_bytes;
        self.free_pods = free.pods;
        self.inverse_cpu = score::inverse(capacity.cpu_millis);
        self.inverse_memory = score::inverse(capacity.memory_bytes);
        self.idc = state.idc;
        self.load_score = load_score(&state.info);
        self.layers_known = state.info.layers.is_some();
    }
}

/// The load score of a node: its load average is counted per core of its
/// cpu capacity.
pub(crate) fn load_score(info: &NodeInfo) -> f32 {
    let cores = info.capacity.cpu_millis as f32 / 1000.0;
    let per_core = info
        .load_average
        .filter(|_| cores > 0.0)
        .map(|load| load / cores);
    score::load(info.load, per_core)
}

/// Usage of the pods recorded with `Snapshot::assume`, kept apart from the
/// reported usage so a node update does not lose them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Assumed {
    pub(crate) requests: Resources,
    /// Host ports with how many assumed pods bind them.
    pub(crate) ports: Vec<(HostPort, u32)>,
    /// Owner ids with how many assumed replicas.
    pub(crate) owners: Vec<(u32, u32)>,
}

/// Interners for the names the indexes key on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Names {
    pub(crate) idcs: Interner,
    pub(crate) owners: Interner,
    pub(crate) layers: Interner,
}

/// A live node.
#[derive(Clone, Debug)]
pub(crate) struct NodeState {
    pub(crate) info: NodeInfo,
    pub(crate) idc: u32,
    pub(crate) class: u32,
    /// Reported replicas per owner id.
    pub(crate) owners: Vec<(u32, u32)>,
    /// Ids of the layer digests in the node's cache.
    pub(crate) layers: Vec<u32>,
    pub(crate) assumed: Assumed,
    /// Reported and assumed host ports, sorted, without duplicates.
    ports_in_use: Vec<HostPort>,
}

impl NodeState {
    /// The state of `info` with `assumed` pods on top.
    pub(crate) fn new(info: NodeInfo, assumed: Assumed, names: &mut Names) -> Self {
        let idc = names.idcs.intern(info.idc().unwrap_or(""));
        let owners = info
            .owners
            .iter()
            .filter(|&(_, &count)| count > 0)
            .map(|(owner, &count)| (names.owners.intern(owner), count))
            .collect();
        let layers = info
            .layers
            .iter()
            .flatten()
            .map(|digest| names.layers.intern(digest))
            .collect();
        let mut state = NodeState {
            class: info.machine_class(),
            info,
            idc,
            owners,
            layers,
            assumed,
            ports_in_use: Vec::new(),
        };
        state.rebuild_ports();
        state
    }

    /// Capacity minus reported and assumed requests, clamped at zero (a
    /// node may be over-committed if its capacity shrank).
    pub(crate) fn free(&self) -> Resources {
        let used = self.info.allocated.saturating_add(self.assumed.requests);
        self.info.capacity.saturating_sub(used)
    }

    /// Reported and assumed requests.
    pub(crate) fn requested(&self) -> Resources {
        self.info.allocated.saturating_add(self.assumed.requests)
    }

    /// Whether a reported or assumed pod binds `port`.
    pub(crate) fn port_in_use(&self, port: HostPort) -> bool {
        self.ports_in_use.binary_search(&port).is_ok()
    }

    /// Reported and assumed replicas per owner id (an owner may appear twice).
    pub(crate) fn owner_replicas(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.owners.iter().chain(&self.assumed.owners).copied()
    }

    /// Recomputes the merged host port list after reported or assumed
    /// ports changed.
    pub(crate) fn rebuild_ports(&mut self) {
        self.ports_in_use.clear();
        self.ports_in_use
            .extend(self.info.host_ports.iter().copied());
        self.ports_in_use
            .extend(self.assumed.ports.iter().map(|&(port, _)| port));
        self.ports_in_use.sort_unstable();
        self.ports_in_use.dedup();
    }
}

/// Adds `count` to `key` in a sorted count list.
pub(crate) fn add_count<K: Ord + Copy>(counts: &mut Vec<(K, u32)>, key: K, count: u32) {
    match counts.binary_search_by(|(k, _)| k.cmp(&key)) {
        Ok(i) => counts[i].1 = counts[i].1.saturating_add(count),
        Err(i) => counts.insert(i, (key, count)),
    }
}

/// Takes `count` from `key` in a sorted count list; `false` (and no change)
/// if there is not that much.
pub(crate) fn take_count<K: Ord + Copy>(counts: &mut Vec<(K, u32)>, key: K, count: u32) -> bool {
    let Ok(i) = counts.binary_search_by(|(k, _)| k.cmp(&key)) else {
        return false;
    };
    match counts[i].1.checked_sub(count) {
        None => false,
        Some(0) => {
            counts.remove(i);
            true
        }
        Some(left) => {
            counts[i].1 = left;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_records_stay_compact() {
        assert!(std::mem::size_of::<HotNode>() <= 48);
    }

    #[test]
    fn count_lists_stay_sorted_and_refuse_to_go_negative() {
        let mut counts = Vec::new();
        add_count(&mut counts, 5u32, 1);
        add_count(&mut counts, 2u32, 2);
        add_count(&mut counts, 5u32, 1);
        assert_eq!(counts, vec![(2, 2), (5, 2)]);
        assert!(!take_count(&mut counts, 2, 3));
        assert!(!take_count(&mut counts, 9, 1));
        assert!(take_count(&mut counts, 2, 2));
        assert_eq!(counts, vec![(5, 2)]);
    }

    #[test]
    fn free_is_clamped_when_over_committed() {
        let mut info = NodeInfo::new("n", Resources::new(1000, 1000, 10));
        info.allocated = Resources::new(1500, 200, 1);
        let state = NodeState::new(info, Assumed::default(), &mut Names::default());
        assert_eq!(state.free(), Resources::new(0, 800, 9));
    }
}
