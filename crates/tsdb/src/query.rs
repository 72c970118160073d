//! Queries: which series (metric and label matchers), over what range and
//! step, and how they are combined; the arithmetic that turns stored
//! points into answered points (windows, counter rates, aggregation).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::index::SeriesKey;

/// Most points one series may have in an answer.
pub const MAX_POINTS: i64 = 11_000;
/// Most series one query may read.
pub const MAX_SERIES: usize = 10_000;

/// How series are combined at each timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    /// Sum of the values.
    Sum,
    /// Mean of the values.
    Avg,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
}

impl std::str::FromStr for Agg {
    type Err = String;

    fn from_str(text: &str) -> Result<Agg, String> {
        match text {
            "sum" => Ok(Agg::Sum),
            "avg" => Ok(Agg::Avg),
            "max" => Ok(Agg::Max),
            "min" => Ok(Agg::Min),
            _ => Err(format!("agg {text:?} is not one of sum, avg, max, min")),
        }
    }
}

/// A condition on one label (a tag, or `endpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matcher {
    /// `k=v`: the label is v.
    Eq(String, String),
    /// `k!=v`: the label is missing or not v.
    Ne(String, String),
    /// `k=a|b`: the label is one of the values.
    OneOf(String, Vec<String>),
}

impl Matcher {
    /// Parses `k=v,k2!=v2,k3=a|b`.
    pub fn parse_list(text: &str) -> Result<Vec<Matcher>, String> {
        let mut matchers = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value, negated) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, false)
            } else {
                return Err(format!("tag matcher {part:?} is not k=v, k!=v or k=a|b"));
            };
            let (key, value) = (key.trim().to_owned(), value.trim().to_owned());
            if key.is_empty() {
                return Err(format!("tag matcher {part:?} has no key"));
            }
            matchers.push(match (negated, value.contains('|')) {
                (true, _) => Matcher::Ne(key, value),
                (false, true) => Matcher::OneOf(key, value.split('|').map(str::to_owned).collect()),
                (false, false) => Matcher::Eq(key, value),
            });
        }
        Ok(matchers)
    }

    /// The label the matcher reads.
    pub fn key(&self) -> &str {
        match self {
            Matcher::Eq(k, _) | Matcher::Ne(k, _) | Matcher::OneOf(k, _) => k,
        }
    }

    fn accepts(&self, value: Option<&str>) -> bool {
        match self {
            Matcher::Eq(_, v) => value == Some(v.as_str()),
            Matcher::Ne(_, v) => value != Some(v.as_str()),
            Matcher::OneOf(_, vs) => value.is_some_and(|value| vs.iter().any(|v| v == value)),
        }
    }

    /// Whether a series' labels satisfy the matcher.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.accepts(label(key, self.key()))
    }
}

/// A label of a series without allocating: `endpoint` or one of its tags.
pub fn label<'a>(key: &'a SeriesKey, name: &str) -> Option<&'a str> {
    if name == "endpoint" {
        return Some(&key.endpoint);
    }
    key.tags
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The labels of a series: its tags and `endpoint`.
pub fn labels(key: &SeriesKey) -> BTreeMap<String, String> {
    let mut labels = wharf_api::parse_tags(&key.tags).unwrap_or_default();
    labels.insert("endpoint".into(), key.endpoint.clone());
    labels
}

/// What to read and how to combine it.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The metric name.
    pub metric: String,
    /// Conditions on the labels (`endpoint` included).
    pub matchers: Vec<Matcher>,
    /// First second of the range.
    pub start: i64,
    /// Last second of the range.
    pub end: i64,
    /// Width of one answered point in seconds.
    pub step: i64,
    /// Combine the series with this; each series apart when `None`.
    pub agg: Option<Agg>,
    /// Labels that keep series apart when aggregating.
    pub by: Vec<String>,
    /// Turn counters into per-second rates.
    pub rate: bool,
}

impl Query {
    /// Every series of `metric` over `[start, end]` at `step`, each apart,
    /// as stored; set the other fields to narrow or combine.
    pub fn new(metric: &str, start: i64, end: i64, step: i64) -> Query {
        Query {
            metric: metric.to_owned(),
            matchers: Vec::new(),
            start,
            end,
            step,
            agg: None,
            by: Vec::new(),
            rate: false,
        }
    }
}

/// One answered series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesPoints {
    /// Its labels (all of them, or the `by` labels when aggregated).
    pub labels: BTreeMap<String, String>,
    /// `[timestamp, value]` pairs, one per step with data.
    pub points: Vec<(i64, f64)>,
}

/// The answer to a query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryResult {
    /// The metric read.
    pub metric: String,
    /// The resolution read: `raw`, `1m` or `1h`.
    pub resolution: &'static str,
    /// Start of the first step.
    pub start: i64,
    /// End of the range.
    pub end: i64,
    /// The step.
    pub step: i64,
    /// The series.
    pub series: Vec<SeriesPoints>,
}

/// A stored observation: one raw sample, or one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Observation {
    pub time: i64,
    pub sum: f64,
    pub count: u32,
    pub last: f64,
}

impl Observation {
    pub fn single(time: i64, value: f64) -> Observation {
        Observation {
            time,
            sum: value,
            count: 1,
            last: value,
        }
    }
}

/// Per-second rates of a counter from consecutive observations' last
/// values, stamped at the later one. A drop means the counter restarted
/// from zero, so the increase is the new value, never negative.
pub(crate) fn rates(observations: &[Observation]) -> Vec<Observation> {
    observations
        .windows(2)
        .filter(|pair| pair[1].time > pair[0].time)
        .map(|pair| {
            let (before, after) = (pair[0], pair[1]);
            let increase = if after.last >= before.last {
                after.last - before.last
            } else {
                after.last
            };
            Observation::single(after.time, increase / (after.time - before.time) as f64)
        })
        .collect()
}

