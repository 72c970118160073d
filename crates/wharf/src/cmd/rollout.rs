//! `wharf rollout status|history|undo|pause|resume|restart` and
//! `wharf set image`: a deployment's rollout, as kubectl drives it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use wharf_api::{
    ANNOTATION_CHANGE_CAUSE, ANNOTATION_RESTARTED_AT, Deployment, DeploymentRevision, rfc3339,
};

use super::ServerOption;
use super::objects::{Kind, ProjectOption};
use crate::client::{ApiClient, unix_now};
use crate::output::Table;
use crate::units;

/// Options of `wharf rollout`.
#[derive(Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

/// The deployment a rollout command acts on: `deployment/NAME`, or
/// `deployment NAME`.
#[derive(Args)]
struct Target {
    #[command(flatten)]
    server: ServerOption,
    /// `deployment/NAME`, or `deployment` followed by the name.
    target: String,
    /// The name, when the target is only a kind.
    name: Option<String>,
    #[command(flatten)]
    project: ProjectOption,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Wait for the rollout to finish, printing its progress; fails if it
    /// exceeds its progress deadline.
    Status {
        #[command(flatten)]
        target: Target,
        /// Give up after this long (e.g. 90s, 5m); 0 waits for ever.
        #[arg(long, default_value = "0", value_parser = units::parse_duration)]
        timeout: Duration,
    },
    /// List the revisions, or show one.
    History {
        #[command(flatten)]
        target: Target,
        /// Show the template of this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Go back to the previous revision, or to --to-revision.
    Undo {
        #[command(flatten)]
        target: Target,
        /// The revision to go back to; 0 is the previous one.
        #[arg(long, default_value_t = 0)]
        to_revision: u64,
    },
    /// Stop rolling out template changes until resumed.
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Roll out template changes again.
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Replace every pod, as a rollout does.
    Restart {
        #[command(flatten)]
        target: Target,
    },
}

/// Options of `wharf set`.
#[derive(Args)]
pub struct SetArgs {
    #[command(subcommand)]
    command: SetCommand,
}

#[derive(Subcommand)]
enum SetCommand {
    /// Change the image of containers: `set image deployment/NAME CONTAINER=IMAGE ...`
    /// (`*=IMAGE` for all of them).
    Image {
        #[command(flatten)]
        server: ServerOption,
        /// `deployment/NAME`.
        target: String,
        /// `CONTAINER=IMAGE` pairs.
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        project: ProjectOption,
    },
}

/// A deployment named on the command line, with the client to reach it.
struct Opened {
    client: ApiClient,
    project: String,
    name: String,
}

impl Opened {
    fn open(
        server: &ServerOption,
        target: &str,
        name: Option<&str>,
        project: &ProjectOption,
    ) -> Result<Opened> {
        let (kind, name) = match (target.split_once('/'), name) {
            (Some((kind, name)), None) => (kind, name),
            (None, Some(name)) => (target, name),
            _ => bail!("name the deployment as deployment/NAME or deployment NAME"),
        };
        if Kind::parse(kind).map_err(|e| anyhow!(e))? != Kind::Deployment {
            bail!("only deployments have rollouts, not {kind}");
        }
        let client = server.client()?;
        let project = project.for_kind(Kind::Deployment, client.default_project())?;
        Ok(Opened {
            client,
            project,
            name: name.to_string(),
        })
    }

    async fn get(&mut self) -> Result<Deployment> {
        let path = Kind::Deployment.object_path(&self.project, &self.name);
        let answer = self.client.get(&path).await;
        let answer = answer.with_context(|| {
            format!(
                "reading deployment {} in project {}",
                self.name, self.project
            )
        })?;
        Ok(serde_json::from_value(answer)?)
    }

