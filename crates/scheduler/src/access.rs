//! Machine permissions: which projects may place pods on which pools, and
//! how much of a pool each may request.
//!
//! A node whose `wharf.io/pool` names a managed pool takes only pods of
//! projects holding a grant on it; nodes outside managed pools take any
//! pod. A grant's quota bounds the sum of the requests of the project's
//! pods on the pool's nodes, the new pod included.

use std::collections::{BTreeMap, HashMap};

use crate::Resources;

/// Limits of one grant; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PoolQuota {
    /// CPU millicores.
    pub cpu_millis: Option<u64>,
    /// Memory bytes.
    pub memory_bytes: Option<u64>,
    /// Pods.
    pub pods: Option<u32>,
}

impl PoolQuota {
    /// The first resource that `used + wanted` takes past the quota, with
    /// the limit as text: `("cpu", "4000m")`.
    pub fn exceeded_by(
        &self,
        used: Resources,
        wanted: Resources,
    ) -> Option<(&'static str, String)> {
        let over = |limit: Option<u64>, used: u64, wanted: u64| {
            limit.filter(|&limit| used.saturating_add(wanted) > limit)
        };
        if let Some(limit) = over(self.cpu_millis, used.cpu_millis, wanted.cpu_millis) {
            return Some(("cpu", format!("{limit}m")));
        }
        if let Some(limit) = over(self.memory_bytes, used.memory_bytes, wanted.memory_bytes) {
            return Some(("memory", format!("{limit} bytes")));
        }
        let pods = self.pods.map(u64::from);
        if let Some(limit) = over(pods, u64::from(used.pods), u64::from(wanted.pods)) {
            return Some(("pods", limit.to_string()));
        }
        None
    }
}

/// The managed pools and the grants on them.
///
/// ```
/// use wharf_scheduler::{PoolAccess, PoolQuota};
/// let access = PoolAccess::default()
///     .with_pool("core")
///     .with_grant("batch", "shop", PoolQuota::default());
/// assert!(!access.allows("core", "shop"));
/// assert!(access.allows("batch", "shop"));
/// assert!(access.allows("unmanaged", "shop"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolAccess {
    /// Pool -> project -> quota.
    pools: HashMap<String, BTreeMap<String, PoolQuota>>,
}

impl PoolAccess {
    /// The same access with pool `pool` managed (granted to nobody yet).
    pub fn with_pool(mut self, pool: impl Into<String>) -> Self {
        self.pools.entry(pool.into()).or_default();
        self
    }

    /// The same access with `project` granted `pool` (which becomes managed).
    pub fn with_grant(
        mut self,
        pool: impl Into<String>,
        project: impl Into<String>,
        quota: PoolQuota,
    ) -> Self {
        self.pools
            .entry(pool.into())
            .or_default()
            .insert(project.into(), quota);
        self
    }

    /// Whether no pool is managed (then every node takes every pod).
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// Whether a pod of `project` may go to a node of `pool`.
    pub fn allows(&self, pool: &str, project: &str) -> bool {
        self.pools
            .get(pool)
            .is_none_or(|grants| grants.contains_key(project))
    }

    /// The grants of `project` that carry a quota, by pool.
    pub(crate) fn quotas_of<'a>(
        &'a self,
        project: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a PoolQuota)> + 'a {
        self.pools.iter().filter_map(move |(pool, grants)| {
            let quota = grants.get(project)?;
            (*quota != PoolQuota::default()).then_some((pool.as_str(), quota))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_resource_over_its_limit_is_named() {
        let quota = PoolQuota {
            cpu_millis: Some(4000),
            memory_bytes: None,
            pods: Some(2),
        };
        let used = Resources::new(3000, 1 << 30, 1);
        assert_eq!(
            quota.exceeded_by(used, Resources::new(1000, 1 << 40, 1)),
            None
        );
        assert_eq!(
            quota.exceeded_by(used, Resources::new(1001, 0, 1)),
            Some(("cpu", "4000m".to_string()))
        );
        assert_eq!(
            quota.exceeded_by(Resources::new(0, 0, 2), Resources::new(1, 1, 1)),
            Some(("pods", "2".to_string()))
        );
    }

    #[test]
    fn only_managed_pools_ask_for_a_grant() {
        let access = PoolAccess::default()
            .with_pool("core")
            .with_grant("core", "a", PoolQuota::default())
            .with_grant(
                "batch",
                "b",
                PoolQuota {
                    pods: Some(1),
                    ..PoolQuota::default()
                },
            );
        assert!(access.allows("core", "a"));
        assert!(!access.allows("core", "b"));
        assert!(access.allows("other", "b"));
        assert!(!access.is_empty());
        let quotas: Vec<&str> = access.quotas_of("b").map(|(pool, _)| pool).collect();
        assert_eq!(quotas, ["batch"]);
        assert_eq!(access.quotas_of("a").count(), 0);
    }
}
