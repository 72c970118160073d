//! Deployments and pods: the Kubernetes `apps/v1` shapes Wharf accepts.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::env::{EnvFromSource, EnvVarSource};
use crate::lifecycle::Lifecycle;
use crate::meta::{LabelSelector, ObjectMeta, check_labels, check_name};
use crate::probe::{Probe, ProbeKind};
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};
use crate::rollout::DeploymentCondition;
use crate::security::{self, EffectiveSecurity, PodSecurityContext, SecurityContext};
use crate::volume::{Volume, VolumeMount, validate_mounts, validate_volumes};

/// Amounts of schedulable resources, as numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in millicores.
    #[serde(default)]
    pub cpu_millis: u64,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Number of pods.
    #[serde(default)]
    pub pods: u32,
}

/// A Deployment: keeps `replicas` pods of its template running.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `apps/v1`.
    #[serde(default = "apps_v1")]
    pub api_version: String,
    /// `Deployment`.
    #[serde(default = "deployment_kind")]
    pub kind: String,
    /// Name, project, labels, annotations.
    pub metadata: ObjectMeta,
    /// What should run.
    pub spec: DeploymentSpec,
    /// What runs.
    #[serde(default)]
    pub status: DeploymentStatus,
}

fn apps_v1() -> String {
    "apps/v1".into()
}

fn deployment_kind() -> String {
    "Deployment".into()
}

/// The desired state of a deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// How many pods; 1 when absent.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Which pods belong to the deployment; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods to run.
    pub template: PodTemplate,
    /// How pods are replaced when the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// Seconds a new pod must be ready before it counts as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<u32>,
    /// Old revisions kept for rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<u32>,
    /// Seconds a rollout may take before it is reported as stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u32>,
    /// A paused deployment keeps its pods as they are when its template
    /// changes (`wharf rollout pause`); scaling still applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

fn one() -> u32 {
    1
}

/// Rollout strategy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Limits of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// Limits of a rolling update: a count or a percentage each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Pods above `replicas` during the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
    /// Pods below `replicas` during the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// `3` or `"25%"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IntOrPercent {
    /// A count.
    Int(u32),
    /// A percentage such as `25%`.
    Percent(String),
}

/// The template pods are made from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels and annotations of the pods.
    #[serde(default)]
    pub metadata: PodTemplateMeta,
    /// The pods' spec.
    pub spec: PodSpec,
}

/// Template metadata: labels and annotations only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateMeta {
    /// Labels of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Generation of the spec the controller acted on last.
    #[serde(default)]
    pub observed_generation: u64,
    /// Pods that exist.
    #[serde(default)]
    pub replicas: u32,
    /// Pods of the current template.
    #[serde(default)]
    pub updated_replicas: u32,
    /// Pods bound to a node.
    #[serde(default)]
    pub scheduled_replicas: u32,
    /// Pods running and ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Pods ready for at least `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: u32,
    /// Pods still needed for `replicas` available ones.
    #[serde(default)]
    pub unavailable_replicas: u32,
    /// `Available` and `Progressing`, as Kubernetes reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DeploymentCondition>,
}

/// A pod: one or more containers placed together on a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// `v1`.
    #[serde(default = "core_v1")]
    pub api_version: String,
    /// `Pod`.
    #[serde(default = "pod_kind")]
    pub kind: String,
    /// Name, project, labels, owner.
    pub metadata: ObjectMeta,
    /// What to run, and where (`nodeName` once bound).
    pub spec: PodSpec,
    /// What happened.
    #[serde(default)]
    pub status: PodStatus,
}

fn core_v1() -> String {
    "v1".into()
}

fn pod_kind() -> String {
    "Pod".into()
}

