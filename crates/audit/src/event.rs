//! Audit events, and the bounds put on them before they are stored.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// The caller was not allowed to do it (bad credentials or missing permission).
    Denied,
    /// The action was allowed but did not complete.
    Failed,
}

/// One audited action: who did what to which resource, when, from where, and how it ended.
///
/// ```
/// use wharf_audit::{AuditEvent, Outcome};
/// let event = AuditEvent::new("alice", "artifact.push", "proj/app:v1", Outcome::Success)
///     .with_source("192.0.2.7".parse::<std::net::IpAddr>().unwrap())
///     .with_detail("3 layers");
/// assert_eq!(event.at_ms, 0); // `AuditLog::record` stamps the time
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened, in unix milliseconds; [`crate::AuditLog::record`] sets it when 0.
    pub at_ms: u64,
    /// User or robot name, `"anonymous"`, or `"system"`.
    pub actor: String,
    /// Client address, when the action came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// Dotted verb: `"login"`, `"artifact.push"`, `"artifact.pull"`, `"member.add"`, ...
    pub action: String,
    /// What was acted on: `"proj/app:v1"`, `"proj/app@sha256:..."`, `"project/proj"`, `"user/alice"`, ...
    pub resource: String,
    /// Success, denied or failed.
    pub outcome: Outcome,
    /// Short free text; never secrets. Stored fields are cut to [`MAX_FIELD_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Longest `actor`, `action`, `resource` or `detail` stored, in bytes; longer
/// values are cut at a character boundary.
///
/// Bounding every event bounds every write batch, which must stay under the
/// etcd request size limit (see [`crate::MAX_BATCH_EVENTS`]).
pub const MAX_FIELD_BYTES: usize = 1024;

/// Latest storable time: keys hold the time as 16 decimal digits so they sort by it.
pub(crate) const MAX_AT_MS: u64 = 9_999_999_999_999_999;

impl AuditEvent {
    /// An event without source or detail, stamped when recorded.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            at_ms: 0,
            actor: actor.into(),
            source: None,
            action: action.into(),
            resource: resource.into(),
            outcome,
            detail: None,
        }
    }

    /// Sets the client address (accepts an `IpAddr` or an `Option<IpAddr>`).
    pub fn with_source(mut self, source: impl Into<Option<IpAddr>>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the free-text detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Brings the event within the storable bounds: time within 16 digits,
    /// text fields within [`MAX_FIELD_BYTES`].
    pub(crate) fn bound(&mut self) {
        self.at_ms = self.at_ms.min(MAX_AT_MS);
        truncate(&mut self.actor);
        truncate(&mut self.action);
        truncate(&mut self.resource);
        if let Some(detail) = &mut self.detail {
            truncate(detail);
        }
    }
}

fn truncate(text: &mut String) {
    if text.len() > MAX_FIELD_BYTES {
        let end = text.floor_char_boundary(MAX_FIELD_BYTES);
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_serializes_lowercase() {
        assert_eq!(
            serde_json::to_string(&Outcome::Denied).unwrap(),
            "\"denied\""
        );
        let parsed: Outcome = serde_json::from_str("\"failed\"").unwrap();
        assert_eq!(parsed, Outcome::Failed);
    }

    #[test]
    fn bound_cuts_long_fields_at_char_boundaries() {
        let mut event = AuditEvent::new("a".repeat(5000), "login", "user/a", Outcome::Success)
            .with_detail("é".repeat(MAX_FIELD_BYTES));
        event.at_ms = u64::MAX;
        event.bound();
        assert_eq!(event.actor.len(), MAX_FIELD_BYTES);
        let detail = event.detail.unwrap();
        assert!(detail.len() <= MAX_FIELD_BYTES && detail.chars().all(|c| c == 'é'));
        assert_eq!(event.at_ms, MAX_AT_MS);
        assert_eq!(event.action, "login");
    }
}
