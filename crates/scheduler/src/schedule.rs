//! Placing one pod: filter every node, score the ones that pass, take the
//! best; or explain why none passed.

use std::fmt;

use crate::filter::{self, FilterReason};
use crate::mask::{self, MaskEntry, PASSES, VACANT};
use crate::snapshot::{Candidate, HotNode, Scratch, Slot};
use crate::{NodeId, PodInfo, SchedulerConfig, ScoreWeights, Snapshot, Strategy, score};

/// Where a pod should go.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// The chosen node.
    pub node: NodeId,
    /// Its name.
    pub node_name: String,
    /// Weighted mean of the scores, `0.0..=100.0`.
    pub score: f32,
    /// How many nodes passed the filters (and were scored).
    pub feasible_nodes: usize,
    /// The chosen node's score on each preference, for explanations.
    pub scores: ScoreBreakdown,
}

/// One node's score on each preference, each in `0.0..=100.0` before
/// weighting.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreBreakdown {
    /// Least- or most-allocated cpu and memory.
    pub allocation: f32,
    /// Cpu and memory used in similar proportions.
    pub balanced: f32,
    /// Fewer replicas of the owner on the node.
    pub node_spread: f32,
    /// Fewer replicas of the owner in the node's IDC.
    pub idc_spread: f32,
    /// Share of the pod's image bytes in the node's cache (50: unknown).
    pub image_locality: f32,
    /// Lower live load (50: not reported).
    pub load: f32,
    /// Machine class preference.
    pub machine_class: f32,
    /// Fewer untolerated `PreferNoSchedule` taints.
    pub prefer_no_schedule: f32,
    /// The share of the pod's preferred node affinity the node matches;
    /// `None` when the pod prefers nothing.
    pub node_affinity: Option<f32>,
}

impl ScoreBreakdown {
    /// The scores whose weight is not 0, by name, with the weight where
    /// it is not 1: `allocation 87.5, node spread 100.0 x2, load 12.0`.
    ///
    /// ```
    /// use wharf_scheduler::{ScoreBreakdown, ScoreWeights};
    /// let scores = ScoreBreakdown { load: 12.0, image_locality: 100.0, ..ScoreBreakdown::default() };
    /// let weights = ScoreWeights { load: 2, image_locality: 1, ..ScoreWeights::none() };
    /// assert_eq!(scores.describe(&weights), "image locality 100.0, load 12.0 x2");
    /// ```
    pub fn describe(&self, weights: &ScoreWeights) -> String {
        let named = [
            ("allocation", self.allocation, weights.allocation),
            ("balanced", self.balanced, weights.balanced),
            ("node spread", self.node_spread, weights.node_spread),
            ("idc spread", self.idc_spread, weights.idc_spread),
            (
                "image locality",
                self.image_locality,
                weights.image_locality,
            ),
            ("load", self.load, weights.load),
            ("machine class", self.machine_class, weights.machine_class),
            (
                "soft taints",
                self.prefer_no_schedule,
                weights.prefer_no_schedule,
            ),
        ];
        let affinity = self
            .node_affinity
            .map(|score| ("node affinity", score, weights.node_affinity));
        let parts: Vec<String> = named
            .iter()
            .chain(affinity.iter())
            .filter(|&&(_, _, weight)| weight > 0)
            .map(|&(name, score, weight)| match weight {
                1 => format!("{name} {score:.1}"),
                weight => format!("{name} {score:.1} x{weight}"),
            })
            .collect();
        parts.join(", ")
    }
}

/// How many nodes failed with one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasonCount {
    /// The first filter these nodes failed.
    pub reason: FilterReason,
    /// How many nodes.
    pub nodes: usize,
}

/// No node can take the pod, and why: every node is counted under the
/// first filter it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes in the snapshot; the counts in `reasons` add up to it.
    pub total_nodes: usize,
    /// Failures by count, most common first, then by text.
    pub reasons: Vec<ReasonCount>,
    /// E.g. `0/5 nodes are available: 3 insufficient memory, 2 not in pool web.`
    pub message: String,
}

