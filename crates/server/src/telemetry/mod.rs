//! The server's own metrics for `GET /metrics`: HTTP requests, the store,
//! the scheduler, replication and registry bytes. Counting is a few
//! atomic adds or a short lock where the thing happens; rendering happens
//! only when scraped.

mod histogram;
pub(crate) mod http;
mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wharf_control::{SchedulingReport, SchedulingReporter};
use wharf_tsdb::prometheus::Exposition;

use histogram::Histogram;
pub(crate) use store::CountedStore;

/// Requests of one (method, route template).
#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

/// Calls of one store operation.
#[derive(Default)]
struct OperationStats {
    ok: u64,
    failed: u64,
    latency: Histogram,
}

#[derive(Default)]
struct SchedulerStats {
    placed: u64,
    unschedulable: u64,
    batches: Histogram,
}

/// What this server counted since it started.
#[derive(Default)]
pub(crate) struct ServerMetrics {
    http: Mutex<BTreeMap<(String, String), RouteStats>>,
    store: Mutex<BTreeMap<&'static str, OperationStats>>,
    scheduler: Mutex<SchedulerStats>,
    replication_jobs: Mutex<BTreeMap<String, u64>>,
    replication_bytes: AtomicU64,
    registry_bytes_in: Arc<AtomicU64>,
    registry_bytes_out: Arc<AtomicU64>,
    p2p: P2pStats,
}

/// The P2P tracker's figures.
#[derive(Default)]
struct P2pStats {
    tasks: AtomicU64,
    peers: AtomicU64,
    back_to_source: AtomicU64,
    bad_parent_reports: AtomicU64,
    manifests_computed: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServerMetrics {
    fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut http = lock(&self.http);
        let stats = http
            .entry((method.to_string(), route.to_string()))
            .or_default();
        *stats.by_status.entry(status).or_default() += 1;
        stats.latency.observe(elapsed.as_secs_f64());
    }

