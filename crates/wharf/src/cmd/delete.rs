//! `wharf delete KIND NAME...` and `wharf delete -f FILE`: a pod turns
//! Terminating until its node confirms it stopped, and the command waits
//! for the objects to be gone (`--wait=false` does not), as kubectl does.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{ArgAction, Args};
use tokio::time::Instant;
use wharf_api::parse_manifests;

use super::ServerOption;
use super::objects::{
    Kind, ObjectName, ProjectOption, is_not_found, list_objects, manifest_name, place,
    read_manifest,
};
use crate::client::ApiClient;
use crate::units;

/// How often `--wait` looks whether the objects are gone.
const WAIT_POLL: Duration = Duration::from_millis(500);

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
    /// Seconds a pod gets to stop between SIGTERM and SIGKILL (default:
    /// its terminationGracePeriodSeconds, else 30). 0 means 1, except
    /// with --force. Pods of a deleted deployment use their own.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value_t = -1)]
    grace_period: i64,
    /// Remove pods at once, without waiting for their nodes to confirm
    /// that the containers stopped (implies --grace-period=0): they may
    /// keep running on the node until its agent notices.
    #[arg(long)]
    force: bool,
    /// Wait until the objects are gone (--wait=false: return once deletion
    /// is asked; a pod then stays Terminating until its node stops it).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = ArgAction::Set, value_name = "BOOL")]
    wait: bool,
    /// How long --wait waits before giving up, e.g. 90s, 5m.
    #[arg(long, default_value = "5m", value_parser = units::parse_duration)]
    timeout: Duration,
}

/// How pods are deleted, from `--grace-period` and `--force`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodDeletion {
    /// Graceful, within these seconds (`None`: the pod's own).
    Graceful(Option<u64>),
    /// Removed at once.
    Force,
}

impl PodDeletion {
    /// kubectl's rules: `--force` means grace 0 and removal at once; a
    /// grace of 0 without it is 1 s; a negative one is the pod's own.
    fn from_flags(grace_period: i64, force: bool) -> Result<PodDeletion> {
        match (force, grace_period) {
            (true, ..=0) => Ok(PodDeletion::Force),
            (true, _) => bail!(
                "--force removes pods at once: it takes no --grace-period (or --grace-period=0)"
            ),
            (false, ..0) => Ok(PodDeletion::Graceful(None)),
            (false, 0) => Ok(PodDeletion::Graceful(Some(1))),
            (false, seconds) => Ok(PodDeletion::Graceful(Some(seconds as u64))),
        }
    }

    /// The query of a pod's `DELETE`.
    fn query(self) -> Vec<(&'static str, String)> {
        match self {
            PodDeletion::Graceful(None) => vec![],
            PodDeletion::Graceful(Some(seconds)) => {
                vec![("gracePeriodSeconds", seconds.to_string())]
            }
            PodDeletion::Force => vec![
                ("gracePeriodSeconds", "0".to_string()),
                ("force", "true".to_string()),
            ],
        }
    }
}

/// One object to delete.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    kind: Kind,
    /// Empty for nodes.
    project: String,
    name: String,
}

