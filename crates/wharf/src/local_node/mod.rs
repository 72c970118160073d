//! The agent's [`NodeApi`] straight on the control plane's [`Objects`], in
//! one process: simulated fleets in `wharf bench scheduler`, and the tests
//! that run agents against a real control plane. The agent and the control
//! plane meet only here and over HTTP, so `wharf-agent` links no control
//! plane and no store.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use wharf_agent::service_view::ServiceView;
use wharf_agent::{AgentError, NodeApi, PodChange, PodChanges, ServiceChange, ServiceChanges};
use wharf_api::{
    ConfigMap, ConfigRef, Endpoints, FalconSample, IpClaim, Node, NodeInitProfile,
    PersistentVolumeClaim, Pod, PodEventReport, PodStatus, PodUsage, Secret, Service,
};
use wharf_control::{Change, ControlError, EventRecorder, Objects, PodMetricsStore, used_on_node};

/// The control plane in the same process.
pub struct LocalNodeApi {
    objects: Objects,
    /// Events implied by the pod statuses reported, as the server records them.
    events: EventRecorder,
    /// The usage the agents report.
    metrics: PodMetricsStore,
}

impl LocalNodeApi {
    /// Direct access through `objects`.
    pub fn new(objects: Objects) -> LocalNodeApi {
        LocalNodeApi {
            events: EventRecorder::new(objects.clone(), "node"),
            objects,
            metrics: PodMetricsStore::new(),
        }
    }
}

fn on_node(pod: &Pod, node: Option<&str>) -> bool {
    node.is_none_or(|n| pod.spec.node_name.as_deref() == Some(n))
}

/// The agent's view of a control-plane failure: absent objects stay
/// recognisable (the agent stops reporting for a deleted pod); the rest is
/// the server's trouble, as over HTTP.
fn agent_error(err: ControlError) -> AgentError {
    match err {
        ControlError::NotFound { .. } => AgentError::NotFound(err.to_string()),
        other => AgentError::Api(other.to_string()),
    }
}

#[async_trait]
impl NodeApi for LocalNodeApi {
    async fn register(&self, node: Node) -> Result<Node, AgentError> {
        self.objects
            .register_node(node)
            .await
            .map(|(node, _)| node)
            .map_err(agent_error)
    }

    async fn heartbeat(
        &self,
        node: &str,
        lease: Option<u64>,
        ttl: Duration,
    ) -> Result<u64, AgentError> {
        self.objects
            .heartbeat(node, lease, ttl)
            .await
            .map_err(agent_error)
    }

    async fn init_profile(&self, node: &str) -> Result<NodeInitProfile, AgentError> {
        self.objects
            .node_init_profile(node)
            .await
            .map_err(agent_error)
    }

    async fn list_pods(&self, node: Option<&str>) -> Result<(Vec<Pod>, u64), AgentError> {
        let (pods, revision) = self
            .objects
            .list::<Pod>(None, None)
            .await
            .map_err(agent_error)?;
        Ok((
            pods.into_iter().filter(|p| on_node(p, node)).collect(),
            revision,
        ))
    }

    async fn watch_pods(
        &self,
        node: Option<&str>,
        revision: u64,
    ) -> Result<PodChanges, AgentError> {
        let node = node.map(str::to_string);
        let changes = self
            .objects
            .watch::<Pod>(None, revision + 1)
            .await
            .map_err(agent_error)?;
        Ok(changes
            .filter_map(move |change| {
                let change = match change {
                    Ok(Change::Added(pod) | Change::Modified(pod)) => {
                        on_node(&pod, node.as_deref()).then(|| Ok(PodChange::Upsert(Box::new(pod))))
                    }
                    Ok(Change::Deleted { project, name, .. }) => Some(Ok(PodChange::Deleted {
                        project: project.unwrap_or_default(),
                        name,
                    })),
                    Err(err) => Some(Err(agent_error(err))),
                };
                std::future::ready(change)
            })
            .boxed())
    }

    async fn set_pod_status(
        &self,
        project: &str,
        name: &str,
        status: &PodStatus,
    ) -> Result<(), AgentError> {
        wharf_control::report_pod_status(&self.objects, &self.events, project, name, status)
            .await
            .map_err(agent_error)?;
        Ok(())
    }

    async fn pod_event(
        &self,
        project: &str,
        name: &str,
        event: &PodEventReport,
    ) -> Result<(), AgentError> {
        wharf_control::record_pod_event(&self.objects, &self.events, project, name, event)
            .await
            .map_err(agent_error)
    }

