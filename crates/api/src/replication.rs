//! Replication's wire and record types: endpoints (other registries),
//! policies (what to copy where, when), and the jobs and tasks that carry
//! them out. The server stores and serves them, the CLI reads them; their
//! JSON is the stored records' format, so field names, defaults and skip
//! rules do not change. Validation that needs the pattern and schedule
//! parsers lives in `wharf-replication`.
//!
//! ```
//! use wharf_api::replication::{Direction, Policy};
//! let policy: Policy = serde_json::from_str(r#"{"name":"to-b","endpoint":"idc-b"}"#).unwrap();
//! assert_eq!(policy.direction, Direction::Push);
//! assert!(policy.override_existing && policy.enabled);
//! assert_eq!(policy.concurrency, 2);
//! ```

use serde::{Deserialize, Serialize};
use wharf_oci::RepositoryName;

/// What kind of registry an endpoint is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// Another Wharf: writes carry their origin, tags resolve conflicts by it.
    #[default]
    Wharf,
    /// Any OCI Distribution registry (docker-registry, Harbor, ...): copies
    /// skip equal digests and follow the policy's override flag.
    Registry,
}

/// Another registry, as the user describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    /// Unique name, e.g. `idc-b`.
    pub name: String,
    /// Base URL, e.g. `http://10.0.2.1:7700`.
    pub url: String,
    /// Wharf or another OCI registry.
    #[serde(default)]
    pub kind: EndpointKind,
    /// Account used at the endpoint (a robot account, typically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password or robot secret; stored encrypted, never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// An endpoint as stored and shown: the secret only in sealed form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Unique name.
    pub name: String,
    /// Base URL without trailing slash.
    pub url: String,
    /// Wharf or another OCI registry.
    pub kind: EndpointKind,
    /// Account used at the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password, encrypted with the server's replication key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_password: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at: u64,
}

impl Endpoint {
    /// The endpoint without its sealed secret, for API answers.
    pub fn redacted(&self) -> Endpoint {
        Endpoint {
            sealed_password: self.sealed_password.as_ref().map(|_| "<sealed>".into()),
            ..self.clone()
        }
    }
}

/// Which way a policy copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From this registry to the endpoint.
    #[default]
    Push,
    /// From the endpoint into this registry.
    Pull,
}

/// Which artifacts a policy copies. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filters {
    /// Projects (the first path component), exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Glob over the whole repository name: `*` within a path component,
    /// `**` across them, `?` one character, `{a,b}` alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Glob over the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `key=value` (or just `key`) that the manifest's annotations or the
    /// image config's labels must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// When a policy runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Triggers {
    /// On every push (and delete, if deletions replicate) in this registry
    /// that the filters match. Push policies only.
    #[serde(default)]
    pub on_event: bool,
    /// Cron schedule (`min hour day month weekday`, optional leading
    /// seconds), in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

/// What to copy, which way, when and how fast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Unique name.
    pub name: String,
    /// The other registry.
    pub endpoint: String,
    /// Push to it, or pull from it.
    #[serde(default)]
    pub direction: Direction,
    /// What to copy.
    #[serde(default)]
    pub filters: Filters,
    /// Replaces the project part of each name at the destination
    /// (`shop/web` with `mirror` becomes `mirror/web`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_namespace: Option<String>,
    /// When it runs besides `wharf replication run`.
    #[serde(default)]
    pub triggers: Triggers,
    /// Whether deleting a tag at the source deletes it at the destination.
    #[serde(default)]
    pub replicate_deletion: bool,
    /// Whether a different artifact under the same tag at the destination
    /// is overwritten (non-Wharf endpoints; Wharf peers follow the origin
    /// rule).
    #[serde(default = "yes")]
    pub override_existing: bool,
    /// Bytes per second for the whole policy (all its workers together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    /// Artifacts copied at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Disabled policies keep their definition but never run.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn default_concurrency() -> u32 {
    2
}

impl Policy {
    /// The destination name of a source repository.
    pub fn destination_of(&self, source: &RepositoryName) -> RepositoryName {
        match &self.dest_namespace {
            None => source.clone(),
            Some(ns) => {
                let rest = source
                    .as_str()
                    .split_once('/')
                    .map_or(source.as_str(), |(_, r)| r);
                format!("{ns}/{rest}")
                    .parse()
                    .unwrap_or_else(|_| source.clone())
            }
        }
    }
}

