//! Monitoring on the node: every `--metrics-interval` the collector reads
//! the node's metrics ([`node`]: `/proc` and `statvfs`, by open-falcon's
//! names) and its containers' ([`containers`]: cgroups and the pods'
//! network namespaces), and pushes them as one batch of
//! [`FalconSample`]s to the server through [`NodeApi::push_metrics`].
//! Counters go raw, typed `COUNTER`: rates are the server's at query time.
//! [`push`] is falcon's `/v1/push` on the agent's endpoint, for plugins
//! and scripts on the machine.
//!
//! Simulated nodes collect nothing (`wharf bench tsdb` stands in for
//! their load on the server).

pub mod containers;
pub(crate) mod exposition;
pub mod node;
pub mod proc;
pub(crate) mod push;

use std::sync::Arc;
use std::time::Duration;

use wharf_api::{CounterType, FalconSample};

use crate::api::NodeApi;
use crate::runtime::Runtime;
use node::NodeReader;

/// How often metrics are collected by default (falcon's agent: 60 s).
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// The samples of one collection: same endpoint, timestamp and step.
#[derive(Debug)]
pub struct Batch {
    endpoint: String,
    timestamp: i64,
    step: u32,
    samples: Vec<FalconSample>,
}

impl Batch {
    /// An empty batch about `endpoint` at `timestamp` (seconds), reported
    /// every `step` seconds.
    pub fn new(endpoint: &str, timestamp: i64, step: u32) -> Batch {
        Batch {
            endpoint: endpoint.to_owned(),
            timestamp,
            step,
            samples: Vec::new(),
        }
    }

    /// Adds a level (`tags` in falcon's `k=v,k2=v2` form).
    pub fn gauge(&mut self, metric: &str, tags: &str, value: f64) {
        self.add(metric, tags, value, CounterType::Gauge);
    }

    /// Adds a total that only grows (the server differentiates it).
    pub fn counter(&mut self, metric: &str, tags: &str, value: f64) {
        self.add(metric, tags, value, CounterType::Counter);
    }

    fn add(&mut self, metric: &str, tags: &str, value: f64, counter_type: CounterType) {
        self.samples.push(FalconSample {
            endpoint: self.endpoint.clone(),
            metric: metric.to_owned(),
            tags: tags.to_owned(),
            value,
            timestamp: self.timestamp,
            counter_type,
            step: self.step,
        });
    }

    /// The samples, less any the server would refuse (a mount path with a
    /// comma, say): it takes a push all or nothing, and one odd name must
    /// not cost the node all its metrics.
    pub fn into_samples(self) -> Vec<FalconSample> {
        let now = self.timestamp;
        self.samples
            .into_iter()
            .filter(|sample| {
                wharf_tsdb::validate(sample, now)
                    .inspect_err(|err| {
                        tracing::debug!(metric = sample.metric, tags = sample.tags, error = %err, "sample left out")
                    })
                    .is_ok()
            })
            .collect()
    }
}

/// The newest collection, shared by the collector that makes it and the
/// agent's `/metrics` that serves it ([`exposition`]). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct LatestSamples(Arc<std::sync::Mutex<Arc<Vec<FalconSample>>>>);

impl LatestSamples {
    /// Replaces the newest collection.
    pub fn set(&self, samples: Vec<FalconSample>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(samples);
    }

    /// The newest collection (empty before the first).
    pub fn get(&self) -> Arc<Vec<FalconSample>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Collects a node's metrics and pushes them, one batch a tick.
pub struct Collector {
    node: String,
    step: u32,
    api: Arc<dyn NodeApi>,
    runtime: Arc<dyn Runtime>,
    /// Moved to a blocking thread for each reading and back.
    reader: Option<NodeReader>,
    /// Where each collection is kept for the agent's `/metrics`.
    latest: LatestSamples,
}

impl Collector {
    /// A collector for `node` reporting every `interval`, reading the node
    /// with `reader`.
    pub fn new(
        node: &str,
        interval: Duration,
        api: Arc<dyn NodeApi>,
        runtime: Arc<dyn Runtime>,
        reader: NodeReader,
    ) -> Collector {
        Collector {
            node: node.to_owned(),
            step: interval.as_secs().max(1) as u32,
            api,
            runtime,
            reader: Some(reader),
            latest: LatestSamples::default(),
        }
    }

    /// The same collector keeping each collection in `latest` as well.
    pub fn keeping(mut self, latest: LatestSamples) -> Collector {
        self.latest = latest;
        self
    }

    /// Collects and pushes every `interval` until the task is dropped.
    pub async fn run(mut self, interval: Duration) {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.push_once().await;
        }
    }

    /// One collection, pushed. A failed push is logged and its batch
    /// dropped: the next one comes an interval later, and holding batches
    /// for a server that is away would grow without bound.
    pub async fn push_once(&mut self) {
        let samples = self.collect().await;
        if samples.is_empty() {
            return;
        }
        self.latest.set(samples.clone());
        if let Err(err) = self.api.push_metrics(&self.node, &samples).await {
            tracing::warn!(error = %err, node = self.node, samples = samples.len(), "metrics push failed; batch dropped");
        }
    }

    /// The node's and its containers' samples as of now.
    pub async fn collect(&mut self) -> Vec<FalconSample> {
        let mut batch = Batch::new(&self.node, unix_seconds(), self.step);
        let pods = self.runtime.pod_stats().await;
        if let Some(mut reader) = self.reader.take() {
            let read = tokio::task::spawn_blocking(move || {
                reader.collect(&mut batch);
                (reader, batch)
            })
            .await;
            match read {
                Ok((reader, read)) => {
                    self.reader = Some(reader);
                    batch = read;
                }
                Err(err) => {
                    // A panic in a parser: the readings start over.
                    tracing::error!(error = %err, "reading the node's metrics failed");
                    self.reader = Some(NodeReader::default());
                    batch = Batch::new(&self.node, unix_seconds(), self.step);
                }
            }
        }
        for pod in &pods {
            containers::add_pod(&mut batch, pod);
        }
        if let Some(pulled) = self.runtime.pull_bytes() {
            add_pull_bytes(&mut batch, &pulled);
        }
        batch.into_samples()
    }
}

/// Image bytes pulled since the agent started, one counter per origin:
/// `image.pull.bytes` tagged `source=registry|peers|cache`.
fn add_pull_bytes(batch: &mut Batch, pulled: &wharf_image::PullBytes) {
    for (source, bytes) in [
        ("registry", pulled.registry),
        ("peers", pulled.peers),
        ("cache", pulled.cache),
    ] {
        batch.counter(
            "image.pull.bytes",
            &format!("source={source}"),
            bytes as f64,
        );
    }
}

pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
