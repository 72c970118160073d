//! Rollouts: the limits of a rolling update resolved to pod counts, the
//! conditions a deployment reports, and the revisions it keeps for undo.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::meta::ObjectMeta;
use crate::workload::{DeploymentSpec, IntOrPercent, PodTemplate};

/// Deployment annotation: the number of the revision it runs.
pub const ANNOTATION_REVISION: &str = "deployment.kubernetes.io/revision";
/// Why a revision was made (set by users or by `wharf set image`).
pub const ANNOTATION_CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Template annotation whose change restarts every pod (`rollout restart`).
pub const ANNOTATION_RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Kubernetes' default of `revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: u32 = 10;
/// Kubernetes' default of `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u32 = 600;

/// How a template change replaces pods, resolved to counts for a replica number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutStrategy {
    /// Every old pod is gone before any new one is made.
    Recreate,
    /// Old pods are replaced a few at a time.
    RollingUpdate {
        /// Pods allowed above `replicas`.
        max_surge: u32,
        /// Pods allowed below `replicas` being available.
        max_unavailable: u32,
    },
}

impl DeploymentSpec {
    /// The strategy for this spec's replica count, with Kubernetes' rounding
    /// (surge up, unavailable down) and defaults (25% each).
    ///
    /// ```
    /// # use wharf_api::{DeploymentSpec, RolloutStrategy};
    /// let spec = DeploymentSpec { replicas: 10, ..Default::default() };
    /// assert_eq!(
    ///     spec.rollout_strategy().unwrap(),
    ///     RolloutStrategy::RollingUpdate { max_surge: 3, max_unavailable: 2 }
    /// );
    /// ```
    pub fn rollout_strategy(&self) -> Result<RolloutStrategy, ObjectError> {
        let strategy = self.strategy.clone().unwrap_or_default();
        match strategy.kind.as_deref() {
            None | Some("RollingUpdate") => {}
            Some("Recreate") => {
                if strategy.rolling_update.is_some() {
                    return Err(ObjectError::invalid(
                        "spec.strategy.rollingUpdate",
                        "may not be set when spec.strategy.type is Recreate",
                    ));
                }
                return Ok(RolloutStrategy::Recreate);
            }
            Some(_) => {
                return Err(ObjectError::invalid(
                    "spec.strategy.type",
                    "use RollingUpdate or Recreate",
                ));
            }
        }
        let limits = strategy.rolling_update.unwrap_or_default();
        let quarter = IntOrPercent::Percent("25%".into());
        let surge = limits.max_surge.as_ref().unwrap_or(&quarter);
        let unavailable = limits.max_unavailable.as_ref().unwrap_or(&quarter);
        let max_surge = scaled(surge, self.replicas, true, "maxSurge")?;
        let mut max_unavailable = scaled(unavailable, self.replicas, false, "maxUnavailable")?;
        let zero = |v: &IntOrPercent| scaled(v, 100, false, "").is_ok_and(|n| n == 0);
        if zero(surge) && zero(unavailable) {
            return Err(ObjectError::invalid(
                "spec.strategy.rollingUpdate",
                "maxSurge and maxUnavailable may not both be 0: no pod could be replaced",
            ));
        }
        // Both rounded to 0 (few replicas): one pod at a time may go, as
        // Kubernetes resolves it, or the rollout could never start.
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Ok(RolloutStrategy::RollingUpdate {
            max_surge,
            max_unavailable,
        })
    }
}

/// `value` of `total`: a count as is, a percentage rounded up or down.
fn scaled(
    value: &IntOrPercent,
    total: u32,
    round_up: bool,
    field: &str,
) -> Result<u32, ObjectError> {
    let percent = match value {
        IntOrPercent::Int(count) => return Ok(*count),
        IntOrPercent::Percent(text) => text.strip_suffix('%').and_then(|n| n.parse::<u32>().ok()),
    };
    let Some(percent) = percent.filter(|p| *p <= 100) else {
        return Err(ObjectError::invalid(
            format!("spec.strategy.rollingUpdate.{field}"),
            "a count or a percentage from 0% to 100%",
        ));
    };
    let part = u64::from(total) * u64::from(percent);
    let rounded = if round_up {
        part.div_ceil(100)
    } else {
        part / 100
    };
    Ok(rounded as u32)
}

