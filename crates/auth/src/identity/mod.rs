//! The identity service: accounts, projects, memberships, robots, logins,
//! token issue and verification, and the access policy joining them.
//!
//! One [`Identity`] serves them all; each concern has its own module with
//! its own `impl Identity` block. State that is really separate is owned by
//! its own object: the login throttle ([`LoginLimiter`]), the tokens this
//! server signed ([`SignedTokens`]) and the token subjects it resolved
//! lately ([`SubjectCache`]). Everything else lives in the [`Store`].

mod access;
mod commit_grants;
mod join_tokens;
mod logins;
mod projects;
mod records;
mod robots;
mod settings;
mod subjects;
mod tokens;
mod users;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wharf_store::Store;

use crate::ratelimit::{LoginLimiter, LoginLimits};
use crate::token::TokenKeys;
use subjects::SubjectCache;
use tokens::SignedTokens;

pub use access::Scope;
pub use commit_grants::{CommitGrant, MAX_COMMIT_GRANT_TTL};
pub use join_tokens::{JoinToken, NodeJoin};
pub use tokens::{API_AUDIENCE, IssuedToken};

/// Lifetimes and names.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The registry's service name (the `service` of challenges and tokens).
    pub service: String,
    /// Lifetime of registry tokens.
    pub registry_token_ttl: Duration,
    /// Lifetime of API access tokens.
    pub api_token_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_token_ttl: Duration,
    /// Failed-login throttling.
    pub login_limits: LoginLimits,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            service: "wharf".into(),
            registry_token_ttl: Duration::from_secs(5 * 60),
            api_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            login_limits: LoginLimits::default(),
        }
    }
}

/// Accounts, projects and access. Cheap to share behind an `Arc`.
pub struct Identity {
    store: Arc<dyn Store>,
    config: IdentityConfig,
    limiter: LoginLimiter,
    tokens: SignedTokens,
    subjects: SubjectCache,
}

impl Identity {
    /// An identity service over `store`, signing with `keys`.
    pub fn new(store: Arc<dyn Store>, keys: TokenKeys, config: IdentityConfig) -> Identity {
        let limiter = LoginLimiter::new(config.login_limits);
        Identity {
            store,
            config,
            limiter,
            tokens: SignedTokens::new(keys),
            subjects: SubjectCache::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// The key this server signs its tokens with (and P2P peer grants).
    pub fn token_keys(&self) -> &TokenKeys {
        self.tokens.keys()
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_secs() -> u64 {
    now_millis() / 1000
}
