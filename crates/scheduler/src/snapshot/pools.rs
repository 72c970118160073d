//! What each project requests in each pool, for grant quotas.

use std::collections::HashMap;

use crate::filter::FilterReason;
use crate::{PodInfo, PoolAccess, Resources};

/// Requests of the pods counted on pool nodes, per (pool, project).
#[derive(Clone, Debug, Default)]
pub(crate) struct PoolUsage {
    used: HashMap<(String, String), Resources>,
}

impl PoolUsage {
    /// What `project` requests in `pool`.
    pub(crate) fn get(&self, pool: &str, project: &str) -> Resources {
        // Lookups by borrowed pair would need a custom key type; this map
        // is read once per quota-limited grant of a pod, not per node.
        self.used
            .get(&(pool.to_owned(), project.to_owned()))
            .copied()
            .unwrap_or(Resources::ZERO)
    }

    /// Counts `pod` on a node of `pool`.
    pub(crate) fn add(&mut self, pool: Option<&str>, pod: &PodInfo) {
        let (Some(pool), Some(project)) = (pool, pod.project.as_deref()) else {
            return;
        };
        let used = self
            .used
            .entry((pool.to_owned(), project.to_owned()))
            .or_insert(Resources::ZERO);
        *used = used.saturating_add(pod.requests);
    }

    /// Stops counting `pod` on a node of `pool`.
    pub(crate) fn remove(&mut self, pool: Option<&str>, pod: &PodInfo) {
        let (Some(pool), Some(project)) = (pool, pod.project.as_deref()) else {
            return;
        };
        let key = (pool.to_owned(), project.to_owned());
        if let Some(used) = self.used.get_mut(&key) {
            *used = used.saturating_sub(pod.requests);
            if *used == Resources::ZERO {
                self.used.remove(&key);
            }
        }
    }

    /// The pools whose quota `pod` would exceed, each with the reason.
    pub(crate) fn blocked(
        &self,
        access: &PoolAccess,
        pod: &PodInfo,
    ) -> Vec<(String, FilterReason)> {
        let Some(project) = pod.project.as_deref() else {
            return Vec::new();
        };
        access
            .quotas_of(project)
            .filter_map(|(pool, quota)| {
                let (resource, limit) = quota.exceeded_by(self.get(pool, project), pod.requests)?;
                let reason = FilterReason::PoolQuotaExceeded {
                    pool: pool.to_owned(),
                    project: project.to_owned(),
                    resource,
                    limit,
                };
                Some((pool.to_owned(), reason))
            })
            .collect()
    }
}
