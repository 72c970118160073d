//! A time-series store built for falcon samples.
//!
//! Series are keyed by (endpoint, metric, sorted tags). Recent raw samples
//! live in memory under a total budget (oldest dropped first) and a raw
//! retention; every sample also feeds a 1-minute and a 1-hour [`Bucket`]
//! (min/avg/max/count/last), and closed buckets are appended to per-series,
//! per-day segment files (see [`segment`](crate)) on [`Tsdb::flush`], so a
//! restart keeps the history. Counters are stored raw and turned into
//! per-second rates when read.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use wharf_api::{CounterType, FalconSample};
//! use wharf_tsdb::{Matcher, Query, Tsdb, TsdbConfig};
//! let tsdb = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
//! let sample = FalconSample {
//!     endpoint: "node-1".into(), metric: "load.1min".into(), tags: String::new(),
//!     value: 0.5, timestamp: 1_000, counter_type: CounterType::Gauge, step: 10,
//! };
//! tsdb.insert(&[sample], 1_000).unwrap();
//! let mut query = Query::new("load.1min", 900, 1_000, 10);
//! query.matchers = Matcher::parse_list("endpoint=node-1").unwrap();
//! assert_eq!(tsdb.query(&query, 1_000).unwrap().series[0].points, vec![(1_000, 0.5)]);
//! ```

mod bucket;
mod index;
mod latest;
pub mod prometheus;
mod query;
mod segment;
mod validate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use wharf_api::{CounterType, FalconSample, format_tags, parse_tags};

pub use bucket::{Bucket, Resolution};
pub use index::SeriesKey;
pub use latest::LatestSample;
pub use query::{Agg, MAX_POINTS, MAX_SERIES, Matcher, Query, QueryResult, SeriesPoints};
pub use segment::RECORD_BYTES;
pub use validate::{MAX_FUTURE_SECS, SampleError, check_metric, validate};

use index::{IndexEntry, SeriesIndex};
use query::Observation;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Limits and retentions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsdbConfig {
    /// Most raw samples kept in memory over all series (about 20 bytes
    /// each); past it the oldest go first.
    pub raw_points: usize,
    /// Most series one endpoint may have; new series past it are refused.
    pub series_per_endpoint: usize,
    /// How long raw samples are kept, in seconds.
    pub raw_retention: i64,
    /// How long 1-minute buckets are kept, in seconds.
    pub minute_retention: i64,
    /// How long 1-hour buckets are kept, in seconds.
    pub hour_retention: i64,
}

impl Default for TsdbConfig {
    fn default() -> TsdbConfig {
        TsdbConfig {
            raw_points: 8_000_000,
            series_per_endpoint: 10_000,
            raw_retention: 2 * HOUR,
            minute_retention: 7 * DAY,
            hour_retention: 90 * DAY,
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// A sample of the batch is malformed; nothing of the batch was stored.
    #[error("sample {index}: {problem}")]
    Invalid {
        /// Its position in the batch.
        index: usize,
        /// The field and why.
        problem: SampleError,
    },
    /// The batch would give an endpoint more series than allowed; nothing
    /// of the batch was stored.
    #[error(
        "endpoint {endpoint:?} would have more than {limit} series (the per-endpoint series limit); new series refused"
    )]
    SeriesLimit {
        /// The endpoint.
        endpoint: String,
        /// The limit.
        limit: usize,
    },
    /// No series of that metric is known.
    #[error("unknown metric {0:?}")]
    UnknownMetric(String),
    /// The query asks for something outside the limits, which it names.
    #[error("{0}")]
    BadQuery(String),
    /// The history files failed.
    #[error("metrics storage {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TsdbError + '_ {
    move |source| TsdbError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How many samples a batch stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// Stored.
    pub stored: usize,
    /// Not newer than the latest of their series (a repeated push): skipped.
    pub skipped: usize,
}

/// Sizes, for benchmarks and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Known series.
    pub series: usize,
    /// Raw samples in memory.
    pub raw_points: usize,
    /// Closed buckets waiting for the next flush.
    pub pending_buckets: usize,
}

struct Series {
    key: Arc<SeriesKey>,
    kind: CounterType,
    raw: VecDeque<(i64, f64)>,
    minute: Option<Bucket>,
    hour: Option<Bucket>,
    latest: i64,
}

