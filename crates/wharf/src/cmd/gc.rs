//! `wharf gc`: garbage collection on a running server (administrators only).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use super::ServerOption;
use crate::output::{self, OutputFormat, OutputOption, human_size};
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
    /// Also delete untagged manifests: those no tag, tagged index or
    /// kept subject reaches (as Harbor's "delete untagged artifacts").
    #[arg(long)]
    delete_untagged: bool,
    /// Delete upload sessions idle this long (whole seconds), e.g. the
    /// leftovers of a push killed midway, instead of waiting for the
    /// server's --upload-ttl. 0s also removes pushes paused between chunks.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    uploads_older_than: Option<Duration>,
    #[command(flatten)]
    output: OutputOption,
}

/// Runs a collection and prints its report.
pub async fn run(args: GcArgs) -> Result<()> {
    let mut request = json!({
        "dry_run": args.dry_run,
        "delete_untagged": args.delete_untagged,
    });
    if let Some(grace) = args.grace {
        request["grace_seconds"] = grace.as_secs().into();
    }
    if let Some(age) = args.uploads_older_than {
        request["uploads_older_than_seconds"] = age.as_secs().into();
    }
    let mut client = args.server.client()?;
    let report = client
        .post(&["gc"], &request)
        .await
        .context("garbage collection failed")?;
    if args.output.format != OutputFormat::Table {
        return output::print(args.output.format, report, |_: Value| String::new());
    }
    print!(
        "{}",
        report_text(&report, args.dry_run, args.delete_untagged)
    );
    Ok(())
}

/// The report for people. Scripts and tests parse the first line; keep its
/// shape.
fn report_text(report: &Value, dry_run: bool, delete_untagged: bool) -> String {
    let field = |name: &str| report[name].as_u64().unwrap_or(0);
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "{verb} {} blobs ({} bytes), {} links, {} upload sessions in {} ms\n",
        field("blobs_removed"),
        field("bytes_freed"),
        field("links_removed"),
        field("uploads_removed"),
        field("duration_ms"),
    );
    if delete_untagged {
        text.push_str(&format!(
            "{verb} {} untagged manifests\n",
            field("manifests_removed")
        ));
    }
    if field("uploads_removed") > 0 {
        text.push_str(&format!(
            "{verb} {} of upload leftovers\n",
            human_size(field("upload_bytes_freed"))
        ));
    }
    if field("uploads_left") > 0 {
        text.push_str(&format!(
            "{} upload sessions left ({}): pushes in progress, or leftovers of interrupted \
             ones kept until idle for the server's --upload-ttl; \
             wharf gc --uploads-older-than DURATION removes those idle longer now\n",
            field("uploads_left"),
            human_size(field("upload_bytes_left")),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_untagged_manifests_and_upload_leftovers() {
        let report = json!({
            "blobs_removed": 3, "bytes_freed": 1000, "links_removed": 2,
            "uploads_removed": 1, "upload_bytes_freed": 2048, "duration_ms": 7,
            "manifests_removed": 4, "uploads_left": 2, "upload_bytes_left": 903_872_512u64,
        });
        let text = report_text(&report, false, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "removed 3 blobs (1000 bytes), 2 links, 1 upload sessions in 7 ms"
        );
        assert_eq!(lines[1], "removed 4 untagged manifests");
        assert_eq!(lines[2], "removed 2 KiB of upload leftovers");
        assert!(
            lines[3].starts_with("2 upload sessions left (862 MiB)"),
            "{}",
            lines[3]
        );
        let quiet = json!({"duration_ms": 1});
        assert_eq!(
            report_text(&quiet, true, false),
            "would remove 0 blobs (0 bytes), 0 links, 0 upload sessions in 1 ms\n"
        );
    }
}
