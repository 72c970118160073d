//! `wharf logs POD [-c CONTAINER] [-f] [--tail N] [--previous]`: a
//! container's output, streamed by the server from the agent of the pod's
//! node; with `--previous`, only what its run before the last restart wrote.
//! `-l SELECTOR` instead of a pod name prints the logs of every pod it
//! selects (followed side by side with `-f`), as `kubectl logs -l` does.

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Args;

use super::objects::{Kind, ProjectOption, names_matching};
use crate::client::ApiClient;

/// Options of `wharf logs`.
#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    server: super::ServerOption,
    #[command(flatten)]
    project: ProjectOption,
    /// The pod (or -l to select pods by label).
    #[arg(required_unless_present = "selector", conflicts_with = "selector")]
    pod: Option<String>,
    /// The pods whose labels match, e.g. `app=web`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Start each line with `[pod/NAME/CONTAINER]` (the default with -l).
    #[arg(long)]
    prefix: bool,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep printing what the container writes.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// The output of the container's previous run (before its last restart).
    #[arg(long, conflicts_with = "follow")]
    previous: bool,
}

/// Prints the log (or the logs of the selected pods) as it arrives.
pub async fn run(args: LogsArgs) -> Result<()> {
    let mut client = args.server.client()?;
    let project = args.project.for_kind(Kind::Pod, client.default_project())?;
    let pods = match (&args.pod, &args.selector) {
        (Some(pod), _) => vec![pod.clone()],
        (None, selector) => {
            let selector = selector.as_deref().unwrap_or_default();
            names_matching(&mut client, Kind::Pod, &project, selector).await?
        }
    };
    let prefix = args.prefix || args.selector.is_some();
    let query = args.query();
    let out = Arc::new(Mutex::new(()));
    if !args.follow {
        for pod in &pods {
            print_log(
                &mut client,
                &project,
                pod,
                &query,
                prefix.then_some(&args.container),
                &out,
            )
            .await?;
        }
        return Ok(());
    }
    // Followed logs go on together: one stream per pod, whole lines each.
    let mut streams = tokio::task::JoinSet::new();
    for pod in pods {
        let mut client = args.server.client()?;
        let (project, query, out) = (project.clone(), query.clone(), out.clone());
        let container = args.container.clone();
        streams.spawn(async move {
            print_log(
                &mut client,
                &project,
                &pod,
                &query,
                prefix.then_some(&container),
                &out,
            )
            .await
        });
    }
    while let Some(done) = streams.join_next().await {
        done.context("a log stream task failed")??;
    }
    Ok(())
}

impl LogsArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![("follow", self.follow.to_string())];
        if let Some(container) = &self.container {
            query.push(("container", container.clone()));
        }
        if self.previous {
            query.push(("previous", "true".into()));
        }
        if let Some(tail) = self.tail {
            query.push(("tailLines", tail.to_string()));
        }
        query
    }
}

/// Streams one pod's log to standard output; with `prefix` (the container
/// asked for, if any) each line starts with `[pod/NAME/CONTAINER] `.
async fn print_log(
    client: &mut ApiClient,
    project: &str,
    pod: &str,
    query: &[(&'static str, String)],
    prefix: Option<&Option<String>>,
    out: &Mutex<()>,
) -> Result<()> {
    let mut response = client
        .get_stream(&["projects", project, "pods", pod, "log"], query)
        .await
        .with_context(|| format!("reading the log of pod {project}/{pod}"))?;
    let label = prefix.map(|container| match container {
        Some(container) => format!("[pod/{pod}/{container}] "),
        None => format!("[pod/{pod}] "),
    });
    let mut partial: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.context("the log stream broke off")? {
        let Some(label) = &label else {
            // Chunks are small and arrive slowly: plain blocking writes are fine.
            let _held = out.lock().unwrap_or_else(|p| p.into_inner());
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&chunk)?;
            stdout.flush()?;
            continue;
        };
        partial.extend_from_slice(&chunk);
        let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let lines: Vec<u8> = partial.drain(..=end).collect();
        write_prefixed(out, label, &lines)?;
    }
    if let Some(label) = &label
        && !partial.is_empty()
    {
        partial.push(b'\n');
        write_prefixed(out, label, &partial)?;
    }
    Ok(())
}

/// Writes whole `lines`, each after `label`, without interleaving with
/// other streams.
fn write_prefixed(out: &Mutex<()>, label: &str, lines: &[u8]) -> Result<()> {
    let _held = out.lock().unwrap_or_else(|p| p.into_inner());
    let mut stdout = std::io::stdout().lock();
    for line in lines.split_inclusive(|b| *b == b'\n') {
        stdout.write_all(label.as_bytes())?;
        stdout.write_all(line)?;
    }
    stdout.flush()?;
    Ok(())
}
