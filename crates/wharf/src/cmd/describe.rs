//! `wharf describe`: one node, deployment, pod, configmap or secret (key
//! names and sizes, never values) in full, with its events,
//! as `kubectl describe` shows them.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use wharf_api::{ANNOTATION_SCHEDULING_SCORES, Endpoints, HorizontalPodAutoscaler, Service};
use wharf_api::{
    ConfigMap, Container, ContainerState, ContainerStatus, DEFAULT_CAPABILITIES, Deployment,
    EffectiveSecurity, Event, EventType, LOCAL_STORAGE_CLASS, Node, ObjectMeta,
    PersistentVolumeClaim, Pod, PodSpec, ResourceList, Resources, SeccompProfileType, Secret,
    Toleration, TolerationOperator,
};

use super::ServerOption;
use super::get::{phase_name, pod_status};
use super::objects::{
    Kind, ObjectName, ProjectOption, allocated_on, bound_pods, effect_name, list_objects,
    node_status, none, place, selector_text, sum_requests, taint_text,
};
use super::{hpa_view, service_view};
use crate::client::{ApiClient, unix_now};
use crate::output::{Table, age, cores, memory, rfc3339};

/// Options of `wharf describe`.
#[derive(Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to describe: node (no), deployment (deploy), pod (po),
    /// configmap (cm) or secret.
    #[arg(value_parser = Kind::parse)]
    kind: Kind,
    /// Its name (or -l to describe every object the selector matches).
    #[arg(required_unless_present = "selector", conflicts_with = "selector")]
    name: Option<String>,
    /// Describe the objects whose labels match, e.g. `app=web`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    #[command(flatten)]
    project: ProjectOption,
}

/// Prints the object (or each selected one) and its events.
pub async fn run(args: DescribeArgs) -> Result<()> {
    let kind = args.kind;
    let mut client = args.server.client()?;
    let project = &args.project.for_kind(kind, client.default_project())?;
    let names = match &args.name {
        Some(name) => vec![name.clone()],
        None => {
            let list = list_objects(&mut client, kind, project, &args.selector).await?;
            let names: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            if names.is_empty() {
                bail!(
                    "no {} match {}{}",
                    kind.plural(),
                    args.selector.as_deref().unwrap_or_default(),
                    place(project)
                );
            }
            names
        }
    };
    for (index, name) in names.iter().enumerate() {
        if index > 0 {
            println!();
        }
        describe_one(&mut client, kind, project, name).await?;
    }
    Ok(())
}

