//! Reading the log back: filters, and the forward scan that keeps the newest matches.

use std::collections::VecDeque;

use wharf_store::{ListOptions, Store, StoreError};

use crate::keys;
use crate::{AuditEvent, Outcome};

/// Most events one query returns; larger limits are lowered to it.
pub const MAX_QUERY_LIMIT: usize = 10_000;

/// The limit of [`AuditQuery::default`].
pub const DEFAULT_QUERY_LIMIT: usize = 100;

/// Keys read per store round trip while scanning.
const SCAN_PAGE: usize = 1000;

/// Which events [`crate::AuditLog::query`] returns. Unset filters match everything.
///
/// ```
/// use wharf_audit::{AuditQuery, Outcome};
/// let denied_pushes_in_proj = AuditQuery {
///     action: Some("artifact.*".into()),
///     project: Some("proj".into()),
///     outcome: Some(Outcome::Denied),
///     ..AuditQuery::default()
/// };
/// # let _ = denied_pushes_in_proj;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Exactly this actor.
    pub actor: Option<String>,
    /// Exactly this action, or, when it ends in `.` or `*`, actions starting
    /// with what precedes the `*`: `"artifact.*"` and `"artifact."` both match
    /// `"artifact.push"` but not `"artifact"`; `"*"` matches all.
    pub action: Option<String>,
    /// Resources starting with this text.
    pub resource_prefix: Option<String>,
    /// Resources of this project: `"<project>/..."` (repositories) and
    /// `"project/<project>"` or `"project/<project>/..."` (the project itself).
    pub project: Option<String>,
    /// Exactly this outcome.
    pub outcome: Option<Outcome>,
    /// Events at or after this unix millisecond.
    pub since_ms: Option<u64>,
    /// Events at or before this unix millisecond.
    pub until_ms: Option<u64>,
    /// Most events returned, newest first; lowered to [`MAX_QUERY_LIMIT`]; 0 returns none.
    pub limit: usize,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            actor: None,
            action: None,
            resource_prefix: None,
            project: None,
            outcome: None,
            since_ms: None,
            until_ms: None,
            limit: DEFAULT_QUERY_LIMIT,
        }
    }
}

impl AuditQuery {
    /// Whether `event` passes every filter except the time range, which the
    /// scan applies on keys.
    fn matches(&self, event: &AuditEvent) -> bool {
        self.actor
            .as_ref()
            .is_none_or(|actor| *actor == event.actor)
            && self
                .action
                .as_ref()
                .is_none_or(|pattern| action_matches(pattern, &event.action))
            && self
                .resource_prefix
                .as_ref()
                .is_none_or(|prefix| event.resource.starts_with(prefix.as_str()))
            && self
                .project
                .as_ref()
                .is_none_or(|project| project_matches(project, &event.resource))
            && self.outcome.is_none_or(|outcome| outcome == event.outcome)
    }
}

fn action_matches(pattern: &str, action: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        action.starts_with(prefix)
    } else if pattern.ends_with('.') {
        action.starts_with(pattern)
    } else {
        action == pattern
    }
}

fn project_matches(project: &str, resource: &str) -> bool {
    let in_project = |rest: Option<&str>| rest.is_some_and(|rest| rest.starts_with('/'));
    in_project(resource.strip_prefix(project))
        || resource
            .strip_prefix("project/")
            .and_then(|rest| rest.strip_prefix(project))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Scans the query's time range forward and keeps the last `limit` matches.
///
/// The `Store` only lists forward, so newest-first means reading the whole
/// range; a bounded deque keeps memory at `limit` events whatever its size.
pub(crate) async fn run(
    store: &dyn Store,
    query: &AuditQuery,
) -> Result<Vec<AuditEvent>, StoreError> {
    let limit = query.limit.min(MAX_QUERY_LIMIT);
    let until = query.until_ms.unwrap_or(u64::MAX);
    if limit == 0 || query.since_ms.is_some_and(|since| since > until) {
        return Ok(Vec::new());
    }
    let mut newest = VecDeque::with_capacity(limit);
    let mut start_after = query.since_ms.map(keys::time_floor);
    loop {
        let page = store
            .list(
                keys::PREFIX,
                ListOptions {
                    start_after: start_after.take(),
                    limit: Some(SCAN_PAGE),
                },
            )
            .await?;
        for kv in &page.items {
            let Some(at_ms) = keys::key_time(&kv.key) else {
                continue;
            };
            if at_ms > until {
                return Ok(newest.into_iter().rev().collect());
            }
            let event: AuditEvent = match serde_json::from_slice(&kv.value) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(key = %kv.key, %error, "skipping unreadable audit record");
                    continue;
                }
            };
            if query.matches(&event) {
                if newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(event);
            }
        }
        if !page.more {
            return Ok(newest.into_iter().rev().collect());
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_patterns() {
        assert!(action_matches("login", "login"));
        assert!(!action_matches("login", "login.failed"));
        assert!(action_matches("artifact.*", "artifact.push"));
        assert!(action_matches("artifact.", "artifact.pull"));
        assert!(!action_matches("artifact.*", "artifact"));
        assert!(!action_matches("artifact.*", "artifacts.push"));
        assert!(action_matches("*", "member.add"));
    }

    #[test]
    fn project_resources() {
        for resource in [
            "proj/app:v1",
            "proj/team/app@sha256:ab",
            "project/proj",
            "project/proj/member/alice",
        ] {
            assert!(project_matches("proj", resource), "{resource}");
        }
        for resource in [
            "projx/app:v1",
            "proj",
            "project/projx",
            "user/proj",
            "other/proj/app",
        ] {
            assert!(!project_matches("proj", resource), "{resource}");
        }
    }
}
