//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! the server's and the agents' `/metrics` need gauges, counters and
//! histograms with escaped labels, which is a page of code, not a crate.
//!
//! falcon names map mechanically: `.` becomes `_`, node metrics get a
//! `node_` prefix, container metrics keep their `container_` one, counters
//! get `_total`, the endpoint becomes the `node` label and the tags become
//! labels (`cpu.busy` of `n1` -> `node_cpu_busy{node="n1"}`).
//!
//! ```
//! use wharf_tsdb::prometheus::Exposition;
//! let mut out = Exposition::default();
//! out.gauge("wharf_up", "Whether the server runs.", &[("server", "a\"b")], 1.0);
//! assert_eq!(
//!     out.render(),
//!     "# HELP wharf_up Whether the server runs.\n# TYPE wharf_up gauge\nwharf_up{server=\"a\\\"b\"} 1\n"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt::Write;

use wharf_api::{CounterType, parse_tags};

use crate::LatestSample;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label names and values of one sample.
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family: its help, type and sample lines (suffix, labels, value).
struct Family {
    help: String,
    kind: Kind,
    samples: Vec<(&'static str, Labels, f64)>,
}

/// Metric families being gathered for one scrape; [`render`](Self::render)
/// writes them sorted by name, each family's samples together as the
/// format requires.
#[derive(Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, help, Kind::Gauge, "", owned(labels), value);
    }

    /// Adds a counter sample; `name` should end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, help, Kind::Counter, "", owned(labels), value);
    }

    /// Adds a histogram: `buckets` are (upper bound, cumulative count) in
    /// ascending order, without `+Inf` (that is `count`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let base = owned(labels);
        let bounds = buckets
            .iter()
            .map(|(le, n)| (number(*le), *n))
            .chain([("+Inf".to_string(), count)]);
        for (le, n) in bounds {
            let mut labels = base.clone();
            labels.push(("le".into(), le));
            self.sample(name, help, Kind::Histogram, "_bucket", labels, n as f64);
        }
        self.sample(name, help, Kind::Histogram, "_sum", base.clone(), sum);
        self.sample(name, help, Kind::Histogram, "_count", base, count as f64);
    }

    /// Adds the newest sample of every series under its Prometheus name
    /// (see the module's documentation).
    pub fn federate(&mut self, latest: &[LatestSample]) {
        for sample in latest {
            let key = &sample.key;
            self.falcon(
                &key.endpoint,
                &key.metric,
                &key.tags,
                sample.counter_type,
                sample.value,
            );
        }
    }

    /// Adds one falcon sample under its Prometheus name.
    pub fn falcon(
        &mut self,
        endpoint: &str,
        metric: &str,
        tags: &str,
        kind: CounterType,
        value: f64,
    ) {
        let counter = kind == CounterType::Counter;
        let family = if counter { Kind::Counter } else { Kind::Gauge };
        let name = prometheus_name(metric, counter);
        let help = format!("falcon metric {metric} reported by the nodes' agents.");
        self.sample(
            &name,
            &help,
            family,
            "",
            falcon_labels(endpoint, tags),
            value,
        );
    }

    fn sample(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        suffix: &'static str,
        labels: Labels,
        value: f64,
    ) {
        let family = self
            .families
            .entry(name.to_string())
            .or_insert_with(|| Family {
                help: help.to_string(),
                kind,
                samples: Vec::new(),
            });
        family.samples.push((suffix, labels, value));
    }

    /// Number of sample lines gathered.
    pub fn len(&self) -> usize {
        self.families.values().map(|f| f.samples.len()).sum()
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The text of the exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.len() * 64);
        for (name, family) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (suffix, labels, value) in &family.samples {
                out.push_str(name);
                out.push_str(suffix);
                write_labels(&mut out, labels);
                out.push(' ');
                out.push_str(&number(*value));
                out.push('\n');
            }
        }
        out
    }
}

