//! `wharf get`: nodes, deployments and pods as kubectl lists them, and
//! their changes as they happen (`-w`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wharf_api::{
    ConfigMap, ContainerState, Deployment, LABEL_CLUSTER, LABEL_CLUSTER_KIND, LABEL_IDC,
    LABEL_MACHINE_CLASS, LABEL_POOL, LOCAL_STORAGE_CLASS, Node, PersistentVolumeClaim, Pod,
    PodPhase, Resources, Secret,
};
use wharf_api::{Endpoints, HorizontalPodAutoscaler, Service};

use super::ServerOption;
use super::hpa_view::hpa_row;
use super::objects::{
    Kind, ObjectName, ProjectOption, allocated_on, bound_pods, label_or_none, list_objects,
    node_status, none, place, selector_text, sum_requests, taint_text,
};
use super::service_view::{endpoints_row, service_row};
use crate::client::{ApiClient, unix_now};
use crate::output::{self, OutputFormat, RowStream, Table, age, cores, memory};

/// Options of `wharf get`.
#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to list: nodes (no), deployments (deploy), pods (po),
    /// configmaps (cm) or secrets.
    #[arg(value_parser = Kind::parse)]
    kind: Kind,
    /// Only this object.
    name: Option<String>,
    #[command(flatten)]
    project: ProjectOption,
    /// List deployments or pods of every project you can read, with a
    /// PROJECT column.
    #[arg(short = 'A', long, conflicts_with_all = ["name", "project", "watch"])]
    all_projects: bool,
    /// Only objects whose labels match, e.g. app=web,tier!=db,env in (a,b).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Output format; wide adds columns.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: ListFormat,
    /// After the list, print every change as it happens, until Ctrl-C.
    #[arg(short = 'w', long)]
    watch: bool,
    /// With `get secret NAME -o yaml|json`: include the values (base64),
    /// which takes the maintainer role or above in the project.
    #[arg(long)]
    show_secrets: bool,
}

/// How `wharf get` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Aligned columns.
    #[default]
    Table,
    /// More columns.
    Wide,
    /// The server's JSON; with -w one JSON line per change.
    Json,
    /// The server's JSON as YAML; with -w one document per change.
    Yaml,
}

/// Pause before resuming a watch the server ended.
const WATCH_RESUME_DELAY: Duration = Duration::from_secs(1);

/// Lists objects, or shows one, and follows their changes with `-w`.
pub async fn run(args: GetArgs) -> Result<()> {
    if args.name.is_some() && args.selector.is_some() {
        bail!("give a NAME or -l SELECTOR, not both");
    }
    let kind = args.kind;
    check_show_secrets(&args)?;
    if args.watch
        && matches!(
            kind,
            Kind::ConfigMap
                | Kind::Secret
                | Kind::PersistentVolumeClaim
                | Kind::Service
                | Kind::Endpoints
                | Kind::HorizontalPodAutoscaler
        )
    {
        bail!("-w is not supported for {}", kind.plural());
    }
    let mut client = args.server.client()?;
    if args.all_projects {
        return list_all_projects(&mut client, &args).await;
    }
    let project = &args.project.for_kind(kind, client.default_project())?;
    let (answer, objects, resource_version) = match &args.name {
        Some(name) => {
            let query: Vec<(&str, String)> = args
                .show_secrets
                .then(|| ("showSecrets", "true".to_string()))
                .into_iter()
                .collect();
            let answer = client
                .get_with_query(&kind.object_path(project, name), &query)
                .await
                .with_context(|| format!("getting {}{}", ObjectName(kind, name), place(project)))?;
            let version = resource_version(&answer);
            (answer.clone(), vec![answer], version)
        }
        None => {
            let answer = list_objects(&mut client, kind, project, &args.selector).await?;
            let objects = answer["items"].as_array().cloned().unwrap_or_default();
            let version = resource_version(&answer);
            (answer, objects, version)
        }
    };
    let mut printer = match args.output {
        ListFormat::Json => {
            output::print(OutputFormat::Json, answer, |_: Value| String::new())?;
            Printer::Json
        }
        ListFormat::Yaml => {
            output::print(OutputFormat::Yaml, answer, |_: Value| String::new())?;
            Printer::Yaml
        }
        ListFormat::Table | ListFormat::Wide => {
            let mut rows = RowMaker::new(kind, args.output == ListFormat::Wide, false);
            let (text, stream) = rows.table(&mut client, &objects, args.watch).await?;
            if objects.is_empty() && !args.watch {
                eprintln!("no {} found{}", kind.plural(), place(project));
            } else {
                print!("{text}");
            }
            Printer::Rows { rows, stream }
        }
    };
    if !args.watch {
        return Ok(());
    }
    let Some(from) = resource_version else {
        bail!("the server's answer has no metadata.resourceVersion to watch from");
    };
    let watch = Watch {
        kind,
        project,
        name: args.name.as_deref(),
        selector: args.selector.as_deref(),
    };
    watch.follow(&mut client, &mut printer, from, objects).await
}

