//! `wharf image preheat`: warm nodes' image caches before a rollout.
//! `wharf image preheat IMAGE [--pool P]` starts a job (the seed peers of
//! every IDC and pool without `--pool`), `status [NAME]` follows jobs node
//! by node, `policy create|list|delete` manages the project's rules that
//! start jobs on pushes. Starting jobs and writing policies is for the
//! project's maintainers and above (docs/p2p.md).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use wharf_api::preheat::{NodePreheatState, Preheat, PreheatPolicy, PreheatTarget};

use super::image::ImageRef;
use crate::client::{ApiClient, unix_now};
use crate::output::{self, OutputOption, Table, age, human_size};

/// `wharf image preheat`: a job for IMAGE, or a subcommand.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PreheatArgs {
    #[command(subcommand)]
    command: Option<PreheatCommand>,
    /// `[HOST/]PROJECT/REPOSITORY:TAG` or `...@DIGEST`: the image to pull
    /// into the caches.
    #[arg(required = true)]
    image: Option<String>,
    /// Warm every ready node of this pool [default: the seed peers of
    /// every IDC and pool].
    #[arg(long)]
    pool: Option<String>,
    #[command(flatten)]
    output: OutputOption,
}

/// Following jobs and managing policies.
#[derive(Subcommand)]
enum PreheatCommand {
    /// The project's preheat jobs (newest first), or one job node by node.
    Status {
        /// A job's name (`ph-...`).
        name: Option<String>,
        /// The project [default: the login's default project].
        #[arg(short = 'p', long)]
        project: Option<String>,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Rules that start a preheat when a matching tag is pushed.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Add a policy: pushes of matching repositories and tags warm nodes.
    Create {
        /// The policy's name.
        name: String,
        /// The project [default: the login's default project].
        #[arg(short = 'p', long)]
        project: Option<String>,
        /// Glob over the repository's name within the project (`web`,
        /// `team/*`, `**`).
        #[arg(long)]
        repository: String,
        /// Glob over the pushed tag (`v*`, `{1,2}.*`).
        #[arg(long)]
        tag: String,
        /// Warm every ready node of this pool [default: the seed peers].
        #[arg(long)]
        pool: Option<String>,
    },
    /// The project's policies.
    List {
        /// The project [default: the login's default project].
        #[arg(short = 'p', long)]
        project: Option<String>,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Remove a policy (the jobs it started stay).
    Delete {
        /// The policy's name.
        name: String,
        /// The project [default: the login's default project].
        #[arg(short = 'p', long)]
        project: Option<String>,
    },
}

/// Runs `wharf image preheat ...` with `client`.
pub async fn run(client: &mut ApiClient, args: PreheatArgs) -> Result<()> {
    match args.command {
        None => {
            let Some(image) = args.image else {
                bail!("name the image to preheat: wharf image preheat PROJECT/REPOSITORY:TAG");
            };
            start(client, &image, args.pool, args.output).await
        }
        Some(PreheatCommand::Status {
            name,
            project,
            output,
        }) => {
            let project = project_of(client, project)?;
            match name {
                Some(name) => {
                    let answer = client
                        .get(&["projects", &project, "preheats", &name])
                        .await
                        .with_context(|| format!("reading preheat {project}/{name}"))?;
                    output::print(output.format, answer, preheat_text)
                }
                None => {
                    let answer = client
                        .get(&["projects", &project, "preheats"])
                        .await
                        .with_context(|| format!("listing the preheats of project {project}"))?;
                    output::print(output.format, answer["items"].clone(), preheat_table)
                }
            }
        }
        Some(PreheatCommand::Policy { command }) => policy(client, command).await,
    }
}

async fn start(
    client: &mut ApiClient,
    image: &str,
    pool: Option<String>,
    output: OutputOption,
) -> Result<()> {
    let image = ImageRef::parse(image)?;
    let Some(reference) = &image.reference else {
        bail!("name the image's tag or digest: {}:TAG", image.name());
    };
    let mut body = json!({"repository": image.repository, "reference": reference});
    if let Some(pool) = &pool {
        body["pool"] = json!(pool);
    }
    let answer = client
        .post(&["projects", &image.project, "preheats"], &body)
        .await
        .with_context(|| format!("preheating {}", image.display()))?;
    output::print(output.format, answer, |preheat: Preheat| {
        let nodes: Vec<&str> = preheat
            .status
            .nodes
            .iter()
            .map(|n| n.node.as_str())
            .collect();
        let mut text = format!(
            "preheat {} started: {} to {} ({})\n",
            preheat.metadata.name,
            preheat.image(),
            preheat.spec.target,
            if nodes.is_empty() {
                "no node".to_string()
            } else {
                nodes.join(", ")
            },
        );
        if let Some(message) = &preheat.status.message {
            text.push_str(&format!("{message}\n"));
        }
        text.push_str(&format!(
            "follow it with: wharf image preheat status {} -p {}\n",
            preheat.metadata.name,
            preheat.metadata.project.as_deref().unwrap_or_default()
        ));
        text
    })
}

async fn policy(client: &mut ApiClient, command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Create {
            name,
            project,
            repository,
            tag,
            pool,
        } => {
            let project = project_of(client, project)?;
            let target = pool.map_or(PreheatTarget::Seeds, PreheatTarget::Pool);
            let policy = PreheatPolicy::new(&project, &name, &repository, &tag, target);
            // Checked here too, so a typo is named before any request.
            policy.validate()?;
            client
                .post(
                    &["projects", &project, "preheatpolicies"],
                    &serde_json::to_value(&policy)?,
                )
                .await
                .with_context(|| format!("creating preheat policy {project}/{name}"))?;
            println!(
                "preheat policy {project}/{name} created: pushes of {repository}:{tag} warm {}",
                policy.spec.target
            );
            Ok(())
        }
        PolicyCommand::List { project, output } => {
            let project = project_of(client, project)?;
            let answer = client
                .get(&["projects", &project, "preheatpolicies"])
                .await
                .with_context(|| format!("listing the preheat policies of project {project}"))?;
            output::print(output.format, answer["items"].clone(), policy_table)
        }
        PolicyCommand::Delete { name, project } => {
            let project = project_of(client, project)?;
            client
                .delete(&["projects", &project, "preheatpolicies", &name])
                .await
                .with_context(|| format!("deleting preheat policy {project}/{name}"))?;
            println!("preheat policy {project}/{name} deleted");
            Ok(())
        }
    }
}

fn project_of(client: &ApiClient, project: Option<String>) -> Result<String> {
    match project.or_else(|| client.default_project().map(str::to_string)) {
        Some(project) => Ok(project),
        None => bail!("name a project (-p PROJECT), or set a default with `wharf project use`"),
    }
}

fn policy_table(policies: Vec<PreheatPolicy>) -> String {
    let mut table = Table::new(&["NAME", "REPOSITORY", "TAG", "TARGET"]);
    for policy in policies {
        table.row([
            policy.metadata.name,
            policy.spec.repository,
            policy.spec.tag,
            policy.spec.target.to_string(),
        ]);
    }
    table.render()
}

fn done_of(preheat: &Preheat) -> String {
    let done = preheat
        .status
        .nodes
        .iter()
        .filter(|n| n.state == NodePreheatState::Done)
        .count();
    format!("{done}/{}", preheat.status.nodes.len())
}

fn image_of(preheat: &Preheat) -> String {
    let separator = if preheat.spec.reference.contains(':') {
        '@'
    } else {
        ':'
    };
    format!(
        "{}{separator}{}",
        preheat.spec.repository, preheat.spec.reference
    )
}

fn preheat_table(preheats: Vec<Preheat>) -> String {
    let now = unix_now() * 1000;
    let mut table = Table::new(&["NAME", "IMAGE", "TARGET", "PHASE", "DONE", "POLICY", "AGE"]);
    for preheat in preheats {
        table.row([
            preheat.metadata.name.clone(),
            image_of(&preheat),
            preheat.spec.target.to_string(),
            format!("{:?}", preheat.status.phase),
            done_of(&preheat),
            preheat.spec.policy.clone().unwrap_or_else(|| "-".into()),
            age(now, preheat.metadata.created_at),
        ]);
    }
    table.render()
}

/// One job: what and why, then node by node.
fn preheat_text(preheat: Preheat) -> String {
    let mut text = format!(
        "Name:     {}\nImage:    {} ({})\nTarget:   {}\nPhase:    {:?} ({} nodes done)\n",
        preheat.metadata.name,
        image_of(&preheat),
        preheat.spec.digest,
        preheat.spec.target,
        preheat.status.phase,
        done_of(&preheat),
    );
    let origin = match &preheat.spec.policy {
        Some(policy) => format!("policy {policy}, push by {}", preheat.spec.requested_by),
        None => format!("asked by {}", preheat.spec.requested_by),
    };
    text.push_str(&format!("Started:  {origin}\n"));
    if let Some(message) = &preheat.status.message {
        text.push_str(&format!("Message:  {message}\n"));
    }
    let mut table = Table::new(&["NODE", "STATE", "BYTES", "TOOK", "MESSAGE"]);
    for node in &preheat.status.nodes {
        let bytes = match node.total_bytes {
            0 => human_size(node.bytes),
            total => format!("{} of {}", human_size(node.bytes), human_size(total)),
        };
        let took = match (node.started_at, node.finished_at) {
            (Some(start), Some(end)) => {
                format!("{:.1}s", end.saturating_sub(start) as f64 / 1000.0)
            }
            (Some(start), None) => format!("{} so far", age(unix_now() * 1000, start)),
            _ => "-".into(),
        };
        table.row([
            node.node.clone(),
            format!("{:?}", node.state),
            bytes,
            took,
            node.message.clone().unwrap_or_default(),
        ]);
    }
    text.push('\n');
    text.push_str(&table.render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::preheat::{NodePreheat, PreheatPhase};

    #[test]
    fn a_job_reads_node_by_node() {
        let mut preheat = Preheat::new(
            &"shop/web".parse().unwrap(),
            "v1",
            &"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .parse()
                .unwrap(),
            PreheatTarget::Pool("core".into()),
            vec!["c1".into(), "c2".into()],
            1_000,
        );
        preheat.spec.policy = Some("releases".into());
        preheat.spec.requested_by = "ci".into();
        preheat.status.nodes[0] = NodePreheat {
            node: "c1".into(),
            state: NodePreheatState::Done,
            bytes: 2048,
            total_bytes: 2048,
            started_at: Some(1_000),
            finished_at: Some(3_500),
            message: None,
        };
        preheat.status.phase = PreheatPhase::Running;
        let text = preheat_text(preheat.clone());
        assert!(
            text.contains("Image:    shop/web:v1 (sha256:0123"),
            "{text}"
        );
        assert!(text.contains("Target:   pool core"), "{text}");
        assert!(text.contains("Running (1/2 nodes done)"), "{text}");
        assert!(text.contains("policy releases, push by ci"), "{text}");
        let c1 = text.lines().find(|l| l.starts_with("c1")).unwrap();
        assert!(
            c1.contains("Done") && c1.contains("2 KiB of 2 KiB") && c1.contains("2.5s"),
            "{c1}"
        );
        let c2 = text.lines().find(|l| l.starts_with("c2")).unwrap();
        assert!(c2.contains("Pending"), "{c2}");
        let table = preheat_table(vec![preheat]);
        assert!(
            table.contains("shop/web:v1") && table.contains("1/2") && table.contains("releases"),
            "{table}"
        );
    }
}
