//! The component flow (`wharf commit deployment NAME`, issue 16): every
//! pod of a Deployment committed to `project/<project>-<deployment>-<ip>:<tag>`,
//! the seed's index `/commiter/ips/<image> = <ip>`, the pod labelled
//! `ip=<ip>`, a pinned one-replica Deployment per address generated from
//! the template (its spec stored in the registry as an OCI artifact next
//! to the image), then the takeover, one address at a time, and on request
//! the rollback to the original Deployment on the same addresses.
//!
//! The API side ([`Objects::start_component_commit`],
//! [`Objects::request_commit_rollback`], the index) checks and records; the
//! leader's [`CommitFlowController`] does the work, reading and writing
//! its progress in the `ComponentCommit`'s status after every step, so a
//! new leader resumes where the old one stopped. Commits and spec storage
//! are injected ([`PodCommitter`], [`SpecStore`]): the server answers them
//! with its agents and its registry.
//!
//! How the original Deployment is held: while the flow hands pods over
//! (or back) it carries `wharf.io/commit-hold`, under which the deployment
//! controller makes missing pods but deletes none. The flow lowers the
//! replica count first (nothing is deleted, the pod stays), then deletes
//! the one pod it chose, so no other pod stops and none is replaced. On the
//! way back it raises the count by one per address freed; the original
//! carries `wharf.io/fixed-ips` (the component's addresses) so its new pod
//! claims the address just released, the only one of them free.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::time::Instant;
use wharf_api::commit::{COMMIT_IPS_PREFIX, CommitResult, LABEL_COMMIT_IP};
use wharf_api::component_commit::{
    ANNOTATION_COMMIT_HOLD, ANNOTATION_COMMIT_REPLICAS, ANNOTATION_COMMITTED_FROM,
    CommitFailureRecord, CommitIndexEntry, CommitPhase, ComponentCommit, ComponentCommitRequest,
    ComponentCommitSpec, ComponentCommitStatus, PodCommitRecord, commit_image, deployment_yaml,
    pinned_deployment_name,
};
use wharf_api::{
    ANNOTATION_FIXED_IP, ANNOTATION_FIXED_IPS, ANNOTATION_REVISION, Deployment, Node, ObjectError,
    ObjectMeta, Pod, PodPhase,
};
use wharf_store::StoreExt;

use crate::ControlError;
use crate::deployments::is_ready;
use crate::objects::{Change, Objects};
use crate::termination::PodDeletion;

/// Why one pod's commit failed, and at which of its steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitFailure {
    /// The commit's step (`check`, `pause`, `snapshot`, `push`, ...).
    pub step: String,
    /// What went wrong.
    pub message: String,
}

/// Commits one container of a running pod to an image and pushes it: what
/// `wharf commit POD` does, on behalf of the account that asked.
#[async_trait]
pub trait PodCommitter: Send + Sync {
    /// Commits `container` of `pod` to `image` (`project/repository:tag`).
    async fn commit(
        &self,
        pod: &Pod,
        container: &str,
        image: &str,
        on_behalf_of: &str,
    ) -> Result<CommitResult, CommitFailure>;
}

/// Where the pinned Deployments' specs are kept: the registry, as OCI
/// artifacts whose subject is the committed image.
#[async_trait]
pub trait SpecStore: Send + Sync {
    /// Stores `yaml` as an artifact of repository `repository` tagged
    /// `tag`, with subject the manifest `subject` (a digest) of the same
    /// repository; returns the artifact manifest's digest.
    async fn put_spec(
        &self,
        repository: &str,
        tag: &str,
        subject: &str,
        yaml: &str,
        on_behalf_of: &str,
    ) -> Result<String, String>;

    /// The YAML of the artifact `digest` of `repository`.
    async fn get_spec(&self, repository: &str, digest: &str) -> Result<String, String>;
}

/// How long the flow waits, and how often it looks.
#[derive(Clone, Copy, Debug)]
pub struct FlowTiming {
    /// How often a wait looks again.
    pub poll: Duration,
    /// How long a stopped pod may take to release its address.
    pub release: Duration,
    /// How long a new pod may take to run (and be ready) on its address.
    pub run: Duration,
}

impl Default for FlowTiming {
    fn default() -> Self {
        FlowTiming {
            poll: Duration::from_millis(500),
            release: Duration::from_secs(120),
            run: Duration::from_secs(180),
        }
    }
}

/// A step that failed: where, on which pod, and why.
struct StepError {
    step: &'static str,
    pod: Option<String>,
    message: String,
}

