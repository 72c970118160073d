//! Cache of the filters that depend only on a node's name, state, labels
//! and taints, per distinct (required node, node selector, tolerations,
//! node affinity, project where pool grants apply), with each node's
//! preferred-affinity score.
//!
//! Pods of one deployment share their selector and tolerations, so a batch
//! of thousands of pods needs only a handful of entries. With an entry, the
//! hot loop walks the set bits of a bitmap of the nodes that pass and never
//! compares a string; the failure codes kept beside the bitmap explain the
//! other nodes without re-evaluating them.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use crate::filter::{self, FilterReason, StaticAsk, StaticFailure};
use crate::{NodeAffinity, NodeInfo, PodInfo, PoolAccess, Toleration};

/// Failure code of an empty slot (removed node): neither feasible nor counted.
pub(crate) const VACANT: u32 = u32::MAX;
/// Failure code of a node that passes the static filters.
pub(crate) const PASSES: u32 = 0;
/// Entries kept; the least recently used goes first. At 5,000 nodes an
/// entry is about 31 KiB.
const CAPACITY: usize = 128;

/// Static verdicts of every node for one (required node, selector,
/// tolerations).
#[derive(Clone, Debug)]
pub(crate) struct MaskEntry {
    hash: u64,
    required_node: Option<String>,
    selector: BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
    affinity: NodeAffinity,
    /// The project grants are checked for; `None` while no pool is managed.
    project: Option<String>,
    /// Distinct failures seen; code `c > 0` means `reasons[c - 1]`.
    reasons: Vec<FilterReason>,
    /// Per slot: `PASSES`, `VACANT`, or a failure code.
    codes: Vec<u32>,
    /// Per slot: untolerated `PreferNoSchedule` taints.
    preferences: Vec<u16>,
    /// Per slot: the preferred node affinity score (0 when none is asked).
    affinity_scores: Vec<u8>,
    /// Per slot: whether the node passes, as a bitmap for fast iteration.
    bits: Vec<u64>,
    last_used: u64,
}

impl MaskEntry {
    fn new(hash: u64, pod: &PodInfo, project: Option<&str>) -> Self {
        MaskEntry {
            hash,
            required_node: pod.required_node.clone(),
            selector: pod.node_selector.clone(),
            tolerations: pod.tolerations.clone(),
            affinity: pod.affinity.clone(),
            project: project.map(str::to_owned),
            reasons: Vec::new(),
            codes: Vec::new(),
            preferences: Vec::new(),
            affinity_scores: Vec::new(),
            bits: Vec::new(),
            last_used: 0,
        }
    }

    fn matches(&self, hash: u64, pod: &PodInfo, project: Option<&str>) -> bool {
        self.hash == hash
            && self.required_node == pod.required_node
            && self.selector == pod.node_selector
            && self.tolerations == pod.tolerations
            && self.affinity == pod.affinity
            && self.project.as_deref() == project
    }

    /// Bitmap of the slots that pass.
    pub(crate) fn bits(&self) -> &[u64] {
        &self.bits
    }

    /// Failure code per slot.
    pub(crate) fn codes(&self) -> &[u32] {
        &self.codes
    }

    /// The failure a code stands for (`code` must be a failure code).
    pub(crate) fn reason(&self, code: u32) -> Option<&FilterReason> {
        self.reasons.get((code as usize).checked_sub(1)?)
    }

    /// Number of distinct failure codes (codes run `1..=count`).
    pub(crate) fn reason_count(&self) -> usize {
        self.reasons.len()
    }

    /// Untolerated `PreferNoSchedule` taints on the node in `slot`.
    #[inline]
    pub(crate) fn preferences(&self, slot: usize) -> u16 {
        self.preferences.get(slot).copied().unwrap_or(0)
    }

    /// The preferred node affinity score of the node in `slot`.
    #[inline]
    pub(crate) fn affinity_score(&self, slot: usize) -> u8 {
        self.affinity_scores.get(slot).copied().unwrap_or(0)
    }

