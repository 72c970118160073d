//! `wharf bench ...`: benchmarks that run the real server code paths.

mod agent_metrics;
mod commit;
mod cost;
mod failover;
mod glob;
mod p2p;
mod pods;
mod probes;
mod prometheus;
mod registry;
mod replication;
mod rollout;
mod scheduler;
mod services;
mod tsdb;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Blob PUT/GET throughput and manifest GET rate, beside Debian's docker-registry.
    Registry(registry::RegistryBenchArgs),
    /// Scheduling throughput over simulated nodes, through the real control plane.
    Scheduler(scheduler::SchedulerBenchArgs),
    /// Failover over simulated nodes: one node dies (time to replacements
    /// bound), then an IDC (the eviction rate applied).
    Failover(failover::FailoverBenchArgs),
    /// A rolling update of one deployment over simulated nodes: time to
    /// complete, and the surge limit checked on the way.
    Rollout(rollout::RolloutBenchArgs),
    /// Pod start latency (apply -> Running) with real containers, as root.
    Pods(pods::PodsBenchArgs),
    /// Monitoring's CPU and memory with 50 real pods: `wharf up` with metrics
    /// collection off, then every 10 s, as root.
    AgentMetrics(agent_metrics::AgentMetricsBenchArgs),
    /// Agent CPU with 100 pods probing every second (and exec probes), as root.
    Probes(probes::ProbesBenchArgs),
    /// Service datapath: wrk from a pod to a cluster IP over 3 endpoints
    /// and straight to one pod, same run, as root.
    Services(services::ServicesBenchArgs),
    /// Replication lag, copy throughput beside the raw loopback speed, and
    /// bandwidth limits, between two servers.
    Replication(replication::ReplicationBenchArgs),
    /// Replication filter patterns, adversarial ones included, against
    /// the longest names; fails over a per-match time bound.
    Glob(glob::GlobBenchArgs),
    /// The metrics store: ingest from a simulated fleet while serving
    /// queries, memory per series, 24-hour query latency.
    Tsdb(tsdb::TsdbBenchArgs),
    /// The cost report over DAYS of minute-level history of a simulated
    /// fleet: time to produce it and the history's size on disk.
    Cost(cost::CostBenchArgs),
    /// Commit of a running container with 10 MiB .. 1 GiB of changes
    /// (pause and total time) beside `docker commit` + `docker push`, as root.
    Commit(commit::CommitBenchArgs),
    /// CPU and memory of Debian's Prometheus scraping ENDPOINTS x SERIES
    /// series beside a wharf server receiving the same series as pushes.
    Prometheus(prometheus::PrometheusBenchArgs),
    /// N peers in shaped network namespaces pull one image at once: origin
    /// bytes at the registry and completion times against the bound
    /// B/W + log2(N)·p/W, as root.
    P2p(p2p::P2pBenchArgs),
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Registry(args) => registry::run(args).await,
        BenchCommand::Scheduler(args) => scheduler::run(args).await,
        BenchCommand::Rollout(args) => rollout::run(args).await,
        BenchCommand::Pods(args) => pods::run(args).await,
        BenchCommand::Failover(args) => failover::run(args).await,
        BenchCommand::Probes(args) => probes::run(args).await,
        BenchCommand::AgentMetrics(args) => agent_metrics::run(args).await,
        BenchCommand::Services(args) => services::run(args).await,
        BenchCommand::Replication(args) => replication::run(args).await,
        BenchCommand::Glob(args) => glob::run(args).await,
        BenchCommand::Tsdb(args) => tsdb::run(args).await,
        BenchCommand::Cost(args) => cost::run(args).await,
        BenchCommand::Prometheus(args) => prometheus::run(args).await,
        BenchCommand::Commit(args) => commit::run(args).await,
        BenchCommand::P2p(args) => p2p::run(args).await,
    }
}

/// `wharf server` on a loopback port with authentication on, its admin
/// password `password`, no scheduled GC and quiet logs; the caller adds
/// more options, then `--data-dir`.
fn server_command(password: &str) -> Result<Command> {
    server_command_on("127.0.0.1:0", password)
}

/// [`server_command`] listening on `listen` (`ADDR:PORT`).
fn server_command_on(listen: &str, password: &str) -> Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["server", "--listen", listen, "--gc-interval", "0"])
        .env("RUST_LOG", "warn")
        .env("WHARF_ADMIN_PASSWORD", password);
    Ok(command)
}

/// Starts this binary as `command` (a server), with its output piped, and
/// waits for its `listening on URL` line; returns the child, the URL and the
/// rest of its output.
async fn spawn_listening(
    mut command: Command,
    timeout: Duration,
) -> Result<(Child, String, tokio::io::Lines<BufReader<ChildStdout>>)> {
    let mut child = command.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(timeout, lines.next_line())
        .await
        .with_context(|| format!("wharf did not start in {timeout:?}"))??
        .ok_or_else(|| anyhow!("wharf exited before listening"))?;
    let url = line
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("unexpected first line from wharf: {line}"))?
        .to_string();
    Ok((child, url, lines))
}

/// Logs in to the API at `url` as admin; returns the access token.
async fn admin_token(http: &reqwest::Client, url: &str, password: &str) -> Result<String> {
    let login: serde_json::Value = http
        .post(format!("{url}/api/v1/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    login["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("login returned no token"))
}
