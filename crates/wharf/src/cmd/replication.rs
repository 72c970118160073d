//! `wharf replication ...`: copying images to and from other registries
//! (endpoints) by policies, and following the jobs that carry them out.
//! Everything here is for system administrators.
//!
//! The CLI reads the server's answers as the types the server writes them
//! from (`wharf_api::replication`); policies given as options go as JSON
//! that leaves out what was not given, so the server's defaults apply.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wharf_api::replication::{
    self as wire, Endpoint, EndpointCheck, EndpointSpec, Filters, Job, Policy, Progress, State,
    Task, Triggers,
};

use super::ServerOption;
use super::objects::{manifest_name, read_manifest};
use crate::client::{ApiClient, unix_now};
use crate::output::{
    self, OutputFormat, OutputOption, Table, age, human_size, render_fields, rfc3339, yes_no,
};
use crate::password;
use crate::units;

/// How often `run --wait` asks for the job.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// How often `jobs --watch` redraws.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// Messages longer than this are cut in tables (`-o json` has them whole).
const MESSAGE_WIDTH: usize = 80;

/// `wharf replication`: the server option and a subcommand.
#[derive(Args)]
pub struct ReplicationArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: ReplicationCommand,
}

/// Replication between this server and other registries (administrators).
#[derive(Subcommand)]
pub enum ReplicationCommand {
    /// Add, list, check or delete endpoints (the other registries).
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Add, replace, list, show or delete policies (what to copy where, when).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a policy now and print the job id; --wait follows the job.
    Run {
        /// Policy name.
        policy: String,
        /// Follow the job until it ends; fail unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List jobs, newest first, or show one job with its tasks.
    Jobs {
        /// A job id: show this job and its tasks.
        id: Option<String>,
        /// Only the jobs of this policy.
        #[arg(long, conflicts_with = "id")]
        policy: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 20, conflicts_with = "id")]
        limit: u32,
        /// Redraw every second until no job shown is pending or running.
        #[arg(short = 'w', long)]
        watch: bool,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Cancel a job: running copies stop, pending tasks never start.
    Cancel {
        /// Job id.
        id: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Run a reconcile pass now (repairs what events missed) and list the
    /// jobs it created.
    Reconcile {
        #[command(flatten)]
        output: OutputOption,
    },
}

/// `wharf replication endpoint ...`.
#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Add an endpoint; with --username, its password is asked for (or read
    /// with --password-stdin) and stored encrypted.
    Add {
        /// Endpoint name: lowercase letters, digits and '-'.
        name: String,
        /// Its base URL, e.g. http://10.0.2.1:7700.
        #[arg(long)]
        url: String,
        /// Another Wharf, or any OCI registry.
        #[arg(long, value_enum, default_value_t = EndpointKind::Wharf)]
        kind: EndpointKind,
        /// The account to use there (a robot account, typically).
        #[arg(long)]
        username: Option<String>,
        /// Read the password from the first line of standard input instead
        /// of asking on the terminal.
        #[arg(long, requires = "username")]
        password_stdin: bool,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List endpoints.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete an endpoint no policy uses.
    Delete {
        /// Endpoint name.
        name: String,
    },
    /// Check that an endpoint answers and accepts its credentials.
    Check {
        /// Endpoint name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
}

/// `wharf replication policy ...`.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Add a policy from options, or from a YAML or JSON file (-f).
    Add {
        #[command(flatten)]
        definition: Box<PolicyFlags>,
        /// Read the policy from this YAML or JSON file ('-': standard input)
        /// instead of options.
        #[arg(
            short = 'f',
            long = "file",
            value_name = "FILE",
            conflicts_with = "definition"
        )]
        file: Option<String>,
        /// Replace the policy of that name instead of adding a new one.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List policies.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Show a policy.
    Show {
        /// Policy name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete a policy; its finished jobs stay listed.
    Delete {
        /// Policy name.
        name: String,
    },
}

/// A policy given as options.
#[derive(Args, Debug, Default)]
#[group(id = "definition", multiple = true)]
pub struct PolicyFlags {
    /// Policy name: lowercase letters, digits and '-'.
    #[arg(required_unless_present = "file")]
    name: Option<String>,
    /// The endpoint to copy to or from.
    #[arg(long, required_unless_present = "file")]
    endpoint: Option<String>,
    /// Push to the endpoint, or pull from it [default: push].
    #[arg(long, value_enum)]
    direction: Option<Direction>,
    /// Only this project (repeatable) [default: all].
    #[arg(long = "project", value_name = "PROJECT")]
    projects: Vec<String>,
    /// Only repositories matching this glob (`*`, `**`, `?`, `{a,b}`),
    /// e.g. 'shop/**'.
    #[arg(long, value_name = "GLOB")]
    repository: Option<String>,
    /// Only tags matching this glob, e.g. 'v*'.
    #[arg(long, value_name = "GLOB")]
    tag: Option<String>,
    /// Only artifacts whose labels or annotations hold KEY=VALUE (or KEY).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    label: Option<String>,
    /// Put the copies in this project at the destination.
    #[arg(long, value_name = "NS")]
    dest_namespace: Option<String>,
    /// Run on every push (and delete) the filters match; push policies only.
    #[arg(long)]
    on_event: bool,
    /// Also run on this cron schedule, in UTC, e.g. '0 3 * * *'.
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// Deleting a tag here deletes it at the destination too.
    #[arg(long)]
    replicate_deletion: bool,
    /// Keep a different artifact already under the same tag at the
    /// destination (registry endpoints; Wharf peers follow the origin rule).
    #[arg(long)]
    no_override: bool,
    /// Bandwidth for the whole policy, e.g. 10MiB/s, 500KB/s [default:
    /// unlimited].
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    bandwidth: Option<u64>,
    /// Artifacts copied at once (1-64) [default: the server's, 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: Option<u32>,
    /// Add the policy disabled: it keeps its definition but never runs.
    #[arg(long)]
    disabled: bool,
}

/// What kind of registry an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EndpointKind {
    /// Another Wharf: copies carry their origin, so nothing loops back.
    Wharf,
    /// Any OCI Distribution registry.
    Registry,
}

