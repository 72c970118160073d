//! Token subjects: whom a token names right now. A token is accepted only
//! while its subject is the very account it was issued to, in the same
//! epoch, so disabled, deleted, expired or re-keyed accounts lose their
//! tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Identity;
use super::robots::robot_principal;
use super::users::user_principal;
use crate::AuthError;
use crate::model::Principal;
use crate::names::is_robot_name;
use crate::token::Claims;

const SUBJECT_CACHE_TTL: Duration = Duration::from_secs(1);

/// What a token's subject is right now: enough to tell whether a token
/// still belongs to it.
#[derive(Clone, Debug)]
struct Subject {
    principal: Principal,
    epoch: u64,
    /// Whether the account record predates uids (its uid is derived).
    legacy: bool,
    /// Creation time, unix seconds.
    created_secs: u64,
}

impl Subject {
    /// Whether `claims` were issued to this very account, in its current
    /// epoch. Tokens from before uids existed carry none; they are taken
    /// only for accounts from that time too, and only if issued no earlier
    /// than the account was created (so never one of a deleted predecessor).
    fn issued(&self, claims: &Claims) -> bool {
        let same_account = if claims.uid.is_empty() {
            self.legacy && claims.iat >= self.created_secs
        } else {
            claims.uid == self.principal.uid()
        };
        same_account && claims.epoch == self.epoch
    }
}

/// Whom a token subject is right now, for a moment: reading the account on
/// every request would put a store read on the registry's hottest path.
/// Local account changes clear it at once; other replicas see them within
/// `SUBJECT_CACHE_TTL`.
#[derive(Default)]
pub(super) struct SubjectCache {
    entries: Mutex<HashMap<String, (Instant, Subject)>>,
}

impl SubjectCache {
    /// The subject named `name`, if it was resolved a moment ago.
    fn fresh(&self, name: &str) -> Option<Subject> {
        let entries = self.entries.lock().expect("subject cache");
        match entries.get(name) {
            Some((at, subject)) if at.elapsed() < SUBJECT_CACHE_TTL => Some(subject.clone()),
            _ => None,
        }
    }

    fn insert(&self, name: &str, subject: Subject) {
        self.entries
            .lock()
            .expect("subject cache")
            .insert(name.to_string(), (Instant::now(), subject));
    }

    fn clear(&self) {
        self.entries.lock().expect("subject cache").clear();
    }
}

impl Identity {
    /// Resolves a token's subject, so that disabled, deleted, expired or
    /// re-keyed accounts lose their tokens (at once on this server), and a
    /// deleted account's tokens stay dead when its name is taken again.
    pub(super) async fn principal_of(&self, claims: &Claims) -> Result<Principal, AuthError> {
        let revoked = || AuthError::Unauthenticated("token revoked".into());
        if claims.sub.is_empty() {
            return Ok(Principal::Anonymous);
        }
        let subject = match self.subjects.fresh(&claims.sub) {
            Some(subject) => subject,
            None => {
                let subject = self
                    .load_subject(&claims.sub)
                    .await
                    .map_err(|_| revoked())?;
                self.subjects.insert(&claims.sub, subject.clone());
                subject
            }
        };
        if !subject.issued(claims) {
            return Err(revoked());
        }
        Ok(subject.principal)
    }

    /// The subject as it is now; fails for deleted, disabled or expired
    /// accounts.
    async fn load_subject(&self, name: &str) -> Result<Subject, AuthError> {
        if is_robot_name(name) {
            let (record, _) = self.robot_record(name).await?;
            return Ok(Subject {
                principal: robot_principal(&record)?,
                epoch: record.epoch,
                legacy: record.uid.is_empty(),
                created_secs: record.created_at / 1000,
            });
        }
        let (record, _) = self.user_record(name).await?;
        if record.disabled {
            return Err(AuthError::Unauthenticated(format!(
                "account {name} is disabled"
            )));
        }
        Ok(Subject {
            principal: user_principal(&record),
            epoch: record.epoch,
            legacy: record.uid.is_empty(),
            created_secs: record.created_at / 1000,
        })
    }

    /// Forgets cached subjects after an account change on this server.
    pub(super) fn accounts_changed(&self) {
        self.subjects.clear();
    }
}
