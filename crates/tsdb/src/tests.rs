use super::*;
use wharf_api::CounterType;

const T0: i64 = 1_800_000_000 - 1_800_000_000 % DAY;

fn sample(endpoint: &str, metric: &str, tags: &str, t: i64, v: f64) -> FalconSample {
    FalconSample {
        endpoint: endpoint.into(),
        metric: metric.into(),
        tags: tags.into(),
        value: v,
        timestamp: t,
        counter_type: CounterType::Gauge,
        step: 10,
    }
}

fn counter(t: i64, v: f64) -> FalconSample {
    FalconSample {
        counter_type: CounterType::Counter,
        ..sample("n1", "net.if.in.bytes", "iface=eth0", t, v)
    }
}

fn query(metric: &str, start: i64, end: i64, step: i64) -> Query {
    Query::new(metric, start, end, step)
}

/// Pushes `count` samples of one series, 10 s apart from T0, valued 0, 1, 2...
fn push_every_10s(tsdb: &Tsdb, metric: &str, tags: &str, count: i64) {
    for i in 0..count {
        let t = T0 + i * 10;
        tsdb.insert(&[sample("a", metric, tags, t, i as f64)], t)
            .unwrap();
    }
}

fn open(dir: &Path, config: TsdbConfig) -> Tsdb {
    Tsdb::open(dir, config).unwrap()
}

#[test]
fn past_the_raw_budget_the_oldest_samples_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = TsdbConfig {
        raw_points: 4,
        ..TsdbConfig::default()
    };
    let tsdb = open(dir.path(), config);
    for t in 0..3 {
        let at = T0 + t * 10;
        tsdb.insert(
            &[sample("a", "m", "", at, 1.0), sample("b", "m", "", at, 2.0)],
            at,
        )
        .unwrap();
    }
    assert_eq!(tsdb.stats().raw_points, 4);
    let answer = tsdb.query(&query("m", T0, T0 + 30, 10), T0 + 30).unwrap();
    let times: Vec<Vec<i64>> = answer
        .series
        .iter()
        .map(|s| s.points.iter().map(|p| p.0).collect())
        .collect();
    assert_eq!(times, vec![vec![T0 + 10, T0 + 20], vec![T0 + 10, T0 + 20]]);
}

#[test]
fn raw_samples_older_than_their_retention_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = TsdbConfig {
        raw_retention: 60,
        ..TsdbConfig::default()
    };
    let tsdb = open(dir.path(), config);
    tsdb.insert(&[sample("a", "m", "", T0, 1.0)], T0).unwrap();
    tsdb.insert(&[sample("a", "m", "", T0 + 100, 2.0)], T0 + 100)
        .unwrap();
    assert_eq!(tsdb.stats().raw_points, 1);
}

#[test]
fn an_endpoint_past_its_series_limit_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = TsdbConfig {
        series_per_endpoint: 2,
        ..TsdbConfig::default()
    };
    let tsdb = open(dir.path(), config);
    tsdb.insert(&[sample("a", "m", "k=1", T0, 1.0)], T0)
        .unwrap();
    let flood = [
        sample("a", "m", "k=1", T0 + 10, 1.0),
        sample("a", "m", "k=2", T0 + 10, 1.0),
        sample("a", "m", "k=3", T0 + 10, 1.0),
    ];
    let err = tsdb.insert(&flood, T0 + 10).unwrap_err();
    assert!(
        matches!(err, TsdbError::SeriesLimit { limit: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"a\""));
    assert_eq!(
        tsdb.stats(),
        Stats {
            series: 1,
            raw_points: 1,
            pending_buckets: 0
        }
    );
    // Other endpoints and known series still go in.
    tsdb.insert(
        &[
            sample("b", "m", "k=1", T0, 1.0),
            sample("a", "m", "k=2", T0 + 10, 1.0),
        ],
        T0 + 10,
    )
    .unwrap();
    assert_eq!(tsdb.stats().series, 3);
}

#[test]
fn a_bad_sample_stores_nothing_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = open(dir.path(), TsdbConfig::default());
    let batch = [
        sample("a", "m", "", T0, 1.0),
        sample("a", "m", "", T0, f64::INFINITY),
    ];
    let err = tsdb.insert(&batch, T0).unwrap_err();
    assert_eq!(err.to_string(), "sample 1: value: must be a finite number");
    assert_eq!(tsdb.stats().series, 0);
}

