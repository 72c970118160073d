//! Throttling of failed logins, per account and per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per window before further attempts are refused.
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    /// Failures per account within `window`.
    pub per_account: u32,
    /// Failures per source address within `window`.
    pub per_address: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_account: 5,
            per_address: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// Counts recent failures; cheap enough to consult before hashing anything.
pub(crate) struct LoginLimiter {
    limits: LoginLimits,
    failures: Mutex<HashMap<Key, Vec<Instant>>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

impl LoginLimiter {
    pub(crate) fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter {
            limits,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` when the account or address must wait before trying again.
    pub(crate) fn check(&self, account: &str, address: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        self.limited_keys(account, address)
            .filter_map(|(key, limit)| {
                let times = failures.get_mut(&key)?;
                times.retain(|t| now.duration_since(*t) < self.limits.window);
                (times.len() as u32 >= limit)
                    .then(|| self.limits.window - now.duration_since(times[0]))
            })
            .max()
    }

    /// Records a failed attempt.
    pub(crate) fn failed(&self, account: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        // Bound memory under a flood of distinct names: forget the oldest state.
        if failures.len() > 100_000 {
            failures.clear();
        }
        for (key, _) in self.limited_keys(account, address) {
            failures.entry(key).or_default().push(now);
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub(crate) fn succeeded(&self, account: &str) {
        self.failures
            .lock()
            .expect("limiter lock")
            .remove(&Key::Account(account.to_string()));
    }

    fn limited_keys(
        &self,
        account: &str,
        address: Option<IpAddr>,
    ) -> impl Iterator<Item = (Key, u32)> {
        let account = (Key::Account(account.to_string()), self.limits.per_account);
        let address = address.map(|a| (Key::Address(a), self.limits.per_address));
        std::iter::once(account).chain(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_account_and_address() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_account: 3,
            per_address: 5,
            window: Duration::from_secs(60),
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check("alice", Some(ip)).is_none());
            limiter.failed("alice", Some(ip));
        }
        assert!(limiter.check("alice", Some(ip)).is_some(), "account limit");
        assert!(
            limiter.check("bob", None).is_none(),
            "other accounts unaffected"
        );
        limiter.failed("bob", Some(ip));
        limiter.failed("carol", Some(ip));
        assert!(limiter.check("dave", Some(ip)).is_some(), "address limit");
        assert!(
            limiter
                .check("dave", Some("10.0.0.2".parse().unwrap()))
                .is_none()
        );
        limiter.succeeded("alice");
        assert!(limiter.check("alice", None).is_none());
    }
}
