//! The autoscaler (leader only). Every sync period each
//! HorizontalPodAutoscaler reads its deployment's pods' usage from the
//! [`PodMetricsStore`], asks [`hpa_replicas`](crate::hpa_replicas) how many
//! replicas that calls for, scales the deployment the way `wharf scale`
//! does (a new replica count, never a new revision), and writes what it saw
//! and did into the HPA's status. As in Kubernetes, a manual scale of an
//! autoscaled deployment lasts until the next sync.
//!
//! The stabilization windows need recent recommendations: they are kept in
//! memory, so a new leader starts with empty windows (Kubernetes' controller
//! manager does the same).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_api::{
    Deployment, DeploymentCondition, EventType, HorizontalPodAutoscaler, HpaStatus, MetricStatus,
    ObjectReference, Pod, PodPhase, ResolvedTarget, ResourceMetricStatus,
};

use crate::ControlError;
use crate::events::EventRecorder;
use crate::hpa_replicas::{NoRecommendation, PodMetric, ScaleHistory, replicas_for};
use crate::objects::{Objects, now_millis};
use crate::pod_metrics::PodMetricsStore;
use crate::rollout_status::condition;

/// Kubernetes' `--horizontal-pod-autoscaler-sync-period` default.
pub const DEFAULT_HPA_SYNC_PERIOD: Duration = Duration::from_secs(15);

/// A scale the autoscaler made, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleReport {
    /// The project of the autoscaler and its deployment.
    pub project: String,
    /// The autoscaler.
    pub hpa: String,
    /// The deployment scaled.
    pub deployment: String,
    /// Why, as Kubernetes words it: `New size: 3; reason: cpu resource
    /// utilization (percentage of request) above target`.
    pub message: String,
}

/// Where scale reports go (the server's audit log).
pub type ScaleReporter = Arc<dyn Fn(ScaleReport) + Send + Sync>;

/// Scales deployments after their pods' usage.
pub struct HpaController {
    objects: Objects,
    metrics: PodMetricsStore,
    period: Duration,
    events: EventRecorder,
    /// Each autoscaler's recent recommendations and scales, by uid.
    histories: Mutex<HashMap<String, ScaleHistory>>,
    reports: Option<ScaleReporter>,
}

/// One sync's finding for one autoscaler.
struct Finding {
    /// The replicas the metrics ask for, before min, max and behavior.
    wanted: u32,
    /// The metric that asked for them (`cpu resource utilization
    /// (percentage of request)`).
    basis: String,
    current_metrics: Vec<MetricStatus>,
}

impl HpaController {
    /// A controller syncing every autoscaler of `objects` every `period`.
    pub fn new(objects: Objects, metrics: PodMetricsStore, period: Duration) -> HpaController {
        HpaController {
            events: EventRecorder::new(objects.clone(), "horizontal-pod-autoscaler"),
            objects,
            metrics,
            period,
            histories: Mutex::new(HashMap::new()),
            reports: None,
        }
    }

    /// The same controller reporting each scale to `reports`.
    pub fn with_reports(mut self, reports: Option<ScaleReporter>) -> HpaController {
        self.reports = reports;
        self
    }