/// What a pod runs and where it may run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The containers.
    pub containers: Vec<Container>,
    /// Labels a node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node affinity: labels a node must or should have (see
    /// [`crate::Affinity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<crate::Affinity>,
    /// Taints the pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The node it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `Always` (default), `OnFailure` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<u64>,
    /// A name ending in `-critical` marks the pod critical (it prefers newer machines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Storage the containers mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Users, groups and seccomp of every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Shares the node's PID namespace (needs the project's `allowPrivileged`).
    #[serde(default, rename = "hostPID", skip_serializing_if = "is_false")]
    pub host_pid: bool,
    /// Shares the node's IPC namespace (needs the project's `allowPrivileged`).
    #[serde(default, rename = "hostIPC", skip_serializing_if = "is_false")]
    pub host_ipc: bool,
    /// Shares the node's network namespace: no pod address, the node's
    /// instead (needs the project's `allowPrivileged`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_network: bool,
    /// `ClusterFirst` (default), `ClusterFirstWithHostNet`, `Default` or
    /// `None` (see [`PodSpec::dns_policy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    /// The resolv.conf of `dnsPolicy: None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<crate::PodDnsConfig>,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// A container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Name, unique in the pod.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Every key of ConfigMaps and Secrets as variables (`env` wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Requests and limits.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The pod's volumes this container mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// User, capabilities, read-only root, seccomp; overrides the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Restarts the container when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Says whether the container is ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Holds the other probes off until the container has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// Hooks run after the container starts and before it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

impl Container {
    /// The probes the container declares, with their kind.
    pub fn probes(&self) -> impl Iterator<Item = (ProbeKind, &Probe)> {
        [
            (ProbeKind::Startup, &self.startup_probe),
            (ProbeKind::Liveness, &self.liveness_probe),
            (ProbeKind::Readiness, &self.readiness_probe),
        ]
        .into_iter()
        .filter_map(|(kind, probe)| Some((kind, probe.as_ref()?)))
    }
}

/// An environment variable: a value, or where to take it from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value; `$(VAR)` names an earlier variable.
    #[serde(default)]
    pub value: String,
    /// Where the value comes from, instead of `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// A port a container listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port inside the container.
    pub container_port: u16,
    /// A port on the node forwarded to it (at most one pod per node may claim it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The node address the host port is forwarded on (all of the node's
    /// addresses when unset).
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::Ipv4Addr>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocols of ports.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

/// Requests (what scheduling reserves) and limits (what cgroups enforce).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceRequirements {
    /// Reserved amounts.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
    /// Enforced maximums.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
}

/// CPU and memory as Kubernetes quantities (`500m`, `128Mi`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceList {
    /// CPU, e.g. `500m` or `2` (a number is taken as its text).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::quantity::text_or_number"
    )]
    pub cpu: Option<String>,
    /// Memory, e.g. `256Mi` or `1073741824`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::quantity::text_or_number"
    )]
    pub memory: Option<String>,
}

impl ResourceList {
    fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }

    /// The amounts as numbers (absent = 0).
    pub fn amounts(&self, field: &str) -> Result<(u64, u64), ObjectError> {
        let cpu = match &self.cpu {
            Some(cpu) => parse_cpu_millis(&format!("{field}.cpu"), cpu)?,
            None => 0,
        };
        let memory = match &self.memory {
            Some(memory) => parse_memory_bytes(&format!("{field}.memory"), memory)?,
            None => 0,
        };
        Ok((cpu, memory))
    }
}

/// A toleration of taints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Taint key; empty with `Exists` tolerates every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// Value for `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Effect tolerated; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<crate::TaintEffect>,
    /// How long a `NoExecute` taint is tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<u64>,
}

/// Toleration operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    /// Key and value must match.
    #[default]
    Equal,
    /// Key must match (any value).
    Exists,
}

/// The lifecycle phase of a pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PodPhase {
    /// Not running yet (unscheduled, or pulling images).
    #[default]
    Pending,
    /// Bound to a node and started.
    Running,
    /// All containers exited successfully and will not restart.
    Succeeded,
    /// A container failed and will not restart.
    Failed,
    /// The node stopped reporting.
    Unknown,
}

/// The observed state of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Phase.
    #[serde(default)]
    pub phase: PodPhase,
    /// Machine-readable reason (`Unschedulable`, `ImagePullBackOff`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable explanation ("0/5 nodes are available: ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The pod's IP address.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The node's address.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// When the node started it, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Per-container state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// `PodScheduled`, `Initialized`, `ContainersReady` and `Ready`, as the
    /// node reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
}

