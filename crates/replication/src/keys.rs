//! Where replication state lives in the `Store`.
//!
//! ```text
//! /replication/endpoints/<name>          Endpoint (password sealed)
//! /replication/policies/<name>           Policy
//! /replication/jobs/<id>                 Job        (ids sort by creation time)
//! /replication/tasks/<id>/<index>        Task
//! /replication/active/<id>               marker of an unfinished job
//! ```
//!
//! A job's tasks are written before its active marker, so the executor
//! never sees a job without its tasks; the marker goes in the same
//! transaction that records the job's final state.

use serde::Serialize;
use serde::de::DeserializeOwned;

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

pub(crate) fn job(id: &str) -> String {
    format!("{JOBS}{id}")
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

/// Unix time in milliseconds.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
