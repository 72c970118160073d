//! The newest sample of every live series: what a Prometheus scrape of the
//! server federates (see [`crate::prometheus`]).

use std::sync::Arc;

use wharf_api::CounterType;

use crate::{SeriesKey, Tsdb};

/// The newest sample of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct LatestSample {
    /// The series.
    pub key: Arc<SeriesKey>,
    /// GAUGE or COUNTER, as first reported.
    pub counter_type: CounterType,
    /// Its time, seconds since the epoch.
    pub timestamp: i64,
    /// Its value.
    pub value: f64,
}

impl Tsdb {
    /// The newest sample of every series reported at or after `since`;
    /// series that went quiet (a node gone, a pod deleted) are left out, so
    /// a scraper sees them end.
    pub fn latest(&self, since: i64) -> Vec<LatestSample> {
        let inner = self.lock();
        inner
            .series
            .iter()
            .filter(|s| s.latest >= since)
            // The open minute bucket holds the newest sample even after the
            // raw one was evicted past the raw budget.
            .filter_map(|s| {
                s.minute.map(|bucket| LatestSample {
                    key: s.key.clone(),
                    counter_type: s.kind,
                    timestamp: s.latest,
                    value: bucket.last,
                })
            })
            .collect()
    }
}
