//! The node's load summary, sent with each status report: CPU busy over
//! about the last minute, the 1-minute load average, available memory, and
//! the layers in the image cache. The scheduler's load and image-locality
//! scores read it.
//!
//! Two sources of CPU and memory figures: `host` reads the kernel's
//! (`/proc/stat`, `/proc/loadavg`, `/proc/meminfo`); `pods` adds up the
//! node's pods' cgroup usage over the node's capacity. Agents sharing one
//! machine (tests, demos) share `/proc`, so only `pods` tells them apart.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::time::{Duration, Instant};

use wharf_api::{CachedLayer, PodUsage, Resources};

use crate::metrics::proc;
use crate::runtime::Runtime;

/// How far back CPU busy looks.
const WINDOW: Duration = Duration::from_secs(60);

/// Where the agent reads its node's CPU and memory use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadSource {
    /// The machine's own counters in `/proc` (the default).
    #[default]
    Host,
    /// The sum of the node's pods' cgroup CPU and memory over the node's
    /// capacity; no load average. For several agents on one machine.
    Pods,
}

impl FromStr for LoadSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "host" => Ok(LoadSource::Host),
            "pods" => Ok(LoadSource::Pods),
            other => Err(format!("load source {other:?}: expected host or pods")),
        }
    }
}

/// What one status report says about the node's load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadSummary {
    /// CPU busy over about the last minute, `0.0..=1.0`.
    pub cpu_busy: Option<f32>,
    /// The 1-minute load average (host source only).
    pub load_average: Option<f32>,
    /// Memory available for new work, bytes.
    pub memory_available_bytes: Option<u64>,
    /// The image cache's layers; `None` without a cache.
    pub layers: Option<Vec<CachedLayer>>,
}

/// Busy fractions of the intervals between samples, averaged over the
/// last [`WINDOW`] weighted by their length.
#[derive(Debug, Default)]
struct BusyWindow {
    /// End of each interval, its length in seconds, its busy fraction.
    intervals: VecDeque<(Instant, f64, f64)>,
}

impl BusyWindow {
    fn record(&mut self, end: Instant, seconds: f64, busy: f64) {
        if seconds > 0.0 && busy.is_finite() {
            self.intervals
                .push_back((end, seconds, busy.clamp(0.0, 1.0)));
        }
        while self
            .intervals
            .front()
            .is_some_and(|&(at, _, _)| end.duration_since(at) >= WINDOW)
        {
            self.intervals.pop_front();
        }
    }

    fn busy(&self) -> Option<f32> {
        let seconds: f64 = self.intervals.iter().map(|&(_, s, _)| s).sum();
        let busy: f64 = self.intervals.iter().map(|&(_, s, b)| s * b).sum();
        (seconds > 0.0).then(|| (busy / seconds) as f32)
    }
}

/// The kernel's figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct HostSample {
    /// Jiffies busy and in total, over all cores, since boot.
    busy: u64,
    total: u64,
    load_average: Option<f32>,
    memory_available: Option<u64>,
}

/// CPU nanoseconds used so far per (pod uid, container).
type CpuCounters = HashMap<(String, String), u64>;

/// Samples the load summary; keeps the previous counters between reports.
pub struct LoadMeter {
    source: LoadSource,
    capacity: Resources,
    window: BusyWindow,
    last_host: Option<HostSample>,
    /// CPU nanoseconds per (pod uid, container) at the last sample.
    last_pods: Option<(Instant, CpuCounters)>,
    last_at: Option<Instant>,
}

impl LoadMeter {
    /// A meter reading `source` on a node of `capacity`.
    pub fn new(source: LoadSource, capacity: Resources) -> LoadMeter {
        LoadMeter {
            source,
            capacity,
            window: BusyWindow::default(),
            last_host: None,
            last_pods: None,
            last_at: None,
        }
    }

    /// Takes a sample and summarises the window. The first sample only
    /// sets the baseline for CPU busy.
    pub async fn sample(&mut self, runtime: &dyn Runtime) -> LoadSummary {
        let now = Instant::now();
        let mut summary = match self.source {
            LoadSource::Host => self.sample_host(now).await,
            LoadSource::Pods => self.sample_pods(now, &runtime.usage().await),
        };
        self.last_at = Some(now);
        summary.cpu_busy = self.window.busy();
        summary.layers = runtime.cached_layers().await;
        summary
    }

    async fn sample_host(&mut self, now: Instant) -> LoadSummary {
        let sample = tokio::task::spawn_blocking(read_host)
            .await
            .unwrap_or_default();
        if let (Some(last), Some(at)) = (self.last_host, self.last_at) {
            let total = sample.total.saturating_sub(last.total);
            if total > 0 {
                let busy = sample.busy.saturating_sub(last.busy) as f64 / total as f64;
                self.window.record(now, (now - at).as_secs_f64(), busy);
            }
        }
        self.last_host = (sample.total > 0).then_some(sample);
        LoadSummary {
            load_average: sample.load_average,
            memory_available_bytes: sample.memory_available,
            ..LoadSummary::default()
        }
    }

