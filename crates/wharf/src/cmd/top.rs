//! `wharf top nodes|pods`: nodes' CPU and memory from the load summary
//! their agents report, and pods' as their nodes last measured them, as
//! `kubectl top` shows them. `-o json` gives CPU in cores and memory in
//! bytes.

use std::cmp::Reverse;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use wharf_api::{Node, PodMetrics};

use super::ServerOption;
use super::objects::{Kind, ProjectOption};
use crate::output::{OutputFormat, OutputOption, Table};

/// Options of `wharf top`.
#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to show: nodes (node, no) or pods (pod, po).
    #[arg(value_enum)]
    what: TopKind,
    /// One pod or node (default: all with figures).
    name: Option<String>,
    #[command(flatten)]
    project: ProjectOption,
    /// Highest first by CPU or memory (default: by name).
    #[arg(long, value_enum)]
    sort: Option<SortBy>,
    #[command(flatten)]
    output: OutputOption,
}

/// What `wharf top` shows.
#[derive(Clone, Copy, ValueEnum)]
pub enum TopKind {
    /// Nodes.
    #[value(alias = "node", alias = "no")]
    Nodes,
    /// Pods.
    #[value(alias = "pod", alias = "po")]
    Pods,
}

/// The order of `--sort`.
#[derive(Clone, Copy, ValueEnum)]
pub enum SortBy {
    /// CPU in use, highest first.
    Cpu,
    /// Memory in use, highest first.
    Memory,
}

/// One row of `wharf top nodes`, as `-o json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeTop {
    name: String,
    /// Cores busy over the last minute.
    cpu_cores: f64,
    cpu_percent: f64,
    memory_bytes: u64,
    memory_percent: f64,
}

/// One row of `wharf top pods`, as `-o json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct PodTop {
    project: String,
    name: String,
    cpu_cores: f64,
    memory_bytes: u64,
}

/// Prints the table (or JSON) of nodes or pods.
pub async fn run(args: TopArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.what {
        TopKind::Nodes => {
            let value = match &args.name {
                Some(name) => serde_json::json!({"items": [client.get(&["nodes", name]).await?]}),
                None => client.get(&["nodes"]).await?,
            };
            let nodes: Vec<Node> = serde_json::from_value(value["items"].clone())
                .context("the server's nodes are not what wharf expects")?;
            let mut rows: Vec<NodeTop> = nodes.iter().filter_map(node_top).collect();
            if rows.is_empty() {
                bail!(
                    "no node reports its load yet: agents report with their status (every 30 s by default)"
                );
            }
            sort_nodes(&mut rows, args.sort);
            print_rows(args.output.format, &rows, node_table)
        }
        TopKind::Pods => {
            let project = args.project.for_kind(Kind::Pod, client.default_project())?;
            let pods: Vec<PodMetrics> = match &args.name {
                Some(name) => {
                    let path = ["projects", &project, "pods", name, "metrics"];
                    let value = client.get(&path).await.with_context(|| {
                        format!("metrics of pod {name} in project {project} (the node reports every 10 s; two reports are needed)")
                    })?;
                    vec![serde_json::from_value(value).context("reading the pod metrics")?]
                }
                None => {
                    let value = client.get(&["projects", &project, "podmetrics"]).await?;
                    serde_json::from_value(value).context("reading the pod metrics")?
                }
            };
            if pods.is_empty() {
                bail!("no pod metrics in project {project} yet: nodes report every 10 s");
            }
            let mut rows: Vec<PodTop> = pods.iter().map(pod_top).collect();
            sort_pods(&mut rows, args.sort);
            print_rows(args.output.format, &rows, pod_table)
        }
    }
}