/// Closed buckets waiting to be written, by series: a query finds a
/// series' own in one probe, however many series have buckets pending.
type Pending = HashMap<u32, Vec<(Resolution, Bucket)>>;

/// Locks serializing, per series, a flush's append to its files with a
/// query's read of its pending buckets and files: the query sees each
/// bucket exactly once, pending or written.
const FILE_STRIPES: usize = 64;

/// Series a flush takes from the table and appends under one lock.
const FLUSH_CHUNK: usize = 64;

impl Series {
    fn new(key: Arc<SeriesKey>, kind: CounterType) -> Series {
        Series {
            key,
            kind,
            raw: VecDeque::new(),
            minute: None,
            hour: None,
            latest: i64::MIN,
        }
    }

    /// Adds a sample to the open buckets, closing those it has left behind.
    fn fold(&mut self, id: u32, time: i64, value: f64, closed: &mut Pending) -> usize {
        let mut count = 0;
        for (resolution, open) in [
            (Resolution::Minute, &mut self.minute),
            (Resolution::Hour, &mut self.hour),
        ] {
            let start = time - time.rem_euclid(resolution.seconds());
            match open {
                Some(bucket) if bucket.start == start => bucket.add(value),
                _ => {
                    if let Some(bucket) = open.replace(Bucket::new(start, value)) {
                        closed.entry(id).or_default().push((resolution, bucket));
                        count += 1;
                    }
                }
            }
        }
        count
    }
}

struct Inner {
    ids: HashMap<Arc<SeriesKey>, u32>,
    series: Vec<Series>,
    by_metric: HashMap<String, MetricSeries>,
    per_endpoint: HashMap<String, usize>,
    /// Series ids in the order their raw samples arrived: the front names
    /// the series holding the oldest raw sample.
    raw_order: VecDeque<u32>,
    /// Closed since the last flush took them.
    closed: Pending,
    closed_count: usize,
    /// Taken by the running flush, each series' until its files have them.
    in_flight: Pending,
    index: SeriesIndex,
}

/// One metric's series, also by endpoint: a query naming its endpoint
/// (a node's graph, `top`) looks at that endpoint's few series, not at
/// every machine's (25,000 for one metric of 5,000 nodes).
#[derive(Default)]
struct MetricSeries {
    all: Vec<u32>,
    by_endpoint: HashMap<String, Vec<u32>>,
}

impl MetricSeries {
    /// The series `matchers` may accept: those of the endpoints an
    /// `endpoint=` or `endpoint=a|b` matcher names, else all.
    fn candidates(&self, matchers: &[query::Matcher]) -> Vec<u32> {
        let named = matchers.iter().find_map(|m| match m {
            query::Matcher::Eq(k, v) if k == "endpoint" => Some(std::slice::from_ref(v)),
            query::Matcher::OneOf(k, vs) if k == "endpoint" => Some(vs.as_slice()),
            _ => None,
        });
        match named {
            Some(endpoints) => {
                let mut ids: Vec<u32> = endpoints
                    .iter()
                    .filter_map(|e| self.by_endpoint.get(e))
                    .flatten()
                    .copied()
                    .collect();
                // `a|a` names one endpoint twice.
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            None => self.all.clone(),
        }
    }
}

impl Inner {
    fn add_series(&mut self, key: Arc<SeriesKey>, kind: CounterType) -> u32 {
        let id = self.series.len() as u32;
        self.ids.insert(key.clone(), id);
        let metric = self.by_metric.entry(key.metric.clone()).or_default();
        metric.all.push(id);
        metric
            .by_endpoint
            .entry(key.endpoint.clone())
            .or_default()
            .push(id);
        *self.per_endpoint.entry(key.endpoint.clone()).or_default() += 1;
        self.series.push(Series::new(key, kind));
        id
    }

