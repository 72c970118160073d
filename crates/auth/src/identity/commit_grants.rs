//! Commit push grants: a node's credential (`robot$node+<node>`) pulls
//! everywhere and pushes nowhere, except while a `wharf commit` the server
//! authorized runs on that node: then it may push to exactly the one
//! repository the commit targets, for a short while.
//!
//! ```text
//! /auth/commitgrants/<node>/<repository>#<id>   CommitGrantRecord
//! ```
//!
//! One record per commit (`#` never occurs in a repository name, so the
//! prefix `<node>/<repository>#` names one repository exactly, never a
//! longer one below it): two commits to one repository from one node do
//! not end each other's grant. A record counts only until it expires, and
//! is removed when its commit ends; records left by an agent that died
//! are swept when the node is granted again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_oci::RepositoryName;
use wharf_store::StoreExt;

use super::records::encode;
use super::{Identity, now_millis};
use crate::AuthError;

const COMMIT_GRANTS: &str = "/auth/commitgrants/";

/// The longest a grant may live: long enough to compress and push a big
/// layer, short enough that a forgotten one soon means nothing.
pub const MAX_COMMIT_GRANT_TTL: Duration = Duration::from_secs(60 * 60);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommitGrantRecord {
    expires_at: u64,
    /// Who asked for the commit (for the record; the grant is the node's).
    granted_for: String,
}

/// A node's leave to push to one repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitGrant {
    /// The node.
    pub node: String,
    /// The one repository it may push to.
    pub repository: String,
    /// This grant, among others for the same repository.
    pub id: String,
    /// Unix milliseconds after which it counts no more.
    pub expires_at: u64,
}

fn prefix_of(node: &str, repository: &RepositoryName) -> String {
    format!("{COMMIT_GRANTS}{node}/{repository}#")
}

impl Identity {
    /// Lets node `node`'s credential push to `repository` for `ttl` (at
    /// most [`MAX_COMMIT_GRANT_TTL`]), for a commit asked by `granted_for`.
    /// The caller has checked that `granted_for` may push there.
    pub async fn grant_commit_push(
        &self,
        node: &str,
        repository: &RepositoryName,
        granted_for: &str,
        ttl: Duration,
    ) -> Result<CommitGrant, AuthError> {
        crate::names::check_user_name(node)?;
        self.sweep_commit_grants(node).await?;
        let id = format!("{:016x}", rand::random::<u64>());
        let expires_at = now_millis() + ttl.min(MAX_COMMIT_GRANT_TTL).as_millis() as u64;
        let record = CommitGrantRecord {
            expires_at,
            granted_for: granted_for.to_string(),
        };
        let key = format!("{}{id}", prefix_of(node, repository));
        self.store.put(&key, encode(&record)).await?;
        Ok(CommitGrant {
            node: node.to_string(),
            repository: repository.to_string(),
            id,
            expires_at,
        })
    }

    /// Ends grant `id` of `node` on `repository` (a grant already gone is fine).
    pub async fn revoke_commit_push(
        &self,
        node: &str,
        repository: &RepositoryName,
        id: &str,
    ) -> Result<(), AuthError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(AuthError::Invalid(format!("invalid grant id {id:?}")));
        }
        self.store
            .delete(&format!("{}{id}", prefix_of(node, repository)))
            .await?;
        Ok(())
    }

    /// Whether node `node` holds a live grant to push to `repository`.
    pub async fn commit_push_granted(
        &self,
        node: &str,
        repository: &RepositoryName,
    ) -> Result<bool, AuthError> {
        let now = now_millis();
        let grants: Vec<CommitGrantRecord> = self.list(&prefix_of(node, repository)).await?;
        Ok(grants.iter().any(|g| g.expires_at > now))
    }

    /// Removes `node`'s expired grants (left by commits that never ended).
    async fn sweep_commit_grants(&self, node: &str) -> Result<(), AuthError> {
        let now = now_millis();
        let prefix = format!("{COMMIT_GRANTS}{node}/");
        for kv in self.store.list_all(&prefix, 1000).await? {
            let expired = serde_json::from_slice::<CommitGrantRecord>(&kv.value)
                .map_or(true, |g| g.expires_at <= now);
            if expired {
                self.store.delete_if(&kv.key, kv.mod_revision).await?;
            }
        }
        Ok(())
    }
}