/// Prints one object and its events.
async fn describe_one(client: &mut ApiClient, kind: Kind, project: &str, name: &str) -> Result<()> {
    let answer = client
        .get(&kind.object_path(project, name))
        .await
        .with_context(|| {
            let place = if project.is_empty() {
                String::new()
            } else {
                format!(" in project {project}")
            };
            format!("describing {}{place}", ObjectName(kind, name))
        })?;
    let now_ms = unix_now().saturating_mul(1000);
    let mut description = match kind {
        Kind::Node => {
            let node: Node = typed(answer)?;
            let pods = bound_pods(client, Some(name)).await?;
            describe_node(&node, pods.as_deref(), now_ms)
        }
        Kind::Deployment => describe_deployment(&typed(answer)?, now_ms),
        Kind::Pod => describe_pod(&typed(answer)?, now_ms),
        Kind::ConfigMap => describe_config_map(&typed(answer)?, now_ms),
        Kind::Secret => describe_secret(&typed(answer)?, now_ms),
        Kind::PersistentVolumeClaim => {
            let users = client
                .get(&["projects", project, "persistentvolumeclaims", name, "users"])
                .await
                .with_context(|| format!("listing the pods using {}", ObjectName(kind, name)))?;
            let users: Vec<String> = serde_json::from_value(users["pods"].clone())
                .context("the server's answer is not what wharf expects")?;
            describe_claim(&typed(answer)?, &users, now_ms)
        }
        Kind::Service => {
            // A service without endpoints yet (just made) is still shown.
            let endpoints = client
                .get(&Kind::Endpoints.object_path(project, name))
                .await
                .ok()
                .and_then(|answer| serde_json::from_value(answer).ok());
            describe_service(&typed(answer)?, endpoints.as_ref(), now_ms)
        }
        Kind::Endpoints => describe_endpoints(&typed(answer)?, now_ms),
        Kind::HorizontalPodAutoscaler => describe_hpa(&typed(answer)?, now_ms),
    };
    // Events of cluster-wide objects (nodes) have an endpoint of their own.
    let events_path: Vec<&str> = if kind.in_project() {
        vec!["projects", project, "events"]
    } else {
        vec!["events"]
    };
    let events = client
        .get_with_query(&events_path, &[("object", name.to_string())])
        .await
        .and_then(|answer| {
            serde_json::from_value::<Vec<Event>>(answer)
                .context("the server's events are not what wharf expects")
        });
    match events {
        Ok(events) => {
            let events: Vec<Event> = events
                .into_iter()
                .filter(|e| e.involved_object.kind == kind.api_kind())
                .collect();
            description.events(&events, now_ms);
        }
        // The object is shown all the same; say why its events are not.
        Err(err) => {
            description.field(0, "Events", format!("<unavailable: {err:#}>"));
        }
    }
    print!("{}", description.render());
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(answer: Value) -> Result<T> {
    serde_json::from_value(answer)
        .context("the server's answer is not what wharf expects; try wharf get -o yaml")
}

/// The text of a description: `Key:  value` lines whose values line up
/// with the others at the same depth, headings, and indented tables.
#[derive(Default)]
struct Description {
    lines: Vec<Line>,
}

enum Line {
    Field {
        indent: usize,
        key: String,
        value: String,
    },
    Heading {
        indent: usize,
        title: String,
    },
    Text {
        indent: usize,
        text: String,
    },
}

impl Description {
    /// `key:  value`; a value of several lines continues under its first.
    fn field(&mut self, indent: usize, key: &str, value: impl Into<String>) {
        self.lines.push(Line::Field {
            indent,
            key: key.to_string(),
            value: value.into(),
        });
    }

    /// `title:` alone, for what follows indented.
    fn heading(&mut self, indent: usize, title: &str) {
        self.lines.push(Line::Heading {
            indent,
            title: title.to_string(),
        });
    }

    /// Lines as they are (a rendered table), indented.
    fn text(&mut self, indent: usize, text: &str) {
        for line in text.lines() {
            self.lines.push(Line::Text {
                indent,
                text: line.to_string(),
            });
        }
    }

    /// The events as a table, or `<none>`.
    fn events(&mut self, events: &[Event], now_ms: u64) {
        if events.is_empty() {
            self.field(0, "Events", none());
            return;
        }
        self.heading(0, "Events");
        self.text(2, &events_table(events, now_ms));
    }

    fn render(&self) -> String {
        // Values line up per depth across the whole description, as
        // kubectl's do.
        let mut widths: BTreeMap<usize, usize> = BTreeMap::new();
        for line in &self.lines {
            if let Line::Field { indent, key, .. } = line {
                let width = widths.entry(*indent).or_default();
                *width = (*width).max(key.chars().count() + 1);
            }
        }
        let mut text = String::new();
        for line in &self.lines {
            let rendered = match line {
                Line::Field { indent, key, value } => {
                    let width = widths[indent];
                    let pad = " ".repeat(*indent);
                    let mut values = value.lines();
                    let first = values.next().unwrap_or_default();
                    let mut out = format!("{pad}{:<width$}  {first}", format!("{key}:"));
                    for more in values {
                        out.push_str(&format!("\n{pad}{:width$}  {more}", ""));
                    }
                    out
                }
                Line::Heading { indent, title } => format!("{}{title}:", " ".repeat(*indent)),
                Line::Text { indent, text } => format!("{}{text}", " ".repeat(*indent)),
            };
            for line in rendered.lines() {
                text.push_str(line.trim_end());
                text.push('\n');
            }
        }
        text
    }
}

/// `TYPE REASON AGE COUNT MESSAGE`, oldest first; AGE is of the last time.
fn events_table(events: &[Event], now_ms: u64) -> String {
    let mut table = Table::new(&["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"]);
    for event in events {
        let event_type = match event.event_type {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        table.row([
            event_type.to_string(),
            event.reason.clone(),
            age(now_ms, event.last_timestamp),
            event.count.max(1).to_string(),
            event.message.clone(),
        ]);
    }
    table.render()
}

/// `2025-01-02T03:04:05Z (5m ago)`, `<unknown>` for 0.
fn time_and_age(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms == 0 {
        return "<unknown>".to_string();
    }
    format!("{} ({} ago)", rfc3339(unix_ms), age(now_ms, unix_ms))
}

/// One `key=value` per line, `<none>` when empty.
fn map_lines(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return none();
    }
    map.iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Name, project, labels, annotations, creation, owner.
fn metadata_fields(description: &mut Description, meta: &ObjectMeta, now_ms: u64) {
    description.field(0, "Name", meta.name.clone());
    if let Some(project) = &meta.project {
        description.field(0, "Project", project.clone());
    }
    description.field(0, "Labels", map_lines(&meta.labels));
    description.field(0, "Annotations", map_lines(&meta.annotations));
    description.field(0, "Created", time_and_age(meta.created_at, now_ms));
    if let Some(owner) = meta.owner_references.first() {
        description.field(0, "Controlled By", format!("{}/{}", owner.kind, owner.name));
    }
}

/// As kubectl: each condition's status and reason, then what it says.
fn condition_fields(description: &mut Description, conditions: &[wharf_api::DeploymentCondition]) {
    if conditions.is_empty() {
        return;
    }
    description.heading(0, "Conditions");
    for condition in conditions {
        description.field(
            2,
            &condition.kind,
            format!(
                "{} {} since {} ({})",
                condition.status,
                condition.reason,
                wharf_api::rfc3339(condition.last_transition_time),
                condition.message
            ),
        );
    }
}

/// A node's conditions, as kubectl shows them, and its last run of the
/// pool's init profile.
fn node_initialization_fields(description: &mut Description, status: &wharf_api::NodeStatus) {
    if !status.conditions.is_empty() {
        description.heading(0, "Conditions");
        for condition in &status.conditions {
            let since = condition
                .last_transition_time
                .map_or_else(none, wharf_api::rfc3339);
            let text = format!(
                "{} {} since {since} ({})",
                condition.status, condition.reason, condition.message
            );
            description.field(2, &condition.kind, text);
        }
    }
    let Some(run) = &status.initialization else {
        return;
    };
    description.heading(0, "Initialization");
    description.field(2, "Profile", run.profile_hash.clone());
    description.field(2, "State", format!("{:?}", run.state));
    if let Some(step) = &run.step {
        description.field(2, "Step", step.clone());
    }
    if let Some(message) = &run.message {
        description.field(2, "Message", message.clone());
    }
    let at = |time: Option<u64>| time.map_or_else(none, wharf_api::rfc3339);
    description.field(2, "Started", at(run.started_at));
    description.field(2, "Finished", at(run.finished_at));
}

/// An autoscaler's target, bounds, metrics and conditions, as kubectl
/// shows them.
fn describe_hpa(hpa: &HorizontalPodAutoscaler, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &hpa.metadata, now_ms);
    description.field(0, "Reference", hpa_view::reference(hpa));
    description.heading(0, "Metrics");
    for (name, value) in hpa_view::metric_lines(hpa) {
        description.field(2, &name, value);
    }
    description.field(0, "Min replicas", hpa.spec.min().to_string());
    description.field(0, "Max replicas", hpa.spec.max_replicas.to_string());
    description.field(
        0,
        "Deployment pods",
        format!(
            "{} current / {} desired",
            hpa.status.current_replicas, hpa.status.desired_replicas
        ),
    );
    condition_fields(&mut description, &hpa.status.conditions);
    description
}

/// A service's address and, per port, its target and ready endpoints.
fn describe_service(service: &Service, endpoints: Option<&Endpoints>, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &service.metadata, now_ms);
    description.field(0, "Selector", service_view::selector_text(service));
    description.field(0, "Type", "ClusterIP");
    let ip = service.spec.cluster_ip.clone().unwrap_or_else(none);
    description.field(0, "IP", ip);
    for port in &service.spec.ports {
        for (key, value) in service_view::port_lines(port, endpoints) {
            description.field(0, &key, value);
        }
    }
    let affinity = service.spec.session_affinity.clone();
    description.field(
        0,
        "Session Affinity",
        affinity.unwrap_or_else(|| "None".into()),
    );
    description
}

