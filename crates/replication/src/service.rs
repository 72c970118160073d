//! The replication service: the facade the server uses over its parts
//! (the job queue, the executor, connections to endpoints, the event
//! intake and the probe), endpoint and policy definitions, and planning
//! runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wharf_oci::{RepositoryName, Tag};
use wharf_registry::http::EventSink;
use wharf_registry::{Origin, Registry};
use wharf_store::{Store, StoreExt};

use crate::ReplicationError;
use crate::access::{RegistryAccess, TagState};
use crate::connections::{Connection, Connections};
use crate::executor::Executor;
use crate::glob::Glob;
use crate::intake::EventIntake;
use crate::keys::{self, now_millis};
use crate::local::LocalRegistry;
use crate::model::{
    Direction, Endpoint, EndpointSpec, Filters, Job, JobDetail, JobSummary, Policy, State,
    TaskKind, TriggerKind, check_name,
};
use crate::probe::Probe;
use crate::queue::{JobQueue, TaskSpec};
use crate::remote::{RemoteOptions, RemoteRegistry};
use crate::secret::SecretBox;

/// Timings and sizes of replication.
#[derive(Clone, Debug)]
pub struct ReplicationOptions {
    /// How often every policy is compared with its destination and the
    /// differences copied (repairs what events missed).
    pub reconcile_interval: Duration,
    /// Tries per task before it fails.
    pub max_attempts: u32,
    /// First pause between tries; doubles up to `retry_cap`.
    pub retry_base: Duration,
    /// Longest pause between tries.
    pub retry_cap: Duration,
    /// Bytes per upload request of large blobs; a resumed copy repeats at
    /// most one chunk.
    pub chunk_size: u64,
    /// Tasks running at once over all policies.
    pub workers: usize,
    /// HTTP timeouts towards endpoints.
    pub remote: RemoteOptions,
    /// Finished jobs are kept this long.
    pub job_retention: Duration,
    /// How often an endpoint that stopped answering is asked again; once it
    /// answers, its policies are reconciled at once (not at the next pass)
    /// and tasks waiting to retry try again.
    pub probe_interval: Duration,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            reconcile_interval: Duration::from_secs(300),
            max_attempts: 6,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            chunk_size: 64 << 20,
            workers: 16,
            remote: RemoteOptions::default(),
            job_retention: Duration::from_secs(7 * 24 * 3600),
            probe_interval: Duration::from_secs(5),
        }
    }
}

/// Receives what replication reports for the audit log.
pub type ReportHook = Arc<dyn Fn(Report) + Send + Sync>;

/// Something replication did that belongs in the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Two writes met under one tag; the sentence says which won.
    Conflict(String),
    /// A job ended.
    JobFinished {
        /// The job id.
        job: String,
        /// Its policy.
        policy: String,
        /// Its final state.
        state: State,
        /// Its task counts, as a sentence.
        summary: String,
    },
}

/// Replication between this registry and others. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    pub(crate) inner: Arc<Inner>,
}

/// What the parts share, and the parts, each owning its own state.
pub(crate) struct Inner {
    /// Endpoint and policy definitions (the parts keep their own handles).
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub local: Arc<LocalRegistry>,
    pub options: ReplicationOptions,
    pub reports: Option<ReportHook>,
    /// Jobs and tasks in the store, live progress, the executor's wake-up.
    pub queue: JobQueue,
    /// Jobs running here, task slots, pacers, mount candidates.
    pub executor: Executor,
    /// Endpoint clients, credentials, destination projects.
    pub connections: Connections,
    /// Registry events waiting to be matched against policies.
    pub intake: EventIntake,
    /// Endpoints that stopped answering; reconciles waiting for a job.
    pub probe: Probe,
}

