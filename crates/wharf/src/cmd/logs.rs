//! `wharf logs POD [-c CONTAINER] [-f] [--tail N] [--previous]`: a
//! container's output, streamed by the server from the agent of the pod's
//! node; with `--previous`, only what its run before the last restart wrote.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;

use super::objects::PodTarget;

/// Options of `wharf logs`.
#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    target: PodTarget,
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

/// Prints the log as it arrives.
pub async fn run(args: LogsArgs) -> Result<()> {
    let (mut client, project) = args.target.connect()?;
    let mut query = vec![("follow", args.follow.to_string())];
    if let Some(container) = &args.container {
        query.push(("container", container.clone()));
    }
    if args.previous {
        query.push(("previous", "true".into()));
    }
    if let Some(tail) = args.tail {
        query.push(("tailLines", tail.to_string()));
    }
    let mut response = client
        .get_stream(
            &["projects", &project, "pods", &args.target.pod, "log"],
            &query,
        )
        .await
        .with_context(|| format!("reading the log of pod {project}/{}", args.target.pod))?;
    // Chunks are small and arrive slowly: plain blocking writes are fine.
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = response.chunk().await.context("the log stream broke off")? {
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    Ok(())
}
