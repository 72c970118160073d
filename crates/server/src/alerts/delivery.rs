//! Sending notifications to webhook receivers: the body is signed with the
//! receiver's secret (see `signature`), POSTed, and retried with
//! exponential back-off until a 2xx or the attempt limit; every attempt is
//! written to the receiver's delivery log in the `Store`
//! (`/alerts/deliveries/<scope>/<receiver>/<id>`, the latest
//! [`LOG_LEN`] kept). Secrets are opened only to sign, never logged.

use std::sync::Arc;
use std::time::Duration;

use wharf_api::{AlertNotification, AlertReceiver, Delivery, DeliveryState};
use wharf_seal::SecretBox;
use wharf_store::{Store, StoreError, StoreExt};

use super::signature::{SIGNATURE_HEADER, sign};

/// Deliveries kept per receiver.
pub(crate) const LOG_LEN: usize = 100;
/// Sent with every notification: the delivery's id.
pub const DELIVERY_HEADER: &str = "X-Wharf-Delivery";
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often and how patiently a notification is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait after the first failure; each further failure doubles it.
    pub first_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The sealing name of a receiver's secret: bound to its scope and name,
/// so a sealed value cannot be moved to another receiver.
pub(crate) fn secret_name(receiver: &AlertReceiver) -> String {
    let scope = receiver.metadata.project.as_deref().unwrap_or("-");
    format!("alertreceiver/{scope}/{}", receiver.metadata.name)
}

/// Where a receiver's delivery log lives.
pub(crate) fn log_prefix(project: Option<&str>, receiver: &str) -> String {
    match project {
        Some(project) => format!("/alerts/deliveries/project/{project}/{receiver}/"),
        None => format!("/alerts/deliveries/cluster/{receiver}/"),
    }
}

/// A receiver's delivery log, newest first.
pub(crate) async fn read_log(
    store: &dyn Store,
    project: Option<&str>,
    receiver: &str,
) -> Result<Vec<Delivery>, StoreError> {
    let entries = store.list_all(&log_prefix(project, receiver), 200).await?;
    let mut log: Vec<Delivery> = entries
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    log.reverse();
    Ok(log)
}

/// Removes a receiver's delivery log (with the receiver).
pub(crate) async fn remove_log(
    store: &dyn Store,
    project: Option<&str>,
    receiver: &str,
) -> Result<(), StoreError> {
    for kv in store.list_all(&log_prefix(project, receiver), 200).await? {
        store.delete(&kv.key).await?;
    }
    Ok(())
}

/// Sends notifications.
#[derive(Clone)]
pub(crate) struct Sender {
    pub store: Arc<dyn Store>,
    pub secrets: SecretBox,
    pub http: reqwest::Client,
    pub retry: RetryPolicy,
}

impl Sender {
    /// Delivers `notification` to `receiver`, retrying as the policy says
    /// and logging each attempt.
    pub(crate) async fn deliver(&self, receiver: AlertReceiver, notification: AlertNotification) {
        let project = receiver.metadata.project.clone();
        let key = format!(
            "{}{}",
            log_prefix(project.as_deref(), &receiver.metadata.name),
            notification.id
        );
        let now = super::now_ms();
        let mut entry = Delivery {
            id: notification.id.clone(),
            receiver: receiver.metadata.name.clone(),
            rule: notification.rule.clone(),
            status: notification.status,
            group_labels: notification.group_labels.clone(),
            alerts: notification.alerts.len(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        self.log(&key, &entry).await;
        self.prune(project.as_deref(), &receiver.metadata.name)
            .await;
        let body = serde_json::to_vec(&notification).expect("notifications serialize");
        let secret = match receiver.spec.secret.as_deref() {
            None => Ok(Vec::new()),
            Some(sealed) => self
                .secrets
                .open(&secret_name(&receiver), sealed)
                .map(String::into_bytes),
        };
        let secret = match secret {
            Ok(secret) => secret,
            Err(err) => {
                entry.state = DeliveryState::Failed;
                entry.last_error = Some(format!("the receiver's secret does not open: {err}"));
                self.log(&key, &entry).await;
                return;
            }
        };
        let signature = sign(&secret, &body);
        loop {
            entry.attempts += 1;
            let outcome = self
                .http
                .post(&receiver.spec.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .header(DELIVERY_HEADER, &entry.id)
                .timeout(ATTEMPT_TIMEOUT)
                .body(body.clone())
                .send()
                .await;
            match outcome {
                Ok(reply) if reply.status().is_success() => {
                    entry.last_status = Some(reply.status().as_u16());
                    entry.last_error = None;
                    entry.state = DeliveryState::Delivered;
                }
                Ok(reply) => {
                    entry.last_status = Some(reply.status().as_u16());
                    entry.last_error = Some(format!("answered {}", reply.status()));
                }
                // The error names the URL, which is no secret.
                Err(err) => entry.last_error = Some(err.to_string()),
            }
            let done = entry.state == DeliveryState::Delivered;
            if !done && entry.attempts >= self.retry.attempts {
                entry.state = DeliveryState::Failed;
            }
            entry.updated_at = super::now_ms();
            self.log(&key, &entry).await;
            if entry.state != DeliveryState::Pending {
                if entry.state == DeliveryState::Failed {
                    tracing::warn!(receiver = %entry.receiver, attempts = entry.attempts,
                        error = entry.last_error.as_deref().unwrap_or(""), "alert notification not delivered");
                }
                return;
            }
            tokio::time::sleep(self.retry.backoff(entry.attempts)).await;
        }
    }

    async fn log(&self, key: &str, entry: &Delivery) {
        let value = serde_json::to_vec(entry).expect("deliveries serialize");
        if let Err(err) = self.store.put(key, value).await {
            tracing::warn!(error = %err, key, "delivery log not written");
        }
    }

    async fn prune(&self, project: Option<&str>, receiver: &str) {
        let prefix = log_prefix(project, receiver);
        let Ok(entries) = self.store.list_all(&prefix, 200).await else {
            return;
        };
        for kv in entries.iter().take(entries.len().saturating_sub(LOG_LEN)) {
            let _ = self.store.delete(&kv.key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap() {
        let policy = RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=5).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(policy.backoff(100), Duration::from_secs(5), "no overflow");
    }
}
