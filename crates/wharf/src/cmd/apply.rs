//! `wharf apply -f FILE`: creates or updates the objects of a Kubernetes
//! manifest, as `kubectl apply` does.

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use super::ServerOption;
use super::objects::{Kind, ProjectOption, manifest_name, read_manifest};

/// Options of `wharf apply`.
#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    server: ServerOption,
    /// Manifest with one or more YAML (or JSON) documents; `-` reads
    /// standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: String,
    // For the objects whose manifest names no project (metadata.namespace);
    // the server refuses one that contradicts a manifest's namespace.
    #[command(flatten)]
    project: ProjectOption,
}

/// The server's answer to `POST /api/v1/apply`.
#[derive(Debug, Deserialize)]
struct ApplyAnswer {
    results: Vec<Applied>,
}

/// What happened to one object.
#[derive(Debug, Deserialize)]
struct Applied {
    kind: String,
    name: String,
    /// `created` or `configured`.
    action: String,
    /// Fields the server ignored, e.g. `unknown field spec.x ignored`.
    #[serde(default)]
    warnings: Vec<String>,
}

/// Sends the manifest as it is; the server parses it, checks every
/// object, and only then changes anything.
pub async fn run(args: ApplyArgs) -> Result<()> {
    let text = read_manifest(&args.file).await?;
    let mut client = args.server.client()?;
    // An explicit -p must agree with the manifest; the login's default
    // project only fills in for manifests that name none, as kubectl's
    // context namespace does.
    let query: Vec<(&str, String)> = match (&args.project.project, client.default_project()) {
        (Some(project), _) => vec![("project", project.clone())],
        (None, Some(default)) => vec![("defaultProject", default.to_string())],
        (None, None) => Vec::new(),
    };
    let answer = client
        .post_text(&["apply"], &query, "application/yaml", &text)
        .await
        .with_context(|| format!("applying {}", manifest_name(&args.file)))?;
    let answer: ApplyAnswer = serde_json::from_value(answer)
        .context("the server's apply answer is not what wharf expects")?;
    for applied in &answer.results {
        for warning in &applied.warnings {
            eprintln!("Warning: {warning}");
        }
        println!("{}", result_line(applied));
    }
    Ok(())
}

/// `deployment.apps/web created`.
fn result_line(applied: &Applied) -> String {
    // Kinds with their own commands (the inventory's) read `cluster/bj`.
    let resource = Kind::parse(&applied.kind)
        .map(|kind| kind.resource().to_string())
        .unwrap_or_else(|_| applied.kind.to_lowercase());
    format!("{resource}/{} {}", applied.name, applied.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_read_like_kubectl() {
        let answer: ApplyAnswer = serde_json::from_value(serde_json::json!({"results": [
            {"kind": "Deployment", "project": "shop", "name": "web", "action": "created",
             "generation": 1, "warnings": ["unknown field spec.x ignored"]},
            {"kind": "Deployment", "project": "shop", "name": "api", "action": "configured",
             "generation": 2, "warnings": []},
        ]}))
        .unwrap();
        let lines: Vec<String> = answer.results.iter().map(result_line).collect();
        assert_eq!(
            lines,
            [
                "deployment.apps/web created",
                "deployment.apps/api configured"
            ]
        );
        assert_eq!(answer.results[0].warnings, ["unknown field spec.x ignored"]);
    }
}
