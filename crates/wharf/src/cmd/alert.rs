//! `wharf alert ...`: alert rules, the alerts they raise and their
//! history, silences, and webhook receivers with their delivery log — in
//! a project (`-p`, or the login's default project) or, for
//! administrators, cluster-wide (`--cluster`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use wharf_api::{AlertReceiver, AlertRule, AlertState, Comparison, Delivery, Silence};

use super::ServerOption;
use crate::client::ApiClient;
use crate::output::{self, OutputOption, Table, age, rfc3339};
use crate::{password, units};

/// `wharf alert`: the server and scope options and a subcommand.
#[derive(Args)]
pub struct AlertArgs {
    #[command(flatten)]
    server: ServerOption,
    /// The project whose rules, silences and receivers to act on
    /// [default: the login's default project].
    #[arg(short = 'p', long, env = "WHARF_PROJECT", global = true)]
    project: Option<String>,
    /// The cluster's own rules, silences and receivers (administrators).
    #[arg(long, global = true, conflicts_with = "project")]
    cluster: bool,
    #[command(subcommand)]
    command: AlertCommand,
}

#[derive(Subcommand)]
enum AlertCommand {
    /// Add (or update), list or delete alert rules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// List the alerts of the rules: pending, firing, just resolved.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// The rules' latest state changes, oldest first.
    History {
        /// Only this rule's.
        #[arg(long)]
        rule: Option<String>,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Add, list or expire silences.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Add (or update), list or delete webhook receivers, or show one's
    /// delivery log.
    #[command(subcommand)]
    Receiver(ReceiverCommand),
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Add a rule, or replace the spec of the rule of that name.
    Add(Box<RuleSpecArgs>),
    /// List rules.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete a rule (its alerts go with it, unnotified).
    Delete {
        /// Rule name.
        name: String,
    },
}

#[derive(Args)]
struct RuleSpecArgs {
    /// Rule name: lowercase letters, digits and '-'.
    name: String,
    /// The metric, e.g. container.cpu.usage_seconds or cpu.busy.
    #[arg(long)]
    metric: String,
    /// Tag matchers: k=v, k!=v or k=a|b, comma-separated.
    #[arg(long, default_value = "")]
    tags: String,
    /// Read the counter as a per-second rate (CPU seconds become cores).
    #[arg(long)]
    rate: bool,
    /// How a group's series combine: avg, max, min or sum.
    #[arg(long, default_value = "avg", value_parser = ["avg", "max", "min", "sum"])]
    agg: String,
    /// Labels that keep alerts apart (comma-separated), e.g. pod.
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    /// Labels of --by that group notifications [default: all of --by].
    #[arg(long, value_delimiter = ',')]
    group_by: Vec<String>,
    /// The data the value is averaged over.
    #[arg(long, default_value = "1m", value_parser = units::parse_duration)]
    window: Duration,
    /// The condition, an operator and a threshold: '>0.5', '<= 10'.
    #[arg(long, value_parser = parse_condition)]
    condition: (Comparison, f64),
    /// How long the condition must hold before the alert fires.
    #[arg(long = "for", default_value = "0s", value_parser = units::parse_duration)]
    for_duration: Duration,
    /// Severity, e.g. warning or critical.
    #[arg(long, default_value = "warning")]
    severity: String,
    /// A label added to the alerts (k=v; repeat).
    #[arg(long = "label", value_parser = parse_pair)]
    labels: Vec<(String, String)>,
    /// An annotation sent with notifications (k=v; repeat), e.g. summary=...
    #[arg(long = "annotation", value_parser = parse_pair)]
    annotations: Vec<(String, String)>,
    #[command(flatten)]
    output: OutputOption,
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Silence the alerts whose labels match (alertname is the rule).
    Add {
        /// Labels to match exactly: k=v, comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = parse_pair, required = true)]
        matcher: Vec<(String, String)>,
        /// How long it lasts.
        #[arg(long, default_value = "2h", value_parser = units::parse_duration)]
        duration: Duration,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List silences, active and expired.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// End a silence now.
    Expire {
        /// Its name (from silence list).
        name: String,
    },
}

#[derive(Subcommand)]
enum ReceiverCommand {
    /// Add a webhook, or change its URL (and secret, if given). The
    /// secret that signs notifications is asked for, or read with
    /// --secret-stdin; it is stored sealed and never shown again.
    Add {
        /// Receiver name.
        name: String,
        /// The URL notifications are POSTed to.
        #[arg(long)]
        url: String,
        /// Read the secret from the first line of standard input.
        #[arg(long)]
        secret_stdin: bool,
        /// Keep the stored secret (when changing the URL).
        #[arg(long, conflicts_with = "secret_stdin")]
        keep_secret: bool,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List receivers.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete a receiver and its delivery log.
    Delete {
        /// Receiver name.
        name: String,
    },
    /// A receiver's delivery log, newest first.
    Deliveries {
        /// Receiver name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse_condition(text: &str) -> Result<(Comparison, f64), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !"<>=!".contains(c))
        .ok_or_else(|| format!("{text:?} has no threshold"))?;
    if split == 0 {
        return Err(format!(
            "{text:?} does not start with an operator (>, >=, <, <=, ==, !=)"
        ));
    }
    let op: Comparison = text[..split].parse()?;
    let threshold = text[split..]
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("{:?} is not a number", text[split..].trim()))?;
    Ok((op, threshold))
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

/// Path segments of the scope: the cluster's `alerts/...` or a project's.
struct Scope(Option<String>);

impl Scope {
    fn path<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut path = match &self.0 {
            Some(project) => vec!["projects", project.as_str(), "alerts"],
            None => vec!["alerts"],
        };
        path.extend_from_slice(rest);
        path
    }
}

/// Runs `wharf alert`.
pub async fn run(args: AlertArgs) -> Result<()> {
    let mut client = args.server.client()?;
    let scope = if args.cluster {
        Scope(None)
    } else {
        let project = args
            .project
            .clone()
            .or_else(|| client.default_project().map(str::to_owned))
            .ok_or_else(|| {
                anyhow!("give -p PROJECT (or set a default with wharf project use), or --cluster")
            })?;
        Scope(Some(project))
    };
    match args.command {
        AlertCommand::Rule(command) => rule(&mut client, &scope, command).await,
        AlertCommand::List { output } => {
            let answer = client.get(&scope.path(&["rules"])).await?;
            output::print(output.format, answer, |rules: Vec<AlertRule>| {
                alerts_table(&rules).render()
            })
        }
        AlertCommand::History { rule, output } => {
            let answer = client.get(&scope.path(&["rules"])).await?;
            output::print(output.format, answer, |rules: Vec<AlertRule>| {
                history_table(&rules, rule.as_deref()).render()
            })
        }
        AlertCommand::Silence(command) => silence(&mut client, &scope, command).await,
        AlertCommand::Receiver(command) => receiver(&mut client, &scope, command).await,
    }
}

async fn rule(client: &mut ApiClient, scope: &Scope, command: RuleCommand) -> Result<()> {
    match command {
        RuleCommand::Add(spec) => {
            let (op, threshold) = spec.condition;
            let body = json!({
                "metadata": {"name": spec.name},
                "spec": {
                    "metric": spec.metric, "tags": spec.tags, "rate": spec.rate,
                    "aggregation": spec.agg, "by": spec.by, "groupBy": spec.group_by,
                    "windowSeconds": spec.window.as_secs(), "op": op, "threshold": threshold,
                    "forSeconds": spec.for_duration.as_secs(), "severity": spec.severity,
                    "labels": spec.labels.into_iter().collect::<BTreeMap<_, _>>(),
                    "annotations": spec.annotations.into_iter().collect::<BTreeMap<_, _>>(),
                }
            });
            let answer = client
                .post(&scope.path(&["rules"]), &body)
                .await
                .with_context(|| format!("adding alert rule {}", spec.name))?;
            output::print(spec.output.format, answer, |r: AlertRule| {
                format!("alert rule {} saved\n", r.metadata.name)
            })
        }
        RuleCommand::List { output } => {
            let answer = client.get(&scope.path(&["rules"])).await?;
            output::print(output.format, answer, |rules: Vec<AlertRule>| {
                rules_table(&rules).render()
            })
        }
        RuleCommand::Delete { name } => {
            client
                .delete(&scope.path(&["rules", &name]))
                .await
                .with_context(|| format!("deleting alert rule {name}"))?;
            println!("alert rule {name} deleted");
            Ok(())
        }
    }
}

async fn silence(client: &mut ApiClient, scope: &Scope, command: SilenceCommand) -> Result<()> {
    match command {
        SilenceCommand::Add {
            matcher,
            duration,
            comment,
            output,
        } => {
            let ends_at = now_ms() + duration.as_millis() as u64;
            let body = json!({
                "matchers": matcher.into_iter().collect::<BTreeMap<_, _>>(),
                "endsAt": ends_at, "comment": comment,
            });
            let answer = client.post(&scope.path(&["silences"]), &body).await?;
            output::print(output.format, answer, |s: Silence| {
                format!(
                    "silence {} until {}\n",
                    s.metadata.name,
                    rfc3339(s.spec.ends_at)
                )
            })
        }
        SilenceCommand::List { output } => {
            let answer = client.get(&scope.path(&["silences"])).await?;
            output::print(output.format, answer, |silences: Vec<Silence>| {
                silences_table(&silences).render()
            })
        }
        SilenceCommand::Expire { name } => {
            client
                .post(&scope.path(&["silences", &name, "expire"]), &Value::Null)
                .await
                .with_context(|| format!("expiring silence {name}"))?;
            println!("silence {name} expired");
            Ok(())
        }
    }
}

async fn receiver(client: &mut ApiClient, scope: &Scope, command: ReceiverCommand) -> Result<()> {
    match command {
        ReceiverCommand::Add {
            name,
            url,
            secret_stdin,
            keep_secret,
            output,
        } => {
            let secret = match (keep_secret, secret_stdin) {
                (true, _) => None,
                (false, true) => Some(password::from_stdin(1)?.remove(0)),
                (false, false) => Some(password::prompt(&format!("Secret for receiver {name}: "))?),
            };
            if secret.as_deref() == Some("") {
                bail!("the secret is empty");
            }
            let body = json!({"metadata": {"name": name}, "spec": {"url": url, "secret": secret}});
            let answer = client
                .post(&scope.path(&["receivers"]), &body)
                .await
                .with_context(|| format!("adding receiver {name}"))?;
            output::print(output.format, answer, |r: AlertReceiver| {
                format!("receiver {} saved\n", r.metadata.name)
            })
        }
        ReceiverCommand::List { output } => {
            let answer = client.get(&scope.path(&["receivers"])).await?;
            output::print(output.format, answer, |receivers: Vec<AlertReceiver>| {
                let mut table = Table::new(&["NAME", "URL"]);
                for r in receivers {
                    table.row([r.metadata.name, r.spec.url]);
                }
                table.render()
            })
        }
        ReceiverCommand::Delete { name } => {
            client
                .delete(&scope.path(&["receivers", &name]))
                .await
                .with_context(|| format!("deleting receiver {name}"))?;
            println!("receiver {name} deleted");
            Ok(())
        }
        ReceiverCommand::Deliveries { name, output } => {
            let answer = client
                .get(&scope.path(&["receivers", &name, "deliveries"]))
                .await?;
            output::print(output.format, answer, |log: Vec<Delivery>| {
                deliveries_table(&log).render()
            })
        }
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        "-".into()
    } else {
        wharf_api::format_tags(labels)
    }
}

fn rules_table(rules: &[AlertRule]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "EXPRESSION",
        "CONDITION",
        "FOR",
        "SEVERITY",
        "ALERTS",
    ]);
    for rule in rules {
        let s = &rule.spec;
        let range = format!("{}{{{}}}[{}s]", s.metric, s.tags, s.window_seconds);
        let series = match s.rate {
            true => format!("rate({range})"),
            false => range,
        };
        let by = match s.by.is_empty() {
            true => String::new(),
            false => format!(" by {}", s.by.join(",")),
        };
        let firing = rule
            .status
            .alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count();
        table.row([
            rule.metadata.name.clone(),
            format!("{}({series}){by}", s.aggregation.as_str()),
            format!("{} {}", s.op.as_str(), s.threshold),
            format!("{}s", s.for_seconds),
            s.severity.clone(),
            match &rule.status.error {
                Some(error) => format!("error: {error}"),
                None => format!("{firing} firing of {}", rule.status.alerts.len()),
            },
        ]);
    }
    table
}

fn alerts_table(rules: &[AlertRule]) -> Table {
    let now = now_ms();
    let mut table = Table::new(&["RULE", "STATE", "LABELS", "VALUE", "SINCE", "SILENCED BY"]);
    for rule in rules {
        for alert in &rule.status.alerts {
            let since = match alert.state {
                AlertState::Pending => alert.active_at,
                AlertState::Firing => alert.fired_at.unwrap_or(alert.active_at),
                AlertState::Resolved => alert.resolved_at.unwrap_or(alert.active_at),
            };
            table.row([
                rule.metadata.name.clone(),
                alert.state.as_str().into(),
                labels_text(&alert.labels),
                format!("{:.3}", alert.value),
                age(now, since),
                alert.silenced_by.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table
}

fn history_table(rules: &[AlertRule], only: Option<&str>) -> Table {
    let mut rows: Vec<(u64, [String; 5])> = Vec::new();
    for rule in rules
        .iter()
        .filter(|r| only.is_none_or(|o| r.metadata.name == o))
    {
        for t in &rule.status.history {
            let state = |s: Option<AlertState>| s.map_or("-", AlertState::as_str).to_owned();
            rows.push((
                t.at,
                [
                    rfc3339(t.at),
                    rule.metadata.name.clone(),
                    labels_text(&t.labels),
                    format!("{} -> {}", state(t.from), state(t.to)),
                    format!("{:.3}", t.value),
                ],
            ));
        }
    }
    rows.sort_by_key(|(at, _)| *at);
    let mut table = Table::new(&["AT", "RULE", "LABELS", "CHANGE", "VALUE"]);
    for (_, row) in rows {
        table.row(row);
    }
    table
}

fn silences_table(silences: &[Silence]) -> Table {
    let now = now_ms();
    let mut table = Table::new(&["NAME", "MATCHERS", "STATE", "ENDS", "AUTHOR", "COMMENT"]);
    for s in silences {
        table.row([
            s.metadata.name.clone(),
            labels_text(&s.spec.matchers),
            if s.is_active(now) {
                "active"
            } else {
                "expired"
            }
            .into(),
            rfc3339(s.spec.ends_at),
            s.spec.author.clone(),
            s.spec.comment.clone(),
        ]);
    }
    table
}

fn deliveries_table(log: &[Delivery]) -> Table {
    let now = now_ms();
    let mut table = Table::new(&[
        "ID",
        "RULE",
        "STATUS",
        "GROUP",
        "STATE",
        "ATTEMPTS",
        "LAST ERROR",
        "AGE",
    ]);
    for d in log {
        table.row([
            d.id.clone(),
            d.rule.clone(),
            d.status.as_str().into(),
            labels_text(&d.group_labels),
            format!("{:?}", d.state).to_lowercase(),
            d.attempts.to_string(),
            d.last_error.clone().unwrap_or_else(|| "-".into()),
            age(now, d.created_at),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_pairs_parse() {
        assert_eq!(parse_condition(">0.5").unwrap(), (Comparison::Gt, 0.5));
        assert_eq!(parse_condition("<= 10").unwrap(), (Comparison::Le, 10.0));
        assert_eq!(parse_condition("!=0").unwrap(), (Comparison::Ne, 0.0));
        assert!(parse_condition("> x").is_err());
        assert!(parse_condition("0.5").is_err());
        assert!(parse_condition(">>").is_err());
        assert_eq!(parse_pair("a=b").unwrap(), ("a".into(), "b".into()));
        assert!(parse_pair("=b").is_err());
    }
}