/// `--show-secrets` goes only with one Secret printed as YAML or JSON, so
/// values never land in a table or a list by accident.
fn check_show_secrets(args: &GetArgs) -> Result<()> {
    let as_data = matches!(args.output, ListFormat::Yaml | ListFormat::Json);
    if args.show_secrets && !(args.kind == Kind::Secret && args.name.is_some() && as_data) {
        bail!("--show-secrets goes with get secret NAME -o yaml (or -o json)");
    }
    Ok(())
}

/// `get -A`: the objects of every project the caller can read, one list
/// per project through the per-project routes, so that their access rule
/// is the only one. (`GET /api/v1/pods` spans projects but is the agents'
/// route, for administrators only.)
async fn list_all_projects(client: &mut ApiClient, args: &GetArgs) -> Result<()> {
    let kind = args.kind;
    if !kind.in_project() {
        bail!("{} belong to no project: drop -A", kind.plural());
    }
    let projects: Vec<wharf_auth::Project> = serde_json::from_value(
        client
            .get(&["projects"])
            .await
            .context("listing projects")?,
    )
    .context("the server's project list is not what wharf expects")?;
    let mut objects = Vec::new();
    for project in &projects {
        let answer = list_objects(client, kind, &project.name, &args.selector).await?;
        objects.extend(answer["items"].as_array().cloned().unwrap_or_default());
    }
    let answer = json!({
        "apiVersion": "v1",
        "kind": format!("{}List", kind.api_kind()),
        "items": objects,
    });
    match args.output {
        ListFormat::Json => output::print(OutputFormat::Json, answer, |_: Value| String::new()),
        ListFormat::Yaml => output::print(OutputFormat::Yaml, answer, |_: Value| String::new()),
        ListFormat::Table | ListFormat::Wide => {
            let mut rows = RowMaker::new(kind, args.output == ListFormat::Wide, true);
            let (text, _) = rows.table(client, &objects, false).await?;
            if objects.is_empty() {
                eprintln!("no {} found in any project you can read", kind.plural());
            } else {
                print!("{text}");
            }
            Ok(())
        }
    }
}

/// `metadata.resourceVersion` of an object or list, as a number.
fn resource_version(value: &Value) -> Option<u64> {
    value["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

fn object_name(value: &Value) -> &str {
    value["metadata"]["name"].as_str().unwrap_or_default()
}

/// What a watch follows.
struct Watch<'a> {
    kind: Kind,
    project: &'a str,
    /// Only this object.
    name: Option<&'a str>,
    selector: Option<&'a str>,
}

impl Watch<'_> {
    /// Prints each change after resource version `from`, resuming the
    /// watch whenever the server ends it, until Ctrl-C or an error.
    ///
    /// `listed` are the objects already printed: a deletion names only the
    /// object, so its row shows the object as last seen.
    async fn follow(
        &self,
        client: &mut ApiClient,
        printer: &mut Printer,
        mut from: u64,
        listed: Vec<Value>,
    ) -> Result<()> {
        let mut last_seen: HashMap<String, Value> = listed
            .into_iter()
            .map(|object| (object_name(&object).to_string(), object))
            .collect();
        let path = self.kind.collection_path(self.project);
        loop {
            let mut query = vec![
                ("watch", "true".to_string()),
                ("resourceVersion", from.to_string()),
            ];
            if let Some(selector) = self.selector {
                query.push(("labelSelector", selector.to_string()));
            }
            let mut lines = client.get_lines(&path, &query).await.with_context(|| {
                format!("watching {}{}", self.kind.plural(), place(self.project))
            })?;
            while let Some(event) = lines.next().await? {
                let change = event["type"].as_str().unwrap_or_default().to_string();
                let object = &event["object"];
                if change == "ERROR" {
                    let message = object["message"].as_str().unwrap_or("no reason given");
                    bail!("the server ended the watch: {message}; run the command again");
                }
                from = resource_version(object).unwrap_or(from).max(from);
                let name = object_name(object).to_string();
                if self.name.is_some_and(|wanted| wanted != name) {
                    continue;
                }
                let shown = if change == "DELETED" {
                    // A deletion of something never shown (another label) is not news.
                    match last_seen.remove(&name) {
                        Some(last) => last,
                        None => continue,
                    }
                } else {
                    last_seen.insert(name, object.clone());
                    object.clone()
                };
                printer.change(client, &change, &event, &shown).await?;
            }
            // The server closed the stream, or its time ran out: resume.
            tokio::time::sleep(WATCH_RESUME_DELAY).await;
        }
    }
}