    /// Re-evaluates one slot; `None` marks it empty.
    fn set(&mut self, slot: usize, node: Option<&NodeInfo>, access: &PoolAccess) {
        if self.codes.len() <= slot {
            self.codes.resize(slot + 1, VACANT);
            self.preferences.resize(slot + 1, 0);
            self.affinity_scores.resize(slot + 1, 0);
            self.bits.resize((slot + 1).div_ceil(64), 0);
        }
        let (code, preferences, affinity) = match node {
            None => (VACANT, 0, 0),
            Some(node) => {
                let ask = StaticAsk {
                    required_node: self.required_node.as_deref(),
                    selector: &self.selector,
                    tolerations: &self.tolerations,
                    affinity: &self.affinity,
                    project: self.project.as_deref(),
                    access,
                };
                let failure = filter::static_failure(node, ask);
                let preferences = filter::untolerated_preferences(node, &self.tolerations);
                (
                    failure.map_or(PASSES, |f| code_for(&mut self.reasons, f)),
                    u16::try_from(preferences).unwrap_or(u16::MAX),
                    self.affinity.preference_score(&node.labels).unwrap_or(0),
                )
            }
        };
        self.codes[slot] = code;
        self.preferences[slot] = preferences;
        self.affinity_scores[slot] = affinity;
        let bit = 1u64 << (slot % 64);
        if code == PASSES {
            self.bits[slot / 64] |= bit;
        } else {
            self.bits[slot / 64] &= !bit;
        }
    }
}

/// The code of `failure`, adding it to the table if new. The table stays
/// tiny (one entry per distinct reason), so a linear scan beats hashing.
fn code_for(reasons: &mut Vec<FilterReason>, failure: StaticFailure<'_>) -> u32 {
    let index = match reasons.iter().position(|r| failure.is(r)) {
        Some(index) => index,
        None => {
            reasons.push(failure.to_reason());
            reasons.len() - 1
        }
    };
    // Distinct reasons are bounded by distinct pools and taint keys.
    index as u32 + 1
}

/// The entries, looked up by a hash of (required node, selector,
/// tolerations).
#[derive(Clone, Debug, Default)]
pub(crate) struct MaskCache {
    entries: Vec<MaskEntry>,
    by_hash: HashMap<u64, Vec<usize>>,
    tick: u64,
}

impl MaskCache {
    /// The entry for `pod`, built from `nodes` (every slot in order, `None`
    /// for empty ones) and the grants in `access` if it is not cached.
    pub(crate) fn entry_for<'n>(
        &mut self,
        pod: &PodInfo,
        access: &PoolAccess,
        nodes: impl Iterator<Item = Option<&'n NodeInfo>>,
    ) -> usize {
        self.tick += 1;
        let project = filter::granted_project(pod.project.as_deref(), access);
        let hash = key_hash(pod, project);
        let found = self.by_hash.get(&hash).and_then(|candidates| {
            candidates
                .iter()
                .copied()
                .find(|&i| self.entries[i].matches(hash, pod, project))
        });
        let index = match found {
            Some(index) => index,
            None => self.insert(build(MaskEntry::new(hash, pod, project), access, nodes)),
        };
        self.entries[index].last_used = self.tick;
        index
    }

    /// A cached entry by index, as returned by `entry_for`.
    pub(crate) fn get(&self, index: usize) -> &MaskEntry {
        &self.entries[index]
    }

    /// Re-evaluates `slot` in every entry after the node there changed.
    pub(crate) fn refresh_slot(
        &mut self,
        slot: usize,
        node: Option<&NodeInfo>,
        access: &PoolAccess,
    ) {
        for entry in &mut self.entries {
            entry.set(slot, node, access);
        }
    }

    fn insert(&mut self, entry: MaskEntry) -> usize {
        let hash = entry.hash;
        let index = if self.entries.len() < CAPACITY {
            self.entries.push(entry);
            self.entries.len() - 1
        } else {
            let victim = self.least_recently_used();
            self.unlink(victim);
            self.entries[victim] = entry;
            victim
        };
        self.by_hash.entry(hash).or_default().push(index);
        index
    }

    fn least_recently_used(&self) -> usize {
        let mut victim = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.last_used < self.entries[victim].last_used {
                victim = i;
            }
        }
        victim
    }

    fn unlink(&mut self, index: usize) {
        let hash = self.entries[index].hash;
        if let Some(indexes) = self.by_hash.get_mut(&hash) {
            indexes.retain(|&i| i != index);
            if indexes.is_empty() {
                self.by_hash.remove(&hash);
            }
        }
    }
}

fn build<'n>(
    mut entry: MaskEntry,
    access: &PoolAccess,
    nodes: impl Iterator<Item = Option<&'n NodeInfo>>,
) -> MaskEntry {
    for (slot, node) in nodes.enumerate() {
        entry.set(slot, node, access);
    }
    entry
}