#[test]
fn minute_and_hour_buckets_hold_min_avg_max_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = open(dir.path(), TsdbConfig::default());
    // Two minutes of samples every 10 s: 0..6 then 6..12.
    push_every_10s(&tsdb, "m", "", 12);
    tsdb.insert(&[sample("a", "m", "", T0 + HOUR, 100.0)], T0 + HOUR)
        .unwrap();
    tsdb.flush(T0 + HOUR).unwrap();
    let history = segment::read(&segment::path(dir.path(), Resolution::Minute, T0, 0)).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[0].min,
            history[0].avg(),
            history[0].max,
            history[0].count
        ),
        (0.0, 2.5, 5.0, 6)
    );
    assert_eq!(
        (history[1].min, history[1].avg(), history[1].max),
        (6.0, 8.5, 11.0)
    );
    let hour = segment::read(&segment::path(dir.path(), Resolution::Hour, T0, 0)).unwrap();
    assert_eq!(
        (hour[0].count, hour[0].avg(), hour[0].last),
        (12, 5.5, 11.0)
    );
    // The 1-minute answer merges written, pending and open buckets.
    let answer = tsdb
        .query(&query("m", T0, T0 + HOUR, 60), T0 + HOUR)
        .unwrap();
    assert_eq!(answer.resolution, "1m");
    assert_eq!(
        answer.series[0].points,
        vec![(T0, 2.5), (T0 + 60, 8.5), (T0 + HOUR, 100.0)]
    );
}

#[test]
fn counters_read_as_rates_through_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = open(dir.path(), TsdbConfig::default());
    for (i, v) in [1000.0, 2000.0, 3000.0, 500.0, 1500.0]
        .into_iter()
        .enumerate()
    {
        let t = T0 + i as i64 * 10;
        tsdb.insert(&[counter(t, v)], t).unwrap();
    }
    let mut q = query("net.if.in.bytes", T0, T0 + 40, 10);
    q.rate = true;
    let answer = tsdb.query(&q, T0 + 40).unwrap();
    assert_eq!(
        answer.series[0].points,
        vec![
            (T0 + 10, 100.0),
            (T0 + 20, 100.0),
            (T0 + 30, 50.0),
            (T0 + 40, 100.0)
        ]
    );
    // Without rate a counter reads as its last value in each step.
    q.rate = false;
    q.step = 20;
    let raw = tsdb.query(&q, T0 + 40).unwrap();
    assert_eq!(
        raw.series[0].points,
        vec![(T0, 2000.0), (T0 + 20, 500.0), (T0 + 40, 1500.0)]
    );
}

#[test]
fn history_survives_a_restart_even_with_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tsdb = open(dir.path(), TsdbConfig::default());
        push_every_10s(&tsdb, "cpu.busy", "core=0", 9);
        tsdb.close().unwrap();
    }
    // A crash halfway through a later append.
    let file = segment::path(dir.path(), Resolution::Minute, T0, 0);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0xAB; 30]);
    std::fs::write(&file, bytes).unwrap();
    let tsdb = open(dir.path(), TsdbConfig::default());
    assert_eq!(tsdb.stats().series, 1);
    let mut q = query("cpu.busy", T0, T0 + 120, 60);
    q.matchers = Matcher::parse_list("core=0").unwrap();
    let answer = tsdb.query(&q, T0 + 120).unwrap();
    assert_eq!(answer.series[0].points, vec![(T0, 2.5), (T0 + 60, 7.0)]);
    // The series goes on in the same minute: the two records merge.
    tsdb.insert(
        &[sample("a", "cpu.busy", "core=0", T0 + 100, 12.0)],
        T0 + 100,
    )
    .unwrap();
    tsdb.close().unwrap();
    let answer = tsdb.query(&q, T0 + 120).unwrap();
    assert_eq!(answer.series[0].points, vec![(T0, 2.5), (T0 + 60, 8.25)]);
}

#[test]
fn history_past_retention_is_removed_and_queries_name_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = open(dir.path(), TsdbConfig::default());
    tsdb.insert(&[sample("a", "m", "", T0, 1.0)], T0).unwrap();
    tsdb.close().unwrap();
    let later = T0 + 8 * DAY;
    tsdb.flush(later).unwrap();
    assert!(!segment::path(dir.path(), Resolution::Minute, T0, 0).exists());
    assert!(segment::path(dir.path(), Resolution::Hour, T0, 0).exists());
    let err = |q: Query| tsdb.query(&q, later).unwrap_err().to_string();
    assert!(err(query("m", later - 3 * HOUR, later, 10)).contains("raw samples are kept 7200s"));
    assert!(err(query("m", later - 100 * DAY, later, HOUR)).contains("kept 2160h"));
    assert!(err(query("m", later - DAY, later, 1)).contains("more than 11000"));
    assert_eq!(
        err(query("nope", later - 60, later, 10)),
        "unknown metric \"nope\""
    );
    // Eight days back at an hourly step reads the 1-hour history.
    let answer = tsdb.query(&query("m", T0, later, HOUR), later).unwrap();
    assert_eq!(
        (answer.resolution, answer.series[0].points.clone()),
        ("1h", vec![(T0, 1.0)])
    );
}

#[test]
fn series_are_found_by_tags_in_any_order_and_aggregated_by_label() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = open(dir.path(), TsdbConfig::default());
    tsdb.insert(
        &[
            sample("n1", "mem", "pod=a,project=p", T0, 1.0),
            sample("n1", "mem", "project=p, pod=a", T0 + 10, 3.0),
            sample("n2", "mem", "project=p,pod=b", T0, 5.0),
            sample("n2", "mem", "project=q,pod=c", T0, 7.0),
        ],
        T0 + 10,
    )
    .unwrap();
    assert_eq!(tsdb.stats().series, 3);
    let mut q = query("mem", T0, T0 + 10, 60);
    q.start = T0 - 50;
    q.matchers = Matcher::parse_list("project=p").unwrap();
    q.agg = Some(Agg::Sum);
    q.by = vec!["endpoint".into()];
    let answer = tsdb.query(&q, T0 + 10).unwrap();
    let sums: Vec<_> = answer
        .series
        .iter()
        .map(|s| (s.labels["endpoint"].clone(), s.points[0].1))
        .collect();
    assert_eq!(sums, vec![("n1".into(), 2.0), ("n2".into(), 5.0)]);
}