impl From<EndpointKind> for wire::EndpointKind {
    fn from(kind: EndpointKind) -> Self {
        match kind {
            EndpointKind::Wharf => wire::EndpointKind::Wharf,
            EndpointKind::Registry => wire::EndpointKind::Registry,
        }
    }
}

/// Which way a policy copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// From this server to the endpoint.
    Push,
    /// From the endpoint to this server.
    Pull,
}

impl From<Direction> for wire::Direction {
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Push => wire::Direction::Push,
            Direction::Pull => wire::Direction::Pull,
        }
    }
}

/// `KEY=VALUE` or `KEY`, with a non-empty key.
fn parse_label(text: &str) -> Result<String, String> {
    let key = text.split_once('=').map_or(text, |(key, _)| key);
    if key.trim().is_empty() {
        return Err(format!(
            "invalid label {text:?}: expected KEY=VALUE or KEY, e.g. tier=prod"
        ));
    }
    Ok(text.to_string())
}

/// A rate in bytes per second: a size (`10MiB`, `500KB`, `1GiB`),
/// optionally followed by `/s`.
fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let size = trimmed.strip_suffix("/s").unwrap_or(trimmed);
    let bytes = units::parse_size(size)
        .map_err(|err| format!("{err} (a rate is a size per second, e.g. 10MiB/s)"))?;
    if bytes == 0 {
        return Err(format!(
            "bandwidth {text:?} would never copy anything: give a rate above 0 or leave --bandwidth out"
        ));
    }
    Ok(bytes)
}

/// The body of `POST /replication/endpoints`; the password only if given.
fn endpoint_body(
    name: &str,
    url: &str,
    kind: EndpointKind,
    username: Option<&str>,
    password: Option<&str>,
) -> Value {
    json!(EndpointSpec {
        name: name.to_string(),
        url: url.to_string(),
        kind: kind.into(),
        username: username.map(str::to_string),
        password: password.map(str::to_string),
    })
}

impl PolicyFlags {
    /// The policy as the server takes it. Optional fields are left out, so
    /// the server's defaults apply.
    fn body(&self) -> Result<Value> {
        let (Some(name), Some(endpoint)) = (&self.name, &self.endpoint) else {
            bail!("a policy needs a NAME and --endpoint (or -f FILE)");
        };
        let direction = self.direction.unwrap_or(Direction::Push);
        if self.on_event && direction == Direction::Pull {
            bail!(
                "--on-event needs --direction push: pull policies run by --cron, \
                 by `wharf replication run` and in reconcile passes"
            );
        }
        let mut filters = Map::new();
        if !self.projects.is_empty() {
            filters.insert("projects".into(), json!(self.projects));
        }
        let optional = [
            ("repository", &self.repository),
            ("tag", &self.tag),
            ("label", &self.label),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                filters.insert(key.into(), value.as_str().into());
            }
        }
        let mut triggers = json!({ "onEvent": self.on_event });
        if let Some(cron) = &self.cron {
            triggers["cron"] = cron.as_str().into();
        }
        let mut body = json!({
            "name": name,
            "endpoint": endpoint,
            "direction": wire::Direction::from(direction),
            "filters": filters,
            "triggers": triggers,
            "replicateDeletion": self.replicate_deletion,
            "overrideExisting": !self.no_override,
            "enabled": !self.disabled,
        });
        if let Some(ns) = &self.dest_namespace {
            body["destNamespace"] = ns.as_str().into();
        }
        if let Some(rate) = self.bandwidth {
            body["bandwidthLimit"] = rate.into();
        }
        if let Some(concurrency) = self.concurrency {
            body["concurrency"] = concurrency.into();
        }
        Ok(body)
    }
}

/// A policy file (YAML or JSON) as the JSON the server takes, and its name.
fn policy_from_text(text: &str, source: &str) -> Result<(String, Value)> {
    let policy: Value = serde_norway::from_str(text)
        .with_context(|| format!("{source} is neither YAML nor JSON"))?;
    let Value::Object(fields) = &policy else {
        bail!("{source} does not hold a policy: expected a mapping with name, endpoint, ...");
    };
    if fields.contains_key("items") {
        bail!("{source} holds a list of policies: give one policy per file");
    }
    let Some(name) = fields.get("name").and_then(Value::as_str) else {
        bail!("the policy in {source} has no name: add name: NAME");
    };
    Ok((name.to_string(), policy))
}

// ---- what the server answers ----

/// A list that may also come as `null`.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<T>>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// A list answer: `{"items": [...]}`, where the list may also be `null`
/// or left out.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct Items<T> {
    #[serde(default, deserialize_with = "null_as_empty")]
    items: Vec<T>,
}

/// A job as answers carry it: alone (run, cancel, reconcile), with its
/// counts (a `JobSummary` in job lists) or with its tasks (a `JobDetail`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobAnswer {
    #[serde(flatten)]
    job: Job,
    #[serde(default)]
    progress: Option<Progress>,
    #[serde(default, deserialize_with = "null_as_empty")]
    task_list: Vec<Task>,
}

