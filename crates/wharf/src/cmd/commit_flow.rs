//! The component flow's commands, hooked under `wharf commit`:
//! `deployment NAME [--tag YYYYMMDD]` (commit every pod, take over with
//! pinned deployments on the same IPs, following the progress), `list
//! [--ip IP]` (the index `/commiter/ips/`), `specs NAME` (the pinned
//! deployments' specs, read back from the registry) and `rollback NAME`.
//! `wharf commit POD` itself is `cmd/commit.rs`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use wharf_api::component_commit::{
    CommitIndexEntry, CommitPhase, CommitSpecArtifact, ComponentCommit, ComponentCommitRequest,
};

use super::ServerOption;
use super::objects::{Kind, ProjectOption};
use crate::client::ApiClient;
use crate::output::{OutputOption, Table};
use crate::units;

/// The component flow's subcommands of `wharf commit`.
#[derive(Subcommand, Debug)]
pub enum CommitFlowCommand {
    /// Commit every pod of a deployment to `PROJECT/<project>-<deployment>-<ip>:<tag>`
    /// and hand each address over to a pinned one-pod deployment, one at a time.
    Deployment(StartArgs),
    /// The index of committed images and their addresses.
    List(ListArgs),
    /// The pinned deployments' specs, as stored in the registry.
    Specs(TargetArgs),
    /// Return the component to its original deployment, on the same addresses.
    Rollback(RollbackArgs),
}

/// `wharf commit deployment NAME`.
#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The images' tag [default: today's UTC date, YYYYMMDD].
    #[arg(long)]
    tag: Option<String>,
    /// The container committed in each pod [default: the first].
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

/// `wharf commit rollback NAME`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    wait: WaitArgs,
}

/// The deployment a command acts on.
#[derive(Args, Debug)]
pub struct TargetArgs {
    #[command(flatten)]
    server: ServerOption,
    /// The deployment (the component).
    name: String,
    #[command(flatten)]
    project: ProjectOption,
}

/// Following the flow.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Return once the server accepted it, without following the progress.
    #[arg(long)]
    detach: bool,
    /// Give up following after this long (e.g. 10m); 0 follows until it ends.
    #[arg(long, default_value = "0", value_parser = units::parse_duration)]
    timeout: Duration,
}

/// `wharf commit list [--ip IP]`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerOption,
    /// Only the images committed from this address.
    #[arg(long)]
    ip: Option<String>,
    #[command(flatten)]
    output: OutputOption,
}

/// Runs a component-flow command.
pub async fn run(command: CommitFlowCommand) -> Result<()> {
    match command {
        CommitFlowCommand::Deployment(args) => start(args).await,
        CommitFlowCommand::List(args) => list(args).await,
        CommitFlowCommand::Specs(target) => specs(target).await,
        CommitFlowCommand::Rollback(args) => rollback(args).await,
    }
}

/// The client, the project and the API path of `NAME`'s commit.
struct Opened {
    client: ApiClient,
    project: String,
    name: String,
}

impl TargetArgs {
    fn open(&self) -> Result<Opened> {
        let client = self.server.client()?;
        let project = self
            .project
            .for_kind(Kind::Deployment, client.default_project())?;
        Ok(Opened {
            client,
            project,
            name: self.name.clone(),
        })
    }
}

impl Opened {
    /// `projects/P/deployments/NAME/commit[/tail]`, owned so the client
    /// may be borrowed mutably while it is used.
    fn path(&self, tail: Option<&str>) -> Vec<String> {
        let mut path: Vec<String> = Kind::Deployment
            .object_path(&self.project, &self.name)
            .into_iter()
            .map(String::from)
            .collect();
        path.push("commit".into());
        path.extend(tail.map(String::from));
        path
    }

    async fn get(&mut self) -> Result<ComponentCommit> {
        let path = self.path(None);
        let answer = self
            .client
            .get(&strs(&path))
            .await
            .with_context(|| format!("reading the commit of {}/{}", self.project, self.name))?;
        Ok(serde_json::from_value(answer)?)
    }
}

