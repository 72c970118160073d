//! `autoscaling/v2` `HorizontalPodAutoscaler`, as Kubernetes writes it: a
//! Deployment's replicas follow its pods' CPU or memory. Only `Resource`
//! metrics of a Deployment are supported; anything else is refused naming
//! the field rather than ignored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ObjectError, ObjectMeta, parse_cpu_millis, parse_memory_bytes};

/// A HorizontalPodAutoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscaler {
    /// `autoscaling/v2`.
    #[serde(default = "autoscaling_v2")]
    pub api_version: String,
    /// `HorizontalPodAutoscaler`.
    #[serde(default = "hpa_kind")]
    pub kind: String,
    /// Name, project, labels.
    pub metadata: ObjectMeta,
    /// What to scale, between which bounds, on which metrics.
    pub spec: HpaSpec,
    /// What the autoscaler last saw and did.
    #[serde(default)]
    pub status: HpaStatus,
}

fn autoscaling_v2() -> String {
    "autoscaling/v2".into()
}

fn hpa_kind() -> String {
    "HorizontalPodAutoscaler".into()
}

/// The autoscaler's desired behaviour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaSpec {
    /// The workload to scale (a Deployment of the same project).
    pub scale_target_ref: ScaleTargetRef,
    /// Fewest replicas; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    /// Most replicas.
    pub max_replicas: u32,
    /// What to follow; CPU at 80% utilization when empty, as Kubernetes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
    /// How fast to scale up and down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HpaBehavior>,
}

/// The scaled workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Deployment` (the only kind supported).
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// One metric to follow. Only `Resource` is supported; the other kinds'
/// sources are read so that they can be refused by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// `Resource`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource and its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetric>,
    /// Refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<serde_json::Value>,
    /// Refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
    /// Refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<serde_json::Value>,
    /// Refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resource: Option<serde_json::Value>,
}

/// A resource of the pods (summed over their containers) and its target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMetric {
    /// `cpu` or `memory`.
    pub name: String,
    /// The value to keep the pods' average at.
    pub target: MetricTarget,
}

/// A metric's target: a percentage of the pods' requests (`Utilization`)
/// or a quantity per pod (`AverageValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    /// `Utilization` or `AverageValue`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Percent of the request, with `Utilization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<u32>,
    /// Per pod (`500m`, `256Mi`), with `AverageValue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<String>,
}

/// Scaling speed limits, up and down.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaBehavior {
    /// Rules for adding replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// Rules for removing replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// How fast one direction may go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Recommendations of this long are considered (the highest when
    /// scaling down, the lowest when scaling up): 300 down, 0 up by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<u32>,
    /// `Max` (default), `Min` or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<String>,
    /// Limits per period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<ScalingPolicy>,
}

/// At most `value` pods, or `value` percent, per `period_seconds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub kind: String,
    /// How many pods, or what percent of the current replicas.
    pub value: u32,
    /// Over how long (1 to 1800 s).
    pub period_seconds: u32,
}

/// What the autoscaler last saw and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaStatus {
    /// Replicas of the target when last seen.
    #[serde(default)]
    pub current_replicas: u32,
    /// Replicas the autoscaler last asked for.
    #[serde(default)]
    pub desired_replicas: u32,
    /// The metrics last read, one per spec metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current_metrics: Vec<MetricStatus>,
    /// When the replicas were last changed, unix ms (RFC 3339 on the wire).
    #[serde(
        default,
        with = "crate::time::optional_millis",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub last_scale_time: Option<u64>,
    /// `AbleToScale`, `ScalingActive`, `ScalingLimited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::DeploymentCondition>,
}

/// A metric's current value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// `Resource`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `cpu` or `memory`, and its current average.
    pub resource: ResourceMetricStatus,
}

/// A resource's current average over the pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMetricStatus {
    /// `cpu` or `memory`.
    pub name: String,
    /// The current average.
    pub current: MetricValueStatus,
}

/// A current average, as a percentage of requests and as a quantity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricValueStatus {
    /// Percent of the pods' requests, when they all have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<u32>,
    /// Per pod (`250m`, `12Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<String>,
}

/// A metric's target, resolved to numbers (millicores or bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedTarget {
    /// Percent of the pods' requests.
    Utilization(u32),
    /// Millicores (cpu) or bytes (memory) per pod.
    AverageValue(u64),
}