    /// Syncs every period until dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.period).await;
            if let Err(err) = self.sync_all(now_millis()).await {
                tracing::warn!(error = %err, "autoscaler sync failed");
            }
        }
    }

    /// Syncs every autoscaler once, as at `now` (unix ms).
    pub async fn sync_all(&self, now: u64) -> Result<(), ControlError> {
        let (hpas, _) = self
            .objects
            .list::<HorizontalPodAutoscaler>(None, None)
            .await?;
        self.histories
            .lock()
            .expect("histories lock")
            .retain(|uid, _| hpas.iter().any(|h| &h.metadata.uid == uid));
        for hpa in hpas {
            let name = hpa.metadata.name.clone();
            match self.sync(hpa, now).await {
                Ok(()) | Err(ControlError::NotFound { .. }) => {}
                Err(err) => tracing::warn!(error = %err, hpa = name, "autoscaler sync failed"),
            }
        }
        Ok(())
    }

    async fn sync(&self, hpa: HorizontalPodAutoscaler, now: u64) -> Result<(), ControlError> {
        let project = hpa.metadata.project.clone().unwrap_or_default();
        let target = hpa.spec.scale_target_ref.name.clone();
        let before = &hpa.status.conditions;
        let Some(deployment) = self
            .objects
            .get::<Deployment>(Some(&project), &target)
            .await?
        else {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: \
                 deployment {target} not found"
            );
            self.warn(&hpa, "FailedGetScale", &message).await;
            let able = condition(
                before,
                "AbleToScale",
                ("False", "FailedGetScale", message),
                now,
                false,
            );
            let status = HpaStatus {
                conditions: with_condition(before, able),
                ..hpa.status.clone()
            };
            return self.write_status(&hpa, status).await;
        };
        let current = deployment.spec.replicas;
        let mut status = HpaStatus {
            current_replicas: current,
            desired_replicas: current,
            last_scale_time: hpa.status.last_scale_time,
            ..HpaStatus::default()
        };
        if current == 0 {
            let message = "scaling is disabled since the replica count of the target is zero";
            let active = ("False", "ScalingDisabled", message.to_string());
            let active = condition(before, "ScalingActive", active, now, false);
            status.conditions = with_condition(before, active);
            return self.write_status(&hpa, status).await;
        }
        let finding = match self.measure(&hpa, &deployment).await? {
            Ok(finding) => finding,
            Err(message) => {
                self.warn(&hpa, "FailedGetResourceMetric", &message).await;
                let active = ("False", "FailedGetResourceMetric", message);
                let active = condition(before, "ScalingActive", active, now, false);
                status.conditions = with_condition(before, active);
                return self.write_status(&hpa, status).await;
            }
        };
        let (min, max) = (hpa.spec.min(), hpa.spec.max_replicas);
        let desired = self
            .histories
            .lock()
            .expect("histories lock")
            .entry(hpa.metadata.uid.clone())
            .or_default()
            .next_replicas(
                now,
                current,
                finding.wanted,
                min,
                max,
                hpa.spec.behavior.as_ref(),
            );
        let able = if desired != current {
            match self.scale(&hpa, &deployment, desired, &finding).await {
                Ok(()) => {
                    status.last_scale_time = Some(now);
                    let message = format!(
                        "the HPA controller was able to update the target scale to {desired}"
                    );
                    ("True", "SucceededRescale", message)
                }
                Err(err) => {
                    let message =
                        format!("the HPA controller was unable to update the target scale: {err}");
                    self.warn(&hpa, "FailedRescale", &message).await;
                    ("False", "FailedUpdateScale", message)
                }
            }
        } else if finding.wanted.clamp(min, max) < current {
            let message = "recent recommendations were higher than current one, \
                           applying the highest recent recommendation";
            ("True", "ScaleDownStabilized", message.to_string())
        } else {
            let message = "recommended size matches current size";
            ("True", "ReadyForNewScale", message.to_string())
        };
        let active = (
            "True",
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {}",
                finding.basis
            ),
        );
        let limited = if finding.wanted > max {
            let message = "the desired replica count is more than the maximum replica count";
            ("True", "TooManyReplicas", message)
        } else if finding.wanted < min {
            let message = "the desired replica count is less than the minimum replica count";
            ("True", "TooFewReplicas", message)
        } else {
            let message = "the desired count is within the acceptable range";
            ("False", "DesiredWithinRange", message)
        };
        let limited = (limited.0, limited.1, limited.2.to_string());
        status.desired_replicas = desired;
        status.current_metrics = finding.current_metrics;
        status.conditions = vec![
            condition(before, "AbleToScale", able, now, false),
            condition(before, "ScalingActive", active, now, false),
            condition(before, "ScalingLimited", limited, now, false),
        ];
        self.write_status(&hpa, status).await
    }

    /// What the metrics ask for, or why they cannot say. When only some
    /// metrics can be read, the autoscaler may scale up but not down, as
    /// in Kubernetes.
    async fn measure(
        &self,
        hpa: &HorizontalPodAutoscaler,
        deployment: &Deployment,
    ) -> Result<Result<Finding, String>, ControlError> {
        let pods = self.pods_of(deployment).await?;
        let current = deployment.spec.replicas;
        let mut finding: Option<Finding> = None;
        let mut current_metrics = Vec::new();
        let mut failure = None;
        for (resource, target) in metrics_of(hpa)? {
            let samples: Vec<PodMetric> = pods
                .iter()
                .map(|pod| self.pod_metric(pod, &resource))
                .collect();
            match replicas_for(current, &samples, target) {
                Ok((replicas, value)) => {
                    current_metrics.push(metric_status(&resource, target, value));
                    if finding.as_ref().is_none_or(|f| replicas > f.wanted) {
                        finding = Some(Finding {
                            wanted: replicas,
                            basis: basis(&resource, target),
                            current_metrics: Vec::new(),
                        });
                    }
                }
                Err(why) => failure = Some(failure_message(&resource, why)),
            }
        }
        Ok(match (finding, failure) {
            (None, failure) => Err(failure.unwrap_or_else(|| "no metrics".into())),
            (Some(mut finding), failure) => {
                if failure.is_some() {
                    finding.wanted = finding.wanted.max(current);
                }
                finding.current_metrics = current_metrics;
                Ok(finding)
            }
        })
    }

    /// The deployment's live pods (not terminating, not finished).
    async fn pods_of(&self, deployment: &Deployment) -> Result<Vec<Pod>, ControlError> {
        let project = deployment.metadata.project.as_deref();
        let (pods, _) = self
            .objects
            .list::<Pod>(project, Some(&deployment.spec.selector))
            .await?;
        Ok(pods
            .into_iter()
            .filter(|pod| {
                pod.metadata
                    .owner_references
                    .iter()
                    .any(|o| o.uid == deployment.metadata.uid)
                    && !pod.metadata.is_terminating()
                    && !matches!(pod.status.phase, PodPhase::Failed | PodPhase::Succeeded)
            })
            .collect())
    }

    /// One pod's usage of `resource` (`cpu` in millicores, `memory` in
    /// bytes) and its request, summed over its containers.
    fn pod_metric(&self, pod: &Pod, resource: &str) -> PodMetric {
        let cpu = resource == "cpu";
        let usage = self.metrics.pod(pod).map(|m| {
            m.containers
                .iter()
                .map(|c| {
                    if cpu {
                        c.cpu_millicores
                    } else {
                        c.memory_bytes
                    }
                })
                .sum()
        });
        let request = pod
            .spec
            .requests()
            .ok()
            .map(|r| if cpu { r.cpu_millis } else { r.memory_bytes })
            .filter(|r| *r > 0);
        PodMetric {
            ready: pod.status.phase == PodPhase::Running && pod.status.is_ready(),
            usage,
            request,
        }
    }

    /// Scales the deployment, records the event and reports it.
    async fn scale(
        &self,
        hpa: &HorizontalPodAutoscaler,
        deployment: &Deployment,
        desired: u32,
        finding: &Finding,
    ) -> Result<(), ControlError> {
        let project = hpa.metadata.project.clone().unwrap_or_default();
        let name = &deployment.metadata.name;
        let current = deployment.spec.replicas;
        self.objects
            .scale_deployment(&project, name, desired)
            .await?;
        let (min, max) = (hpa.spec.min(), hpa.spec.max_replicas);
        let reason = if current < min {
            "Current number of replicas below Spec.MinReplicas".to_string()
        } else if current > max {
            "Current number of replicas above Spec.MaxReplicas".to_string()
        } else if desired > current {
            format!("{} above target", finding.basis)
        } else {
            "All metrics below target".to_string()
        };
        let message = format!("New size: {desired}; reason: {reason}");
        self.events
            .record(
                &reference(hpa),
                EventType::Normal,
                "SuccessfulRescale",
                &message,
            )
            .await;
        tracing::info!(project, hpa = hpa.metadata.name, message, "autoscaled");
        if let Some(reports) = &self.reports {
            reports(ScaleReport {
                project,
                hpa: hpa.metadata.name.clone(),
                deployment: name.clone(),
                message,
            });
        }
        Ok(())
    }

    async fn warn(&self, hpa: &HorizontalPodAutoscaler, reason: &str, message: &str) {
        self.events
            .record(&reference(hpa), EventType::Warning, reason, message)
            .await;
    }

    /// Writes `status` unless it is what is stored already (a sync that
    /// changes nothing costs no commit).
    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        status: HpaStatus,
    ) -> Result<(), ControlError> {
        let project = hpa.metadata.project.as_deref();
        let uid = hpa.metadata.uid.clone();
        self.objects
            .modify::<HorizontalPodAutoscaler>(project, &hpa.metadata.name, |stored| {
                let changed = stored.metadata.uid == uid && stored.status != status;
                if changed {
                    stored.status = status.clone();
                }
                changed
            })
            .await
            .map(drop)
    }
}

