//! `wharf delete KIND NAME...` and `wharf delete -f FILE`.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use wharf_api::parse_manifests;

use super::ServerOption;
use super::objects::{
    Kind, ObjectName, ProjectOption, is_not_found, list_objects, manifest_name, place,
    read_manifest,
};
use crate::client::ApiClient;

/// Options of `wharf delete`.
#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to delete: deployment (deploy), pod (po), node (no), configmap
    /// (cm) or secret.
    #[arg(value_parser = Kind::parse, conflicts_with = "file")]
    kind: Option<Kind>,
    /// Names of the objects.
    names: Vec<String>,
    /// Delete the objects of this manifest; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: Option<String>,
    #[command(flatten)]
    project: ProjectOption,
    /// Delete the objects of KIND whose labels match, e.g.
    /// app=web,tier!=db,env in (a,b),!legacy.
    #[arg(short = 'l', long, conflicts_with_all = ["names", "file"])]
    selector: Option<String>,
    /// Succeed when an object does not exist.
    #[arg(long)]
    ignore_not_found: bool,
}

/// One object to delete.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    kind: Kind,
    /// Empty for nodes.
    project: String,
    name: String,
}

/// Deletes each object named; a deployment's pods go with it.
pub async fn run(args: DeleteArgs) -> Result<()> {
    let mut client = args.server.client()?;
    let targets = match (&args.file, args.kind) {
        (Some(file), _) => {
            let text = read_manifest(file).await?;
            manifest_targets(&text, args.project.project.as_deref())
                .with_context(|| format!("reading {}", manifest_name(file)))?
        }
        (None, Some(kind)) if args.selector.is_some() => {
            let project = args.project.for_kind(kind, client.default_project())?;
            let matching = selected(&mut client, kind, &project, &args.selector).await?;
            if matching.is_empty() {
                let selector = args.selector.as_deref().unwrap_or_default();
                eprintln!("no {} match {selector}{}", kind.plural(), place(&project));
                return Ok(());
            }
            matching
        }
        (None, Some(kind)) => {
            if args.names.is_empty() {
                bail!(
                    "give the names of the {} to delete, -l SELECTOR, or -f FILE",
                    kind.plural()
                );
            }
            let project = args.project.for_kind(kind, client.default_project())?;
            args.names
                .iter()
                .map(|name| Target {
                    kind,
                    project: project.clone(),
                    name: name.clone(),
                })
                .collect()
        }
        (None, None) => bail!("give what to delete: KIND NAME... or -f FILE"),
    };
    if let [target] = targets.as_slice() {
        return delete(&mut client, target, args.ignore_not_found).await;
    }
    // As kubectl does, one failure does not stop the others.
    let mut failed = 0;
    for target in &targets {
        if let Err(err) = delete(&mut client, target, args.ignore_not_found).await {
            eprintln!("error: {err:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} objects were not deleted", targets.len());
    }
    Ok(())
}

/// The objects of `kind` in `project` whose labels match `selector`.
async fn selected(
    client: &mut ApiClient,
    kind: Kind,
    project: &str,
    selector: &Option<String>,
) -> Result<Vec<Target>> {
    let answer = list_objects(client, kind, project, selector).await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let name = item["metadata"]["name"].as_str().ok_or_else(|| {
                anyhow!(
                    "the server's {} list has an object without a name",
                    kind.resource()
                )
            })?;
            Ok(Target {
                kind,
                project: project.to_string(),
                name: name.to_string(),
            })
        })
        .collect()
}

/// The objects of a manifest, parsed here: each in its own project
/// (`metadata.namespace`) or else in `project`; a `project` contradicting
/// a manifest's is refused, as `apply` refuses it.
fn manifest_targets(text: &str, project: Option<&str>) -> Result<Vec<Target>> {
    let parsed = parse_manifests(text)?;
    parsed
        .into_iter()
        .map(|document| {
            let kind = Kind::of_manifest(&document.manifest);
            let what = kind.api_kind().to_lowercase();
            let meta = document.manifest.metadata();
            let name = meta.name.clone();
            let project = match (meta.project.clone(), project) {
                (Some(own), Some(asked)) if own != asked => bail!(
                    "{what} {name} is in project {own} (metadata.namespace) but project \
                     {asked} was asked for: pass -p {own} or drop -p"
                ),
                (Some(own), _) => own,
                (None, Some(asked)) => asked.to_string(),
                (None, None) => bail!(
                    "{what} {name} names no project: set metadata.namespace or pass -p PROJECT"
                ),
            };
            Ok(Target {
                kind,
                project,
                name,
            })
        })
        .collect()
}

async fn delete(client: &mut ApiClient, target: &Target, ignore_not_found: bool) -> Result<()> {
    let object = ObjectName(target.kind, &target.name);
    let place = place(&target.project);
    match client
        .delete(&target.kind.object_path(&target.project, &target.name))
        .await
    {
        Ok(_) => {
            println!("{object} deleted");
            Ok(())
        }
        Err(err) if is_not_found(&err) => {
            if ignore_not_found {
                return Ok(());
            }
            Err(anyhow!(
                "deleting {object}{place}: {err:#} (--ignore-not-found accepts that)"
            ))
        }
        Err(err) => Err(err).with_context(|| format!("deleting {object}{place}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: shop/web:1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: back}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: back/api:1}]}
";

    #[test]
    fn manifests_name_their_objects_and_projects() {
        let err = manifest_targets(MANIFEST, Some("shop"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deployment api is in project back (metadata.namespace) but project shop"),
            "{err}"
        );
        let targets = manifest_targets(MANIFEST, Some("back")).unwrap();
        assert_eq!(
            targets,
            [
                Target {
                    kind: Kind::Deployment,
                    project: "back".into(),
                    name: "web".into()
                },
                Target {
                    kind: Kind::Deployment,
                    project: "back".into(),
                    name: "api".into()
                },
            ]
        );
        let err = manifest_targets(MANIFEST, None).unwrap_err().to_string();
        assert!(err.contains("deployment web names no project"), "{err}");
        let err = manifest_targets("kind: Service\napiVersion: v1\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported kind Service"), "{err}");
    }
}
