//! Container lifecycle hooks (`lifecycle.postStart`, `lifecycle.preStop`)
//! as Kubernetes honours them: an `exec` command, an `httpGet` or a
//! `sleep`. `tcpSocket`, which Kubernetes keeps only to fail at run time,
//! is refused naming the field.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::probe::{ExecAction, HttpGetAction, TcpSocketAction, exactly_one};
use crate::workload::ContainerPort;

/// What the node runs when a container has started and before it stops.
///
/// ```
/// let lifecycle: wharf_api::Lifecycle =
///     serde_json::from_str(r#"{"preStop": {"sleep": {"seconds": 2}}}"#).unwrap();
/// let (kind, hook) = lifecycle.hooks().next().unwrap();
/// assert_eq!(kind, wharf_api::HookKind::PreStop);
/// assert_eq!(hook.sleep.as_ref().unwrap().seconds, 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Run right after the container starts; a failure kills the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<LifecycleHandler>,
    /// Run before the container gets SIGTERM, within the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<LifecycleHandler>,
}

/// One hook's action: exactly one of `exec`, `httpGet` or `sleep`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHandler {
    /// A command run in the container: exit code 0 succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET to the pod's address: a status 200-399 succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Waiting that long, on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepAction>,
    /// Declared only to be refused by name: Kubernetes does not run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
}

/// A hook that waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SleepAction {
    /// Seconds to wait.
    pub seconds: i64,
}

impl SleepAction {
    /// The wait (none for a negative count, which validation refuses).
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds.max(0) as u64)
    }
}

/// Which of a container's hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// `postStart`.
    PostStart,
    /// `preStop`.
    PreStop,
}

impl HookKind {
    /// The field under `lifecycle` that holds the hook.
    pub fn field(self) -> &'static str {
        match self {
            HookKind::PostStart => "postStart",
            HookKind::PreStop => "preStop",
        }
    }

    /// The reason of the event a failure of the hook reports.
    pub fn failure_reason(self) -> &'static str {
        match self {
            HookKind::PostStart => "FailedPostStartHook",
            HookKind::PreStop => "FailedPreStopHook",
        }
    }
}

impl Lifecycle {
    /// The hooks declared, with their kind.
    pub fn hooks(&self) -> impl Iterator<Item = (HookKind, &LifecycleHandler)> {
        [
            (HookKind::PostStart, &self.post_start),
            (HookKind::PreStop, &self.pre_stop),
        ]
        .into_iter()
        .filter_map(|(kind, hook)| Some((kind, hook.as_ref()?)))
    }

    /// Checks the hooks at `field` (e.g. `spec.containers[0].lifecycle`)
    /// of a container with `ports` in a pod whose grace period is
    /// `grace_seconds`; the error names the offending field.
    pub fn validate(
        &self,
        field: &str,
        ports: &[ContainerPort],
        grace_seconds: u64,
    ) -> Result<(), ObjectError> {
        for (kind, hook) in self.hooks() {
            hook.validate(&format!("{field}.{}", kind.field()), ports, grace_seconds)?;
        }
        Ok(())
    }
}

impl LifecycleHandler {
    fn validate(
        &self,
        field: &str,
        ports: &[ContainerPort],
        grace_seconds: u64,
    ) -> Result<(), ObjectError> {
        if self.tcp_socket.is_some() {
            return Err(ObjectError::invalid(
                format!("{field}.tcpSocket"),
                "tcpSocket hooks are not supported (Kubernetes does not run them either); use exec, httpGet or sleep",
            ));
        }
        exactly_one(
            field,
            &[
                ("exec", self.exec.is_some()),
                ("httpGet", self.http_get.is_some()),
                ("sleep", self.sleep.is_some()),
            ],
        )?;
        if let Some(exec) = &self.exec {
            exec.validate(&format!("{field}.exec"))?;
        }
        if let Some(http) = &self.http_get {
            http.validate(&format!("{field}.httpGet"), ports)?;
        }
        if let Some(sleep) = &self.sleep
            && !(0..=grace_seconds as i64).contains(&sleep.seconds)
        {
            return Err(ObjectError::invalid(
                format!("{field}.sleep.seconds"),
                format!(
                    "must be from 0 to terminationGracePeriodSeconds ({grace_seconds}), not {}",
                    sleep.seconds
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(json: &str, grace: u64) -> Option<String> {
        let lifecycle: Lifecycle = serde_json::from_str(json).unwrap();
        let ports = [ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }];
        match lifecycle.validate("l", &ports, grace) {
            Ok(()) => None,
            Err(ObjectError::Invalid { field, .. }) => Some(field),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn exec_http_get_and_sleep_are_accepted() {
        for json in [
            r#"{"postStart": {"exec": {"command": ["touch", "/tmp/up"]}}}"#,
            r#"{"preStop": {"httpGet": {"path": "/drain", "port": "http"}}}"#,
            r#"{"preStop": {"sleep": {"seconds": 30}}}"#,
            r#"{"preStop": {"sleep": {"seconds": 0}}}"#,
        ] {
            assert_eq!(field_of(json, 30), None, "{json}");
        }
    }

    #[test]
    fn invalid_hooks_are_refused_naming_the_field() {
        let cases = [
            (r#"{"preStop": {}}"#, "l.preStop"),
            (
                r#"{"preStop": {"sleep": {"seconds": 1}, "exec": {"command": ["true"]}}}"#,
                "l.preStop",
            ),
            (
                r#"{"postStart": {"tcpSocket": {"port": 80}}}"#,
                "l.postStart.tcpSocket",
            ),
            (
                r#"{"postStart": {"exec": {"command": []}}}"#,
                "l.postStart.exec.command",
            ),
            (
                r#"{"preStop": {"httpGet": {"port": "admin"}}}"#,
                "l.preStop.httpGet.port",
            ),
            (
                r#"{"preStop": {"httpGet": {"port": 80, "scheme": "HTTPS"}}}"#,
                "l.preStop.httpGet.scheme",
            ),
            (
                r#"{"preStop": {"sleep": {"seconds": 31}}}"#,
                "l.preStop.sleep.seconds",
            ),
            (
                r#"{"preStop": {"sleep": {"seconds": -1}}}"#,
                "l.preStop.sleep.seconds",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(field_of(json, 30).as_deref(), Some(field), "{json}");
        }
    }

    #[test]
    fn hooks_name_their_field_and_event() {
        let both: Lifecycle = serde_json::from_str(
            r#"{"postStart": {"sleep": {"seconds": 1}}, "preStop": {"sleep": {"seconds": 2}}}"#,
        )
        .unwrap();
        let kinds: Vec<_> = both.hooks().map(|(kind, _)| kind.field()).collect();
        assert_eq!(kinds, ["postStart", "preStop"]);
        assert_eq!(HookKind::PreStop.failure_reason(), "FailedPreStopHook");
        assert_eq!(HookKind::PostStart.failure_reason(), "FailedPostStartHook");
        assert_eq!(
            SleepAction { seconds: 2 }.duration(),
            Duration::from_secs(2)
        );
    }
}
