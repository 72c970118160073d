//! Recording events about objects, deduplicated and expiring.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wharf_api::{Event, EventType, ObjectMeta, ObjectReference};
use wharf_store::{LeaseId, Txn};

use crate::ControlError;
use crate::objects::{Objects, decode, encode, key_of, now_millis, revision_of};

/// Where events about cluster-wide objects (nodes) are kept: a name no
/// project can have (`_` is not allowed in project names).
pub const CLUSTER_EVENTS: &str = "_cluster";

/// Events live this long after their last occurrence (at most).
const EVENT_TTL: Duration = Duration::from_secs(3600);
/// A lease is shared by the events created within this window.
const LEASE_REUSE: Duration = Duration::from_secs(600);

/// Writes events for one component (`scheduler`, `deployment-controller`).
pub struct EventRecorder {
    objects: Objects,
    source: String,
    lease: Mutex<Option<(LeaseId, Instant)>>,
}

impl EventRecorder {
    /// A recorder signing events as `source`.
    pub fn new(objects: Objects, source: &str) -> EventRecorder {
        EventRecorder {
            objects,
            source: source.to_string(),
            lease: Mutex::new(None),
        }
    }

    /// Records that `reason` happened to `involved`. A repeat of the same
    /// reason and message only bumps the count. Failures are logged, never
    /// returned: events must not break the work they describe.
    pub async fn record(
        &self,
        involved: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(err) = self.try_record(involved, event_type, reason, message).await {
            tracing::warn!(error = %err, reason, "could not record event");
        }
    }

    async fn lease(&self) -> Result<LeaseId, ControlError> {
        if let Some((lease, at)) = *self.lease.lock().expect("lease lock")
            && at.elapsed() < LEASE_REUSE
        {
            return Ok(lease);
        }
        let lease = self
            .objects
            .store()
            .grant_lease(EVENT_TTL + LEASE_REUSE)
            .await?;
        *self.lease.lock().expect("lease lock") = Some((lease, Instant::now()));
        Ok(lease)
    }

    async fn try_record(
        &self,
        involved: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ControlError> {
        let project = involved
            .project
            .clone()
            .unwrap_or_else(|| CLUSTER_EVENTS.into());
        let name = format!(
            "{}.{:016x}",
            involved.name,
            fingerprint(&[&involved.uid, reason, message])
        );
        let key = key_of::<Event>(Some(&project), &name);
        let now = now_millis();
        for _ in 0..8 {
            let existing = self.objects.store().get(&key).await?;
            let (event, revision) = match &existing {
                Some(kv) => {
                    let mut event: Event = decode(kv)?;
                    event.count += 1;
                    event.last_timestamp = now;
                    let revision = revision_of(&event)?.unwrap_or(0);
                    (event, revision)
                }
                None => (
                    Event {
                        api_version: "v1".into(),
                        kind: "Event".into(),
                        metadata: ObjectMeta {
                            name: name.clone(),
                            project: Some(project.clone()),
                            created_at: now,
                            ..ObjectMeta::default()
                        },
                        involved_object: involved.clone(),
                        reason: reason.to_string(),
                        message: message.to_string(),
                        event_type,
                        source: self.source.clone(),
                        count: 1,
                        first_timestamp: now,
                        last_timestamp: now,
                    },
                    0,
                ),
            };
            let lease = self.lease().await?;
            let txn = Txn::new().when_revision(&key, revision).put_with_lease(
                &key,
                encode(&event),
                lease,
            );
            match self.objects.store().txn(txn).await {
                Ok(result) if result.succeeded => return Ok(()),
                Ok(_) => continue,
                // The shared lease expired under us: take a new one.
                Err(wharf_store::StoreError::LeaseNotFound(_)) => {
                    *self.lease.lock().expect("lease lock") = None;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

/// A stable 64-bit fingerprint (FNV-1a) of some strings.
fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
