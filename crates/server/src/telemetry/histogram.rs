//! A fixed-bucket latency histogram, as Prometheus reads one.

/// Upper bounds in seconds: 1 ms to 30 s, the span of API calls, store
/// operations and scheduling batches.
const BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// Observation counts per bucket (not cumulative), their sum and count.
#[derive(Clone, Debug, Default)]
pub(crate) struct Histogram {
    counts: [u64; BOUNDS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = BOUNDS.iter().position(|bound| seconds <= *bound) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// Cumulative (bound, count) pairs, the sum and the count.
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut total = 0;
        let buckets = BOUNDS
            .iter()
            .zip(self.counts)
            .map(|(bound, n)| {
                total += n;
                (*bound, total)
            })
            .collect();
        (buckets, self.sum, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_slowest_count_only_in_inf() {
        let mut h = Histogram::default();
        for seconds in [0.0005, 0.003, 0.003, 60.0] {
            h.observe(seconds);
        }
        let (buckets, sum, count) = h.cumulative();
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[2], (0.005, 3));
        assert_eq!(buckets.last(), Some(&(30.0, 3)));
        assert_eq!(count, 4);
        assert!((sum - 60.0065).abs() < 1e-9);
    }
}
