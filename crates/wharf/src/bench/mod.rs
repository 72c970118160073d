//! `wharf bench ...`: benchmarks that run the real server code paths.

mod registry;

use anyhow::Result;
use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Blob PUT/GET throughput and manifest GET rate, beside Debian's docker-registry.
    Registry(registry::RegistryBenchArgs),
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Registry(args) => registry::run(args).await,
    }
}