/// The ready and not ready addresses of a service.
fn describe_endpoints(endpoints: &Endpoints, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &endpoints.metadata, now_ms);
    let ready = service_view::ready_endpoints(endpoints);
    description.field(0, "Ready", service_view::endpoints_text(&ready));
    let not_ready: Vec<String> = endpoints
        .subsets
        .iter()
        .flat_map(|s| s.not_ready_addresses.iter().map(|a| a.ip.clone()))
        .collect();
    description.field(0, "NotReady", service_view::endpoints_text(&not_ready));
    description
}

/// A ConfigMap's keys with their text values (binary ones by size), as
/// `kubectl describe` shows them.
fn describe_config_map(config_map: &ConfigMap, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &config_map.metadata, now_ms);
    if config_map.is_immutable() {
        description.field(0, "Immutable", "true");
    }
    description.heading(0, "Data");
    for (key, value) in &config_map.data {
        description.heading(0, key);
        description.text(0, "----");
        description.text(0, value);
    }
    description.heading(0, "BinaryData");
    for (key, value) in &config_map.binary_data {
        description.field(2, key, format!("{} bytes", value.len()));
    }
    description
}

/// A Secret's keys and sizes: the server sends no values here.
fn describe_secret(secret: &Secret, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &secret.metadata, now_ms);
    description.field(0, "Type", secret.secret_type.clone());
    if secret.is_immutable() {
        description.field(0, "Immutable", "true");
    }
    description.heading(0, "Data");
    for (key, size) in &secret.data_sizes {
        description.field(2, key, format!("{size} bytes"));
    }
    description
}

/// A claim: where it is bound, what it holds, which pods use it, and why
/// a Terminating one stays.
fn describe_claim(claim: &PersistentVolumeClaim, users: &[String], now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &claim.metadata, now_ms);
    description.field(0, "StorageClass", LOCAL_STORAGE_CLASS);
    description.field(0, "Status", claim.phase());
    let node = claim.bound_node().map_or_else(
        || "<none> (bound to the node of its first pod)".to_string(),
        str::to_string,
    );
    description.field(0, "Node", node);
    let storage =
        |list: &BTreeMap<String, String>| list.get("storage").cloned().unwrap_or_default();
    description.field(0, "Requested", storage(&claim.spec.resources.requests));
    description.field(
        0,
        "Capacity",
        format!(
            "{} (recorded, not enforced: a directory on the node)",
            storage(&claim.status.capacity)
        ),
    );
    let modes = if claim.spec.access_modes.is_empty() {
        "ReadWriteOnce".to_string()
    } else {
        claim.spec.access_modes.join(",")
    };
    description.field(0, "Access Modes", modes);
    description.field(0, "VolumeMode", "Filesystem");
    let used_by = if users.is_empty() {
        none()
    } else {
        users.join(", ")
    };
    description.field(0, "Used By", used_by);
    if claim.metadata.is_terminating() {
        description.field(
            0,
            "Terminating",
            "deleted while pods use it: it goes (with its data) once they are gone",
        );
    }
    description
}

