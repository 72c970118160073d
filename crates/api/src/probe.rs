//! Container probes (`livenessProbe`, `readinessProbe`, `startupProbe`) as
//! Kubernetes defines them: one handler (`httpGet`, `tcpSocket`, `exec`)
//! and the timing that turns its results into a verdict.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::workload::ContainerPort;

/// A check of a container, run by the node agent.
///
/// ```
/// let probe: wharf_api::Probe = serde_json::from_str(
///     r#"{"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}"#,
/// ).unwrap();
/// assert_eq!(probe.period(), std::time::Duration::from_secs(1));
/// assert_eq!(probe.failure_threshold(), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// An HTTP GET to the pod's address: a status 200-399 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// A TCP connection to the pod's address: an accepted connection passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// A command run in the container: exit code 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// A gRPC health check: declared only to be refused by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    /// Seconds after the container starts before the first check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    /// Seconds between checks (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    /// Seconds a check may take before it counts as failed (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Consecutive passes that make a failing probe pass (default 1; must
    /// be 1 for liveness and startup probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// Consecutive failures that make a passing probe fail (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Grace of the stop after a failed liveness or startup probe (else the pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<u64>,
}

/// An HTTP GET check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Request path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A port number or the name of one of the container's ports.
    pub port: ProbePort,
    /// Address to connect to instead of the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
    /// `HTTP` (the default; `HTTPS` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

/// A request header of an HTTP check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// A TCP connect check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TcpSocketAction {
    /// A port number or the name of one of the container's ports.
    pub port: ProbePort,
    /// Address to connect to instead of the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A command check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExecAction {
    /// The command and its arguments (no shell).
    #[serde(default)]
    pub command: Vec<String>,
}

/// A gRPC check (not supported).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GrpcAction {
    /// Port.
    #[serde(default)]
    pub port: i64,
    /// Service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// `8080` or `"http"` (a container port's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProbePort {
    /// A port number.
    Number(i64),
    /// The name of one of the container's ports.
    Name(String),
}

impl Default for ProbePort {
    fn default() -> Self {
        ProbePort::Number(0)
    }
}

impl ProbePort {
    /// The port number: the number given, or the named port's; `None` for
    /// a number out of range or an unknown name.
    pub fn resolve(&self, ports: &[ContainerPort]) -> Option<u16> {
        match self {
            ProbePort::Number(n) => u16::try_from(*n).ok().filter(|n| *n != 0),
            ProbePort::Name(name) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        }
    }
}

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `startupProbe`: gates the others until it first passes.
    Startup,
    /// `livenessProbe`: restarts the container when it fails.
    Liveness,
    /// `readinessProbe`: sets the container's `ready`.
    Readiness,
}

impl ProbeKind {
    /// `Startup`, `Liveness` or `Readiness`, as events name them.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// The container field that holds the probe.
    pub fn field(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startupProbe",
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Readiness => "readinessProbe",
        }
    }
}

impl Probe {
    /// Delay before the first check.
    pub fn initial_delay(&self) -> Duration {
        Duration::from_secs(self.initial_delay_seconds.unwrap_or(0).into())
    }