impl JobAnswer {
    /// The server's counts, or counts of the tasks shown.
    fn progress(&self) -> Progress {
        self.progress
            .clone()
            .unwrap_or_else(|| Progress::of(&self.task_list))
    }

    /// Tasks in all: the job's count, or the tasks listed if more.
    fn task_count(&self) -> usize {
        (self.job.tasks as usize).max(self.task_list.len())
    }
}

/// Whether the `state` of an answer (a job's or a task's) is pending or
/// running.
fn state_active(value: &Value) -> bool {
    State::deserialize(&value["state"]).is_ok_and(|state| !state.is_final())
}

// ---- running the commands ----

/// Runs a `wharf replication` subcommand.
pub async fn run(args: ReplicationArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        ReplicationCommand::Endpoint(command) => endpoint(&mut client, command).await,
        ReplicationCommand::Policy(command) => policy(&mut client, command).await,
        ReplicationCommand::Run {
            policy,
            wait,
            output,
        } => run_policy(&mut client, &policy, wait, output.format).await,
        ReplicationCommand::Jobs {
            id,
            policy,
            limit,
            watch,
            output,
        } => {
            let query = JobsQuery { id, policy, limit };
            jobs(&mut client, &query, watch, output.format).await
        }
        ReplicationCommand::Cancel { id, output } => {
            let answer = client
                .post(&["replication", "jobs", &id, "cancel"], &json!({}))
                .await
                .with_context(|| format!("cancelling replication job {id}"))?;
            output::print(output.format, answer, |job: Job| match job.state {
                State::Cancelled => format!(
                    "cancelled job {}: running copies stop, pending tasks will not start\n",
                    job.id
                ),
                state => format!("job {} had already ended: {state}\n", job.id),
            })
        }
        ReplicationCommand::Reconcile { output } => {
            let answer = client
                .post(&["replication", "reconcile"], &json!({}))
                .await
                .context("running a replication reconcile pass")?;
            output::print(output.format, answer, |jobs: Items<JobAnswer>| {
                if jobs.items.is_empty() {
                    "nothing to repair: the reconcile pass created no job\n".to_string()
                } else {
                    jobs_table(jobs.items, unix_now() * 1000)
                }
            })
        }
    }
}

async fn endpoint(client: &mut ApiClient, command: EndpointCommand) -> Result<()> {
    match command {
        EndpointCommand::Add {
            name,
            url,
            kind,
            username,
            password_stdin,
            output,
        } => {
            let password = match &username {
                None => None,
                Some(_) if password_stdin => Some(password::from_stdin(1)?.remove(0)),
                Some(user) => Some(password::prompt(&format!(
                    "password for {user} at endpoint {name}: "
                ))?),
            };
            let body = endpoint_body(&name, &url, kind, username.as_deref(), password.as_deref());
            let answer = client
                .post(&["replication", "endpoints"], &body)
                .await
                .with_context(|| format!("adding endpoint {name}"))?;
            output::print(output.format, answer, |endpoint: Endpoint| {
                let account = endpoint
                    .username
                    .map(|user| format!(" as {user}"))
                    .unwrap_or_default();
                format!(
                    "added endpoint {} ({} at {}{account}); check it with wharf replication endpoint check {}\n",
                    endpoint.name, endpoint.kind, endpoint.url, endpoint.name
                )
            })
        }
        EndpointCommand::List { output } => {
            let answer = client
                .get(&["replication", "endpoints"])
                .await
                .context("listing replication endpoints")?;
            output::print(output.format, answer, |list: Items<Endpoint>| {
                endpoints_table(list.items, unix_now() * 1000)
            })
        }
        EndpointCommand::Delete { name } => {
            client
                .delete(&["replication", "endpoints", &name])
                .await
                .with_context(|| format!("deleting endpoint {name}"))?;
            println!("deleted endpoint {name}");
            Ok(())
        }
        EndpointCommand::Check { name, output } => {
            let answer = client
                .post(&["replication", "endpoints", &name, "check"], &json!({}))
                .await
                .with_context(|| format!("checking endpoint {name}"))?;
            if output.format != OutputFormat::Table {
                return output::print(output.format, answer, |_: Value| String::new());
            }
            let check: EndpointCheck = serde_json::from_value(answer)
                .context("the server's answer is not what wharf expects; try -o json")?;
            if !check.reachable {
                bail!(
                    "endpoint {name} is not reachable: check its URL and credentials \
                     (wharf replication endpoint list)"
                );
            }
            match check.instance {
                Some(instance) => {
                    println!("endpoint {name} is reachable: Wharf instance {instance}")
                }
                None => println!("endpoint {name} is reachable"),
            }
            Ok(())
        }
    }
}

async fn policy(client: &mut ApiClient, command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Add {
            definition,
            file,
            replace,
            output,
        } => {
            let (name, body) = match &file {
                Some(file) => {
                    let text = read_manifest(file).await?;
                    policy_from_text(&text, manifest_name(file))?
                }
                None => {
                    let body = definition.body()?;
                    (definition.name.clone().unwrap_or_default(), body)
                }
            };
            let answer = if replace {
                client
                    .put(&["replication", "policies", &name], &body)
                    .await
                    .with_context(|| format!("replacing policy {name}"))?
            } else {
                client
                    .post(&["replication", "policies"], &body)
                    .await
                    .with_context(|| format!("adding policy {name}"))?
            };
            let verb = if replace { "replaced" } else { "added" };
            output::print(output.format, answer, |policy: Policy| {
                format!(
                    "{verb} policy {}: {}\n",
                    policy.name,
                    policy_summary(&policy)
                )
            })
        }
        PolicyCommand::List { output } => {
            let answer = client
                .get(&["replication", "policies"])
                .await
                .context("listing replication policies")?;
            output::print(output.format, answer, |list: Items<Policy>| {
                policies_table(list.items)
            })
        }
        PolicyCommand::Show { name, output } => {
            let answer = client
                .get(&["replication", "policies", &name])
                .await
                .with_context(|| format!("reading policy {name}"))?;
            output::print(output.format, answer, |policy: Policy| policy_text(&policy))
        }
        PolicyCommand::Delete { name } => {
            client
                .delete(&["replication", "policies", &name])
                .await
                .with_context(|| format!("deleting policy {name}"))?;
            println!("deleted policy {name}");
            Ok(())
        }
    }
}

