//! The leader's side of the component flow: each active
//! `ComponentCommit` driven step by step, its status written after each.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use wharf_api::commit::LABEL_COMMIT_IP;
use wharf_api::component_commit::{
    ANNOTATION_COMMIT_HOLD, ANNOTATION_COMMIT_REPLICAS, CommitFailureRecord, CommitPhase,
    ComponentCommit, PodCommitRecord, deployment_yaml,
};
use wharf_api::{ANNOTATION_FIXED_IPS, Deployment, EventType, ObjectReference, Pod, PodPhase};
use wharf_store::StoreExt;

use crate::ControlError;
use crate::deployments::is_ready;
use crate::events::EventRecorder;
use crate::objects::{Change, Objects};
use crate::termination::PodDeletion;

use super::plan::pinned_deployment;
use super::{CommitFailure, FlowTiming, PodCommitter, SpecStore, commit_index_key};

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

impl CommitFailure {
    /// The flow's `step` failed on `pod` because this commit step did.
    fn at(self, step: &'static str, pod: &str) -> StepError {
        StepError::new(
            step,
            pod,
            format!("{} (commit step {})", self.message, self.step),
        )
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

/// Runs the component flows, on the leader only: each active
/// `ComponentCommit` is driven by one task, step by step, its progress
/// written to its status.
pub struct CommitFlowController {
    objects: Objects,
    committer: Arc<dyn PodCommitter>,
    specs: Arc<dyn SpecStore>,
    timing: FlowTiming,
    running: Mutex<HashSet<(String, String)>>,
    /// Events on the original Deployment (`wharf describe` shows them).
    events: EventRecorder,
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
            events: EventRecorder::new(objects.clone(), "component-commit"),
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
            let original = self
                .objects
                .get::<Deployment>(Some(project), &commit.spec.deployment)
                .await?;
            let reference = ObjectReference {
                kind: "Deployment".into(),
                project: Some(project.to_string()),
                name: commit.spec.deployment.clone(),
                uid: original.map(|d| d.metadata.uid).unwrap_or_default(),
            };
            match outcome {
                Ok((next, message)) => {
                    self.set_phase(project, name, next, message).await?;
                    let reason = match next {
                        CommitPhase::Done => "CommitTakenOver",
                        CommitPhase::RolledBack => "CommitRolledBack",
                        _ => "CommitProgressing",
                    };
                    self.events
                        .record(&reference, EventType::Normal, reason, message)
                        .await;
                }
                Err(failure) if failure.step == "store" => {
                    return Err(ControlError::Internal(failure.message));
                }
                Err(failure) => {
                    let message = format!(
                        "stopped at step {}{}: {}",
                        failure.step,
                        failure
                            .pod
                            .as_ref()
                            .map(|p| format!(" (pod {p})"))
                            .unwrap_or_default(),
                        failure.message
                    );
                    self.fail(project, name, failure).await?;
                    self.events
                        .record(&reference, EventType::Warning, "CommitFailed", &message)
                        .await;
                }
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
        // A flow resumed after its first commit passed these checks then.
        if commit.status.pods.iter().all(|r| r.digest.is_none()) {
            self.check_all(commit).await?;
        }
        for record in &commit.status.pods {
            let pod_name = record.pod.as_str();
            let digest = match &record.digest {
                Some(digest) => digest.clone(),
                None => {
                    let pod = self.running_pod(project, pod_name).await?;
                    let result = self
                        .committer
                        .commit(
                            &pod,
                            &commit.spec.container,
                            &record.image,
                            &commit.spec.requested_by,
                        )
                        .await
                        .map_err(|f| f.at("commit", pod_name))?;
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

    /// Pod `name`, which must still run.
    async fn running_pod(&self, project: &str, name: &str) -> Result<Pod, StepError> {
        let pod: Option<Pod> = self.objects.get(Some(project), name).await?;
        pod.filter(|p| p.status.phase == PodPhase::Running)
            .ok_or_else(|| StepError::new("check", name, "the pod no longer runs"))
    }

    /// Checks every pod's commit and that the project's quota holds all
    /// the snapshots, before the first pod is paused.
    async fn check_all(&self, commit: &ComponentCommit) -> Result<(), StepError> {
        let project = Self::project(commit);
        let (mut total, mut remaining) = (0u64, None::<u64>);
        for record in &commit.status.pods {
            let pod_name = record.pod.as_str();
            let pod = self.running_pod(project, pod_name).await?;
            let measured = self
                .committer
                .check(
                    &pod,
                    &commit.spec.container,
                    &record.image,
                    &commit.spec.requested_by,
                )
                .await
                .map_err(|f| f.at("check", pod_name))?;
            total = total.saturating_add(measured.bytes);
            remaining = match (remaining, measured.quota_remaining_bytes) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(remaining) = remaining
            && total > remaining
        {
            return Err(StepError {
                step: "check",
                pod: None,
                message: format!(
                    "the {} snapshots hold {total} bytes of changes; project {project}'s quota leaves {remaining} bytes",
                    commit.status.pods.len()
                ),
            });
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
