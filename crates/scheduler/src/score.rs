//! Soft preferences. Every score is normalised to `0.0..=100.0`, higher is
//! better; the scheduler adds them up with the configured weights.
//!
//! Scores use `f32`: they only rank nodes, the arithmetic is the same on
//! every run (no fast-math, fixed evaluation order), and it keeps the per-node
//! work to a few multiplications instead of integer divisions.

use crate::Resources;

/// Highest score.
pub(crate) const MAX_SCORE: f32 = 100.0;
/// Score of what is not known (a node without a current load or cache
/// report, an image hosted elsewhere): the middle, so such a node is
/// neither preferred nor avoided against nodes that do report.
pub(crate) const NEUTRAL_SCORE: f32 = 50.0;
/// Cpu counted for scoring when a pod requests none (as Kubernetes does), so
/// that request-less pods still spread instead of piling onto one node.
pub(crate) const DEFAULT_CPU_MILLIS: u64 = 100;
/// Memory counted for scoring when a pod requests none.
pub(crate) const DEFAULT_MEMORY_BYTES: u64 = 200 << 20;

/// Cpu and memory a pod counts as for scoring: its requests, with the
/// defaults standing in for zero.
pub(crate) fn scoring_requests(requests: Resources) -> (u64, u64) {
    let cpu = match requests.cpu_millis {
        0 => DEFAULT_CPU_MILLIS,
        cpu => cpu,
    };
    let memory = match requests.memory_bytes {
        0 => DEFAULT_MEMORY_BYTES,
        memory => memory,
    };
    (cpu, memory)
}

/// Fraction of `capacity` still free after taking `wanted` out of `free`,
/// given `inverse_capacity = 1 / capacity` (0 for no capacity).
#[inline]
pub(crate) fn free_fraction(free: u64, wanted: u64, inverse_capacity: f32) -> f32 {
    free.saturating_sub(wanted) as f32 * inverse_capacity
}

/// `1 / capacity`, or 0 when there is no capacity (nothing fits, so the
/// score does not matter but must stay finite).
pub(crate) fn inverse(capacity: u64) -> f32 {
    if capacity == 0 {
        0.0
    } else {
        1.0 / capacity as f32
    }
}

/// Least-allocated: mean free fraction of cpu and memory after placing.
#[inline]
pub(crate) fn least_allocated(free_cpu: f32, free_memory: f32) -> f32 {
    (free_cpu + free_memory) * (MAX_SCORE / 2.0)
}

/// Most-allocated (bin packing): mean used fraction after placing.
#[inline]
pub(crate) fn most_allocated(free_cpu: f32, free_memory: f32) -> f32 {
    MAX_SCORE - least_allocated(free_cpu, free_memory)
}

/// Balanced allocation: one minus the standard deviation of the used
/// fractions (for two resources, half their difference), as in Kubernetes.
/// A node whose cpu is full while memory sits idle strands that memory.
#[inline]
pub(crate) fn balanced(free_cpu: f32, free_memory: f32) -> f32 {
    (1.0 - (free_cpu - free_memory).abs() * 0.5) * MAX_SCORE
}

/// Spread: fewer replicas (or untolerated soft taints) than the candidate
/// with the most is better: `100 * (max - count) / max`, and 100 for all
/// when `max` is 0. Built once per pod so each candidate costs a multiply.
pub(crate) struct Spread {
    max: u32,
    offset: f32,
    scale: f32,
}

impl Spread {
    /// Normalisation for candidates whose largest count is `max`.
    pub(crate) fn new(max: u32) -> Self {
        match max {
            0 => Spread {
                max: 0,
                offset: MAX_SCORE,
                scale: 0.0,
            },
            max => Spread {
                max,
                offset: 0.0,
                scale: MAX_SCORE / max as f32,
            },
        }
    }

    /// The score of a candidate with `count`.
    #[inline]
    pub(crate) fn score(&self, count: u32) -> f32 {
        self.offset + self.max.saturating_sub(count) as f32 * self.scale
    }
}

/// Image locality: the share of the pod's image bytes already in the
/// node's layer cache, i.e. the bytes the node would not have to pull.
/// An image of no known bytes is neutral.
pub(crate) fn image_locality(cached_bytes: u64, total_bytes: u64) -> f32 {
    if total_bytes == 0 {
        return NEUTRAL_SCORE;
    }
    (cached_bytes.min(total_bytes) as f64 / total_bytes as f64 * f64::from(MAX_SCORE)) as f32
}

