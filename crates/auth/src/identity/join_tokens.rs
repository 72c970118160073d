//! Join tokens: single-use, expiring secrets with which a new machine
//! joins one pool and gets its own node credential (a `robot$node+<node>`
//! robot, see [`Identity::create_node_robot`]).
//!
//! ```text
//! /auth/jointokens/<sha256 hex of the token>   JoinTokenRecord
//! /auth/nodepools/<node>                        the pool it joined
//! ```
//!
//! Why SHA-256 and not argon2 as for passwords: a token is 256 random
//! bits, which no one guesses however fast the hash, so a slow hash adds
//! nothing; a fast, unsalted one lets the hash be the key, so a token is
//! found with one read. Redeeming marks the record used by
//! compare-and-swap: of two machines racing with one token exactly one
//! wins.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_oci::{Digest, DigestAlgorithm};
use wharf_store::StoreExt;

use super::records::encode;
use super::{Identity, now_millis};
use crate::AuthError;
use crate::model::{Principal, Robot};
use crate::names::{check_user_name, robot_name};

const JOIN_TOKENS: &str = "/auth/jointokens/";
/// The pool each joined node's credential is bound to: a token is for one
/// pool, so the credential it gives registers the node in that pool only.
const NODE_POOLS: &str = "/auth/nodepools/";
/// The longest a join token lives: it is a secret in a shell history or
/// a machine image, so it should not outlive the rollout it was made for.
const MAX_JOIN_TTL: Duration = Duration::from_secs(30 * 86_400);
/// How long a token's record stays after it expired, so that a late
/// attempt still hears "expired" or "already used (by node X)".
const EXPIRED_KEPT: Duration = Duration::from_secs(86_400);
/// Every join token starts so, to be recognisable in logs and scanners.
const TOKEN_PREFIX: &str = "wjt_";

/// A join token as stored: never the token itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct JoinTokenRecord {
    pool: String,
    expires_at: u64,
    created_by: String,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_at: Option<u64>,
}

/// A join token as shown to people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    /// The pool a node joining with it belongs to.
    pub pool: String,
    /// Unix milliseconds after which it is refused.
    pub expires_at: u64,
}

/// What redeeming a join token gives a new node.
#[derive(Clone, Debug)]
pub struct NodeJoin {
    /// The node's pool.
    pub pool: String,
    /// Its credential.
    pub robot: Robot,
    /// The credential's secret (not stored; shown once).
    pub secret: String,
}

fn refused(why: &str) -> AuthError {
    AuthError::Unauthenticated(format!("join token {why}"))
}

fn key_of(token: &str) -> String {
    let digest = Digest::of(DigestAlgorithm::Sha256, token.as_bytes());
    format!("{JOIN_TOKENS}{}", digest.hex())
}

impl Identity {
    /// A new join token for `pool`, valid for `ttl`, recorded as made by
    /// `creator` (a principal's name, or `pool-autoscaler`); returns it
    /// and the token, which is not stored and cannot be shown again.
    pub async fn create_join_token(
        &self,
        creator: &str,
        pool: &str,
        ttl: Duration,
    ) -> Result<(JoinToken, String), AuthError> {
        if ttl.is_zero() || ttl > MAX_JOIN_TTL {
            return Err(AuthError::Invalid(format!(
                "a join token's ttl is above 0 and at most {} days",
                MAX_JOIN_TTL.as_secs() / 86_400
            )));
        }
        let token = {
            use base64::Engine;
            let random = rand::random::<[u8; 32]>();
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
            format!("{TOKEN_PREFIX}{text}")
        };
        let now = now_millis();
        let record = JoinTokenRecord {
            pool: pool.to_string(),
            expires_at: now + ttl.as_millis() as u64,
            created_by: creator.to_string(),
            created_at: now,
            used_by: None,
            used_at: None,
        };
        if self
            .store
            .create(&key_of(&token), encode(&record))
            .await?
            .is_none()
        {
            return Err(AuthError::Internal("join token collision; retry".into()));
        }
        let shown = JoinToken {
            pool: record.pool,
            expires_at: record.expires_at,
        };
        // Each new token clears out the long-expired ones, so records stay
        // as many as the tokens of the last day or so.
        if let Err(err) = self.prune_join_tokens(now).await {
            tracing::warn!(error = %err, "could not remove expired join tokens");
        }
        Ok((shown, token))
    }