impl HorizontalPodAutoscaler {
    /// Refuses what Wharf cannot honour, naming the field.
    pub fn validate(&self) -> Result<(), ObjectError> {
        self.spec.validate()
    }
}

impl HpaSpec {
    /// Fewest replicas (1 by default).
    pub fn min(&self) -> u32 {
        self.min_replicas.unwrap_or(1)
    }

    /// Refuses what Wharf cannot honour, naming the field.
    pub fn validate(&self) -> Result<(), ObjectError> {
        let target = &self.scale_target_ref;
        if target.kind != "Deployment" {
            return Err(ObjectError::invalid(
                "spec.scaleTargetRef.kind",
                format!("{:?} cannot be autoscaled: only Deployment", target.kind),
            ));
        }
        if target.name.is_empty() {
            return Err(ObjectError::invalid("spec.scaleTargetRef.name", "is empty"));
        }
        if self.min() < 1 {
            return Err(ObjectError::invalid(
                "spec.minReplicas",
                "must be at least 1",
            ));
        }
        if self.max_replicas < self.min() {
            return Err(ObjectError::invalid(
                "spec.maxReplicas",
                format!("{} is below minReplicas {}", self.max_replicas, self.min()),
            ));
        }
        for (i, metric) in self.metrics.iter().enumerate() {
            metric.resolve(&format!("spec.metrics[{i}]"))?;
        }
        if let Some(behavior) = &self.behavior {
            for (name, rules) in [
                ("scaleUp", &behavior.scale_up),
                ("scaleDown", &behavior.scale_down),
            ] {
                if let Some(rules) = rules {
                    rules.validate(&format!("spec.behavior.{name}"))?;
                }
            }
        }
        Ok(())
    }
}

impl MetricSpec {
    /// The resource (`cpu` or `memory`) and its target; other metric types
    /// are refused naming the field.
    pub fn resolve(&self, field: &str) -> Result<(&str, ResolvedTarget), ObjectError> {
        if self.kind != "Resource" {
            return Err(ObjectError::invalid(
                format!("{field}.type"),
                format!(
                    "{} metrics are not supported: only Resource (cpu, memory)",
                    self.kind
                ),
            ));
        }
        for (name, set) in [
            ("pods", self.pods.is_some()),
            ("object", self.object.is_some()),
            ("external", self.external.is_some()),
            ("containerResource", self.container_resource.is_some()),
        ] {
            if set {
                return Err(ObjectError::invalid(
                    format!("{field}.{name}"),
                    "not supported: only Resource metrics",
                ));
            }
        }
        let resource = self
            .resource
            .as_ref()
            .ok_or_else(|| ObjectError::invalid(format!("{field}.resource"), "is missing"))?;
        let name = resource.name.as_str();
        if name != "cpu" && name != "memory" {
            return Err(ObjectError::invalid(
                format!("{field}.resource.name"),
                format!("{name:?} is not supported: cpu or memory"),
            ));
        }
        let target = &resource.target;
        let at = format!("{field}.resource.target");
        let resolved = match target.kind.as_str() {
            "Utilization" => match target.average_utilization {
                Some(percent) if percent > 0 => ResolvedTarget::Utilization(percent),
                _ => {
                    return Err(ObjectError::invalid(
                        format!("{at}.averageUtilization"),
                        "a percentage above 0 is needed with Utilization",
                    ));
                }
            },
            "AverageValue" => {
                let text = target.average_value.as_deref().ok_or_else(|| {
                    ObjectError::invalid(
                        format!("{at}.averageValue"),
                        "is needed with AverageValue",
                    )
                })?;
                let field = format!("{at}.averageValue");
                let value = match name {
                    "cpu" => parse_cpu_millis(&field, text)?,
                    _ => parse_memory_bytes(&field, text)?,
                };
                if value == 0 {
                    return Err(ObjectError::invalid(field, "must be above 0"));
                }
                ResolvedTarget::AverageValue(value)
            }
            other => {
                return Err(ObjectError::invalid(
                    format!("{at}.type"),
                    format!("{other:?} is not supported: Utilization or AverageValue"),
                ));
            }
        };
        Ok((name, resolved))
    }
}

