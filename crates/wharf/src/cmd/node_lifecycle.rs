//! `wharf node drain|decommission|join-command`: moving pods off a node,
//! retiring it, and letting a new machine join a pool (pool operators).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::client::ApiClient;
use crate::units;

/// The longest drain the CLI waits for: its requests time out at 10 minutes.
const MAX_DRAIN: Duration = Duration::from_secs(540);

/// `wharf node drain` and `decommission` options.
#[derive(Args, Clone, Debug)]
pub struct DrainArgs {
    /// Node name.
    pub name: String,
    /// Also delete pods no Deployment owns (they are not replaced).
    #[arg(long)]
    pub force: bool,
    /// Give up after this long (the node stays cordoned); at most 9m.
    #[arg(long, default_value = "5m", value_parser = units::parse_duration)]
    pub timeout: Duration,
}

/// `wharf node join-command` options.
#[derive(Args, Clone, Debug)]
pub struct JoinCommandArgs {
    /// The pool the machine joins.
    #[arg(long)]
    pub pool: String,
    /// How long the single-use token stays valid.
    #[arg(long, default_value = "1h", value_parser = units::parse_duration)]
    pub ttl: Duration,
}

/// Drains (or decommissions, `verb` = `decommission`) a node and prints
/// each pod moved off it.
pub async fn drain(client: &mut ApiClient, verb: &str, args: &DrainArgs) -> Result<()> {
    if args.timeout > MAX_DRAIN {
        bail!("--timeout is at most 9m");
    }
    let body = json!({"force": args.force, "timeoutSeconds": args.timeout.as_secs().max(1)});
    let name = args.name.as_str();
    let reply = client
        .post(&["nodes", name, verb], &body)
        .await
        .with_context(|| format!("{verb} of node {name}"))?;
    for line in evicted_lines(&reply) {
        println!("{line}");
    }
    match verb {
        "decommission" if reply["credentialRevoked"] == true => {
            println!("node/{name} decommissioned: drained, credential revoked, removed")
        }
        "decommission" => println!("node/{name} decommissioned: drained and removed"),
        _ => println!("node/{name} drained"),
    }
    Ok(())
}

/// `evicted shop/web-1 (deployment web) in 1200 ms` for each pod moved.
fn evicted_lines(reply: &Value) -> Vec<String> {
    let pods = reply["evicted"].as_array().cloned().unwrap_or_default();
    pods.iter()
        .map(|pod| {
            let owner = match pod["deployment"].as_str() {
                Some(deployment) => format!(" (deployment {deployment})"),
                None => String::new(),
            };
            format!(
                "evicted {}{owner} in {} ms",
                pod["pod"].as_str().unwrap_or("?"),
                pod["millis"]
            )
        })
        .collect()
}

/// Prints the one line that joins a fresh machine to `args.pool`.
pub async fn join_command(client: &mut ApiClient, args: &JoinCommandArgs) -> Result<()> {
    let pool = args.pool.as_str();
    let body = json!({"ttlSeconds": args.ttl.as_secs().max(1)});
    let reply = client
        .post(&["pools", pool, "join-tokens"], &body)
        .await
        .with_context(|| format!("creating a join token for pool {pool}"))?;
    let (Some(token), Some(digest)) = (reply["token"].as_str(), reply["binarySha256"].as_str())
    else {
        bail!("the server's join token answer is not what wharf expects: {reply}");
    };
    println!(
        "{}",
        wharf_api::join_command_line(client.server(), pool, token, digest)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicted_pods_are_listed_with_their_deployment() {
        let reply = json!({"evicted": [
            {"pod": "shop/web-1", "deployment": "web", "millis": 1200},
            {"pod": "shop/bare", "millis": 5},
        ]});
        assert_eq!(
            evicted_lines(&reply),
            [
                "evicted shop/web-1 (deployment web) in 1200 ms",
                "evicted shop/bare in 5 ms"
            ]
        );
    }
}