/// A condition of a deployment's status, as Kubernetes writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCondition {
    /// `Available` or `Progressing`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    /// Machine-readable reason (`NewReplicaSetAvailable`, ...).
    #[serde(default)]
    pub reason: String,
    /// What people read.
    #[serde(default)]
    pub message: String,
    /// Last time the condition was updated (progress was made), unix ms.
    #[serde(default, with = "crate::time::millis")]
    #[schemars(with = "Option<String>")]
    pub last_update_time: u64,
    /// Last time the status changed between True and False, unix ms.
    #[serde(default, with = "crate::time::millis")]
    #[schemars(with = "Option<String>")]
    pub last_transition_time: u64,
}

/// One revision of a deployment's template, kept for history and undo. Its
/// name is `<deployment>-<template hash>`; the deployment owns it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRevision {
    /// Name, project, owner.
    pub metadata: ObjectMeta,
    /// The revision number: the newest template has the highest.
    pub revision: u64,
    /// The template of this revision.
    pub template: PodTemplate,
    /// Why it was made (`kubernetes.io/change-cause`), if anyone said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_cause: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{DeploymentStrategy, RollingUpdate};

    fn spec(
        replicas: u32,
        kind: Option<&str>,
        limits: Option<(IntOrPercent, IntOrPercent)>,
    ) -> DeploymentSpec {
        DeploymentSpec {
            replicas,
            strategy: Some(DeploymentStrategy {
                kind: kind.map(str::to_string),
                rolling_update: limits.map(|(surge, unavailable)| RollingUpdate {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            ..Default::default()
        }
    }

    fn percent(text: &str) -> IntOrPercent {
        IntOrPercent::Percent(text.into())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let rolling = |replicas, surge, unavailable| {
            spec(replicas, Some("RollingUpdate"), Some((surge, unavailable)))
                .rollout_strategy()
                .unwrap()
        };
        assert_eq!(
            rolling(3, percent("25%"), percent("25%")),
            RolloutStrategy::RollingUpdate {
                max_surge: 1,
                max_unavailable: 0
            }
        );
        assert_eq!(
            rolling(100, percent("25%"), percent("10%")),
            RolloutStrategy::RollingUpdate {
                max_surge: 25,
                max_unavailable: 10
            }
        );
        assert_eq!(
            rolling(7, IntOrPercent::Int(2), percent("50%")),
            RolloutStrategy::RollingUpdate {
                max_surge: 2,
                max_unavailable: 3
            }
        );
        // Defaults: 25% each.
        assert_eq!(
            spec(4, None, None).rollout_strategy().unwrap(),
            RolloutStrategy::RollingUpdate {
                max_surge: 1,
                max_unavailable: 1
            }
        );
    }

    #[test]
    fn both_zero_and_bad_values_are_refused() {
        let err = spec(3, None, Some((IntOrPercent::Int(0), percent("0%"))))
            .rollout_strategy()
            .unwrap_err();
        assert!(
            err.to_string().contains("spec.strategy.rollingUpdate"),
            "{err}"
        );
        // Zero by rounding only is allowed, as in Kubernetes: one may go.
        assert_eq!(
            spec(1, None, Some((IntOrPercent::Int(0), percent("25%"))))
                .rollout_strategy()
                .unwrap(),
            RolloutStrategy::RollingUpdate {
                max_surge: 0,
                max_unavailable: 1
            }
        );
        let err = spec(3, None, Some((percent("abc"), percent("25%"))))
            .rollout_strategy()
            .unwrap_err();
        assert!(err.to_string().contains("maxSurge"), "{err}");
        let err = spec(3, None, Some((percent("25%"), percent("101%"))))
            .rollout_strategy()
            .unwrap_err();
        assert!(err.to_string().contains("maxUnavailable"), "{err}");
    }

    #[test]
    fn recreate_takes_no_limits() {
        assert_eq!(
            spec(3, Some("Recreate"), None).rollout_strategy().unwrap(),
            RolloutStrategy::Recreate
        );
        assert!(
            spec(3, Some("Recreate"), Some((percent("25%"), percent("25%"))))
                .rollout_strategy()
                .is_err()
        );
    }
}