impl Unschedulable {
    /// An explanation from per-reason counts (in any order).
    pub fn new(total_nodes: usize, reasons: Vec<ReasonCount>) -> Self {
        let mut keyed: Vec<(String, ReasonCount)> = reasons
            .into_iter()
            .map(|count| (count.reason.to_string(), count))
            .collect();
        keyed.sort_by(|(a_text, a), (b_text, b)| {
            b.nodes.cmp(&a.nodes).then_with(|| a_text.cmp(b_text))
        });
        let listed: Vec<String> = keyed
            .iter()
            .map(|(text, count)| format!("{} {text}", count.nodes))
            .collect();
        let message = if listed.is_empty() {
            format!("0/{total_nodes} nodes are available.")
        } else {
            format!(
                "0/{total_nodes} nodes are available: {}.",
                listed.join(", ")
            )
        };
        Unschedulable {
            total_nodes,
            reasons: keyed.into_iter().map(|(_, count)| count).collect(),
            message,
        }
    }

    /// How many nodes failed with `reason`.
    pub fn count(&self, reason: &FilterReason) -> usize {
        self.reasons
            .iter()
            .find(|count| &count.reason == reason)
            .map_or(0, |count| count.nodes)
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Unschedulable {}

/// Decides where pods go. Holds only configuration.
///
/// The decision is a pure function of the snapshot's nodes and assumed pods
/// and the pod: no IO, no clock, no randomness. It takes the snapshot
/// mutably only to memoise per-selector verdicts and reuse scratch memory.
///
/// ```
/// use wharf_scheduler::{NodeInfo, PodInfo, Resources, Scheduler, Snapshot};
/// let mut snapshot = Snapshot::from_nodes([
///     NodeInfo::new("small", Resources::new(1000, 1 << 30, 10)),
///     NodeInfo::new("large", Resources::new(8000, 16 << 30, 10)),
/// ]);
/// let scheduler = Scheduler::default();
/// let pod = PodInfo::new(2000, 1 << 30);
/// let placement = scheduler.schedule(&mut snapshot, &pod).unwrap();
/// assert_eq!(placement.node_name, "large");
/// snapshot.assume(placement.node, &pod).unwrap();
///
/// let huge = PodInfo::new(64_000, 1 << 30);
/// let refused = scheduler.schedule(&mut snapshot, &huge).unwrap_err();
/// assert_eq!(refused.message, "0/2 nodes are available: 2 insufficient cpu.");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
}

impl Scheduler {
    /// A scheduler with these settings.
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler { config }
    }

    /// The settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The best node for `pod`, or why there is none.
    pub fn schedule(
        &self,
        snapshot: &mut Snapshot,
        pod: &PodInfo,
    ) -> Result<Placement, Unschedulable> {
        self.schedule_from(snapshot, pod, 0)
    }

    /// Like [`schedule`](Scheduler::schedule), visiting nodes from slot
    /// `start` (wrapping). Only matters with
    /// [`max_nodes_to_score`](SchedulerConfig::max_nodes_to_score): pass a
    /// rotating offset so successive pods look at different nodes first.
    pub fn schedule_from(
        &self,
        snapshot: &mut Snapshot,
        pod: &PodInfo,
        start: usize,
    ) -> Result<Placement, Unschedulable> {
        let mask = snapshot.prepare(pod);
        let blocked = snapshot.quota_blocked(pod);
        let plan = PodPlan::new(&self.config, pod, &blocked);
        let limit = self
            .config
            .max_nodes_to_score
            .map_or(usize::MAX, |limit| (limit as usize).max(1));
        collect_candidates(snapshot, mask, &plan, pod, start, limit);
        let candidates = &snapshot.scratch.candidates;
        let outcome = match pick_best(candidates, &snapshot.hot, &plan) {
            Some(best) => {
                let slot = best.candidate.slot as usize;
                let image_score = snapshot.scratch.image_scores[slot];
                let mut scores = best.breakdown(&plan, &snapshot.hot[slot], image_score);
                scores.node_affinity = plan
                    .prefers
                    .then(|| f32::from(snapshot.masks.get(mask).affinity_score(slot)));
                Ok(Placement {
                    node: snapshot.id_of(slot),
                    node_name: node_name(snapshot, slot),
                    score: best.score,
                    feasible_nodes: candidates.len(),
                    scores,
                })
            }
            None => Err(explain(snapshot, snapshot.masks.get(mask), pod, &blocked)),
        };
        snapshot.finish();
        outcome
    }
}