/// `wharf replication run`: starts a job and, with `wait`, follows it.
async fn run_policy(
    client: &mut ApiClient,
    policy: &str,
    wait: bool,
    format: OutputFormat,
) -> Result<()> {
    let answer = client
        .post(&["replication", "policies", policy, "run"], &json!({}))
        .await
        .with_context(|| format!("running policy {policy}"))?;
    let job: Job = serde_json::from_value(answer.clone())
        .context("the server's answer is not what wharf expects; try -o json")?;
    if !wait {
        return output::print(format, answer, |job: Job| format!("{}\n", job.id));
    }
    if format == OutputFormat::Table {
        // First, so a script can read it while the job runs.
        println!("{}", job.id);
        std::io::stdout().flush().ok();
    }
    let id = job.id;
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    let (answer, job) = loop {
        let answer = client
            .get(&["replication", "jobs", &id])
            .await
            .with_context(|| {
                format!(
                    "following replication job {id} (it keeps running on the server; \
                     follow it with wharf replication jobs {id} --watch)"
                )
            })?;
        let job: JobAnswer = serde_json::from_value(answer.clone())
            .context("the server's answer is not what wharf expects; try -o json")?;
        let line = progress_line(&job);
        if line != last_line {
            if terminal {
                eprint!("\r\x1b[K{line}");
            } else {
                eprintln!("{line}");
            }
            last_line = line;
        }
        if job.job.state.is_final() {
            if terminal {
                eprintln!();
            }
            break (answer, job);
        }
        tokio::time::sleep(WAIT_POLL).await;
    };
    if format != OutputFormat::Table {
        output::print(format, answer, |_: Value| String::new())?;
    }
    wait_outcome(&job)
}

/// `job 0190f1: running, 3/10 tasks done, 1 failed, 12 MiB copied`
fn progress_line(job: &JobAnswer) -> String {
    let progress = job.progress();
    let mut line = format!(
        "job {}: {}, {}/{} tasks done",
        job.job.id,
        job.job.state,
        progress.succeeded + progress.skipped,
        job.task_count()
    );
    if progress.failed > 0 {
        line.push_str(&format!(", {} failed", progress.failed));
    }
    if progress.cancelled > 0 {
        line.push_str(&format!(", {} cancelled", progress.cancelled));
    }
    line.push_str(&format!(", {} copied", human_size(progress.bytes_done)));
    line
}

/// Success for a job that succeeded or had nothing to do; an error that
/// says where to look otherwise.
fn wait_outcome(job: &JobAnswer) -> Result<()> {
    let id = &job.job.id;
    let why = job
        .job
        .error
        .as_deref()
        .map(|error| format!(": {error}"))
        .unwrap_or_default();
    match job.job.state {
        State::Succeeded | State::Skipped => Ok(()),
        State::Cancelled => bail!("job {id} was cancelled{why}"),
        State::Failed => {
            let failed = job.progress().failed;
            if failed > 0 && why.is_empty() {
                bail!(
                    "job {id} failed: {failed} of {} tasks failed; see wharf replication jobs {id}",
                    job.task_count()
                )
            }
            bail!("job {id} failed{why}; see wharf replication jobs {id}")
        }
        other => bail!("job {id} ended {other}{why}; see wharf replication jobs {id}"),
    }
}

/// What `wharf replication jobs` asks for.
struct JobsQuery {
    id: Option<String>,
    policy: Option<String>,
    limit: u32,
}

/// `wharf replication jobs`: one snapshot, or one per second with `watch`.
async fn jobs(
    client: &mut ApiClient,
    query: &JobsQuery,
    watch: bool,
    format: OutputFormat,
) -> Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let answer = match &query.id {
            Some(id) => client
                .get(&["replication", "jobs", id])
                .await
                .with_context(|| format!("reading replication job {id}"))?,
            None => {
                let mut params = vec![("limit", query.limit.to_string())];
                if let Some(policy) = &query.policy {
                    params.push(("policy", policy.clone()));
                }
                client
                    .get_with_query(&["replication", "jobs"], &params)
                    .await
                    .context("listing replication jobs")?
            }
        };
        let active = if query.id.is_some() {
            job_active(&answer)
        } else {
            list_active(&answer)
        };
        if watch {
            if terminal {
                // Home and clear: the snapshot replaces the last one.
                print!("\x1b[H\x1b[2J");
            } else if !first {
                // Documents in a stream: YAML needs a separator, JSON a line.
                let separator = match format {
                    OutputFormat::Yaml => "---",
                    _ => "",
                };
                println!("{separator}");
            }
        }
        let now = unix_now() * 1000;
        if query.id.is_some() {
            output::print(format, answer, |job: JobAnswer| job_text(&job, now))?;
        } else {
            output::print(format, answer, |list: Items<JobAnswer>| {
                jobs_table(list.items, now)
            })?;
        }
        std::io::stdout().flush().ok();
        if !watch || !active {
            return Ok(());
        }
        first = false;
        tokio::time::sleep(WATCH_POLL).await;
    }
}