/// The spec's metrics resolved; CPU at 80% when there are none, as
/// Kubernetes.
fn metrics_of(
    hpa: &HorizontalPodAutoscaler,
) -> Result<Vec<(String, ResolvedTarget)>, ControlError> {
    if hpa.spec.metrics.is_empty() {
        return Ok(vec![("cpu".into(), ResolvedTarget::Utilization(80))]);
    }
    hpa.spec
        .metrics
        .iter()
        .enumerate()
        .map(|(i, metric)| {
            let (name, target) = metric.resolve(&format!("spec.metrics[{i}]"))?;
            Ok((name.to_string(), target))
        })
        .collect()
}

/// Conditions `before` with `changed` in place of the one of its type.
fn with_condition(
    before: &[DeploymentCondition],
    changed: DeploymentCondition,
) -> Vec<DeploymentCondition> {
    let mut conditions: Vec<DeploymentCondition> = before
        .iter()
        .filter(|c| c.kind != changed.kind)
        .cloned()
        .collect();
    conditions.push(changed);
    conditions.sort_by_key(|c| match c.kind.as_str() {
        "AbleToScale" => 0,
        "ScalingActive" => 1,
        _ => 2,
    });
    conditions
}

/// How Kubernetes names a metric in its messages.
fn basis(resource: &str, target: ResolvedTarget) -> String {
    match target {
        ResolvedTarget::Utilization(_) => {
            format!("{resource} resource utilization (percentage of request)")
        }
        ResolvedTarget::AverageValue(_) => format!("{resource} resource"),
    }
}