fn strs(path: &[String]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

async fn start(args: StartArgs) -> Result<()> {
    let mut opened = args.target.open()?;
    let request = ComponentCommitRequest {
        tag: args.tag,
        container: args.container,
    };
    let path = opened.path(None);
    let answer = opened
        .client
        .post(&strs(&path), &serde_json::to_value(&request)?)
        .await
        .with_context(|| format!("committing deployment {}/{}", opened.project, opened.name))?;
    let commit: ComponentCommit = serde_json::from_value(answer)?;
    println!(
        "commit of deployment {}/{} accepted: {} pods, tag {}",
        opened.project,
        opened.name,
        commit.status.pods.len(),
        commit.spec.tag
    );
    follow(opened, args.wait).await
}

async fn rollback(args: RollbackArgs) -> Result<()> {
    let mut opened = args.target.open()?;
    let path = opened.path(Some("rollback"));
    opened
        .client
        .post(&strs(&path), &Value::Null)
        .await
        .with_context(|| {
            format!(
                "rolling back the commit of {}/{}",
                opened.project, opened.name
            )
        })?;
    println!(
        "rollback of deployment {}/{} accepted",
        opened.project, opened.name
    );
    follow(opened, args.wait).await
}

/// Prints the flow's progress as it changes until it ends; an error when
/// it failed, naming the step.
async fn follow(mut opened: Opened, wait: WaitArgs) -> Result<()> {
    if wait.detach {
        return Ok(());
    }
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let commit = opened.get().await?;
        let progress = render_progress(&commit);
        if progress != said {
            print!("{progress}");
            said = progress;
        }
        if !commit.status.phase.is_active() {
            return outcome(&commit);
        }
        if !wait.timeout.is_zero() && started.elapsed() >= wait.timeout {
            bail!(
                "stopped following the commit of {}/{} (phase {:?}); see it again with wharf commit deployment --detach or the API",
                opened.project,
                opened.name,
                commit.status.phase
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A failed flow as an error naming its step, pod and message.
fn outcome(commit: &ComponentCommit) -> Result<()> {
    match (&commit.status.phase, &commit.status.failure) {
        (CommitPhase::Failed, Some(failure)) => bail!(
            "the commit of deployment {} stopped at step {}{}: {}",
            commit.spec.deployment,
            failure.step,
            failure
                .pod
                .as_ref()
                .map(|p| format!(" (pod {p})"))
                .unwrap_or_default(),
            failure.message
        ),
        (CommitPhase::Failed, None) => bail!("the commit of {} failed", commit.spec.deployment),
        _ => Ok(()),
    }
}

/// The flow as a table, one row per pod, under its phase.
pub fn render_progress(commit: &ComponentCommit) -> String {
    let mut table = Table::new(&["POD", "IP", "IMAGE", "COMMITTED", "SPEC", "SERVED BY"]);
    for record in &commit.status.pods {
        let short = |digest: &Option<String>| {
            digest
                .as_deref()
                .map(|d| d.trim_start_matches("sha256:").chars().take(12).collect())
                .unwrap_or_else(|| "-".to_string())
        };
        let served_by = match record.handed_over {
            true => record.pinned_deployment.clone(),
            false => commit.spec.deployment.clone(),
        };
        table.row([
            record.pod.clone(),
            record.ip.clone(),
            record.image.clone(),
            short(&record.digest),
            short(&record.spec_artifact),
            served_by,
        ]);
    }
    let mut text = format!(
        "phase {:?}{}\n",
        commit.status.phase,
        match commit.status.message.as_str() {
            "" => String::new(),
            message => format!(": {message}"),
        }
    );
    text.push_str(&table.render());
    text
}

async fn list(args: ListArgs) -> Result<()> {
    let mut client = args.server.client()?;
    let query: Vec<(&str, String)> = args.ip.iter().map(|ip| ("ip", ip.clone())).collect();
    let answer = client
        .get_with_query(&["commits", "ips"], &query)
        .await
        .context("reading the commit index")?;
    crate::output::print(
        args.output.format,
        answer,
        |entries: Vec<CommitIndexEntry>| render_index(&entries),
    )
}

/// The index as a table: image and address.
pub fn render_index(entries: &[CommitIndexEntry]) -> String {
    let mut table = Table::new(&["IMAGE", "IP"]);
    for entry in entries {
        table.row([entry.image.clone(), entry.ip.clone()]);
    }
    table.render()
}

async fn specs(target: TargetArgs) -> Result<()> {
    let mut opened = target.open()?;
    let path = opened.path(Some("specs"));
    let answer = opened
        .client
        .get(&strs(&path))
        .await
        .with_context(|| format!("reading the specs of {}/{}", opened.project, opened.name))?;
    let specs: Vec<CommitSpecArtifact> = serde_json::from_value(answer)?;
    if specs.is_empty() {
        bail!(
            "deployment {}/{} has no stored specs yet",
            opened.project,
            opened.name
        );
    }
    print!("{}", render_specs(&specs));
    Ok(())
}

/// The specs as one YAML stream (`wharf apply -f` takes it), each document
/// headed by where it is stored.
pub fn render_specs(specs: &[CommitSpecArtifact]) -> String {
    let mut text = String::new();
    for spec in specs {
        text.push_str(&format!(
            "---\n# {} ({}), pins {}, attached to {}\n{}",
            spec.reference, spec.digest, spec.ip, spec.image, spec.yaml
        ));
        if !spec.yaml.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use wharf_api::component_commit::{
        CommitFailureRecord, ComponentCommitSpec, ComponentCommitStatus, PodCommitRecord,
    };

    /// How the lead hooks the flow: `wharf commit <flow command>`.
    #[derive(Parser)]
    struct Commit {
        #[command(subcommand)]
        command: CommitFlowCommand,
    }

    fn commit(phase: CommitPhase) -> ComponentCommit {
        ComponentCommit {
            spec: ComponentCommitSpec {
                deployment: "web".into(),
                tag: "20261207".into(),
                container: "main".into(),
                requested_by: "dev".into(),
                rollback: false,
            },
            status: ComponentCommitStatus {
                phase,
                pods: vec![PodCommitRecord {
                    pod: "web-0123456789-bcdfg".into(),
                    ip: "10.92.0.5".into(),
                    image: "shop/shop-web-10.92.0.5:20261207".into(),
                    pinned_deployment: "web-10-92-0-5".into(),
                    digest: Some(format!("sha256:{}", "ab".repeat(32))),
                    handed_over: true,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn commands_parse_as_documented() {
        let parsed = Commit::try_parse_from([
            "commit",
            "deployment",
            "web",
            "--tag",
            "20261207",
            "-p",
            "shop",
            "--detach",
        ])
        .unwrap();
        let CommitFlowCommand::Deployment(args) = parsed.command else {
            panic!("a deployment commit");
        };
        assert_eq!(args.tag.as_deref(), Some("20261207"));
        assert_eq!(args.target.name, "web");
        assert_eq!(args.target.project.project.as_deref(), Some("shop"));
        assert!(args.wait.detach);
        let parsed = Commit::try_parse_from(["commit", "list", "--ip", "10.92.0.5"]).unwrap();
        assert!(matches!(
            parsed.command,
            CommitFlowCommand::List(ListArgs { ip: Some(_), .. })
        ));
        assert!(
            Commit::try_parse_from(["commit", "rollback"]).is_err(),
            "NAME is required"
        );
        assert!(Commit::try_parse_from(["commit", "specs", "web"]).is_ok());
    }

    #[test]
    fn progress_shows_each_pod_and_who_serves_its_address() {
        let text = render_progress(&commit(CommitPhase::TakingOver));
        assert!(text.starts_with("phase TakingOver\n"), "{text}");
        let row = text.lines().nth(2).unwrap();
        for cell in [
            "10.92.0.5",
            "shop/shop-web-10.92.0.5:20261207",
            "abababababab",
            "web-10-92-0-5",
        ] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
    }

    #[test]
    fn a_failed_flow_is_an_error_naming_the_step_and_the_pod() {
        let mut failed = commit(CommitPhase::Failed);
        failed.status.failure = Some(CommitFailureRecord {
            step: "commit".into(),
            pod: Some("web-0123456789-bcdfg".into()),
            message: "the registry refused the push".into(),
        });
        let err = outcome(&failed).unwrap_err().to_string();
        assert_eq!(
            err,
            "the commit of deployment web stopped at step commit (pod web-0123456789-bcdfg): the registry refused the push"
        );
        assert!(outcome(&commit(CommitPhase::Done)).is_ok());
    }

    #[test]
    fn specs_print_as_one_yaml_stream_and_the_index_as_a_table() {
        let specs = [CommitSpecArtifact {
            image: "shop/shop-web-10.92.0.5:20261207".into(),
            ip: "10.92.0.5".into(),
            reference: "shop/shop-web-10.92.0.5:20261207.deployment".into(),
            digest: "sha256:00".into(),
            yaml: "kind: Deployment".into(),
        }];
        let text = render_specs(&specs);
        assert_eq!(
            text,
            "---\n# shop/shop-web-10.92.0.5:20261207.deployment (sha256:00), pins 10.92.0.5, attached to shop/shop-web-10.92.0.5:20261207\nkind: Deployment\n"
        );
        let index = render_index(&[CommitIndexEntry {
            image: "shop/shop-web-10.92.0.5:20261207".into(),
            ip: "10.92.0.5".into(),
        }]);
        assert!(
            index.lines().nth(1).unwrap().ends_with("10.92.0.5"),
            "{index}"
        );
    }
}