/// Adds this process's CPU time and resident memory, read
/// from `/proc/self` (Linux; nothing elsewhere). Blocking file reads: call
/// it off the async workers.
pub fn process_metrics(out: &mut Exposition) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name is in parentheses and may hold spaces: split after
    // it, so that index 0 is proc(5)'s field 3 and utime, stime (fields 14
    // and 15) are at 11 and 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // /proc counts in USER_HZ, 100 a second on every Linux architecture.
    if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
        out.counter(
            "process_cpu_seconds_total",
            "User and system CPU time spent by this process.",
            &[],
            (user + system) / 100.0,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    if let Some(kib) = rss_kib {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory of this process.",
            &[],
            kib * 1024.0,
        );
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// The Prometheus name of a falcon metric: `container.mem.limit` ->
/// `container_mem_limit`, `cpu.busy` -> `node_cpu_busy`, a counter's with
/// `_total`.
pub fn prometheus_name(metric: &str, counter: bool) -> String {
    let mut name = if metric.starts_with("container.") {
        String::new()
    } else {
        "node_".to_string()
    };
    name.push_str(&sanitize(metric));
    if counter {
        name.push_str("_total");
    }
    name
}

/// The labels of a falcon series: `node` from the endpoint, then the tags.
/// A tag named `node` would repeat the label, so the endpoint wins.
fn falcon_labels(endpoint: &str, tags: &str) -> Labels {
    let mut labels = vec![("node".to_string(), endpoint.to_string())];
    let tags = parse_tags(tags).unwrap_or_default();
    labels.extend(
        tags.into_iter()
            .map(|(k, v)| (sanitize(&k), v))
            .filter(|(k, _)| k != "node"),
    );
    labels
}

/// A valid metric or label name: characters outside `[a-zA-Z0-9_]` become
/// `_`, and a leading digit gets a `_` before it.
fn sanitize(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

fn write_labels(out: &mut String, labels: &Labels) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A value as the format spells it (`+Inf`, `-Inf`, `NaN`).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::SeriesKey;

    fn latest(
        endpoint: &str,
        metric: &str,
        tags: &str,
        kind: CounterType,
        value: f64,
    ) -> LatestSample {
        LatestSample {
            key: Arc::new(SeriesKey {
                endpoint: endpoint.into(),
                metric: metric.into(),
                tags: tags.into(),
            }),
            counter_type: kind,
            timestamp: 0,
            value,
        }
    }

    #[test]
    fn falcon_names_map_to_the_shared_prometheus_names() {
        assert_eq!(prometheus_name("cpu.busy", false), "node_cpu_busy");
        assert_eq!(
            prometheus_name("df.bytes.used.percent", false),
            "node_df_bytes_used_percent"
        );
        assert_eq!(
            prometheus_name("net.if.in.bytes", true),
            "node_net_if_in_bytes_total"
        );
        assert_eq!(
            prometheus_name("container.mem.working_set", false),
            "container_mem_working_set"
        );
        assert_eq!(
            prometheus_name("container.cpu.usage_seconds", true),
            "container_cpu_usage_seconds_total"
        );
        // User pushes may carry characters Prometheus names cannot.
        assert_eq!(
            prometheus_name("app.req-rate/s", false),
            "node_app_req_rate_s"
        );
    }

    #[test]
    fn federated_series_carry_node_and_tag_labels() {
        let mut out = Exposition::default();
        out.federate(&[
            latest(
                "n1",
                "df.bytes.used",
                "mount=/,fstype=ext4",
                CounterType::Gauge,
                42.0,
            ),
            latest("n1", "cpu.busy", "", CounterType::Gauge, 12.5),
            latest("n2", "cpu.busy", "node=spoof", CounterType::Gauge, 3.0),
            latest(
                "n1",
                "container.cpu.usage_seconds",
                "project=p,pod=web-1,container=c",
                CounterType::Counter,
                7.25,
            ),
        ]);
        let text = out.render();
        assert!(
            text.contains("node_df_bytes_used{node=\"n1\",fstype=\"ext4\",mount=\"/\"} 42\n"),
            "{text}"
        );
        assert!(text.contains("node_cpu_busy{node=\"n1\"} 12.5\n"), "{text}");
        assert!(text.contains("node_cpu_busy{node=\"n2\"} 3\n"), "{text}");
        assert!(
            text.contains("# TYPE container_cpu_usage_seconds_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "container_cpu_usage_seconds_total{node=\"n1\",container=\"c\",pod=\"web-1\",project=\"p\"} 7.25\n"
        ), "{text}");
        // One TYPE line per family, its samples together.
        assert_eq!(text.matches("# TYPE node_cpu_busy gauge").count(), 1);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::default();
        out.gauge("x", "a \\ b\nc", &[("path", "C:\\dir \"q\"\nnext")], 1.5);
        assert_eq!(
            out.render(),
            "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{path=\"C:\\\\dir \\\"q\\\"\\nnext\"} 1.5\n"
        );
    }

    #[test]
    fn special_values_are_spelled_as_prometheus_reads_them() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(1e21), "1000000000000000000000");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(sanitize("9lives"), "_9lives");
    }

    #[test]
    fn this_process_reports_its_cpu_and_memory() {
        let mut out = Exposition::default();
        process_metrics(&mut out);
        let text = out.render();
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("resident memory");
        assert!(rss > 1e6, "{rss}");
    }

    #[test]
    fn histograms_have_cumulative_buckets_sum_and_count() {
        let mut out = Exposition::default();
        out.histogram(
            "lat_seconds",
            "Latency.",
            &[("route", "/a")],
            &[(0.1, 2), (1.0, 3)],
            1.7,
            4,
        );
        assert_eq!(
            out.render(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{route=\"/a\",le=\"0.1\"} 2\n\
             lat_seconds_bucket{route=\"/a\",le=\"1\"} 3\n\
             lat_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n\
             lat_seconds_sum{route=\"/a\"} 1.7\n\
             lat_seconds_count{route=\"/a\"} 4\n"
        );
    }
}