    /// Time between checks.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_seconds.unwrap_or(10).into())
    }

    /// Time one check may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.unwrap_or(1).into())
    }

    /// Consecutive passes needed.
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold.unwrap_or(1)
    }

    /// Consecutive failures needed.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3)
    }

    /// Checks the probe at `field` (e.g. `spec.containers[0].livenessProbe`)
    /// of a container with `ports`; the error names the offending field.
    pub fn validate(
        &self,
        field: &str,
        kind: ProbeKind,
        ports: &[ContainerPort],
    ) -> Result<(), ObjectError> {
        if self.grpc.is_some() {
            return Err(ObjectError::invalid(
                format!("{field}.grpc"),
                "gRPC probes are not supported; use httpGet, tcpSocket or exec",
            ));
        }
        exactly_one(
            field,
            &[
                ("httpGet", self.http_get.is_some()),
                ("tcpSocket", self.tcp_socket.is_some()),
                ("exec", self.exec.is_some()),
            ],
        )?;
        if let Some(http) = &self.http_get {
            http.validate(&format!("{field}.httpGet"), ports)?;
        }
        if let Some(tcp) = &self.tcp_socket {
            let at = format!("{field}.tcpSocket");
            check_port(&format!("{at}.port"), &tcp.port, ports)?;
            check_host(&format!("{at}.host"), tcp.host.as_deref())?;
        }
        if let Some(exec) = &self.exec {
            exec.validate(&format!("{field}.exec"))?;
        }
        for (name, value) in [
            ("periodSeconds", self.period_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("successThreshold", self.success_threshold),
            ("failureThreshold", self.failure_threshold),
        ] {
            if value == Some(0) {
                return Err(ObjectError::invalid(
                    format!("{field}.{name}"),
                    "must be at least 1",
                ));
            }
        }
        if kind != ProbeKind::Readiness && self.success_threshold() != 1 {
            return Err(ObjectError::invalid(
                format!("{field}.successThreshold"),
                "must be 1 for liveness and startup probes",
            ));
        }
        if kind == ProbeKind::Readiness && self.termination_grace_period_seconds.is_some() {
            return Err(ObjectError::invalid(
                format!("{field}.terminationGracePeriodSeconds"),
                "only liveness and startup probes stop the container",
            ));
        }
        Ok(())
    }
}

impl HttpGetAction {
    /// Checks the action at `at` (e.g. `...livenessProbe.httpGet`) of a
    /// container with `ports`; the error names the offending field.
    pub(crate) fn validate(&self, at: &str, ports: &[ContainerPort]) -> Result<(), ObjectError> {
        check_port(&format!("{at}.port"), &self.port, ports)?;
        if let Some(scheme) = self.scheme.as_deref().filter(|s| *s != "HTTP") {
            let message = match scheme {
                "HTTPS" => "HTTPS is not supported; use HTTP",
                _ => "use HTTP",
            };
            return Err(ObjectError::invalid(format!("{at}.scheme"), message));
        }
        if let Some(path) = &self.path
            && (!path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(ObjectError::invalid(
                format!("{at}.path"),
                "must start with / and hold no spaces or control characters",
            ));
        }
        check_host(&format!("{at}.host"), self.host.as_deref())?;
        for (i, header) in self.http_headers.iter().enumerate() {
            let valid_name = !header.name.is_empty()
                && header
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                return Err(ObjectError::invalid(
                    format!("{at}.httpHeaders[{i}].name"),
                    "not a valid header name",
                ));
            }
            if header.value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(ObjectError::invalid(
                    format!("{at}.httpHeaders[{i}].value"),
                    "must hold no control characters",
                ));
            }
        }
        Ok(())
    }
}

impl ExecAction {
    /// Checks the action at `at` (e.g. `...livenessProbe.exec`).
    pub(crate) fn validate(&self, at: &str) -> Result<(), ObjectError> {
        if self.command.first().is_none_or(|c| c.is_empty()) {
            return Err(ObjectError::invalid(
                format!("{at}.command"),
                "a command is required",
            ));
        }
        Ok(())
    }
}

/// Refuses a probe or hook at `field` that sets other than exactly one of
/// its `handlers` (name, whether set).
pub(crate) fn exactly_one(field: &str, handlers: &[(&str, bool)]) -> Result<(), ObjectError> {
    if handlers.iter().filter(|(_, set)| *set).count() == 1 {
        return Ok(());
    }
    let names: Vec<&str> = handlers.iter().map(|(name, _)| *name).collect();
    let (last, rest) = names.split_last().expect("handlers");
    Err(ObjectError::invalid(
        field,
        format!("exactly one of {} or {last} is required", rest.join(", ")),
    ))
}

fn check_port(field: &str, port: &ProbePort, ports: &[ContainerPort]) -> Result<(), ObjectError> {
    if port.resolve(ports).is_some() {
        return Ok(());
    }
    let message = match port {
        ProbePort::Number(_) => "must be 1-65535".to_string(),
        ProbePort::Name(name) => format!("no port of the container is named {name:?}"),
    };
    Err(ObjectError::invalid(field, message))
}