impl Replication {
    /// Replication for the registry `registry`, keeping its state in `store`
    /// and endpoint secrets sealed with `secrets`.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        secrets: SecretBox,
        options: ReplicationOptions,
    ) -> Replication {
        Replication {
            inner: Arc::new(Inner {
                local: Arc::new(LocalRegistry::new(registry.clone(), None)),
                registry,
                queue: JobQueue::new(store.clone()),
                executor: Executor::new(options.workers),
                connections: Connections::new(store.clone(), secrets, options.remote),
                intake: EventIntake::new(16 * 1024),
                probe: Probe::default(),
                store,
                options,
                reports: None,
            }),
        }
    }

    /// Calls `hook` with every conflict a copy meets and every job that
    /// ends (the server records them in the audit log). Set before sharing.
    pub fn with_reports(mut self, hook: ReportHook) -> Replication {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.reports = Some(hook);
        }
        self
    }

    /// Creates missing destination projects of pull policies with
    /// `creator`. Set before sharing.
    pub fn with_project_creator(mut self, creator: crate::local::ProjectCreator) -> Replication {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.local = Arc::new(LocalRegistry::new(inner.registry.clone(), Some(creator)));
        }
        self
    }

    /// The sink to give the registry's HTTP layer: pushes and deletes
    /// become event-triggered jobs.
    pub fn event_sink(&self) -> Arc<dyn EventSink> {
        self.inner.intake.sink()
    }

    /// This registry's instance id.
    pub fn instance(&self) -> &str {
        &self.inner.registry.config().instance
    }

    // ---- endpoints ----

    /// Adds an endpoint; its password is sealed before it is stored.
    pub async fn add_endpoint(&self, spec: EndpointSpec) -> Result<Endpoint, ReplicationError> {
        check_name("endpoint", &spec.name)?;
        let url = spec.url.trim_end_matches('/').to_string();
        // Validates the URL the same way copies will use it.
        RemoteRegistry::new(&spec.name, spec.kind, &url, None, self.inner.options.remote)?;
        if spec.password.is_some() && spec.username.is_none() {
            return Err(ReplicationError::Invalid(format!(
                "endpoint {}: a password needs a username",
                spec.name
            )));
        }
        let endpoint = Endpoint {
            sealed_password: spec
                .password
                .as_deref()
                .map(|p| self.inner.connections.seal(&spec.name, p)),
            name: spec.name,
            url,
            kind: spec.kind,
            username: spec.username,
            created_at: now_millis(),
        };
        let key = keys::endpoint(&endpoint.name);
        if self
            .inner
            .store
            .create(&key, keys::encode(&endpoint))
            .await?
            .is_none()
        {
            return Err(ReplicationError::Conflict(format!(
                "endpoint {} exists",
                endpoint.name
            )));
        }
        Ok(endpoint.redacted())
    }

    /// Every endpoint, secrets redacted.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, ReplicationError> {
        let items = self.inner.store.list_all(keys::ENDPOINTS, 500).await?;
        items
            .iter()
            .map(|kv| keys::decode::<Endpoint>(&kv.key, &kv.value).map(|e| e.redacted()))
            .collect()
    }

    /// Deletes an endpoint no policy uses.
    pub async fn delete_endpoint(&self, name: &str) -> Result<(), ReplicationError> {
        check_name("endpoint", name)?;
        if let Some(policy) = self.policies().await?.iter().find(|p| p.endpoint == name) {
            return Err(ReplicationError::Conflict(format!(
                "endpoint {name} is used by policy {}",
                policy.name
            )));
        }
        let key = keys::endpoint(name);
        let (kv, _) =
            keys::read::<Endpoint>(self.inner.store.as_ref(), &key, "endpoint", name).await?;
        self.inner.store.delete_if(&key, kv.mod_revision).await?;
        self.inner.connections.forget(name);
        Ok(())
    }

    /// Checks that an endpoint answers and accepts its credentials;
    /// returns its Wharf instance id, if it is a Wharf.
    pub async fn check_endpoint(&self, name: &str) -> Result<Option<String>, ReplicationError> {
        let connection = self.inner.connections.connect(name).await?;
        connection.client.instance().await
    }

    // ---- policies ----

    /// Creates a policy, or replaces the one of the same name if `replace`.
    pub async fn put_policy(
        &self,
        policy: Policy,
        replace: bool,
    ) -> Result<Policy, ReplicationError> {
        crate::model::validate(&policy)?;
        self.inner.connections.endpoint(&policy.endpoint).await?;
        let key = keys::policy(&policy.name);
        let stored = if replace {
            Some(self.inner.store.put(&key, keys::encode(&policy)).await?)
        } else {
            self.inner.store.create(&key, keys::encode(&policy)).await?
        };
        if stored.is_none() {
            return Err(ReplicationError::Conflict(format!(
                "policy {} exists",
                policy.name
            )));
        }
        Ok(policy)
    }

    /// Every policy.
    pub async fn policies(&self) -> Result<Vec<Policy>, ReplicationError> {
        let items = self.inner.store.list_all(keys::POLICIES, 500).await?;
        items
            .iter()
            .map(|kv| keys::decode(&kv.key, &kv.value))
            .collect()
    }

    /// One policy.
    pub async fn policy(&self, name: &str) -> Result<Policy, ReplicationError> {
        check_name("policy", name)?;
        let key = keys::policy(name);
        Ok(keys::read(self.inner.store.as_ref(), &key, "policy", name)
            .await?
            .1)
    }

    /// Deletes a policy; its unfinished jobs are cancelled.
    pub async fn delete_policy(&self, name: &str) -> Result<(), ReplicationError> {
        self.policy(name).await?;
        for job in self.inner.queue.active().await? {
            if job.policy == name {
                self.cancel_job(&job.id).await?;
            }
        }
        self.inner.store.delete(&keys::policy(name)).await?;
        Ok(())
    }

    /// The two sides of a policy's copies: (source, destination).
    pub(crate) fn sides(
        &self,
        policy: &Policy,
        connection: &Connection,
    ) -> (Arc<dyn RegistryAccess>, Arc<dyn RegistryAccess>) {
        let local: Arc<dyn RegistryAccess> = self.inner.local.clone();
        let remote: Arc<dyn RegistryAccess> = connection.client.clone();
        match policy.direction {
            Direction::Push => (local, remote),
            Direction::Pull => (remote, local),
        }
    }

    // ---- jobs ----

    /// Runs a policy now over everything its filters match.
    pub async fn run_policy(&self, name: &str) -> Result<Job, ReplicationError> {
        let policy = self.policy(name).await?;
        if !policy.enabled {
            return Err(ReplicationError::Conflict(format!(
                "policy {name} is disabled"
            )));
        }
        self.plan_and_create(&policy, TriggerKind::Manual)
            .await?
            .ok_or_else(|| ReplicationError::Internal("a manual run always creates a job".into()))
    }

    /// Plans a run (everything for manual and cron runs, only differences
    /// for reconcile passes) and creates its job; `None` when a reconcile
    /// pass finds nothing to do. A reconcile pass also weighs deletes: it
    /// copies no tag the destination deleted later than the tag was
    /// written, and (if the policy replicates deletions) deletes at the
    /// destination every tag the source deleted later than the
    /// destination's copy was written.
    pub(crate) async fn plan_and_create(
        &self,
        policy: &Policy,
        trigger: TriggerKind,
    ) -> Result<Option<Job>, ReplicationError> {
        let connection = self.inner.connections.connect(&policy.endpoint).await?;
        let (source, destination) = self.sides(policy, &connection);
        let destination_instance = match policy.direction {
            Direction::Push => Connections::instance_of(&connection).await?,
            Direction::Pull => Some(self.instance().to_string()),
        };
        let only_differences = trigger == TriggerKind::Reconcile;
        let deletes = if only_differences {
            Deletes::read(policy, source.as_ref(), destination.as_ref()).await?
        } else {
            Deletes::default()
        };
        let matcher = Matcher::new(&policy.filters);
        let mut repositories = source.repositories().await?;
        // A repository whose last manifest went leaves the catalog; its deleted tags count.
        for repo in deletes.at_source.keys() {
            if !repositories.contains(repo) {
                repositories.push(repo.clone());
            }
        }
        let mut specs = Vec::new();
        for repo in repositories {
            if !matcher.repository(&repo) {
                continue;
            }
            let destination_repo = policy.destination_of(&repo);
            let existing: HashMap<String, TagState> = if only_differences {
                // Before the lookup: a registry denies reads of a missing project.
                self.inner
                    .connections
                    .ensure_project(&policy.endpoint, destination.as_ref(), &destination_repo)
                    .await?;
                destination
                    .tags(&destination_repo)
                    .await?
                    .into_iter()
                    .map(|(t, s)| (t.to_string(), s))
                    .collect()
            } else {
                HashMap::new()
            };
            // What each tag points at (a HEAD per tag at a remote) only when
            // a difference or a label must be judged: tasks read their tag
            // again when they run.
            let tags: Vec<(Tag, Option<TagState>)> =
                if only_differences || policy.filters.label.is_some() {
                    let tags = source.tags(&repo).await?;
                    tags.into_iter().map(|(t, s)| (t, Some(s))).collect()
                } else {
                    let names = source.tag_names(&repo).await?;
                    names.into_iter().map(|t| (t, None)).collect()
                };
            for (tag, state) in tags {
                if !matcher.tag(&tag) {
                    continue;
                }
                if let Some(state) = &state {
                    if only_differences
                        && !differs(
                            state,
                            existing.get(tag.as_str()),
                            deletes.at_destination(&destination_repo, &tag),
                            destination_instance.as_deref(),
                            policy.override_existing,
                        )
                    {
                        continue;
                    }
                    if let Some(label) = &policy.filters.label
                        && !crate::labels::has_label(source.as_ref(), &repo, &state.digest, label)
                            .await?
                    {
                        continue;
                    }
                }
                specs.push(TaskSpec {
                    kind: TaskKind::Copy,
                    repository: repo.clone(),
                    reference: tag.to_string(),
                    destination: destination_repo.clone(),
                    origin: state.and_then(|s| s.origin).map(|o| o.to_header()),
                });
            }
            for (tag, deleted_by) in deletes.at_source.get(&repo).into_iter().flatten() {
                if matcher.tag(tag)
                    && existing
                        .get(tag.as_str())
                        .is_some_and(|current| delete_wins(deleted_by, current))
                {
                    specs.push(TaskSpec {
                        kind: TaskKind::Delete,
                        repository: repo.clone(),
                        reference: tag.to_string(),
                        destination: destination_repo.clone(),
                        origin: Some(deleted_by.to_header()),
                    });
                }
            }
        }
        if specs.is_empty() && only_differences {
            return Ok(None);
        }
        Ok(Some(self.inner.queue.create(policy, trigger, specs).await?))
    }

    /// Jobs, newest first, optionally of one policy.
    pub async fn jobs(
        &self,
        policy: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, ReplicationError> {
        self.inner.queue.list(policy, limit).await
    }

    /// A job with its tasks; running tasks show their live byte counts.
    pub async fn job(&self, id: &str) -> Result<JobDetail, ReplicationError> {
        self.inner.queue.detail(id).await
    }

    /// Stops a job: running copies end, pending tasks never start; the job
    /// ends `cancelled` once they have.
    pub async fn cancel_job(&self, id: &str) -> Result<Job, ReplicationError> {
        let (job, requested) = self.inner.queue.request_cancel(id).await?;
        if requested {
            self.inner.executor.cancel(id);
            self.inner.queue.wake();
        }
        Ok(job)
    }
}

