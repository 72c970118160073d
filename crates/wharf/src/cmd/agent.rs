//! `wharf agent`: runs the node agent for this machine, or a simulated
//! fleet (`--simulate N`), against a server, as the logged-in user.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use clap::Args;
use tokio::sync::Mutex;
use wharf_agent::{
    Agent, AgentConfig, AgentError, HttpNodeApi, NoRuntime, Simulation, SimulationConfig,
    TokenSource,
};

use crate::client::ApiClient;
use crate::units;

/// `wharf agent` arguments.
#[derive(Args)]
pub struct AgentArgs {
    /// Server URL [default: the one you logged in to; the login must be a system administrator's].
    #[arg(long, env = "WHARF_SERVER")]
    server: Option<String>,
    /// Node name (with --simulate: the prefix of the simulated nodes' names).
    #[arg(long)]
    name: String,
    /// Node labels, e.g. wharf.io/pool=web,wharf.io/idc=bj1,wharf.io/cluster-kind=vm,wharf.io/machine-class=3.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// What an hour of this machine costs.
    #[arg(long)]
    cost_per_hour: Option<f64>,
    /// Address the node is reached at.
    #[arg(long)]
    address: Option<String>,
    /// Pod slots.
    #[arg(long, default_value_t = wharf_agent::machine::DEFAULT_MAX_PODS)]
    max_pods: u32,
    /// How long after the agent stops its node is declared not ready.
    #[arg(long, default_value = "40s", value_parser = units::parse_duration)]
    heartbeat_ttl: Duration,
    /// Register this many hollow nodes instead, which report their pods as
    /// running without containers.
    #[arg(long)]
    simulate: Option<usize>,
}

/// Parses `k=v` labels.
fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            bail!("invalid label {item:?}: use key=value");
        };
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(labels)
}

/// Access tokens from the stored login, refreshed as needed.
struct StoredLogin(Mutex<ApiClient>);

#[async_trait]
impl TokenSource for StoredLogin {
    async fn token(&self) -> Result<String, AgentError> {
        self.0
            .lock()
            .await
            .access_token()
            .await
            .map_err(|e| AgentError::Api(format!("{e:#}")))
    }

    async fn refresh(&self) -> Result<String, AgentError> {
        self.0
            .lock()
            .await
            .refreshed_token()
            .await
            .map_err(|e| AgentError::Api(format!("{e:#}")))
    }
}

/// Runs until interrupted.
pub async fn run(args: AgentArgs) -> Result<()> {
    let client = ApiClient::for_stored_login(args.server.as_deref())?;
    let server = client.server().to_string();
    if client.user().is_none() {
        bail!(
            "not logged in to {server}: run wharf login {server} -u admin (agents act as an administrator)"
        );
    }
    let labels = parse_labels(&args.labels)?;
    let api = Arc::new(HttpNodeApi::new(
        &server,
        Arc::new(StoredLogin(Mutex::new(client))),
    )?);
    let work = async move {
        match args.simulate {
            Some(count) => {
                let mut fleet = SimulationConfig::new(count);
                fleet.prefix = args.name.clone();
                fleet.heartbeat_ttl = args.heartbeat_ttl;
                eprintln!(
                    "simulating {count} nodes named {}-00001.. against {server}",
                    args.name
                );
                Simulation::new(api, fleet)
                    .run()
                    .await
                    .context("simulated fleet")
            }
            None => {
                let mut config = AgentConfig::new(&args.name);
                config.labels = labels;
                config.cost_per_hour = args.cost_per_hour;
                config.address = args.address.clone();
                config.max_pods = args.max_pods;
                config.heartbeat_ttl = args.heartbeat_ttl;
                eprintln!("agent for node {} serving {server}", args.name);
                let runtime = Arc::new(NoRuntime {
                    node: args.name.clone(),
                });
                Agent::new(api, runtime, config).run().await;
                Ok(())
            }
        }
    };
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let parsed =
            parse_labels(&["wharf.io/pool=web".into(), "a = b".into(), String::new()]).unwrap();
        assert_eq!(parsed["wharf.io/pool"], "web");
        assert_eq!(parsed["a"], "b");
        assert!(parse_labels(&["novalue".into()]).is_err());
    }
}
