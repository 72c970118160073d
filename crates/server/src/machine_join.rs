//! Join commands for the machines the pool autoscaler makes: each new
//! machine gets its own single-use join token for its pool, in the same
//! one line `wharf node join-command` prints, which the EC2 driver passes
//! as the instance's UserData (so an image with cloud-init joins at first
//! boot). A token whose machine never joins expires after
//! [`MACHINE_JOIN_TTL`]. When the autoscaler removes a machine's node, the
//! node's credential is revoked, as `wharf node decommission` does.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wharf_api::Pool;
use wharf_auth::Identity;
use wharf_control::JoinCommands;

/// How long a new machine's token is valid: time enough to boot.
pub(crate) const MACHINE_JOIN_TTL: Duration = Duration::from_secs(3600);
/// Who join tokens made for machines are recorded as made by.
const CREATOR: &str = "pool-autoscaler";

/// Makes a join command per new machine.
pub(crate) struct MachineJoinCommands {
    identity: Arc<Identity>,
    /// `--public-url`: what machines reach the server at.
    public_url: Option<String>,
    /// Else the listener's address, once bound.
    listen_url: OnceLock<String>,
}

impl MachineJoinCommands {
    pub(crate) fn new(identity: Arc<Identity>, public_url: Option<String>) -> Self {
        MachineJoinCommands {
            identity,
            public_url,
            listen_url: OnceLock::new(),
        }
    }

    /// Tells it the listener's address (the server URL without a public
    /// one).
    pub(crate) fn listening_on(&self, addr: SocketAddr, hostname: &str) {
        let _ = self.listen_url.set(listen_url(addr, hostname));
    }

    fn server_url(&self) -> Option<String> {
        self.public_url
            .clone()
            .or_else(|| self.listen_url.get().cloned())
    }
}

/// `http://ADDR`, or with the host's name for an unspecified address
/// (`0.0.0.0` is nowhere a machine can reach).
fn listen_url(addr: SocketAddr, hostname: &str) -> String {
    if addr.ip().is_unspecified() {
        format!("http://{hostname}:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

#[async_trait::async_trait]
impl JoinCommands for MachineJoinCommands {
    async fn join_command(&self, pool: &Pool) -> Result<String, String> {
        let server = self
            .server_url()
            .ok_or("the server's URL is not known yet (set --public-url)")?;
        let digest = crate::api::own_binary_sha256().await?;
        let pool = &pool.metadata.name;
        let (_, token) = self
            .identity
            .create_join_token(CREATOR, pool, MACHINE_JOIN_TTL)
            .await
            .map_err(|e| e.to_string())?;
        Ok(wharf_api::join_command_line(&server, pool, &token, &digest))
    }

    async fn revoke_node(&self, node: &str) -> Result<(), String> {
        let credential = format!("{}{node}", wharf_auth::NODE_ROBOT_PREFIX);
        match self.identity.delete_robot(&credential).await {
            Ok(()) | Err(wharf_auth::AuthError::NotFound(_)) => Ok(()),
            Err(err) => Err(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_reach_the_listener_by_address_or_host_name() {
        let bound: SocketAddr = "10.0.0.5:7700".parse().unwrap();
        assert_eq!(listen_url(bound, "wharf-1"), "http://10.0.0.5:7700");
        let everywhere: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        assert_eq!(listen_url(everywhere, "wharf-1"), "http://wharf-1:7700");
    }
}