    /// Drops raw samples past the budget or older than `cutoff`, oldest
    /// first.
    fn evict_raw(&mut self, budget: usize, cutoff: i64) {
        while let Some(&id) = self.raw_order.front() {
            let series = &mut self.series[id as usize];
            let too_old = series.raw.front().is_some_and(|(t, _)| *t < cutoff);
            if self.raw_order.len() <= budget && !too_old {
                break;
            }
            series.raw.pop_front();
            self.raw_order.pop_front();
        }
    }
}

/// The store. All methods take `&self`; share it in an `Arc`.
pub struct Tsdb {
    dir: PathBuf,
    config: TsdbConfig,
    inner: Mutex<Inner>,
    /// One flush at a time, without holding up inserts.
    flushing: Mutex<()>,
    files: Vec<Mutex<()>>,
}

impl Tsdb {
    /// Opens (creating) the store in `dir` and reloads its series index.
    pub fn open(dir: &Path, config: TsdbConfig) -> Result<Tsdb, TsdbError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let index_path = dir.join("series.jsonl");
        let (index, entries) = SeriesIndex::open(&index_path).map_err(io_error(&index_path))?;
        let mut inner = Inner {
            ids: HashMap::new(),
            series: Vec::new(),
            by_metric: HashMap::new(),
            per_endpoint: HashMap::new(),
            raw_order: VecDeque::new(),
            closed: HashMap::new(),
            closed_count: 0,
            in_flight: HashMap::new(),
            index,
        };
        for entry in entries {
            // Ids are positions; an index damaged in the middle stops here
            // rather than mislabel files.
            if entry.id as usize != inner.series.len() {
                tracing::warn!(
                    id = entry.id,
                    "series index out of order; later entries ignored"
                );
                break;
            }
            inner.add_series(Arc::new(entry.key), entry.counter_type);
        }
        Ok(Tsdb {
            dir: dir.to_owned(),
            config,
            inner: Mutex::new(inner),
            flushing: Mutex::new(()),
            files: (0..FILE_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &TsdbConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a batch at server time `now`, all of it or (on a malformed
    /// sample or a series limit) nothing.
    pub fn insert(&self, samples: &[FalconSample], now: i64) -> Result<Ingested, TsdbError> {
        let mut keys = Vec::with_capacity(samples.len());
        for (index, sample) in samples.iter().enumerate() {
            validate(sample, now).map_err(|problem| TsdbError::Invalid { index, problem })?;
            keys.push(SeriesKey {
                endpoint: sample.endpoint.clone(),
                metric: sample.metric.clone(),
                tags: sorted_tags(&sample.tags),
            });
        }
        let mut inner = self.lock();
        let ids = self.resolve(&mut inner, keys, samples)?;
        let mut stored = 0;
        let inner = &mut *inner;
        for (sample, id) in samples.iter().zip(ids) {
            let series = &mut inner.series[id as usize];
            if sample.timestamp <= series.latest {
                continue;
            }
            series.latest = sample.timestamp;
            series.raw.push_back((sample.timestamp, sample.value));
            inner.closed_count +=
                series.fold(id, sample.timestamp, sample.value, &mut inner.closed);
            inner.raw_order.push_back(id);
            stored += 1;
        }
        inner.evict_raw(self.config.raw_points, now - self.config.raw_retention);
        Ok(Ingested {
            stored,
            skipped: samples.len() - stored,
        })
    }

    /// The series ids of a batch, creating the new series once the whole
    /// batch is known to fit the per-endpoint limit.
    fn resolve(
        &self,
        inner: &mut Inner,
        keys: Vec<SeriesKey>,
        samples: &[FalconSample],
    ) -> Result<Vec<u32>, TsdbError> {
        let mut fresh: HashSet<&SeriesKey> = HashSet::new();
        let mut added: HashMap<&str, usize> = HashMap::new();
        for key in keys.iter().filter(|k| !inner.ids.contains_key(*k)) {
            if fresh.insert(key) {
                let count = added.entry(&key.endpoint).or_default();
                *count += 1;
                let existing = inner.per_endpoint.get(&key.endpoint).copied().unwrap_or(0);
                if existing + *count > self.config.series_per_endpoint {
                    return Err(TsdbError::SeriesLimit {
                        endpoint: key.endpoint.clone(),
                        limit: self.config.series_per_endpoint,
                    });
                }
            }
        }
        let mut entries = Vec::new();
        let mut ids = Vec::with_capacity(keys.len());
        for (key, sample) in keys.into_iter().zip(samples) {
            let id = match inner.ids.get(&key) {
                Some(id) => *id,
                None => {
                    let kind = sample.counter_type;
                    let key = Arc::new(key);
                    let id = inner.add_series(key.clone(), kind);
                    entries.push(IndexEntry {
                        id,
                        key: (*key).clone(),
                        counter_type: kind,
                    });
                    id
                }
            };
            ids.push(id);
        }
        if !entries.is_empty() {
            let path = self.dir.join("series.jsonl");
            inner.index.append(&entries).map_err(io_error(&path))?;
        }
        Ok(ids)
    }

    /// Writes closed buckets to their segment files and removes the days
    /// past retention.
    pub fn flush(&self, now: i64) -> Result<(), TsdbError> {
        let _one = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        self.write_pending(|_| {})?;
        for (resolution, retention) in [
            (Resolution::Minute, self.config.minute_retention),
            (Resolution::Hour, self.config.hour_retention),
        ] {
            let dir = segment::resolution_dir(&self.dir, resolution);
            segment::remove_days_before(&self.dir, resolution, now - retention)
                .map_err(io_error(&dir))?;
        }
        Ok(())
    }

    /// Writes every bucket, the open ones too (at shutdown). A series that
    /// goes on in the same minute later writes a second record for it,
    /// which readers merge.
    pub fn close(&self) -> Result<(), TsdbError> {
        let _one = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        self.write_pending(|inner| {
            let Inner { series, closed, .. } = inner;
            for (id, series) in series.iter_mut().enumerate() {
                for (resolution, open) in [
                    (Resolution::Minute, series.minute.take()),
                    (Resolution::Hour, series.hour.take()),
                ] {
                    if let Some(bucket) = open {
                        closed
                            .entry(id as u32)
                            .or_default()
                            .push((resolution, bucket));
                    }
                }
            }
        })
    }

    /// Takes the closed buckets (after `prepare` has had the lock) and
    /// appends them to their files, series by series, each under its file
    /// stripe. Buckets a failed write leaves stay in flight for the next
    /// flush, and queries keep seeing them.
    fn write_pending(&self, prepare: impl FnOnce(&mut Inner)) -> Result<(), TsdbError> {
        let mut ids: Vec<u32> = {
            let mut inner = self.lock();
            prepare(&mut inner);
            let closed = std::mem::take(&mut inner.closed);
            inner.closed_count = 0;
            for (id, mut buckets) in closed {
                inner.in_flight.entry(id).or_default().append(&mut buckets);
            }
            inner.in_flight.keys().copied().collect()
        };
        // A stripe's series in chunks: one lock of the table per chunk, not
        // per series, so inserts are not held up a million times a flush,
        // and a query of a series waits for one chunk's appends at most.
        ids.sort_unstable_by_key(|id| (*id as usize % FILE_STRIPES, *id));
        let chunks = ids.chunk_by(|a, b| *a as usize % FILE_STRIPES == *b as usize % FILE_STRIPES);
        for chunk in chunks.flat_map(|stripe| stripe.chunks(FLUSH_CHUNK)) {
            let _file = self.file_lock(chunk[0]);
            let taken: Vec<(u32, Vec<(Resolution, Bucket)>)> = {
                let mut inner = self.lock();
                chunk
                    .iter()
                    .filter_map(|id| inner.in_flight.remove(id).map(|b| (*id, b)))
                    .collect()
            };
            let mut taken = taken.into_iter();
            while let Some((id, buckets)) = taken.next() {
                if let Err((rest, err)) = self.append_series(id, buckets) {
                    // What is not written stays in flight for the next flush.
                    let mut inner = self.lock();
                    inner.in_flight.insert(id, rest);
                    inner.in_flight.extend(taken);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Appends one series' buckets to their files; on a failure, gives back
    /// the buckets not written.
    #[allow(clippy::type_complexity)]
    fn append_series(
        &self,
        id: u32,
        mut buckets: Vec<(Resolution, Bucket)>,
    ) -> Result<(), (Vec<(Resolution, Bucket)>, TsdbError)> {
        let file_of = |(resolution, bucket): &(Resolution, Bucket)| {
            (*resolution, bucket.start.div_euclid(DAY))
        };
        buckets.sort_by_key(file_of);
        let mut written = 0;
        for run in buckets.chunk_by(|a, b| file_of(a) == file_of(b)) {
            let (resolution, first) = run[0];
            let path = segment::path(&self.dir, resolution, first.start, id);
            let records: Vec<Bucket> = run.iter().map(|(_, b)| *b).collect();
            if let Err(err) = segment::append(&path, &records) {
                let error = io_error(&path)(err);
                return Err((buckets.split_off(written), error));
            }
            written += run.len();
        }
        Ok(())
    }

    fn file_lock(&self, id: u32) -> MutexGuard<'_, ()> {
        let stripe = &self.files[id as usize % FILE_STRIPES];
        stripe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sizes, for benchmarks and monitoring.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            series: inner.series.len(),
            raw_points: inner.raw_order.len(),
            pending_buckets: inner.closed_count
                + inner.in_flight.values().map(Vec::len).sum::<usize>(),
        }
    }

    /// The resolution a query reads: the finest whose bucket fits in a step
    /// and whose retention reaches back to the query's start.
    fn resolution_for(&self, query: &Query, now: i64) -> Result<Resolution, TsdbError> {
        if query.step < 1 || query.end < query.start {
            return Err(TsdbError::BadQuery(
                "step must be at least 1s and end must not be before start".into(),
            ));
        }
        let points = (query.end - query.start) / query.step + 1;
        if points > MAX_POINTS {
            return Err(TsdbError::BadQuery(format!(
                "step {}s is too small for this range: {points} points a series, more than {MAX_POINTS}; use a larger step",
                query.step
            )));
        }
        let c = &self.config;
        let age = now - query.start;
        if age > c.hour_retention {
            return Err(TsdbError::BadQuery(format!(
                "range starts {}h ago; history is kept {}h (1-hour buckets)",
                age / HOUR,
                c.hour_retention / HOUR
            )));
        }
        let candidates = [
            (Resolution::Raw, c.raw_retention),
            (Resolution::Minute, c.minute_retention),
            (Resolution::Hour, c.hour_retention),
        ];
        candidates
            .into_iter()
            .find(|(r, keep)| {
                // Raw samples answer small steps; buckets answer steps at
                // least their width.
                let fits = if *r == Resolution::Raw { query.step < 60 } else { query.step >= r.seconds() };
                fits && age <= *keep
            })
            .map(|(r, _)| r)
            .ok_or_else(|| {
                TsdbError::BadQuery(format!(
                    "step {}s is too small for a range starting {}s ago: raw samples are kept {}s, 1-minute buckets {}s, 1-hour buckets {}s; steps under 60s read raw samples, under 3600s 1-minute buckets",
                    query.step, age, c.raw_retention, c.minute_retention, c.hour_retention
                ))
            })
    }

    /// Answers a query at server time `now`.
    pub fn query(&self, query: &Query, now: i64) -> Result<QueryResult, TsdbError> {
        let resolution = self.resolution_for(query, now)?;
        let found = self.gather(query, resolution)?;
        let mut series = Vec::with_capacity(found.len());
        for (key, kind, mut observations) in found {
            if resolution != Resolution::Raw {
                observations = self.buckets(query, resolution, &key)?;
            }
            let counter = kind == CounterType::Counter;
            let points = if counter && query.rate {
                query::windows(&query::rates(&observations), query, false)
            } else {
                query::windows(&observations, query, counter)
            };
            if !points.is_empty() {
                series.push(SeriesPoints {
                    labels: query::labels(&key.0),
                    points,
                });
            }
        }
        let series = match query.agg {
            Some(agg) => query::aggregate(series, agg, &query.by),
            None => series,
        };
        Ok(QueryResult {
            metric: query.metric.clone(),
            resolution: resolution.name(),
            start: query::align(query.start, query.step),
            end: query.end,
            step: query.step,
            series,
        })
    }

    /// The matching series, with their raw samples in range when the
    /// query reads raw samples.
    #[allow(clippy::type_complexity)]
    fn gather(
        &self,
        query: &Query,
        resolution: Resolution,
    ) -> Result<Vec<(KeyWithId, CounterType, Vec<Observation>)>, TsdbError> {
        let inner = self.lock();
        let ids = inner
            .by_metric
            .get(&query.metric)
            .ok_or_else(|| TsdbError::UnknownMetric(query.metric.clone()))?
            .candidates(&query.matchers);
        // A rate needs the sample before the first window.
        let from = query::align(query.start, query.step) - query.step.max(resolution.seconds());
        let matching: Vec<u32> = ids
            .into_iter()
            .filter(|id| {
                let key = &inner.series[*id as usize].key;
                query.matchers.iter().all(|m| m.matches(key))
            })
            .collect();
        if matching.len() > MAX_SERIES {
            return Err(TsdbError::BadQuery(format!(
                "{} series match, more than {MAX_SERIES}; narrow the tags or endpoint",
                matching.len()
            )));
        }
        let in_range = |t: i64| t >= from && t <= query.end;
        Ok(matching
            .into_iter()
            .map(|id| {
                let series = &inner.series[id as usize];
                let raw = match resolution {
                    Resolution::Raw => series
                        .raw
                        .iter()
                        .filter(|(t, _)| in_range(*t))
                        .map(|&(t, v)| Observation::single(t, v))
                        .collect(),
                    Resolution::Minute | Resolution::Hour => Vec::new(),
                };
                (KeyWithId(series.key.clone(), id), series.kind, raw)
            })
            .collect())
    }

    /// One series' buckets in the query's range, merged per interval:
    /// written, in flight, closed and open. Memory and files are read under
    /// the series' file stripe, so a flush moving buckets from one to the
    /// other is either before or after, never half-seen.
    fn buckets(
        &self,
        query: &Query,
        resolution: Resolution,
        key: &KeyWithId,
    ) -> Result<Vec<Observation>, TsdbError> {
        let from = query::align(query.start, query.step) - query.step.max(resolution.seconds());
        let in_range = |b: &Bucket| b.start >= from && b.start <= query.end;
        let _file = self.file_lock(key.1);
        let mut memory: Vec<Observation> = {
            let inner = self.lock();
            let series = &inner.series[key.1 as usize];
            let open = match resolution {
                Resolution::Minute => series.minute,
                _ => series.hour,
            };
            let pending = [inner.in_flight.get(&key.1), inner.closed.get(&key.1)];
            pending
                .into_iter()
                .flatten()
                .flatten()
                .filter(|(r, b)| *r == resolution && in_range(b))
                .map(|(_, b)| *b)
                .chain(open.filter(in_range))
                .map(|b| observation(&b))
                .collect()
        };
        // Written history first: equal intervals merge in write order.
        let mut observations = Vec::new();
        for day in from.div_euclid(DAY)..=query.end.div_euclid(DAY) {
            let path = segment::path(&self.dir, resolution, day * DAY, key.1);
            let buckets = segment::read(&path).map_err(io_error(&path))?;
            observations.extend(buckets.iter().filter(|b| in_range(b)).map(observation));
        }
        observations.append(&mut memory);
        observations.sort_by_key(|o| o.time);
        Ok(merge_observations(observations))
    }
}

/// A series' key and id, as a query carries them.
struct KeyWithId(Arc<SeriesKey>, u32);

fn observation(bucket: &Bucket) -> Observation {
    Observation {
        time: bucket.start,
        sum: bucket.sum,
        count: bucket.count,
        last: bucket.last,
    }
}

/// Merges observations of the same bucket (written, pending and open parts
/// of one interval), already sorted by time.
fn merge_observations(sorted: Vec<Observation>) -> Vec<Observation> {
    let mut merged: Vec<Observation> = Vec::with_capacity(sorted.len());
    for o in sorted {
        match merged.last_mut() {
            Some(prev) if prev.time == o.time => {
                prev.sum += o.sum;
                prev.count += o.count;
                prev.last = o.last;
            }
            _ => merged.push(o),
        }
    }
    merged
}

/// falcon tags in sorted form, so that the same tags in another order
/// name the same series.
fn sorted_tags(tags: &str) -> String {
    match parse_tags(tags) {
        Ok(map) => format_tags(&map),
        Err(_) => tags.to_owned(),
    }
}

#[cfg(test)]
mod tests;