    /// Deletes the records of tokens that expired more than a day before
    /// `now` (unix ms), used or not; returns how many.
    pub async fn prune_join_tokens(&self, now: u64) -> Result<usize, AuthError> {
        let kept = EXPIRED_KEPT.as_millis() as u64;
        let mut pruned = 0;
        for kv in self.store.list_all(JOIN_TOKENS, 1000).await? {
            let Ok(record) = serde_json::from_slice::<JoinTokenRecord>(&kv.value) else {
                continue;
            };
            let stale = record.expires_at.saturating_add(kept) < now;
            // Conditional: a record redeemed meanwhile is looked at again next time.
            if stale && self.store.delete_if(&kv.key, kv.mod_revision).await? {
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Checks that `token` could still be redeemed (known, unused, not
    /// expired) without redeeming it: what the join script's download of
    /// the agent binary is authorized by.
    pub async fn check_join_token(&self, token: &str) -> Result<JoinToken, AuthError> {
        let (record, _) = self.usable_join_token(&key_of(token)).await?;
        Ok(JoinToken {
            pool: record.pool,
            expires_at: record.expires_at,
        })
    }

    async fn usable_join_token(&self, key: &str) -> Result<(JoinTokenRecord, u64), AuthError> {
        let Some((record, revision)) = self.read::<JoinTokenRecord>(key).await? else {
            return Err(refused("not recognised"));
        };
        if let Some(by) = &record.used_by {
            return Err(refused(&format!("already used (by node {by})")));
        }
        if record.expires_at <= now_millis() {
            return Err(refused("expired: ask for a new join command"));
        }
        Ok((record, revision))
    }

    /// Redeems `token` for node `node`: marks it used (once, by
    /// compare-and-swap) and creates the node's credential. Unknown,
    /// expired and used tokens are refused, each with its reason.
    pub async fn redeem_join_token(&self, token: &str, node: &str) -> Result<NodeJoin, AuthError> {
        check_user_name(node)
            .map_err(|_| AuthError::Invalid(format!("invalid node name {node:?}")))?;
        let key = key_of(token);
        let (mut record, revision) = self.usable_join_token(&key).await?;
        let credential = robot_name("node", node)?;
        if self.robot(&credential).await.is_ok() {
            return Err(AuthError::Conflict(format!(
                "node {node} already has a credential: decommission it before it joins again"
            )));
        }
        record.used_by = Some(node.to_string());
        record.used_at = Some(now_millis());
        if self
            .store
            .put_if(&key, encode(&record), revision)
            .await?
            .is_none()
        {
            // The only change a record sees is its use.
            return Err(refused("already used (by another node, just now)"));
        }
        let joiner = Principal::Anonymous;
        let (robot, secret) = self.create_node_robot(&joiner, node).await?;
        // After the credential, which only one redeemer gets; before its
        // secret is shown, so it is never used unbound.
        let binding = format!("{NODE_POOLS}{node}");
        self.store
            .put(&binding, record.pool.as_bytes().to_vec())
            .await?;
        Ok(NodeJoin {
            pool: record.pool,
            robot,
            secret,
        })
    }

    /// The pool node `node` joined with a join token, which its credential
    /// may register it in only; `None` for a node that did not join so.
    pub async fn joined_pool(&self, node: &str) -> Result<Option<String>, AuthError> {
        let value = self.store.get(&format!("{NODE_POOLS}{node}")).await?;
        Ok(value.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }
}