impl StepError {
    fn new(step: &'static str, pod: &str, message: impl Into<String>) -> StepError {
        StepError {
            step,
            pod: Some(pod.to_string()),
            message: message.into(),
        }
    }
}

impl From<ControlError> for StepError {
    fn from(err: ControlError) -> StepError {
        StepError {
            step: "store",
            pod: None,
            message: err.to_string(),
        }
    }
}

/// The store key of the index entry of `image`.
pub fn commit_index_key(image: &str) -> String {
    format!("{COMMIT_IPS_PREFIX}{image}")
}

/// Today's UTC date as `YYYYMMDD`, the images' default tag.
pub fn default_commit_tag(unix_millis: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (unix_millis / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}")
}

fn invalid(field: &str, message: String) -> ControlError {
    ControlError::Invalid(ObjectError::Invalid {
        field: field.to_string(),
        message,
    })
}

impl Objects {
    /// Checks that deployment `project/name` can be committed and records a
    /// new `ComponentCommit` for the leader to run. Everything is checked
    /// before anything is paused: the deployment is available, each pod
    /// runs on a ready node with an address of a pool, and every generated
    /// name passes the registry's and the objects' rules (errors name the
    /// pod and the name). A flow still running, or one whose pods serve
    /// pinned (roll it back first), is a conflict.
    pub async fn start_component_commit(
        &self,
        project: &str,
        name: &str,
        request: &ComponentCommitRequest,
        requested_by: &str,
        now_millis: u64,
    ) -> Result<ComponentCommit, ControlError> {
        if let Some(current) = self.get::<ComponentCommit>(Some(project), name).await? {
            let phase = current.status.phase;
            if phase.is_active() || phase == CommitPhase::Done {
                return Err(ControlError::Conflict(format!(
                    "deployment {project}/{name} has a commit in phase {phase:?}; {}",
                    if phase == CommitPhase::Done {
                        "roll it back first (wharf commit rollback)"
                    } else {
                        "wait until it ends"
                    }
                )));
            }
            if current.status.pods.iter().any(|p| p.handed_over) {
                return Err(ControlError::Conflict(format!(
                    "pinned deployments of {project}/{name} still serve; roll back first (wharf commit rollback)"
                )));
            }
        }
        let deployment: Deployment = self.require(Some(project), name).await?;
        if deployment
            .metadata
            .annotations
            .contains_key(ANNOTATION_COMMIT_HOLD)
        {
            return Err(ControlError::Conflict(format!(
                "deployment {project}/{name} is held by a commit"
            )));
        }
        let tag = match &request.tag {
            Some(tag) => tag.clone(),
            None => default_commit_tag(now_millis),
        };
        let containers = &deployment.spec.template.spec.containers;
        let container = match &request.container {
            Some(wanted) => containers
                .iter()
                .find(|c| &c.name == wanted)
                .ok_or_else(|| {
                    invalid(
                        "container",
                        format!("deployment {project}/{name} has no container {wanted:?}"),
                    )
                })?,
            None => containers.first().ok_or_else(|| {
                invalid(
                    "container",
                    format!("deployment {project}/{name} has no container"),
                )
            })?,
        }
        .name
        .clone();
        let pods = self.check_commit_pods(&deployment).await?;
        let mut records = Vec::new();
        for (pod, ip) in pods {
            let pod_name = pod.metadata.name.clone();
            let named = |err: wharf_api::component_commit::CommitNameError| {
                invalid(
                    &format!("pod {pod_name}"),
                    format!("{err}; shorten the deployment or the tag"),
                )
            };
            let image = commit_image(project, name, ip, &tag).map_err(named)?;
            let pinned = pinned_deployment_name(name, ip).map_err(named)?;
            records.push(PodCommitRecord {
                pod: pod_name,
                ip: ip.to_string(),
                image,
                pinned_deployment: pinned,
                ..Default::default()
            });
        }
        let commit = ComponentCommit {
            api_version: "wharf.io/v1".into(),
            kind: "ComponentCommit".into(),
            metadata: ObjectMeta {
                name: name.to_string(),
                project: Some(project.to_string()),
                ..Default::default()
            },
            spec: ComponentCommitSpec {
                deployment: name.to_string(),
                tag,
                container,
                requested_by: requested_by.to_string(),
                rollback: false,
            },
            status: ComponentCommitStatus {
                phase: CommitPhase::Pending,
                pods: records,
                original_replicas: deployment.spec.replicas,
                failure: None,
                message: "waiting for the leader".into(),
            },
        };
        match self.get::<ComponentCommit>(Some(project), name).await? {
            None => self.create(commit).await,
            Some(current) => {
                let mut replaced = commit;
                replaced.metadata = current.metadata;
                self.update(replaced).await
            }
        }
    }