/// How changes are printed.
enum Printer {
    /// Table rows, under the list.
    Rows { rows: RowMaker, stream: RowStream },
    /// One JSON line per change, as the server sent it.
    Json,
    /// One YAML document per change.
    Yaml,
}

impl Printer {
    /// Prints one change: `event` as the server sent it, `object` the
    /// object as last seen.
    async fn change(
        &mut self,
        client: &mut ApiClient,
        change: &str,
        event: &Value,
        object: &Value,
    ) -> Result<()> {
        match self {
            // `type` first, as the server sends it and as people read it.
            Printer::Json => println!(
                r#"{{"type":{},"object":{}}}"#,
                serde_json::to_string(change)?,
                serde_json::to_string(&event["object"])?
            ),
            Printer::Yaml => print!("---\n{}", serde_norway::to_string(event)?),
            Printer::Rows { rows, stream } => {
                let mut row = vec![change.to_string()];
                row.extend(
                    rows.rows(client, std::slice::from_ref(object))
                        .await?
                        .remove(0),
                );
                print!("{}", stream.render(&row));
            }
        }
        Ok(())
    }
}

/// Makes table rows of objects of one kind.
struct RowMaker {
    kind: Kind,
    wide: bool,
    /// Whether the caller may list the pods bound to nodes (administrators).
    may_list_pods: bool,
    /// Whether rows start with the object's project (`get -A`).
    project_column: bool,
}

impl RowMaker {
    fn new(kind: Kind, wide: bool, project_column: bool) -> RowMaker {
        RowMaker {
            kind,
            wide,
            may_list_pods: true,
            project_column,
        }
    }

    /// The table of `objects`, and the stream for rows of later changes.
    /// A watched table has an EVENT column, `ADDED` for what is listed.
    async fn table(
        &mut self,
        client: &mut ApiClient,
        objects: &[Value],
        watch: bool,
    ) -> Result<(String, RowStream)> {
        let mut headers = Vec::new();
        if watch {
            headers.push("EVENT");
        }
        if self.project_column {
            headers.push("PROJECT");
        }
        headers.extend(headers_of(self.kind, self.wide));
        let mut table = Table::new(&headers);
        if watch {
            table.min_width(0, "MODIFIED".len());
        }
        for (row, object) in self.rows(client, objects).await?.into_iter().zip(objects) {
            let event = watch.then(|| "ADDED".to_string());
            let project = self.project_column.then(|| {
                object["metadata"]["project"]
                    .as_str()
                    .map_or_else(none, str::to_string)
            });
            table.row(event.into_iter().chain(project).chain(row));
        }
        Ok(table.render_streaming())
    }

