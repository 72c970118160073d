//! `wharf bench ...`: benchmarks that run the real server code paths.

mod pods;
mod registry;
mod scheduler;

use anyhow::Result;
use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Blob PUT/GET throughput and manifest GET rate, beside Debian's docker-registry.
    Registry(registry::RegistryBenchArgs),
    /// Scheduling throughput over simulated nodes, through the real control plane.
    Scheduler(scheduler::SchedulerBenchArgs),
    /// Pod start latency (apply -> Running) with real containers, as root.
    Pods(pods::PodsBenchArgs),
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Registry(args) => registry::run(args).await,
        BenchCommand::Scheduler(args) => scheduler::run(args).await,
        BenchCommand::Pods(args) => pods::run(args).await,
    }
}