    /// Reads, changes and writes back the deployment (its resourceVersion
    /// guards against a concurrent change).
    async fn change(&mut self, what: &str, change: impl FnOnce(&mut Deployment)) -> Result<()> {
        let mut deployment = self.get().await?;
        change(&mut deployment);
        let path = Kind::Deployment.object_path(&self.project, &self.name);
        self.client
            .put(&path, &serde_json::to_value(&deployment)?)
            .await
            .with_context(|| {
                format!(
                    "{what} deployment {} in project {}",
                    self.name, self.project
                )
            })?;
        Ok(())
    }
}

impl Target {
    fn open(&self) -> Result<Opened> {
        Opened::open(
            &self.server,
            &self.target,
            self.name.as_deref(),
            &self.project,
        )
    }
}

/// Runs a rollout command.
pub async fn run(args: RolloutArgs) -> Result<()> {
    match args.command {
        RolloutCommand::Status { target, timeout } => status(target.open()?, timeout).await,
        RolloutCommand::History { target, revision } => history(target.open()?, revision).await,
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let mut opened = target.open()?;
            let path = sub_path(&opened.project, &opened.name, "rollback");
            let body = json!({ "toRevision": to_revision });
            let answer = opened.client.post(&path, &body).await;
            answer.with_context(|| format!("rolling back deployment {}", opened.name))?;
            println!("deployment.apps/{} rolled back", opened.name);
            Ok(())
        }
        RolloutCommand::Pause { target } => {
            let mut opened = target.open()?;
            opened.change("pausing", |d| d.spec.paused = true).await?;
            println!("deployment.apps/{} paused", opened.name);
            Ok(())
        }
        RolloutCommand::Resume { target } => {
            let mut opened = target.open()?;
            opened.change("resuming", |d| d.spec.paused = false).await?;
            println!("deployment.apps/{} resumed", opened.name);
            Ok(())
        }
        RolloutCommand::Restart { target } => {
            let mut opened = target.open()?;
            let now = rfc3339(unix_now() * 1000);
            opened
                .change("restarting", |d| {
                    let annotations = &mut d.spec.template.metadata.annotations;
                    annotations.insert(ANNOTATION_RESTARTED_AT.into(), now);
                })
                .await?;
            println!("deployment.apps/{} restarted", opened.name);
            Ok(())
        }
    }
}

/// Runs a set command.
pub async fn run_set(args: SetArgs) -> Result<()> {
    let SetCommand::Image {
        server,
        target,
        images,
        project,
    } = args.command;
    let mut opened = Opened::open(&server, &target, None, &project)?;
    let pairs: Vec<(String, String)> = images
        .iter()
        .map(|pair| {
            let (container, image) = pair
                .split_once('=')
                .filter(|(c, i)| !c.is_empty() && !i.is_empty())
                .ok_or_else(|| anyhow!("{pair:?} is not CONTAINER=IMAGE"))?;
            Ok((container.to_string(), image.to_string()))
        })
        .collect::<Result<_>>()?;
    let cause = std::iter::once("wharf".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let mut missing = None;
    opened
        .change("updating the image of", |d| {
            let containers = &mut d.spec.template.spec.containers;
            for (name, image) in &pairs {
                let mut found = false;
                for c in containers
                    .iter_mut()
                    .filter(|c| name == "*" || &c.name == name)
                {
                    c.image = image.clone();
                    found = true;
                }
                if !found {
                    missing = Some(name.clone());
                }
            }
            d.metadata
                .annotations
                .insert(ANNOTATION_CHANGE_CAUSE.into(), cause);
        })
        .await
        .and_then(|()| match &missing {
            Some(name) => Err(anyhow!("deployment has no container {name}")),
            None => Ok(()),
        })?;
    println!("deployment.apps/{} image updated", opened.name);
    Ok(())
}

/// What `rollout status` says of a deployment, as kubectl words it: the
/// message, and whether it is done. An error when the deadline passed.
fn rollout_state(d: &Deployment) -> Result<(String, bool)> {
    let name = &d.metadata.name;
    let status = &d.status;
    if d.metadata.generation > status.observed_generation {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let progressing = status.conditions.iter().find(|c| c.kind == "Progressing");
    if progressing.is_some_and(|c| c.reason == wharf_control::PROGRESS_DEADLINE_EXCEEDED) {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let wanted = d.spec.replicas;
    let message = if status.updated_replicas < wanted {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} out of {wanted} new replicas have been updated...",
            status.updated_replicas
        )
    } else if status.replicas > status.updated_replicas {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            status.replicas - status.updated_replicas
        )
    } else if status.available_replicas < status.updated_replicas {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
            status.available_replicas, status.updated_replicas
        )
    } else {
        return Ok((format!("deployment {name:?} successfully rolled out"), true));
    };
    Ok((message, false))
}