impl PodStatus {
    /// Whether the pod's `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True")
    }
}

/// One condition of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    /// `PodScheduled`, `Initialized`, `ContainersReady` or `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    /// When the status last changed, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Why it is `False` (`ContainersNotReady`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Detail (`containers with unready status: [web]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One container's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// Image.
    #[serde(default)]
    pub image: String,
    /// Ready to serve.
    #[serde(default)]
    pub ready: bool,
    /// Restarts so far.
    #[serde(default)]
    pub restart_count: u32,
    /// Current state.
    #[serde(default)]
    pub state: ContainerState,
    /// How the previous run ended, once the container has restarted or
    /// waits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
}

/// Waiting, running or terminated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ContainerState {
    /// Not started yet.
    Waiting {
        /// Why (`ContainerCreating`, `ImagePullBackOff`, ...).
        reason: String,
    },
    /// Running since.
    Running {
        /// Start time, unix milliseconds.
        started_at: u64,
    },
    /// Exited.
    Terminated {
        /// Exit code.
        exit_code: i32,
        /// Why (`Completed`, `Error`, `OOMKilled`).
        reason: String,
    },
}

impl Default for ContainerState {
    fn default() -> Self {
        ContainerState::Waiting {
            reason: "ContainerCreating".into(),
        }
    }
}

impl PodSpec {
    /// What scheduling reserves for the pod: the sum of its containers'
    /// requests (a limit stands in for a missing request, as in Kubernetes).
    pub fn requests(&self) -> Result<Resources, ObjectError> {
        let mut total = Resources {
            pods: 1,
            ..Resources::default()
        };
        for (i, container) in self.containers.iter().enumerate() {
            let field = format!("spec.containers[{i}].resources");
            let (req_cpu, req_mem) = container
                .resources
                .requests
                .amounts(&format!("{field}.requests"))?;
            let (lim_cpu, lim_mem) = container
                .resources
                .limits
                .amounts(&format!("{field}.limits"))?;
            let cpu = if container.resources.requests.cpu.is_some() {
                req_cpu
            } else {
                lim_cpu
            };
            let memory = if container.resources.requests.memory.is_some() {
                req_mem
            } else {
                lim_mem
            };
            total.cpu_millis = total.cpu_millis.saturating_add(cpu);
            total.memory_bytes = total.memory_bytes.saturating_add(memory);
        }
        Ok(total)
    }