/// What the hot loop needs about the pod and the weights, worked out once
/// per pod.
struct PodPlan<'a> {
    cpu: u64,
    memory: u64,
    pods: u32,
    score_cpu: u64,
    score_memory: u64,
    most_allocated: bool,
    critical: bool,
    has_ports: bool,
    /// Whether the pod's image bytes are known (else image locality is
    /// neutral everywhere).
    image_known: bool,
    allocation: f32,
    balanced: f32,
    image_locality: f32,
    load: f32,
    machine_class: f32,
    node_spread: f32,
    idc_spread: f32,
    preferences: f32,
    /// Whether the pod prefers some node labels (else node affinity is
    /// left out of its scores).
    prefers: bool,
    node_affinity: f32,
    total_weight: f32,
    /// Pools where the pod would exceed its project's quota.
    blocked_pools: &'a [(String, FilterReason)],
}

impl<'a> PodPlan<'a> {
    fn new(
        config: &SchedulerConfig,
        pod: &PodInfo,
        blocked_pools: &'a [(String, FilterReason)],
    ) -> Self {
        let weights = config.weights;
        let prefers = !pod.affinity.preferred.is_empty();
        let node_affinity = if prefers { weights.node_affinity } else { 0 };
        let (score_cpu, score_memory) = score::scoring_requests(pod.requests);
        let all = [
            weights.allocation,
            weights.balanced,
            weights.image_locality,
            weights.load,
            weights.machine_class,
            weights.node_spread,
            weights.idc_spread,
            weights.prefer_no_schedule,
            node_affinity,
        ];
        PodPlan {
            cpu: pod.requests.cpu_millis,
            memory: pod.requests.memory_bytes,
            pods: pod.requests.pods,
            score_cpu,
            score_memory,
            most_allocated: config.strategy == Strategy::MostAllocated,
            critical: pod.critical,
            has_ports: !pod.host_ports.is_empty(),
            image_known: pod
                .layers
                .as_ref()
                .is_some_and(|layers| layers.iter().any(|&(_, size)| size > 0)),
            allocation: weights.allocation as f32,
            balanced: weights.balanced as f32,
            image_locality: weights.image_locality as f32,
            load: weights.load as f32,
            machine_class: weights.machine_class as f32,
            node_spread: weights.node_spread as f32,
            idc_spread: weights.idc_spread as f32,
            preferences: weights.prefer_no_schedule as f32,
            prefers,
            node_affinity: node_affinity as f32,
            total_weight: all.iter().map(|&w| w as f32).sum(),
            blocked_pools,
        }
    }

    /// Whether the node is in a pool where the pod's project is out of quota.
    fn over_quota(&self, slot: &Slot) -> bool {
        !self.blocked_pools.is_empty() && quota_failure(self.blocked_pools, slot).is_some()
    }

    /// Whether the node has room for the pod.
    #[inline]
    fn fits(&self, node: &HotNode) -> bool {
        node.free_pods >= self.pods && node.free_cpu >= self.cpu && node.free_memory >= self.memory
    }

    /// The scores that need no normalisation over the candidates.
    #[inline]
    fn base_parts(&self, node: &HotNode, image_score: f32) -> BaseParts {
        let free_cpu = score::free_fraction(node.free_cpu, self.score_cpu, node.inverse_cpu);
        let free_memory =
            score::free_fraction(node.free_memory, self.score_memory, node.inverse_memory);
        let allocation = if self.most_allocated {
            score::most_allocated(free_cpu, free_memory)
        } else {
            score::least_allocated(free_cpu, free_memory)
        };
        let machine_class = if self.critical {
            node.class_score
        } else {
            score::MAX_SCORE - node.class_score
        };
        let image_locality = if self.image_known && node.layers_known {
            image_score
        } else {
            score::NEUTRAL_SCORE
        };
        BaseParts {
            allocation,
            balanced: score::balanced(free_cpu, free_memory),
            image_locality,
            load: node.load_score,
            machine_class,
        }
    }

