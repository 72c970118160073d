//! The autoscaler's arithmetic, free of IO and clocks (times are passed
//! in), as Kubernetes' replica calculator and behavior rules do it:
//! `desired = ceil(ready * usage / target)` with a 10% tolerance, missing
//! metrics counted against the move, then the stabilization window and
//! the rate policies of `behavior`, then min and max.

use std::collections::VecDeque;

use wharf_api::{HpaBehavior, ScalingPolicy, ScalingRules};

/// A ratio within this of 1.0 changes nothing.
pub const TOLERANCE: f64 = 0.1;

/// One pod as the calculator sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodMetric {
    /// Ready (an unready pod's usage is not trusted for scaling up).
    pub ready: bool,
    /// Usage (millicores or bytes), when its node reported some.
    pub usage: Option<u64>,
    /// Its request for the resource (summed over containers), if any.
    pub request: Option<u64>,
}

/// Why no recommendation could be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRecommendation {
    /// No pod has metrics yet.
    NoMetrics,
    /// Utilization needs requests: a pod has none (`ScalingActive=False`).
    MissingRequest,
}

/// The replicas one metric asks for, and its current per-pod value
/// (utilization percent, or the average usage).
pub fn replicas_for(
    current: u32,
    pods: &[PodMetric],
    target: wharf_api::ResolvedTarget,
) -> Result<(u32, u64), NoRecommendation> {
    use wharf_api::ResolvedTarget::{AverageValue, Utilization};
    let measured: Vec<&PodMetric> = pods
        .iter()
        .filter(|p| p.ready && p.usage.is_some())
        .collect();
    if measured.is_empty() {
        return Err(NoRecommendation::NoMetrics);
    }
    // A pod's value per unit of target: usage/request/percent, or usage/value.
    let per_pod_target = |p: &PodMetric| -> Result<f64, NoRecommendation> {
        match target {
            Utilization(percent) => {
                let request = pods_request(p)?;
                Ok(request as f64 * percent as f64 / 100.0)
            }
            AverageValue(value) => Ok(value as f64),
        }
    };
    let mut usage = 0.0;
    let mut wanted = 0.0;
    for pod in &measured {
        usage += pod.usage.unwrap_or(0) as f64;
        wanted += per_pod_target(pod)?;
    }
    let current_value = match target {
        Utilization(percent) => (usage / wanted * percent as f64).round() as u64,
        AverageValue(_) => (usage / measured.len() as f64).round() as u64,
    };
    let ratio = usage / wanted;
    let missing: Vec<&PodMetric> = pods
        .iter()
        .filter(|p| p.ready && p.usage.is_none())
        .collect();
    let unready = pods.iter().filter(|p| !p.ready).count();
    if missing.is_empty() && unready == 0 {
        if (ratio - 1.0).abs() <= TOLERANCE {
            return Ok((current, current_value));
        }
        return Ok(((ratio * measured.len() as f64).ceil() as u32, current_value));
    }
    // Missing metrics count against the move: as at target when scaling
    // down, as idle when scaling up; unready pods as idle when scaling up.
    let scale_up = ratio > 1.0;
    for pod in &missing {
        let at_target = per_pod_target(pod)?;
        wanted += at_target;
        if !scale_up {
            usage += at_target;
        }
    }
    if scale_up {
        for pod in pods.iter().filter(|p| !p.ready) {
            wanted += per_pod_target(pod).unwrap_or(0.0);
        }
    }
    let new_ratio = usage / wanted;
    let counted = measured.len() + missing.len() + if scale_up { unready } else { 0 };
    if (new_ratio - 1.0).abs() <= TOLERANCE || (new_ratio > 1.0) != scale_up {
        return Ok((current, current_value));
    }
    let desired = (new_ratio * counted as f64).ceil() as u32;
    // Never move the other way because of pods without metrics.
    Ok((
        if scale_up {
            desired.max(current)
        } else {
            desired.min(current)
        },
        current_value,
    ))
}

fn pods_request(pod: &PodMetric) -> Result<u64, NoRecommendation> {
    pod.request
        .filter(|r| *r > 0)
        .ok_or(NoRecommendation::MissingRequest)
}

/// One HPA's memory between syncs: recent recommendations (for the
/// stabilization windows) and recent scale events (for rate policies).
#[derive(Clone, Debug, Default)]
pub struct ScaleHistory {
    recommendations: VecDeque<(u64, u32)>,
    /// (unix ms, replicas added; negative when removed).
    events: VecDeque<(u64, i64)>,
}