fn failure_message(resource: &str, why: NoRecommendation) -> String {
    match why {
        NoRecommendation::NoMetrics => format!(
            "failed to get {resource} utilization: no metrics returned for the target's pods"
        ),
        NoRecommendation::MissingRequest => {
            format!("failed to get {resource} utilization: missing request for {resource}")
        }
    }
}

/// A metric's current value as the status shows it.
fn metric_status(resource: &str, target: ResolvedTarget, value: u64) -> MetricStatus {
    let mut current = wharf_api::MetricValueStatus::default();
    match target {
        ResolvedTarget::Utilization(_) => current.average_utilization = Some(value as u32),
        ResolvedTarget::AverageValue(_) if resource == "cpu" => {
            current.average_value = Some(format!("{value}m"))
        }
        ResolvedTarget::AverageValue(_) => current.average_value = Some(value.to_string()),
    }
    MetricStatus {
        kind: "Resource".into(),
        resource: ResourceMetricStatus {
            name: resource.into(),
            current,
        },
    }
}

fn reference(hpa: &HorizontalPodAutoscaler) -> ObjectReference {
    ObjectReference {
        kind: "HorizontalPodAutoscaler".into(),
        project: hpa.metadata.project.clone(),
        name: hpa.metadata.name.clone(),
        uid: hpa.metadata.uid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use wharf_api::{ContainerUsage, ContainerUsageSample, Event, PodCondition, PodUsage};

    use super::*;
    use crate::test_objects::{deployment, hpa, node, objects, pod};

    /// Pod `pod` ready and measured at `millicores` over the ten seconds
    /// before `now`.
    async fn burning(
        objects: &Objects,
        metrics: &PodMetricsStore,
        pod: &Pod,
        millicores: u64,
        now: u64,
    ) {
        let name = &pod.metadata.name;
        objects
            .modify::<Pod>(Some("shop"), name, |pod| {
                pod.status.phase = PodPhase::Running;
                pod.status.conditions = vec![PodCondition {
                    kind: "Ready".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }];
                true
            })
            .await
            .unwrap();
        let sample = |at: u64, cpu_ns: u64| PodUsage {
            project: "shop".into(),
            name: name.clone(),
            uid: pod.metadata.uid.clone(),
            timestamp_ms: at,
            containers: vec![ContainerUsageSample {
                name: "main".into(),
                usage: ContainerUsage {
                    cpu_usage_ns: cpu_ns,
                    memory_working_set_bytes: 1 << 20,
                },
            }],
        };
        // Distinct earlier samples each time, so that every call is a new rate.
        metrics.record("n1", vec![sample(now - 10_000, now)], now);
        let used_ns = millicores * 10_000 * 1_000;
        metrics.record("n1", vec![sample(now, now + used_ns)], now);
    }

    fn controller(objects: &Objects, metrics: &PodMetricsStore) -> HpaController {
        HpaController::new(objects.clone(), metrics.clone(), Duration::from_secs(15))
    }

    async fn replicas(objects: &Objects) -> u32 {
        let web: Deployment = objects.require(Some("shop"), "web").await.unwrap();
        web.spec.replicas
    }

    async fn status(objects: &Objects) -> HpaStatus {
        let hpa: HorizontalPodAutoscaler = objects.require(Some("shop"), "web").await.unwrap();
        hpa.status
    }

    fn reason<'a>(status: &'a HpaStatus, kind: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.kind == kind).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[tokio::test]
    async fn scales_up_in_one_sync_and_down_only_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let metrics = PodMetricsStore::new();
        node(&objects, "n1", true).await;
        let web = deployment(&objects, "web").await;
        let first = pod(&objects, &web, Some("n1")).await;
        let mut autoscaler = hpa("web", 3);
        autoscaler.spec.behavior = Some(
            serde_json::from_value(serde_json::json!({
                "scaleDown": {"stabilizationWindowSeconds": 30}
            }))
            .unwrap(),
        );
        objects.apply_hpa(autoscaler).await.unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = reports.clone();
        let controller = controller(&objects, &metrics)
            .with_reports(Some(Arc::new(move |r| seen.lock().unwrap().push(r))));

        // 100m requested, 50% wanted, 140m used: ceil(1 * 140 / 50) = 3.
        let t0 = 1_000_000_000;
        burning(&objects, &metrics, &first, 140, t0).await;
        controller.sync_all(t0).await.unwrap();
        assert_eq!(replicas(&objects).await, 3);
        let now = status(&objects).await;
        assert_eq!((now.current_replicas, now.desired_replicas), (1, 3));
        assert_eq!(now.last_scale_time, Some(t0));
        assert_eq!(
            now.current_metrics[0].resource.current.average_utilization,
            Some(140)
        );
        assert_eq!(reason(&now, "AbleToScale"), ("True", "SucceededRescale"));
        assert_eq!(reason(&now, "ScalingActive"), ("True", "ValidMetricFound"));
        assert_eq!(
            reason(&now, "ScalingLimited"),
            ("False", "DesiredWithinRange")
        );
        let message =
            "New size: 3; reason: cpu resource utilization (percentage of request) above target";
        assert_eq!(reports.lock().unwrap()[0].message, message);
        let (events, _) = objects.list::<Event>(Some("shop"), None).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.reason == "SuccessfulRescale" && e.message == message),
            "{events:?}"
        );

        // The load stops: the three idle pods stay until the 30 s window
        // has no higher recommendation left, then go to the minimum.
        let web: Deployment = objects.require(Some("shop"), "web").await.unwrap();
        let mut pods = vec![first];
        for _ in 1..3 {
            pods.push(pod(&objects, &web, Some("n1")).await);
        }
        for (step, at) in [(15_000, 3), (30_000, 3), (45_000, 1)] {
            for p in &pods {
                burning(&objects, &metrics, p, 0, t0 + step).await;
            }
            controller.sync_all(t0 + step).await.unwrap();
            assert_eq!(replicas(&objects).await, at, "after {step} ms");
        }
        let now = status(&objects).await;
        assert_eq!(now.last_scale_time, Some(t0 + 45_000));
        assert_eq!(reason(&now, "ScalingLimited"), ("True", "TooFewReplicas"));
        let last = reports.lock().unwrap().last().unwrap().message.clone();
        assert_eq!(last, "New size: 1; reason: All metrics below target");
    }

    #[tokio::test]
    async fn a_missing_target_or_missing_metrics_show_in_the_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let metrics = PodMetricsStore::new();
        objects.apply_hpa(hpa("web", 3)).await.unwrap();
        let controller = controller(&objects, &metrics);
        controller.sync_all(1_000).await.unwrap();
        let now = status(&objects).await;
        assert_eq!(reason(&now, "AbleToScale"), ("False", "FailedGetScale"));
        assert!(
            now.conditions[0]
                .message
                .contains("deployment web not found")
        );

        node(&objects, "n1", true).await;
        let web = deployment(&objects, "web").await;
        pod(&objects, &web, Some("n1")).await;
        controller.sync_all(2_000).await.unwrap();
        let now = status(&objects).await;
        assert_eq!(
            reason(&now, "ScalingActive"),
            ("False", "FailedGetResourceMetric")
        );
        assert_eq!(
            replicas(&objects).await,
            1,
            "nothing measured, nothing scaled"
        );
    }
}