fn describe_node(node: &Node, pods: Option<&[Pod]>, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &node.metadata, now_ms);
    let (spec, status) = (&node.spec, &node.status);
    description.field(0, "Address", spec.address.clone().unwrap_or_else(none));
    description.field(0, "Status", node_status(node));
    description.field(0, "Unschedulable", spec.unschedulable.to_string());
    let taints: Vec<String> = spec.taints.iter().map(taint_text).collect();
    description.field(
        0,
        "Taints",
        if taints.is_empty() {
            none()
        } else {
            taints.join("\n")
        },
    );
    description.field(
        0,
        "Cost/h",
        spec.cost_per_hour
            .map_or_else(none, |cost| cost.to_string()),
    );
    description.field(
        0,
        "Last Heartbeat",
        time_and_age(status.last_heartbeat, now_ms),
    );
    if let Some(load) = status.cpu_load {
        description.field(0, "CPU Load", format!("{:.0}%", load * 100.0));
    }
    if let Some(load) = status.load_average {
        description.field(0, "Load Average", format!("{load:.2}"));
    }
    if let Some(free) = status.memory_available_bytes {
        description.field(0, "Memory Available", crate::output::memory(free));
    }
    if let Some(layers) = &status.layers {
        let bytes: u64 = layers.iter().map(|layer| layer.size_bytes).sum();
        let text = format!("{} ({})", layers.len(), crate::output::human_size(bytes));
        description.field(0, "Cached Layers", text);
    }
    node_initialization_fields(&mut description, status);
    description.heading(0, "Capacity");
    resource_fields(&mut description, &status.capacity, None);
    let sums = pods.map(sum_requests);
    match allocated_on(node, sums.as_ref()) {
        Some(allocated) => {
            description.heading(0, "Allocated");
            resource_fields(&mut description, &allocated, Some(&status.capacity));
        }
        None => description.field(
            0,
            "Allocated",
            "<unknown: listing the node's pods needs an administrator>",
        ),
    }
    if !status.info.is_empty() {
        description.heading(0, "System Info");
        for (key, value) in &status.info {
            description.field(2, key, value.clone());
        }
    }
    if !status.images.is_empty() {
        description.field(0, "Images", format!("{} present", status.images.len()));
    }
    if let Some(pods) = pods {
        if pods.is_empty() {
            description.field(0, "Pods", none());
        } else {
            description.heading(0, "Pods");
            description.text(2, &node_pods_table(pods));
        }
    }
    description
}

/// cpu, memory and pods; with `of`, each as a share of it.
fn resource_fields(description: &mut Description, amounts: &Resources, of: Option<&Resources>) {
    let share = |used: u64, total: u64| match of {
        Some(_) if total > 0 => format!(" ({}%)", used.saturating_mul(100) / total),
        _ => String::new(),
    };
    let capacity = of.copied().unwrap_or_default();
    description.field(
        2,
        "cpu",
        format!(
            "{}{}",
            cores(amounts.cpu_millis),
            share(amounts.cpu_millis, capacity.cpu_millis)
        ),
    );
    description.field(
        2,
        "memory",
        format!(
            "{}{}",
            memory(amounts.memory_bytes),
            share(amounts.memory_bytes, capacity.memory_bytes)
        ),
    );
    description.field(
        2,
        "pods",
        format!(
            "{}{}",
            amounts.pods,
            share(u64::from(amounts.pods), u64::from(capacity.pods))
        ),
    );
}

/// The pods on a node: `PROJECT NAME STATUS CPU MEMORY`.
fn node_pods_table(pods: &[Pod]) -> String {
    let mut table = Table::new(&["PROJECT", "NAME", "STATUS", "CPU", "MEMORY"]);
    for pod in pods {
        let requests = pod.spec.requests().unwrap_or_default();
        table.row([
            pod.metadata.project.clone().unwrap_or_else(none),
            pod.metadata.name.clone(),
            pod_status(pod),
            cores(requests.cpu_millis),
            memory(requests.memory_bytes),
        ]);
    }
    table.render()
}

fn describe_deployment(deployment: &Deployment, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &deployment.metadata, now_ms);
    let (spec, status) = (&deployment.spec, &deployment.status);
    description.field(
        0,
        "Generation",
        format!(
            "{} (observed {})",
            deployment.metadata.generation, status.observed_generation
        ),
    );
    description.field(0, "Selector", selector_text(&spec.selector));
    description.field(
        0,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable | {} ready | {} scheduled",
            spec.replicas,
            status.updated_replicas,
            status.replicas,
            status.available_replicas,
            status.unavailable_replicas,
            status.ready_replicas,
            status.scheduled_replicas,
        ),
    );
    description.field(0, "Strategy", strategy_text(deployment));
    if let Some(seconds) = spec.min_ready_seconds {
        description.field(0, "Min Ready Seconds", seconds.to_string());
    }
    if spec.paused {
        description.field(0, "Paused", "true".to_string());
    }
    if let Some(revision) = deployment
        .metadata
        .annotations
        .get(wharf_api::ANNOTATION_REVISION)
    {
        description.field(0, "Revision", revision.clone());
    }
    condition_fields(&mut description, &status.conditions);
    description.heading(0, "Pod Template");
    let template = &spec.template;
    description.field(2, "Labels", map_lines(&template.metadata.labels));
    if !template.metadata.annotations.is_empty() {
        description.field(2, "Annotations", map_lines(&template.metadata.annotations));
    }
    pod_spec_fields(&mut description, 2, &template.spec, &[]);
    description
}

