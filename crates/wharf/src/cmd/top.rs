//! `wharf top pods [NAME]`: pods' CPU and memory as their nodes last
//! measured them, as `kubectl top pods` shows them.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use wharf_api::PodMetrics;

use super::ServerOption;
use super::objects::{Kind, ProjectOption};
use crate::output::Table;

/// Options of `wharf top`.
#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to show: pods (pod, po).
    #[arg(value_enum)]
    what: TopKind,
    /// One pod (default: every pod of the project with metrics).
    name: Option<String>,
    #[command(flatten)]
    project: ProjectOption,
}

/// What `wharf top` shows.
#[derive(Clone, Copy, ValueEnum)]
pub enum TopKind {
    /// Pods.
    #[value(alias = "pod", alias = "po")]
    Pods,
}

/// Prints the pods' CPU (millicores) and memory working set (Mi).
pub async fn run(args: TopArgs) -> Result<()> {
    let TopKind::Pods = args.what;
    let mut client = args.server.client()?;
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
    print!("{}", table(&pods).render());
    Ok(())
}

fn table(pods: &[PodMetrics]) -> Table {
    let mut table = Table::new(&["NAME", "CPU(cores)", "MEMORY(bytes)"]);
    for pod in pods {
        table.row([
            pod.name.clone(),
            format!("{}m", pod.cpu_millicores()),
            format!("{}Mi", pod.memory_bytes() / (1024 * 1024)),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use wharf_api::ContainerMetrics;

    use super::*;

    #[test]
    fn shows_millicores_and_mebibytes_as_kubectl_top() {
        let pod = PodMetrics {
            project: "shop".into(),
            name: "web-1".into(),
            timestamp: 0,
            window_ms: 10_000,
            containers: vec![
                ContainerMetrics {
                    name: "web".into(),
                    cpu_millicores: 250,
                    memory_bytes: 10 << 20,
                },
                ContainerMetrics {
                    name: "sidecar".into(),
                    cpu_millicores: 5,
                    memory_bytes: (2 << 20) + 1,
                },
            ],
        };
        let text = table(&[pod]).render();
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["web-1", "255m", "12Mi"], "{text}");
    }
}