/// A policy's filters with their patterns parsed once, for matching many
/// names. Patterns were checked with the policy; one that no longer parses
/// matches nothing.
pub(crate) struct Matcher<'a> {
    filters: &'a Filters,
    repository: Option<Result<Glob, String>>,
    tag: Option<Result<Glob, String>>,
}

impl<'a> Matcher<'a> {
    pub(crate) fn new(filters: &'a Filters) -> Matcher<'a> {
        Matcher {
            filters,
            repository: filters.repository.as_deref().map(Glob::parse),
            tag: filters.tag.as_deref().map(Glob::parse),
        }
    }

    pub(crate) fn repository(&self, repo: &RepositoryName) -> bool {
        let projects = &self.filters.projects;
        (projects.is_empty() || projects.iter().any(|p| p == repo.project()))
            && matches_glob(&self.repository, repo.as_str())
    }

    pub(crate) fn tag(&self, tag: &Tag) -> bool {
        matches_glob(&self.tag, tag.as_str())
    }
}

fn matches_glob(glob: &Option<Result<Glob, String>>, text: &str) -> bool {
    glob.as_ref()
        .is_none_or(|g| g.as_ref().is_ok_and(|g| g.matches(text)))
}

/// The deleted tags a reconcile pass weighs: the source's (to repeat at
/// the destination, when the policy replicates deletions) and the
/// destination's (which older copies must not undo).
#[derive(Default)]
pub(crate) struct Deletes {
    /// Per source repository: deleted tags and the origins of the deletes.
    pub at_source: HashMap<RepositoryName, Vec<(Tag, Origin)>>,
    /// Per destination `<repository>:<tag>`: the origin of its delete.
    pub at_destination: HashMap<String, Origin>,
}

impl Deletes {
    /// Reads both sides' tombstones (registries without origins keep none).
    async fn read(
        policy: &Policy,
        source: &dyn RegistryAccess,
        destination: &dyn RegistryAccess,
    ) -> Result<Deletes, ReplicationError> {
        let mut deletes = Deletes::default();
        if policy.replicate_deletion {
            for tombstone in source.tombstones().await? {
                deletes
                    .at_source
                    .entry(tombstone.repository)
                    .or_default()
                    .push((tombstone.tag, tombstone.origin));
            }
        }
        for tombstone in destination.tombstones().await? {
            let key = tombstone.cursor();
            deletes.at_destination.insert(key, tombstone.origin);
        }
        Ok(deletes)
    }