/// What started a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A push or delete in this registry.
    Event,
    /// `wharf replication run`.
    Manual,
    /// The policy's cron schedule.
    Cron,
    /// The periodic pass that repairs what events missed.
    Reconcile,
}

/// Where a job or task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for a worker.
    Pending,
    /// Being worked on (or interrupted by a restart, and resumed then).
    Running,
    /// Done.
    Succeeded,
    /// Nothing to do: the destination already had it, or kept its own
    /// (newer) artifact under the tag.
    Skipped,
    /// Gave up after retries.
    Failed,
    /// Stopped by a user.
    Cancelled,
}

impl State {
    /// Whether nothing more will happen.
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::Running)
    }
}

/// One run of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Time-ordered id.
    pub id: String,
    /// The policy it runs.
    pub policy: String,
    /// What started it.
    pub trigger: TriggerKind,
    /// Where it stands.
    pub state: State,
    /// Unix milliseconds.
    pub created_at: u64,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// How many tasks it has.
    pub tasks: u32,
    /// Why a failed job failed: the first failed task and its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A user asked to stop it; it ends `cancelled` once its running
    /// copies have stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
}

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Copy the artifact a tag names.
    Copy,
    /// Delete a tag at the destination.
    Delete,
}

/// Where an interrupted blob upload stands at the destination, so a retry
/// or a restarted server continues it instead of starting over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumePoint {
    /// The blob being copied.
    pub digest: String,
    /// The destination's upload session (its `Location`).
    pub session: String,
    /// Bytes the destination has acknowledged.
    pub offset: u64,
}

/// One artifact of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The job it belongs to.
    pub job: String,
    /// Position in the job.
    pub index: u32,
    /// Copy or delete.
    pub kind: TaskKind,
    /// Source repository.
    pub repository: String,
    /// Tag (or digest) at the source.
    pub reference: String,
    /// Destination repository.
    pub destination: String,
    /// The origin the source recorded for the tag (`instance; at=ms`), when
    /// the task was planned from an event or a listing that knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Where it stands.
    pub state: State,
    /// Tries so far.
    pub attempts: u32,
    /// Bytes of blobs and manifests the destination lacked.
    pub bytes_total: u64,
    /// Bytes sent so far.
    pub bytes_done: u64,
    /// Manifest digest copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Last error, or why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// An unfinished upload to continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumePoint>,
    /// When it last changed, unix milliseconds.
    pub updated_at: u64,
}

/// A job with its tasks, as `wharf replication jobs ID` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    /// The job.
    #[serde(flatten)]
    pub job: Job,
    /// Its tasks in order.
    pub task_list: Vec<Task>,
}

/// Counts of a job's tasks by state, and bytes moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Tasks succeeded.
    pub succeeded: u32,
    /// Tasks skipped.
    pub skipped: u32,
    /// Tasks failed.
    pub failed: u32,
    /// Tasks cancelled.
    pub cancelled: u32,
    /// Tasks not finished.
    pub remaining: u32,
    /// Bytes sent.
    pub bytes_done: u64,
}

impl Progress {
    /// Sums up `tasks`.
    pub fn of(tasks: &[Task]) -> Progress {
        let mut progress = Progress::default();
        for task in tasks {
            progress.bytes_done += task.bytes_done;
            match task.state {
                State::Succeeded => progress.succeeded += 1,
                State::Skipped => progress.skipped += 1,
                State::Failed => progress.failed += 1,
                State::Cancelled => progress.cancelled += 1,
                State::Pending | State::Running => progress.remaining += 1,
            }
        }
        progress
    }

    /// The job's final state once no task remains.
    pub fn final_state(&self) -> Option<State> {
        if self.remaining > 0 {
            return None;
        }
        Some(if self.cancelled > 0 {
            State::Cancelled
        } else if self.failed > 0 {
            State::Failed
        } else if self.succeeded == 0 && self.skipped > 0 {
            State::Skipped
        } else {
            State::Succeeded
        })
    }
}

