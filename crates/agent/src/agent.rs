//! The agent loop: register the node, keep its heartbeat, and hand the pods
//! bound to it to the runtime, reporting their status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use wharf_api::{Node, NodeSpec, NodeStatus, ObjectMeta, Pod};

use crate::AgentError;
use crate::api::{NodeApi, PodChange};
use crate::machine::{self, CpuLoad};
use crate::runtime::Runtime;

/// How often the node's status (load, capacity) is re-reported.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// What an agent says about its node.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Node name.
    pub name: String,
    /// Labels: pool, IDC, cluster kind, machine class, anything else.
    pub labels: BTreeMap<String, String>,
    /// Address the node is reached at.
    pub address: Option<String>,
    /// Cost of an hour of this machine.
    pub cost_per_hour: Option<f64>,
    /// Pod slots.
    pub max_pods: u32,
    /// The heartbeat lease; the node goes not ready this long after the
    /// agent stops.
    pub heartbeat_ttl: Duration,
}

impl AgentConfig {
    /// Defaults for a node called `name`.
    pub fn new(name: &str) -> AgentConfig {
        AgentConfig {
            name: name.to_string(),
            labels: BTreeMap::new(),
            address: None,
            cost_per_hour: None,
            max_pods: machine::DEFAULT_MAX_PODS,
            heartbeat_ttl: Duration::from_secs(40),
        }
    }

    /// The node object this agent registers, with what the machine has now.
    pub fn node(&self, cpu_load: Option<f32>) -> Node {
        Node {
            api_version: "wharf.io/v1".into(),
            kind: "Node".into(),
            metadata: ObjectMeta {
                name: self.name.clone(),
                labels: self.labels.clone(),
                ..ObjectMeta::default()
            },
            spec: NodeSpec {
                address: self.address.clone(),
                cost_per_hour: self.cost_per_hour,
                ..NodeSpec::default()
            },
            status: NodeStatus {
                capacity: machine::capacity(self.max_pods),
                cpu_load,
                info: machine::info(),
                ..NodeStatus::default()
            },
        }
    }
}

/// A node agent.
pub struct Agent {
    api: Arc<dyn NodeApi>,
    runtime: Arc<dyn Runtime>,
    config: AgentConfig,
}

impl Agent {
    /// An agent talking to `api`, running pods with `runtime`.
    pub fn new(api: Arc<dyn NodeApi>, runtime: Arc<dyn Runtime>, config: AgentConfig) -> Agent {
        Agent {
            api,
            runtime,
            config,
        }
    }

    /// Registers the node, then serves it until the task is dropped.
    pub async fn run(self) {
        let this = Arc::new(self);
        this.register_until_done().await;
        let heartbeat = tokio::spawn(this.clone().heartbeats());
        let _stop = AbortOnDrop(heartbeat.abort_handle());
        loop {
            if let Err(err) = this.follow_pods().await {
                tracing::warn!(error = %err, node = this.config.name, "pod watch failed; starting over");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn register_until_done(&self) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.api.register(self.config.node(None)).await {
                Ok(_) => {
                    tracing::info!(node = self.config.name, "node registered");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, node = self.config.name, "registering the node failed; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Renews the heartbeat lease at a third of its lifetime, and reports
    /// the node's status now and then.
    async fn heartbeats(self: Arc<Self>) {
        let mut lease = None;
        let mut load = CpuLoad::new();
        let mut last_status = tokio::time::Instant::now();
        loop {
            match self
                .api
                .heartbeat(&self.config.name, lease, self.config.heartbeat_ttl)
                .await
            {
                Ok(renewed) => lease = Some(renewed),
                Err(err) => {
                    tracing::warn!(error = %err, node = self.config.name, "heartbeat failed")
                }
            }
            if last_status.elapsed() >= STATUS_EVERY {
                last_status = tokio::time::Instant::now();
                if let Err(err) = self.api.register(self.config.node(load.sample())).await {
                    tracing::warn!(error = %err, node = self.config.name, "status report failed");
                }
            }
            tokio::time::sleep(self.config.heartbeat_ttl / 3).await;
        }
    }

    /// Lists the node's pods, then follows their changes.
    async fn follow_pods(&self) -> Result<(), AgentError> {
        let node = self.config.name.as_str();
        let (pods, revision) = self.api.list_pods(Some(node)).await?;
        let mut known: HashMap<(String, String), ()> = HashMap::new();
        for pod in pods {
            known.insert(key(&pod), ());
            self.sync(&pod).await;
        }
        let mut changes = self.api.watch_pods(Some(node), revision).await?;
        while let Some(change) = changes.next().await {
            match change? {
                PodChange::Upsert(pod) => {
                    known.insert(key(&pod), ());
                    self.sync(&pod).await;
                }
                PodChange::Deleted { project, name } => {
                    if known.remove(&(project.clone(), name.clone())).is_some() {
                        self.runtime.remove(&project, &name).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands the pod to the runtime and reports its status when it changed.
    async fn sync(&self, pod: &Pod) {
        let status = self.runtime.sync(pod).await;
        if status == pod.status {
            return;
        }
        let (project, name) = key(pod);
        if let Err(err) = self.api.set_pod_status(&project, &name, &status).await {
            tracing::warn!(error = %err, project, name, "reporting pod status failed");
        }
    }
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.project.clone().unwrap_or_default(),
        pod.metadata.name.clone(),
    )
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
