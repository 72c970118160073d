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

mod flow;
mod plan;

pub use flow::CommitFlowController;
pub use plan::pinned_deployment;

use std::time::Duration;

use async_trait::async_trait;
use wharf_api::Pod;
use wharf_api::commit::{COMMIT_IPS_PREFIX, CommitResult};

/// Why one pod's commit failed, and at which of its steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitFailure {
    /// The commit's step (`check`, `pause`, `snapshot`, `push`, ...).
    pub step: String,
    /// What went wrong.
    pub message: String,
}

/// A pod's changes as its node measured them, nothing paused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeasuredChanges {
    /// Bytes of changed file content.
    pub bytes: u64,
    /// What the target project may still store, when it has a quota.
    pub quota_remaining_bytes: Option<u64>,
}

/// Commits one container of a running pod to an image and pushes it: what
/// `wharf commit POD` does, on behalf of the account that asked.
#[async_trait]
pub trait PodCommitter: Send + Sync {
    /// Every check a commit of `container` of `pod` to `image` makes (the
    /// node's included), and the changes measured; nothing is paused,
    /// written or pushed. The flow checks every pod so before the first
    /// commit, so a refusal (no overlay root, a quota too small for all
    /// the snapshots) comes before anything is paused.
    async fn check(
        &self,
        pod: &Pod,
        container: &str,
        image: &str,
        on_behalf_of: &str,
    ) -> Result<MeasuredChanges, CommitFailure>;

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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
