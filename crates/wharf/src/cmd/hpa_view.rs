//! How `get` and `describe` show HorizontalPodAutoscalers, as kubectl does.

use wharf_api::{HorizontalPodAutoscaler, MetricStatus, MetricTarget};

use crate::output::age;

/// One metric of the spec: its resource, its target, and the current
/// value the status holds for it (kubectl's `<unknown>` until measured).
struct MetricView {
    resource: String,
    utilization: bool,
    target: String,
    current: String,
}

/// The spec's metrics with their current values; CPU at 80% when the spec
/// names none, as the autoscaler reads it.
fn metrics(hpa: &HorizontalPodAutoscaler) -> Vec<MetricView> {
    let default_cpu = [("cpu".to_string(), default_target())];
    let specified: Vec<(String, MetricTarget)> = hpa
        .spec
        .metrics
        .iter()
        .filter_map(|m| m.resource.as_ref())
        .map(|r| (r.name.clone(), r.target.clone()))
        .collect();
    let targets = if specified.is_empty() {
        &default_cpu[..]
    } else {
        &specified[..]
    };
    targets
        .iter()
        .map(|(resource, target)| {
            let utilization = target.kind == "Utilization";
            let status = hpa
                .status
                .current_metrics
                .iter()
                .find(|m| &m.resource.name == resource);
            MetricView {
                resource: resource.clone(),
                utilization,
                target: match utilization {
                    true => format!("{}%", target.average_utilization.unwrap_or_default()),
                    false => target.average_value.clone().unwrap_or_default(),
                },
                current: status
                    .and_then(|s| current_text(s, utilization))
                    .unwrap_or_else(|| "<unknown>".into()),
            }
        })
        .collect()
}

fn default_target() -> MetricTarget {
    MetricTarget {
        kind: "Utilization".into(),
        average_utilization: Some(80),
        average_value: None,
    }
}

fn current_text(status: &MetricStatus, utilization: bool) -> Option<String> {
    let current = &status.resource.current;
    match utilization {
        true => current.average_utilization.map(|p| format!("{p}%")),
        false => current.average_value.clone(),
    }
}

/// `Deployment/web`.
pub fn reference(hpa: &HorizontalPodAutoscaler) -> String {
    let target = &hpa.spec.scale_target_ref;
    format!("{}/{}", target.kind, target.name)
}

/// `cpu: 42%/50%, memory: 30Mi/64Mi`.
fn targets_text(hpa: &HorizontalPodAutoscaler) -> String {
    let texts: Vec<String> = metrics(hpa)
        .iter()
        .map(|m| format!("{}: {}/{}", m.resource, m.current, m.target))
        .collect();
    texts.join(", ")
}

/// `NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE`.
pub fn hpa_row(hpa: &HorizontalPodAutoscaler, now_ms: u64) -> Vec<String> {
    vec![
        hpa.metadata.name.clone(),
        reference(hpa),
        targets_text(hpa),
        hpa.spec.min().to_string(),
        hpa.spec.max_replicas.to_string(),
        hpa.status.current_replicas.to_string(),
        age(now_ms, hpa.metadata.created_at),
    ]
}

/// `describe`'s metric lines: `resource cpu on pods (as a percentage of
/// request)` and `42% / 50%`.
pub fn metric_lines(hpa: &HorizontalPodAutoscaler) -> Vec<(String, String)> {
    metrics(hpa)
        .into_iter()
        .map(|m| {
            let of_request = if m.utilization {
                " (as a percentage of request)"
            } else {
                ""
            };
            (
                format!("resource {} on pods{of_request}", m.resource),
                format!("{} / {}", m.current, m.target),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(status: serde_json::Value) -> HorizontalPodAutoscaler {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "project": "shop", "createdAt": 0},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "64Mi"}}},
                ],
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn rows_read_like_kubectl() {
        let measured = hpa(serde_json::json!({
            "currentReplicas": 2,
            "desiredReplicas": 3,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 42}}}],
        }));
        let row = hpa_row(&measured, 60_000);
        assert_eq!(
            row[..6],
            [
                "web",
                "Deployment/web",
                "cpu: 42%/50%, memory: <unknown>/64Mi",
                "1",
                "3",
                "2"
            ]
        );
        let lines = metric_lines(&measured);
        assert_eq!(
            lines[0],
            (
                "resource cpu on pods (as a percentage of request)".to_string(),
                "42% / 50%".to_string()
            )
        );
        assert_eq!(lines[1].0, "resource memory on pods");
        let mut bare = hpa(serde_json::json!({}));
        bare.spec.metrics.clear();
        assert_eq!(hpa_row(&bare, 0)[2], "cpu: <unknown>/80%");
    }
}
