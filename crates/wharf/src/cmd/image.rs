//! `wharf image list|inspect|distribution|delete`: what the registry holds,
//! read and removed through the API (the same rights as `docker pull` and
//! a registry delete); `preheat` lives in `preheat.rs`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use wharf_api::repository::{
    ArtifactDetail, ArtifactSummary, ImageDistribution, RepositorySummary,
};

use super::ServerOption;
use crate::client::{ApiClient, unix_now};
use crate::output::{self, OutputOption, Table, age, human_size, render_fields, rfc3339};

/// `wharf image`: the server option and a subcommand.
#[derive(Args)]
pub struct ImageArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: ImageCommand,
}

/// Reading and deleting images in the registry.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// List the repositories of a project, or the artifacts (tags,
    /// digests, sizes, push times, platforms) of one repository.
    List {
        /// `PROJECT` or `PROJECT/REPOSITORY` [default: the login's default project].
        target: Option<String>,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Show an image: digest, tags, size, platforms, config, layers, referrers.
    Inspect {
        /// `[HOST/]PROJECT/REPOSITORY:TAG` or `...@DIGEST`.
        reference: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Which nodes' caches hold which layers of an image, as the nodes
    /// last reported them.
    Distribution {
        /// `[HOST/]PROJECT/REPOSITORY:TAG` or `...@DIGEST`.
        reference: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Warm nodes' image caches before a rollout: `preheat IMAGE [--pool P]`
    /// (the seed peers of every IDC and pool without `--pool`), `preheat
    /// status [NAME]`, `preheat policy create|list|delete` (pushes that
    /// start a preheat). Maintainers and above start jobs and write policies.
    Preheat(super::preheat::PreheatArgs),
    /// Delete a tag (`REPO:TAG`), an artifact with all its tags
    /// (`REPO@DIGEST`), or a whole repository (`REPO`). Storage is freed by
    /// the next garbage collection.
    Delete {
        /// `[HOST/]PROJECT/REPOSITORY[:TAG|@DIGEST]`.
        reference: String,
    },
}

/// An image reference split as the API paths want it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ImageRef {
    pub(super) project: String,
    /// The repository inside the project (`team/web` of `shop/team/web`).
    pub(super) repository: String,
    /// Tag or digest.
    pub(super) reference: Option<String>,
}

impl ImageRef {
    pub(super) fn parse(text: &str) -> Result<ImageRef> {
        // A registry host comes first when the first part looks like one.
        let text = match text.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                rest
            }
            _ => text,
        };
        let (name, reference) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_string())),
            None => match text.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, Some(tag.to_string())),
                _ => (text, None),
            },
        };
        let Some((project, repository)) = name.split_once('/') else {
            bail!("{text:?} names no repository: write PROJECT/REPOSITORY");
        };
        if project.is_empty() || repository.is_empty() {
            bail!("{text:?} is not PROJECT/REPOSITORY");
        }
        if reference.as_deref() == Some("") {
            bail!("{text:?} has an empty tag or digest");
        }
        Ok(ImageRef {
            project: project.to_string(),
            repository: repository.to_string(),
            reference,
        })
    }

    pub(super) fn name(&self) -> String {
        format!("{}/{}", self.project, self.repository)
    }

    /// The API path of this tag or digest (then `tail`); an error without one.
    fn artifact_path<'a>(&'a self, tail: Option<&'a str>) -> Result<Vec<&'a str>> {
        let Some(tag_or_digest) = &self.reference else {
            bail!("name the image's tag or digest: {}:TAG", self.name());
        };
        let mut path = vec![
            "projects",
            &self.project,
            "repositories",
            &self.repository,
            "artifacts",
            tag_or_digest,
        ];
        path.extend(tail);
        Ok(path)
    }

    pub(super) fn display(&self) -> String {
        match &self.reference {
            Some(r) if r.contains(':') => format!("{}@{r}", self.name()),
            Some(tag) => format!("{}:{tag}", self.name()),
            None => self.name(),
        }
    }
}

/// Runs a `wharf image` subcommand.
pub async fn run(args: ImageArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        ImageCommand::List { target, output } => list(&mut client, target, output).await,
        ImageCommand::Inspect { reference, output } => {
            let image = ImageRef::parse(&reference)?;
            let answer = client
                .get(&image.artifact_path(None)?)
                .await
                .with_context(|| format!("reading image {}", image.display()))?;
            output::print(output.format, answer, detail_text)
        }
        ImageCommand::Distribution { reference, output } => {
            let image = ImageRef::parse(&reference)?;
            let answer = client
                .get(&image.artifact_path(Some("distribution"))?)
                .await
                .with_context(|| format!("reading where image {} is cached", image.display()))?;
            output::print(output.format, answer, distribution_text)
        }
        ImageCommand::Preheat(args) => super::preheat::run(&mut client, args).await,
        ImageCommand::Delete { reference } => {
            let image = ImageRef::parse(&reference)?;
            let mut path = vec![
                "projects",
                image.project.as_str(),
                "repositories",
                image.repository.as_str(),
            ];
            if let Some(reference) = &image.reference {
                path.extend(["artifacts", reference.as_str()]);
            }
            let answer = client
                .delete(&path)
                .await
                .with_context(|| format!("deleting {}", image.display()))?;
            match &image.reference {
                Some(_) => println!("deleted {}", image.display()),
                None => println!(
                    "deleted repository {} ({} artifacts)",
                    image.name(),
                    answer["deletedManifests"].as_u64().unwrap_or(0)
                ),
            }
            Ok(())
        }
    }
}

