//! The cluster as the scheduler sees it: nodes, their usage, and the
//! indexes that make placing a pod cheap.
//!
//! A snapshot is meant to live as long as the control plane's scheduler:
//! built once, patched from watch events ([`Snapshot::upsert_node`],
//! [`Snapshot::remove_node`]) and from its own decisions
//! ([`Snapshot::assume`], [`Snapshot::forget`]).

mod pools;
mod scratch;
mod spread;
mod state;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::filter::{self, FilterReason, StaticAsk};
use crate::mask::MaskCache;
use crate::score;
use crate::{NodeInfo, PodInfo, PoolAccess, Resources, SnapshotError};

use pools::PoolUsage;
pub(crate) use scratch::{Candidate, Scratch};
use spread::SpreadIndex;
pub(crate) use state::HotNode;
use state::{Assumed, Names, NodeState, add_count, load_score, take_count};

/// Handle of a node in a [`Snapshot`].
///
/// Stays valid until the node is removed; a removed node's slot is reused
/// by later nodes, but never under the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    slot: u32,
    generation: u32,
}

impl NodeId {
    /// Position of the node's slot, `0..` the number of slots ever in use.
    pub fn index(self) -> usize {
        self.slot as usize
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    generation: u32,
    pub(crate) node: Option<NodeState>,
}

impl Slot {
    /// Whether the pod binds a host port that is in use on this node.
    #[inline]
    pub(crate) fn port_conflict(&self, pod: &PodInfo) -> bool {
        self.node
            .as_ref()
            .is_some_and(|node| pod.host_ports.iter().any(|&port| node.port_in_use(port)))
    }
}

/// Nodes and the pods on them, with the indexes the scheduler needs.
///
/// Usage of a node is what its [`NodeInfo`] reports plus the pods recorded
/// with [`assume`](Snapshot::assume). A control plane can feed it either
/// way: report usage in `NodeInfo` (and `forget` an assumed pod once a node
/// update counts it), or report empty nodes and `assume`/`forget` every pod
/// from its pod watch.
///
/// ```
/// use wharf_scheduler::{NodeInfo, PodInfo, Resources, Snapshot};
/// let mut snapshot = Snapshot::new();
/// let id = snapshot.upsert_node(NodeInfo::new("n1", Resources::new(4000, 8 << 30, 110)));
/// snapshot.assume(id, &PodInfo::new(1000, 1 << 30)).unwrap();
/// assert_eq!(snapshot.requested(id), Some(Resources::new(1000, 1 << 30, 1)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub(crate) slots: Vec<Slot>,
    /// Hot per-slot numbers, parallel to `slots`.
    pub(crate) hot: Vec<HotNode>,
    by_name: HashMap<String, u32>,
    free_slots: Vec<u32>,
    live: usize,
    names: Names,
    spread: SpreadIndex,
    /// Layer id -> the slots whose cache holds it.
    layer_nodes: HashMap<u32, HashSet<u32>>,
    /// How many live nodes have each machine class.
    classes: BTreeMap<u32, usize>,
    ranks_stale: bool,
    classes_stale: bool,
    pub(crate) masks: MaskCache,
    pub(crate) scratch: Scratch,
    /// Managed pools and their grants.
    pub(crate) access: PoolAccess,
    /// Requests of the assumed pods per (pool, project), for quotas.
    pool_usage: PoolUsage,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Snapshot::default()
    }

    /// A snapshot of `nodes`; a later node with an earlier one's name
    /// replaces it.
    pub fn from_nodes(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        let mut snapshot = Snapshot::new();
        for node in nodes {
            snapshot.upsert_node(node);
        }
        snapshot
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The id of the node called `name`.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        let slot = *self.by_name.get(name)? as usize;
        Some(self.id_of(slot))
    }

    /// The node as last reported.
    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.state(id).ok().map(|state| &state.info)
    }

    /// Every node, in slot order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &NodeInfo)> {
        self.slots.iter().enumerate().filter_map(|(slot, s)| {
            let state = s.node.as_ref()?;
            Some((self.id_of(slot), &state.info))
        })
    }

    /// Requests of the reported and the assumed pods on the node.
    pub fn requested(&self, id: NodeId) -> Option<Resources> {
        self.state(id).ok().map(NodeState::requested)
    }

    /// Replicas of `owner` on the node, reported and assumed.
    pub fn replicas_on_node(&self, id: NodeId, owner: &str) -> u32 {
        let (Some(owner), Ok(_)) = (self.names.owners.get(owner), self.state(id)) else {
            return 0;
        };
        self.spread
            .get(owner)
            .and_then(|replicas| replicas.nodes.get(&id.slot).copied())
            .unwrap_or(0)
    }

    /// Replicas of `owner` on nodes in `idc` ("" for nodes without the
    /// `wharf.io/idc` label).
    pub fn replicas_in_idc(&self, idc: &str, owner: &str) -> u32 {
        let (Some(owner), Some(idc)) = (self.names.owners.get(owner), self.names.idcs.get(idc))
        else {
            return 0;
        };
        self.spread
            .get(owner)
            .and_then(|replicas| replicas.idcs.get(&idc).copied())
            .unwrap_or(0)
    }

    /// Replaces the managed pools and grants (see [`PoolAccess`]); the
    /// cached verdicts are dropped if they changed.
    ///
    /// ```
    /// use wharf_scheduler::{
    ///     NodeInfo, PodInfo, PoolAccess, PoolQuota, Resources, Scheduler, Snapshot, POOL_LABEL,
    /// };
    /// let node = NodeInfo::new("n1", Resources::new(4000, 8 << 30, 110)).with_label(POOL_LABEL, "core");
    /// let mut snapshot = Snapshot::from_nodes([node]);
    /// snapshot.set_pool_access(PoolAccess::default().with_pool("core"));
    /// let pod = PodInfo::new(500, 1 << 30).with_project("b");
    /// let refused = Scheduler::default().schedule(&mut snapshot, &pod).unwrap_err();
    /// assert_eq!(refused.message, "0/1 nodes are available: 1 pool core: project b has no grant.");
    /// snapshot.set_pool_access(PoolAccess::default().with_grant("core", "b", PoolQuota::default()));
    /// assert!(Scheduler::default().schedule(&mut snapshot, &pod).is_ok());
    /// ```
    pub fn set_pool_access(&mut self, access: PoolAccess) {
        if access != self.access {
            self.access = access;
            self.masks = MaskCache::default();
        }
    }

    /// Requests of `project`'s assumed pods on nodes of `pool`.
    pub fn pool_requested(&self, pool: &str, project: &str) -> Resources {
        self.pool_usage.get(pool, project)
    }

    /// Adds a node, or replaces the node with the same name (keeping the
    /// pods assumed on it).
    pub fn upsert_node(&mut self, node: NodeInfo) -> NodeId {
        match self.by_name.get(&node.name) {
            Some(&slot) => self.replace_node(slot as usize, node),
            None => self.insert_node(node),
        }
    }

    /// Removes the node called `name` with everything assumed on it.
    /// Returns its id, now invalid.
    pub fn remove_node(&mut self, name: &str) -> Option<NodeId> {
        let slot = self.by_name.remove(name)? as usize;
        let id = self.id_of(slot);
        self.detach(slot);
        let entry = &mut self.slots[slot];
        entry.node = None;
        entry.generation = entry.generation.wrapping_add(1);
        self.hot[slot] = HotNode::VACANT;
        self.free_slots.push(slot as u32);
        self.live -= 1;
        self.masks.refresh_slot(slot, None, &self.access);
        self.ranks_stale = true;
        self.classes_stale = true;
        Some(id)
    }

    /// Records a new live load for the node: the cheap path for heartbeats
    /// that change nothing else.
    pub fn set_node_load(&mut self, id: NodeId, load: Option<f32>) -> Result<(), SnapshotError> {
        let slot = self.live_slot(id)?;
        if let Some(state) = self.slots[slot].node.as_mut() {
            state.info.load = load;
            self.hot[slot].load_score = load_score(&state.info);
        }
        Ok(())
    }

    /// Records `pod` as placed on the node: its requests, host ports and
    /// owner count on top of the reported usage, so the next pod of a
    /// batch sees it. Does not check that it fits.
    pub fn assume(&mut self, id: NodeId, pod: &PodInfo) -> Result<(), SnapshotError> {
        let slot = self.live_slot(id)?;
        let owner = pod
            .owner
            .as_deref()
            .map(|owner| self.names.owners.intern(owner));
        let Some(state) = self.slots[slot].node.as_mut() else {
            return Err(SnapshotError::UnknownNode(id));
        };
        let requests = state
            .assumed
            .requests
            .checked_add(pod.requests)
            .filter(|&total| state.info.allocated.checked_add(total).is_some())
            .ok_or_else(|| SnapshotError::Overflow {
                node: state.info.name.clone(),
            })?;
        state.assumed.requests = requests;
        for &port in &pod.host_ports {
            add_count(&mut state.assumed.ports, port, 1);
        }
        state.rebuild_ports();
        self.pool_usage.add(state.info.pool(), pod);
        if let Some(owner) = owner {
            add_count(&mut state.assumed.owners, owner, 1);
            self.spread.add(owner, slot, state.idc, 1);
        }
        self.refresh_hot(slot);
        Ok(())
    }

    /// Takes back a pod recorded with [`assume`](Snapshot::assume): its bind
    /// lost a compare-and-swap, it was deleted, or a node update now counts
    /// it. Fails, changing nothing, if no such pod was assumed on the node.
    pub fn forget(&mut self, id: NodeId, pod: &PodInfo) -> Result<(), SnapshotError> {
        let slot = self.live_slot(id)?;
        let owner = pod
            .owner
            .as_deref()
            .map(|owner| self.names.owners.get(owner));
        let Some(state) = self.slots[slot].node.as_mut() else {
            return Err(SnapshotError::UnknownNode(id));
        };
        let not_assumed = || SnapshotError::NotAssumed {
            node: state.info.name.clone(),
        };
        let requests = state.assumed.requests.checked_sub(pod.requests);
        let mut ports = state.assumed.ports.clone();
        let ports_ok = pod
            .host_ports
            .iter()
            .all(|&port| take_count(&mut ports, port, 1));
        let mut owners = state.assumed.owners.clone();
        let owner_ok = match owner {
            None => true,
            Some(None) => false,
            Some(Some(owner)) => take_count(&mut owners, owner, 1),
        };
        let (Some(requests), true, true) = (requests, ports_ok, owner_ok) else {
            return Err(not_assumed());
        };
        state.assumed = Assumed {
            requests,
            ports,
            owners,
        };
        state.rebuild_ports();
        self.pool_usage.remove(state.info.pool(), pod);
        if let Some(Some(owner)) = owner {
            self.spread.remove(owner, slot, state.idc, 1);
        }
        self.refresh_hot(slot);
        Ok(())
    }

    /// Whether `pod` fits on the node now, and if not, the first filter it
    /// fails. The plain reference check, node by node; the scheduler
    /// reaches the same verdicts through its caches.
    pub fn check_fit(
        &self,
        id: NodeId,
        pod: &PodInfo,
    ) -> Result<Option<FilterReason>, SnapshotError> {
        let state = self.state(id)?;
        let failure = filter::static_failure(&state.info, StaticAsk::of(pod, &self.access));
        if let Some(failure) = failure {
            return Ok(Some(failure.to_reason()));
        }
        if let Some(pool) = state.info.pool()
            && let Some((_, reason)) = self.quota_blocked(pod).into_iter().find(|(p, _)| p == pool)
        {
            return Ok(Some(reason));
        }
        Ok(filter::dynamic_failure(
            state.free(),
            |port| state.port_in_use(port),
            pod,
        ))
    }

    /// Prepares the indexes and scratch arrays for scheduling `pod` and
    /// returns its mask entry.
    pub(crate) fn prepare(&mut self, pod: &PodInfo) -> usize {
        self.refresh_ranks();
        self.refresh_classes();
        let slots = &self.slots;
        let mask = self.masks.entry_for(
            pod,
            &self.access,
            slots.iter().map(|s| s.node.as_ref().map(|n| &n.info)),
        );
        self.scratch
            .reserve(self.slots.len(), self.names.idcs.len());
        self.fill_owner_replicas(pod);
        self.fill_image_scores(pod);
        mask
    }

    /// Copies the replica counts of the pod's owner into the scratch arrays.
    fn fill_owner_replicas(&mut self, pod: &PodInfo) {
        let owner = pod.owner.as_deref().and_then(|o| self.names.owners.get(o));
        let Some(replicas) = owner.and_then(|owner| self.spread.get(owner)) else {
            return;
        };
        let scratch = &mut self.scratch;
        for (&slot, &count) in &replicas.nodes {
            scratch.node_replicas[slot as usize] = count;
            scratch.touched_slots.push(slot);
        }
        for (&idc, &count) in &replicas.idcs {
            scratch.idc_replicas[idc as usize] = count;
            scratch.touched_idcs.push(idc);
        }
    }

    /// Sums, per node, the bytes of the pod's layers in its cache and
    /// turns the sums into image locality scores (nodes not touched hold
    /// none of them).
    fn fill_image_scores(&mut self, pod: &PodInfo) {
        let Some(layers) = pod.layers.as_deref() else {
            return;
        };
        let scratch = &mut self.scratch;
        let mut total = 0u64;
        for (i, (digest, size)) in layers.iter().enumerate() {
            // Images of one pod often share their base layers.
            if layers[..i].iter().any(|(earlier, _)| earlier == digest) {
                continue;
            }
            total = total.saturating_add(*size);
            if let Some(id) = self.names.layers.get(digest) {
                scratch.layer_sizes.push((id, *size));
            }
        }
        let first_touched = scratch.touched_slots.len();
        for &(layer, size) in &scratch.layer_sizes {
            for &slot in self.layer_nodes.get(&layer).into_iter().flatten() {
                scratch.image_bytes[slot as usize] += size;
                scratch.touched_slots.push(slot);
            }
        }
        for &slot in &scratch.touched_slots[first_touched..] {
            let slot = slot as usize;
            scratch.image_scores[slot] = score::image_locality(scratch.image_bytes[slot], total);
        }
    }

    /// Gives back the scratch arrays after a pod.
    /// The pools whose grant quota `pod` would exceed, with the reason.
    pub(crate) fn quota_blocked(&self, pod: &PodInfo) -> Vec<(String, FilterReason)> {
        self.pool_usage.blocked(&self.access, pod)
    }

    pub(crate) fn finish(&mut self) {
        self.scratch.clear();
    }

    fn insert_node(&mut self, node: NodeInfo) -> NodeId {
        let slot = match self.free_slots.pop() {
            Some(slot) => slot as usize,
            None => {
                self.slots.push(Slot::default());
                self.hot.push(HotNode::VACANT);
                self.slots.len() - 1
            }
        };
        self.by_name.insert(node.name.clone(), slot as u32);
        let state = NodeState::new(node, Assumed::default(), &mut self.names);
        self.slots[slot].node = Some(state);
        self.live += 1;
        self.attach(slot);
        self.refresh_hot(slot);
        self.refresh_masks(slot);
        self.ranks_stale = true;
        self.classes_stale = true;
        self.id_of(slot)
    }

    fn replace_node(&mut self, slot: usize, node: NodeInfo) -> NodeId {
        self.detach(slot);
        let Some(old) = self.slots[slot].node.take() else {
            // `by_name` only names live slots; recover by inserting afresh.
            self.by_name.remove(&node.name);
            return self.insert_node(node);
        };
        let static_facts_changed = !same_static_facts(&old.info, &node);
        let state = NodeState::new(node, old.assumed, &mut self.names);
        if state.class != old.class {
            self.classes_stale = true;
        }
        self.slots[slot].node = Some(state);
        self.attach(slot);
        self.refresh_hot(slot);
        if static_facts_changed {
            self.refresh_masks(slot);
        }
        self.id_of(slot)
    }

    /// Adds the node's replicas, images and class to the indexes.
    fn attach(&mut self, slot: usize) {
        let Some(state) = self.slots[slot].node.as_ref() else {
            return;
        };
        for (owner, count) in state.owner_replicas() {
            self.spread.add(owner, slot, state.idc, count);
        }
        for &layer in &state.layers {
            self.layer_nodes
                .entry(layer)
                .or_default()
                .insert(slot as u32);
        }
        *self.classes.entry(state.class).or_default() += 1;
    }

    /// Takes what `attach` added back out.
    fn detach(&mut self, slot: usize) {
        let Some(state) = self.slots[slot].node.as_ref() else {
            return;
        };
        for (owner, count) in state.owner_replicas() {
            self.spread.remove(owner, slot, state.idc, count);
        }
        for layer in &state.layers {
            if let Some(nodes) = self.layer_nodes.get_mut(layer) {
                nodes.remove(&(slot as u32));
                if nodes.is_empty() {
                    self.layer_nodes.remove(layer);
                }
            }
        }
        if let Some(count) = self.classes.get_mut(&state.class) {
            *count -= 1;
            if *count == 0 {
                self.classes.remove(&state.class);
                self.classes_stale = true;
            }
        }
    }

    fn refresh_hot(&mut self, slot: usize) {
        match self.slots[slot].node.as_ref() {
            Some(state) => self.hot[slot].update_from(state),
            None => self.hot[slot] = HotNode::VACANT,
        }
    }

    fn refresh_masks(&mut self, slot: usize) {
        let node = self.slots[slot].node.as_ref().map(|state| &state.info);
        self.masks.refresh_slot(slot, node, &self.access);
    }

    /// Renumbers name ranks after nodes came or went; done lazily, once per
    /// batch of node changes, because it sorts every name.
    fn refresh_ranks(&mut self) {
        if !self.ranks_stale {
            return;
        }
        let mut order: Vec<(&str, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| Some((s.node.as_ref()?.info.name.as_str(), slot)))
            .collect();
        order.sort_unstable();
        for (rank, &(_, slot)) in order.iter().enumerate() {
            self.hot[slot].rank = rank as u32;
        }
        self.ranks_stale = false;
    }

    /// Renormalises machine class scores after the set of classes changed.
    fn refresh_classes(&mut self) {
        if !self.classes_stale {
            return;
        }
        let oldest = self.classes.keys().next().copied().unwrap_or(0);
        let newest = self.classes.keys().next_back().copied().unwrap_or(0);
        for (slot, s) in self.slots.iter().enumerate() {
            if let Some(state) = s.node.as_ref() {
                self.hot[slot].class_score = score::machine_class(state.class, oldest, newest);
            }
        }
        self.classes_stale = false;
    }

    pub(crate) fn id_of(&self, slot: usize) -> NodeId {
        NodeId {
            slot: slot as u32,
            generation: self.slots[slot].generation,
        }
    }

    fn live_slot(&self, id: NodeId) -> Result<usize, SnapshotError> {
        self.state(id).map(|_| id.index())
    }

    fn state(&self, id: NodeId) -> Result<&NodeState, SnapshotError> {
        self.slots
            .get(id.index())
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.node.as_ref())
            .ok_or(SnapshotError::UnknownNode(id))
    }
}

/// Whether the filters cached per (selector, tolerations) would say the
/// same about both versions of a node.
fn same_static_facts(old: &NodeInfo, new: &NodeInfo) -> bool {
    old.ready == new.ready
        && old.schedulable == new.schedulable
        && old.labels == new.labels
        && old.taints == new.taints
}
