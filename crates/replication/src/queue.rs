//! The persistent job queue: jobs and their tasks in the `Store` (see
//! [`crate::keys`] for the layout), the byte counts of tasks being copied
//! right now, and the signal that wakes the executor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use wharf_oci::RepositoryName;
use wharf_store::{KeyValue, ListOptions, Store, StoreExt, Txn};

use crate::ReplicationError;
use crate::keys::{self, now_millis};
use crate::model::{
    Job, JobDetail, JobSummary, Policy, Progress, State, Task, TaskKind, TriggerKind,
};

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

impl LiveProgress {
    /// Raises the task's byte counts to what the copy has counted.
    pub(crate) fn copy_into(&self, task: &mut Task) {
        task.bytes_done = task.bytes_done.max(self.sent.load(Ordering::Relaxed));
        task.bytes_total = task.bytes_total.max(self.total.load(Ordering::Relaxed));
    }
}

/// Jobs and tasks as stored, with live progress of the running ones.
pub(crate) struct JobQueue {
    store: Arc<dyn Store>,
    /// Part of new job ids, so two jobs of one millisecond differ.
    sequence: AtomicU64,
    /// Wakes the executor: a job was created or cancelled.
    wake: Notify,
    /// Bytes sent and planned per running task, for live progress.
    live: Mutex<HashMap<(String, u32), Arc<LiveProgress>>>,
}

fn puts(txn: Txn, items: &[(String, Vec<u8>)]) -> Txn {
    items
        .iter()
        .fold(txn, |txn, (key, value)| txn.put(key.clone(), value.clone()))
}

