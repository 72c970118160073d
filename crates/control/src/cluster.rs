//! The control plane as the API sees it: objects plus the controllers that
//! act on them.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use wharf_api::{ANNOTATION_REVISION, Deployment, DeploymentRevision, Pod, Service, Subnet};
use wharf_scheduler::SchedulerConfig;
use wharf_store::{Store, StoreExt};

use crate::ControlError;
use crate::component_commit::{CommitFlowController, FlowTiming, PodCommitter, SpecStore};
use crate::deployments::DeploymentController;
use crate::endpoints::EndpointsController;
use crate::events::EventRecorder;
use crate::eviction::{EvictionConfig, NodeEviction};
use crate::garbage::GarbageCollector;
use crate::hpa_controller::{DEFAULT_HPA_SYNC_PERIOD, HpaController, ScaleReporter};
use crate::image_layers::ImageLayers;
use crate::ipam::IpReconciler;
use crate::leader::{Candidate, run_as_leader};
use crate::nodes::NodeLifecycle;
use crate::objects::{Objects, take_applied_metadata};
use crate::pod_metrics::PodMetricsStore;
use crate::scheduling::{SchedulingLoop, SchedulingReporter};
use crate::termination::{DeletionOutcome, PodDeletion};

/// Lifetime of the leader lease: a dead leader is replaced within it.
const LEADER_TTL: Duration = Duration::from_secs(10);
/// How often addresses of vanished pods are looked for; one is freed after
/// two passes, long enough for its agent to finish tearing the pod down.
const IP_RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// How often pods whose owner is gone, or whose node is lost, are looked
/// for (the first pass is at once, when leadership starts).
const GARBAGE_SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Cluster objects and their controllers.
#[derive(Clone)]
pub struct ControlPlane {
    objects: Objects,
    scheduler_config: SchedulerConfig,
    eviction_config: EvictionConfig,
    /// Where services' cluster IPs are allocated.
    service_range: Subnet,
    /// Events implied by the pod statuses nodes report.
    node_events: Arc<EventRecorder>,
    /// Pods' resource usage as nodes report it (memory only).
    pod_metrics: PodMetricsStore,
    /// How often autoscalers are synced.
    hpa_sync_period: Duration,
    /// Where the autoscaler's scales are reported (the audit log).
    scale_reports: Option<ScaleReporter>,
    /// Where the scheduler learns pods' image layers (the local registry).
    image_layers: Option<Arc<dyn ImageLayers>>,
    /// Where the scheduler's batches are reported (the server's metrics).
    scheduling_reports: Option<SchedulingReporter>,
    /// What the component flow commits pods and stores specs with; without
    /// it, component commits wait (Pending).
    commit_flow: Option<CommitFlowParts>,
}

/// The component flow's injected parts.
type CommitFlowParts = (Arc<dyn PodCommitter>, Arc<dyn SpecStore>, FlowTiming);

/// Controllers running in the background; they stop when this is dropped
/// (the leader lease, if held, then lapses after its TTL) or, releasing the
/// lease at once, when [`Running::stop`] is awaited.
pub struct Running {
    task: AbortOnDropHandle<()>,
    stop: CancellationToken,
}

impl Running {
    /// Stops the controllers and gives leadership up: the leader key goes
    /// now, so another server takes over at once instead of after the
    /// lease's TTL. For clean shutdowns.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl ControlPlane {
    /// A control plane over `store`.
    pub fn new(store: Arc<dyn Store>, scheduler_config: SchedulerConfig) -> ControlPlane {
        let objects = Objects::new(store);
        ControlPlane {
            node_events: Arc::new(EventRecorder::new(objects.clone(), "node")),
            objects,
            scheduler_config,
            eviction_config: EvictionConfig::default(),
            pod_metrics: PodMetricsStore::new(),
            hpa_sync_period: DEFAULT_HPA_SYNC_PERIOD,
            scale_reports: None,
            image_layers: None,
            scheduling_reports: None,
            commit_flow: None,
            service_range: Subnet::parse(crate::services::DEFAULT_SERVICE_RANGE)
                .expect("the default range parses"),
        }
    }

    /// Pods' resource usage as their nodes report it.
    pub fn pod_metrics(&self) -> &PodMetricsStore {
        &self.pod_metrics
    }

    /// The same control plane allocating cluster IPs from `range`.
    pub fn with_service_range(mut self, range: Subnet) -> ControlPlane {
        self.service_range = range;
        self
    }

    /// Where services' cluster IPs are allocated.
    pub fn service_range(&self) -> Subnet {
        self.service_range
    }

    /// Creates a service with its cluster IP, or updates one (see
    /// [`Objects::apply_service`]); `true` if it was created.
    pub async fn apply_service(&self, service: Service) -> Result<(Service, bool), ControlError> {
        self.objects
            .apply_service(service, self.service_range)
            .await
    }

    /// The same control plane syncing autoscalers every `period`.
    pub fn with_hpa_sync_period(mut self, period: Duration) -> ControlPlane {
        self.hpa_sync_period = period;
        self
    }

