//! `wharf scale deployment NAME --replicas N`.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use super::ServerOption;
use super::objects::{Kind, ObjectName, ProjectOption};

/// Options of `wharf scale`.
#[derive(Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to scale: deployment (deploy).
    #[arg(value_parser = Kind::parse)]
    kind: Kind,
    /// The deployment's name.
    name: String,
    /// How many pods it should run.
    #[arg(long)]
    replicas: u32,
    #[command(flatten)]
    project: ProjectOption,
}

/// Sets a deployment's replica count; its controller adds or removes pods.
pub async fn run(args: ScaleArgs) -> Result<()> {
    if args.kind != Kind::Deployment {
        bail!(
            "{} cannot be scaled: scale the deployment that owns them",
            args.kind.plural()
        );
    }
    let mut client = args.server.client()?;
    let project = args.project.for_kind(args.kind, client.default_project())?;
    let object = ObjectName(args.kind, &args.name);
    let mut path = args.kind.object_path(&project, &args.name);
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
    Ok(())
}
