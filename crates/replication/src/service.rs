//! The replication service: endpoint and policy definitions, job creation
//! and queries. [`crate::executor`] runs the jobs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use wharf_distribution::RegistryCredentials;
use wharf_oci::{RepositoryName, Tag};
use wharf_registry::http::{EventSink, RegistryEvent};
use wharf_registry::{Origin, Registry};
use wharf_store::{Store, StoreExt, Txn};

use crate::ReplicationError;
use crate::access::{RegistryAccess, TagState};
use crate::glob::Glob;
use crate::keys::{self, now_millis};
use crate::limit::RateLimit;
use crate::local::LocalRegistry;
use crate::model::{
    Direction, Endpoint, EndpointKind, EndpointSpec, Filters, Job, JobDetail, Policy, Progress,
    State, Task, TaskKind, TriggerKind, check_name,
};
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

/// A job with its counts, as listings show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// The job.
    #[serde(flatten)]
    pub job: Job,
    /// Its tasks by state.
    pub progress: Progress,
}

/// Something to create a task for.
#[derive(Clone, Debug)]
pub(crate) struct TaskSpec {
    pub kind: TaskKind,
    pub repository: RepositoryName,
    pub reference: String,
    pub destination: RepositoryName,
    pub origin: Option<String>,
}

/// Bytes sent and bytes planned of a running task, counted by its copy as
/// it goes and read by job queries between saves.
#[derive(Default)]
pub(crate) struct LiveProgress {
    pub sent: Arc<AtomicU64>,
    pub total: Arc<AtomicU64>,
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

impl LiveProgress {
    /// Raises the task's byte counts to what the copy has counted.
    pub(crate) fn copy_into(&self, task: &mut Task) {
        task.bytes_done = task.bytes_done.max(self.sent.load(Ordering::Relaxed));
        task.bytes_total = task.bytes_total.max(self.total.load(Ordering::Relaxed));
    }
}

/// A connected endpoint: the client and, for Wharf peers, its instance id
/// once learned.
pub(crate) struct Connection {
    pub endpoint: Endpoint,
    pub client: Arc<RemoteRegistry>,
    pub instance: tokio::sync::OnceCell<Option<String>>,
}

/// Replication between this registry and others. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub local: Arc<LocalRegistry>,
    pub secrets: SecretBox,
    pub options: ReplicationOptions,
    pub events: mpsc::Sender<RegistryEvent>,
    pub event_queue: tokio::sync::Mutex<mpsc::Receiver<RegistryEvent>>,
    /// Wakes the executor: a job was created or cancelled.
    pub wake: Notify,
    /// Jobs this process is running, and how to stop them.
    pub running: Mutex<HashMap<String, CancellationToken>>,
    /// Bytes sent and planned per running task, for live progress.
    pub live: Mutex<HashMap<(String, u32), Arc<LiveProgress>>>,
    pub limits: Mutex<HashMap<String, (u64, Arc<RateLimit>)>>,
    pub slots: Mutex<HashMap<String, (u64, Arc<Semaphore>)>>,
    pub connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// Destination repositories written lately per endpoint: where a blob
    /// may already be, to mount instead of upload.
    pub recent: Mutex<HashMap<String, VecDeque<RepositoryName>>>,
    pub workers: Arc<Semaphore>,
    /// Destination projects known to exist, per endpoint.
    pub projects: Mutex<HashSet<(String, String)>>,
    pub sequence: AtomicU64,
    pub reports: Option<ReportHook>,
    /// Endpoints that stopped answering, asked again every `probe_interval`.
    pub unreachable: Mutex<HashSet<String>>,
    /// Policies to reconcile as soon as their unfinished job ends (their
    /// endpoint came back while the job was running).
    pub deferred: Mutex<HashSet<String>>,
    /// Wakes tasks waiting to retry: an endpoint answers again.
    pub recovered: Notify,
}

/// Registry events go to the replication queue; never blocks.
struct EventQueue(mpsc::Sender<RegistryEvent>);