impl JobQueue {
    pub(crate) fn new(store: Arc<dyn Store>) -> JobQueue {
        JobQueue {
            store,
            sequence: AtomicU64::new(0),
            wake: Notify::new(),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes the executor.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when the executor is woken.
    pub(crate) fn woken(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Writes a job and its tasks, then marks it active for the executor.
    pub(crate) async fn create(
        &self,
        policy: &Policy,
        trigger: TriggerKind,
        specs: Vec<TaskSpec>,
    ) -> Result<Job, ReplicationError> {
        let now = now_millis();
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) % 1_000_000;
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
            self.store.txn(puts(Txn::new(), batch)).await?;
        }
        let mut txn = puts(Txn::new(), last).put(keys::job(&id), keys::encode(&job));
        if !job.state.is_final() {
            txn = txn.put(keys::active(&id), Vec::new());
        }
        self.store.txn(txn).await?;
        self.wake();
        Ok(job)
    }

    /// Jobs, newest first, optionally of one policy.
    pub(crate) async fn list(
        &self,
        policy: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, ReplicationError> {
        let mut out = Vec::new();
        let mut start_after = None;
        loop {
            let page = self
                .store
                .list(
                    keys::JOBS,
                    ListOptions {
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
    pub(crate) async fn detail(&self, id: &str) -> Result<JobDetail, ReplicationError> {
        let job = self.load(id).await?;
        let task_list = self.tasks(id).await?;
        Ok(JobDetail { job, task_list })
    }

    pub(crate) async fn load(&self, id: &str) -> Result<Job, ReplicationError> {
        Ok(self.record(id).await?.1)
    }

    /// A job and its key-value; ids not shaped like job ids are not found.
    pub(crate) async fn record(&self, id: &str) -> Result<(KeyValue, Job), ReplicationError> {
        if !keys::is_job_id(id) {
            return Err(keys::not_found("job", id));
        }
        keys::read(self.store.as_ref(), &keys::job(id), "job", id).await
    }

    /// The ids of the jobs not finished yet (their active markers).
    pub(crate) async fn active_ids(&self) -> Result<Vec<String>, ReplicationError> {
        let markers = self.store.list_all(keys::ACTIVE, 1000).await?;
        Ok(markers
            .into_iter()
            .map(|kv| kv.key[keys::ACTIVE.len()..].to_string())
            .collect())
    }

    /// The jobs not finished yet (read from their active markers).
    pub(crate) async fn active(&self) -> Result<Vec<Job>, ReplicationError> {
        let mut jobs = Vec::new();
        for id in self.active_ids().await? {
            match self.load(&id).await {
                Ok(job) => jobs.push(job),
                Err(ReplicationError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(jobs)
    }

    /// A job's tasks in order; running ones with their live byte counts.
    pub(crate) async fn tasks(&self, id: &str) -> Result<Vec<Task>, ReplicationError> {
        let items = self.store.list_all(&keys::tasks_of(id), 500).await?;
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Shows `progress` in queries of the task until [`untrack`](Self::untrack).
    pub(crate) fn track(&self, job: &str, index: u32, progress: Arc<LiveProgress>) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((job.to_string(), index), progress);
    }

    pub(crate) fn untrack(&self, job: &str, index: u32) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(job.to_string(), index));
    }

    /// Saves a task as it is now.
    pub(crate) async fn save_task(&self, task: &Task) -> Result<(), ReplicationError> {
        self.store
            .put(&keys::task(&task.job, task.index), keys::encode(task))
            .await?;
        Ok(())
    }

    /// Marks a job as asked to stop (compare-and-swap, so a concurrent
    /// update is never overwritten). Returns the job and whether this call
    /// asked: not when it had ended or was asked already.
    pub(crate) async fn request_cancel(&self, id: &str) -> Result<(Job, bool), ReplicationError> {
        loop {
            let (kv, mut job) = self.record(id).await?;
            if job.state.is_final() || job.cancel_requested {
                return Ok((job, false));
            }
            job.cancel_requested = true;
            if self
                .store
                .put_if(&kv.key, keys::encode(&job), kv.mod_revision)
                .await?
                .is_some()
            {
                return Ok((job, true));
            }
        }
    }

    /// Moves a pending job to running (compare-and-swap, so a concurrent
    /// cancel request is never overwritten); returns the job.
    pub(crate) async fn mark_running(&self, id: &str) -> Result<Job, ReplicationError> {
        loop {
            let (kv, mut job) = self.record(id).await?;
            if job.state != State::Pending {
                return Ok(job);
            }
            job.state = State::Running;
            if self
                .store
                .put_if(&kv.key, keys::encode(&job), kv.mod_revision)
                .await?
                .is_some()
            {
                return Ok(job);
            }
        }
    }

    /// Records a job's final state from its tasks and removes its active
    /// marker; returns the job as recorded and the counts.
    pub(crate) async fn finish(&self, id: &str) -> Result<(Job, Progress), ReplicationError> {
        let tasks = self.tasks(id).await?;
        let progress = Progress::of(&tasks);
        loop {
            let (kv, mut job) = self.record(id).await?;
            job.state = progress.final_state().unwrap_or(State::Failed);
            job.error = first_failure(&tasks);
            job.finished_at = Some(now_millis());
            let txn = Txn::new()
                .when_revision(&kv.key, kv.mod_revision)
                .put(&kv.key, keys::encode(&job))
                .delete(keys::active(id));
            if self.store.txn(txn).await?.succeeded {
                return Ok((job, progress));
            }
        }
    }

    /// Deletes finished jobs created before `cutoff` (unix milliseconds),
    /// at most a thousand per call.
    pub(crate) async fn prune(&self, cutoff: u64) -> Result<(), ReplicationError> {
        let older = self
            .store
            .list(
                keys::JOBS,
                ListOptions {
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
                .store
                .list_all(&keys::tasks_of(&job.id), 100)
                .await?
                .chunks(100)
            {
                let mut txn = Txn::new();
                for task in batch {
                    txn = txn.delete(task.key.clone());
                }
                self.store.txn(txn).await?;
            }
            self.store.delete_if(&kv.key, kv.mod_revision).await?;
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
