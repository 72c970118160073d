//! Logins: a user's password or a robot's secret checked, with failed
//! attempts throttled.

use std::net::IpAddr;

use serde::de::DeserializeOwned;

use super::Identity;
use super::records::{ROBOTS, USERS};
use super::robots::robot_principal;
use super::users::user_principal;
use crate::AuthError;
use crate::model::{Principal, RobotRecord, UserRecord};
use crate::names::is_robot_name;
use crate::password::{self, verify_blocking};

/// Longest user name or password looked at; longer credentials are refused unread.
const MAX_CREDENTIAL: usize = 1024;

impl Identity {
    /// Checks a user's password or a robot's secret. Failures are throttled
    /// per account and per `source` address.
    pub async fn authenticate(
        &self,
        name: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        if name.is_empty() || name.len() > MAX_CREDENTIAL || secret.len() > MAX_CREDENTIAL {
            return Err(refused());
        }
        if let Some(wait) = self.limiter.check(name, source) {
            return Err(AuthError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let outcome = if is_robot_name(name) {
            self.authenticate_robot(name, secret).await
        } else {
            self.authenticate_user(name, secret).await
        };
        match &outcome {
            Ok(_) => self.limiter.succeeded(name),
            Err(AuthError::Unauthenticated(_)) => self.limiter.failed(name, source),
            Err(_) => {}
        }
        outcome
    }

    async fn authenticate_user(&self, name: &str, password: &str) -> Result<Principal, AuthError> {
        let key = format!("{USERS}{name}");
        let record = self
            .matching_record(&key, password, |r: &UserRecord| &r.password_hash)
            .await?;
        match record {
            Some(record) if !record.disabled => Ok(user_principal(&record)),
            Some(record) => Err(AuthError::Unauthenticated(format!(
                "account {} is disabled",
                record.name
            ))),
            None => Err(refused()),
        }
    }

    async fn authenticate_robot(&self, name: &str, secret: &str) -> Result<Principal, AuthError> {
        let key = format!("{ROBOTS}{name}");
        let record = self
            .matching_record(&key, secret, |r: &RobotRecord| &r.secret_hash)
            .await?;
        record.map_or_else(|| Err(refused()), |r| robot_principal(&r))
    }

    /// The account record at `key` if `secret` matches the hash `hash_of`
    /// finds in it. Without a record a decoy hash is checked all the same:
    /// unknown names cost the same time as wrong secrets.
    async fn matching_record<T: DeserializeOwned>(
        &self,
        key: &str,
        secret: &str,
        hash_of: fn(&T) -> &str,
    ) -> Result<Option<T>, AuthError> {
        let record = self.read::<T>(key).await?.map(|(r, _)| r);
        let hash = record.as_ref().map_or_else(
            || password::decoy_hash().to_string(),
            |r| hash_of(r).to_string(),
        );
        let matches = verify_blocking(secret.to_string(), hash).await?;
        Ok(record.filter(|_| matches))
    }
}

/// The refusal of a wrong name or secret: the same for both, so that it
/// does not tell which names exist.
fn refused() -> AuthError {
    AuthError::Unauthenticated("invalid username or password".into())
}
