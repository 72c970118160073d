//! Downsampled history: one bucket sums up a series over a minute or an hour.

/// The granularity a query reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    /// Every sample as pushed, kept in memory.
    Raw,
    /// One bucket a minute, on disk.
    Minute,
    /// One bucket an hour, on disk.
    Hour,
}

impl Resolution {
    /// The width of one bucket in seconds (1 for raw samples).
    pub fn seconds(self) -> i64 {
        match self {
            Resolution::Raw => 1,
            Resolution::Minute => 60,
            Resolution::Hour => 3600,
        }
    }

    /// The name used in answers and on disk: `raw`, `1m`, `1h`.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }
}

/// min/avg/max/count of the samples of one series in one interval, and the
/// last one (a counter's rate is read from the lasts of two buckets).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Start of the interval, seconds since the epoch, a multiple of its width.
    pub start: i64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Sum of the samples (avg = sum / count).
    pub sum: f64,
    /// Number of samples.
    pub count: u32,
    /// The latest sample.
    pub last: f64,
}

impl Bucket {
    /// A bucket holding one sample.
    pub fn new(start: i64, value: f64) -> Bucket {
        Bucket {
            start,
            min: value,
            max: value,
            sum: value,
            count: 1,
            last: value,
        }
    }

    /// Adds a sample later than those already in.
    pub fn add(&mut self, value: f64) {
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        self.count += 1;
        self.last = value;
    }

    /// Folds in a bucket of the same interval written later (a series that
    /// went on in the same minute after a restart).
    pub fn merge(&mut self, later: &Bucket) {
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.sum += later.sum;
        self.count += later.count;
        self.last = later.last;
    }

    /// The mean of the samples.
    pub fn avg(&self) -> f64 {
        self.sum / f64::from(self.count.max(1))
    }
}

/// Sorts buckets by start and merges those of the same interval, in the
/// order they were written.
pub(crate) fn merge_sorted(mut buckets: Vec<Bucket>) -> Vec<Bucket> {
    // A stable sort keeps equal starts in write order, so `last` stays right.
    buckets.sort_by_key(|b| b.start);
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        match merged.last_mut() {
            Some(prev) if prev.start == bucket.start => prev.merge(&bucket),
            _ => merged.push(bucket),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_keeps_min_avg_max_count_and_last() {
        let mut b = Bucket::new(60, 4.0);
        for v in [1.0, 10.0, 5.0] {
            b.add(v);
        }
        assert_eq!((b.min, b.max, b.count, b.last), (1.0, 10.0, 4, 5.0));
        assert_eq!(b.avg(), 5.0);
    }

    #[test]
    fn buckets_of_one_interval_merge_in_write_order() {
        let merged = merge_sorted(vec![
            Bucket::new(120, 7.0),
            Bucket::new(60, 2.0),
            Bucket::new(60, 8.0),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].start, 60);
        assert_eq!(
            (merged[0].count, merged[0].avg(), merged[0].last),
            (2, 5.0, 8.0)
        );
        assert_eq!((merged[0].min, merged[0].max), (2.0, 8.0));
    }
}