    /// Host ports the pod claims, per protocol. A pod on the node's network
    /// claims every port it declares, as in Kubernetes (its `hostPort`
    /// defaults to the `containerPort` and must equal it).
    pub fn host_ports(&self) -> Vec<(Protocol, u16)> {
        self.containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| self.host_port_of(p).map(|host| (p.protocol, host)))
            .collect()
    }

    /// The host port `port` claims: its `hostPort`, or on the node's
    /// network its `containerPort`.
    fn host_port_of(&self, port: &ContainerPort) -> Option<u16> {
        match self.host_network {
            true => Some(port.host_port.unwrap_or(port.container_port)),
            false => port.host_port,
        }
    }

    /// Whether the pod asked for the newer machines.
    pub fn is_critical(&self, annotations: &BTreeMap<String, String>) -> bool {
        annotations
            .get("wharf.io/critical")
            .is_some_and(|v| v == "true")
            || self
                .priority_class_name
                .as_deref()
                .is_some_and(|p| p.ends_with("-critical"))
    }

    /// What `container` of this pod runs with: its `securityContext` over
    /// the pod's, and the pod's host namespaces.
    pub fn security_of(&self, container: &Container) -> EffectiveSecurity {
        EffectiveSecurity {
            host_network: self.host_network,
            ..security::effective(
                &self.security_context.clone().unwrap_or_default(),
                &container.security_context.clone().unwrap_or_default(),
                self.host_pid,
                self.host_ipc,
            )
        }
    }

    /// Paths of the settings (under `field`, the pod spec's path) that need
    /// the project's `allowPrivileged`: host namespaces, `privileged`,
    /// capabilities beyond the default set, seccomp `Unconfined`.
    pub fn privileged_settings(&self, field: &str) -> Vec<String> {
        let mut found = Vec::new();
        if self.host_pid {
            found.push(format!("{field}.hostPID"));
        }
        if self.host_ipc {
            found.push(format!("{field}.hostIPC"));
        }
        if self.host_network {
            found.push(format!("{field}.hostNetwork"));
        }
        found.extend(security::privileged_settings(
            field,
            &self.security_context.clone().unwrap_or_default(),
            &self.container_contexts(field),
        ));
        found
    }

    /// Each container's path and `securityContext` (the default when unset).
    fn container_contexts(&self, field: &str) -> Vec<(String, SecurityContext)> {
        self.containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    format!("{field}.containers[{i}]"),
                    c.security_context.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Refuses a `hostPath` volume outside every one of `prefixes` (the
    /// administrator's setting), naming the field.
    pub fn check_host_paths(&self, field: &str, prefixes: &[String]) -> Result<(), ObjectError> {
        for (i, volume) in self.volumes.iter().enumerate() {
            let Some(host) = &volume.host_path else {
                continue;
            };
            if !prefixes.iter().any(|p| crate::is_under(&host.path, p)) {
                let allowed = match prefixes.is_empty() {
                    true => "none".to_string(),
                    false => prefixes.join(", "),
                };
                return Err(ObjectError::invalid(
                    format!("{field}.volumes[{i}].hostPath.path"),
                    format!(
                        "{} is not under a node path allowed for hostPath volumes (allowed: {allowed}; \
                         an administrator allows more with `wharf settings set --host-path-prefixes`)",
                        host.path
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Seconds its containers get to stop: `terminationGracePeriodSeconds`,
    /// else Kubernetes' default.
    pub fn grace_seconds(&self) -> u64 {
        self.termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS)
    }

    /// Checks containers, resources, ports, tolerations, volumes, hooks and security contexts.
    pub fn validate(&self, field: &str) -> Result<(), ObjectError> {
        security::validate(
            field,
            &self.security_context.clone().unwrap_or_default(),
            &self.container_contexts(field),
        )?;
        if self.containers.is_empty() {
            return Err(ObjectError::invalid(
                format!("{field}.containers"),
                "at least one container is required",
            ));
        }
        validate_volumes(field, &self.volumes)?;
        if let Some(affinity) = &self.affinity {
            affinity.validate(&format!("{field}.affinity"))?;
        }
        self.dns_policy(field)?;
        let mut names = BTreeSet::new();
        let mut host_ports = BTreeSet::new();
        for (i, container) in self.containers.iter().enumerate() {
            let at = format!("{field}.containers[{i}]");
            check_name(&format!("{at}.name"), &container.name)?;
            validate_mounts(&at, &container.volume_mounts, &self.volumes)?;
            if !names.insert(&container.name) {
                return Err(ObjectError::invalid(
                    format!("{at}.name"),
                    format!("duplicate container name {}", container.name),
                ));
            }
            check_image(&format!("{at}.image"), &container.image)?;
            let (req_cpu, req_mem) = container
                .resources
                .requests
                .amounts(&format!("{at}.resources.requests"))?;
            let (lim_cpu, lim_mem) = container
                .resources
                .limits
                .amounts(&format!("{at}.resources.limits"))?;
            if container.resources.limits.cpu.is_some() && req_cpu > lim_cpu {
                return Err(ObjectError::invalid(
                    format!("{at}.resources.requests.cpu"),
                    "must not exceed the limit",
                ));
            }
            if container.resources.limits.memory.is_some() && req_mem > lim_mem {
                return Err(ObjectError::invalid(
                    format!("{at}.resources.requests.memory"),
                    "must not exceed the limit",
                ));
            }
            for (j, port) in container.ports.iter().enumerate() {
                let at = format!("{at}.ports[{j}]");
                if port.container_port == 0 {
                    return Err(ObjectError::invalid(
                        format!("{at}.containerPort"),
                        "must be 1-65535",
                    ));
                }
                if self.host_network
                    && port
                        .host_port
                        .is_some_and(|host| host != port.container_port)
                {
                    return Err(ObjectError::invalid(
                        format!("{at}.hostPort"),
                        "must equal containerPort with hostNetwork (the pod listens on the node itself)",
                    ));
                }
                if port.host_ip.is_some() && (self.host_network || port.host_port.is_none()) {
                    return Err(ObjectError::invalid(
                        format!("{at}.hostIP"),
                        "needs a hostPort to forward, and a pod without hostNetwork",
                    ));
                }
                if let Some(host) = self.host_port_of(port) {
                    if host == 0 {
                        return Err(ObjectError::invalid(
                            format!("{at}.hostPort"),
                            "must be 1-65535",
                        ));
                    }
                    if !host_ports.insert((port.protocol, host)) {
                        return Err(ObjectError::invalid(
                            format!("{at}.hostPort"),
                            format!("host port {host} claimed twice"),
                        ));
                    }
                }
            }
            for (kind, probe) in container.probes() {
                probe.validate(&format!("{at}.{}", kind.field()), kind, &container.ports)?;
            }
            if let Some(lifecycle) = &container.lifecycle {
                lifecycle.validate(
                    &format!("{at}.lifecycle"),
                    &container.ports,
                    self.grace_seconds(),
                )?;
            }
            crate::env::check_env(&at, container, self)?;
        }
        if let Some(policy) = &self.restart_policy
            && !["Always", "OnFailure", "Never"].contains(&policy.as_str())
        {
            return Err(ObjectError::invalid(
                format!("{field}.restartPolicy"),
                "use Always, OnFailure or Never",
            ));
        }
        for (i, toleration) in self.tolerations.iter().enumerate() {
            if toleration.operator == TolerationOperator::Exists && toleration.value.is_some() {
                return Err(ObjectError::invalid(
                    format!("{field}.tolerations[{i}].value"),
                    "must be empty with Exists",
                ));
            }
            if toleration.key.is_none() && toleration.operator == TolerationOperator::Equal {
                return Err(ObjectError::invalid(
                    format!("{field}.tolerations[{i}].key"),
                    "required with Equal",
                ));
            }
        }
        crate::meta::check_labels(&format!("{field}.nodeSelector"), &self.node_selector)
    }
}

/// An image reference must be non-empty and free of whitespace and control characters.
fn check_image(field: &str, image: &str) -> Result<(), ObjectError> {
    let valid = !image.is_empty()
        && image.len() <= 512
        && !image.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(ObjectError::invalid(
            field,
            format!("invalid image reference {image:?}"),
        ))
    }
}

/// The grace period of a pod that names none (Kubernetes' default).
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

/// Most replicas one deployment may ask for.
const MAX_REPLICAS: u32 = 100_000;

impl Deployment {
    /// Checks the whole object; the error names the offending field.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        check_labels("metadata.labels", &self.metadata.labels)?;
        if self.spec.replicas > MAX_REPLICAS {
            return Err(ObjectError::invalid(
                "spec.replicas",
                format!("at most {MAX_REPLICAS}"),
            ));
        }
        if self.spec.selector.is_empty() {
            return Err(ObjectError::invalid(
                "spec.selector",
                "a selector is required",
            ));
        }
        check_labels(
            "spec.template.metadata.labels",
            &self.spec.template.metadata.labels,
        )?;
        if !self
            .spec
            .selector
            .matches(&self.spec.template.metadata.labels)
        {
            return Err(ObjectError::invalid(
                "spec.template.metadata.labels",
                "must match spec.selector, or the deployment would not own its pods",
            ));
        }
        self.spec.rollout_strategy()?;
        if self.spec.progress_deadline_seconds == Some(0) {
            return Err(ObjectError::invalid(
                "spec.progressDeadlineSeconds",
                "must be greater than 0",
            ));
        }
        // A pod made with a node already named would skip the scheduler and
        // the node's capacity booking: refused rather than run unchecked.
        if self.spec.template.spec.node_name.is_some() {
            return Err(ObjectError::invalid(
                "spec.template.spec.nodeName",
                "not supported in a template: pods are placed by the scheduler (use nodeSelector to choose nodes)",
            ));
        }
        self.check_host_network_addresses()?;
        for (at, annotations) in [
            ("metadata", &self.metadata.annotations),
            (
                "spec.template.metadata",
                &self.spec.template.metadata.annotations,
            ),
        ] {
            crate::TierRequest::from_annotations(annotations).map_err(|err| match err {
                ObjectError::Invalid { field, message } => {
                    ObjectError::invalid(format!("{at}.{field}"), message)
                }
                other => other,
            })?;
        }
        self.spec.template.spec.validate("spec.template.spec")
    }

    /// A pod on the node's network has no address of its own: asking for
    /// one from a pool would be a setting silently dropped.
    fn check_host_network_addresses(&self) -> Result<(), ObjectError> {
        if !self.spec.template.spec.host_network {
            return Ok(());
        }
        let annotations = [
            ("metadata", &self.metadata.annotations),
            (
                "spec.template.metadata",
                &self.spec.template.metadata.annotations,
            ),
        ];
        for (at, annotations) in annotations {
            for key in [
                crate::ANNOTATION_IP_POOL,
                crate::ANNOTATION_FIXED_IP,
                crate::ANNOTATION_FIXED_IPS,
            ] {
                if annotations.contains_key(key) {
                    return Err(ObjectError::invalid(
                        format!("{at}.annotations[{key}]"),
                        "a pod with hostNetwork uses the node's address and takes none from a pool",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Deployment {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        Deployment {
            metadata: ObjectMeta {
                name: "web".into(),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: 3,
                selector: LabelSelector {
                    match_labels: labels.clone(),
                    ..Default::default()
                },
                template: PodTemplate {
                    metadata: PodTemplateMeta {
                        labels,
                        ..Default::default()
                    },
                    spec: PodSpec {
                        containers: vec![Container {
                            name: "web".into(),
                            image: "shop/web:1".into(),
                            resources: ResourceRequirements {
                                requests: ResourceList {
                                    cpu: Some("250m".into()),
                                    memory: None,
                                },
                                limits: ResourceList {
                                    cpu: Some("1".into()),
                                    memory: Some("256Mi".into()),
                                },
                            },
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn requests_sum_and_fall_back_to_limits() {
        let requests = deployment().spec.template.spec.requests().unwrap();
        assert_eq!(
            requests,
            Resources {
                cpu_millis: 250,
                memory_bytes: 256 << 20,
                pods: 1
            }
        );
    }

    #[test]
    fn validation_names_the_field() {
        assert!(deployment().validate().is_ok());
        let mut d = deployment();
        d.spec.template.metadata.labels.clear();
        assert!(
            matches!(d.validate(), Err(ObjectError::Invalid { field, .. }) if field == "spec.template.metadata.labels")
        );
        let mut d = deployment();
        d.spec.template.spec.containers[0].resources.requests.cpu = Some("2".into());
        assert!(
            matches!(d.validate(), Err(ObjectError::Invalid { field, .. }) if field.ends_with("requests.cpu"))
        );
        let mut d = deployment();
        d.spec.template.spec.containers[0].image = "bad image".into();
        assert!(d.validate().is_err());
        let mut d = deployment();
        d.spec
            .template
            .spec
            .containers
            .push(d.spec.template.spec.containers[0].clone());
        assert!(d.validate().is_err(), "duplicate container names");
        let mut d = deployment();
        d.metadata.name = "Web".into();
        assert!(d.validate().is_err());
    }

    #[test]
    fn host_paths_must_lie_under_an_allowed_prefix() {
        let mut spec = deployment().spec.template.spec;
        let allowed = vec!["/srv/data".to_string()];
        assert!(spec.check_host_paths("spec", &[]).is_ok(), "no hostPath");
        spec.volumes.push(Volume {
            name: "cache".into(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        });
        spec.volumes.push(Volume {
            name: "logs".into(),
            host_path: Some(crate::HostPathVolume {
                path: "/srv/data/logs".into(),
                kind: None,
            }),
            ..Default::default()
        });
        assert!(spec.check_host_paths("spec", &allowed).is_ok());
        let err = spec.check_host_paths("spec", &[]).unwrap_err();
        assert!(
            matches!(&err, ObjectError::Invalid { field, message } if field == "spec.volumes[1].hostPath.path" && message.contains("allowed: none")),
            "{err}"
        );
        spec.volumes[1].host_path.as_mut().unwrap().path = "/srv/database".into();
        assert!(spec.check_host_paths("spec", &allowed).is_err());
    }

    fn invalid_field(d: &Deployment) -> String {
        match d.validate() {
            Err(ObjectError::Invalid { field, .. }) => field,
            other => panic!("refused with a field: {other:?}"),
        }
    }

    #[test]
    fn a_tier_annotation_is_checked_where_it_is_set() {
        let mut d = deployment();
        d.metadata
            .annotations
            .insert(crate::ANNOTATION_TIER.into(), "core;preferred".into());
        assert!(d.validate().is_ok());
        d.spec
            .template
            .metadata
            .annotations
            .insert(crate::ANNOTATION_TIER.into(), "gold".into());
        assert_eq!(
            invalid_field(&d),
            "spec.template.metadata.annotations[wharf.io/tier]"
        );
    }

    #[test]
    fn host_network_claims_container_ports_and_needs_privileges() {
        let mut d = deployment();
        let spec = &mut d.spec.template.spec;
        spec.containers[0].ports = vec![
            ContainerPort {
                container_port: 8080,
                ..Default::default()
            },
            ContainerPort {
                container_port: 53,
                host_port: Some(53),
                protocol: Protocol::Udp,
                ..Default::default()
            },
        ];
        assert_eq!(spec.host_ports(), [(Protocol::Udp, 53)]);
        assert!(spec.privileged_settings("s").is_empty());
        spec.host_network = true;
        assert_eq!(
            spec.host_ports(),
            [(Protocol::Tcp, 8080), (Protocol::Udp, 53)]
        );
        assert_eq!(spec.privileged_settings("s"), ["s.hostNetwork"]);
        assert!(spec.security_of(&spec.containers[0]).host_network);
        assert!(d.validate().is_ok());

        let mut other_port = d.clone();
        other_port.spec.template.spec.containers[0].ports[1].host_port = Some(5353);
        assert_eq!(
            invalid_field(&other_port),
            "spec.template.spec.containers[0].ports[1].hostPort"
        );
        let mut host_ip = d.clone();
        host_ip.spec.template.spec.containers[0].ports[1].host_ip = Some([10, 0, 0, 1].into());
        assert_eq!(
            invalid_field(&host_ip),
            "spec.template.spec.containers[0].ports[1].hostIP"
        );
        for (template, key) in [
            (false, crate::ANNOTATION_IP_POOL),
            (true, crate::ANNOTATION_FIXED_IP),
        ] {
            let mut pooled = d.clone();
            let annotations = match template {
                true => &mut pooled.spec.template.metadata.annotations,
                false => &mut pooled.metadata.annotations,
            };
            annotations.insert(key.to_string(), "web".to_string());
            let field = invalid_field(&pooled);
            assert!(field.ends_with(&format!("annotations[{key}]")), "{field}");
        }
    }

    #[test]
    fn host_ip_needs_a_host_port() {
        let mut d = deployment();
        d.spec.template.spec.containers[0].ports = vec![ContainerPort {
            container_port: 80,
            host_ip: Some([10, 0, 0, 1].into()),
            ..Default::default()
        }];
        assert_eq!(
            invalid_field(&d),
            "spec.template.spec.containers[0].ports[0].hostIP"
        );
        d.spec.template.spec.containers[0].ports[0].host_port = Some(8080);
        assert!(d.validate().is_ok());
    }
}