    async fn claim_ip(&self, project: &str, name: &str) -> Result<Option<IpClaim>, AgentError> {
        self.objects
            .claim_pod_ip(project, name)
            .await
            .map_err(agent_error)
    }

    async fn release_ip(&self, project: &str, name: &str, uid: &str) -> Result<(), AgentError> {
        self.objects
            .release_pod_ip(project, name, Some(uid))
            .await
            .map_err(agent_error)?;
        Ok(())
    }

    async fn pod_stopped(&self, project: &str, name: &str, uid: &str) -> Result<(), AgentError> {
        self.objects
            .confirm_pod_stopped(project, name, uid)
            .await
            .map_err(agent_error)
    }

    /// In-process there is no identity service to ask: nobody may.
    async fn may_access_pod(
        &self,
        _token: &str,
        _project: &str,
        _name: &str,
        _access: wharf_agent::PodAccess,
    ) -> Result<bool, AgentError> {
        Ok(false)
    }

    /// As the server answers it: only a ConfigMap a pod on `node` uses.
    async fn config_map(
        &self,
        node: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, AgentError> {
        let wanted = ConfigRef::ConfigMap(name.to_string());
        if !used_on_node(&self.objects, node, project, &wanted)
            .await
            .map_err(agent_error)?
        {
            return Err(AgentError::Api(format!(
                "no pod on node {node} uses {wanted}"
            )));
        }
        self.objects
            .get(Some(project), name)
            .await
            .map_err(agent_error)
    }

    /// In-process there is no server key to open Secrets with.
    async fn secret(
        &self,
        _node: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<Secret>, AgentError> {
        Err(AgentError::Api(format!(
            "secret {project}/{name}: Secrets are served only by a server, which holds their key"
        )))
    }

    /// As the server answers it: only the claims bound to `node`.
    async fn claims(&self, node: &str) -> Result<Vec<PersistentVolumeClaim>, AgentError> {
        self.objects.claims_on_node(node).await.map_err(agent_error)
    }

    async fn report_usage(&self, node: &str, pods: &[PodUsage]) -> Result<(), AgentError> {
        let now = pods.iter().map(|p| p.timestamp_ms).max().unwrap_or(0);
        self.metrics.record(node, pods.to_vec(), now);
        Ok(())
    }

    /// In-process fleets keep no time-series store (`wharf bench tsdb`
    /// measures ingest on its own): the batch is dropped.
    async fn push_metrics(&self, _node: &str, _samples: &[FalconSample]) -> Result<(), AgentError> {
        Ok(())
    }

    /// As the server answers it: every service and endpoints object, at
    /// the revision of the first read (a watch from there misses nothing).
    async fn node_services(&self, _node: &str) -> Result<(ServiceView, u64), AgentError> {
        let (services, revision) = self
            .objects
            .list::<Service>(None, None)
            .await
            .map_err(agent_error)?;
        let (endpoints, _) = self
            .objects
            .list::<Endpoints>(None, None)
            .await
            .map_err(agent_error)?;
        Ok((
            ServiceView {
                services,
                endpoints,
            },
            revision,
        ))
    }

    async fn watch_services(
        &self,
        _node: &str,
        revision: u64,
    ) -> Result<ServiceChanges, AgentError> {
        let services = self.objects.watch::<Service>(None, revision + 1).await;
        let services = service_changes(
            services.map_err(agent_error)?,
            ServiceChange::Service,
            |project, name| ServiceChange::ServiceDeleted { project, name },
        );
        let endpoints = self.objects.watch::<Endpoints>(None, revision + 1).await;
        let endpoints = service_changes(
            endpoints.map_err(agent_error)?,
            ServiceChange::Endpoints,
            |project, name| ServiceChange::EndpointsDeleted { project, name },
        );
        Ok(futures_util::stream::select(services, endpoints).boxed())
    }
}

/// One kind's object changes as the agent's service changes: `upsert`
/// for an added or modified object, `deleted` with its project and name.
fn service_changes<T: Send + 'static>(
    changes: impl futures_util::Stream<Item = Result<Change<T>, ControlError>> + Send + 'static,
    upsert: fn(Box<T>) -> ServiceChange,
    deleted: fn(String, String) -> ServiceChange,
) -> ServiceChanges {
    changes
        .map(move |change| {
            Ok(match change.map_err(agent_error)? {
                Change::Added(object) | Change::Modified(object) => upsert(Box::new(object)),
                Change::Deleted { project, name, .. } => deleted(project.unwrap_or_default(), name),
            })
        })
        .boxed()
}

#[cfg(test)]
mod tests;