fn key_hash(pod: &PodInfo, project: Option<&str>) -> u64 {
    let mut hasher = DefaultHasher::new();
    pod.required_node.hash(&mut hasher);
    pod.node_selector.hash(&mut hasher);
    pod.tolerations.hash(&mut hasher);
    pod.affinity.hash(&mut hasher);
    project.hash(&mut hasher);
    hasher.finish()
}

/// Calls `visit` with each set bit of `bits` in `from..to`, in increasing
/// order, until it returns `false`. Returns whether it ran to the end.
#[inline]
pub(crate) fn for_each_set_bit(
    bits: &[u64],
    from: usize,
    to: usize,
    mut visit: impl FnMut(usize) -> bool,
) -> bool {
    if from >= to {
        return true;
    }
    let first = from / 64;
    let last = (to - 1) / 64;
    for index in first..=last {
        let mut word = bits.get(index).copied().unwrap_or(0);
        if index == first {
            word &= !0u64 << (from % 64);
        }
        let end = to - index * 64;
        if end < 64 {
            word &= (1u64 << end) - 1;
        }
        while word != 0 {
            let bit = word.trailing_zeros() as usize;
            if !visit(index * 64 + bit) {
                return false;
            }
            word &= word - 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{POOL_LABEL, Resources};

    fn collect(bits: &[u64], from: usize, to: usize) -> Vec<usize> {
        let mut seen = Vec::new();
        for_each_set_bit(bits, from, to, |i| {
            seen.push(i);
            true
        });
        seen
    }

    #[test]
    fn set_bits_are_visited_in_range() {
        let bits = [0b1011u64, 1 << 63, 1];
        assert_eq!(collect(&bits, 0, 200), vec![0, 1, 3, 127, 128]);
        assert_eq!(collect(&bits, 1, 128), vec![1, 3, 127]);
        assert_eq!(collect(&bits, 2, 127), vec![3]);
        assert_eq!(collect(&bits, 5, 5), Vec::<usize>::new());
    }

    #[test]
    fn visiting_stops_when_asked() {
        let mut seen = 0;
        let finished = for_each_set_bit(&[!0u64], 0, 64, |_| {
            seen += 1;
            seen < 3
        });
        assert!(!finished);
        assert_eq!(seen, 3);
    }

    #[test]
    fn entries_are_shared_by_equal_keys_and_evicted_least_recently_used() {
        let web = NodeInfo::new("a", Resources::ZERO).with_label(POOL_LABEL, "web");
        let nodes = [Some(&web), None];
        let mut cache = MaskCache::default();
        let open = PoolAccess::default();
        let pod = PodInfo::new(1, 1).with_selector(POOL_LABEL, "web");
        let first = cache.entry_for(&pod, &open, nodes.iter().copied());
        assert_eq!(
            cache.entry_for(&pod.clone(), &open, nodes.iter().copied()),
            first
        );
        assert_eq!(cache.get(first).codes(), &[PASSES, VACANT]);
        for i in 0..CAPACITY {
            let other = PodInfo::new(1, 1).with_selector("k", i.to_string());
            cache.entry_for(&other, &open, nodes.iter().copied());
        }
        assert_eq!(cache.entries.len(), CAPACITY);
        let rebuilt = cache.entry_for(&pod, &open, nodes.iter().copied());
        assert!(cache.get(rebuilt).matches(key_hash(&pod, None), &pod, None));
        let total: usize = cache.by_hash.values().map(Vec::len).sum();
        assert_eq!(total, CAPACITY);
    }

    #[test]
    fn refresh_updates_codes_and_bits() {
        let mut node = NodeInfo::new("a", Resources::ZERO);
        let mut cache = MaskCache::default();
        let pod = PodInfo::new(1, 1);
        let open = PoolAccess::default();
        let index = cache.entry_for(&pod, &open, [Some(&node)].into_iter());
        assert_eq!(cache.get(index).bits(), &[1]);
        node.ready = false;
        cache.refresh_slot(0, Some(&node), &open);
        let entry = cache.get(index);
        assert_eq!(entry.bits(), &[0]);
        assert_eq!(
            entry.reason(entry.codes()[0]),
            Some(&FilterReason::NotReady)
        );
        cache.refresh_slot(3, None, &open);
        assert_eq!(cache.get(index).codes(), &[1, VACANT, VACANT, VACANT]);
    }
}
