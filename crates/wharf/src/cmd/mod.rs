//! The `wharf` subcommands other than `bench`: one module per command group.
//!
//! Client commands talk HTTP to a running server through
//! [`crate::client::ApiClient`] and print through [`crate::output`].

pub mod audit;
pub mod gc;
pub mod login;
pub mod project;
pub mod robot;
pub mod server;
pub mod settings;
pub mod user;

use anyhow::Result;

use crate::client::ApiClient;

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