/// Kubernetes' defaults: up 0 s, +100% or +4 pods per 15 s (the more);
/// down 300 s, -100% per 15 s.
fn rules(behavior: Option<&HpaBehavior>, up: bool) -> (u32, String, Vec<ScalingPolicy>) {
    let given: Option<&ScalingRules> = behavior.and_then(|b| {
        if up {
            b.scale_up.as_ref()
        } else {
            b.scale_down.as_ref()
        }
    });
    let window = given
        .and_then(|r| r.stabilization_window_seconds)
        .unwrap_or(if up { 0 } else { 300 });
    let select = given
        .and_then(|r| r.select_policy.clone())
        .unwrap_or_else(|| "Max".into());
    let policy = |kind: &str, value| ScalingPolicy {
        kind: kind.into(),
        value,
        period_seconds: 15,
    };
    let policies = match given.filter(|r| !r.policies.is_empty()) {
        Some(r) => r.policies.clone(),
        None if up => vec![policy("Percent", 100), policy("Pods", 4)],
        None => vec![policy("Percent", 100)],
    };
    (window, select, policies)
}

impl ScaleHistory {
    /// The replicas to set now, from the metrics' `recommended` count:
    /// stabilized over the windows, limited by the policies, within
    /// `min..=max`.
    pub fn next_replicas(
        &mut self,
        now_ms: u64,
        current: u32,
        recommended: u32,
        min: u32,
        max: u32,
        behavior: Option<&HpaBehavior>,
    ) -> u32 {
        let (up_window, up_select, up_policies) = rules(behavior, true);
        let (down_window, down_select, down_policies) = rules(behavior, false);
        let recommended = recommended.clamp(min, max);
        self.recommendations.push_back((now_ms, recommended));
        let longest = u64::from(up_window.max(down_window)) * 1000;
        self.recommendations
            .retain(|(at, _)| now_ms.saturating_sub(*at) <= longest);
        let within = |window: u32| {
            let window = u64::from(window) * 1000;
            self.recommendations
                .iter()
                .filter(move |(at, _)| now_ms.saturating_sub(*at) <= window)
                .map(|(_, r)| *r)
        };
        // Up only as far as every recent recommendation agrees; down only
        // as far as the highest recent one.
        let up_to = within(up_window).min().unwrap_or(recommended);
        let down_to = within(down_window).max().unwrap_or(recommended);
        let mut desired = current;
        if desired < up_to {
            desired = up_to;
        }
        if desired > down_to {
            desired = down_to;
        }
        let desired = if desired > current {
            desired.min(self.limit(now_ms, current, true, &up_select, &up_policies))
        } else if desired < current {
            desired.max(self.limit(now_ms, current, false, &down_select, &down_policies))
        } else {
            desired
        };
        let desired = desired.clamp(min, max);
        if desired != current {
            self.events
                .push_back((now_ms, i64::from(desired) - i64::from(current)));
        }
        self.events
            .retain(|(at, _)| now_ms.saturating_sub(*at) <= 1_800_000);
        desired
    }

    /// How far the policies let the replicas go from `current` now.
    fn limit(
        &self,
        now_ms: u64,
        current: u32,
        up: bool,
        select: &str,
        policies: &[ScalingPolicy],
    ) -> u32 {
        if select == "Disabled" {
            return current;
        }
        let limits = policies.iter().map(|policy| {
            let period = u64::from(policy.period_seconds) * 1000;
            let changed: i64 = self
                .events
                .iter()
                .filter(|(at, change)| now_ms.saturating_sub(*at) < period && (*change > 0) == up)
                .map(|(_, change)| *change)
                .sum();
            // Replicas at the start of the period.
            let start = (i64::from(current) - changed).max(0) as f64;
            let value = f64::from(policy.value);
            let limit = match (policy.kind.as_str(), up) {
                ("Pods", true) => start + value,
                ("Pods", false) => start - value,
                (_, true) => (start * (1.0 + value / 100.0)).ceil(),
                (_, false) => (start * (1.0 - value / 100.0)).ceil(),
            };
            limit.max(0.0) as u32
        });
        // Max: the policy allowing the biggest change; Min: the smallest.
        let biggest = select != "Min";
        if up == biggest {
            limits.max().unwrap_or(current)
        } else {
            limits.min().unwrap_or(current)
        }
    }
}

#[cfg(test)]
mod tests {
    use wharf_api::ResolvedTarget::{AverageValue, Utilization};