    /// The same control plane reporting the autoscaler's scales to `reports`.
    pub fn with_scale_reports(mut self, reports: ScaleReporter) -> ControlPlane {
        self.scale_reports = Some(reports);
        self
    }

    /// The same control plane scheduling with image locality from
    /// `images` (the layers of the images this server's registry hosts).
    pub fn with_image_layers(mut self, images: Arc<dyn ImageLayers>) -> ControlPlane {
        self.image_layers = Some(images);
        self
    }

    /// The same control plane reporting the scheduler's batches to `reports`.
    pub fn with_scheduling_reports(mut self, reports: SchedulingReporter) -> ControlPlane {
        self.scheduling_reports = Some(reports);
        self
    }

    /// The same control plane running the component flow (`wharf commit
    /// deployment`) on its leader, committing pods with `committer` and
    /// storing the pinned Deployments' specs in `specs`.
    pub fn with_commit_flow(
        mut self,
        committer: Arc<dyn PodCommitter>,
        specs: Arc<dyn SpecStore>,
        timing: FlowTiming,
    ) -> ControlPlane {
        self.commit_flow = Some((committer, specs, timing));
        self
    }

    /// The failover settings.
    pub fn failover(&self) -> &EvictionConfig {
        &self.eviction_config
    }

    /// The same control plane with failover settings `config`.
    pub fn with_eviction(mut self, config: EvictionConfig) -> ControlPlane {
        self.eviction_config = config;
        self
    }

    /// Stores the status a node reports for a pod, with the events it
    /// implies (pull failures, back-offs, starts).
    pub async fn report_pod_status(
        &self,
        project: &str,
        name: &str,
        status: &wharf_api::PodStatus,
    ) -> Result<Pod, ControlError> {
        crate::pod_status::report_pod_status(
            &self.objects,
            &self.node_events,
            project,
            name,
            status,
        )
        .await
    }

    /// Records an event a node reports about pod `project/name`.
    pub async fn record_pod_event(
        &self,
        project: &str,
        name: &str,
        event: &wharf_api::PodEventReport,
    ) -> Result<(), ControlError> {
        crate::pod_status::record_pod_event(&self.objects, &self.node_events, project, name, event)
            .await
    }

    /// Typed object access.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Runs the deployment controller, the scheduler, node lifecycle and
    /// eviction while `candidate` leads.
    pub fn start(&self, candidate: Candidate) -> Running {
        self.start_with(candidate, std::future::pending::<()>)
    }