    /// The deployment's pods with their addresses, if it may be committed:
    /// available, every pod Running on a ready node with a pool address.
    async fn check_commit_pods(
        &self,
        deployment: &Deployment,
    ) -> Result<Vec<(Pod, Ipv4Addr)>, ControlError> {
        let project = deployment.metadata.project.as_deref().unwrap_or_default();
        let name = &deployment.metadata.name;
        let pods = self.owned_pods(deployment).await?;
        let wanted = deployment.spec.replicas as usize;
        let available = deployment.status.available_replicas as usize;
        if wanted == 0 || available < wanted || pods.len() != wanted {
            return Err(ControlError::Conflict(format!(
                "deployment {project}/{name} is not available ({available} of {wanted} replicas available, {} pods): commit a deployment whose pods all run",
                pods.len()
            )));
        }
        let mut checked = Vec::new();
        for pod in pods {
            let pod_name = &pod.metadata.name;
            if pod.status.phase != PodPhase::Running {
                return Err(ControlError::Conflict(format!(
                    "pod {pod_name} is {:?}, not Running",
                    pod.status.phase
                )));
            }
            let node_name = pod.spec.node_name.clone().unwrap_or_default();
            let node: Option<Node> = self.get(None, &node_name).await?;
            if !node.is_some_and(|n| n.status.ready) {
                return Err(ControlError::Conflict(format!(
                    "pod {pod_name} is on node {node_name:?}, which is not ready"
                )));
            }
            let claim = self.pod_ip_claim(project, pod_name).await?;
            let Some(claim) = claim.filter(|c| c.pod_uid == pod.metadata.uid) else {
                return Err(ControlError::Conflict(format!(
                    "pod {pod_name} has no address from an IP pool (wharf.io/ip-pool): the flow keeps pool addresses only"
                )));
            };
            checked.push((pod, claim.ip));
        }
        Ok(checked)
    }

    /// The live pods a deployment owns (by uid), by name.
    async fn owned_pods(&self, deployment: &Deployment) -> Result<Vec<Pod>, ControlError> {
        let project = deployment.metadata.project.as_deref();
        let prefix = format!("{}-", deployment.metadata.name);
        let (pods, _) = self.list_named::<Pod>(project, &prefix, None).await?;
        Ok(pods
            .into_iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .any(|o| o.uid == deployment.metadata.uid)
            })
            .filter(|p| !p.metadata.is_terminating())
            .collect())
    }

    /// Asks the leader to return deployment `project/name` to its original
    /// pods on the same addresses. Refused while the flow runs, and when
    /// nothing was handed over and the original is not held.
    pub async fn request_commit_rollback(
        &self,
        project: &str,
        name: &str,
    ) -> Result<ComponentCommit, ControlError> {
        let mut refused = None;
        let commit = self
            .modify::<ComponentCommit>(Some(project), name, |c| {
                refused = None;
                let phase = c.status.phase;
                if phase.is_active() {
                    refused = Some(format!(
                        "the commit of {project}/{name} is in phase {phase:?}; wait until it ends"
                    ));
                    return false;
                }
                if phase == CommitPhase::RolledBack {
                    refused = Some(format!("{project}/{name} is already rolled back"));
                    return false;
                }
                c.spec.rollback = true;
                c.status.phase = CommitPhase::RollingBack;
                c.status.failure = None;
                c.status.message = "waiting for the leader".into();
                true
            })
            .await?;
        match refused {
            Some(message) => Err(ControlError::Conflict(message)),
            None => Ok(commit),
        }
    }

    /// The index `/commiter/ips/`: every committed image with its address,
    /// those of `projects` only when given, those with address `ip` only
    /// when given.
    pub async fn commit_index(
        &self,
        projects: Option<&[String]>,
        ip: Option<&str>,
    ) -> Result<Vec<CommitIndexEntry>, ControlError> {
        let entries = self.store().list_all(COMMIT_IPS_PREFIX, 1000).await?;
        Ok(entries
            .into_iter()
            .filter_map(|kv| {
                let image = kv.key.strip_prefix(COMMIT_IPS_PREFIX)?.to_string();
                let address = String::from_utf8(kv.value).ok()?;
                Some(CommitIndexEntry { image, ip: address })
            })
            .filter(|e| ip.is_none_or(|ip| e.ip == ip))
            .filter(|e| {
                let project = e.image.split('/').next().unwrap_or_default();
                projects.is_none_or(|ps| ps.iter().any(|p| p == project))
            })
            .collect())
    }
}