async fn list(client: &mut ApiClient, target: Option<String>, output: OutputOption) -> Result<()> {
    let target = match target.or_else(|| client.default_project().map(str::to_string)) {
        Some(target) => target,
        None => bail!(
            "name a project (wharf image list PROJECT), or set a default with `wharf project use`"
        ),
    };
    match target.split_once('/') {
        None => {
            let answer = client
                .get(&["projects", &target, "repositories"])
                .await
                .with_context(|| format!("listing the repositories of project {target}"))?;
            output::print(output.format, answer, repository_table)
        }
        Some(_) => {
            let image = ImageRef::parse(&target)?;
            if image.reference.is_some() {
                bail!("list takes a repository, not a tag: {}", image.name());
            }
            let answer = client
                .get(&[
                    "projects",
                    &image.project,
                    "repositories",
                    &image.repository,
                    "artifacts",
                ])
                .await
                .with_context(|| format!("listing repository {}", image.name()))?;
            output::print(output.format, answer, artifact_table)
        }
    }
}

/// The first 12 hex digits of a digest, as docker shows image ids.
fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

fn dash_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

fn repository_table(repositories: Vec<RepositorySummary>) -> String {
    let now = unix_now() * 1000;
    let mut table = Table::new(&["REPOSITORY", "ARTIFACTS", "TAGS", "SIZE", "UPDATED"]);
    for repo in repositories {
        table.row([
            repo.name,
            repo.artifact_count.to_string(),
            repo.tag_count.to_string(),
            human_size(repo.size_bytes),
            age(now, repo.updated_at),
        ]);
    }
    table.render()
}

fn artifact_table(artifacts: Vec<ArtifactSummary>) -> String {
    let now = unix_now() * 1000;
    let mut table = Table::new(&["DIGEST", "TAGS", "SIZE", "PLATFORMS", "PUSHED", "REFERRERS"]);
    for artifact in artifacts {
        table.row([
            short_digest(&artifact.digest),
            dash_if_empty(&artifact.tags),
            human_size(artifact.size_bytes),
            dash_if_empty(&artifact.platforms),
            age(now, artifact.pushed_at),
            artifact.referrer_count.to_string(),
        ]);
    }
    table.render()
}

/// Per node how much of the image it holds, then per layer on how many nodes.
fn distribution_text(distribution: ImageDistribution) -> String {
    let total: u64 = distribution.layers.iter().map(|l| l.size).sum();
    let mut nodes = Table::new(&["NODE", "IDC", "POOL", "LAYERS", "BYTES", "COMPLETE"]);
    for node in &distribution.nodes {
        nodes.row([
            node.node.clone(),
            node.idc.clone().unwrap_or_else(|| "-".into()),
            node.pool.clone().unwrap_or_else(|| "-".into()),
            format!("{}/{}", node.layers, distribution.layers.len()),
            format!("{} of {}", human_size(node.bytes), human_size(total)),
            if node.complete { "yes" } else { "no" }.to_string(),
        ]);
    }
    let mut layers = Table::new(&["LAYER", "SIZE", "NODES"]);
    for layer in &distribution.layers {
        layers.row([
            short_digest(&layer.digest),
            human_size(layer.size),
            layer.nodes.len().to_string(),
        ]);
    }
    let mut text = format!("{}@{}\n", distribution.repository, distribution.digest);
    if distribution.nodes.is_empty() {
        text.push_str("no node holds a layer of it\n");
    } else {
        text.push_str(&nodes.render());
    }
    text.push('\n');
    text.push_str(&layers.render());
    if !distribution.unreported.is_empty() {
        text.push_str(&format!(
            "\nnot reporting their caches: {}\n",
            distribution.unreported.join(", ")
        ));
    }
    text
}

