//! Replica counts per owner, per node and per IDC, for the spread scores.

use std::collections::HashMap;

/// Where one owner's replicas are.
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnerReplicas {
    /// Replicas per node slot.
    pub(crate) nodes: HashMap<u32, u32>,
    /// Replicas per IDC id.
    pub(crate) idcs: HashMap<u32, u32>,
}

/// Replica counts for every owner that has replicas. Sparse, because most
/// owners run on few nodes; the scheduler copies one owner's counts into
/// dense scratch arrays per pod.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpreadIndex {
    owners: HashMap<u32, OwnerReplicas>,
}

impl SpreadIndex {
    /// Where `owner`'s replicas are, if it has any.
    pub(crate) fn get(&self, owner: u32) -> Option<&OwnerReplicas> {
        self.owners.get(&owner)
    }

    /// Records `count` more replicas of `owner` on `slot`, in `idc`.
    pub(crate) fn add(&mut self, owner: u32, slot: usize, idc: u32, count: u32) {
        if count == 0 {
            return;
        }
        let replicas = self.owners.entry(owner).or_default();
        let on_node = replicas.nodes.entry(slot as u32).or_default();
        *on_node = on_node.saturating_add(count);
        let in_idc = replicas.idcs.entry(idc).or_default();
        *in_idc = in_idc.saturating_add(count);
    }

    /// Takes back `count` replicas recorded by `add`; entries that reach
    /// zero are dropped so the index only holds owners with replicas.
    pub(crate) fn remove(&mut self, owner: u32, slot: usize, idc: u32, count: u32) {
        let Some(replicas) = self.owners.get_mut(&owner) else {
            return;
        };
        decrement(&mut replicas.nodes, slot as u32, count);
        decrement(&mut replicas.idcs, idc, count);
        if replicas.nodes.is_empty() {
            self.owners.remove(&owner);
        }
    }
}

fn decrement(counts: &mut HashMap<u32, u32>, key: u32, count: u32) {
    if let Some(value) = counts.get_mut(&key) {
        *value = value.saturating_sub(count);
        if *value == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_up_and_down_and_empty_owners_vanish() {
        let mut index = SpreadIndex::default();
        index.add(7, 1, 0, 2);
        index.add(7, 2, 0, 1);
        let replicas = index.get(7).map(|r| (r.nodes.clone(), r.idcs.clone()));
        assert_eq!(
            replicas,
            Some((HashMap::from([(1, 2), (2, 1)]), HashMap::from([(0, 3)])))
        );
        index.remove(7, 1, 0, 2);
        index.remove(7, 2, 0, 1);
        assert!(index.get(7).is_none());
    }
}