/// Deletes each object named (a deployment's pods go with it), then
/// waits for them to be gone unless told not to.
pub async fn run(args: DeleteArgs) -> Result<()> {
    let how = PodDeletion::from_flags(args.grace_period, args.force)?;
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
    if how == PodDeletion::Force && targets.iter().any(|t| t.kind == Kind::Pod) {
        eprintln!(
            "warning: deleting at once, without waiting for the nodes to confirm that the \
             containers stopped: they may keep running there until the node's agent notices"
        );
    }
    let deadline = Instant::now() + args.timeout;
    if let [target] = targets.as_slice() {
        if delete(&mut client, target, how, args.ignore_not_found).await? && args.wait {
            wait_gone(&mut client, target, deadline).await?;
        }
        return Ok(());
    }
    // As kubectl does, one failure does not stop the others; all are
    // asked first, then waited for together.
    let mut failed = 0;
    let mut asked = Vec::new();
    for target in &targets {
        match delete(&mut client, target, how, args.ignore_not_found).await {
            Ok(true) => asked.push(target),
            Ok(false) => {}
            Err(err) => {
                eprintln!("error: {err:#}");
                failed += 1;
            }
        }
    }
    for target in asked.into_iter().filter(|_| args.wait) {
        if let Err(err) = wait_gone(&mut client, target, deadline).await {
            eprintln!("error: {err:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} objects were not deleted", targets.len());
    }
    Ok(())
}

/// Waits until `target` no longer exists, or `deadline` passes.
async fn wait_gone(client: &mut ApiClient, target: &Target, deadline: Instant) -> Result<()> {
    let object = ObjectName(target.kind, &target.name);
    let path = target.kind.object_path(&target.project, &target.name);
    loop {
        match client.get(&path).await {
            Err(err) if is_not_found(&err) => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("waiting for {object} to go")),
            Ok(_) if Instant::now() >= deadline => bail!(
                "{object}{} still exists after --timeout (a pod stays Terminating until its \
                 node confirms it stopped; `wharf describe` says more)",
                place(&target.project)
            ),
            Ok(_) => tokio::time::sleep(WAIT_POLL).await,
        }
    }
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
            let kind = Kind::of_manifest(&document.manifest)?;
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

/// Asks for `target`'s deletion; `false` if it did not exist (and that was fine).
async fn delete(
    client: &mut ApiClient,
    target: &Target,
    how: PodDeletion,
    ignore_not_found: bool,
) -> Result<bool> {
    let object = ObjectName(target.kind, &target.name);
    let place = place(&target.project);
    let query = match target.kind {
        Kind::Pod => how.query(),
        Kind::Deployment
        | Kind::Node
        | Kind::ConfigMap
        | Kind::Secret
        | Kind::PersistentVolumeClaim
        | Kind::Service
        | Kind::Endpoints
        | Kind::HorizontalPodAutoscaler => vec![],
    };
    let path = target.kind.object_path(&target.project, &target.name);
    match client.delete_with_query(&path, &query).await {
        Ok(answer) if !answer["metadata"]["deletionTimestamp"].is_null() => {
            println!(
                "{object} deleted (Terminating: pods still use it; it goes once they are gone)"
            );
            Ok(true)
        }
        Ok(_) => {
            println!("{object} deleted");
            Ok(true)
        }
        Err(err) if is_not_found(&err) => {
            if ignore_not_found {
                return Ok(false);
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
    fn grace_and_force_follow_kubectl() {
        use PodDeletion::{Force, Graceful};
        assert_eq!(PodDeletion::from_flags(-1, false).unwrap(), Graceful(None));
        assert_eq!(
            PodDeletion::from_flags(0, false).unwrap(),
            Graceful(Some(1))
        );
        assert_eq!(
            PodDeletion::from_flags(5, false).unwrap(),
            Graceful(Some(5))
        );
        assert_eq!(PodDeletion::from_flags(0, true).unwrap(), Force);
        assert_eq!(PodDeletion::from_flags(-1, true).unwrap(), Force);
        let err = PodDeletion::from_flags(5, true).unwrap_err().to_string();
        assert!(err.contains("--force removes pods at once"), "{err}");
        assert!(Graceful(None).query().is_empty());
        assert_eq!(
            Graceful(Some(5)).query(),
            [("gracePeriodSeconds", "5".to_string())]
        );
        assert_eq!(
            Force.query(),
            [
                ("gracePeriodSeconds", "0".to_string()),
                ("force", "true".to_string())
            ]
        );
    }

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
        let err = manifest_targets("kind: Ingress\napiVersion: networking.k8s.io/v1\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported kind Ingress"), "{err}");
        let service = "kind: Service\napiVersion: v1\n\
                       metadata: {name: web, namespace: back}\nspec: {ports: [{port: 80}]}\n";
        let targets = manifest_targets(service, Some("back")).unwrap();
        assert_eq!(targets[0].kind, Kind::Service);
    }
}
