//! Running replication on the leader: the executor that works the
//! persistent job queue (per-policy and global concurrency, pacing,
//! retries), cron schedules and the reconcile pass.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wharf_oci::RepositoryName;
use wharf_registry::Origin;

use crate::ReplicationError;
use crate::access::{TagDelete, TagWrite};
use crate::connections::Connections;
use crate::copy::{Checkpoint, Copier};
use crate::keys::{self, now_millis};
use crate::limit::RateLimit;
use crate::model::{
    Direction, EndpointKind, Job, Policy, ResumePoint, State, Task, TaskKind, TriggerKind,
};
use crate::queue::LiveProgress;
use crate::schedule::Schedule;
use crate::service::{Replication, Report};

/// What this process's executor holds: the jobs it runs, the slots and
/// pacers tasks share, and where copies went lately.
pub(crate) struct Executor {
    /// Tasks running at once over all policies.
    workers: Arc<Semaphore>,
    /// Jobs this process is running, and how to stop them.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Per policy: its pacer and the limit it was made for.
    limits: Mutex<HashMap<String, (u64, Arc<RateLimit>)>>,
    /// Per policy: its concurrency slots and the count they were made for.
    slots: Mutex<HashMap<String, (u64, Arc<Semaphore>)>>,
    /// Destination repositories written lately per endpoint: where a blob
    /// may already be, to mount instead of upload.
    recent: Mutex<HashMap<String, VecDeque<RepositoryName>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The object a policy's tasks share (pacer, slots), made anew when the
/// setting it was made for changes.
fn shared_per_policy<T>(
    map: &Mutex<HashMap<String, (u64, Arc<T>)>>,
    policy: &Policy,
    setting: u64,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let mut map = lock(map);
    match map.get(&policy.name) {
        Some((made_for, shared)) if *made_for == setting => shared.clone(),
        _ => {
            let shared = Arc::new(make());
            map.insert(policy.name.clone(), (setting, shared.clone()));
            shared
        }
    }
}

impl Executor {
    /// An executor running at most `workers` tasks at once.
    pub(crate) fn new(workers: usize) -> Executor {
        Executor {
            workers: Arc::new(Semaphore::new(workers.max(1))),
            running: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Notes job `id` as running here and returns its cancellation token;
    /// `None` if it already runs.
    fn start(&self, id: &str) -> Option<CancellationToken> {
        let mut running = lock(&self.running);
        if running.contains_key(id) {
            return None;
        }
        let token = CancellationToken::new();
        running.insert(id.to_string(), token.clone());
        Some(token)
    }

    fn finished(&self, id: &str) {
        lock(&self.running).remove(id);
    }

    /// Stops job `id` if it runs here.
    pub(crate) fn cancel(&self, id: &str) {
        if let Some(token) = lock(&self.running).get(id) {
            token.cancel();
        }
    }

    /// The policy's shared pacer, if it has a limit. A changed limit takes
    /// effect for the next task.
    fn limit_of(&self, policy: &Policy) -> Option<Arc<RateLimit>> {
        let rate = policy.bandwidth_limit?;
        Some(shared_per_policy(&self.limits, policy, rate, || {
            RateLimit::new(rate)
        }))
    }

    /// The policy's concurrency slots; a changed concurrency takes effect
    /// for the next task.
    fn slots_of(&self, policy: &Policy) -> Arc<Semaphore> {
        let slots = policy.concurrency;
        shared_per_policy(&self.slots, policy, u64::from(slots), || {
            Semaphore::new(slots as usize)
        })
    }

    /// Waits for one of the global worker slots.
    async fn worker(&self) -> Result<OwnedSemaphorePermit, ReplicationError> {
        self.workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ReplicationError::Cancelled)
    }

    fn recent_repositories(&self, endpoint: &str) -> Vec<RepositoryName> {
        lock(&self.recent)
            .get(endpoint)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remember_repository(&self, endpoint: &str, repo: &RepositoryName) {
        let mut recent = lock(&self.recent);
        let list = recent.entry(endpoint.to_string()).or_default();
        list.retain(|r| r != repo);
        list.push_front(repo.clone());
        list.truncate(RECENT_REPOSITORIES);
    }
}

/// How a task ended.
struct Outcome {
    state: State,
    message: Option<String>,
    digest: Option<String>,
}

impl Outcome {
    fn skipped(message: impl Into<String>) -> Outcome {
        Outcome {
            state: State::Skipped,
            message: Some(message.into()),
            digest: None,
        }
    }
}

/// Mount candidates remembered per endpoint.
const RECENT_REPOSITORIES: usize = 3;

impl Replication {
    /// Runs the executor, cron triggers, reconcile passes and the probe of
    /// unreachable endpoints until the future is dropped. Run it in one server at a time (the
    /// control-plane leader); [`run_intake`](Replication::run_intake) runs
    /// in every server.
    pub async fn run(&self) {
        tokio::join!(
            self.execute_jobs(),
            self.cron(),
            self.reconcile_periodically(),
            self.probe_endpoints()
        );
    }

    /// Starts every active job not yet running here; wakes on new jobs.
    async fn execute_jobs(&self) {
        let mut runners = JoinSet::new();
        loop {
            match self.inner.queue.active_ids().await {
                Ok(active) => {
                    for id in active {
                        let Some(token) = self.inner.executor.start(&id) else {
                            continue;
                        };
                        let this = self.clone();
                        runners.spawn(async move {
                            if let Err(err) = this.run_job(&id, token).await {
                                tracing::warn!(job = %id, error = %err, "replication job interrupted");
                            }
                            this.inner.executor.finished(&id);
                        });
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot list replication jobs"),
            }
            while runners.try_join_next().is_some() {}
            tokio::select! {
                _ = self.inner.queue.woken() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn run_job(&self, id: &str, token: CancellationToken) -> Result<(), ReplicationError> {
        let job = self.inner.queue.mark_running(id).await?;
        let policy = match self.policy(&job.policy).await {
            Ok(policy) => Some(policy),
            Err(ReplicationError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if job.cancel_requested || policy.is_none() {
            token.cancel();
        }
        let mut workers = JoinSet::new();
        for task in self.inner.queue.tasks(id).await? {
            if task.state.is_final() {
                continue;
            }
            let this = self.clone();
            let policy = policy.clone();
            let token = token.clone();
            workers.spawn(async move {
                let key = keys::task(&task.job, task.index);
                if let Err(err) = this.run_task(task, policy, token).await {
                    tracing::warn!(task = %key, error = %err, "replication task not recorded");
                }
            });
        }
        // Cancellation may come from another server: look at the job now and then.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        while !workers.is_empty() {
            tokio::select! {
                _ = workers.join_next() => {}
                _ = check.tick() => {
                    if let Ok(current) = self.inner.queue.load(id).await && current.cancel_requested {
                        token.cancel();
                    }
                }
            }
        }
        self.finish_job(id).await
    }

    /// Records the job's final state, then reconciles its policy if its
    /// endpoint came back meanwhile, and reports the end.
    async fn finish_job(&self, id: &str) -> Result<(), ReplicationError> {
        let (job, progress) = self.inner.queue.finish(id).await?;
        self.reconcile_deferred(&job.policy).await;
        self.report(Report::JobFinished {
            summary: format!(
                "{} succeeded, {} skipped, {} failed, {} cancelled, {} bytes",
                progress.succeeded,
                progress.skipped,
                progress.failed,
                progress.cancelled,
                progress.bytes_done
            ),
            bytes: progress.bytes_done,
            job: job.id,
            policy: job.policy,
            state: job.state,
        });
        Ok(())
    }

    /// Runs one task to its end: tries with back-off, records every step.
    async fn run_task(
        &self,
        task: Task,
        policy: Option<Policy>,
        token: CancellationToken,
    ) -> Result<(), ReplicationError> {
        let record = Arc::new(TaskRecord {
            replication: self.clone(),
            task: tokio::sync::Mutex::new(task),
            live: Arc::new(LiveProgress::default()),
        });
        let Some(policy) = policy else {
            return record
                .finish(
                    State::Cancelled,
                    Some("the policy was deleted".into()),
                    None,
                )
                .await;
        };
        let slots = self.inner.executor.slots_of(&policy);
        let _slot = tokio::select! {
            permit = slots.acquire_owned() => permit.map_err(|_| ReplicationError::Cancelled)?,
            _ = token.cancelled() => return record.finish(State::Cancelled, None, None).await,
        };
        let _worker = tokio::select! {
            permit = self.inner.executor.worker() => permit?,
            _ = token.cancelled() => return record.finish(State::Cancelled, None, None).await,
        };
        let (job, index) = {
            let task = record.task.lock().await;
            (task.job.clone(), task.index)
        };
        self.inner.queue.track(&job, index, record.live.clone());
        let result = self.try_task(&record, &policy, &token).await;
        self.inner.queue.untrack(&job, index);
        result
    }

    async fn try_task(
        &self,
        record: &Arc<TaskRecord>,
        policy: &Policy,
        token: &CancellationToken,
    ) -> Result<(), ReplicationError> {
        loop {
            let snapshot = {
                let mut task = record.task.lock().await;
                task.attempts += 1;
                task.state = State::Running;
                task.clone()
            };
            record.save().await?;
            record.live.sent.store(0, Ordering::Relaxed);
            let attempt = tokio::select! {
                result = self.execute(&snapshot, policy, record.clone()) => result,
                _ = token.cancelled() => Err(ReplicationError::Cancelled),
            };
            record.live.copy_into(&mut *record.task.lock().await);
            match attempt {
                Ok(outcome) => {
                    return record
                        .finish(outcome.state, outcome.message, outcome.digest)
                        .await;
                }
                Err(ReplicationError::Cancelled) => {
                    return record
                        .finish(State::Cancelled, Some("cancelled".into()), None)
                        .await;
                }
                Err(err)
                    if err.is_retryable()
                        && snapshot.attempts < self.inner.options.max_attempts =>
                {
                    self.inner.probe.note(&policy.endpoint, &err);
                    let pause = self.backoff(snapshot.attempts);
                    tracing::info!(task = %snapshot.reference, error = %err, ?pause, "replication task will retry");
                    record.task.lock().await.message = Some(format!(
                        "attempt {} failed: {err}; retrying in {}s",
                        snapshot.attempts,
                        pause.as_secs()
                    ));
                    record.save().await?;
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        // The endpoint answers again: no reason to wait longer.
                        _ = self.inner.probe.recovered() => {}
                        _ = token.cancelled() => return record.finish(State::Cancelled, Some("cancelled".into()), None).await,
                    }
                }
                Err(err) => {
                    self.inner.probe.note(&policy.endpoint, &err);
                    return record
                        .finish(State::Failed, Some(err.to_string()), None)
                        .await;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.options.retry_base;
        base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.inner.options.retry_cap)
    }

    /// One try of a task.
    async fn execute(
        &self,
        task: &Task,
        policy: &Policy,
        record: Arc<TaskRecord>,
    ) -> Result<Outcome, ReplicationError> {
        let connection = self.inner.connections.connect(&policy.endpoint).await?;
        let (source, destination) = self.sides(policy, &connection);
        let destination_instance = match policy.direction {
            Direction::Push => Connections::instance_of(&connection).await?,
            Direction::Pull => Some(self.instance().to_string()),
        };
        let invalid =
            |what: &str| ReplicationError::Internal(format!("task names an invalid {what}"));
        let source_repo: RepositoryName =
            task.repository.parse().map_err(|_| invalid("repository"))?;
        let destination_repo: RepositoryName = task
            .destination
            .parse()
            .map_err(|_| invalid("repository"))?;
        let came_from_destination = |origin: Option<&Origin>| matches!((origin, &destination_instance), (Some(o), Some(i)) if o.instance == *i);
        let planned_origin = task
            .origin
            .as_deref()
            .and_then(|o| Origin::parse_header(o).ok());
        if came_from_destination(planned_origin.as_ref()) {
            return Ok(Outcome::skipped(format!(
                "came from {}",
                destination.name()
            )));
        }
        if task.kind == TaskKind::Delete {
            return Ok(
                match destination
                    .delete(&destination_repo, &task.reference, planned_origin.as_ref())
                    .await?
                {
                    TagDelete::Deleted => Outcome {
                        state: State::Succeeded,
                        message: None,
                        digest: None,
                    },
                    TagDelete::Absent => Outcome::skipped("already absent at the destination"),
                    TagDelete::Kept(why) => {
                        self.conflict(&why);
                        Outcome::skipped(format!("conflict: {why}"))
                    }
                },
            );
        }
        let tag: wharf_oci::Tag = task.reference.parse().map_err(|_| invalid("tag"))?;
        // Before any lookup there: a registry denies reads of a missing project.
        self.inner
            .connections
            .ensure_project(&policy.endpoint, destination.as_ref(), &destination_repo)
            .await?;
        let Some(state) = source.tag(&source_repo, &tag).await? else {
            return Ok(Outcome::skipped("the tag is gone at the source"));
        };
        let origin = state.origin.clone().or(planned_origin);
        if came_from_destination(origin.as_ref()) {
            return Ok(Outcome::skipped(format!(
                "came from {}",
                destination.name()
            )));
        }
        if let Some(current) = destination.tag(&destination_repo, &tag).await? {
            if current.digest == state.digest {
                return Ok(Outcome {
                    state: State::Skipped,
                    message: Some("already up to date".into()),
                    digest: Some(state.digest.to_string()),
                });
            }
            let wharf_peer = policy.direction == Direction::Pull
                || connection.endpoint.kind == EndpointKind::Wharf;
            match (&origin, &current.origin) {
                (Some(mine), Some(theirs)) if wharf_peer && !mine.wins_over(theirs) => {
                    let why = format!(
                        "{} keeps {destination_repo}:{tag} at {} (origin {theirs}) over {} (origin {mine})",
                        destination.name(),
                        current.digest,
                        state.digest,
                    );
                    self.conflict(&why);
                    return Ok(Outcome::skipped(format!("conflict: {why}")));
                }
                _ if !policy.override_existing => {
                    return Ok(Outcome::skipped(format!(
                        "{} holds another artifact under {destination_repo}:{tag} and override is off",
                        destination.name()
                    )));
                }
                _ => {}
            }
        }
        let Some(manifest) = source.manifest(&source_repo, state.digest.as_str()).await? else {
            return Ok(Outcome::skipped("the artifact is gone at the source"));
        };
        let resume = record.task.lock().await.resume.clone();
        let copier = Copier {
            source: source.as_ref(),
            destination: destination.as_ref(),
            limit: self.inner.executor.limit_of(policy),
            chunk_size: self.inner.options.chunk_size,
            sent: record.live.sent.clone(),
            total: record.live.total.clone(),
            checkpoint: record.as_ref(),
            mount_candidates: self.inner.executor.recent_repositories(&policy.endpoint),
        };
        let write = copier
            .copy(
                &source_repo,
                &destination_repo,
                tag.as_str(),
                &manifest,
                origin.as_ref(),
                resume,
            )
            .await?;
        self.inner
            .executor
            .remember_repository(&policy.endpoint, &destination_repo);
        match write {
            TagWrite::Kept(why) => {
                self.conflict(&why);
                Ok(Outcome {
                    state: State::Skipped,
                    message: Some(format!("conflict: {why}")),
                    digest: Some(manifest.digest.to_string()),
                })
            }
            TagWrite::Moved => {
                if policy.direction == Direction::Pull {
                    // Pulled artifacts arrive without an HTTP push: chain
                    // them to push policies (hierarchies of pull hops too).
                    self.arrived(&destination_repo, &tag, &manifest.digest, origin);
                }
                Ok(Outcome {
                    state: State::Succeeded,
                    message: None,
                    digest: Some(manifest.digest.to_string()),
                })
            }
        }
    }

    fn conflict(&self, why: &str) {
        tracing::warn!(conflict = %why, "replication conflict");
        self.report(Report::Conflict(why.to_string()));
    }

    fn report(&self, report: Report) {
        if let Some(hook) = &self.inner.reports {
            hook(report);
        }
    }

    /// Starts cron-triggered runs; schedules count from this server's start.
    /// Each expression is parsed when it is first seen or changes.
    async fn cron(&self) {
        // Per policy: the expression and when it next fires.
        let mut due: HashMap<String, (String, Schedule, SystemTime)> = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok(policies) = self.policies().await else {
                continue;
            };
            let now = SystemTime::now();
            due.retain(|name, _| policies.iter().any(|p| &p.name == name));
            for policy in policies.iter().filter(|p| p.enabled) {
                let Some(expression) = policy.triggers.cron.as_deref() else {
                    due.remove(&policy.name);
                    continue;
                };
                if due
                    .get(&policy.name)
                    .is_none_or(|(e, _, _)| e != expression)
                {
                    let Ok(schedule) = Schedule::parse(expression) else {
                        continue;
                    };
                    let Some(next) = schedule.next_after(now) else {
                        continue;
                    };
                    due.insert(
                        policy.name.clone(),
                        (expression.to_string(), schedule, next),
                    );
                }
                let Some((_, schedule, next)) = due.get_mut(&policy.name) else {
                    continue;
                };
                if *next > now {
                    continue;
                }
                match schedule.next_after(now) {
                    Some(later) => *next = later,
                    None => {
                        due.remove(&policy.name);
                    }
                }
                if let Err(err) = self.plan_and_create(policy, TriggerKind::Cron).await {
                    self.inner.probe.note(&policy.endpoint, &err);
                    tracing::warn!(policy = %policy.name, error = %err, "scheduled replication could not start");
                }
            }
        }
    }

    async fn reconcile_periodically(&self) {
        let mut ticker = tokio::time::interval(self.inner.options.reconcile_interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            self.reconcile().await;
            if let Err(err) = self.prune().await {
                tracing::warn!(error = %err, "pruning replication jobs failed");
            }
            // Tombstones belong to the registry, but only replication needs
            // them, and this loop runs on one server at a time.
            if let Err(err) = self.inner.registry.prune_tombstones().await {
                tracing::warn!(error = %err, "pruning tombstones of deleted tags failed");
            }
        }
    }

    /// Compares every enabled policy's source with its destination and
    /// creates a job for the differences; policies with an unfinished job
    /// wait for the next pass. Returns the jobs created.
    pub async fn reconcile(&self) -> Vec<Job> {
        self.reconcile_where(|_| true, false).await
    }

    /// Deletes finished jobs older than the retention.
    async fn prune(&self) -> Result<(), ReplicationError> {
        let cutoff =
            now_millis().saturating_sub(self.inner.options.job_retention.as_millis() as u64);
        self.inner.queue.prune(cutoff).await
    }
}

/// A task being worked on, and where it is saved.
struct TaskRecord {
    replication: Replication,
    task: tokio::sync::Mutex<Task>,
    live: Arc<LiveProgress>,
}

impl TaskRecord {
    async fn save(&self) -> Result<(), ReplicationError> {
        let task = {
            let mut task = self.task.lock().await;
            task.updated_at = now_millis();
            task.clone()
        };
        self.replication.inner.queue.save_task(&task).await
    }

    async fn finish(
        &self,
        state: State,
        message: Option<String>,
        digest: Option<String>,
    ) -> Result<(), ReplicationError> {
        {
            let mut task = self.task.lock().await;
            task.state = state;
            task.message = message;
            if digest.is_some() {
                task.digest = digest;
            }
            if state == State::Succeeded {
                task.resume = None;
                task.bytes_done = task.bytes_done.max(task.bytes_total);
            }
        }
        self.save().await
    }
}

#[async_trait]
impl Checkpoint for TaskRecord {
    async fn reached(&self, point: Option<ResumePoint>) -> Result<(), ReplicationError> {
        self.task.lock().await.resume = point;
        self.save().await
    }
}