    /// Weighted sum of [`base_parts`](PodPlan::base_parts).
    #[inline]
    fn base_score(&self, node: &HotNode, image_score: f32) -> f32 {
        let parts = self.base_parts(node, image_score);
        self.allocation * parts.allocation
            + self.balanced * parts.balanced
            + self.image_locality * parts.image_locality
            + self.load * parts.load
            + self.machine_class * parts.machine_class
    }
}

/// The scores a node earns on its own, before weighting.
struct BaseParts {
    allocation: f32,
    balanced: f32,
    image_locality: f32,
    load: f32,
    machine_class: f32,
}

/// The winning candidate, its weighted mean score, and the spreads the
/// candidates were normalised with.
struct Best<'a> {
    candidate: &'a Candidate,
    score: f32,
    on_node: score::Spread,
    in_idc: score::Spread,
    preferences: score::Spread,
}

impl Best<'_> {
    /// Each score of the winner, unweighted.
    fn breakdown(&self, plan: &PodPlan<'_>, node: &HotNode, image_score: f32) -> ScoreBreakdown {
        let parts = plan.base_parts(node, image_score);
        ScoreBreakdown {
            allocation: parts.allocation,
            balanced: parts.balanced,
            node_spread: self.on_node.score(self.candidate.node_replicas),
            idc_spread: self.in_idc.score(self.candidate.idc_replicas),
            image_locality: parts.image_locality,
            load: parts.load,
            machine_class: parts.machine_class,
            prefer_no_schedule: self.preferences.score(self.candidate.preferences),
            node_affinity: None,
        }
    }
}

/// Walks the nodes that pass the cached static filters, from `start`
/// around to it again, and records every one that also has room (and
/// quota). Stops after `limit` candidates.
fn collect_candidates(
    snapshot: &mut Snapshot,
    mask: usize,
    plan: &PodPlan<'_>,
    pod: &PodInfo,
    start: usize,
    limit: usize,
) {
    let Snapshot {
        slots,
        hot,
        masks,
        scratch,
        ..
    } = snapshot;
    let entry = masks.get(mask);
    let Scratch {
        node_replicas,
        idc_replicas,
        image_scores,
        candidates,
        ..
    } = scratch;
    candidates.clear();
    let slot_count = hot.len();
    let start = start.checked_rem(slot_count).unwrap_or(0);
    let mut visit = |slot: usize| {
        let node = &hot[slot];
        if !plan.fits(node)
            || (plan.has_ports && slots[slot].port_conflict(pod))
            || plan.over_quota(&slots[slot])
        {
            return true;
        }
        let affinity = plan.node_affinity * f32::from(entry.affinity_score(slot));
        candidates.push(Candidate {
            slot: slot as u32,
            base: plan.base_score(node, image_scores[slot]) + affinity,
            node_replicas: node_replicas[slot],
            idc_replicas: idc_replicas[node.idc as usize],
            preferences: u32::from(entry.preferences(slot)),
        });
        candidates.len() < limit
    };
    if mask::for_each_set_bit(entry.bits(), start, slot_count, &mut visit) {
        mask::for_each_set_bit(entry.bits(), 0, start, &mut visit);
    }
}

/// The best candidate: highest score, then smallest name.
fn pick_best<'a>(
    candidates: &'a [Candidate],
    hot: &[HotNode],
    plan: &PodPlan<'_>,
) -> Option<Best<'a>> {
    let max = |count: fn(&Candidate) -> u32| candidates.iter().map(count).max().unwrap_or(0);
    let on_node = score::Spread::new(max(|c| c.node_replicas));
    let in_idc = score::Spread::new(max(|c| c.idc_replicas));
    let preferences = score::Spread::new(max(|c| c.preferences));
    let mut best: Option<(f32, &Candidate)> = None;
    for candidate in candidates {
        let total = candidate.base
            + plan.node_spread * on_node.score(candidate.node_replicas)
            + plan.idc_spread * in_idc.score(candidate.idc_replicas)
            + plan.preferences * preferences.score(candidate.preferences);
        let slot = candidate.slot as usize;
        // Names are compared (through their ranks) only on exact ties.
        let better = match best {
            None => true,
            Some((score, leader)) => {
                total > score || (total == score && hot[slot].rank < hot[leader.slot as usize].rank)
            }
        };
        if better {
            best = Some((total, candidate));
        }
    }
    let (total, candidate) = best?;
    let score = if plan.total_weight > 0.0 {
        total / plan.total_weight
    } else {
        0.0
    };
    Some(Best {
        candidate,
        score,
        on_node,
        in_idc,
        preferences,
    })
}

