//! `wharf commit POD [-c CONTAINER] [IMAGE[:TAG]]`: a running container's
//! changes pushed as a new image on top of the one it runs, as `docker
//! commit` does (docs/commit.md). The server checks, the agent of the
//! pod's node pauses the container, reads its changes, resumes it and
//! pushes; progress goes to standard error, the result to standard output.
//!
//! Left out, IMAGE is `<project>/<pod>:<YYYYMMDD-HHMMSS>` (UTC, the time
//! of the command). `wharf commit` also groups the component flow's
//! subcommands; a bare `wharf commit NAME` commits pod NAME.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use wharf_api::commit::{CommitCompression, CommitProgress, CommitRequest, CommitResult};

use super::commit_flow::CommitFlowCommand;
use super::objects::{Kind, ProjectOption};
use crate::output::{OutputFormat, OutputOption, human_size};

/// Options of `wharf commit`: a pod, or a subcommand.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CommitArgs {
    #[command(subcommand)]
    command: Option<CommitFlowCommand>,
    #[command(flatten)]
    pod: PodCommitArgs,
}

/// The new layer's compression.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Compression {
    Gzip,
    Zstd,
}

/// Options of `wharf commit POD`.
#[derive(Args)]
struct PodCommitArgs {
    #[command(flatten)]
    server: super::ServerOption,
    #[command(flatten)]
    project: ProjectOption,
    /// The pod.
    #[arg(required = true)]
    pod: Option<String>,
    /// The image to push, PROJECT/REPOSITORY[:TAG] on the server's
    /// registry [default: PROJECT/POD:YYYYMMDD-HHMMSS].
    image: Option<String>,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Freeze the container while its changes are read (--pause=false
    /// reads them while it runs: faster for it, but a file being written
    /// may be caught half-way).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pause: bool,
    /// The author recorded in the image's history.
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// The comment recorded in the image's history.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// A Dockerfile instruction applied to the image's config: CMD,
    /// ENTRYPOINT, ENV, WORKDIR, EXPOSE, LABEL or USER (repeatable).
    #[arg(long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// The new layer's compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Compression,
    #[command(flatten)]
    output: OutputOption,
}

/// Runs `wharf commit`.
pub async fn run(args: CommitArgs) -> Result<()> {
    match args.command {
        Some(command) => super::commit_flow::run(command).await,
        None => commit_pod(args.pod).await,
    }
}

/// `YYYYMMDD-HHMMSS` of the unix time `secs` (UTC): the default tag.
fn default_tag(secs: u64) -> String {
    // 2026-12-07T08:31:35Z -> 20261207-083135
    let text = wharf_api::rfc3339(secs * 1000);
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}", &digits[..8], &digits[8..14])
}

async fn commit_pod(args: PodCommitArgs) -> Result<()> {
    let pod = args.pod.context("name the pod to commit")?;
    let mut client = args.server.client()?;
    let project = args.project.for_kind(Kind::Pod, client.default_project())?;
    let image = args
        .image
        .clone()
        .unwrap_or_else(|| format!("{project}/{pod}:{}", default_tag(crate::client::unix_now())));
    let request = CommitRequest {
        container: args.container.clone(),
        image,
        pause: args.pause,
        compression: match args.compression {
            Compression::Gzip => CommitCompression::Gzip,
            Compression::Zstd => CommitCompression::Zstd,
        },
        author: args.author.clone(),
        message: args.message.clone(),
        changes: args.changes.clone(),
        check_only: false,
    };
    let body = serde_json::to_value(&request)?;
    let started = Instant::now();
    let mut lines = client
        .post_lines(&["projects", &project, "pods", &pod, "commit"], &body)
        .await
        .with_context(|| format!("commit pod {project}/{pod}"))?;
    let mut stderr = std::io::stderr();
    while let Some(line) = lines.next().await? {
        let progress: CommitProgress = serde_json::from_value(line)
            .context("the server's commit progress is not what wharf expects")?;
        match progress {
            CommitProgress::Done(result) => {
                return print_result(&result, args.output.format, started);
            }
            CommitProgress::Failed { step, message } => {
                bail!("commit of pod {project}/{pod} failed at {step}: {message}")
            }
            other => {
                let _ = writeln!(stderr, "{}", describe(&other));
            }
        }
    }
    bail!("the server's answer ended before the commit of pod {project}/{pod} did")
}