/// A job with its counts, as listings show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// The job.
    #[serde(flatten)]
    pub job: Job,
    /// Its tasks by state.
    pub progress: Progress,
}

/// The answer to an endpoint check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCheck {
    /// Whether the endpoint answered and took its credentials.
    pub reachable: bool,
    /// Its Wharf instance id, if it is a Wharf.
    pub instance: Option<String>,
}

/// Wire names of the unit enums (what serde writes), for people to read.
macro_rules! wire_names {
    ($($ty:ident { $($variant:ident => $name:literal),+ $(,)? })+) => {$(
        impl $ty {
            /// The name it has on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

wire_names! {
    EndpointKind { Wharf => "wharf", Registry => "registry" }
    Direction { Push => "push", Pull => "pull" }
    TriggerKind { Event => "event", Manual => "manual", Cron => "cron", Reconcile => "reconcile" }
    State {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Skipped => "skipped",
        Failed => "failed",
        Cancelled => "cancelled",
    }
    TaskKind { Copy => "copy", Delete => "delete" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        serde_json::from_str(r#"{"name":"to-b","endpoint":"idc-b"}"#).unwrap()
    }

    #[test]
    fn namespace_mapping_replaces_the_project() {
        let mut p = policy();
        let src: RepositoryName = "shop/web/api".parse().unwrap();
        assert_eq!(p.destination_of(&src), src);
        p.dest_namespace = Some("mirror".into());
        assert_eq!(p.destination_of(&src).as_str(), "mirror/web/api");
        let single: RepositoryName = "web".parse().unwrap();
        assert_eq!(p.destination_of(&single).as_str(), "mirror/web");
    }

    #[test]
    fn final_state_prefers_cancel_then_failure() {
        let mut progress = Progress {
            succeeded: 1,
            failed: 1,
            ..Progress::default()
        };
        assert_eq!(progress.final_state(), Some(State::Failed));
        progress.cancelled = 1;
        assert_eq!(progress.final_state(), Some(State::Cancelled));
        progress.remaining = 1;
        assert_eq!(progress.final_state(), None);
        let skipped = Progress {
            skipped: 2,
            ..Progress::default()
        };
        assert_eq!(skipped.final_state(), Some(State::Skipped));
    }

    /// Each value displays as serde writes it.
    fn displayed_as_on_the_wire<T: Serialize + std::fmt::Display>(values: &[T]) {
        for value in values {
            let wire = serde_json::to_value(value).unwrap();
            assert_eq!(Some(value.to_string().as_str()), wire.as_str());
        }
    }

    #[test]
    fn display_names_are_the_wire_names() {
        displayed_as_on_the_wire(&[EndpointKind::Wharf, EndpointKind::Registry]);
        displayed_as_on_the_wire(&[Direction::Push, Direction::Pull]);
        displayed_as_on_the_wire(&[
            TriggerKind::Event,
            TriggerKind::Manual,
            TriggerKind::Cron,
            TriggerKind::Reconcile,
        ]);
        displayed_as_on_the_wire(&[
            State::Pending,
            State::Running,
            State::Succeeded,
            State::Skipped,
            State::Failed,
            State::Cancelled,
        ]);
        displayed_as_on_the_wire(&[TaskKind::Copy, TaskKind::Delete]);
    }

    #[test]
    fn records_keep_their_json() {
        let job = Job {
            id: "1".into(),
            policy: "p".into(),
            trigger: TriggerKind::Manual,
            state: State::Running,
            created_at: 5,
            finished_at: None,
            tasks: 1,
            error: None,
            cancel_requested: false,
        };
        assert_eq!(
            serde_json::to_string(&job).unwrap(),
            r#"{"id":"1","policy":"p","trigger":"manual","state":"running","createdAt":5,"tasks":1}"#
        );
        assert_eq!(
            serde_json::to_string(&policy()).unwrap(),
            r#"{"name":"to-b","endpoint":"idc-b","direction":"push","filters":{},"triggers":{"onEvent":false},"replicateDeletion":false,"overrideExisting":true,"concurrency":2,"enabled":true}"#
        );
    }
}
