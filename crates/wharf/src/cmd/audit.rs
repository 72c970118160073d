//! `wharf audit`: who did what, when.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use wharf_audit::{AuditEvent, Outcome};

use super::ServerOption;
use crate::client::unix_now;
use crate::output::{self, OutputOption, Table, rfc3339};
use crate::units;

/// Options of `wharf audit`: filters, all optional.
///
/// Administrators see every event; project admins see their project's
/// events when they name it with --project.
#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    server: ServerOption,
    /// Only events by this user or robot.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action, e.g. login or artifact.push; a trailing `*` matches
    /// a prefix (artifact.*).
    #[arg(long)]
    action: Option<String>,
    /// Only events about this project.
    #[arg(long)]
    project: Option<String>,
    /// Only events on resources starting with this, e.g. user/alice.
    #[arg(long)]
    resource: Option<String>,
    /// Only events that ended this way.
    #[arg(long, value_parser = ["success", "denied", "failed"])]
    outcome: Option<String>,
    /// Only events this recent, e.g. 1h or 7d.
    #[arg(long, value_parser = units::parse_duration)]
    since: Option<Duration>,
    /// At most this many events [default: the server's].
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    output: OutputOption,
}

/// Queries the audit log.
pub async fn run(args: AuditArgs) -> Result<()> {
    let mut query: Vec<(&str, String)> = [
        ("actor", args.actor),
        ("action", args.action),
        ("project", args.project),
        ("resource", args.resource),
        ("outcome", args.outcome),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect();
    if let Some(since) = args.since {
        let now_ms = unix_now().saturating_mul(1000);
        let since_ms = now_ms.saturating_sub(since.as_millis().try_into().unwrap_or(u64::MAX));
        query.push(("since_ms", since_ms.to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let mut client = args.server.client()?;
    let answer = client
        .get_with_query(&["audit"], &query)
        .await
        .context("reading the audit log")?;
    output::print(args.output.format, answer, event_table)
}

fn event_table(events: Vec<AuditEvent>) -> String {
    let mut table = Table::new(&[
        "TIME", "ACTOR", "ACTION", "RESOURCE", "OUTCOME", "SOURCE", "DETAIL",
    ]);
    for event in events {
        table.row([
            rfc3339(event.at_ms),
            event.actor,
            event.action,
            event.resource,
            outcome_name(event.outcome).to_string(),
            event.source.map(|ip| ip.to_string()).unwrap_or_default(),
            event.detail.unwrap_or_default(),
        ]);
    }
    table.render()
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Denied => "denied",
        Outcome::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_a_table() {
        let mut event = AuditEvent::new("alice", "login", "api", Outcome::Denied)
            .with_detail("invalid username or password");
        event.at_ms = 1_735_787_045_000;
        assert_eq!(
            event_table(vec![event]),
            "TIME                  ACTOR  ACTION  RESOURCE  OUTCOME  SOURCE  DETAIL\n\
             2025-01-02T03:04:05Z  alice  login   api       denied           invalid username or password\n"
        );
    }
}
