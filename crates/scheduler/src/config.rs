//! How the scheduler weighs its preferences.

use serde::{Deserialize, Serialize};

/// How cpu and memory allocation is scored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Prefer the node with the most room left: spreads load.
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that still fits: bin packing, so whole
    /// machines stay free for big pods or can be switched off. Consider
    /// lowering the spread weights with it, or replicas still spread.
    MostAllocated,
}

/// Weight of each score in the weighted sum; 0 turns a score off.
///
/// Every score is first normalised to `0..=100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScoreWeights {
    /// Least- or most-allocated cpu and memory after placing the pod.
    pub allocation: u32,
    /// Cpu and memory used in similar proportions (no stranded resource).
    pub balanced: u32,
    /// Fewer replicas of the same owner on the node.
    pub node_spread: u32,
    /// Fewer replicas of the same owner in the node's IDC.
    pub idc_spread: u32,
    /// Bytes of the pod's images already on the node.
    pub image_locality: u32,
    /// Lower live cpu load, where the node reports it.
    pub load: u32,
    /// Critical pods on newer machine classes, the rest on older ones.
    pub machine_class: u32,
    /// Fewer untolerated `PreferNoSchedule` taints.
    pub prefer_no_schedule: u32,
    /// More of the pod's preferred node affinity (a preferred tier)
    /// matched; counts only for pods that prefer something.
    pub node_affinity: u32,
}

impl Default for ScoreWeights {
    /// Spreading outweighs the resource scores, so replicas land in
    /// different IDCs and nodes before doubling up; `PreferNoSchedule` is
    /// heavy because a taint is an operator's explicit wish (as in
    /// Kubernetes, where TaintToleration weighs 3).
    fn default() -> Self {
        ScoreWeights {
            allocation: 1,
            balanced: 1,
            node_spread: 2,
            idc_spread: 2,
            image_locality: 1,
            load: 1,
            machine_class: 1,
            prefer_no_schedule: 3,
            // More than all the others together (12): a node with the
            // preferred tier always wins over one without while it has room.
            node_affinity: 16,
        }
    }
}

impl ScoreWeights {
    /// All weights 0: every feasible node scores the same and the smallest
    /// name wins. Start from this to enable single scores in tests.
    pub fn none() -> Self {
        ScoreWeights {
            allocation: 0,
            balanced: 0,
            node_spread: 0,
            idc_spread: 0,
            image_locality: 0,
            load: 0,
            machine_class: 0,
            prefer_no_schedule: 0,
            node_affinity: 0,
        }
    }
}

/// Scheduler settings.
///
/// ```
/// use wharf_scheduler::{SchedulerConfig, Strategy};
/// let config = SchedulerConfig { strategy: Strategy::MostAllocated, ..SchedulerConfig::default() };
/// assert_eq!(config.max_nodes_to_score, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// Spread (default) or pack.
    pub strategy: Strategy,
    /// Weight of each score.
    pub weights: ScoreWeights,
    /// Stop after this many feasible nodes (counted from the caller's start
    /// offset) and pick the best of those, like Kubernetes'
    /// `percentageOfNodesToScore`. `None` (default) scores every node.
    /// Filters stay hard either way.
    pub max_nodes_to_score: Option<u32>,
}