/// Whether a job in detail, or one of its tasks, is pending or running.
fn job_active(job: &Value) -> bool {
    state_active(job)
        || job["taskList"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(state_active))
}

/// Whether a job of a list is pending or running.
fn list_active(list: &Value) -> bool {
    list["items"]
        .as_array()
        .is_some_and(|jobs| jobs.iter().any(job_active))
}

// ---- what people read ----

fn endpoints_table(endpoints: Vec<Endpoint>, now_ms: u64) -> String {
    let mut table = Table::new(&["NAME", "KIND", "URL", "USERNAME", "PASSWORD", "AGE"]);
    for endpoint in endpoints {
        table.row([
            endpoint.name,
            endpoint.kind.to_string(),
            endpoint.url,
            endpoint.username.unwrap_or_else(|| "-".into()),
            if endpoint.sealed_password.is_some() {
                "stored"
            } else {
                "-"
            }
            .to_string(),
            age(now_ms, endpoint.created_at),
        ]);
    }
    table.render()
}

/// `projects=shop,base repository=shop/** tag=v*`, or `everything`.
fn filters_text(filters: &Filters) -> String {
    let mut parts = Vec::new();
    if !filters.projects.is_empty() {
        parts.push(format!("projects={}", filters.projects.join(",")));
    }
    if let Some(repository) = &filters.repository {
        parts.push(format!("repository={repository}"));
    }
    if let Some(tag) = &filters.tag {
        parts.push(format!("tag={tag}"));
    }
    if let Some(label) = &filters.label {
        parts.push(format!("label={label}"));
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join(" ")
    }
}

/// `on event, cron 0 3 * * *`, or `manual` when only runs by hand.
fn triggers_text(triggers: &Triggers) -> String {
    let mut parts = Vec::new();
    if triggers.on_event {
        parts.push("on event".to_string());
    }
    if let Some(cron) = &triggers.cron {
        parts.push(format!("cron {cron}"));
    }
    if parts.is_empty() {
        "manual".into()
    } else {
        parts.join(", ")
    }
}

fn bandwidth_text(limit: Option<u64>) -> String {
    limit.map_or_else(
        || "unlimited".into(),
        |rate| format!("{}/s", human_size(rate)),
    )
}

/// `push to idc-b, projects=shop, on event`
fn policy_summary(policy: &Policy) -> String {
    let way = if policy.direction == wire::Direction::Pull {
        "pull from"
    } else {
        "push to"
    };
    let mut text = format!(
        "{way} {}, {}, {}",
        policy.endpoint,
        filters_text(&policy.filters),
        triggers_text(&policy.triggers)
    );
    if !policy.enabled {
        text.push_str(" (disabled)");
    }
    text
}

fn policies_table(policies: Vec<Policy>) -> String {
    let mut table = Table::new(&[
        "NAME",
        "ENDPOINT",
        "DIRECTION",
        "FILTERS",
        "TRIGGERS",
        "BANDWIDTH",
        "ENABLED",
    ]);
    for policy in policies {
        table.row([
            policy.name.clone(),
            policy.endpoint.clone(),
            policy.direction.to_string(),
            filters_text(&policy.filters),
            triggers_text(&policy.triggers),
            bandwidth_text(policy.bandwidth_limit),
            yes_no(policy.enabled),
        ]);
    }
    table.render()
}

fn policy_text(policy: &Policy) -> String {
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let filters = &policy.filters;
    render_fields(&[
        ("Name", policy.name.clone()),
        ("Endpoint", policy.endpoint.clone()),
        ("Direction", policy.direction.to_string()),
        (
            "Projects",
            if filters.projects.is_empty() {
                "(all)".into()
            } else {
                filters.projects.join(", ")
            },
        ),
        ("Repository", or_dash(&filters.repository)),
        ("Tag", or_dash(&filters.tag)),
        ("Label", or_dash(&filters.label)),
        ("Destination namespace", or_dash(&policy.dest_namespace)),
        ("Triggers", triggers_text(&policy.triggers)),
        ("Replicate deletion", yes_no(policy.replicate_deletion)),
        ("Override existing", yes_no(policy.override_existing)),
        ("Bandwidth", bandwidth_text(policy.bandwidth_limit)),
        ("Concurrency", policy.concurrency.to_string()),
        ("Enabled", yes_no(policy.enabled)),
    ])
}

/// `8/10` (succeeded and skipped of all), then failures and cancellations.
fn tasks_cell(job: &JobAnswer) -> String {
    let progress = job.progress();
    let mut cell = format!(
        "{}/{}",
        progress.succeeded + progress.skipped,
        job.task_count()
    );
    if progress.failed > 0 {
        cell.push_str(&format!(", {} failed", progress.failed));
    }
    if progress.cancelled > 0 {
        cell.push_str(&format!(", {} cancelled", progress.cancelled));
    }
    cell
}

fn jobs_table(jobs: Vec<JobAnswer>, now_ms: u64) -> String {
    let mut table = Table::new(&["ID", "POLICY", "TRIGGER", "STATE", "TASKS", "BYTES", "AGE"]);
    for answer in jobs {
        let job = &answer.job;
        table.row([
            job.id.clone(),
            job.policy.clone(),
            job.trigger.to_string(),
            job.state.to_string(),
            tasks_cell(&answer),
            human_size(answer.progress().bytes_done),
            age(now_ms, job.created_at),
        ]);
    }
    table.render()
}

/// `repo:tag`, or `repo@sha256:...` for a digest.
fn reference_text(repository: &str, reference: &str) -> String {
    if reference.contains(':') {
        format!("{repository}@{reference}")
    } else {
        format!("{repository}:{reference}")
    }
}

