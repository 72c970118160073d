//! Lifecycle hooks, run as kubelet runs them: `postStart` right after a
//! container starts (a failure stops it, and the restart policy applies),
//! `preStop` before every stop the node makes (the pod's deletion, a
//! failed liveness or startup probe, a failed `postStart`), within the
//! stop's grace period, then SIGTERM with what is left. Their `exec` and
//! `httpGet` are the probes' checks (`runc exec`; a GET from the node to
//! the pod's address).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use wharf_api::{
    Container, ContainerPort, EventType, HookKind, LifecycleHandler, PodEventReport, ProbePort,
};

use super::{ContainerError, ContainerRuntime, Liveness, PodRecord, PodSlot, container_record};
use crate::probes::Check;

/// Time a container gets between SIGTERM and SIGKILL when its `preStop`
/// used up the grace period (kubelet's minimum too).
const MIN_STOP_GRACE: Duration = Duration::from_secs(2);

/// Longest a `postStart` hook may run. Kubernetes sets no bound, but a hook
/// that never ends would hold its container's start for good.
const POST_START_TIMEOUT: Duration = Duration::from_secs(300);

/// A hook made ready for one run of a container.
enum Hook {
    /// `exec` or `httpGet`, as a probe runs it.
    Check(Check),
    /// `sleep`: waiting on the node.
    Sleep(Duration),
}

impl Hook {
    /// Runs the hook for at most `timeout`; `Err` says why it failed.
    async fn run(&self, timeout: Duration) -> Result<(), String> {
        match self {
            Hook::Check(check) => check.run(timeout).await,
            Hook::Sleep(wait) => {
                tokio::time::sleep((*wait).min(timeout)).await;
                Ok(())
            }
        }
    }
}

/// The hook as the node keeps it for later stops: named ports replaced by
/// their numbers, so that the container's spec is not needed then.
pub(super) fn recorded(hook: &LifecycleHandler, ports: &[ContainerPort]) -> LifecycleHandler {
    let mut hook = hook.clone();
    if let Some(http) = &mut hook.http_get
        && let Some(number) = http.port.resolve(ports)
    {
        http.port = ProbePort::Number(number.into());
    }
    hook
}

impl ContainerRuntime {
    /// Runs the container's `postStart` hook, if it has one, right after
    /// it started; on failure reports `FailedPostStartHook` and stops the
    /// container (its exit is then seen like any other).
    pub(super) async fn post_start(
        &self,
        slot: &PodSlot,
        container: &Container,
        dir: &Path,
        ip: Ipv4Addr,
    ) {
        let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        else {
            return;
        };
        let Some(entry) = slot.record.containers.get(&container.name) else {
            return;
        };
        let kind = HookKind::PostStart;
        let ran = match self.hook(hook, &container.ports, ip, &entry.id, dir, kind) {
            Ok(ready) => ready.run(POST_START_TIMEOUT).await,
            Err(why) => Err(why),
        };
        let Err(why) = ran else {
            return;
        };
        let (project, name) = (&slot.record.project, &slot.record.name);
        self.hook_failed(project, name, &container.name, kind, &why)
            .await;
        let grace = self.grace_of(&slot.record, None);
        if let Err(err) = self
            .stop_container(&slot.record, &container.name, grace)
            .await
        {
            tracing::warn!(container = entry.id, error = %err, "stopping the container failed");
        }
    }

    /// Stops one container of the pod: its `preStop` hook first when it
    /// runs (within `grace`), then SIGTERM with the grace left (at least
    /// [`MIN_STOP_GRACE`] after a hook), then SIGKILL.
    pub(super) async fn stop_container(
        &self,
        record: &PodRecord,
        name: &str,
        grace: Duration,
    ) -> Result<(), ContainerError> {
        let Some(entry) = record.containers.get(name) else {
            return Ok(());
        };
        let dir = self.container_dir(&record.project, &record.name, name);
        let mut left = grace;
        if let Some(hook) = entry.pre_stop.as_ref().filter(|_| !grace.is_zero())
            && entry.running
            && self.containers.liveness(&entry.id, &dir).await == Liveness::Running
        {
            let began = Instant::now();
            let ip = self.ip_of(record).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let kind = HookKind::PreStop;
            let ran = match self.hook(hook, &[], ip, &entry.id, &dir, kind) {
                Ok(ready) => ready.run(grace).await,
                Err(why) => Err(why),
            };
            if let Err(why) = ran {
                self.hook_failed(&record.project, &record.name, name, kind, &why)
                    .await;
            }
            left = grace.saturating_sub(began.elapsed()).max(MIN_STOP_GRACE);
        }
        self.containers.stop(&entry.id, &dir, left).await
    }

    /// The grace of a stop: `grace` when given, else the pod's own.
    pub(super) fn grace_of(&self, record: &PodRecord, grace: Option<u64>) -> Duration {
        Duration::from_secs(grace.unwrap_or(record.grace_seconds))
    }

    /// The hook ready to run on container `id` (in `dir`) of a pod at `ip`.
    fn hook(
        &self,
        hook: &LifecycleHandler,
        ports: &[ContainerPort],
        ip: Ipv4Addr,
        id: &str,
        dir: &Path,
        kind: HookKind,
    ) -> Result<Hook, String> {
        if let Some(sleep) = &hook.sleep {
            return Ok(Hook::Sleep(sleep.duration()));
        }
        let pid_file = dir.join(format!("hook-{}.pid", kind.field()));
        let exec = self.containers.runc().map(|runc| (runc, id, pid_file));
        match Check::of_hook(hook, ports, ip.into(), exec) {
            Some(check) => check.map(Hook::Check),
            None => Err("the hook has no handler".into()),
        }
    }

    /// Reports a failed hook as a warning event naming it.
    async fn hook_failed(
        &self,
        project: &str,
        pod: &str,
        container: &str,
        kind: HookKind,
        why: &str,
    ) {
        let event = PodEventReport {
            event_type: EventType::Warning,
            reason: kind.failure_reason().into(),
            message: format!(
                "{} hook of container {container} failed: {why}",
                kind.field()
            ),
        };
        tracing::warn!(project, pod, "{}", event.message);
        if let Err(err) = self.api.pod_event(project, pod, &event).await {
            tracing::warn!(pod, error = %err, "reporting the failed hook failed");
        }
    }
}

impl PodSlot {
    /// Keeps the container's `preStop` hook in its record, for the stops
    /// to come (even after an agent restart).
    pub(super) fn remember_pre_stop(&mut self, container: &Container) {
        let hook = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref());
        container_record(&mut self.record, &container.name).pre_stop =
            hook.map(|hook| recorded(hook, &container.ports));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_hooks_carry_port_numbers() {
        let hook: LifecycleHandler =
            serde_json::from_str(r#"{"httpGet": {"path": "/drain", "port": "http"}}"#).unwrap();
        let ports = [ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }];
        let kept = recorded(&hook, &ports);
        assert_eq!(kept.http_get.unwrap().port, ProbePort::Number(8080));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_hook_waits_at_most_its_timeout() {
        let began = tokio::time::Instant::now();
        let hook = Hook::Sleep(Duration::from_secs(5));
        assert_eq!(hook.run(Duration::from_secs(2)).await, Ok(()));
        assert_eq!(began.elapsed(), Duration::from_secs(2));
    }
}