impl ScalingRules {
    fn validate(&self, field: &str) -> Result<(), ObjectError> {
        if self.stabilization_window_seconds.is_some_and(|s| s > 3600) {
            return Err(ObjectError::invalid(
                format!("{field}.stabilizationWindowSeconds"),
                "at most 3600",
            ));
        }
        if let Some(select) = &self.select_policy
            && !["Max", "Min", "Disabled"].contains(&select.as_str())
        {
            return Err(ObjectError::invalid(
                format!("{field}.selectPolicy"),
                format!("{select:?}: Max, Min or Disabled"),
            ));
        }
        for (i, policy) in self.policies.iter().enumerate() {
            let at = format!("{field}.policies[{i}]");
            if policy.kind != "Pods" && policy.kind != "Percent" {
                return Err(ObjectError::invalid(
                    format!("{at}.type"),
                    format!("{:?}: Pods or Percent", policy.kind),
                ));
            }
            if policy.value == 0 {
                return Err(ObjectError::invalid(
                    format!("{at}.value"),
                    "must be above 0",
                ));
            }
            if !(1..=1800).contains(&policy.period_seconds) {
                return Err(ObjectError::invalid(
                    format!("{at}.periodSeconds"),
                    "between 1 and 1800",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> HorizontalPodAutoscaler {
        serde_norway::from_str(yaml).unwrap()
    }

    const HPA: &str = "
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 3
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
    - type: Resource
      resource: {name: memory, target: {type: AverageValue, averageValue: 64Mi}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 10
      selectPolicy: Min
      policies: [{type: Pods, value: 1, periodSeconds: 15}]
";

    #[test]
    fn kubernetes_yaml_reads_with_defaults() {
        let hpa = parse(HPA);
        hpa.validate().unwrap();
        assert_eq!(hpa.spec.min(), 1);
        assert_eq!(
            hpa.spec.metrics[0].resolve("m").unwrap(),
            ("cpu", ResolvedTarget::Utilization(50))
        );
        assert_eq!(
            hpa.spec.metrics[1].resolve("m").unwrap(),
            ("memory", ResolvedTarget::AverageValue(64 << 20))
        );
        let down = hpa.spec.behavior.unwrap().scale_down.unwrap();
        assert_eq!(down.policies[0].period_seconds, 15);
    }

    fn refusal(from: &str, to: &str) -> String {
        parse(&HPA.replace(from, to))
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn what_wharf_cannot_honour_is_refused_naming_the_field() {
        let cases = [
            (
                "kind: Deployment",
                "kind: StatefulSet",
                "spec.scaleTargetRef.kind",
            ),
            (
                "maxReplicas: 3",
                "maxReplicas: 3\n  minReplicas: 4",
                "spec.maxReplicas",
            ),
            (
                "maxReplicas: 3",
                "maxReplicas: 3\n  minReplicas: 0",
                "spec.minReplicas",
            ),
            (
                "- type: Resource\n      resource: {name: cpu",
                "- type: Pods\n      resource: {name: cpu",
                "spec.metrics[0].type",
            ),
            (
                "- type: Resource\n      resource: {name: cpu",
                "- type: Resource\n      external: {}\n      resource: {name: cpu",
                "spec.metrics[0].external",
            ),
            ("name: cpu,", "name: gpu,", "spec.metrics[0].resource.name"),
            (
                "averageUtilization: 50",
                "averageUtilization: 0",
                "averageUtilization",
            ),
            (
                "averageValue: 64Mi",
                "averageValue: lots",
                "spec.metrics[1].resource.target.averageValue",
            ),
            (
                "selectPolicy: Min",
                "selectPolicy: Most",
                "spec.behavior.scaleDown.selectPolicy",
            ),
            (
                "type: Pods, value: 1",
                "type: Nodes, value: 1",
                "spec.behavior.scaleDown.policies[0].type",
            ),
            (
                "periodSeconds: 15",
                "periodSeconds: 0",
                "spec.behavior.scaleDown.policies[0].periodSeconds",
            ),
            (
                "stabilizationWindowSeconds: 10",
                "stabilizationWindowSeconds: 4000",
                "stabilizationWindowSeconds",
            ),
        ];
        for (from, to, field) in cases {
            let message = refusal(from, to);
            assert!(message.contains(field), "{to}: {message}");
        }
    }
}
