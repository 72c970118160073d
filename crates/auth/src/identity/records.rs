//! How identities are kept in the [`Store`](wharf_store::Store): one JSON
//! record per key, changed by compare-and-swap.

use serde::Serialize;
use serde::de::DeserializeOwned;
use wharf_store::StoreExt;

use super::Identity;
use crate::AuthError;

pub(super) const USERS: &str = "/auth/users/";
pub(super) const PROJECTS: &str = "/auth/projects/";
pub(super) const MEMBERS: &str = "/auth/members/";
pub(super) const ROBOTS: &str = "/auth/robots/";
pub(super) const SETTINGS: &str = "/auth/settings";

/// Attempts at a compare-and-swap before giving up on a busy record.
const UPDATE_ATTEMPTS: usize = 16;

pub(super) fn member_key(project: &str, user: &str) -> String {
    format!("{MEMBERS}{project}/{user}")
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

impl Identity {
    /// The record at `key` and its revision, if there is one.
    pub(super) async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, AuthError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(|value| Some((value, kv.mod_revision)))
                .map_err(|e| AuthError::Internal(format!("corrupt record {key}: {e}"))),
        }
    }

    /// Every record under `prefix`.
    pub(super) async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, AuthError> {
        self.store
            .list_all(prefix, 1000)
            .await?
            .into_iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value)
                    .map_err(|e| AuthError::Internal(format!("corrupt record {}: {e}", kv.key)))
            })
            .collect()
    }

    /// Changes the record at `key` (`what` names it in errors) by
    /// compare-and-swap, retrying on races. A changed account (user or
    /// robot) must be followed by `accounts_changed`, so that a new epoch or
    /// disabling takes effect at once on this server.
    pub(super) async fn update_record<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        what: &str,
        change: impl Fn(&mut T),
    ) -> Result<T, AuthError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let (mut record, revision) = self
                .read::<T>(key)
                .await?
                .ok_or_else(|| AuthError::NotFound(what.to_string()))?;
            change(&mut record);
            if self
                .store
                .put_if(key, encode(&record), revision)
                .await?
                .is_some()
            {
                return Ok(record);
            }
        }
        Err(AuthError::Internal(format!("{what} keeps changing; retry")))
    }
}