/// Lower live load is better. The load is the larger of cpu busy
/// (`0..=1`) and the load average per core (runnable tasks past the cores
/// mean waiting even when busy looks moderate), capped at 1. Neither
/// reported (or nonsense) is neutral.
pub(crate) fn load(busy: Option<f32>, load_per_core: Option<f32>) -> f32 {
    let known = |value: Option<f32>| value.filter(|v| v.is_finite()).map(|v| v.clamp(0.0, 1.0));
    match (known(busy), known(load_per_core)) {
        (None, None) => NEUTRAL_SCORE,
        (busy, per_core) => (1.0 - busy.unwrap_or(0.0).max(per_core.unwrap_or(0.0))) * MAX_SCORE,
    }
}

/// Where `class` sits between the oldest and newest class in the cluster:
/// 0 for the oldest, 100 for the newest (100 when all are equal).
pub(crate) fn machine_class(class: u32, oldest: u32, newest: u32) -> f32 {
    if newest <= oldest {
        return MAX_SCORE;
    }
    (class.clamp(oldest, newest) - oldest) as f32 * MAX_SCORE / (newest - oldest) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_requests_count_as_defaults() {
        assert_eq!(
            scoring_requests(Resources::new(0, 0, 1)),
            (DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_BYTES)
        );
        assert_eq!(scoring_requests(Resources::new(5, 7, 1)), (5, 7));
    }

    #[test]
    fn free_fraction_saturates_and_handles_zero_capacity() {
        assert_eq!(free_fraction(500, 250, inverse(1000)), 0.25);
        assert_eq!(free_fraction(100, 250, inverse(1000)), 0.0);
        assert_eq!(free_fraction(0, 0, inverse(0)), 0.0);
    }

    #[test]
    fn least_and_most_allocated_are_mirrors() {
        assert_eq!(least_allocated(1.0, 1.0), 100.0);
        assert_eq!(least_allocated(0.5, 0.0), 25.0);
        assert_eq!(most_allocated(0.5, 0.0), 75.0);
        assert_eq!(most_allocated(0.0, 0.0), 100.0);
    }

    #[test]
    fn balanced_penalises_uneven_use() {
        assert_eq!(balanced(0.3, 0.3), 100.0);
        assert_eq!(balanced(1.0, 0.0), 50.0);
        assert!(balanced(0.5, 0.4) > balanced(0.5, 0.1));
    }

    #[test]
    fn spread_prefers_fewer_replicas() {
        let none = Spread::new(0);
        assert_eq!(none.score(0), 100.0);
        let four = Spread::new(4);
        assert_eq!(four.score(0), 100.0);
        assert_eq!(four.score(2), 50.0);
        assert_eq!(four.score(4), 0.0);
    }

    #[test]
    fn image_locality_is_the_share_of_bytes_cached() {
        assert_eq!(image_locality(0, 400), 0.0);
        assert_eq!(image_locality(100, 400), 25.0);
        assert_eq!(image_locality(400, 400), 100.0);
        assert_eq!(image_locality(500, 400), 100.0, "never above full");
        assert_eq!(image_locality(0, 0), NEUTRAL_SCORE, "no known bytes");
    }

    #[test]
    fn load_prefers_idle_nodes_and_is_neutral_when_unknown() {
        assert_eq!(load(Some(0.0), None), 100.0);
        assert_eq!(load(Some(0.75), None), 25.0);
        assert_eq!(load(Some(3.0), None), 0.0);
        assert_eq!(load(None, None), NEUTRAL_SCORE);
        assert_eq!(load(Some(f32::NAN), None), NEUTRAL_SCORE);
    }

    #[test]
    fn a_long_run_queue_counts_as_load_even_when_busy_looks_low() {
        assert_eq!(load(Some(0.2), Some(0.5)), 50.0);
        assert!((load(Some(0.6), Some(0.1)) - 40.0).abs() < 1e-3);
        assert_eq!(load(None, Some(2.0)), 0.0, "twice the cores runnable");
        assert!(load(Some(0.1), Some(0.1)) > load(Some(0.9), Some(0.1)));
    }

    #[test]
    fn machine_class_is_relative_to_the_cluster() {
        assert_eq!(machine_class(1, 1, 5), 0.0);
        assert_eq!(machine_class(3, 1, 5), 50.0);
        assert_eq!(machine_class(5, 1, 5), 100.0);
        assert_eq!(machine_class(2, 2, 2), 100.0);
    }
}