/// One progress line for people.
fn describe(progress: &CommitProgress) -> String {
    let part = |done: u64, total: u64| {
        let percent = (done as f64 * 100.0 / total.max(1) as f64).min(100.0);
        format!(
            "{} of {} ({percent:.0}%)",
            human_size(done),
            human_size(total)
        )
    };
    match progress {
        CommitProgress::Measured { entries, bytes, .. } => {
            format!("changes: {entries} entries, {}", human_size(*bytes))
        }
        CommitProgress::Paused => "paused".into(),
        CommitProgress::Resumed { paused_ms } => format!("resumed after {paused_ms} ms"),
        CommitProgress::Compressing {
            done_bytes,
            total_bytes,
        } => format!("compressing: {}", part(*done_bytes, *total_bytes)),
        CommitProgress::Pushing {
            done_bytes,
            total_bytes,
        } => format!("pushing: {}", part(*done_bytes, *total_bytes)),
        CommitProgress::Done(result) => format!("done: {}", result.image),
        CommitProgress::Failed { step, message } => format!("failed at {step}: {message}"),
    }
}

fn print_result(result: &CommitResult, format: OutputFormat, started: Instant) -> Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(result)? + "\n",
        OutputFormat::Yaml => serde_norway::to_string(result)?,
        OutputFormat::Table => format!(
            "image:   {}\ndigest:  {}\nlayer:   {} ({})\nreused:  {} base layers\npaused:  {} ms\ntotal:   {} ms (here {} ms)\n",
            result.image,
            result.digest,
            result.layer_digest,
            human_size(result.layer_bytes),
            result.reused_layers,
            result.paused_ms,
            result.total_ms,
            started.elapsed().as_millis(),
        ),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CommitArgs,
    }

    #[test]
    fn the_component_flow_hooks_under_wharf_commit_next_to_the_pod_arguments() {
        let pod = Cli::try_parse_from(["commit", "web-abc", "shop/snap:1"]).unwrap();
        assert_eq!(pod.args.pod.pod.as_deref(), Some("web-abc"));
        assert!(pod.args.command.is_none());
        let flow = Cli::try_parse_from(["commit", "deployment", "web"]).unwrap();
        assert!(matches!(
            flow.args.command,
            Some(CommitFlowCommand::Deployment(_))
        ));
        assert!(
            Cli::try_parse_from(["commit"]).is_err(),
            "POD or a subcommand"
        );
    }

    #[test]
    fn the_default_tag_is_the_utc_time() {
        // 2000-02-29T01:02:03Z
        assert_eq!(default_tag(951_786_123), "20000229-010203");
    }

    #[test]
    fn pause_image_and_changes_parse() {
        let cli = Cli::try_parse_from([
            "commit",
            "web-1",
            "shop/snap:1",
            "--pause=false",
            "--change",
            "ENV A=1",
            "--change",
            "CMD [\"sh\"]",
            "--compression",
            "zstd",
            "-c",
            "app",
        ])
        .unwrap();
        let pod = cli.args.pod;
        assert_eq!(pod.pod.as_deref(), Some("web-1"));
        assert_eq!(pod.image.as_deref(), Some("shop/snap:1"));
        assert!(!pod.pause);
        assert_eq!(pod.changes, ["ENV A=1", "CMD [\"sh\"]"]);
        assert!(matches!(pod.compression, Compression::Zstd));
        let cli = Cli::try_parse_from(["commit", "web-1", "--pause"]).unwrap();
        assert!(cli.args.pod.pause && cli.args.pod.image.is_none());
        let cli = Cli::try_parse_from(["commit", "web-1"]).unwrap();
        assert!(cli.args.pod.pause);
        assert!(Cli::try_parse_from(["commit"]).is_err());
    }
}
