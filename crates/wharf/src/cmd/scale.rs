//! `wharf scale deployment NAME|-l SELECTOR --replicas N`.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use super::ServerOption;
use super::objects::{Kind, ObjectName, ProjectOption, names_matching};

/// Options of `wharf scale`.
#[derive(Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to scale: deployment (deploy).
    #[arg(value_parser = Kind::parse)]
    kind: Kind,
    /// The deployment's name (or -l to select deployments by label).
    #[arg(required_unless_present = "selector", conflicts_with = "selector")]
    name: Option<String>,
    /// The deployments whose labels match, e.g. `app=web`, as kubectl's.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// How many pods it should run.
    #[arg(long)]
    replicas: u32,
    #[command(flatten)]
    project: ProjectOption,
}

/// Sets the replica count of a deployment (or of each one the selector
/// matches); their controller adds or removes pods.
pub async fn run(args: ScaleArgs) -> Result<()> {
    if args.kind != Kind::Deployment {
        bail!(
            "{} cannot be scaled: scale the deployment that owns them",
            args.kind.plural()
        );
    }
    let mut client = args.server.client()?;
    let project = args.project.for_kind(args.kind, client.default_project())?;
    let names = match (args.name, &args.selector) {
        (Some(name), _) => vec![name],
        (None, selector) => {
            let selector = selector.as_deref().unwrap_or_default();
            names_matching(&mut client, args.kind, &project, selector).await?
        }
    };
    for name in names {
        let object = ObjectName(args.kind, &name);
        let mut path = args.kind.object_path(&project, &name);
        path.push("scale");
        client
            .put(&path, &json!({ "replicas": args.replicas }))
            .await
            .with_context(|| {
                format!(
                    "scaling {object} in project {project} to {} replicas",
                    args.replicas
                )
            })?;
        println!("{object} scaled");
    }
    Ok(())
}