/// `1.5 MiB/3 MiB (50%)`; `-` before the size is known.
fn bytes_progress(done: u64, total: u64) -> String {
    if total == 0 {
        return if done == 0 {
            "-".into()
        } else {
            human_size(done)
        };
    }
    let percent = (u128::from(done) * 100 / u128::from(total)).min(100);
    format!("{}/{} ({percent}%)", human_size(done), human_size(total))
}

/// One line of at most `width` characters.
fn truncate(text: &str, width: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= width {
        return line;
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn job_text(answer: &JobAnswer, now_ms: u64) -> String {
    let job = &answer.job;
    let progress = answer.progress();
    let mut counts = vec![
        format!("{} succeeded", progress.succeeded),
        format!("{} skipped", progress.skipped),
        format!("{} failed", progress.failed),
    ];
    if progress.cancelled > 0 {
        counts.push(format!("{} cancelled", progress.cancelled));
    }
    if progress.remaining > 0 {
        counts.push(format!("{} remaining", progress.remaining));
    }
    let mut fields = vec![
        ("Job", job.id.clone()),
        ("Policy", job.policy.clone()),
        ("Trigger", job.trigger.to_string()),
        ("State", job.state.to_string()),
        (
            "Created",
            format!(
                "{} ({} ago)",
                rfc3339(job.created_at),
                age(now_ms, job.created_at)
            ),
        ),
    ];
    if let Some(finished) = job.finished_at {
        fields.push(("Finished", rfc3339(finished)));
    }
    fields.push((
        "Tasks",
        format!("{} ({})", answer.task_count(), counts.join(", ")),
    ));
    fields.push(("Copied", human_size(progress.bytes_done)));
    if let Some(error) = &job.error {
        fields.push(("Error", error.clone()));
    }
    let mut text = render_fields(&fields);
    if !answer.task_list.is_empty() {
        text.push('\n');
        text.push_str(&tasks_table(&answer.task_list));
    }
    text
}

fn tasks_table(tasks: &[Task]) -> String {
    let mut table = Table::new(&[
        "#",
        "KIND",
        "SOURCE",
        "DESTINATION",
        "STATE",
        "PROGRESS",
        "ATTEMPTS",
        "MESSAGE",
    ]);
    for task in tasks {
        table.row([
            task.index.to_string(),
            task.kind.to_string(),
            reference_text(&task.repository, &task.reference),
            task.destination.clone(),
            task.state.to_string(),
            bytes_progress(task.bytes_done, task.bytes_total),
            task.attempts.to_string(),
            task.message
                .as_deref()
                .map_or_else(String::new, |m| truncate(m, MESSAGE_WIDTH)),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The command group as `wharf replication` parses it.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplicationArgs,
    }

    fn parse_args(args: &[&str]) -> Result<ReplicationArgs, clap::Error> {
        let argv = std::iter::once(&"replication").chain(args);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    fn parse(line: &str) -> Result<ReplicationArgs, clap::Error> {
        parse_args(&line.split_whitespace().collect::<Vec<_>>())
    }

    fn policy_flags(line: &str) -> PolicyFlags {
        flags_of(parse(line).unwrap())
    }

    fn flags_of(args: ReplicationArgs) -> PolicyFlags {
        match args.command {
            ReplicationCommand::Policy(PolicyCommand::Add { definition, .. }) => *definition,
            _ => panic!("not policy add"),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rates_are_sizes_per_second() {
        assert_eq!(parse_rate("10MiB/s"), Ok(10 << 20));
        assert_eq!(parse_rate("500KB/s"), Ok(500_000));
        assert_eq!(parse_rate("1GiB"), Ok(1 << 30));
        assert_eq!(parse_rate(" 4096 "), Ok(4096));
        assert!(parse_rate("0/s").unwrap_err().contains("never copy"));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10MiB/h").is_err());
    }

    #[test]
    fn labels_need_a_key() {
        assert_eq!(parse_label("tier=prod").unwrap(), "tier=prod");
        assert_eq!(parse_label("signed").unwrap(), "signed");
        assert!(parse_label("=prod").is_err());
    }

    #[test]
    fn endpoint_bodies_carry_the_password_only_when_given() {
        assert_eq!(
            endpoint_body("idc-b", "http://b:7700", EndpointKind::Wharf, None, None),
            json!({"name": "idc-b", "url": "http://b:7700", "kind": "wharf"})
        );
        assert_eq!(
            endpoint_body(
                "hub",
                "http://hub",
                EndpointKind::Registry,
                Some("robot$shop+sync"),
                Some("s3cret")
            ),
            json!({
                "name": "hub", "url": "http://hub", "kind": "registry",
                "username": "robot$shop+sync", "password": "s3cret",
            })
        );
    }

    #[test]
    fn password_stdin_needs_a_username() {
        assert!(parse("endpoint add b --url http://b --password-stdin").is_err());
        assert!(parse("endpoint add b --url http://b --username u --password-stdin").is_ok());
        assert!(parse("endpoint add b --url http://b --kind registry").is_ok());
        assert!(parse("endpoint add b --url http://b --kind docker").is_err());
    }

    #[test]
    fn minimal_policies_leave_defaults_to_the_server() {
        let body = policy_flags("policy add to-b --endpoint idc-b")
            .body()
            .unwrap();
        assert_eq!(
            body,
            json!({
                "name": "to-b",
                "endpoint": "idc-b",
                "direction": "push",
                "filters": {},
                "triggers": {"onEvent": false},
                "replicateDeletion": false,
                "overrideExisting": true,
                "enabled": true,
            })
        );
    }

    #[test]
    fn policy_options_become_the_policy() {
        let mut args: Vec<&str> = "policy add shop-to-b --endpoint idc-b --project shop \
             --project base --repository shop/** --tag v* --label tier=prod \
             --dest-namespace mirror --on-event --replicate-deletion --no-override \
             --bandwidth 10MiB/s --concurrency 4 --disabled"
            .split_whitespace()
            .collect();
        args.extend(["--cron", "0 3 * * *"]);
        let flags = flags_of(parse_args(&args).unwrap());
        let body = flags.body().unwrap();
        assert_eq!(
            body,
            json!({
                "name": "shop-to-b",
                "endpoint": "idc-b",
                "direction": "push",
                "filters": {
                    "projects": ["shop", "base"],
                    "repository": "shop/**",
                    "tag": "v*",
                    "label": "tier=prod",
                },
                "destNamespace": "mirror",
                "triggers": {"onEvent": true, "cron": "0 3 * * *"},
                "replicateDeletion": true,
                "overrideExisting": false,
                "bandwidthLimit": 10 << 20,
                "concurrency": 4,
                "enabled": false,
            })
        );
    }

    #[test]
    fn policy_options_are_checked() {
        let pull_on_event = policy_flags("policy add p --endpoint e --direction pull --on-event");
        let err = pull_on_event.body().unwrap_err().to_string();
        assert!(err.contains("--direction push"), "{err}");
        assert!(parse("policy add p").is_err(), "--endpoint is required");
        assert!(
            parse("policy add --endpoint e").is_err(),
            "NAME is required"
        );
        assert!(parse("policy add p --endpoint e --concurrency 0").is_err());
        assert!(parse("policy add p --endpoint e --concurrency 65").is_err());
        assert!(parse("policy add p --endpoint e --bandwidth 0").is_err());
        assert!(parse("policy add -f p.yaml").is_ok());
        assert!(parse("policy add -f p.yaml --replace").is_ok());
        assert!(parse("policy add -f p.yaml --tag v*").is_err());
        assert!(parse("policy add p -f p.yaml").is_err());
    }

    #[test]
    fn jobs_options() {
        assert!(parse("jobs --policy p --limit 5 --watch").is_ok());
        assert!(parse("jobs 0190 -w -o json").is_ok());
        assert!(parse("jobs 0190 --policy p").is_err());
    }

    #[test]
    fn policy_files_are_yaml_or_json() {
        let yaml =
            "name: to-b\nendpoint: idc-b\nfilters:\n  projects: [shop]\nbandwidthLimit: 1048576\n";
        let (name, policy) = policy_from_text(yaml, "p.yaml").unwrap();
        assert_eq!(name, "to-b");
        assert_eq!(
            policy,
            json!({
                "name": "to-b",
                "endpoint": "idc-b",
                "filters": {"projects": ["shop"]},
                "bandwidthLimit": 1_048_576,
            })
        );
        let json_text = r#"{"name":"to-b","endpoint":"idc-b","bogus":1}"#;
        let (_, policy) = policy_from_text(json_text, "p.json").unwrap();
        assert_eq!(
            policy["bogus"], 1,
            "unknown fields reach the server, which says so"
        );
        let err = policy_from_text("endpoint: idc-b\n", "p.yaml").unwrap_err();
        assert!(err.to_string().contains("no name"), "{err}");
        assert!(policy_from_text("- a\n- b\n", "p.yaml").is_err());
        assert!(policy_from_text("items: []\n", "p.yaml").is_err());
    }

    fn detail() -> JobAnswer {
        serde_json::from_value(json!({
            "id": "0190a",
            "policy": "shop-to-b",
            "trigger": "manual",
            "state": "running",
            "createdAt": 1_735_787_045_000u64,
            "tasks": 3,
            "taskList": [
                {"job": "0190a", "index": 0, "kind": "copy", "repository": "shop/web",
                 "reference": "1.0", "destination": "mirror/web", "state": "succeeded",
                 "attempts": 1, "bytesTotal": 3 << 20, "bytesDone": 3 << 20,
                 "digest": "sha256:ab", "updatedAt": 1},
                {"job": "0190a", "index": 1, "kind": "copy", "repository": "shop/api",
                 "reference": "sha256:cd", "destination": "mirror/api", "state": "running",
                 "attempts": 2, "bytesTotal": 2 << 20, "bytesDone": 1 << 20, "updatedAt": 1},
                {"job": "0190a", "index": 2, "kind": "delete", "repository": "shop/old",
                 "reference": "v0", "destination": "mirror/old", "state": "failed",
                 "attempts": 5, "bytesTotal": 0, "bytesDone": 0,
                 "message": format!("connection refused\n{}", "x".repeat(100)), "updatedAt": 1},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn a_job_shows_its_tasks() {
        let job = detail();
        let now = 1_735_787_045_000 + 90_000;
        let text = job_text(&job, now);
        let message = format!("connection refused {}…", "x".repeat(60));
        let expected = format!(
            "Job:      0190a\n\
             Policy:   shop-to-b\n\
             Trigger:  manual\n\
             State:    running\n\
             Created:  2025-01-02T03:04:05Z (1m ago)\n\
             Tasks:    3 (1 succeeded, 0 skipped, 1 failed, 1 remaining)\n\
             Copied:   4 MiB\n\
             \n\
             #  KIND    SOURCE              DESTINATION  STATE      PROGRESS            ATTEMPTS  MESSAGE\n\
             0  copy    shop/web:1.0        mirror/web   succeeded  3 MiB/3 MiB (100%)  1\n\
             1  copy    shop/api@sha256:cd  mirror/api   running    1 MiB/2 MiB (50%)   2\n\
             2  delete  shop/old:v0         mirror/old   failed     -                   5         {message}\n"
        );
        assert_eq!(text, expected);
        assert_eq!(message.chars().count(), MESSAGE_WIDTH);
        assert_eq!(
            progress_line(&job),
            "job 0190a: running, 1/3 tasks done, 1 failed, 4 MiB copied"
        );
    }

    #[test]
    fn answers_may_leave_out_or_null_fields() {
        let job: JobAnswer = serde_json::from_value(json!({
            "id": "1", "policy": "p", "trigger": "manual", "state": "cancelled",
            "createdAt": 0, "tasks": 0, "taskList": null,
        }))
        .unwrap();
        assert!(job.task_list.is_empty());
        let list: Items<JobAnswer> = serde_json::from_value(json!({"items": null})).unwrap();
        assert!(list.items.is_empty());
        let list: Items<JobAnswer> = serde_json::from_value(json!({})).unwrap();
        assert!(list.items.is_empty());
    }

    #[test]
    fn job_lists_count_tasks() {
        let list: Items<JobAnswer> = serde_json::from_value(json!({"items": [
            {"id": "2", "policy": "p", "trigger": "event", "state": "failed",
             "createdAt": 1000, "tasks": 10, "error": null,
             "progress": {"succeeded": 7, "skipped": 1, "failed": 2, "cancelled": 0,
                          "remaining": 0, "bytesDone": 1536}},
            {"id": "1", "policy": "p", "trigger": "cron", "state": "succeeded",
             "createdAt": 0, "tasks": 0},
        ]}))
        .unwrap();
        assert_eq!(
            jobs_table(list.items, 61_000),
            "ID  POLICY  TRIGGER  STATE      TASKS           BYTES    AGE\n\
             2   p       event    failed     8/10, 2 failed  1.5 KiB  1m\n\
             1   p       cron     succeeded  0/0             0 B      <unknown>\n"
        );
    }

    #[test]
    fn watches_stop_when_nothing_shown_is_active() {
        let job = |state: &str, task: &str| json!({"id": "1", "state": state, "taskList": [{"state": task}]});
        assert!(job_active(&job("running", "pending")));
        assert!(
            job_active(&job("cancelled", "running")),
            "a copy still stopping"
        );
        assert!(!job_active(&job("failed", "failed")));
        assert!(list_active(
            &json!({"items": [{"state": "succeeded"}, {"state": "pending"}]})
        ));
        assert!(!list_active(&json!({"items": [{"state": "succeeded"}]})));
        assert!(!list_active(&json!({"items": []})));
    }

    #[test]
    fn waiting_fails_unless_the_job_succeeded() {
        let ended = |state: State, error: Option<&str>| JobAnswer {
            job: Job {
                id: "9".into(),
                policy: String::new(),
                trigger: wire::TriggerKind::Manual,
                state,
                created_at: 0,
                finished_at: None,
                tasks: 0,
                error: error.map(Into::into),
                cancel_requested: false,
            },
            progress: None,
            task_list: Vec::new(),
        };
        assert!(wait_outcome(&ended(State::Succeeded, None)).is_ok());
        assert!(wait_outcome(&ended(State::Skipped, None)).is_ok());
        let err = wait_outcome(&ended(
            State::Failed,
            Some("endpoint idc-b refused the login"),
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "job 9 failed: endpoint idc-b refused the login; see wharf replication jobs 9"
        );
        let err = wait_outcome(&ended(State::Cancelled, None))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "job 9 was cancelled");
    }

    #[test]
    fn cells_stay_short() {
        assert_eq!(bytes_progress(0, 0), "-");
        assert_eq!(bytes_progress(512, 0), "512 B");
        assert_eq!(bytes_progress(u64::MAX, u64::MAX), "16 EiB/16 EiB (100%)");
        assert_eq!(truncate("a\n  b", 80), "a b");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(bandwidth_text(None), "unlimited");
        assert_eq!(bandwidth_text(Some(10 << 20)), "10 MiB/s");
    }

    #[test]
    fn policies_read_in_one_line() {
        let policy: Policy = serde_json::from_value(json!({
            "name": "shop-to-b", "endpoint": "idc-b", "direction": "push",
            "filters": {"projects": ["shop"], "tag": "v*"},
            "triggers": {"onEvent": true, "cron": "0 3 * * *"},
            "bandwidthLimit": 1_048_576,
        }))
        .unwrap();
        assert_eq!(
            policy_summary(&policy),
            "push to idc-b, projects=shop tag=v*, on event, cron 0 3 * * *"
        );
        assert!(
            policy.override_existing && policy.enabled,
            "server defaults"
        );
        let text = policy_text(&policy);
        assert!(text.contains("Bandwidth:              1 MiB/s\n"), "{text}");
        let table = policies_table(vec![policy]);
        assert!(
            table.starts_with("NAME       ENDPOINT  DIRECTION"),
            "{table}"
        );
    }

    #[test]
    fn endpoints_never_show_the_secret() {
        let list: Items<Endpoint> = serde_json::from_value(json!({"items": [
            {"name": "idc-b", "url": "http://b:7700", "kind": "wharf",
             "username": "robot$shop+sync", "sealedPassword": "<sealed>", "createdAt": 0},
            {"name": "hub", "url": "http://hub", "kind": "registry", "createdAt": 0},
        ]}))
        .unwrap();
        let table = endpoints_table(list.items, 0);
        assert_eq!(
            table,
            "NAME   KIND      URL            USERNAME         PASSWORD  AGE\n\
             idc-b  wharf     http://b:7700  robot$shop+sync  stored    <unknown>\n\
             hub    registry  http://hub     -                -         <unknown>\n"
        );
    }
}
