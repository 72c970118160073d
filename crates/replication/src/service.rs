//! The replication service: the facade the server uses over its parts
//! (the job queue, the executor, connections to endpoints, the event
//! intake and the probe), endpoint and policy definitions, and planning
//! runs.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use wharf_registry::Registry;
use wharf_registry::http::EventSink;
use wharf_store::{Store, StoreExt};

use crate::ReplicationError;
use crate::access::RegistryAccess;
use crate::connections::Connections;
use crate::executor::Executor;
use crate::intake::EventIntake;
use crate::keys::{self, now_millis};
use crate::local::LocalRegistry;
use crate::model::{
    Endpoint, EndpointSpec, Job, JobDetail, JobSummary, Policy, State, TriggerKind, check_name,
};
use crate::probe::Probe;
use crate::queue::JobQueue;
use crate::remote::{RemoteOptions, RemoteRegistry};
use wharf_seal::SecretBox;

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
        /// Bytes its tasks copied.
        bytes: u64,
    },
}

/// A job's details as they change; see [`Replication::watch_job`].
pub type JobWatch = futures_util::stream::BoxStream<'static, Result<JobDetail, ReplicationError>>;

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
            let mut local = LocalRegistry::new(inner.registry.clone(), Some(creator));
            local.proxies = inner.local.proxies.clone();
            inner.local = Arc::new(local);
        }
        self
    }

    /// Refuses replicated writes into the proxy cache projects `proxies`
    /// names (a pull policy into one fails its tasks, saying so). Set
    /// before sharing.
    pub fn with_proxy_projects(
        mut self,
        proxies: Arc<dyn crate::proxy::ProxyProjects>,
    ) -> Replication {
        if let Some(inner) = Arc::get_mut(&mut self.inner)
            && let Some(local) = Arc::get_mut(&mut inner.local)
        {
            local.proxies = Some(proxies);
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

    /// A job's detail now and again after every change of the job or one
    /// of its tasks in the store, ending once a detail shows the job final.
    /// Both watches start after the revision the first detail was read at,
    /// so no change in between is lost; changes that are ready together
    /// become one re-read, so a slow reader holds the store's watch buffers
    /// and one detail, never a backlog of details.
    ///
    /// Bytes a running task has copied since its last save show in the
    /// next detail sent, not as they are counted.
    pub async fn watch_job(&self, id: &str) -> Result<JobWatch, ReplicationError> {
        let store = &self.inner.store;
        let revision = store.current_revision().await?;
        let first = self.job(id).await?;
        let job_changes = store.watch(&keys::job(id), revision + 1).await?;
        let task_changes = store.watch(&keys::tasks_of(id), revision + 1).await?;
        let changes = futures_util::stream::select(job_changes, task_changes).ready_chunks(64);
        let done = first.job.state.is_final();
        let details = futures_util::stream::unfold(
            (changes, self.clone(), id.to_string(), done),
            |(mut changes, replication, id, done)| async move {
                if done {
                    return None;
                }
                let batch = changes.next().await?;
                if let Some(Err(err)) = batch.into_iter().find(Result::is_err) {
                    let err = ReplicationError::from(err);
                    return Some((Err(err), (changes, replication, id, true)));
                }
                let detail = replication.job(&id).await;
                // An error ends the stream after its line.
                let done = match &detail {
                    Ok(detail) => detail.job.state.is_final(),
                    Err(_) => true,
                };
                Some((detail, (changes, replication, id, done)))
            },
        );
        Ok(futures_util::stream::once(std::future::ready(Ok(first)))
            .chain(details)
            .boxed())
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