/// A probe's `host` must be an IP address: a name would be resolved on the
/// node, which Kubernetes advises against and Wharf does not do.
fn check_host(field: &str, host: Option<&str>) -> Result<(), ObjectError> {
    match host {
        Some(host) if host.parse::<std::net::IpAddr>().is_err() => Err(ObjectError::invalid(
            field,
            format!("{host:?} is not an IP address"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<ContainerPort> {
        vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }]
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    fn field_of(probe: &Probe, kind: ProbeKind) -> Option<String> {
        match probe.validate("p", kind, &ports()) {
            Ok(()) => None,
            Err(ObjectError::Invalid { field, .. }) => Some(field),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn defaults_are_kubernetes_ones() {
        let p = probe(r#"{"tcpSocket": {"port": 80}}"#);
        assert_eq!(p.initial_delay(), Duration::ZERO);
        assert_eq!(p.period(), Duration::from_secs(10));
        assert_eq!(p.timeout(), Duration::from_secs(1));
        assert_eq!((p.success_threshold(), p.failure_threshold()), (1, 3));
        assert_eq!(field_of(&p, ProbeKind::Liveness), None);
    }

    #[test]
    fn ports_resolve_by_number_or_name() {
        let p = probe(r#"{"httpGet": {"path": "/healthz", "port": "http"}}"#);
        assert_eq!(
            p.http_get.as_ref().unwrap().port.resolve(&ports()),
            Some(8080)
        );
        assert_eq!(field_of(&p, ProbeKind::Readiness), None);
        let named = probe(r#"{"httpGet": {"port": "admin"}}"#);
        assert_eq!(
            field_of(&named, ProbeKind::Readiness).as_deref(),
            Some("p.httpGet.port")
        );
        for bad in ["0", "65536", "-1"] {
            let p = probe(&format!(r#"{{"tcpSocket": {{"port": {bad}}}}}"#));
            assert_eq!(
                field_of(&p, ProbeKind::Liveness).as_deref(),
                Some("p.tcpSocket.port")
            );
        }
    }

    #[test]
    fn exactly_one_handler() {
        assert_eq!(
            field_of(&probe("{}"), ProbeKind::Liveness).as_deref(),
            Some("p")
        );
        let two = probe(r#"{"tcpSocket": {"port": 80}, "exec": {"command": ["true"]}}"#);
        assert_eq!(field_of(&two, ProbeKind::Liveness).as_deref(), Some("p"));
        let empty = probe(r#"{"exec": {"command": []}}"#);
        assert_eq!(
            field_of(&empty, ProbeKind::Liveness).as_deref(),
            Some("p.exec.command")
        );
    }

    #[test]
    fn unsupported_settings_are_refused_by_name() {
        let grpc = probe(r#"{"grpc": {"port": 9000}}"#);
        assert_eq!(
            field_of(&grpc, ProbeKind::Liveness).as_deref(),
            Some("p.grpc")
        );
        let https = probe(r#"{"httpGet": {"port": 80, "scheme": "HTTPS"}}"#);
        assert_eq!(
            field_of(&https, ProbeKind::Liveness).as_deref(),
            Some("p.httpGet.scheme")
        );
        let host = probe(r#"{"tcpSocket": {"port": 80, "host": "db.example"}}"#);
        assert_eq!(
            field_of(&host, ProbeKind::Liveness).as_deref(),
            Some("p.tcpSocket.host")
        );
        let header =
            probe(r#"{"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": ""}]}}"#);
        assert_eq!(
            field_of(&header, ProbeKind::Liveness).as_deref(),
            Some("p.httpGet.httpHeaders[0].name")
        );
    }

    #[test]
    fn thresholds_are_checked() {
        let twice = probe(r#"{"tcpSocket": {"port": 80}, "successThreshold": 2}"#);
        assert_eq!(field_of(&twice, ProbeKind::Readiness), None);
        for kind in [ProbeKind::Liveness, ProbeKind::Startup] {
            assert_eq!(
                field_of(&twice, kind).as_deref(),
                Some("p.successThreshold")
            );
        }
        let zero = probe(r#"{"tcpSocket": {"port": 80}, "periodSeconds": 0}"#);
        assert_eq!(
            field_of(&zero, ProbeKind::Readiness).as_deref(),
            Some("p.periodSeconds")
        );
    }
}
