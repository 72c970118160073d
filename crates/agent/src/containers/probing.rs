//! The runtime's side of probes: a [`Prober`] for each run of a container
//! that has probes, its failures reported as `Unhealthy` events, and the
//! container stopped (`Killing`, its `preStop` hook first) when its
//! liveness or startup probe fails.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use wharf_api::{Container, EventType, Pod, PodEventReport, ProbeKind};

use super::{ContainerRuntime, PodSlot, container_record};
use crate::probes::{Check, FailureSink, Prober};
use crate::runtime::now_millis;

impl ContainerRuntime {
    /// Keeps a prober on a running container that has probes, and stops
    /// the container when a probe asks for it (its exit is then seen and
    /// the restart policy applies). Says when to look again.
    pub(super) async fn watch_probes(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
        container: &Container,
        dir: &Path,
        ip: Ipv4Addr,
    ) -> Duration {
        if container.probes().next().is_none() {
            return self.config.poll;
        }
        let entry = container_record(&mut slot.record, &container.name);
        let (id, run) = (entry.id.clone(), entry.started_at.unwrap_or_default());
        let current = slot.probers.get(&container.name);
        if current.is_none_or(|prober| prober.run() != run) {
            let prober = self.prober(pod, container, &id, dir, ip, run);
            slot.probers.insert(container.name.clone(), prober);
        }
        let verdict = slot.probers[&container.name].verdict();
        if let Some(kind) = verdict.kill {
            slot.probers.remove(&container.name);
            self.kill_unhealthy(pod, slot, container, kind, &id).await;
        }
        self.config.poll
    }

    /// A prober of the run of `container` that started at `run` (unix ms).
    fn prober(
        &self,
        pod: &Pod,
        container: &Container,
        id: &str,
        dir: &Path,
        ip: Ipv4Addr,
        run: u64,
    ) -> Prober {
        let runc = self.containers.runc();
        let checks = container
            .probes()
            .map(|(kind, probe)| {
                let pid_file = dir.join(format!("probe-{}.pid", kind.field()));
                let exec = runc.map(|runc| (runc, id, pid_file));
                let check = Check::of(probe, container, ip.into(), exec);
                (kind, (check, probe.timeout()))
            })
            .collect();
        let ran = Duration::from_millis(now_millis().saturating_sub(run));
        let since = Instant::now().checked_sub(ran).unwrap_or_else(Instant::now);
        Prober::start(
            container,
            checks,
            run,
            since,
            self.unhealthy_events(pod, container),
        )
    }

    /// Reports each failed check as an `Unhealthy` event, off the prober's
    /// timer (a lost event is only logged).
    fn unhealthy_events(&self, pod: &Pod, container: &Container) -> FailureSink {
        let api = self.api.clone();
        let project = pod.metadata.project.clone().unwrap_or_default();
        let (pod, container) = (pod.metadata.name.clone(), container.name.clone());
        std::sync::Arc::new(move |kind: ProbeKind, output: String| {
            let event = PodEventReport {
                event_type: EventType::Warning,
                reason: "Unhealthy".into(),
                message: format!(
                    "{} probe of container {container} failed: {output}",
                    kind.name()
                ),
            };
            let (api, project, pod) = (api.clone(), project.clone(), pod.clone());
            tokio::spawn(async move {
                if let Err(err) = api.pod_event(&project, &pod, &event).await {
                    tracing::warn!(pod, error = %err, "{}", event.message);
                }
            });
        })
    }

    /// Stops a container whose `kind` probe failed, with the probe's grace
    /// (else the pod's), and says so in a `Killing` event.
    async fn kill_unhealthy(
        &self,
        pod: &Pod,
        slot: &PodSlot,
        container: &Container,
        kind: ProbeKind,
        id: &str,
    ) {
        let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
        // A killed container exits non-zero: it runs again unless `Never`.
        let then = match policy {
            "Never" => "will not be restarted (restartPolicy Never)",
            _ => "will be restarted",
        };
        let event = PodEventReport {
            event_type: EventType::Normal,
            reason: "Killing".into(),
            message: format!(
                "Container {} failed {} probe, {then}",
                container.name,
                kind.field().trim_end_matches("Probe")
            ),
        };
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        tracing::info!(pod = pod.metadata.name, "{}", event.message);
        if let Err(err) = self
            .api
            .pod_event(project, &pod.metadata.name, &event)
            .await
        {
            tracing::warn!(pod = pod.metadata.name, error = %err, "reporting the kill failed");
        }
        let probe = container.probes().find(|(k, _)| *k == kind).map(|(_, p)| p);
        let grace = self.grace_of(
            &slot.record,
            probe.and_then(|p| p.termination_grace_period_seconds),
        );
        if let Err(err) = self
            .stop_container(&slot.record, &container.name, grace)
            .await
        {
            tracing::warn!(container = id, error = %err, "stopping the unhealthy container failed");
        }
    }
}