/// `RollingUpdate (max surge 1, max unavailable 25%)`, `Recreate`.
fn strategy_text(deployment: &Deployment) -> String {
    let strategy = deployment.spec.strategy.as_ref();
    let kind = strategy
        .and_then(|s| s.kind.clone())
        .unwrap_or_else(|| "RollingUpdate".to_string());
    let Some(rolling) = strategy.and_then(|s| s.rolling_update.as_ref()) else {
        return kind;
    };
    // A count or a percentage; their JSON reads the same as their YAML.
    let amount = |value: &Option<_>| {
        serde_json::to_value(value)
            .ok()
            .map(|v| match v {
                Value::String(text) => text,
                Value::Null => "default".to_string(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    format!(
        "{kind} (max surge {}, max unavailable {})",
        amount(&rolling.max_surge),
        amount(&rolling.max_unavailable)
    )
}

fn describe_pod(pod: &Pod, now_ms: u64) -> Description {
    let mut description = Description::default();
    metadata_fields(&mut description, &pod.metadata, now_ms);
    let status = &pod.status;
    description.field(
        0,
        "Node",
        match (&pod.spec.node_name, &status.host_ip) {
            (Some(node), Some(ip)) => format!("{node}/{ip}"),
            (Some(node), None) => node.clone(),
            (None, _) => none(),
        },
    );
    if let Some(scores) = pod.metadata.annotations.get(ANNOTATION_SCHEDULING_SCORES) {
        description.field(0, "Scheduling", scores.clone());
    }
    description.field(
        0,
        "Start Time",
        status
            .start_time
            .map_or_else(none, |at| time_and_age(at, now_ms)),
    );
    description.field(0, "Status", pod_phase_text(pod, now_ms));
    if let Some(reason) = &status.reason {
        description.field(0, "Reason", reason.clone());
    }
    if let Some(message) = &status.message {
        description.field(0, "Message", message.clone());
    }
    description.field(0, "IP", status.pod_ip.clone().unwrap_or_else(none));
    pod_spec_fields(&mut description, 0, &pod.spec, &status.container_statuses);
    if !status.conditions.is_empty() {
        description.heading(0, "Conditions");
        for condition in &status.conditions {
            let mut text = condition.status.clone();
            if let Some(at) = condition.last_transition_time.as_deref() {
                text.push_str(&format!(" since {at}"));
            }
            if let Some(message) = &condition.message {
                text.push_str(&format!(" ({message})"));
            }
            description.field(2, &condition.kind, text);
        }
    }
    description
}

/// A probe as kubectl shows it: `http-get http://:8080/healthz delay=0s
/// timeout=1s period=10s #success=1 #failure=3`.
fn probe_text(probe: &wharf_api::Probe) -> String {
    let port = |port: &wharf_api::ProbePort| match port {
        wharf_api::ProbePort::Number(n) => n.to_string(),
        wharf_api::ProbePort::Name(name) => name.clone(),
    };
    let handler = if let Some(http) = &probe.http_get {
        let host = http.host.clone().unwrap_or_default();
        let path = http.path.as_deref().unwrap_or("/");
        format!("http-get http://{host}:{}{path}", port(&http.port))
    } else if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().unwrap_or_default();
        format!("tcp-socket {host}:{}", port(&tcp.port))
    } else if let Some(exec) = &probe.exec {
        format!("exec {:?}", exec.command)
    } else {
        "none".to_string()
    };
    format!(
        "{handler} delay={}s timeout={}s period={}s #success={} #failure={}",
        probe.initial_delay().as_secs(),
        probe.timeout().as_secs(),
        probe.period().as_secs(),
        probe.success_threshold(),
        probe.failure_threshold()
    )
}

/// Containers (with their states when known), node selector, tolerations.
/// The phase, or `Terminating (lasts 25s)` as kubectl says it once
/// deletion was asked (`deletionTimestamp` is the deadline).
fn pod_phase_text(pod: &Pod, now_ms: u64) -> String {
    match pod.metadata.deletion_timestamp {
        Some(deadline) => format!(
            "Terminating (lasts {}s)",
            deadline.saturating_sub(now_ms).div_ceil(1000)
        ),
        None => phase_name(pod.status.phase).to_string(),
    }
}

fn pod_spec_fields(
    description: &mut Description,
    indent: usize,
    spec: &PodSpec,
    statuses: &[ContainerStatus],
) {
    description.heading(indent, "Containers");
    for container in &spec.containers {
        let status = statuses.iter().find(|s| s.name == container.name);
        let security = spec.security_of(container);
        container_fields(description, indent + 2, container, &security, status);
    }
    description.field(indent, "Node-Selectors", map_lines(&spec.node_selector));
    let tolerations: Vec<String> = spec.tolerations.iter().map(toleration_text).collect();
    description.field(
        indent,
        "Tolerations",
        if tolerations.is_empty() {
            none()
        } else {
            tolerations.join("\n")
        },
    );
    if let Some(policy) = &spec.restart_policy {
        description.field(indent, "Restart Policy", policy.clone());
    }
    if let Some(class) = &spec.priority_class_name {
        description.field(indent, "Priority Class", class.clone());
    }
}

fn container_fields(
    description: &mut Description,
    indent: usize,
    container: &Container,
    security: &EffectiveSecurity,
    status: Option<&ContainerStatus>,
) {
    description.heading(indent, &container.name);
    let at = indent + 2;
    description.field(at, "Image", container.image.clone());
    if !container.command.is_empty() {
        description.field(at, "Command", container.command.join("\n"));
    }
    if !container.args.is_empty() {
        description.field(at, "Args", container.args.join("\n"));
    }
    let ports: Vec<String> = container
        .ports
        .iter()
        .map(|port| {
            let protocol = serde_json::to_value(port.protocol)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            match (port.host_ip, port.host_port) {
                (Some(ip), Some(host)) => {
                    format!("{}/{protocol} (host {ip}:{host})", port.container_port)
                }
                (None, Some(host)) => format!("{}/{protocol} (host {host})", port.container_port),
                (_, None) => format!("{}/{protocol}", port.container_port),
            }
        })
        .collect();
    description.field(
        at,
        "Ports",
        if ports.is_empty() {
            none()
        } else {
            ports.join(", ")
        },
    );
    if let Some(status) = status {
        description.field(at, "State", state_text(&status.state));
        if let Some(last) = &status.last_state {
            description.field(at, "Last State", state_text(last));
        }
        description.field(at, "Ready", status.ready.to_string());
        description.field(at, "Restart Count", status.restart_count.to_string());
    }
    for (kind, probe) in container.probes() {
        description.field(at, kind.name(), probe_text(probe));
    }
    description.field(
        at,
        "Requests",
        resource_list_text(&container.resources.requests),
    );
    description.field(
        at,
        "Limits",
        resource_list_text(&container.resources.limits),
    );
    if !container.env.is_empty() {
        let env: Vec<String> = container
            .env
            .iter()
            .map(|var| format!("{}={}", var.name, var.value))
            .collect();
        description.field(at, "Environment", env.join("\n"));
    }
    if let Some(dir) = &container.working_dir {
        description.field(at, "Working Dir", dir.clone());
    }
    description.field(at, "Security", security_text(security));
}

/// The effective security context, a line per concern: who, root
/// filesystem and privilege, capabilities, seccomp and host namespaces.
fn security_text(security: &EffectiveSecurity) -> String {
    let id = |value: Option<u32>| value.map_or_else(|| "(image)".to_string(), |v| v.to_string());
    let mut who = format!(
        "user {}, group {}",
        id(security.run_as_user),
        id(security.run_as_group)
    );
    if !security.supplemental_groups.is_empty() {
        let groups: Vec<String> = security
            .supplemental_groups
            .iter()
            .map(u32::to_string)
            .collect();
        who.push_str(&format!(", extra groups {}", groups.join(",")));
    }
    if let Some(fs_group) = security.fs_group {
        who.push_str(&format!(", fsGroup {fs_group}"));
    }
    if security.run_as_non_root {
        who.push_str(", runAsNonRoot");
    }
    let root = if security.read_only_root_filesystem {
        "read-only root"
    } else {
        "writable root"
    };
    let privilege = if security.privileged {
        "privileged"
    } else if security.no_new_privileges() {
        "no privilege escalation"
    } else {
        "privilege escalation allowed"
    };
    let default_caps = security.capabilities.len() == DEFAULT_CAPABILITIES.len()
        && DEFAULT_CAPABILITIES
            .iter()
            .all(|c| security.capabilities.iter().any(|h| h == c));
    let caps = if default_caps {
        "default".to_string()
    } else if security.capabilities.is_empty() {
        none()
    } else {
        let names: Vec<&str> = security
            .capabilities
            .iter()
            .map(|c| c.trim_start_matches("CAP_"))
            .collect();
        names.join(",")
    };
    let seccomp = match security.seccomp {
        SeccompProfileType::RuntimeDefault => "RuntimeDefault",
        SeccompProfileType::Unconfined => "Unconfined",
        SeccompProfileType::Localhost => "Localhost",
    };
    let mut lines = vec![
        who,
        format!("{root}, {privilege}"),
        format!("capabilities {caps}"),
        format!("seccomp {seccomp}"),
    ];
    let hosts: Vec<&str> = [
        ("pid", security.host_pid),
        ("ipc", security.host_ipc),
        ("network", security.host_network),
    ]
    .into_iter()
    .filter_map(|(name, shared)| shared.then_some(name))
    .collect();
    if !hosts.is_empty() {
        lines.push(format!("host namespaces {}", hosts.join(",")));
    }
    lines.join("\n")
}

/// `cpu=250m, memory=64Mi`, `<none>`.
fn resource_list_text(list: &ResourceList) -> String {
    let parts: Vec<String> = [("cpu", &list.cpu), ("memory", &list.memory)]
        .into_iter()
        .filter_map(|(name, amount)| Some(format!("{name}={}", amount.as_ref()?)))
        .collect();
    if parts.is_empty() {
        none()
    } else {
        parts.join(", ")
    }
}

fn state_text(state: &ContainerState) -> String {
    match state {
        ContainerState::Waiting { reason } => format!("Waiting ({reason})"),
        ContainerState::Running { started_at } => {
            format!("Running (since {})", rfc3339(*started_at))
        }
        ContainerState::Terminated { exit_code, reason } => {
            format!("Terminated ({reason}, exit code {exit_code})")
        }
    }
}

/// kubectl's form: `dedicated=web:NoSchedule`, `gpu:NoExecute op=Exists
/// for 300s`, `op=Exists` for everything.
fn toleration_text(toleration: &Toleration) -> String {
    let mut text = toleration.key.clone().unwrap_or_default();
    if let Some(value) = &toleration.value {
        text.push('=');
        text.push_str(value);
    }
    if let Some(effect) = toleration.effect {
        text.push(':');
        text.push_str(effect_name(effect));
    }
    if toleration.operator == TolerationOperator::Exists {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str("op=Exists");
    }
    if let Some(seconds) = toleration.toleration_seconds {
        text.push_str(&format!(" for {seconds}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wharf_api::ObjectReference;

    use super::*;

    const NOW: u64 = 1_750_000_000_000;

    #[test]
    fn descriptions_align_values_per_depth() {
        let mut description = Description::default();
        description.field(0, "Name", "web");
        description.field(0, "Labels", "app=web\ntier=front");
        description.heading(0, "Containers");
        description.heading(2, "web");
        description.field(4, "Image", "shop/web:1");
        description.field(4, "Restart Count", "0");
        description.text(2, "A  B\n1  2\n");
        assert_eq!(
            description.render(),
            "Name:    web\n\
             Labels:  app=web\n\
             \x20        tier=front\n\
             Containers:\n\
             \x20 web:\n\
             \x20   Image:          shop/web:1\n\
             \x20   Restart Count:  0\n\
             \x20 A  B\n\
             \x20 1  2\n"
        );
    }

    #[test]
    fn events_read_as_a_table() {
        let event = Event {
            involved_object: ObjectReference {
                kind: "Pod".into(),
                name: "web-1".into(),
                ..Default::default()
            },
            reason: "FailedScheduling".into(),
            message: "0/1 nodes are available".into(),
            event_type: EventType::Warning,
            count: 3,
            last_timestamp: NOW - 120_000,
            ..Default::default()
        };
        assert_eq!(
            events_table(&[event], NOW),
            "TYPE     REASON            AGE  COUNT  MESSAGE\n\
             Warning  FailedScheduling  2m   3      0/1 nodes are available\n"
        );
    }

    #[test]
    fn pods_are_described_with_their_containers() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "project": "shop", "createdAt": NOW - 60_000,
                "labels": {"app": "web"},
                "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "u"}],
            },
            "spec": {
                "nodeName": "n1",
                "nodeSelector": {"wharf.io/pool": "web"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"},
                    {"operator": "Exists"},
                ],
                "containers": [{
                    "name": "web", "image": "shop/web:1",
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                  "limits": {"memory": "128Mi"}},
                }],
            },
            "status": {
                "phase": "Running", "podIP": "10.1.0.7",
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 1,
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}],
            },
        }))
        .unwrap();
        let text = describe_pod(&pod, NOW).render();
        for expected in [
            "Name:            web-1\n",
            "Project:         shop\n",
            "Controlled By:   Deployment/web\n",
            "Node:            n1\n",
            "Status:          Running\n",
            "IP:              10.1.0.7\n",
            "  web:\n",
            "    Ports:          80/TCP\n",
            "    State:          Terminated (OOMKilled, exit code 137)\n",
            "    Requests:       cpu=250m, memory=64Mi\n",
            "    Limits:         memory=128Mi\n",
            "Node-Selectors:  wharf.io/pool=web\n",
            "Tolerations:     dedicated=web:NoSchedule\n                 op=Exists\n",
            "    Security:       user (image), group (image)\n                    writable root, privilege escalation allowed\n                    capabilities default\n                    seccomp RuntimeDefault\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[test]
    fn deployments_are_described_with_their_rollout() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {
                "name": "web", "project": "shop", "createdAt": NOW - 60_000,
                "annotations": {"deployment.kubernetes.io/revision": "3"},
            },
            "spec": {
                "replicas": 3, "paused": true,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "shop/web:2"}]}},
            },
            "status": {
                "replicas": 4, "updatedReplicas": 1, "readyReplicas": 3,
                "availableReplicas": 3, "unavailableReplicas": 1, "scheduledReplicas": 4,
                "conditions": [{
                    "type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "deployment \"web\" exceeded its progress deadline",
                    "lastUpdateTime": "2025-06-15T15:06:40Z",
                    "lastTransitionTime": "2025-06-15T15:06:40Z",
                }],
            },
        }))
        .unwrap();
        let text = describe_deployment(&deployment, NOW).render();
        for expected in [
            "Replicas:     3 desired | 1 updated | 4 total | 3 available | 1 unavailable | 3 ready | 4 scheduled\n",
            "Paused:       true\n",
            "Revision:     3\n",
            "Conditions:\n  Progressing:     False ProgressDeadlineExceeded since 2025-06-15T15:06:40Z (deployment \"web\" exceeded its progress deadline)\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[test]
    fn host_network_and_host_ports_are_described() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "project": "shop"},
            "spec": {
                "hostNetwork": true,
                "containers": [{
                    "name": "web", "image": "shop/web:1",
                    "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "192.0.2.7"}],
                }],
            },
        }))
        .unwrap();
        let text = describe_pod(&pod, NOW).render();
        for expected in ["host namespaces network\n", "80/TCP (host 192.0.2.7:8080)"] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[test]
    fn the_effective_security_context_is_described_per_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "project": "shop"},
            "spec": {
                "hostPID": true,
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000,
                    "supplementalGroups": [4000], "fsGroup": 2000, "runAsNonRoot": true},
                "containers": [{
                    "name": "web", "image": "shop/web:1",
                    "securityContext": {"runAsUser": 1001, "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
                }, {
                    "name": "debug", "image": "shop/debug:1",
                    "securityContext": {"privileged": true},
                }],
            },
        }))
        .unwrap();
        let text = describe_pod(&pod, NOW).render();
        for expected in [
            "user 1001, group 3000, extra groups 4000,2000, fsGroup 2000, runAsNonRoot\n",
            "read-only root, no privilege escalation\n",
            "capabilities NET_BIND_SERVICE\n",
            "host namespaces pid\n",
            "writable root, privileged\n",
            "seccomp Unconfined\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        let mut terminating = pod.clone();
        terminating.metadata.deletion_timestamp = Some(NOW + 24_500);
        let text = describe_pod(&terminating, NOW).render();
        assert!(
            text.contains("Status:          Terminating (lasts 25s)\n"),
            "{text}"
        );
    }

    #[test]
    fn nodes_are_described_with_their_allocation() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "createdAt": NOW - 3_600_000},
            "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]},
            "status": {"ready": true, "lastHeartbeat": NOW - 12_000,
                       "capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}},
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "project": "shop"},
            "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "i",
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]},
        }))
        .unwrap();
        let text = describe_node(&node, Some(&[pod]), NOW).render();
        for expected in [
            "Taints:          gpu:NoSchedule\n",
            "Last Heartbeat:  2025-06-15T15:06:28Z (12s ago)\n",
            "Allocated:\n  cpu:     1 (25%)\n  memory:  2.0Gi (25%)\n  pods:    1 (0%)\n",
            "  PROJECT  NAME   STATUS   CPU  MEMORY\n  shop     web-1  Pending  1    2.0Gi\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        let text = describe_node(&node, None, NOW).render();
        assert!(
            text.contains(
                "Allocated:       <unknown: listing the node's pods needs an administrator>\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_scheduling_scores_and_the_load_summary_are_described() {
        let scores = "n1 scored 84.2, best of 2 feasible nodes: image locality 100.0, load 95.0";
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "project": "shop",
                         "annotations": {ANNOTATION_SCHEDULING_SCORES: scores}},
            "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "i"}]},
        }))
        .unwrap();
        let text = describe_pod(&pod, NOW).render();
        let line = text.lines().find(|l| l.starts_with("Scheduling:"));
        assert!(line.is_some_and(|l| l.ends_with(scores)), "{text}");

        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"cpuLoad": 0.25, "loadAverage": 1.5, "memoryAvailableBytes": 3u64 << 30,
                       "layers": [{"digest": "sha256:a", "sizeBytes": 1 << 20},
                                  {"digest": "sha256:b", "sizeBytes": 1 << 20}],
                       "capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}},
        }))
        .unwrap();
        let text = describe_node(&node, None, NOW).render();
        for (label, value) in [
            ("CPU Load:", "25%"),
            ("Load Average:", "1.50"),
            ("Memory Available:", "3.0Gi"),
            ("Cached Layers:", "2 (2 MiB)"),
        ] {
            let line = text.lines().find(|l| l.starts_with(label));
            assert!(
                line.is_some_and(|l| l.ends_with(value)),
                "{label} {value}\n{text}"
            );
        }
    }

    #[test]
    fn a_node_shows_its_initialized_condition_and_init_run() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {
                "conditions": [{"type": "Initialized", "status": "False", "reason": "Failed",
                                "message": "script: exit status: 3: no disk",
                                "lastTransitionTime": "2025-06-15T15:06:40Z"}],
                "initialization": {"profileHash": "sha256:abc", "state": "Failed",
                                   "step": "script", "message": "script: exit status: 3: no disk",
                                   "startedAt": "2025-06-15T15:06:38Z",
                                   "finishedAt": "2025-06-15T15:06:40Z"}},
        }))
        .unwrap();
        let text = describe_node(&node, None, NOW).render();
        assert!(
            text.contains(
                "Initialized:  False Failed since 2025-06-15T15:06:40Z \
                 (script: exit status: 3: no disk)\n"
            ),
            "{text}"
        );
        let words: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        for line in ["State: Failed", "Step: script", "Profile: sha256:abc"] {
            assert!(words.iter().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn tolerations_read_like_kubectl() {
        let toleration: Toleration = serde_json::from_value(
            json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        )
        .unwrap();
        assert_eq!(
            toleration_text(&toleration),
            "gpu:NoExecute op=Exists for 300s"
        );
    }
}