    /// The origin of the delete of `repo:tag` at the destination, if kept.
    fn at_destination(&self, repo: &RepositoryName, tag: &Tag) -> Option<&Origin> {
        self.at_destination.get(&format!("{repo}:{tag}"))
    }
}

/// Whether a reconcile pass should repeat a delete at a destination that
/// still holds the tag: the delete wins the origin rule over the write that
/// set the tag there. A registry without origins is never sent deletes by
/// reconcile passes (only by delete events), as before tombstones existed.
pub(crate) fn delete_wins(deleted_by: &Origin, destination: &TagState) -> bool {
    destination
        .origin
        .as_ref()
        .is_some_and(|current| deleted_by.wins_over(current))
}

/// Whether a reconcile pass should copy a tag: the destination lacks it or
/// holds another digest, unless the tag came from the destination, the
/// destination's write or delete wins the origin rule (then the copy would
/// lose, and the destination's own reconcile brings its version, or its
/// delete, here), or the policy does not override.
pub(crate) fn differs(
    source: &TagState,
    destination: Option<&TagState>,
    deleted_at_destination: Option<&Origin>,
    destination_instance: Option<&str>,
    override_existing: bool,
) -> bool {
    if let (Some(origin), Some(instance)) = (&source.origin, destination_instance)
        && origin.instance == instance
    {
        return false;
    }
    match destination {
        None => match (&source.origin, deleted_at_destination) {
            (Some(mine), Some(deleted_by)) => mine.wins_over(deleted_by),
            // Without origins (a plain registry as the source), digests decide.
            _ => true,
        },
        Some(d) if d.digest == source.digest || !override_existing => false,
        Some(d) => match (&source.origin, &d.origin) {
            (Some(mine), Some(theirs)) => mine.wins_over(theirs),
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(digest: &str, origin: Option<(&str, u64)>) -> TagState {
        TagState {
            digest: wharf_oci::Digest::of(wharf_oci::DigestAlgorithm::Sha256, digest.as_bytes()),
            origin: origin.map(|(i, at)| Origin::new(i, at).unwrap()),
        }
    }

    #[test]
    fn reconcile_copies_only_what_would_win() {
        let mine = state("x", Some(("a", 10)));
        assert!(differs(&mine, None, None, Some("b"), true));
        assert!(!differs(
            &mine,
            Some(&state("x", Some(("b", 99)))),
            None,
            Some("b"),
            true
        ));
        assert!(
            !differs(&state("x", Some(("b", 5))), None, None, Some("b"), true),
            "came from b"
        );
        assert!(differs(
            &mine,
            Some(&state("y", Some(("b", 9)))),
            None,
            Some("b"),
            true
        ));
        assert!(!differs(
            &mine,
            Some(&state("y", Some(("b", 11)))),
            None,
            Some("b"),
            true
        ));
        assert!(
            !differs(
                &mine,
                Some(&state("y", Some(("b", 9)))),
                None,
                Some("b"),
                false
            ),
            "no override"
        );
        // A registry without origins: digests decide, override permitting.
        assert!(differs(&mine, Some(&state("y", None)), None, None, true));
        assert!(!differs(&mine, Some(&state("y", None)), None, None, false));
    }

    #[test]
    fn reconcile_weighs_deletes_by_the_same_rule() {
        let write = state("x", Some(("b", 10)));
        // The destination deleted the tag after this write: no copy.
        let later = Origin::new("a", 11).unwrap();
        assert!(!differs(&write, None, Some(&later), Some("a"), true));
        // It deleted an older write: the newer one goes.
        let earlier = Origin::new("a", 9).unwrap();
        assert!(differs(&write, None, Some(&earlier), Some("a"), true));
        // Equal times: the greater instance id decides, both ways.
        let tie = Origin::new("a", 10).unwrap();
        assert!(differs(&write, None, Some(&tie), Some("a"), true));
        assert!(!differs(
            &state("x", Some(("a", 10))),
            None,
            Some(&Origin::new("b", 10).unwrap()),
            Some("c"),
            true
        ));
        // A source without origins (a plain registry): digests decide, as before.
        assert!(differs(
            &state("x", None),
            None,
            Some(&later),
            Some("a"),
            true
        ));

        // A source's delete goes where it beats the destination's write...
        assert!(delete_wins(&later, &write));
        assert!(!delete_wins(&earlier, &write), "a newer write stays");
        // ...and never to a registry without origins.
        assert!(!delete_wins(&later, &state("x", None)));
    }
}
