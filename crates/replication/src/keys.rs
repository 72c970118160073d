//! Where replication state lives in the `Store`.
//!
//! ```text
//! /replication/endpoints/<name>          Endpoint (password sealed)
//! /replication/policies/<name>           Policy
//! /replication/jobs/<inverted ms>-<id>   Job        (newest first)
//! /replication/tasks/<id>/<index>        Task
//! /replication/active/<id>               marker of an unfinished job
//! ```
//!
//! A job's tasks are written before its active marker, so the executor
//! never sees a job without its tasks; the marker goes in the same
//! transaction that records the job's final state.

use serde::Serialize;
use serde::de::DeserializeOwned;
use wharf_store::{KeyValue, Store};

use crate::ReplicationError;

pub(crate) const ENDPOINTS: &str = "/replication/endpoints/";
pub(crate) const POLICIES: &str = "/replication/policies/";
pub(crate) const JOBS: &str = "/replication/jobs/";
pub(crate) const ACTIVE: &str = "/replication/active/";

pub(crate) fn endpoint(name: &str) -> String {
    format!("{ENDPOINTS}{name}")
}

pub(crate) fn policy(name: &str) -> String {
    format!("{POLICIES}{name}")
}

/// Subtracting creation times from this sorts the newest job first.
const NEWEST_FIRST: u64 = 9_999_999_999_999;

/// A job's key: its creation time (the first 13 digits of its id)
/// inverted in front, so that listings read the latest jobs first.
pub(crate) fn job(id: &str) -> String {
    let millis: u64 = id.get(..13).and_then(|m| m.parse().ok()).unwrap_or(0);
    format!("{JOBS}{:013}-{id}", NEWEST_FIRST.saturating_sub(millis))
}

/// The key after which jobs created before `millis` are listed.
pub(crate) fn jobs_before(millis: u64) -> String {
    format!("{JOBS}{:013}", NEWEST_FIRST.saturating_sub(millis))
}

/// Whether `id` has the shape of a job id (digits, hex and dashes).
pub(crate) fn is_job_id(id: &str) -> bool {
    (13..=40).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

pub(crate) fn tasks_of(job: &str) -> String {
    format!("/replication/tasks/{job}/")
}

pub(crate) fn task(job: &str, index: u32) -> String {
    format!("/replication/tasks/{job}/{index:06}")
}

pub(crate) fn active(job: &str) -> String {
    format!("{ACTIVE}{job}")
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ReplicationError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ReplicationError::Internal(format!("corrupt record at {key}: {e}")))
}

/// A stored record and its key-value, or `NotFound` naming `kind` and `name`.
pub(crate) async fn read<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
    kind: &'static str,
    name: &str,
) -> Result<(KeyValue, T), ReplicationError> {
    let kv = store.get(key).await?.ok_or_else(|| not_found(kind, name))?;
    let value = decode(key, &kv.value)?;
    Ok((kv, value))
}

pub(crate) fn not_found(kind: &'static str, name: &str) -> ReplicationError {
    ReplicationError::NotFound {
        kind,
        name: name.to_string(),
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_jobs_sort_first_and_ids_are_checked() {
        let older = job("1795317499803-000001-90c9");
        let newer = job("1795317499900-000000-0001");
        assert!(newer < older);
        assert!(older > jobs_before(1795317499900));
        assert!(newer > jobs_before(1795317499901) && newer < jobs_before(1795317499899));
        assert!(is_job_id("1795317499803-000001-90c9"));
        assert!(!is_job_id("../../endpoints/x"));
        assert!(!is_job_id("12"));
    }
}