    /// One row per object.
    async fn rows(
        &mut self,
        client: &mut ApiClient,
        objects: &[Value],
    ) -> Result<Vec<Vec<String>>> {
        let now_ms = unix_now().saturating_mul(1000);
        let wide = self.wide;
        Ok(match self.kind {
            Kind::Node => {
                let nodes: Vec<Node> = typed(objects)?;
                let allocations = if self.may_list_pods && !nodes.is_empty() {
                    // One node: only its pods; several: all pods at once.
                    let only = (nodes.len() == 1).then(|| nodes[0].metadata.name.as_str());
                    let pods = bound_pods(client, only).await?;
                    self.may_list_pods = pods.is_some();
                    pods.as_deref().map(sum_requests)
                } else {
                    None
                };
                nodes
                    .iter()
                    .map(|node| {
                        let allocated = allocated_on(node, allocations.as_ref());
                        node_row(node, allocated, wide, now_ms)
                    })
                    .collect()
            }
            Kind::Deployment => typed::<Deployment>(objects)?
                .iter()
                .map(|deployment| deployment_row(deployment, wide, now_ms))
                .collect(),
            Kind::Pod => typed::<Pod>(objects)?
                .iter()
                .map(|pod| pod_row(pod, wide, now_ms))
                .collect(),
            Kind::ConfigMap => typed::<ConfigMap>(objects)?
                .iter()
                .map(|config_map| config_map_row(config_map, now_ms))
                .collect(),
            Kind::Secret => typed::<Secret>(objects)?
                .iter()
                .map(|secret| secret_row(secret, now_ms))
                .collect(),
            Kind::PersistentVolumeClaim => typed::<PersistentVolumeClaim>(objects)?
                .iter()
                .map(|claim| claim_row(claim, now_ms))
                .collect(),
            Kind::Service => typed::<Service>(objects)?
                .iter()
                .map(|service| service_row(service, now_ms))
                .collect(),
            Kind::Endpoints => typed::<Endpoints>(objects)?
                .iter()
                .map(|endpoints| endpoints_row(endpoints, now_ms))
                .collect(),
            Kind::HorizontalPodAutoscaler => typed::<HorizontalPodAutoscaler>(objects)?
                .iter()
                .map(|hpa| hpa_row(hpa, now_ms))
                .collect(),
        })
    }
}

fn typed<T: DeserializeOwned>(objects: &[Value]) -> Result<Vec<T>> {
    objects
        .iter()
        .map(|object| serde_json::from_value(object.clone()))
        .collect::<Result<_, _>>()
        .context("the server's answer is not what wharf expects; try -o json")
}

/// The column headers of a kind.
fn headers_of(kind: Kind, wide: bool) -> Vec<&'static str> {
    let (mut headers, more): (Vec<_>, &[&str]) = match kind {
        Kind::Node => (
            vec![
                "NAME", "STATUS", "CLUSTER", "POOL", "CLASS", "IDC", "KIND", "CPU", "MEMORY",
                "PODS", "AGE",
            ],
            &["ADDRESS", "TAINTS", "COST/H"],
        ),
        Kind::Deployment => (
            vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["IMAGES", "SELECTOR"],
        ),
        Kind::Pod => (
            vec!["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"],
            &["IP", "MESSAGE"],
        ),
        Kind::ConfigMap => (vec!["NAME", "DATA", "AGE"], &["KEYS"]),
        Kind::Secret => (vec!["NAME", "TYPE", "DATA", "AGE"], &["KEYS"]),
        Kind::PersistentVolumeClaim => (
            vec![
                "NAME",
                "STATUS",
                "NODE",
                "CAPACITY",
                "ACCESS MODES",
                "STORAGECLASS",
                "AGE",
            ],
            &[],
        ),
        Kind::Service => (
            vec!["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"],
            &["SELECTOR"],
        ),
        Kind::Endpoints => (vec!["NAME", "ENDPOINTS", "AGE"], &[]),
        Kind::HorizontalPodAutoscaler => (
            vec![
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE",
            ],
            &[],
        ),
    };
    if wide {
        headers.extend(more);
    }
    headers
}

/// `NAME DATA AGE`: how many keys, as kubectl shows.
fn config_map_row(config_map: &ConfigMap, now_ms: u64) -> Vec<String> {
    let keys: Vec<&str> = config_map.entries().map(|(key, _)| key).collect();
    vec![
        config_map.metadata.name.clone(),
        keys.len().to_string(),
        age(now_ms, config_map.metadata.created_at),
        keys.join(","),
    ]
}

/// `NAME TYPE DATA AGE`: the server sends key names and sizes, never values.
fn secret_row(secret: &Secret, now_ms: u64) -> Vec<String> {
    let keys: Vec<&str> = secret.data_sizes.keys().map(String::as_str).collect();
    vec![
        secret.metadata.name.clone(),
        secret.secret_type.clone(),
        keys.len().to_string(),
        age(now_ms, secret.metadata.created_at),
        keys.join(","),
    ]
}