fn print_rows<T: Serialize>(
    format: OutputFormat,
    rows: &[T],
    table: fn(&[T]) -> Table,
) -> Result<()> {
    match format {
        OutputFormat::Table => print!("{}", table(rows).render()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        OutputFormat::Yaml => print!("{}", serde_norway::to_string(rows)?),
    }
    Ok(())
}

/// A node's figures from its load summary; `None` if it reports none.
fn node_top(node: &Node) -> Option<NodeTop> {
    let status = &node.status;
    let busy = f64::from(status.cpu_load?);
    let cores = status.capacity.cpu_millis as f64 / 1000.0;
    let memory_total = status.capacity.memory_bytes;
    let memory_used = status
        .memory_available_bytes
        .map_or(0, |free| memory_total.saturating_sub(free));
    Some(NodeTop {
        name: node.metadata.name.clone(),
        cpu_cores: busy * cores,
        cpu_percent: busy * 100.0,
        memory_bytes: memory_used,
        memory_percent: percent(memory_used, memory_total),
    })
}

fn pod_top(pod: &PodMetrics) -> PodTop {
    PodTop {
        project: pod.project.clone(),
        name: pod.name.clone(),
        cpu_cores: pod.cpu_millicores() as f64 / 1000.0,
        memory_bytes: pod.memory_bytes(),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        whole => part as f64 * 100.0 / whole as f64,
    }
}

fn sort_nodes(rows: &mut [NodeTop], sort: Option<SortBy>) {
    match sort {
        None => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        Some(SortBy::Cpu) => rows.sort_by(|a, b| b.cpu_cores.total_cmp(&a.cpu_cores)),
        Some(SortBy::Memory) => rows.sort_by_key(|row| Reverse(row.memory_bytes)),
    }
}

fn sort_pods(rows: &mut [PodTop], sort: Option<SortBy>) {
    match sort {
        None => {}
        Some(SortBy::Cpu) => rows.sort_by(|a, b| b.cpu_cores.total_cmp(&a.cpu_cores)),
        Some(SortBy::Memory) => rows.sort_by_key(|row| Reverse(row.memory_bytes)),
    }
}

/// Millicores, as kubectl shows CPU.
fn millicores(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as u64)
}

fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

fn node_table(rows: &[NodeTop]) -> Table {
    let mut table = Table::new(&["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]);
    for row in rows {
        table.row([
            row.name.clone(),
            millicores(row.cpu_cores),
            format!("{:.0}%", row.cpu_percent),
            mebibytes(row.memory_bytes),
            format!("{:.0}%", row.memory_percent),
        ]);
    }
    table
}

fn pod_table(rows: &[PodTop]) -> Table {
    let mut table = Table::new(&["NAME", "CPU(cores)", "MEMORY(bytes)"]);
    for row in rows {
        table.row([
            row.name.clone(),
            millicores(row.cpu_cores),
            mebibytes(row.memory_bytes),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use wharf_api::{ContainerMetrics, Resources};

    use super::*;

    fn pod(name: &str, cpu_millicores: u64, memory_bytes: u64) -> PodMetrics {
        PodMetrics {
            project: "shop".into(),
            name: name.into(),
            timestamp: 0,
            window_ms: 10_000,
            containers: vec![ContainerMetrics {
                name: "web".into(),
                cpu_millicores,
                memory_bytes,
            }],
        }
    }

    #[test]
    fn shows_millicores_and_mebibytes_as_kubectl_top() {
        let mut two = pod("web-1", 250, 10 << 20);
        two.containers.push(ContainerMetrics {
            name: "sidecar".into(),
            cpu_millicores: 5,
            memory_bytes: (2 << 20) + 1,
        });
        let text = pod_table(&[pod_top(&two)]).render();
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["web-1", "255m", "12Mi"], "{text}");
    }

    #[test]
    fn pods_sort_by_cpu_or_memory_highest_first() {
        let pods = [pod("a", 100, 300), pod("b", 900, 100), pod("c", 500, 200)];
        let mut rows: Vec<PodTop> = pods.iter().map(pod_top).collect();
        sort_pods(&mut rows, Some(SortBy::Cpu));
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
        sort_pods(&mut rows, Some(SortBy::Memory));
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"]);
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["cpuCores"], 0.1);
        assert_eq!(json["memoryBytes"], 300);
    }

    fn node(name: &str, busy: Option<f32>, free: u64) -> Node {
        let mut node = Node::new(
            name,
            Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                pods: 110,
            },
        );
        node.status.cpu_load = busy;
        node.status.memory_available_bytes = Some(free);
        node
    }

    #[test]
    fn nodes_show_cores_and_memory_in_use_from_their_load_summary() {
        let nodes = [
            node("n1", Some(0.25), 6 << 30),
            node("n2", Some(0.5), 7 << 30),
            node("silent", None, 0),
        ];
        let mut rows: Vec<NodeTop> = nodes.iter().filter_map(node_top).collect();
        assert_eq!(rows.len(), 2, "a node without a report has no figures");
        sort_nodes(&mut rows, Some(SortBy::Cpu));
        assert_eq!(rows[0].name, "n2");
        assert_eq!(rows[0].cpu_cores, 2.0);
        assert_eq!(rows[1].memory_bytes, 2 << 30);
        assert_eq!(rows[1].memory_percent, 25.0);
        sort_nodes(&mut rows, Some(SortBy::Memory));
        assert_eq!(rows[0].name, "n1");
        let text = node_table(&rows).render();
        let cells: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(cells, ["n1", "1000m", "25%", "2048Mi", "25%"], "{text}");
    }
}