    fn store_operation(&self, op: &'static str, ok: bool, elapsed: Duration) {
        let mut store = lock(&self.store);
        let stats = store.entry(op).or_default();
        if ok {
            stats.ok += 1;
        } else {
            stats.failed += 1;
        }
        stats.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts a finished replication job.
    pub fn replication_job(&self, state: &str, bytes: u64) {
        *lock(&self.replication_jobs)
            .entry(state.to_string())
            .or_default() += 1;
        self.replication_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Where the control plane reports its scheduling batches.
    pub fn scheduling_reporter(self: &Arc<Self>) -> SchedulingReporter {
        let metrics = self.clone();
        Arc::new(move |report: SchedulingReport| {
            let mut stats = lock(&metrics.scheduler);
            stats.placed += report.placed as u64;
            stats.unschedulable += report.unschedulable as u64;
            stats.batches.observe(report.elapsed.as_secs_f64());
        })
    }

    /// Records the tracker's size after an answer, whether the answer
    /// newly sent a node to the registry, and how many parents the
    /// node's report newly named bad.
    pub fn p2p_tracked(
        &self,
        tasks: u64,
        peers: u64,
        newly_back_to_source: bool,
        newly_bad_parents: u64,
    ) {
        self.p2p.tasks.store(tasks, Ordering::Relaxed);
        self.p2p.peers.store(peers, Ordering::Relaxed);
        if newly_back_to_source {
            self.p2p.back_to_source.fetch_add(1, Ordering::Relaxed);
        }
        self.p2p
            .bad_parent_reports
            .fetch_add(newly_bad_parents, Ordering::Relaxed);
    }

    /// Counts a piece manifest read from the blob store.
    pub fn p2p_manifest_computed(&self) {
        self.p2p.manifests_computed.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds everything counted to `out`.
    pub fn render(&self, out: &mut Exposition) {
        self.render_http(out);
        self.render_store(out);
        self.render_scheduler(out);
        for (state, jobs) in lock(&self.replication_jobs).iter() {
            out.counter(
                "wharf_replication_jobs_total",
                "Replication jobs finished, by final state.",
                &[("state", state)],
                *jobs as f64,
            );
        }
        let counters = [
            (
                "wharf_replication_bytes_total",
                "Bytes copied by finished replication jobs.",
                self.replication_bytes.load(Ordering::Relaxed),
            ),
            (
                "wharf_registry_blob_bytes_received_total",
                "Blob bytes received by registry uploads.",
                self.registry_bytes_in.load(Ordering::Relaxed),
            ),
            (
                "wharf_registry_blob_bytes_sent_total",
                "Blob bytes sent by registry downloads.",
                self.registry_bytes_out.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            out.counter(name, help, &[], value as f64);
        }
        self.render_p2p(out);
    }

    fn render_p2p(&self, out: &mut Exposition) {
        let p2p = &self.p2p;
        out.gauge(
            "wharf_p2p_tracker_tasks",
            "Blobs the P2P tracker follows (on the server that tracks).",
            &[],
            p2p.tasks.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "wharf_p2p_tracker_peers",
            "Peers (node, blob) the P2P tracker follows.",
            &[],
            p2p.peers.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "wharf_p2p_back_to_source_total",
            "Nodes the P2P tracker sent to the registry: seeds per IDC, and nodes it had no room for.",
            &[],
            p2p.back_to_source.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "wharf_p2p_bad_parent_reports_total",
            "Parents nodes reported bad (a piece not matching the manifest, a refused connection, stalls), once per node, parent and blob.",
            &[],
            p2p.bad_parent_reports.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "wharf_p2p_manifests_computed_total",
            "Piece manifests computed from the blob store.",
            &[],
            p2p.manifests_computed.load(Ordering::Relaxed) as f64,
        );
    }

    fn render_http(&self, out: &mut Exposition) {
        for ((method, route), stats) in lock(&self.http).iter() {
            for (status, count) in &stats.by_status {
                let status = status.to_string();
                out.counter(
                    "wharf_http_requests_total",
                    "HTTP requests answered, by method, route template and status.",
                    &[("method", method), ("route", route), ("status", &status)],
                    *count as f64,
                );
            }
            let (buckets, sum, count) = stats.latency.cumulative();
            out.histogram(
                "wharf_http_request_duration_seconds",
                "Time to the response's headers, by method and route template.",
                &[("method", method), ("route", route)],
                &buckets,
                sum,
                count,
            );
        }
    }

    fn render_store(&self, out: &mut Exposition) {
        for (op, stats) in lock(&self.store).iter() {
            for (result, count) in [("ok", stats.ok), ("error", stats.failed)] {
                out.counter(
                    "wharf_store_operations_total",
                    "Store (redb or etcd) operations, by kind and result.",
                    &[("op", op), ("result", result)],
                    count as f64,
                );
            }
            let (buckets, sum, count) = stats.latency.cumulative();
            out.histogram(
                "wharf_store_operation_duration_seconds",
                "Store operation latency, by kind.",
                &[("op", op)],
                &buckets,
                sum,
                count,
            );
        }
    }

    fn render_scheduler(&self, out: &mut Exposition) {
        let stats = lock(&self.scheduler);
        for (result, count) in [
            ("placed", stats.placed),
            ("unschedulable", stats.unschedulable),
        ] {
            out.counter(
                "wharf_scheduler_decisions_total",
                "Pods the scheduler placed or found no room for (this server, while leading).",
                &[("result", result)],
                count as f64,
            );
        }
        let (buckets, sum, count) = stats.batches.cumulative();
        out.histogram(
            "wharf_scheduler_batch_duration_seconds",
            "Time to decide one batch of pending pods, binding excluded.",
            &[],
            &buckets,
            sum,
            count,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_events_appear_under_their_names_and_labels() {
        let metrics = Arc::new(ServerMetrics::default());
        metrics.http_request("GET", "/api/v1/nodes", 200, Duration::from_millis(3));
        metrics.http_request("GET", "/api/v1/nodes", 200, Duration::from_millis(3));
        metrics.http_request("GET", "/api/v1/nodes", 401, Duration::from_millis(1));
        metrics.store_operation("txn", false, Duration::from_millis(2));
        metrics.replication_job("succeeded", 1024);
        (metrics.scheduling_reporter())(SchedulingReport {
            placed: 3,
            unschedulable: 1,
            elapsed: Duration::from_millis(7),
        });
        metrics.registry_bytes_in.fetch_add(10, Ordering::Relaxed);
        metrics.p2p_tracked(2, 5, true, 0);
        metrics.p2p_tracked(2, 6, false, 2);
        metrics.p2p_manifest_computed();
        let mut out = Exposition::default();
        metrics.render(&mut out);
        let text = out.render();
        for line in [
            "wharf_http_requests_total{method=\"GET\",route=\"/api/v1/nodes\",status=\"200\"} 2\n",
            "wharf_http_requests_total{method=\"GET\",route=\"/api/v1/nodes\",status=\"401\"} 1\n",
            "wharf_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/nodes\"} 3\n",
            "wharf_store_operations_total{op=\"txn\",result=\"error\"} 1\n",
            "wharf_replication_jobs_total{state=\"succeeded\"} 1\n",
            "wharf_replication_bytes_total 1024\n",
            "wharf_scheduler_decisions_total{result=\"placed\"} 3\n",
            "wharf_scheduler_decisions_total{result=\"unschedulable\"} 1\n",
            "wharf_scheduler_batch_duration_seconds_count 1\n",
            "wharf_registry_blob_bytes_received_total 10\n",
            "wharf_p2p_tracker_tasks 2\n",
            "wharf_p2p_tracker_peers 6\n",
            "wharf_p2p_back_to_source_total 1\n",
            "wharf_p2p_bad_parent_reports_total 2\n",
            "wharf_p2p_manifests_computed_total 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
