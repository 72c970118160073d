//! `wharf ippool import|list|show|delete`: the pools pods take fixed
//! addresses from.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Deserialize;
use wharf_api::{IpClaim, IpPool};

use super::ServerOption;
use super::objects::{manifest_name, read_manifest};
use crate::client::unix_now;
use crate::output::{self, OutputOption, Table, age, render_fields};

/// `wharf ippool`: the server option and a subcommand.
#[derive(Args)]
pub struct IpPoolArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: IpPoolCommand,
}

/// Managing IP pools (imports and deletes: administrators).
#[derive(Subcommand)]
pub enum IpPoolCommand {
    /// Create pools from a YAML file of `IpPool` documents, or replace
    /// their spec; `-` reads standard input.
    Import {
        /// The pool file.
        file: String,
    },
    /// List pools with their size and the addresses in use.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Show a pool and which pod holds each address.
    Show {
        /// Pool name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete a pool no pod holds addresses of.
    Delete {
        /// Pool name.
        name: String,
    },
}

#[derive(Deserialize)]
struct ImportAnswer {
    results: Vec<Imported>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Imported {
    name: String,
    action: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    name: String,
    cidr: String,
    gateway: String,
    size: u64,
    used: u64,
    created_at: u64,
}

#[derive(Deserialize)]
struct PoolList {
    items: Vec<Summary>,
}

#[derive(Deserialize)]
struct PoolDetail {
    pool: IpPool,
    summary: Summary,
    claims: Vec<IpClaim>,
}

/// Runs a `wharf ippool` subcommand.
pub async fn run(args: IpPoolArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        IpPoolCommand::Import { file } => {
            let text = read_manifest(&file).await?;
            let answer = client
                .post_text(&["ippools"], &[], "application/yaml", &text)
                .await
                .with_context(|| format!("importing {}", manifest_name(&file)))?;
            let answer: ImportAnswer = serde_json::from_value(answer)
                .context("the server's import answer is not what wharf expects")?;
            for warning in &answer.warnings {
                eprintln!("Warning: unknown field {warning} ignored");
            }
            for imported in answer.results {
                println!("ippool/{} {}", imported.name, imported.action);
            }
            Ok(())
        }
        IpPoolCommand::List { output } => {
            let answer = client.get(&["ippools"]).await.context("listing IP pools")?;
            output::print(output.format, answer, |list: PoolList| {
                let now = unix_now() * 1000;
                let mut table = Table::new(&["NAME", "CIDR", "GATEWAY", "USED", "AGE"]);
                for pool in list.items {
                    table.row([
                        pool.name,
                        pool.cidr,
                        pool.gateway,
                        format!("{}/{}", pool.used, pool.size),
                        age(now, pool.created_at),
                    ]);
                }
                table.render()
            })
        }
        IpPoolCommand::Show { name, output } => {
            let answer = client
                .get(&["ippools", &name])
                .await
                .with_context(|| format!("reading IP pool {name}"))?;
            output::print(output.format, answer, detail_text)
        }
        IpPoolCommand::Delete { name } => {
            client
                .delete(&["ippools", &name])
                .await
                .with_context(|| format!("deleting IP pool {name}"))?;
            println!("ippool/{name} deleted");
            Ok(())
        }
    }
}

fn detail_text(detail: PoolDetail) -> String {
    let spec = &detail.pool.spec;
    let ranges = if spec.ranges.is_empty() {
        "(the whole subnet)".to_string()
    } else {
        spec.ranges
            .iter()
            .map(|r| format!("{}-{}", r.start, r.end))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = render_fields(&[
        ("Name", detail.summary.name.clone()),
        ("CIDR", detail.summary.cidr.clone()),
        ("Gateway", detail.summary.gateway.clone()),
        ("Ranges", ranges),
        ("Excluded", spec.exclude.join(", ")),
        (
            "Used",
            format!("{} of {}", detail.summary.used, detail.summary.size),
        ),
    ]);
    if !detail.claims.is_empty() {
        let now = unix_now() * 1000;
        let mut table = Table::new(&["IP", "POD", "NODE", "AGE"]);
        for claim in detail.claims {
            table.row([
                claim.ip.to_string(),
                format!("{}/{}", claim.project, claim.pod),
                claim.node,
                age(now, claim.claimed_at),
            ]);
        }
        text.push_str("\nAddresses in use:\n");
        text.push_str(&table.render());
    }
    text
}
