//! The component flow (`wharf commit deployment NAME`): every pod of a
//! Deployment committed to its own image, the seed's index of images and
//! addresses, one pinned single-pod Deployment per address, the takeover
//! and the rollback. A `ComponentCommit` (one per Deployment, named after
//! it) records the flow step by step, so a new leader resumes it and the
//! CLI shows it.
//!
//! The seed names images `registry/app-component-ip:tag`; in Wharf the app
//! is the project and the component the Deployment:
//!
//! ```
//! use wharf_api::component_commit::{commit_image, pinned_deployment_name};
//! let ip = "10.92.0.5".parse().unwrap();
//! assert_eq!(
//!     commit_image("shop", "web", ip, "20261207").unwrap(),
//!     "shop/shop-web-10.92.0.5:20261207"
//! );
//! assert_eq!(pinned_deployment_name("web", ip).unwrap(), "web-10-92-0-5");
//! assert!(commit_image("shop", "web", ip, "not a tag").is_err());
//! ```

use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wharf_oci::{RepositoryName, Tag};

use crate::meta::{ObjectMeta, check_name};

/// Annotation on the original Deployment while a flow hands its pods over
/// or back: the deployment controller then makes pods but deletes none, so
/// only the flow decides which pod goes. The value names the flow.
pub const ANNOTATION_COMMIT_HOLD: &str = "wharf.io/commit-hold";
/// Annotation on the original Deployment: its replica count before the
/// takeover, which the rollback restores.
pub const ANNOTATION_COMMIT_REPLICAS: &str = "wharf.io/commit-replicas";
/// Annotation on a pinned Deployment: the Deployment it was committed from.
pub const ANNOTATION_COMMITTED_FROM: &str = "wharf.io/committed-from";
/// The tag suffix of a pinned Deployment's spec artifact, after the image's tag.
pub const SPEC_TAG_SUFFIX: &str = ".deployment";
/// `artifactType` of a pinned Deployment's spec in the registry.
pub const SPEC_ARTIFACT_TYPE: &str = "application/vnd.wharf.deployment.v1+yaml";

/// `POST /api/v1/projects/{p}/deployments/{name}/commit`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentCommitRequest {
    /// The images' tag; today's UTC date (`YYYYMMDD`) when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The container committed in each pod; the template's first when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A Deployment's commit: what was asked and how far it got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentCommit {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `ComponentCommit`.
    #[serde(default = "component_commit_kind")]
    pub kind: String,
    /// Name (the Deployment's) and project.
    pub metadata: ObjectMeta,
    /// What was asked.
    pub spec: ComponentCommitSpec,
    /// How far it got, pod by pod.
    #[serde(default)]
    pub status: ComponentCommitStatus,
}

fn wharf_v1() -> String {
    "wharf.io/v1".into()
}

fn component_commit_kind() -> String {
    "ComponentCommit".into()
}

/// What a component commit was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentCommitSpec {
    /// The Deployment (the component).
    pub deployment: String,
    /// The images' tag.
    pub tag: String,
    /// The container committed in each pod.
    pub container: String,
    /// The account that asked: pushes are made on its behalf.
    pub requested_by: String,
    /// Set by `wharf commit rollback`: return to the original Deployment.
    #[serde(default)]
    pub rollback: bool,
}

/// Where a component commit is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CommitPhase {
    /// Accepted; the leader has not started.
    #[default]
    Pending,
    /// Committing pods, recording the index, labels and specs.
    Committing,
    /// Handing the addresses over to the pinned Deployments, one at a time.
    TakingOver,
    /// Every address is served by its pinned Deployment; the original is at 0.
    Done,
    /// Handing the addresses back to the original Deployment.
    RollingBack,
    /// The original Deployment serves every address again.
    RolledBack,
    /// Stopped at `status.failure`; every pod runs its original or its committed image.
    Failed,
}

impl CommitPhase {
    /// Whether the flow has work left (the leader drives it).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            CommitPhase::Pending
                | CommitPhase::Committing
                | CommitPhase::TakingOver
                | CommitPhase::RollingBack
        )
    }
}

/// The flow's record of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCommitRecord {
    /// The original pod.
    pub pod: String,
    /// Its address (from its pool), kept by the pinned pod.
    pub ip: String,
    /// The image it is committed to, `project/repository:tag`.
    pub image: String,
    /// The pinned Deployment that takes the address over.
    pub pinned_deployment: String,
    /// The committed image's manifest digest, once pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether `/commiter/ips/<image>` holds the address.
    #[serde(default)]
    pub indexed: bool,
    /// Whether the pod carries the `ip` label.
    #[serde(default)]
    pub labelled: bool,
    /// The pinned Deployment's spec in the registry (manifest digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_artifact: Option<String>,
    /// Whether the pinned Deployment serves the address (a rollback clears it).
    #[serde(default)]
    pub handed_over: bool,
}