async fn status(mut opened: Opened, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let deployment = opened.get().await?;
        let (message, done) = rollout_state(&deployment)?;
        if message != said {
            println!("{message}");
            said = message;
        }
        if done {
            return Ok(());
        }
        if !timeout.is_zero() && started.elapsed() >= timeout {
            bail!(
                "timed out waiting for the rollout of deployment {:?}",
                opened.name
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn history(mut opened: Opened, revision: Option<u64>) -> Result<()> {
    let path = sub_path(&opened.project, &opened.name, "revisions");
    let answer = opened.client.get(&path).await;
    let mut answer: Value =
        answer.with_context(|| format!("reading the history of deployment {}", opened.name))?;
    let revisions: Vec<DeploymentRevision> = serde_json::from_value(answer["items"].take())?;
    let Some(number) = revision else {
        println!("deployment.apps/{}", opened.name);
        let mut table = Table::new(&["REVISION", "CHANGE-CAUSE"]);
        for r in &revisions {
            table.row([
                r.revision.to_string(),
                r.change_cause.clone().unwrap_or_else(|| "<none>".into()),
            ]);
        }
        print!("{}", table.render());
        return Ok(());
    };
    let Some(r) = revisions.iter().find(|r| r.revision == number) else {
        bail!("deployment {} has no revision {number}", opened.name);
    };
    println!("deployment.apps/{} with revision #{number}", opened.name);
    if let Some(cause) = &r.change_cause {
        println!("Change cause: {cause}");
    }
    println!("Pod Template:");
    print!("{}", serde_norway::to_string(&r.template)?);
    Ok(())
}

/// The path of a deployment's sub-resource.
fn sub_path<'a>(project: &'a str, name: &'a str, tail: &'a str) -> Vec<&'a str> {
    let mut path = Kind::Deployment.object_path(project, name);
    path.push(tail);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_follow_kubectl() {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.metadata.generation = 2;
        d.spec.replicas = 3;
        d.status.observed_generation = 1;
        assert!(
            rollout_state(&d)
                .unwrap()
                .0
                .contains("spec update to be observed")
        );
        d.status.observed_generation = 2;
        d.status.updated_replicas = 1;
        d.status.replicas = 4;
        assert!(
            rollout_state(&d)
                .unwrap()
                .0
                .contains("1 out of 3 new replicas")
        );
        d.status.updated_replicas = 3;
        assert!(
            rollout_state(&d)
                .unwrap()
                .0
                .contains("1 old replicas are pending termination")
        );
        d.status.replicas = 3;
        d.status.available_replicas = 2;
        assert!(
            rollout_state(&d)
                .unwrap()
                .0
                .contains("2 of 3 updated replicas are available")
        );
        d.status.available_replicas = 3;
        assert_eq!(
            rollout_state(&d).unwrap(),
            ("deployment \"web\" successfully rolled out".into(), true)
        );
        d.status.conditions.push(wharf_api::DeploymentCondition {
            kind: "Progressing".into(),
            status: "False".into(),
            reason: "ProgressDeadlineExceeded".into(),
            ..Default::default()
        });
        let err = rollout_state(&d).unwrap_err();
        assert!(
            err.to_string().contains("exceeded its progress deadline"),
            "{err}"
        );
    }
}