/// The first step boundary at or before `start`.
pub(crate) fn align(start: i64, step: i64) -> i64 {
    start - start.rem_euclid(step)
}

/// One point per step window `[t, t + step)` that holds observations: their
/// mean, or the last one (a counter read without `rate`).
pub(crate) fn windows(
    observations: &[Observation],
    query: &Query,
    use_last: bool,
) -> Vec<(i64, f64)> {
    let first = align(query.start, query.step);
    let mut points: Vec<(i64, f64)> = Vec::new();
    let mut current: Option<(i64, f64, u32, f64)> = None;
    let close = |points: &mut Vec<(i64, f64)>, (t, sum, count, last): (i64, f64, u32, f64)| {
        let value = if use_last {
            last
        } else {
            sum / f64::from(count.max(1))
        };
        points.push((t, value));
    };
    for o in observations
        .iter()
        .filter(|o| o.time >= first && o.time <= query.end)
    {
        let window = align(o.time, query.step);
        match &mut current {
            Some((t, sum, count, last)) if *t == window => {
                *sum += o.sum;
                *count += o.count;
                *last = o.last;
            }
            _ => {
                if let Some(done) = current.take() {
                    close(&mut points, done);
                }
                current = Some((window, o.sum, o.count, o.last));
            }
        }
    }
    if let Some(done) = current {
        close(&mut points, done);
    }
    points
}

/// Combines series that agree on the `by` labels, timestamp by timestamp.
pub(crate) fn aggregate(series: Vec<SeriesPoints>, agg: Agg, by: &[String]) -> Vec<SeriesPoints> {
    let mut groups: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, (f64, u32)>> = BTreeMap::new();
    for one in series {
        let group: BTreeMap<String, String> = by
            .iter()
            .filter_map(|name| one.labels.get(name).map(|v| (name.clone(), v.clone())))
            .collect();
        let points = groups.entry(group).or_default();
        for (t, v) in one.points {
            points
                .entry(t)
                .and_modify(|(acc, n)| {
                    *acc = match agg {
                        Agg::Sum | Agg::Avg => *acc + v,
                        Agg::Max => acc.max(v),
                        Agg::Min => acc.min(v),
                    };
                    *n += 1;
                })
                .or_insert((v, 1));
        }
    }
    groups
        .into_iter()
        .map(|(labels, points)| SeriesPoints {
            labels,
            points: points
                .into_iter()
                .map(|(t, (acc, n))| {
                    (
                        t,
                        if agg == Agg::Avg {
                            acc / f64::from(n)
                        } else {
                            acc
                        },
                    )
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(start: i64, end: i64, step: i64) -> Query {
        Query::new("m", start, end, step)
    }

    #[test]
    fn a_counter_reset_reads_as_a_restart_not_a_negative_rate() {
        let obs: Vec<_> = [(0, 100.0), (10, 200.0), (20, 30.0), (30, 130.0)]
            .iter()
            .map(|&(t, v)| Observation::single(t, v))
            .collect();
        let r: Vec<_> = rates(&obs).iter().map(|o| (o.time, o.last)).collect();
        assert_eq!(r, vec![(10, 10.0), (20, 3.0), (30, 10.0)]);
    }

    #[test]
    fn windows_average_and_aggregation_combine_by_label() {
        let obs: Vec<_> = [(0, 1.0), (30, 3.0), (60, 10.0)]
            .iter()
            .map(|&(t, v)| Observation::single(t, v))
            .collect();
        assert_eq!(
            windows(&obs, &query(0, 100, 60), false),
            vec![(0, 2.0), (60, 10.0)]
        );
        assert_eq!(
            windows(&obs, &query(0, 100, 60), true),
            vec![(0, 3.0), (60, 10.0)]
        );
        let one = |zone: &str, v: f64| SeriesPoints {
            labels: BTreeMap::from([
                ("zone".into(), zone.into()),
                ("endpoint".into(), v.to_string()),
            ]),
            points: vec![(0, v)],
        };
        let series = vec![one("a", 1.0), one("a", 3.0), one("b", 5.0)];
        let sums = aggregate(series.clone(), Agg::Sum, &["zone".into()]);
        assert_eq!(
            sums.iter().map(|s| s.points[0].1).collect::<Vec<_>>(),
            [4.0, 5.0]
        );
        assert_eq!(
            sums[0].labels,
            BTreeMap::from([("zone".into(), "a".into())])
        );
        assert_eq!(
            aggregate(series.clone(), Agg::Avg, &[])[0].points,
            vec![(0, 3.0)]
        );
        assert_eq!(
            aggregate(series.clone(), Agg::Max, &[])[0].points,
            vec![(0, 5.0)]
        );
        assert_eq!(aggregate(series, Agg::Min, &[])[0].points, vec![(0, 1.0)]);
    }

    #[test]
    fn matchers_parse_and_read_labels_without_parsing_tags() {
        let m = Matcher::parse_list("iface=eth0|eth1, mount!=/boot,endpoint=n1").unwrap();
        let key = SeriesKey {
            endpoint: "n1".into(),
            metric: "x".into(),
            tags: "iface=eth1,mount=/".into(),
        };
        assert!(m.iter().all(|m| m.matches(&key)));
        assert!(!Matcher::Eq("iface".into(), "eth0".into()).matches(&key));
        assert!(Matcher::parse_list("nokey").is_err());
    }
}
