//! The metrics store under an agent fleet's load, in process: simulated
//! endpoints each push their series every 10 s (simulated time, as fast as
//! the store takes them) while another thread queries one series' last
//! 24 h at 1-minute resolution and a third flushes closed buckets to disk,
//! as the server does. Reports samples stored per second, memory per
//! active series and query latencies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use wharf_api::{CounterType, FalconSample};
use wharf_tsdb::{Matcher, Query, Tsdb, TsdbConfig};

#[derive(Args)]
pub struct TsdbBenchArgs {
    /// Simulated agents (endpoints).
    #[arg(long, default_value_t = 5000)]
    endpoints: usize,
    /// Series per endpoint.
    #[arg(long, default_value_t = 100)]
    series: usize,
    /// Pushes of every endpoint (10 s of simulated time each).
    #[arg(long, default_value_t = 12)]
    rounds: i64,
    /// 24-hour queries timed after the load, for the p99.
    #[arg(long, default_value_t = 500)]
    queries: usize,
}

/// Simulated time starts at noon of a UTC day, so 24 h back spans two
/// day files.
const T0: i64 = 1_800_000_000 - 1_800_000_000 % 86_400 + 43_200;
const DAY: i64 = 86_400;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn day_query() -> Query {
    // The fleet's pushes start at T0.
    let mut query = Query::new("bench.m0", T0 - DAY, T0 - 1, 60);
    query.matchers = vec![
        Matcher::Eq("endpoint".into(), "wts-e0".into()),
        Matcher::Eq("idx".into(), "0".into()),
    ];
    query
}

pub async fn run(args: TsdbBenchArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || measure(args)).await?
}

fn measure(args: TsdbBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = TsdbConfig {
        series_per_endpoint: args.series.max(1),
        ..TsdbConfig::default()
    };
    let tsdb = Arc::new(Tsdb::open(dir.path(), config)?);
    // 24 h of one series at one sample a minute, for the history query.
    let history: Vec<FalconSample> = (0..1440)
        .map(|i| sample("wts-e0", 0, T0 - DAY + i * 60, i as f64))
        .collect();
    for chunk in history.chunks(60) {
        tsdb.insert(chunk, chunk[chunk.len() - 1].timestamp)?;
    }
    tsdb.flush(T0)?;

    let before = resident_bytes();
    let mut batches: Vec<Vec<FalconSample>> = (0..args.endpoints)
        .map(|e| {
            (0..args.series)
                .map(|s| sample(&format!("wts-e{e}"), s, 0, 0.0))
                .collect()
        })
        .collect();
    let batch_bytes = resident_bytes() - before;
    let loading = Arc::new(AtomicBool::new(true));
    let flusher = spawn_flusher(tsdb.clone(), loading.clone(), args.rounds);
    let querier = spawn_querier(tsdb.clone(), loading.clone());
    let started = Instant::now();
    let mut stored = 0usize;
    for round in 1..=args.rounds {
        let at = T0 + round * 10;
        for batch in &mut batches {
            for (s, sample) in batch.iter_mut().enumerate() {
                sample.timestamp = at;
                sample.value = (round as f64) * (s as f64 + 1.0);
            }
            stored += tsdb.insert(batch, at)?.stored;
        }
    }
    let elapsed = started.elapsed();
    loading.store(false, Ordering::Relaxed);
    let (flushes, flush_time) = flusher.join().expect("flusher");
    let mut under_load = querier.join().expect("querier");
    let stats = tsdb.stats();
    let store_bytes = resident_bytes().saturating_sub(before + batch_bytes);

    let now = T0 + args.rounds * 10;
    let mut quiet: Vec<Duration> = (0..args.queries)
        .map(|_| {
            let started = Instant::now();
            let answer = tsdb.query(&day_query(), now).expect("query");
            assert_eq!(answer.series[0].points.len(), 1440);
            started.elapsed()
        })
        .collect();
    quiet.sort();
    under_load.sort();

    let rate = stored as f64 / elapsed.as_secs_f64();
    println!(
        "endpoints {} x series {} = {} series, {} rounds",
        args.endpoints, args.series, stats.series, args.rounds
    );
    println!(
        "ingest: {stored} samples in {:.2}s = {:.0} samples/s (target >= 200000)",
        elapsed.as_secs_f64(),
        rate
    );
    println!(
        "flushes during the load: {flushes}, {:.2}s writing closed buckets",
        flush_time.as_secs_f64()
    );
    println!(
        "memory: {} MiB resident for the store, {} raw points: {:.0} bytes per active series ({:.1} raw points each)",
        store_bytes >> 20,
        stats.raw_points,
        store_bytes as f64 / stats.series as f64,
        stats.raw_points as f64 / stats.series as f64
    );
    println!(
        "24 h query at 1m (1440 points): p50 {:?} p99 {:?} quiet; p50 {:?} p99 {:?} during ingest ({} queries) (target p99 <= 10 ms)",
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        percentile(&under_load, 0.5),
        percentile(&under_load, 0.99),
        under_load.len()
    );
    Ok(())
}

fn sample(endpoint: &str, series: usize, timestamp: i64, value: f64) -> FalconSample {
    // A tenth of the series are counters, as in a node's report.
    let counter = series % 10 == 9;
    FalconSample {
        endpoint: endpoint.to_owned(),
        metric: format!("bench.m{}", series % 20),
        tags: format!("idx={}", series / 20),
        value,
        timestamp,
        counter_type: if counter {
            CounterType::Counter
        } else {
            CounterType::Gauge
        },
        step: 10,
    }
}

/// Flushes once a wall-clock second, as the server does every 10 s of a
/// real fleet's pushes; returns the count and the time spent.
fn spawn_flusher(
    tsdb: Arc<Tsdb>,
    loading: Arc<AtomicBool>,
    rounds: i64,
) -> std::thread::JoinHandle<(usize, Duration)> {
    std::thread::spawn(move || {
        let (mut count, mut spent) = (0, Duration::ZERO);
        while loading.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let started = Instant::now();
            tsdb.flush(T0 + rounds * 10).expect("flush");
            spent += started.elapsed();
            count += 1;
        }
        (count, spent)
    })
}

/// Queries the 24-hour series back to back while the load runs.
fn spawn_querier(
    tsdb: Arc<Tsdb>,
    loading: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut times = Vec::new();
        while loading.load(Ordering::Relaxed) {
            let started = Instant::now();
            tsdb.query(&day_query(), T0).expect("query");
            times.push(started.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        times
    })
}
