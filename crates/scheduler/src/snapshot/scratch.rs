//! Per-pod working memory, kept between pods so scheduling allocates
//! nothing once warmed up.

/// A node that passed every filter, with the raw inputs of the scores that
/// are normalised over all candidates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub(crate) slot: u32,
    /// Weighted sum of the scores that need no normalisation.
    pub(crate) base: f32,
    pub(crate) node_replicas: u32,
    pub(crate) idc_replicas: u32,
    pub(crate) preferences: u32,
}

/// Dense per-slot and per-IDC arrays filled from the sparse indexes for the
/// pod at hand and zeroed again afterwards (only the touched entries).
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    /// Replicas of the pod's owner per slot.
    pub(crate) node_replicas: Vec<u32>,
    /// Replicas of the pod's owner per IDC id.
    pub(crate) idc_replicas: Vec<u32>,
    /// Image locality score per slot.
    pub(crate) image_scores: Vec<f32>,
    /// Bytes of the pod's layers cached per slot, summed before scoring.
    pub(crate) image_bytes: Vec<u64>,
    pub(crate) touched_slots: Vec<u32>,
    pub(crate) touched_idcs: Vec<u32>,
    /// The pod's distinct layers that some node holds: id and size.
    pub(crate) layer_sizes: Vec<(u32, u64)>,
    pub(crate) candidates: Vec<Candidate>,
}

impl Scratch {
    /// Makes the arrays cover `slots` slots and `idcs` IDC ids.
    pub(crate) fn reserve(&mut self, slots: usize, idcs: usize) {
        if self.node_replicas.len() < slots {
            self.node_replicas.resize(slots, 0);
            self.image_scores.resize(slots, 0.0);
            self.image_bytes.resize(slots, 0);
        }
        if self.idc_replicas.len() < idcs {
            self.idc_replicas.resize(idcs, 0);
        }
    }

    /// Zeroes what the last pod set, so untouched entries can be trusted
    /// to be zero.
    pub(crate) fn clear(&mut self) {
        for &slot in &self.touched_slots {
            let slot = slot as usize;
            self.node_replicas[slot] = 0;
            self.image_scores[slot] = 0.0;
            self.image_bytes[slot] = 0;
        }
        for &idc in &self.touched_idcs {
            self.idc_replicas[idc as usize] = 0;
        }
        self.touched_slots.clear();
        self.touched_idcs.clear();
        self.layer_sizes.clear();
        self.candidates.clear();
    }
}