/// `NAME STATUS NODE CAPACITY ACCESS MODES STORAGECLASS AGE`, modes
/// abbreviated as kubectl does (`RWO`, `RWOP`).
fn claim_row(claim: &PersistentVolumeClaim, now_ms: u64) -> Vec<String> {
    let modes: Vec<&str> = claim
        .spec
        .access_modes
        .iter()
        .map(|mode| match mode.as_str() {
            "ReadWriteOncePod" => "RWOP",
            _ => "RWO",
        })
        .collect();
    vec![
        claim.metadata.name.clone(),
        claim.phase().to_string(),
        claim.bound_node().map_or_else(none, str::to_string),
        claim
            .status
            .capacity
            .get("storage")
            .cloned()
            .unwrap_or_default(),
        if modes.is_empty() {
            "RWO".into()
        } else {
            modes.join(",")
        },
        LOCAL_STORAGE_CLASS.to_string(),
        age(now_ms, claim.metadata.created_at),
    ]
}

/// `used/capacity`, or `-/capacity` when the use is not known.
fn usage(used: Option<u64>, capacity: u64, format: impl Fn(u64) -> String) -> String {
    let used = used.map_or_else(|| "-".to_string(), &format);
    format!("{used}/{}", format(capacity))
}

/// A node's row; `allocated` is what its pods request, when known.
fn node_row(node: &Node, allocated: Option<Resources>, wide: bool, now_ms: u64) -> Vec<String> {
    let labels = &node.metadata.labels;
    let capacity = node.status.capacity;
    let mut row = vec![
        node.metadata.name.clone(),
        node_status(node),
        label_or_none(labels, LABEL_CLUSTER),
        label_or_none(labels, LABEL_POOL),
        label_or_none(labels, LABEL_MACHINE_CLASS),
        label_or_none(labels, LABEL_IDC),
        label_or_none(labels, LABEL_CLUSTER_KIND),
        usage(allocated.map(|a| a.cpu_millis), capacity.cpu_millis, cores),
        usage(
            allocated.map(|a| a.memory_bytes),
            capacity.memory_bytes,
            memory,
        ),
        usage(
            allocated.map(|a| u64::from(a.pods)),
            u64::from(capacity.pods),
            |n| n.to_string(),
        ),
        age(now_ms, node.metadata.created_at),
    ];
    if wide {
        let taints: Vec<String> = node.spec.taints.iter().map(taint_text).collect();
        row.extend([
            node.spec.address.clone().unwrap_or_else(none),
            if taints.is_empty() {
                none()
            } else {
                taints.join(",")
            },
            node.spec
                .cost_per_hour
                .map_or_else(none, |cost| cost.to_string()),
        ]);
    }
    row
}

/// A deployment's row.
fn deployment_row(deployment: &Deployment, wide: bool, now_ms: u64) -> Vec<String> {
    let (spec, status) = (&deployment.spec, &deployment.status);
    let mut row = vec![
        deployment.metadata.name.clone(),
        format!("{}/{}", status.ready_replicas, spec.replicas),
        status.updated_replicas.to_string(),
        status.available_replicas.to_string(),
        age(now_ms, deployment.metadata.created_at),
    ];
    if wide {
        let images: Vec<&str> = spec
            .template
            .spec
            .containers
            .iter()
            .map(|c| c.image.as_str())
            .collect();
        row.extend([images.join(","), selector_text(&spec.selector)]);
    }
    row
}

/// A pod's row.
fn pod_row(pod: &Pod, wide: bool, now_ms: u64) -> Vec<String> {
    let statuses = &pod.status.container_statuses;
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts: u64 = statuses.iter().map(|c| u64::from(c.restart_count)).sum();
    let mut row = vec![
        pod.metadata.name.clone(),
        format!("{ready}/{}", pod.spec.containers.len()),
        pod_status(pod),
        restarts.to_string(),
        pod.spec.node_name.clone().unwrap_or_else(none),
        age(now_ms, pod.metadata.created_at),
    ];
    if wide {
        row.extend([
            pod.status.pod_ip.clone().unwrap_or_else(none),
            pod.status.message.clone().unwrap_or_else(none),
        ]);
    }
    row
}

