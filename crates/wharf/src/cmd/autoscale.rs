//! `wharf autoscale deployment NAME --min N --max M --cpu-percent P`:
//! creates or updates the HorizontalPodAutoscaler named like the
//! deployment, as `kubectl autoscale` does.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::ServerOption;
use super::objects::{Kind, ObjectName, ProjectOption, is_not_found};

/// Options of `wharf autoscale`.
#[derive(Args)]
pub struct AutoscaleArgs {
    #[command(flatten)]
    server: ServerOption,
    /// What to autoscale: deployment (deploy).
    #[arg(value_parser = Kind::parse)]
    kind: Kind,
    /// The deployment's name; the autoscaler takes the same name.
    name: String,
    /// Fewest replicas.
    #[arg(long, default_value_t = 1)]
    min: u32,
    /// Most replicas.
    #[arg(long)]
    max: u32,
    /// Average CPU use to keep, in percent of the pods' requests (80 when
    /// not given, as Kubernetes).
    #[arg(long)]
    cpu_percent: Option<u32>,
    #[command(flatten)]
    project: ProjectOption,
}

/// Applies the autoscaler; an existing one keeps what the options do not
/// set (its behavior, labels). The deployment owns an autoscaler made
/// here: deleting the deployment deletes it.
pub async fn run(args: AutoscaleArgs) -> Result<()> {
    if args.kind != Kind::Deployment {
        bail!(
            "{} cannot be autoscaled: only deployments",
            args.kind.plural()
        );
    }
    let mut client = args.server.client()?;
    let project = args.project.for_kind(args.kind, client.default_project())?;
    let deployment = ObjectName(Kind::Deployment, &args.name);
    let target = client
        .get(&Kind::Deployment.object_path(&project, &args.name))
        .await
        .with_context(|| format!("reading {deployment} in project {project}"))?;
    let hpa_path = Kind::HorizontalPodAutoscaler.object_path(&project, &args.name);
    let existing = match client.get(&hpa_path).await {
        Ok(existing) => Some(existing),
        Err(err) if is_not_found(&err) => None,
        Err(err) => return Err(err.context("reading the autoscaler")),
    };
    let hpa = autoscaler(&args, &project, &target, existing);
    client
        .post_text(
            &["apply"],
            &[("project", project.clone())],
            "application/yaml",
            &hpa.to_string(),
        )
        .await
        .with_context(|| format!("autoscaling {deployment} in project {project}"))?;
    println!(
        "{} autoscaled",
        ObjectName(Kind::HorizontalPodAutoscaler, &args.name)
    );
    Ok(())
}

/// The manifest to apply: `existing` (as the server has it, status
/// dropped) or a new one, with the options' bounds and target.
fn autoscaler(
    args: &AutoscaleArgs,
    project: &str,
    deployment: &Value,
    existing: Option<Value>,
) -> Value {
    let mut hpa = existing.unwrap_or_else(|| {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": args.name, "namespace": project},
            "spec": {"scaleTargetRef": {
                "apiVersion": "apps/v1", "kind": "Deployment", "name": args.name,
            }},
        })
    });
    if let Some(object) = hpa.as_object_mut() {
        object.remove("status");
    }
    hpa["metadata"]["ownerReferences"] = json!([{
        "kind": "Deployment",
        "name": args.name,
        "uid": deployment["metadata"]["uid"],
    }]);
    hpa["spec"]["minReplicas"] = json!(args.min);
    hpa["spec"]["maxReplicas"] = json!(args.max);
    if let Some(percent) = args.cpu_percent {
        hpa["spec"]["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": percent}}}]);
    }
    hpa
}
