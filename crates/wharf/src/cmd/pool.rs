//! `wharf pool`: service pools of machines. `grant`, `revoke` and
//! `grants` say which projects may place pods on a pool (see
//! `pool_grant.rs`).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::ServerOption;
use super::pool_grant::{self, GrantArgs, GrantsArgs, RevokeArgs};

/// `wharf pool`: the server option and a subcommand.
#[derive(Args)]
pub struct PoolArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: PoolCommand,
}

/// Managing pools (cluster administrators).
#[derive(Subcommand)]
pub enum PoolCommand {
    /// Let a project place pods on a pool, within an optional quota.
    Grant(GrantArgs),
    /// Take a project's grant on a pool away (running pods stay).
    Revoke(RevokeArgs),
    /// List grants, of one pool or of all.
    Grants(GrantsArgs),
}

/// Runs a `wharf pool` subcommand.
pub async fn run(args: PoolArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        PoolCommand::Grant(grant) => pool_grant::grant(&mut client, grant).await,
        PoolCommand::Revoke(revoke) => pool_grant::revoke(&mut client, revoke).await,
        PoolCommand::Grants(list) => pool_grant::list(&mut client, list).await,
    }
}
