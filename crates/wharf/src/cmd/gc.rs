//! `wharf gc`: garbage collection on a running server (administrators only).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use super::ServerOption;
use crate::output::{self, OutputFormat, OutputOption};
use crate::units;

/// Options of `wharf gc`.
#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    server: ServerOption,
    /// Report what would be removed without removing it.
    #[arg(long)]
    dry_run: bool,
    /// Override the server's grace period.
    #[arg(long, value_parser = units::parse_duration)]
    grace: Option<Duration>,
    #[command(flatten)]
    output: OutputOption,
}

/// Runs a collection and prints its report.
pub async fn run(args: GcArgs) -> Result<()> {
    let mut request = json!({ "dry_run": args.dry_run });
    if let Some(grace) = args.grace {
        request["grace_seconds"] = grace.as_secs().into();
    }
    let mut client = args.server.client()?;
    let report = client
        .post(&["gc"], &request)
        .await
        .context("garbage collection failed")?;
    if args.output.format != OutputFormat::Table {
        return output::print(args.output.format, report, |_: Value| String::new());
    }
    // Scripts and tests parse this line; keep its shape.
    let field = |name: &str| report[name].as_u64().unwrap_or(0);
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{verb} {} blobs ({} bytes), {} links, {} upload sessions in {} ms",
        field("blobs_removed"),
        field("bytes_freed"),
        field("links_removed"),
        field("uploads_removed"),
        field("duration_ms"),
    );
    Ok(())
}