/// A step that failed, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitFailureRecord {
    /// `check`, `commit`, `index`, `label`, `spec`, `hold`, `stop`,
    /// `release`, `takeover`, `restore`, `rollback`.
    pub step: String,
    /// The pod it failed on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// How far a component commit got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentCommitStatus {
    /// Where the flow is.
    #[serde(default)]
    pub phase: CommitPhase,
    /// One record per pod of the Deployment when the flow started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodCommitRecord>,
    /// The original Deployment's replica count before the takeover.
    #[serde(default)]
    pub original_replicas: u32,
    /// The step that stopped the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<CommitFailureRecord>,
    /// What the flow is doing now, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One entry of the index `/commiter/ips/<image> = <ip>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitIndexEntry {
    /// The committed image, `project/repository:tag`.
    pub image: String,
    /// The address the pod had.
    pub ip: String,
}

/// A pinned Deployment's spec as stored in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitSpecArtifact {
    /// The committed image the spec is attached to (its subject).
    pub image: String,
    /// The address it pins.
    pub ip: String,
    /// The artifact, `project/repository:<tag>.deployment`.
    pub reference: String,
    /// The artifact manifest's digest.
    pub digest: String,
    /// The Deployment, as YAML.
    pub yaml: String,
}

/// Why a generated name cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {name:?} is not valid: {reason}")]
pub struct CommitNameError {
    /// Which name (`image`, `tag`, `pinned deployment`).
    pub what: &'static str,
    /// The generated name.
    pub name: String,
    /// The rule it breaks.
    pub reason: String,
}

/// The image a pod of `deployment` at `ip` is committed to:
/// `project/<project>-<deployment>-<ip>:<tag>`, checked against the
/// registry's name and tag grammar and limits (also for the spec artifact's
/// tag, `<tag>.deployment`).
pub fn commit_image(
    project: &str,
    deployment: &str,
    ip: Ipv4Addr,
    tag: &str,
) -> Result<String, CommitNameError> {
    let repository = format!("{project}/{project}-{deployment}-{ip}");
    repository
        .parse::<RepositoryName>()
        .map_err(|err| CommitNameError {
            what: "image",
            name: repository.clone(),
            reason: err.to_string(),
        })?;
    for tag in [tag.to_string(), format!("{tag}{SPEC_TAG_SUFFIX}")] {
        tag.parse::<Tag>().map_err(|err| CommitNameError {
            what: "tag",
            name: tag.clone(),
            reason: err.to_string(),
        })?;
    }
    Ok(format!("{repository}:{tag}"))
}

/// The pinned Deployment of the pod at `ip`: `<deployment>-<ip with dots as
/// dashes>`, checked as an object name.
pub fn pinned_deployment_name(deployment: &str, ip: Ipv4Addr) -> Result<String, CommitNameError> {
    let name = format!("{deployment}-{}", ip.to_string().replace('.', "-"));
    check_name("metadata.name", &name).map_err(|err| CommitNameError {
        what: "pinned deployment",
        name: name.clone(),
        reason: err.to_string(),
    })?;
    Ok(name)
}

/// A Deployment as the YAML stored in the registry (and applied again
/// as is by `wharf apply`).
pub fn deployment_yaml(deployment: &crate::Deployment) -> String {
    serde_norway::to_string(deployment).expect("deployments serialize")
}

/// Splits `project/repository:tag` into the repository and the tag.
pub fn split_image(image: &str) -> Option<(&str, &str)> {
    let (repository, tag) = image.rsplit_once(':')?;
    (!tag.contains('/')).then_some((repository, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_too_long_once_the_address_is_added_are_refused() {
        let ip: Ipv4Addr = "192.168.100.200".parse().unwrap();
        let long = "a".repeat(50);
        let err = pinned_deployment_name(&long, ip).unwrap_err();
        assert_eq!(err.what, "pinned deployment");
        assert!(err.to_string().contains("1-63"), "{err}");
        assert!(commit_image("shop", &long, ip, "20261207").is_ok());
        let err = commit_image("shop", "web", ip, &"1".repeat(120)).unwrap_err();
        assert_eq!(err.what, "tag", "the spec's tag would pass 128: {err}");
        assert_eq!(
            split_image("shop/shop-web-10.0.0.1:20261207"),
            Some(("shop/shop-web-10.0.0.1", "20261207"))
        );
    }

    #[test]
    fn phases_and_records_round_trip() {
        let commit = ComponentCommit {
            api_version: wharf_v1(),
            kind: component_commit_kind(),
            metadata: ObjectMeta {
                name: "web".into(),
                ..Default::default()
            },
            spec: ComponentCommitSpec {
                deployment: "web".into(),
                tag: "20261207".into(),
                container: "main".into(),
                requested_by: "alice".into(),
                rollback: false,
            },
            status: ComponentCommitStatus {
                phase: CommitPhase::Failed,
                failure: Some(CommitFailureRecord {
                    step: "commit".into(),
                    pod: Some("web-1".into()),
                    message: "push refused".into(),
                }),
                ..Default::default()
            },
        };
        let text = serde_json::to_string(&commit).unwrap();
        assert!(text.contains(r#""phase":"Failed""#), "{text}");
        let back: ComponentCommit = serde_json::from_str(&text).unwrap();
        assert_eq!(back, commit);
        assert!(!CommitPhase::Failed.is_active());
        assert!(CommitPhase::RollingBack.is_active());
    }
}
