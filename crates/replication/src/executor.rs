//! Running replication: the executor that works the persistent job queue,
//! the event intake, cron schedules and the reconcile pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wharf_oci::{Reference, RepositoryName};
use wharf_registry::Origin;
use wharf_registry::http::{EventKind, RegistryEvent};
use wharf_store::{StoreExt, Txn};

use crate::ReplicationError;
use crate::access::{TagDelete, TagWrite};
use crate::copy::{Checkpoint, Copier};
use crate::keys::{self, now_millis};
use crate::model::{
    Direction, EndpointKind, Job, Policy, Progress, ResumePoint, State, Task, TaskKind, TriggerKind,
};
use crate::schedule::Schedule;
use crate::service::{LiveProgress, Matcher, Replication, Report, TaskSpec};

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

    /// Turns this server's registry events into event-triggered jobs, until
    /// the future is dropped.
    pub async fn run_intake(&self) {
        let mut queue = self.inner.event_queue.lock().await;
        while let Some(event) = queue.recv().await {
            if let Err(err) = self.on_event(&event).await {
                tracing::warn!(error = %err, repository = %event.repository, "replication trigger failed; reconcile will catch up");
            }
        }
    }

    /// Starts every active job not yet running here; wakes on new jobs.
    async fn execute_jobs(&self) {
        let mut runners = JoinSet::new();
        loop {
            match self.inner.store.list_all(keys::ACTIVE, 1000).await {
                Ok(active) => {
                    for kv in active {
                        let id = kv.key[keys::ACTIVE.len()..].to_string();
                        let mut running =
                            self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
                        if running.contains_key(&id) {
                            continue;
                        }
                        let token = CancellationToken::new();
                        running.insert(id.clone(), token.clone());
                        let this = self.clone();
                        runners.spawn(async move {
                            if let Err(err) = this.run_job(&id, token).await {
                                tracing::warn!(job = %id, error = %err, "replication job interrupted");
                            }
                            this.inner.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        });
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot list replication jobs"),
            }
            while runners.try_join_next().is_some() {}
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn run_job(&self, id: &str, token: CancellationToken) -> Result<(), ReplicationError> {
        let job = self.mark_running(id).await?;
        let policy = match self.policy(&job.policy).await {
            Ok(policy) => Some(policy),
            Err(ReplicationError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if job.cancel_requested || policy.is_none() {
            token.cancel();
        }
        let mut workers = JoinSet::new();
        for task in self.tasks(id).await? {
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
                    if let Ok(current) = self.load_job(id).await && current.cancel_requested {
                        token.cancel();
                    }
                }
            }
        }
        self.finish_job(id).await
    }

    /// Records the job's final state and removes its active marker.
    async fn finish_job(&self, id: &str) -> Result<(), ReplicationError> {
        let tasks = self.tasks(id).await?;
        let progress = Progress::of(&tasks);
        loop {
            let (kv, mut job) = self.job_record(id).await?;
            job.state = progress.final_state().unwrap_or(State::Failed);
            job.error = first_failure(&tasks);
            job.finished_at = Some(now_millis());
            let txn = Txn::new()
                .when_revision(&kv.key, kv.mod_revision)
                .put(&kv.key, keys::encode(&job))
                .delete(keys::active(id));
            if self.inner.store.txn(txn).await?.succeeded {
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
                    job: job.id,
                    policy: job.policy,
                    state: job.state,
                });
                return Ok(());
            }
        }
    }

    /// Moves a pending job to running (compare-and-swap, so a concurrent
    /// cancel request is never overwritten); returns the job.
    async fn mark_running(&self, id: &str) -> Result<Job, ReplicationError> {
        loop {
            let (kv, mut job) = self.job_record(id).await?;
            if job.state != State::Pending {
                return Ok(job);
            }
            job.state = State::Running;
            if self
                .inner
                .store
                .put_if(&kv.key, keys::encode(&job), kv.mod_revision)
                .await?
                .is_some()
            {
                return Ok(job);
            }
        }
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
        let slots = self.slots_of(&policy);
        let _slot = tokio::select! {
            permit = slots.acquire_owned() => permit.map_err(|_| ReplicationError::Cancelled)?,
            _ = token.cancelled() => return record.finish(State::Cancelled, None, None).await,
        };
        let _worker = tokio::select! {
            permit = self.inner.workers.clone().acquire_owned() => permit.map_err(|_| ReplicationError::Cancelled)?,
            _ = token.cancelled() => return record.finish(State::Cancelled, None, None).await,
        };
        let (job, index) = {
            let task = record.task.lock().await;
            (task.job.clone(), task.index)
        };
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((job.clone(), index), record.live.clone());
        let result = self.try_task(&record, &policy, &token).await;
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(job, index));
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
                    self.note_unreachable(&policy.endpoint, &err);
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
                        _ = self.inner.recovered.notified() => {}
                        _ = token.cancelled() => return record.finish(State::Cancelled, Some("cancelled".into()), None).await,
                    }
                }
                Err(err) => {
                    self.note_unreachable(&policy.endpoint, &err);
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
        let connection = self.connect(&policy.endpoint).await?;
        let (source, destination) = self.sides(policy, &connection);
        let destination_instance = match policy.direction {
            Direction::Push => self.instance_of(&connection).await?,
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
        self.ensure_project(&policy.endpoint, destination.as_ref(), &destination_repo)
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
            limit: self.limit_of(policy),
            chunk_size: self.inner.options.chunk_size,
            sent: record.live.sent.clone(),
            total: record.live.total.clone(),
            checkpoint: record.as_ref(),
            mount_candidates: self.recent_repositories(&policy.endpoint),
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
        self.remember_repository(&policy.endpoint, &destination_repo);
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

    /// Creates the destination project once per endpoint and process.
    pub(crate) async fn ensure_project(
        &self,
        endpoint: &str,
        destination: &dyn crate::access::RegistryAccess,
        repo: &RepositoryName,
    ) -> Result<(), ReplicationError> {
        let key = (endpoint.to_string(), repo.project().to_string());
        if self
            .inner
            .projects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        destination.ensure_project(repo.project()).await?;
        self.inner
            .projects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        Ok(())
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

    fn recent_repositories(&self, endpoint: &str) -> Vec<RepositoryName> {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(endpoint)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remember_repository(&self, endpoint: &str, repo: &RepositoryName) {
        let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        let list = recent.entry(endpoint.to_string()).or_default();
        list.retain(|r| r != repo);
        list.push_front(repo.clone());
        list.truncate(RECENT_REPOSITORIES);
    }

    fn arrived(
        &self,
        repo: &RepositoryName,
        tag: &wharf_oci::Tag,
        digest: &wharf_oci::Digest,
        origin: Option<Origin>,
    ) {
        let event = RegistryEvent {
            kind: EventKind::Push,
            repository: repo.clone(),
            reference: tag.to_string(),
            digest: Some(digest.clone()),
            actor: "replication".into(),
            source: None,
            origin,
            conflict: None,
            tag_moved: true,
        };
        let _ = self.inner.events.try_send(event);
    }

    async fn on_event(&self, event: &RegistryEvent) -> Result<(), ReplicationError> {
        let kind = match event.kind {
            EventKind::Push if event.tag_moved => TaskKind::Copy,
            EventKind::Delete => TaskKind::Delete,
            _ => return Ok(()),
        };
        // Manifests pushed by digest come with the tag that names them.
        let reference: Reference = match event.reference.parse() {
            Ok(r) => r,
            Err(_) => return Ok(()),
        };
        if kind == TaskKind::Copy && !matches!(reference, Reference::Tag(_)) {
            return Ok(());
        }
        // Blob deletes (the only writes without an origin) are not artifacts.
        if kind == TaskKind::Delete && event.origin.is_none() {
            return Ok(());
        }
        for policy in self.policies().await? {
            if !policy.enabled || !policy.triggers.on_event || policy.direction != Direction::Push {
                continue;
            }
            if kind == TaskKind::Delete && !policy.replicate_deletion {
                continue;
            }
            let matcher = Matcher::new(&policy.filters);
            if !matcher.repository(&event.repository) {
                continue;
            }
            if let Reference::Tag(tag) = &reference
                && !matcher.tag(tag)
            {
                continue;
            }
            if kind == TaskKind::Copy
                && let (Some(label), Some(digest)) = (&policy.filters.label, &event.digest)
                && !crate::labels::has_label(
                    self.inner.local.as_ref(),
                    &event.repository,
                    digest,
                    label,
                )
                .await?
            {
                continue;
            }
            // Loop guard: what came from the endpoint does not go back.
            if let Some(origin) = &event.origin
                && let Ok(connection) = self.connect(&policy.endpoint).await
                && let Ok(Some(instance)) = self.instance_of(&connection).await
                && origin.instance == instance
            {
                continue;
            }
            let spec = TaskSpec {
                kind,
                repository: event.repository.clone(),
                reference: event.reference.clone(),
                destination: policy.destination_of(&event.repository),
                origin: event.origin.as_ref().map(Origin::to_header),
            };
            self.create_job(&policy, TriggerKind::Event, vec![spec])
                .await?;
        }
        Ok(())
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
                    self.note_unreachable(&policy.endpoint, &err);
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
        let older = self
            .inner
            .store
            .list(
                keys::JOBS,
                wharf_store::ListOptions {
                    start_after: Some(keys::jobs_before(cutoff)),
                    limit: Some(1000),
                },
            )
            .await?;
        // At most a thousand per pass; the next pass takes the rest.
        for kv in older.items {
            let job: Job = keys::decode(&kv.key, &kv.value)?;
            if job.created_at >= cutoff || !job.state.is_final() {
                continue;
            }
            for batch in self
                .inner
                .store
                .list_all(&keys::tasks_of(&job.id), 100)
                .await?
                .chunks(100)
            {
                let mut txn = Txn::new();
                for task in batch {
                    txn = txn.delete(task.key.clone());
                }
                self.inner.store.txn(txn).await?;
            }
            self.inner.store.delete_if(&kv.key, kv.mod_revision).await?;
        }
        Ok(())
    }
}

/// `repository:reference: error` of the first failed task.
fn first_failure(tasks: &[Task]) -> Option<String> {
    let task = tasks.iter().find(|t| t.state == State::Failed)?;
    Some(format!(
        "{}:{}: {}",
        task.repository,
        task.reference,
        task.message.as_deref().unwrap_or("failed")
    ))
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
        self.replication
            .inner
            .store
            .put(&keys::task(&task.job, task.index), keys::encode(&task))
            .await?;
        Ok(())
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