    /// [`start`](ControlPlane::start), also running the future `extra`
    /// makes (other controllers, such as replication) while leading.
    pub fn start_with<F, Fut>(&self, candidate: Candidate, extra: F) -> Running
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let objects = self.objects.clone();
        let config = self.scheduler_config;
        let images = self.image_layers.clone();
        let eviction = self.eviction_config;
        let scheduling_reports = self.scheduling_reports.clone();
        let commit_flow = self.commit_flow.clone();
        let autoscaler = Arc::new(
            HpaController::new(
                objects.clone(),
                self.pod_metrics.clone(),
                self.hpa_sync_period,
            )
            .with_reports(self.scale_reports.clone()),
        );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let store = objects.store().clone();
            run_as_leader(store.as_ref(), &candidate, LEADER_TTL, stopped, || {
                let objects = objects.clone();
                let autoscaler = autoscaler.clone();
                let images = images.clone();
                let scheduling_reports = scheduling_reports.clone();
                let commit_flow = commit_flow.clone();
                let extra = tokio::spawn(extra());
                async move {
                    let _extra = AbortOnDropHandle::new(extra);
                    let deployments =
                        tokio::spawn(DeploymentController::new(objects.clone()).run());
                    let scheduler = SchedulingLoop::reporting(
                        objects.clone(),
                        config,
                        images,
                        scheduling_reports,
                    );
                    let scheduler = tokio::spawn(scheduler.run());
                    let nodes = tokio::spawn(NodeLifecycle::new(objects.clone()).run());
                    let evictions =
                        tokio::spawn(NodeEviction::new(objects.clone(), eviction).run());
                    let garbage = tokio::spawn(
                        GarbageCollector::new(objects.clone(), GARBAGE_SWEEP_EVERY).run(),
                    );
                    let endpoints = tokio::spawn(EndpointsController::new(objects.clone()).run());
                    let autoscaler = tokio::spawn(autoscaler.run());
                    let flows = commit_flow.map(|(committer, specs, timing)| {
                        let flows =
                            CommitFlowController::new(objects.clone(), committer, specs, timing);
                        AbortOnDropHandle::new(tokio::spawn(flows.run()))
                    });
                    let addresses =
                        tokio::spawn(IpReconciler::new(objects, IP_RECONCILE_EVERY).run());
                    let _stop = (
                        AbortOnDropHandle::new(deployments),
                        AbortOnDropHandle::new(garbage),
                        AbortOnDropHandle::new(scheduler),
                        AbortOnDropHandle::new(nodes),
                        AbortOnDropHandle::new(evictions),
                        AbortOnDropHandle::new(addresses),
                        AbortOnDropHandle::new(endpoints),
                        AbortOnDropHandle::new(autoscaler),
                        flows,
                    );
                    std::future::pending::<()>().await;
                }
            })
            .await;
        });
        Running {
            task: AbortOnDropHandle::new(task),
            stop,
        }
    }

    /// Creates a deployment, or updates its spec, labels and annotations
    /// (bumping its generation when the spec changed). Returns it and
    /// whether it was created.
    pub async fn apply_deployment(
        &self,
        mut deployment: Deployment,
    ) -> Result<(Deployment, bool), ControlError> {
        deployment.validate()?;
        crate::grants::check_pool_grant(&self.objects, &deployment).await?;
        let project = deployment.metadata.project.clone();
        let name = deployment.metadata.name.clone();
        if self
            .objects
            .get::<Deployment>(project.as_deref(), &name)
            .await?
            .is_none()
        {
            deployment.status = Default::default();
            match self.objects.create(deployment.clone()).await {
                Ok(created) => return Ok((created, true)),
                Err(ControlError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let updated = self
            .objects
            .modify::<Deployment>(project.as_deref(), &name, |current| {
                keep_revision_annotation(current, &mut deployment);
                let spec_changed = current.spec != deployment.spec;
                if spec_changed {
                    current.spec = deployment.spec.clone();
                    current.metadata.generation += 1;
                }
                take_applied_metadata(&mut current.metadata, &deployment.metadata) || spec_changed
            })
            .await?;
        Ok((updated, false))
    }

    /// Rolls a deployment back to revision `to` (0: the previous one).
    pub async fn undo_deployment(
        &self,
        project: &str,
        name: &str,
        to: u64,
    ) -> Result<Deployment, ControlError> {
        crate::revisions::undo(&self.objects, project, name, to).await
    }

    /// Sets a deployment's replica count.
    pub async fn scale(
        &self,
        project: &str,
        name: &str,
        replicas: u32,
    ) -> Result<Deployment, ControlError> {
        self.objects.scale_deployment(project, name, replicas).await
    }

    /// Deletes a deployment; the controller (or, if none runs now, the
    /// garbage collector when one does) then deletes its pods gracefully.
    pub async fn delete_deployment(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Deployment, ControlError> {
        self.objects
            .delete::<Deployment>(Some(project), name, None)
            .await
    }

    /// Deletes every deployment and pod of `project`, as deleting a
    /// Kubernetes namespace deletes what is in it. Deployments go first,
    /// so that their controller does not replace the pods; a pod a
    /// controller still makes afterwards is an orphan it deletes itself.
    /// Pods are deleted gracefully: they stop on their nodes afterwards.
    /// Returns how many objects were deleted.
    pub async fn delete_project_workloads(&self, project: &str) -> Result<usize, ControlError> {
        let gone = |result: Result<(), ControlError>| match result {
            Ok(()) | Err(ControlError::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        };
        let (deployments, _) = self.objects.list::<Deployment>(Some(project), None).await?;
        let (pods, _) = self.objects.list::<Pod>(Some(project), None).await?;
        let (revisions, _) = self
            .objects
            .list::<DeploymentRevision>(Some(project), None)
            .await?;
        let count = deployments.len() + pods.len() + revisions.len();
        for deployment in deployments {
            let name = &deployment.metadata.name;
            gone(self.delete_deployment(project, name).await.map(drop))?;
        }
        let commits = self
            .objects
            .delete_in_project::<wharf_api::component_commit::ComponentCommit>(project);
        commits.await?;
        // The commit index's entries of the project's images.
        let index = format!("{}{project}/", wharf_api::commit::COMMIT_IPS_PREFIX);
        for entry in self.objects.store().list_all(&index, 1000).await? {
            self.objects.store().delete(&entry.key).await?;
        }
        for revision in revisions {
            let name = &revision.metadata.name;
            let deleted = self
                .objects
                .delete::<DeploymentRevision>(Some(project), name, None);
            gone(deleted.await.map(drop))?;
        }
        for pod in pods {
            let graceful = PodDeletion::Graceful(None);
            let deleted = self.delete_pod(project, &pod.metadata.name, graceful).await;
            gone(deleted.map(drop))?;
        }
        Ok(count)
    }

    /// Deletes a pod as `how` says (its deployment, if any, makes a new
    /// one at once: a Terminating pod is no replica).
    pub async fn delete_pod(
        &self,
        project: &str,
        name: &str,
        how: PodDeletion,
    ) -> Result<DeletionOutcome, ControlError> {
        self.objects.request_pod_deletion(project, name, how).await
    }

    /// A node's confirmation that it stopped a Terminating pod: the object goes.
    pub async fn confirm_pod_stopped(
        &self,
        project: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), ControlError> {
        self.objects.confirm_pod_stopped(project, name, uid).await
    }
}

/// The revision number is the controller's: an applied YAML without it
/// keeps the current one, so that re-applying the same YAML changes nothing.
fn keep_revision_annotation(current: &Deployment, applied: &mut Deployment) {
    if let Some(revision) = current.metadata.annotations.get(ANNOTATION_REVISION) {
        applied
            .metadata
            .annotations
            .entry(ANNOTATION_REVISION.into())
            .or_insert_with(|| revision.clone());
    }
}