/// What kubectl's STATUS column says: `Terminating` once deletion was
/// asked, else the pod's reason (`Unschedulable`), else why a container
/// waits (`ImagePullBackOff`), else the phase.
pub fn pod_status(pod: &Pod) -> String {
    if pod.metadata.is_terminating() {
        return "Terminating".into();
    }
    if let Some(reason) = pod.status.reason.as_deref().filter(|r| !r.is_empty()) {
        return reason.to_string();
    }
    let waiting = pod
        .status
        .container_statuses
        .iter()
        .find_map(|c| match &c.state {
            ContainerState::Waiting { reason } if !reason.is_empty() => Some(reason.clone()),
            _ => None,
        });
    waiting.unwrap_or_else(|| phase_name(pod.status.phase).to_string())
}

/// The phase as the API writes it.
pub fn phase_name(phase: PodPhase) -> &'static str {
    match phase {
        PodPhase::Pending => "Pending",
        PodPhase::Running => "Running",
        PodPhase::Succeeded => "Succeeded",
        PodPhase::Failed => "Failed",
        PodPhase::Unknown => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_750_000_000_000;

    fn render(kind: Kind, wide: bool, rows: Vec<Vec<String>>) -> String {
        let mut table = Table::new(&headers_of(kind, wide));
        for row in rows {
            table.row(row);
        }
        table.render()
    }

    fn node() -> Node {
        serde_json::from_value(json!({
            "metadata": {
                "name": "n1",
                "createdAt": NOW - 4 * 86_400_000,
                "labels": {"wharf.io/pool": "web", "wharf.io/idc": "sh1", "wharf.io/cluster": "bj",
                           "wharf.io/cluster-kind": "vm", "wharf.io/machine-class": "3"},
            },
            "spec": {
                "address": "10.0.0.5",
                "unschedulable": true,
                "taints": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"},
                           {"key": "gpu", "effect": "NoExecute"}],
                "costPerHour": 0.42,
            },
            "status": {
                "ready": true,
                "capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110},
            },
        }))
        .unwrap()
    }

    #[test]
    fn node_rows_show_allocation_over_capacity() {
        let allocated = Resources {
            cpu_millis: 1500,
            memory_bytes: 2 << 30,
            pods: 3,
        };
        assert_eq!(
            render(
                Kind::Node,
                false,
                vec![node_row(&node(), Some(allocated), false, NOW)]
            ),
            "NAME  STATUS                    CLUSTER  POOL  CLASS  IDC  KIND  CPU    MEMORY       PODS   AGE\n\
             n1    Ready,SchedulingDisabled  bj       web   3      sh1  vm    1.5/4  2.0Gi/8.0Gi  3/110  4d\n"
        );
        let wide = node_row(&node(), None, true, NOW);
        assert_eq!(&wide[7..10], ["-/4", "-/8.0Gi", "-/110"]);
        assert_eq!(
            &wide[11..],
            ["10.0.0.5", "dedicated=web:NoSchedule,gpu:NoExecute", "0.42"]
        );
        let bare: Node =
            serde_json::from_value(json!({"metadata": {"name": "n2"}, "status": {}})).unwrap();
        let row = node_row(&bare, Some(Resources::default()), true, NOW);
        assert_eq!(row[1], "NotReady");
        assert_eq!(&row[2..5], ["<none>", "<none>", "<none>"]);
        assert_eq!(row[7], "0/0");
        assert_eq!(row[10], "<unknown>");
        assert_eq!(&row[11..], ["<none>", "<none>", "<none>"]);
    }

    #[test]
    fn allocation_falls_back_to_the_nodes_status() {
        let mut node = node();
        assert_eq!(allocated_on(&node, None), None);
        node.status.allocated.cpu_millis = 500;
        assert_eq!(allocated_on(&node, None).unwrap().cpu_millis, 500);
        let sums = HashMap::new();
        assert_eq!(
            allocated_on(&node, Some(&sums)),
            Some(Resources::default()),
            "listed pods are the truth: none are bound here"
        );
    }

    #[test]
    fn deployment_rows() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "project": "shop", "createdAt": NOW - 180_000},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "web", "image": "shop/web:1"},
                        {"name": "log", "image": "shop/log:2"},
                    ]},
                },
            },
            "status": {"replicas": 3, "updatedReplicas": 3, "scheduledReplicas": 2, "readyReplicas": 1, "availableReplicas": 1},
        }))
        .unwrap();
        assert_eq!(
            render(
                Kind::Deployment,
                true,
                vec![deployment_row(&deployment, true, NOW)]
            ),
            "NAME  READY  UP-TO-DATE  AVAILABLE  AGE  IMAGES                 SELECTOR\n\
             web   1/3    3           1          3m   shop/web:1,shop/log:2  app=web\n"
        );
    }

    #[test]
    fn claim_rows_show_phase_node_capacity_and_modes() {
        let claim = |extra: serde_json::Value| -> PersistentVolumeClaim {
            let mut value = json!({
                "metadata": {"name": "data", "createdAt": NOW - 60_000},
                "spec": {"accessModes": ["ReadWriteOncePod"],
                         "resources": {"requests": {"storage": "1Gi"}}},
            });
            for (key, field) in extra.as_object().unwrap() {
                value[key.as_str()] = field.clone();
            }
            serde_json::from_value(value).unwrap()
        };
        let pending = claim(json!({}));
        let bound = claim(json!({"status": {"phase": "Bound", "nodeName": "n1",
                                            "capacity": {"storage": "1Gi"}}}));
        let mut deleting = bound.clone();
        deleting.metadata.deletion_timestamp = Some(NOW);
        let rows = [&pending, &bound, &deleting]
            .into_iter()
            .map(|c| claim_row(c, NOW))
            .collect();
        let text = render(Kind::PersistentVolumeClaim, false, rows);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][..3], ["NAME", "STATUS", "NODE"], "{text}");
        assert_eq!(
            lines[1],
            ["data", "Pending", "<none>", "RWOP", "local", "1m"]
        );
        assert_eq!(
            lines[2],
            ["data", "Bound", "n1", "1Gi", "RWOP", "local", "1m"]
        );
        assert_eq!(lines[3][1], "Terminating");
    }

    #[test]
    fn pod_rows_say_why_a_pod_waits() {
        let pending: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "createdAt": NOW - 5_000},
            "spec": {"containers": [{"name": "web", "image": "shop/web:1"}]},
            "status": {"phase": "Pending", "reason": "Unschedulable",
                       "message": "0/1 nodes are available: 1 insufficient cpu"},
        }))
        .unwrap();
        let running: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-def", "createdAt": NOW - 7_200_000},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "web", "image": "shop/web:1"},
                {"name": "log", "image": "shop/log:2"},
            ]},
            "status": {
                "phase": "Running", "podIP": "10.1.0.7",
                "containerStatuses": [
                    {"name": "web", "ready": true, "restartCount": 2,
                     "state": {"running": {"startedAt": 1}}},
                    {"name": "log", "ready": false, "restartCount": 1,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                ],
            },
        }))
        .unwrap();
        assert_eq!(
            render(
                Kind::Pod,
                true,
                vec![pod_row(&pending, true, NOW), pod_row(&running, true, NOW)]
            ),
            "NAME     READY  STATUS            RESTARTS  NODE    AGE  IP        MESSAGE\n\
             web-abc  0/1    Unschedulable     0         <none>  5s   <none>    0/1 nodes are available: 1 insufficient cpu\n\
             web-def  1/2    CrashLoopBackOff  3         n1      2h   10.1.0.7  <none>\n"
        );
        let mut plain = running.clone();
        plain.status.container_statuses.clear();
        assert_eq!(pod_status(&plain), "Running");
        // Deletion asked: Terminating whatever the containers do, as kubectl shows it.
        let terminating: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-def", "creationTimestamp": "2025-01-02T03:04:05Z",
                         "deletionTimestamp": "2025-01-02T03:05:05Z",
                         "deletionGracePeriodSeconds": 30},
            "spec": running.spec,
            "status": running.status,
        }))
        .unwrap();
        assert_eq!(pod_status(&terminating), "Terminating");
    }

    #[test]
    fn resource_versions_and_names_are_read_from_json() {
        let list = json!({"metadata": {"resourceVersion": "42"}, "items": []});
        assert_eq!(resource_version(&list), Some(42));
        assert_eq!(resource_version(&json!({"metadata": {}})), None);
        assert_eq!(object_name(&json!({"metadata": {"name": "web"}})), "web");
    }
}