    fn sample_pods(&mut self, now: Instant, pods: &[PodUsage]) -> LoadSummary {
        let counters: CpuCounters = pods
            .iter()
            .flat_map(|pod| {
                pod.containers.iter().map(|container| {
                    let key = (pod.uid.clone(), container.name.clone());
                    (key, container.usage.cpu_usage_ns)
                })
            })
            .collect();
        if let Some((at, last)) = &self.last_pods {
            let seconds = (now - *at).as_secs_f64();
            let cores = self.capacity.cpu_millis as f64 / 1000.0;
            let used_ns = cpu_used_between(last, &counters);
            if cores > 0.0 {
                self.window
                    .record(now, seconds, used_ns as f64 / 1e9 / seconds / cores);
            }
        }
        self.last_pods = Some((now, counters));
        let working_set: u64 = pods
            .iter()
            .flat_map(|pod| &pod.containers)
            .map(|container| container.usage.memory_working_set_bytes)
            .sum();
        LoadSummary {
            memory_available_bytes: Some(self.capacity.memory_bytes.saturating_sub(working_set)),
            ..LoadSummary::default()
        }
    }
}

/// CPU nanoseconds the containers present in both samples used between
/// them; a container that restarted (its counter went back) counts from 0.
fn cpu_used_between(before: &CpuCounters, after: &CpuCounters) -> u64 {
    after
        .iter()
        .filter_map(|(key, &now)| {
            let then = *before.get(key)?;
            Some(if now >= then { now - then } else { now })
        })
        .sum()
}

/// Reads `/proc/stat`, `/proc/loadavg` and `/proc/meminfo` (blocking),
/// with the collector's parsers.
fn read_host() -> HostSample {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let (busy, total) = proc::cpu_times(&read("/proc/stat"))
        .map(|times| times.busy_and_total())
        .unwrap_or_default();
    HostSample {
        busy,
        total,
        load_average: proc::load_averages(&read("/proc/loadavg")).map(|[one, _, _]| one as f32),
        memory_available: proc::memory_available(&read("/proc/meminfo")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::{ContainerUsage, ContainerUsageSample};

    #[test]
    fn busy_is_weighted_by_interval_and_forgets_past_the_minute() {
        let start = Instant::now();
        let mut window = BusyWindow::default();
        assert_eq!(window.busy(), None);
        window.record(start + Duration::from_secs(10), 10.0, 1.0);
        window.record(start + Duration::from_secs(40), 30.0, 0.0);
        assert!((window.busy().unwrap() - 0.25).abs() < 1e-6);
        // A minute after the first interval ended, it no longer counts.
        window.record(start + Duration::from_secs(70), 30.0, 0.0);
        assert_eq!(window.busy(), Some(0.0));
    }

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        let busy_and_total = |stat| proc::cpu_times(stat).map(|t| t.busy_and_total());
        assert_eq!(busy_and_total(stat), Some((150, 1000)));
        assert_eq!(busy_and_total("intr 1 2"), None);
        let meminfo = "MemTotal:  2048 kB\nMemAvailable:  1024 kB\n";
        assert_eq!(proc::memory_available(meminfo), Some(1 << 20));
        assert_eq!(proc::memory_available("SwapFree:  1 kB\n"), None);
        let host = read_host();
        assert!(host.total > 0 && host.busy <= host.total);
        assert!(host.load_average.is_some() && host.memory_available.is_some());
    }

    fn usage(uid: &str, cpu_seconds: u64, memory: u64) -> PodUsage {
        PodUsage {
            project: "p".into(),
            name: uid.into(),
            uid: uid.into(),
            timestamp_ms: 0,
            containers: vec![ContainerUsageSample {
                name: "c".into(),
                usage: ContainerUsage {
                    cpu_usage_ns: cpu_seconds * 1_000_000_000,
                    memory_working_set_bytes: memory,
                },
            }],
        }
    }

    #[test]
    fn the_pods_source_adds_up_cgroup_use_over_the_capacity() {
        let capacity = Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            pods: 110,
        };
        let mut meter = LoadMeter::new(LoadSource::Pods, capacity);
        let start = Instant::now();
        let first = meter.sample_pods(start, &[usage("a", 5, 100 << 20)]);
        assert_eq!(first.memory_available_bytes, Some((1 << 30) - (100 << 20)));
        assert_eq!(meter.window.busy(), None, "a baseline only");
        // "a" used one core for 10 s of 2 cores; "b" is new: no interval yet.
        let later = start + Duration::from_secs(10);
        meter.sample_pods(later, &[usage("a", 15, 100 << 20), usage("b", 3, 0)]);
        assert!((meter.window.busy().unwrap() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_restarted_container_counts_from_zero() {
        let key = ("uid".to_string(), "c".to_string());
        let before = HashMap::from([(key.clone(), 50)]);
        let after = HashMap::from([(key, 20)]);
        assert_eq!(cpu_used_between(&before, &after), 20);
        assert_eq!(cpu_used_between(&HashMap::new(), &after), 0);
    }

    #[test]
    fn load_sources_parse_by_name() {
        assert_eq!("host".parse(), Ok(LoadSource::Host));
        assert_eq!("pods".parse(), Ok(LoadSource::Pods));
        assert!("cgroups".parse::<LoadSource>().is_err());
    }
}