    use super::*;

    fn pod(usage: u64) -> PodMetric {
        PodMetric {
            ready: true,
            usage: Some(usage),
            request: Some(100),
        }
    }

    #[test]
    fn desired_is_ceil_of_usage_over_target_with_a_tolerance() {
        // 100m request, 50% target: 90m used on one pod is 1.8x.
        assert_eq!(replicas_for(1, &[pod(90)], Utilization(50)), Ok((2, 90)));
        // 54m is within 10% of 50m: nothing moves.
        assert_eq!(replicas_for(1, &[pod(54)], Utilization(50)), Ok((1, 54)));
        assert_eq!(
            replicas_for(3, &[pod(10), pod(10), pod(10)], Utilization(50)),
            Ok((1, 10))
        );
        assert_eq!(
            replicas_for(2, &[pod(300), pod(300)], AverageValue(200)),
            Ok((3, 300))
        );
    }

    #[test]
    fn missing_metrics_and_requests_are_handled_conservatively() {
        let missing = PodMetric {
            usage: None,
            ..pod(0)
        };
        // Scaling up: the pod without metrics counts as idle.
        assert_eq!(
            replicas_for(2, &[pod(100), missing], Utilization(50)),
            Ok((2, 100))
        );
        assert_eq!(
            replicas_for(2, &[pod(200), missing], Utilization(50)),
            Ok((4, 200))
        );
        // An unready pod counts as idle when scaling up, not at all down.
        let unready = PodMetric {
            ready: false,
            usage: Some(500),
            ..pod(0)
        };
        assert_eq!(
            replicas_for(2, &[pod(100), unready], Utilization(50)),
            Ok((2, 100))
        );
        // (0 here: minReplicas clamps it afterwards.)
        assert_eq!(
            replicas_for(2, &[pod(0), unready], Utilization(50)),
            Ok((0, 0))
        );
        // Scaling down: as at target, so the move shrinks.
        assert_eq!(
            replicas_for(2, &[pod(0), missing], Utilization(50)),
            Ok((1, 0))
        );
        assert_eq!(
            replicas_for(1, &[missing], Utilization(50)),
            Err(NoRecommendation::NoMetrics)
        );
        let no_request = PodMetric {
            request: None,
            ..pod(50)
        };
        assert_eq!(
            replicas_for(1, &[no_request], Utilization(50)),
            Err(NoRecommendation::MissingRequest)
        );
        // AverageValue needs no request.
        assert_eq!(
            replicas_for(1, &[no_request], AverageValue(25)),
            Ok((2, 50))
        );
    }

    #[test]
    fn min_max_and_the_scale_down_window_hold_replicas() {
        let mut history = ScaleHistory::default();
        assert_eq!(history.next_replicas(0, 1, 9, 1, 3, None), 3, "max");
        assert_eq!(
            history.next_replicas(15_000, 3, 0, 2, 3, None),
            3,
            "the window holds"
        );
        // Five minutes after the high recommendation, the low one wins.
        assert_eq!(history.next_replicas(301_000, 3, 1, 2, 3, None), 2, "min");
    }

    #[test]
    fn policies_limit_the_rate_and_select_policy_chooses() {
        let behavior: HpaBehavior = serde_json::from_value(serde_json::json!({
            "scaleUp": {
                "selectPolicy": "Min",
                "policies": [
                    {"type": "Pods", "value": 1, "periodSeconds": 60},
                    {"type": "Percent", "value": 100, "periodSeconds": 60},
                ],
            },
            "scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"},
        }))
        .unwrap();
        let mut history = ScaleHistory::default();
        assert_eq!(
            history.next_replicas(0, 2, 10, 1, 10, Some(&behavior)),
            3,
            "+1 pod, the lesser"
        );
        assert_eq!(
            history.next_replicas(30_000, 3, 10, 1, 10, Some(&behavior)),
            3,
            "used up this minute"
        );
        assert_eq!(
            history.next_replicas(61_000, 3, 10, 1, 10, Some(&behavior)),
            4
        );
        assert_eq!(
            history.next_replicas(62_000, 4, 1, 1, 10, Some(&behavior)),
            4,
            "down disabled"
        );
        // Defaults: up by the larger of 100% and 4 pods per 15 s.
        let mut history = ScaleHistory::default();
        assert_eq!(history.next_replicas(0, 1, 20, 1, 20, None), 5);
        assert_eq!(history.next_replicas(15_000, 5, 20, 1, 20, None), 10);
    }
}
