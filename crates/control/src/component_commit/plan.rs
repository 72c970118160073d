//! The API side of the component flow: the checks made before anything
//! runs, the `ComponentCommit` recorded for the leader, the rollback
//! request, the index, and the pinned Deployment generated per address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use wharf_api::commit::{COMMIT_IPS_PREFIX, LABEL_COMMIT_IP};
use wharf_api::component_commit::{
    ANNOTATION_COMMIT_HOLD, ANNOTATION_COMMIT_REPLICAS, ANNOTATION_COMMITTED_FROM,
    CommitIndexEntry, CommitPhase, ComponentCommit, ComponentCommitRequest, ComponentCommitSpec,
    ComponentCommitStatus, PodCommitRecord, commit_image, pinned_deployment_name,
};
use wharf_api::{
    ANNOTATION_FIXED_IP, ANNOTATION_FIXED_IPS, ANNOTATION_REVISION, Deployment,
    HorizontalPodAutoscaler, Node, ObjectError, ObjectMeta, Pod, PodPhase,
};
use wharf_store::StoreExt;

use super::default_commit_tag;
use crate::ControlError;
use crate::objects::Objects;

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
        // An autoscaler would add pods to the original while its pods are
        // handed over one by one.
        let (autoscalers, _) = self
            .list::<HorizontalPodAutoscaler>(Some(project), None)
            .await?;
        if let Some(hpa) = autoscalers
            .iter()
            .find(|h| h.spec.scale_target_ref.name == name)
        {
            return Err(ControlError::Conflict(format!(
                "deployment {project}/{name} is scaled by HorizontalPodAutoscaler {}; delete it before committing",
                hpa.metadata.name
            )));
        }
        if deployment
            .metadata
            .annotations
            .contains_key(ANNOTATION_COMMIT_HOLD)
        {
            return Err(ControlError::Conflict(format!(
                "deployment {project}/{name} is held by a commit that stopped; roll it back first (wharf commit rollback)"
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
    pub(super) async fn owned_pods(
        &self,
        deployment: &Deployment,
    ) -> Result<Vec<Pod>, ControlError> {
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
