//! The event intake: registry events (pushes and deletes in this server,
//! and artifacts pulled in by replication) matched against push policies
//! with event triggers, each match a job. Runs on every server, since each
//! sees only its own registry's events.

use std::sync::Arc;

use tokio::sync::mpsc;
use wharf_oci::{Reference, RepositoryName};
use wharf_registry::Origin;
use wharf_registry::http::{EventKind, EventSink, RegistryEvent};

use crate::ReplicationError;
use crate::connections::Connections;
use crate::model::{Direction, TaskKind, TriggerKind};
use crate::plan::Matcher;
use crate::queue::TaskSpec;
use crate::service::Replication;

/// Events waiting to be matched against policies.
pub(crate) struct EventIntake {
    sender: mpsc::Sender<RegistryEvent>,
    queue: tokio::sync::Mutex<mpsc::Receiver<RegistryEvent>>,
}

impl EventIntake {
    /// An intake holding at most `capacity` events.
    pub(crate) fn new(capacity: usize) -> EventIntake {
        let (sender, queue) = mpsc::channel(capacity);
        EventIntake {
            sender,
            queue: tokio::sync::Mutex::new(queue),
        }
    }

    /// The sink to give the registry's HTTP layer.
    pub(crate) fn sink(&self) -> Arc<dyn EventSink> {
        Arc::new(EventQueue(self.sender.clone()))
    }

    /// Queues an event if there is room.
    fn push(&self, event: RegistryEvent) {
        let _ = self.sender.try_send(event);
    }
}

/// Registry events go to the replication queue; never blocks.
struct EventQueue(mpsc::Sender<RegistryEvent>);

impl EventSink for EventQueue {
    fn record(&self, event: RegistryEvent) {
        if matches!(event.kind, EventKind::Pull) {
            return;
        }
        if self.0.try_send(event).is_err() {
            // The reconcile pass repairs what a full queue dropped.
            tracing::warn!("replication event queue full; the next reconcile pass catches up");
        }
    }
}

impl Replication {
    /// Turns this server's registry events into event-triggered jobs, until
    /// the future is dropped.
    pub async fn run_intake(&self) {
        let mut queue = self.inner.intake.queue.lock().await;
        while let Some(event) = queue.recv().await {
            if let Err(err) = self.on_event(&event).await {
                tracing::warn!(error = %err, repository = %event.repository, "replication trigger failed; reconcile will catch up");
            }
        }
    }

    /// Feeds an artifact that arrived without an HTTP push (a pull) to
    /// the intake, so push policies chain on it.
    pub(crate) fn arrived(
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
        self.inner.intake.push(event);
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
                && let Ok(connection) = self.inner.connections.connect(&policy.endpoint).await
                && let Ok(Some(instance)) = Connections::instance_of(&connection).await
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
            self.inner
                .queue
                .create(&policy, TriggerKind::Event, vec![spec])
                .await?;
        }
        Ok(())
    }
}