/// Counts, over every node, the first filter it fails: the cached code for
/// the static filters, a fresh check of quota, resources and ports for the
/// rest.
fn explain(
    snapshot: &Snapshot,
    entry: &MaskEntry,
    pod: &PodInfo,
    blocked_pools: &[(String, FilterReason)],
) -> Unschedulable {
    let mut static_counts = vec![0usize; entry.reason_count()];
    let mut dynamic: Vec<ReasonCount> = Vec::new();
    for (slot, &code) in entry.codes().iter().enumerate() {
        match code {
            VACANT => {}
            PASSES => {
                let node = &snapshot.slots[slot];
                let failure = match quota_failure(blocked_pools, node) {
                    Some(reason) => Some(reason.clone()),
                    None => dynamic_failure(node, pod),
                };
                if let Some(reason) = failure {
                    bump(&mut dynamic, reason);
                }
            }
            code => {
                if let Some(count) = static_counts.get_mut(code as usize - 1) {
                    *count += 1;
                }
            }
        }
    }
    let static_reasons = static_counts
        .into_iter()
        .enumerate()
        .filter(|&(_, nodes)| nodes > 0)
        .filter_map(|(i, nodes)| {
            let reason = entry.reason(i as u32 + 1)?.clone();
            Some(ReasonCount { reason, nodes })
        });
    let reasons = static_reasons.chain(dynamic).collect();
    Unschedulable::new(snapshot.len(), reasons)
}

/// The quota the pod would exceed on the node in `slot`, if its pool is
/// one of `blocked_pools`.
fn quota_failure<'a>(
    blocked_pools: &'a [(String, FilterReason)],
    slot: &Slot,
) -> Option<&'a FilterReason> {
    let pool = slot.node.as_ref()?.info.pool()?;
    blocked_pools
        .iter()
        .find(|(blocked, _)| blocked == pool)
        .map(|(_, reason)| reason)
}

fn dynamic_failure(slot: &Slot, pod: &PodInfo) -> Option<FilterReason> {
    let node = slot.node.as_ref()?;
    filter::dynamic_failure(node.free(), |port| node.port_in_use(port), pod)
}

fn bump(counts: &mut Vec<ReasonCount>, reason: FilterReason) {
    match counts.iter_mut().find(|count| count.reason == reason) {
        Some(count) => count.nodes += 1,
        None => counts.push(ReasonCount { reason, nodes: 1 }),
    }
}

fn node_name(snapshot: &Snapshot, slot: usize) -> String {
    snapshot.slots[slot]
        .node
        .as_ref()
        .map(|node| node.info.name.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_sorts_by_count_then_text() {
        let refused = Unschedulable::new(
            5,
            vec![
                ReasonCount {
                    reason: FilterReason::NotInPool("web".into()),
                    nodes: 2,
                },
                ReasonCount {
                    reason: FilterReason::InsufficientMemory,
                    nodes: 3,
                },
            ],
        );
        assert_eq!(
            refused.message,
            "0/5 nodes are available: 3 insufficient memory, 2 not in pool web."
        );
        let tied = Unschedulable::new(
            2,
            vec![
                ReasonCount {
                    reason: FilterReason::NotReady,
                    nodes: 1,
                },
                ReasonCount {
                    reason: FilterReason::Unschedulable,
                    nodes: 1,
                },
            ],
        );
        assert_eq!(
            tied.message,
            "0/2 nodes are available: 1 cordoned, 1 not ready."
        );
        assert_eq!(tied.count(&FilterReason::NotReady), 1);
        assert_eq!(
            Unschedulable::new(0, vec![]).message,
            "0/0 nodes are available."
        );
    }
}
