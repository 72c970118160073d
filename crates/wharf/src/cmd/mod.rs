//! The `wharf` subcommands other than `bench`: one module per command group.
//!
//! Client commands talk HTTP to a running server through
//! [`crate::client::ApiClient`] and print through [`crate::output`]. The
//! kubectl-like ones (`apply`, `create`, `get`, `describe`, `delete`, `scale`,
//! `node`) share [`objects`]: kinds, projects and shared formatting.

pub mod agent;
pub mod alert;
pub mod apply;
pub mod audit;
pub mod autoscale;
pub mod commit;
pub mod commit_flow;
pub mod cost;
pub mod cost_budget;
pub mod create;
pub mod delete;
pub mod describe;
pub mod down;
pub mod exec;
pub mod gc;
pub mod get;
pub mod hpa_view;
pub mod image;
pub mod inventory;
pub mod ippool;
pub mod login;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod node_credential;
pub mod node_lifecycle;
pub mod objects;
pub mod p2p_peer;
pub mod pool_grant;
pub mod port_forward;
pub mod preheat;
pub mod project;
pub mod replication;
pub mod robot;
pub mod rollout;
pub mod scale;
pub mod server;
pub mod service_view;
pub mod settings;
pub mod top;
pub mod up;
pub mod user;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use crate::client::ApiClient;
use crate::output::{self, OutputOption};

/// The `--server` option of client commands.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerOption {
    /// Server URL [default: the one you logged in to].
    #[arg(long, env = "WHARF_SERVER", global = true)]
    pub server: Option<String>,
}

impl ServerOption {
    /// A client for this server with the stored login.
    pub fn client(&self) -> Result<ApiClient> {
        ApiClient::for_stored_login(self.server.as_deref())
    }
}

/// Disables or enables the account at `path` (its `disabled` resource),
/// whose kind and name `what` gives for messages (`user alice`), and prints
/// the answer: `name` says what a table shows of it.
pub(crate) async fn set_disabled<T: DeserializeOwned>(
    client: &mut ApiClient,
    path: &[&str],
    what: &str,
    disabled: bool,
    output: OutputOption,
    name: impl FnOnce(T) -> String,
) -> Result<()> {
    let (doing, done) = if disabled {
        ("disabling", "disabled")
    } else {
        ("enabling", "enabled")
    };
    let answer = client
        .put(path, &serde_json::json!({ "disabled": disabled }))
        .await
        .with_context(|| format!("{doing} {what}"))?;
    output::print(output.format, answer, |account: T| {
        format!("{done} {}\n", name(account))
    })
}