/// The pinned Deployment that takes the address of `record` over: the
/// original's template with the committed image in `container`, one
/// replica, annotation `wharf.io/fixed-ip`, label `ip` in its labels, its
/// template's and its selector, so it selects its own pod only.
pub fn pinned_deployment(
    original: &Deployment,
    record: &PodCommitRecord,
    container: &str,
) -> Deployment {
    let ip = record.ip.clone();
    let mut spec = original.spec.clone();
    spec.replicas = 1;
    spec.paused = false;
    spec.strategy = None;
    let template = &mut spec.template;
    template
        .metadata
        .labels
        .insert(LABEL_COMMIT_IP.into(), ip.clone());
    template.metadata.annotations.remove(ANNOTATION_FIXED_IPS);
    template
        .metadata
        .annotations
        .insert(ANNOTATION_FIXED_IP.into(), ip.clone());
    for c in template
        .spec
        .containers
        .iter_mut()
        .filter(|c| c.name == container)
    {
        c.image = record.image.clone();
    }
    spec.selector
        .match_labels
        .insert(LABEL_COMMIT_IP.into(), ip.clone());
    let mut annotations: BTreeMap<String, String> = original
        .metadata
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with("wharf.io/"))
        .filter(|(k, _)| {
            ![
                ANNOTATION_COMMIT_HOLD,
                ANNOTATION_COMMIT_REPLICAS,
                ANNOTATION_FIXED_IPS,
                ANNOTATION_REVISION,
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(ANNOTATION_FIXED_IP.into(), ip.clone());
    annotations.insert(
        ANNOTATION_COMMITTED_FROM.into(),
        original.metadata.name.clone(),
    );
    let mut labels = original.metadata.labels.clone();
    labels.insert(LABEL_COMMIT_IP.into(), ip);
    Deployment {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        metadata: ObjectMeta {
            name: record.pinned_deployment.clone(),
            project: original.metadata.project.clone(),
            labels,
            annotations,
            ..Default::default()
        },
        spec,
        status: Default::default(),
    }
}

/// Runs the component flows, on the leader only: each active
/// `ComponentCommit` is driven by one task, step by step, its progress
/// written to its status.
pub struct CommitFlowController {
    objects: Objects,
    committer: Arc<dyn PodCommitter>,
    specs: Arc<dyn SpecStore>,
    timing: FlowTiming,
    running: Mutex<HashSet<(String, String)>>,
}

/// Flows looked at again this often even without a change.
const RESCAN: Duration = Duration::from_secs(10);

impl CommitFlowController {
    /// A controller committing through `committer` and storing specs in `specs`.
    pub fn new(
        objects: Objects,
        committer: Arc<dyn PodCommitter>,
        specs: Arc<dyn SpecStore>,
        timing: FlowTiming,
    ) -> Arc<CommitFlowController> {
        Arc::new(CommitFlowController {
            objects,
            committer,
            specs,
            timing,
            running: Mutex::default(),
        })
    }

    /// Runs until dropped: starts a task per active flow, when one is
    /// created or changed, and on a rescan.
    pub async fn run(self: Arc<Self>) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let result: Result<(), ControlError> = async {
                let (commits, revision) = self.objects.list::<ComponentCommit>(None, None).await?;
                for commit in commits {
                    self.clone().launch(&mut tasks, commit);
                }
                let mut changes = Box::pin(
                    self.objects
                        .watch::<ComponentCommit>(None, revision + 1)
                        .await?,
                );
                let rescan = tokio::time::sleep(RESCAN);
                tokio::pin!(rescan);
                loop {
                    tokio::select! {
                        change = changes.next() => match change {
                            Some(Ok(Change::Added(c) | Change::Modified(c))) => {
                                self.clone().launch(&mut tasks, c)
                            }
                            Some(Ok(Change::Deleted { .. })) => {}
                            Some(Err(err)) => return Err(err),
                            None => return Ok(()),
                        },
                        Some(_) = tasks.join_next() => {}
                        _ = &mut rescan => return Ok(()),
                    }
                }
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "component commit watch ended; restarting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    fn launch(self: Arc<Self>, tasks: &mut tokio::task::JoinSet<()>, commit: ComponentCommit) {
        if !commit.status.phase.is_active() {
            return;
        }
        let key = (
            commit.metadata.project.clone().unwrap_or_default(),
            commit.metadata.name.clone(),
        );
        if !self
            .running
            .lock()
            .expect("not poisoned")
            .insert(key.clone())
        {
            return;
        }
        tasks.spawn(async move {
            if let Err(err) = self.drive(&key.0, &key.1).await {
                tracing::warn!(error = %err, project = key.0, name = key.1, "component commit stopped; retrying");
            }
            self.running.lock().expect("not poisoned").remove(&key);
        });
    }

    /// Drives one flow until it is done, rolled back or failed. Failures of
    /// a step are recorded in the status; the error returned is the
    /// store's (the flow is resumed later).
    pub async fn drive(&self, project: &str, name: &str) -> Result<ComponentCommit, ControlError> {
        loop {
            let commit: ComponentCommit = self.objects.require(Some(project), name).await?;
            let outcome = match commit.status.phase {
                CommitPhase::Pending => {
                    self.set_phase(project, name, CommitPhase::Committing, "committing pods")
                        .await?;
                    continue;
                }
                CommitPhase::Committing => self.commit_all(&commit).await.map(|()| {
                    (
                        CommitPhase::TakingOver,
                        "handing the addresses over, one at a time",
                    )
                }),
                CommitPhase::TakingOver => self.take_over(&commit).await.map(|()| {
                    (
                        CommitPhase::Done,
                        "the pinned deployments serve every address",
                    )
                }),
                CommitPhase::RollingBack => self.roll_back(&commit).await.map(|()| {
                    (
                        CommitPhase::RolledBack,
                        "the original deployment serves every address",
                    )
                }),
                _ => return Ok(commit),
            };
            match outcome {
                Ok((next, message)) => self.set_phase(project, name, next, message).await?,
                Err(failure) if failure.step == "store" => {
                    return Err(ControlError::Internal(failure.message));
                }
                Err(failure) => self.fail(project, name, failure).await?,
            };
        }
    }

    async fn set_phase(
        &self,
        project: &str,
        name: &str,
        phase: CommitPhase,
        message: &str,
    ) -> Result<ComponentCommit, ControlError> {
        self.objects
            .modify::<ComponentCommit>(Some(project), name, |c| {
                c.status.phase = phase;
                c.status.message = message.to_string();
                true
            })
            .await
    }

    async fn fail(
        &self,
        project: &str,
        name: &str,
        failure: StepError,
    ) -> Result<ComponentCommit, ControlError> {
        tracing::warn!(
            project,
            name,
            step = failure.step,
            message = failure.message,
            "component commit failed"
        );
        self.objects
            .modify::<ComponentCommit>(Some(project), name, |c| {
                c.status.phase = CommitPhase::Failed;
                c.status.message = format!("stopped at step {}", failure.step);
                c.status.failure = Some(CommitFailureRecord {
                    step: failure.step.to_string(),
                    pod: failure.pod.clone(),
                    message: failure.message.clone(),
                });
                true
            })
            .await
    }

    /// Changes the record of pod `pod` in the flow's status.
    async fn record(
        &self,
        commit: &ComponentCommit,
        pod: &str,
        change: impl Fn(&mut PodCommitRecord),
    ) -> Result<(), ControlError> {
        let project = commit.metadata.project.as_deref();
        self.objects
            .modify::<ComponentCommit>(project, &commit.metadata.name, |c| {
                match c.status.pods.iter_mut().find(|r| r.pod == pod) {
                    Some(record) => {
                        change(record);
                        true
                    }
                    None => false,
                }
            })
            .await
            .map(drop)
    }

    fn project(commit: &ComponentCommit) -> &str {
        commit.metadata.project.as_deref().unwrap_or_default()
    }

    async fn original(&self, commit: &ComponentCommit) -> Result<Deployment, StepError> {
        let project = Self::project(commit);
        let name = &commit.spec.deployment;
        self.objects
            .get::<Deployment>(Some(project), name)
            .await?
            .ok_or_else(|| StepError {
                step: "check",
                pod: None,
                message: format!("deployment {project}/{name} is gone"),
            })
    }

    /// Commits every pod, records its index entry, labels it and stores its
    /// pinned Deployment's spec; each step is skipped when the status says
    /// it was done.
    async fn commit_all(&self, commit: &ComponentCommit) -> Result<(), StepError> {
        let project = Self::project(commit);
        let original = self.original(commit).await?;
        for record in &commit.status.pods {
            let pod_name = record.pod.as_str();
            let digest = match &record.digest {
                Some(digest) => digest.clone(),
                None => {
                    let pod: Option<Pod> = self.objects.get(Some(project), pod_name).await?;
                    let pod = pod
                        .filter(|p| p.status.phase == PodPhase::Running)
                        .ok_or_else(|| {
                            StepError::new("check", pod_name, "the pod no longer runs")
                        })?;
                    let result = self
                        .committer
                        .commit(
                            &pod,
                            &commit.spec.container,
                            &record.image,
                            &commit.spec.requested_by,
                        )
                        .await
                        .map_err(|f| {
                            StepError::new(
                                "commit",
                                pod_name,
                                format!("{} (commit step {})", f.message, f.step),
                            )
                        })?;
                    let digest = result.digest.clone();
                    self.record(commit, pod_name, |r| r.digest = Some(digest.clone()))
                        .await?;
                    result.digest
                }
            };
            if !record.indexed {
                let key = commit_index_key(&record.image);
                self.objects
                    .store()
                    .put(&key, record.ip.clone().into_bytes())
                    .await
                    .map_err(|err| StepError::new("index", pod_name, err.to_string()))?;
                self.record(commit, pod_name, |r| r.indexed = true).await?;
            }
            if !record.labelled {
                let ip = record.ip.clone();
                let labelled = self
                    .objects
                    .modify::<Pod>(Some(project), pod_name, |p| {
                        let old = p.metadata.labels.insert(LABEL_COMMIT_IP.into(), ip.clone());
                        old.as_ref() != Some(&ip)
                    })
                    .await;
                labelled.map_err(|err| StepError::new("label", pod_name, err.to_string()))?;
                self.record(commit, pod_name, |r| r.labelled = true).await?;
            }
            if record.spec_artifact.is_none() {
                let pinned = pinned_deployment(&original, record, &commit.spec.container);
                let yaml = deployment_yaml(&pinned);
                let (repository, tag) = wharf_api::component_commit::split_image(&record.image)
                    .ok_or_else(|| StepError::new("spec", pod_name, "image without a tag"))?;
                let artifact = self
                    .specs
                    .put_spec(
                        repository,
                        &format!("{tag}{}", wharf_api::component_commit::SPEC_TAG_SUFFIX),
                        &digest,
                        &yaml,
                        &commit.spec.requested_by,
                    )
                    .await
                    .map_err(|message| StepError::new("spec", pod_name, message))?;
                self.record(commit, pod_name, |r| {
                    r.spec_artifact = Some(artifact.clone())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Holds the original Deployment (see the module's doc), recording its
    /// replica count before the takeover, and sets its replica count.
    async fn hold(
        &self,
        commit: &ComponentCommit,
        replicas: u32,
        fixed_ips: Option<String>,
    ) -> Result<Deployment, StepError> {
        let project = Self::project(commit);
        let former = commit.status.original_replicas.to_string();
        let holder = commit.metadata.name.clone();
        self.objects
            .modify::<Deployment>(Some(project), &commit.spec.deployment, |d| {
                let before = d.clone();
                let annotations = &mut d.metadata.annotations;
                annotations.insert(ANNOTATION_COMMIT_HOLD.into(), holder.clone());
                annotations
                    .entry(ANNOTATION_COMMIT_REPLICAS.into())
                    .or_insert_with(|| former.clone());
                if let Some(ips) = &fixed_ips {
                    annotations.insert(ANNOTATION_FIXED_IPS.into(), ips.clone());
                }
                if d.spec.replicas != replicas {
                    d.spec.replicas = replicas;
                    d.metadata.generation += 1;
                }
                *d != before
            })
            .await
            .map_err(|err| StepError {
                step: "hold",
                pod: None,
                message: err.to_string(),
            })
    }

    /// Hands each address over to its pinned Deployment, one at a time;
    /// the original ends at 0 replicas, its former count in an annotation.
    async fn take_over(&self, commit: &ComponentCommit) -> Result<(), StepError> {
        let mut current = commit.clone();
        while let Some(record) = current.status.pods.iter().find(|r| !r.handed_over).cloned() {
            let on_original = current
                .status
                .pods
                .iter()
                .filter(|r| !r.handed_over)
                .count() as u32;
            self.hand_over(&current, &record, on_original - 1).await?;
            self.record(&current, &record.pod, |r| r.handed_over = true)
                .await?;
            current = self
                .objects
                .require(commit.metadata.project.as_deref(), &commit.metadata.name)
                .await?;
        }
        let project = Self::project(commit);
        self.objects
            .modify::<Deployment>(Some(project), &commit.spec.deployment, |d| {
                let held = d
                    .metadata
                    .annotations
                    .remove(ANNOTATION_COMMIT_HOLD)
                    .is_some();
                let scale = d.spec.replicas != 0;
                if scale {
                    d.spec.replicas = 0;
                    d.metadata.generation += 1;
                }
                held || scale
            })
            .await
            .map_err(|err| StepError {
                step: "hold",
                pod: None,
                message: err.to_string(),
            })?;
        Ok(())
    }

    /// One address: the original pod stopped and gone, its address free,
    /// the pinned Deployment created and its pod running there. A pinned
    /// pod that does not run in time is undone and the original restored.
    async fn hand_over(
        &self,
        commit: &ComponentCommit,
        record: &PodCommitRecord,
        original_replicas: u32,
    ) -> Result<(), StepError> {
        let project = Self::project(commit);
        let pod_name = record.pod.as_str();
        let exists = self
            .objects
            .get::<Deployment>(Some(project), &record.pinned_deployment)
            .await?
            .is_some();
        if !exists {
            // Lower the count first: under the hold nothing is deleted,
            // and the pod deleted next is not replaced.
            self.hold(commit, original_replicas, None).await?;
            match self
                .objects
                .request_pod_deletion(project, pod_name, PodDeletion::Graceful(None))
                .await
            {
                Ok(_) | Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(StepError::new("stop", pod_name, err.to_string())),
            }
            self.wait_released(project, &[pod_name.to_string()], &record.ip)
                .await
                .map_err(|message| StepError::new("release", pod_name, message))?;
            let original = self.original(commit).await?;
            let pinned = pinned_deployment(&original, record, &commit.spec.container);
            match self.objects.create(pinned).await {
                Ok(_) | Err(ControlError::Conflict(_)) => {}
                Err(err) => return Err(StepError::new("takeover", pod_name, err.to_string())),
            }
        }
        let pinned: Deployment = self
            .objects
            .require(Some(project), &record.pinned_deployment)
            .await?;
        if self.wait_running(&pinned, &record.ip).await.is_ok() {
            return Ok(());
        }
        let message = format!(
            "the pod of {} did not run on {} within {} s",
            record.pinned_deployment,
            record.ip,
            self.timing.run.as_secs()
        );
        self.undo_pinned(commit, record).await?;
        self.restore_original(commit, record, original_replicas + 1)
            .await?;
        Err(StepError::new(
            "takeover",
            pod_name,
            format!(
                "{message}; undone: the original deployment serves {} again",
                record.ip
            ),
        ))
    }

    /// Deletes the pinned Deployment of `record` and waits until its pods
    /// are gone and the address is free.
    async fn undo_pinned(
        &self,
        commit: &ComponentCommit,
        record: &PodCommitRecord,
    ) -> Result<(), StepError> {
        let project = Self::project(commit);
        let pinned = self
            .objects
            .get::<Deployment>(Some(project), &record.pinned_deployment)
            .await?;
        let Some(pinned) = pinned else {
            return Ok(());
        };
        let pods = self.objects.owned_pods(&pinned).await?;
        match self
            .objects
            .delete::<Deployment>(Some(project), &record.pinned_deployment, None)
            .await
        {
            Ok(_) | Err(ControlError::NotFound { .. }) => {}
            Err(err) => return Err(StepError::new("restore", &record.pod, err.to_string())),
        }
        let mut names = Vec::new();
        for pod in pods {
            let name = pod.metadata.name;
            match self
                .objects
                .request_pod_deletion(project, &name, PodDeletion::Graceful(None))
                .await
            {
                Ok(_) | Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(StepError::new("restore", &record.pod, err.to_string())),
            }
            names.push(name);
        }
        self.wait_released(project, &names, &record.ip)
            .await
            .map_err(|message| StepError::new("release", &record.pod, message))
    }

    /// Brings the original Deployment back to `replicas`, its new pod
    /// claiming the address of `record` (the only one of the component's
    /// addresses free), and waits until it runs there.
    async fn restore_original(
        &self,
        commit: &ComponentCommit,
        record: &PodCommitRecord,
        replicas: u32,
    ) -> Result<(), StepError> {
        let ips: Vec<&str> = commit.status.pods.iter().map(|r| r.ip.as_str()).collect();
        let original = self.hold(commit, replicas, Some(ips.join(","))).await?;
        self.wait_running(&original, &record.ip)
            .await
            .map_err(|message| StepError::new("restore", &record.pod, message))
    }

    /// Returns every address handed over to the original Deployment, one at
    /// a time, then lifts the hold and the candidate addresses.
    async fn roll_back(&self, commit: &ComponentCommit) -> Result<(), StepError> {
        let on_original =
            |c: &ComponentCommit| c.status.pods.iter().filter(|r| !r.handed_over).count() as u32;
        let mut current = commit.clone();
        while let Some(record) = current.status.pods.iter().find(|r| r.handed_over).cloned() {
            self.undo_pinned(&current, &record).await.map_err(|mut e| {
                e.step = "rollback";
                e
            })?;
            let replicas = on_original(&current) + 1;
            self.restore_original(&current, &record, replicas)
                .await
                .map_err(|mut e| {
                    e.step = "rollback";
                    e
                })?;
            self.record(&current, &record.pod, |r| r.handed_over = false)
                .await?;
            current = self
                .objects
                .require(commit.metadata.project.as_deref(), &commit.metadata.name)
                .await?;
        }
        // Pinned deployments a failed takeover left without a handover.
        for record in &current.status.pods {
            self.undo_pinned(&current, record).await?;
        }
        let project = Self::project(commit);
        let former = current.status.original_replicas;
        self.objects
            .modify::<Deployment>(Some(project), &commit.spec.deployment, |d| {
                let before = d.clone();
                let annotations = &mut d.metadata.annotations;
                annotations.remove(ANNOTATION_COMMIT_HOLD);
                annotations.remove(ANNOTATION_COMMIT_REPLICAS);
                annotations.remove(ANNOTATION_FIXED_IPS);
                if d.spec.replicas != former {
                    d.spec.replicas = former;
                    d.metadata.generation += 1;
                }
                *d != before
            })
            .await
            .map_err(|err| StepError {
                step: "rollback",
                pod: None,
                message: err.to_string(),
            })?;
        Ok(())
    }

    /// Waits until the pods `names` are gone and nobody holds `ip`.
    async fn wait_released(&self, project: &str, names: &[String], ip: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.timing.release;
        loop {
            let mut left = Vec::new();
            for name in names {
                let pod = self.objects.get::<Pod>(Some(project), name).await;
                let claim = self.objects.pod_ip_claim(project, name).await;
                if !matches!((pod, claim), (Ok(None), Ok(None))) {
                    left.push(name.as_str());
                }
            }
            let held = self.address_holder(ip).await;
            if left.is_empty() && held.is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{ip} was not released within {} s (still there: {}{})",
                    self.timing.release.as_secs(),
                    left.join(", "),
                    held.map(|h| format!(" held by {h}")).unwrap_or_default()
                ));
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// The pod holding `ip` in any pool, if one does.
    async fn address_holder(&self, ip: &str) -> Option<String> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        let claims = self
            .objects
            .store()
            .list_all(crate::ipam::POD_IPS, 1000)
            .await
            .ok()?;
        claims.iter().find_map(|kv| {
            let claim: wharf_api::IpClaim = serde_json::from_slice(&kv.value).ok()?;
            (claim.ip == ip).then(|| format!("{}/{}", claim.project, claim.pod))
        })
    }

    /// Waits until a pod of `deployment` runs on `ip` (and is ready, when
    /// its containers have readiness probes).
    async fn wait_running(&self, deployment: &Deployment, ip: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.timing.run;
        let project = deployment.metadata.project.as_deref().unwrap_or_default();
        let probed = deployment
            .spec
            .template
            .spec
            .containers
            .iter()
            .any(|c| c.readiness_probe.is_some());
        loop {
            let pods = self
                .objects
                .owned_pods(deployment)
                .await
                .unwrap_or_default();
            for pod in pods {
                let running = pod.status.phase == PodPhase::Running && (!probed || is_ready(&pod));
                if !running {
                    continue;
                }
                let claim = self
                    .objects
                    .pod_ip_claim(project, &pod.metadata.name)
                    .await
                    .ok()
                    .flatten();
                if claim.is_some_and(|c| c.ip.to_string() == ip && c.pod_uid == pod.metadata.uid) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no pod of {} ran on {ip} within {} s",
                    deployment.metadata.name,
                    self.timing.run.as_secs()
                ));
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }
}

#[cfg(test)]
#[path = "component_commit_tests.rs"]
mod tests;