/// Queries running while flushes move buckets from memory to files see
/// every bucket exactly once: never twice (a count of 2), never missing.
#[test]
fn queries_during_flushes_see_each_bucket_once() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Arc::new(open(dir.path(), TsdbConfig::default()));
    let minutes = 30;
    let key = Arc::new(SeriesKey {
        endpoint: "a".into(),
        metric: "m".into(),
        tags: "s=7".into(),
    });
    // Each series gets one sample a minute: every bucket counts 1.
    let check = |tsdb: &Tsdb, up_to: i64| {
        let id = tsdb.lock().ids[&key];
        let q = query("m", T0, T0 + minutes * 60, 60);
        let seen = tsdb
            .buckets(&q, Resolution::Minute, &KeyWithId(key.clone(), id))
            .unwrap();
        let counts: Vec<(i64, u32)> = seen.iter().map(|o| ((o.time - T0) / 60, o.count)).collect();
        let want: Vec<(i64, u32)> = (0..=up_to).map(|m| (m, 1)).collect();
        assert_eq!(counts, want);
    };
    for minute in 0..minutes {
        let at = T0 + minute * 60;
        let batch: Vec<FalconSample> = (0..200)
            .map(|s| sample("a", "m", &format!("s={s}"), at, minute as f64))
            .collect();
        tsdb.insert(&batch, at).unwrap();
        std::thread::scope(|scope| {
            let flushing = tsdb.clone();
            scope.spawn(move || flushing.flush(at).unwrap());
            for _ in 0..20 {
                check(&tsdb, minute);
            }
        });
    }
    tsdb.flush(T0 + minutes * 60).unwrap();
    assert_eq!(tsdb.stats().pending_buckets, 0);
    check(&tsdb, minutes - 1);
}

#[test]
fn latest_gives_the_newest_sample_of_live_series_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = TsdbConfig {
        raw_points: 1,
        ..TsdbConfig::default()
    };
    let tsdb = Tsdb::open(dir.path(), config).unwrap();
    tsdb.insert(&[sample("old", "cpu.busy", "", T0, 1.0)], T0)
        .unwrap();
    let fresh = [
        sample("n1", "cpu.busy", "", T0 + 100, 2.0),
        sample("n1", "cpu.busy", "", T0 + 110, 3.0),
        sample("n1", "mem.memused", "", T0 + 110, 4.0),
    ];
    tsdb.insert(&fresh, T0 + 110).unwrap();
    let mut latest = tsdb.latest(T0 + 50);
    latest.sort_by(|a, b| a.key.metric.cmp(&b.key.metric));
    let seen: Vec<(&str, &str, i64, f64)> = latest
        .iter()
        .map(|l| {
            (
                l.key.endpoint.as_str(),
                l.key.metric.as_str(),
                l.timestamp,
                l.value,
            )
        })
        .collect();
    // The raw budget of one point evicted n1's cpu.busy raw samples; its
    // newest value is still there, and the quiet endpoint is left out.
    assert_eq!(
        seen,
        vec![
            ("n1", "cpu.busy", T0 + 110, 3.0),
            ("n1", "mem.memused", T0 + 110, 4.0)
        ]
    );
}

#[test]
fn endpoint_matchers_pick_their_series_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = open(dir.path(), TsdbConfig::default());
    let batch: Vec<FalconSample> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            [
                sample(e, "m", "core=0", T0, i as f64),
                sample(e, "m", "core=1", T0, i as f64),
                sample(e, "other", "", T0, 9.0),
            ]
        })
        .collect();
    tsdb.insert(&batch, T0).unwrap();
    let endpoints = |matchers: &str| -> Vec<String> {
        let mut q = query("m", T0, T0 + 10, 10);
        q.matchers = Matcher::parse_list(matchers).unwrap();
        let mut seen: Vec<String> = tsdb
            .query(&q, T0 + 10)
            .unwrap()
            .series
            .iter()
            .map(|s| format!("{}/{}", s.labels["endpoint"], s.labels["core"]))
            .collect();
        seen.sort();
        seen
    };
    assert_eq!(endpoints("endpoint=b"), ["b/0", "b/1"]);
    assert_eq!(endpoints("endpoint=b,core=1"), ["b/1"]);
    assert_eq!(endpoints("endpoint=c|a|c"), ["a/0", "a/1", "c/0", "c/1"]);
    assert_eq!(endpoints("endpoint!=a,core=0"), ["b/0", "c/0"]);
    assert!(endpoints("endpoint=z").is_empty());
    assert_eq!(endpoints("core=1").len(), 3);
}