impl EventSink for EventQueue {
    fn record(&self, event: RegistryEvent) {
        if matches!(event.kind, wharf_registry::http::EventKind::Pull) {
            return;
        }
        if self.0.try_send(event).is_err() {
            // The reconcile pass repairs what a full queue dropped.
            tracing::warn!("replication event queue full; the next reconcile pass catches up");
        }
    }
}

/// The object a policy's tasks share (pacer, slots), made anew when the
/// setting it was made for changes.
fn shared_per_policy<T>(
    map: &Mutex<HashMap<String, (u64, Arc<T>)>>,
    policy: &Policy,
    setting: u64,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    match map.get(&policy.name) {
        Some((made_for, shared)) if *made_for == setting => shared.clone(),
        _ => {
            let shared = Arc::new(make());
            map.insert(policy.name.clone(), (setting, shared.clone()));
            shared
        }
    }
}

fn puts(txn: Txn, items: &[(String, Vec<u8>)]) -> Txn {
    items
        .iter()
        .fold(txn, |txn, (key, value)| txn.put(key.clone(), value.clone()))
}

fn not_found(kind: &'static str, name: &str) -> ReplicationError {
    ReplicationError::NotFound {
        kind,
        name: name.to_string(),
    }
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
        let (events, queue) = mpsc::channel(16 * 1024);
        Replication {
            inner: Arc::new(Inner {
                store,
                local: Arc::new(LocalRegistry::new(registry.clone(), None)),
                registry,
                secrets,
                workers: Arc::new(Semaphore::new(options.workers.max(1))),
                options,
                events,
                event_queue: tokio::sync::Mutex::new(queue),
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                limits: Mutex::new(HashMap::new()),
                slots: Mutex::new(HashMap::new()),
                connections: Mutex::new(HashMap::new()),
                recent: Mutex::new(HashMap::new()),
                projects: Mutex::new(HashSet::new()),
                sequence: AtomicU64::new(0),
                reports: None,
                unreachable: Mutex::new(HashSet::new()),
                deferred: Mutex::new(HashSet::new()),
                recovered: Notify::new(),
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
        Arc::new(EventQueue(self.inner.events.clone()))
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
                .map(|p| self.inner.secrets.seal(&spec.name, p)),
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

    pub(crate) async fn endpoint(&self, name: &str) -> Result<Endpoint, ReplicationError> {
        Ok(self
            .record(&keys::endpoint(name), "endpoint", name)
            .await?
            .1)
    }

    /// A stored record and its key-value, or `NotFound` naming `kind` and `name`.
    pub(crate) async fn record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        kind: &'static str,
        name: &str,
    ) -> Result<(wharf_store::KeyValue, T), ReplicationError> {
        let kv = self
            .inner
            .store
            .get(key)
            .await?
            .ok_or_else(|| not_found(kind, name))?;
        let value = keys::decode(key, &kv.value)?;
        Ok((kv, value))
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
        let (kv, _) = self.record::<Endpoint>(&key, "endpoint", name).await?;
        self.inner.store.delete_if(&key, kv.mod_revision).await?;
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    /// Checks that an endpoint answers and accepts its credentials;
    /// returns its Wharf instance id, if it is a Wharf.
    pub async fn check_endpoint(&self, name: &str) -> Result<Option<String>, ReplicationError> {
        let connection = self.connect(name).await?;
        connection.client.instance().await
    }

    /// The client for an endpoint, built once per definition.
    pub(crate) async fn connect(&self, name: &str) -> Result<Arc<Connection>, ReplicationError> {
        let endpoint = self.endpoint(name).await?;
        {
            let connections = self
                .inner
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(c) = connections.get(name)
                && c.endpoint == endpoint
            {
                return Ok(c.clone());
            }
        }
        let credentials = match (&endpoint.username, &endpoint.sealed_password) {
            (Some(user), Some(sealed)) => Some(RegistryCredentials::new(
                user.clone(),
                self.inner.secrets.open(&endpoint.name, sealed)?,
            )),
            _ => None,
        };
        let client = Arc::new(RemoteRegistry::new(
            &endpoint.name,
            endpoint.kind,
            &endpoint.url,
            credentials,
            self.inner.options.remote,
        )?);
        let connection = Arc::new(Connection {
            endpoint,
            client,
            instance: tokio::sync::OnceCell::new(),
        });
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), connection.clone());
        Ok(connection)
    }

    /// The endpoint's instance id, asked once per connection.
    pub(crate) async fn instance_of(
        &self,
        connection: &Connection,
    ) -> Result<Option<String>, ReplicationError> {
        if connection.endpoint.kind != EndpointKind::Wharf {
            return Ok(None);
        }
        connection
            .instance
            .get_or_try_init(|| connection.client.instance())
            .await
            .cloned()
    }

    // ---- policies ----

    /// Creates a policy, or replaces the one of the same name if `replace`.
    pub async fn put_policy(
        &self,
        policy: Policy,
        replace: bool,
    ) -> Result<Policy, ReplicationError> {
        policy.validate()?;
        self.endpoint(&policy.endpoint).await?;
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
        Ok(self.record(&keys::policy(name), "policy", name).await?.1)
    }

    /// Deletes a policy; its unfinished jobs are cancelled.
    pub async fn delete_policy(&self, name: &str) -> Result<(), ReplicationError> {
        self.policy(name).await?;
        for job in self.active_jobs().await? {
            if job.policy == name {
                self.cancel_job(&job.id).await?;
            }
        }
        self.inner.store.delete(&keys::policy(name)).await?;
        Ok(())
    }

    /// The policy's shared pacer, if it has a limit. A changed limit takes
    /// effect for the next task.
    pub(crate) fn limit_of(&self, policy: &Policy) -> Option<Arc<RateLimit>> {
        let rate = policy.bandwidth_limit?;
        Some(shared_per_policy(&self.inner.limits, policy, rate, || {
            RateLimit::new(rate)
        }))
    }

    /// The policy's concurrency slots; a changed concurrency takes effect
    /// for the next task.
    pub(crate) fn slots_of(&self, policy: &Policy) -> Arc<Semaphore> {
        let slots = policy.concurrency;
        shared_per_policy(&self.inner.slots, policy, u64::from(slots), || {
            Semaphore::new(slots as usize)
        })
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
        let connection = self.connect(&policy.endpoint).await?;
        let (source, destination) = self.sides(policy, &connection);
        let destination_instance = match policy.direction {
            Direction::Push => self.instance_of(&connection).await?,
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
                self.ensure_project(&policy.endpoint, destination.as_ref(), &destination_repo)
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
        Ok(Some(self.create_job(policy, trigger, specs).await?))
    }

    /// Writes a job and its tasks, then marks it active for the executor.
    pub(crate) async fn create_job(
        &self,
        policy: &Policy,
        trigger: TriggerKind,
        specs: Vec<TaskSpec>,
    ) -> Result<Job, ReplicationError> {
        let now = now_millis();
        let sequence = self.inner.sequence.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        let id = format!("{now:013}-{sequence:06}-{:04x}", rand::random::<u16>());
        let job = Job {
            id: id.clone(),
            policy: policy.name.clone(),
            trigger,
            state: if specs.is_empty() {
                State::Succeeded
            } else {
                State::Pending
            },
            created_at: now,
            finished_at: specs.is_empty().then_some(now),
            tasks: specs.len() as u32,
            error: None,
            cancel_requested: false,
        };
        // etcd refuses transactions over 128 operations: tasks go in batches.
        let tasks: Vec<(String, Vec<u8>)> = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                let task = Task {
                    job: id.clone(),
                    index: index as u32,
                    kind: spec.kind,
                    repository: spec.repository.to_string(),
                    reference: spec.reference,
                    destination: spec.destination.to_string(),
                    origin: spec.origin,
                    state: State::Pending,
                    attempts: 0,
                    bytes_total: 0,
                    bytes_done: 0,
                    digest: None,
                    message: None,
                    resume: None,
                    updated_at: now,
                };
                (keys::task(&id, index as u32), keys::encode(&task))
            })
            .collect();
        // The job and its active marker go with the last batch, so the
        // executor never sees a job whose tasks are not all written.
        let mut batches: Vec<&[(String, Vec<u8>)]> = tasks.chunks(100).collect();
        let last = batches.pop().unwrap_or_default();
        for batch in batches {
            self.inner.store.txn(puts(Txn::new(), batch)).await?;
        }
        let mut txn = puts(Txn::new(), last).put(keys::job(&id), keys::encode(&job));
        if !job.state.is_final() {
            txn = txn.put(keys::active(&id), Vec::new());
        }
        self.inner.store.txn(txn).await?;
        self.inner.wake.notify_one();
        Ok(job)
    }

    /// Jobs, newest first, optionally of one policy.
    pub async fn jobs(
        &self,
        policy: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, ReplicationError> {
        let mut out = Vec::new();
        let mut start_after = None;
        loop {
            let page = self
                .inner
                .store
                .list(
                    keys::JOBS,
                    wharf_store::ListOptions {
                        start_after: start_after.take(),
                        limit: Some(200),
                    },
                )
                .await?;
            for kv in &page.items {
                let job: Job = keys::decode(&kv.key, &kv.value)?;
                if policy.is_some_and(|p| p != job.policy) {
                    continue;
                }
                let tasks = self.tasks(&job.id).await?;
                out.push(JobSummary {
                    progress: Progress::of(&tasks),
                    job,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if !page.more {
                return Ok(out);
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
    }

    /// A job with its tasks; running tasks show their live byte counts.
    pub async fn job(&self, id: &str) -> Result<JobDetail, ReplicationError> {
        let job = self.load_job(id).await?;
        let task_list = self.tasks(id).await?;
        Ok(JobDetail { job, task_list })
    }

    pub(crate) async fn load_job(&self, id: &str) -> Result<Job, ReplicationError> {
        Ok(self.job_record(id).await?.1)
    }

    /// A job and its key-value; ids not shaped like job ids are not found.
    pub(crate) async fn job_record(
        &self,
        id: &str,
    ) -> Result<(wharf_store::KeyValue, Job), ReplicationError> {
        if !keys::is_job_id(id) {
            return Err(not_found("job", id));
        }
        self.record(&keys::job(id), "job", id).await
    }

    /// The jobs not finished yet (read from their active markers).
    pub(crate) async fn active_jobs(&self) -> Result<Vec<Job>, ReplicationError> {
        let mut jobs = Vec::new();
        for kv in self.inner.store.list_all(keys::ACTIVE, 1000).await? {
            match self.load_job(&kv.key[keys::ACTIVE.len()..]).await {
                Ok(job) => jobs.push(job),
                Err(ReplicationError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(jobs)
    }

    pub(crate) async fn tasks(&self, id: &str) -> Result<Vec<Task>, ReplicationError> {
        let items = self.inner.store.list_all(&keys::tasks_of(id), 500).await?;
        let live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        items
            .iter()
            .map(|kv| {
                let mut task: Task = keys::decode(&kv.key, &kv.value)?;
                if let Some(progress) = live.get(&(task.job.clone(), task.index)) {
                    progress.copy_into(&mut task);
                }
                Ok(task)
            })
            .collect()
    }

    /// Stops a job: running copies end, pending tasks never start; the job
    /// ends `cancelled` once they have.
    pub async fn cancel_job(&self, id: &str) -> Result<Job, ReplicationError> {
        loop {
            let (kv, mut job) = self.job_record(id).await?;
            if job.state.is_final() || job.cancel_requested {
                return Ok(job);
            }
            job.cancel_requested = true;
            if self
                .inner
                .store
                .put_if(&kv.key, keys::encode(&job), kv.mod_revision)
                .await?
                .is_some()
            {
                if let Some(token) = self
                    .inner
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                {
                    token.cancel();
                }
                self.inner.wake.notify_one();
                return Ok(job);
            }
        }
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