fn detail_text(detail: ArtifactDetail) -> String {
    let summary = &detail.summary;
    let config = |key: &str| -> String {
        match detail.image_config.as_ref().and_then(|c| c.get(key)) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(" "),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    };
    let mut text = render_fields(&[
        ("Repository", detail.repository.clone()),
        ("Digest", summary.digest.clone()),
        ("Media type", summary.media_type.clone()),
        (
            "Artifact type",
            summary.artifact_type.clone().unwrap_or_default(),
        ),
        ("Tags", summary.tags.join(", ")),
        ("Size", human_size(summary.size_bytes)),
        ("Pushed", rfc3339(summary.pushed_at)),
        ("Platforms", summary.platforms.join(", ")),
        ("Created", detail.created.clone().unwrap_or_default()),
        ("Entrypoint", config("Entrypoint")),
        ("Cmd", config("Cmd")),
        ("User", config("User")),
        ("Working dir", config("WorkingDir")),
    ]);
    let mut section = |title: &str, headers: &[&'static str], rows: Vec<Vec<String>>| {
        if rows.is_empty() {
            return;
        }
        let mut table = Table::new(headers);
        for row in rows {
            table.row(row);
        }
        text.push_str(&format!("{title}:\n"));
        for line in table.render().lines() {
            text.push_str(&format!("  {line}\n"));
        }
    };
    section(
        "Layers",
        &["DIGEST", "SIZE", "MEDIA TYPE"],
        detail
            .layers
            .iter()
            .map(|l| vec![l.digest.clone(), human_size(l.size), l.media_type.clone()])
            .collect(),
    );
    section(
        "Manifests",
        &["DIGEST", "PLATFORM", "SIZE"],
        detail
            .manifests
            .iter()
            .map(|m| {
                vec![
                    m.digest.clone(),
                    m.platform.clone().unwrap_or_default(),
                    human_size(m.size),
                ]
            })
            .collect(),
    );
    section(
        "Referrers",
        &["DIGEST", "ARTIFACT TYPE", "SIZE"],
        detail
            .referrers
            .iter()
            .map(|r| {
                vec![
                    r.digest.clone(),
                    r.artifact_type.clone().unwrap_or_default(),
                    human_size(r.size),
                ]
            })
            .collect(),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (String, String, Option<String>) {
        let image = ImageRef::parse(text).unwrap();
        (image.project, image.repository, image.reference)
    }

    #[test]
    fn a_distribution_reads_per_node_then_per_layer() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let distribution = ImageDistribution {
            repository: "shop/web".into(),
            digest: digest('d'),
            layers: vec![
                wharf_api::repository::LayerDistribution {
                    digest: digest('a'),
                    size: 3 << 20,
                    nodes: vec!["n1".into(), "n2".into()],
                },
                wharf_api::repository::LayerDistribution {
                    digest: digest('b'),
                    size: 1 << 20,
                    nodes: vec!["n1".into()],
                },
            ],
            nodes: vec![
                wharf_api::repository::NodeHolding {
                    node: "n1".into(),
                    idc: Some("east".into()),
                    pool: None,
                    layers: 2,
                    bytes: 4 << 20,
                    complete: true,
                },
                wharf_api::repository::NodeHolding {
                    node: "n2".into(),
                    idc: None,
                    pool: Some("web".into()),
                    layers: 1,
                    bytes: 3 << 20,
                    complete: false,
                },
            ],
            unreported: vec!["n3".into()],
        };
        let text = distribution_text(distribution);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("shop/web@{}", digest('d')));
        assert!(lines[1].starts_with("NODE") && lines[1].ends_with("COMPLETE"));
        assert!(
            lines[2].starts_with("n1") && lines[2].contains("east") && lines[2].contains("2/2"),
            "{text}"
        );
        assert!(
            lines[2].contains("4 MiB of 4 MiB") && lines[2].ends_with("yes"),
            "{text}"
        );
        assert!(lines[3].starts_with("n2") && lines[3].contains("web") && lines[3].ends_with("no"));
        assert!(text.contains("sha256:aaaaaaaaaaaa  3 MiB  2"), "{text}");
        assert!(text.ends_with("not reporting their caches: n3\n"), "{text}");
    }

    #[test]
    fn references_split_into_project_repository_and_tag_or_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parsed("shop/web:1"),
            ("shop".into(), "web".into(), Some("1".into()))
        );
        assert_eq!(
            parsed("127.0.0.1:5000/shop/team/web:1"),
            ("shop".into(), "team/web".into(), Some("1".into()))
        );
        assert_eq!(
            parsed(&format!("registry.example/shop/web@{digest}")),
            ("shop".into(), "web".into(), Some(digest.clone()))
        );
        assert_eq!(parsed("shop/web"), ("shop".into(), "web".into(), None));
        assert!(ImageRef::parse("web:1").is_err());
        assert!(ImageRef::parse("shop/web:").is_err());
        assert_eq!(
            ImageRef::parse(&format!("shop/web@{digest}"))
                .unwrap()
                .display(),
            format!("shop/web@{digest}")
        );
    }

    #[test]
    fn digests_are_shortened_as_docker_does() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(short_digest(&digest), "sha256:0123456789ab");
    }
}
