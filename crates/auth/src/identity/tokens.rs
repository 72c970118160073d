//! Tokens: issuing registry, API and refresh tokens, and verifying them.
//! A token is valid while its signature, kind, audience and lifetime are,
//! and its subject is still the very account it was issued to
//! ([`subjects`](super::subjects)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::{Identity, now_secs};
use crate::AuthError;
use crate::model::{Principal, effective_uid};
use crate::token::{AccessEntry, Claims, TokenKeys, TokenKind};

const ISSUER: &str = "wharf";
/// Audience of API access tokens.
pub const API_AUDIENCE: &str = "wharf-api";
const REFRESH_AUDIENCE: &str = "wharf-refresh";
/// Clock skew tolerated on `nbf`.
const LEEWAY_SECS: u64 = 30;
const TOKEN_CACHE_ENTRIES: usize = 50_000;
/// Lifetime of the API tokens of `metrics:read` robots: Prometheus reads
/// one from a file and cannot refresh it, so it lives until the robot is
/// disabled, deleted or expires (checked on every use).
const METRICS_TOKEN_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A signed token and its lifetime.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Issue time, unix seconds.
    pub issued_at: u64,
}

/// The signing key and the tokens it is known to have signed.
pub(super) struct SignedTokens {
    keys: TokenKeys,
    // Signature checks are the expensive part of a request's authorization;
    // a token verified once is trusted until it expires (revocation is still
    // checked on every use, against the subject's epoch).
    verified: Mutex<HashMap<String, Arc<Claims>>>,
}

impl SignedTokens {
    pub(super) fn new(keys: TokenKeys) -> SignedTokens {
        SignedTokens {
            keys,
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn sign(&self, claims: &Claims) -> String {
        self.keys.sign(claims)
    }

    pub(super) fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The claims of a token this server signed, whatever they say: the
    /// signature is checked once, then the token is remembered.
    fn claims(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let cached = self
            .verified
            .lock()
            .expect("token cache")
            .get(token)
            .cloned();
        if let Some(claims) = cached {
            return Ok(claims);
        }
        let claims = Arc::new(self.keys.verify(token)?);
        let mut cache = self.verified.lock().expect("token cache");
        if cache.len() >= TOKEN_CACHE_ENTRIES {
            let now = now_secs();
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= TOKEN_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }
}

impl Identity {
    /// Who a token of `kind` is for.
    fn audience(&self, kind: TokenKind) -> &str {
        match kind {
            TokenKind::Registry => &self.config.service,
            TokenKind::Api => API_AUDIENCE,
            TokenKind::Refresh => REFRESH_AUDIENCE,
        }
    }

    /// How long a token of `kind` for `principal` lives.
    fn lifetime(&self, kind: TokenKind, principal: &Principal) -> Duration {
        match kind {
            TokenKind::Registry => self.config.registry_token_ttl,
            TokenKind::Api if principal.only_reads_metrics() => METRICS_TOKEN_TTL,
            TokenKind::Api => self.config.api_token_ttl,
            TokenKind::Refresh => self.config.refresh_token_ttl,
        }
    }

    /// The epoch to put in a token for `principal`. Fails when the account
    /// went away, or was replaced by another of the same name, after
    /// `principal` was authenticated: the token would otherwise bind the
    /// new account to credentials checked against the old one.
    async fn epoch_of(&self, principal: &Principal) -> Result<u64, AuthError> {
        let (uid, epoch) = match principal {
            Principal::Anonymous => return Ok(0),
            Principal::User { name, .. } => {
                let (record, _) = self.user_record(name).await?;
                (effective_uid(&record.uid, record.created_at), record.epoch)
            }
            Principal::Robot { name, .. } => {
                let (record, _) = self.robot_record(name).await?;
                (effective_uid(&record.uid, record.created_at), record.epoch)
            }
        };
        if uid != principal.uid() {
            return Err(AuthError::Unauthenticated(format!(
                "account {} was replaced; log in again",
                principal.name()
            )));
        }
        Ok(epoch)
    }

    /// A signed token of `kind` for `principal`, carrying `access`.
    async fn issue(
        &self,
        principal: &Principal,
        kind: TokenKind,
        access: Vec<AccessEntry>,
    ) -> Result<IssuedToken, AuthError> {
        let epoch = self.epoch_of(principal).await?;
        let ttl = self.lifetime(kind, principal);
        let now = now_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: match principal {
                Principal::Anonymous => String::new(),
                other => other.name().to_string(),
            },
            aud: self.audience(kind).to_string(),
            exp: now + ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: format!("{:032x}", rand::random::<u128>()),
            access,
            kind,
            epoch,
            uid: principal.uid().to_string(),
        };
        Ok(IssuedToken {
            issued_at: claims.iat,
            token: self.tokens.sign(&claims),
            expires_in: ttl.as_secs(),
        })
    }

    /// A registry token carrying `access`.
    pub async fn issue_registry_token(
        &self,
        principal: &Principal,
        access: Vec<AccessEntry>,
    ) -> Result<IssuedToken, AuthError> {
        self.issue(principal, TokenKind::Registry, access).await
    }

    /// An API access token.
    pub async fn issue_api_token(&self, principal: &Principal) -> Result<IssuedToken, AuthError> {
        self.issue(principal, TokenKind::Api, Vec::new()).await
    }

    /// A refresh token, exchanged later for access tokens without the password.
    pub async fn issue_refresh_token(
        &self,
        principal: &Principal,
    ) -> Result<IssuedToken, AuthError> {
        if matches!(principal, Principal::Anonymous) {
            return Err(AuthError::Unauthenticated(
                "anonymous callers get no refresh token".into(),
            ));
        }
        self.issue(principal, TokenKind::Refresh, Vec::new()).await
    }

    /// Verifies a registry token for this service.
    pub async fn verify_registry_token(
        &self,
        token: &str,
    ) -> Result<(Arc<Claims>, Principal), AuthError> {
        self.verify(token, TokenKind::Registry).await
    }

    /// Verifies an API access token.
    pub async fn verify_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        Ok(self.verify(token, TokenKind::Api).await?.1)
    }

    /// Verifies a refresh token and returns whom it belongs to.
    pub async fn verify_refresh_token(&self, token: &str) -> Result<Principal, AuthError> {
        Ok(self.verify(token, TokenKind::Refresh).await?.1)
    }

    /// Checks a token of `kind` and resolves whom it belongs to now.
    async fn verify(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<(Arc<Claims>, Principal), AuthError> {
        let claims = self.tokens.claims(token)?;
        let refuse = |why: &str| Err(AuthError::Unauthenticated(why.to_string()));
        let now = now_secs();
        if claims.kind != kind || claims.iss != ISSUER {
            return refuse("token is not valid here");
        }
        if claims.aud != self.audience(kind) {
            return refuse("token was issued for another service");
        }
        if now >= claims.exp {
            return refuse("token expired");
        }
        if now + LEEWAY_SECS < claims.nbf {
            return refuse("token not yet valid");
        }
        let principal = self.principal_of(&claims).await?;
        Ok((claims, principal))
    }

    /// The account a token names, if the token is one this server signed,
    /// whether or not it is still valid: refusals of expired and revoked
    /// tokens are audited under it. A forged token names no one.
    pub fn signed_subject(&self, token: &str) -> Option<String> {
        let claims = self.tokens.claims(token).ok()?;
        (!claims.sub.is_empty()).then(|| claims.sub.clone())
    }
}
