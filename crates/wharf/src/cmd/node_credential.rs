//! A joined node's own credential: `wharf agent --join-token` trades the
//! single-use token for it once (`POST /api/v1/join`), keeps it in the node
//! dir (0600) and logs in with it from then on, restarts included. It is
//! a robot, `robot$node+<node>`, that acts for this node only and pulls
//! images; decommissioning the node deletes it, and the agent then stops
//! with [`REVOKED_EXIT`] (which the systemd unit does not restart).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use wharf_agent::{AgentError, TokenSource};

/// The exit status of an agent whose credential was revoked (EX_CONFIG).
pub const REVOKED_EXIT: i32 = 78;
/// The credential's file in the node dir.
const FILE: &str = "credential.json";

/// What a join gave the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCredential {
    /// The server it was given by.
    pub server: String,
    /// The node's pool.
    pub pool: String,
    /// The labels the node registers with (its pool's).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The robot's name, `robot$node+<node>`.
    pub name: String,
    /// Its secret.
    pub secret: String,
}

impl NodeCredential {
    fn path(node_dir: &Path) -> PathBuf {
        node_dir.join(FILE)
    }

    /// The credential kept in `node_dir`, if any.
    pub fn load(node_dir: &Path) -> Result<Option<NodeCredential>> {
        let path = Self::path(node_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes it to `node_dir` (created 0700), readable by root only, and
    /// atomically: a crash leaves the old file or the new one.
    pub fn save(&self, node_dir: &Path) -> Result<()> {
        wharf_fs::private_dir(node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))?;
        let path = Self::path(node_dir);
        wharf_fs::AtomicWrite::new(&path)
            .mode(0o600)
            .write(&serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Trades `token` at `server` for node `node`'s credential.
    pub async fn join(server: &str, node: &str, token: &str) -> Result<NodeCredential> {
        let server = server.trim_end_matches('/');
        let response = reqwest::Client::new()
            .post(format!("{server}/api/v1/join"))
            .json(&json!({"token": token, "node": node}))
            .send()
            .await
            .with_context(|| format!("cannot reach {server} to join"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            bail!("{server} refused the join of node {node}: {message}");
        }
        let labels = serde_json::from_value(body["labels"].clone()).unwrap_or_default();
        let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
        Ok(NodeCredential {
            server: server.to_string(),
            pool: text("pool"),
            labels,
            name: text("name"),
            secret: text("secret"),
        })
    }

    /// The credential in `node_dir`, or, without one, the one `token`
    /// gets at `server` (then saved there). `None` without either.
    pub async fn obtain(
        server: Option<&str>,
        node: &str,
        node_dir: &Path,
        token: Option<&str>,
    ) -> Result<Option<NodeCredential>> {
        if let Some(saved) = Self::load(node_dir)? {
            return Ok(Some(saved));
        }
        let Some(token) = token else {
            return Ok(None);
        };
        let Some(server) = server else {
            bail!("--join-token needs --server");
        };
        let credential = Self::join(server, node, token).await?;
        credential.save(node_dir)?;
        eprintln!(
            "node {node} joined pool {} at {server}; its credential is in {}",
            credential.pool,
            Self::path(node_dir).display()
        );
        Ok(Some(credential))
    }
}

/// API tokens from logging in with a node credential.
pub struct CredentialLogin {
    credential: NodeCredential,
    http: reqwest::Client,
    token: Mutex<Option<String>>,
}

impl CredentialLogin {
    /// Logs in as `credential` when first asked for a token.
    pub fn new(credential: NodeCredential) -> CredentialLogin {
        CredentialLogin {
            credential,
            http: reqwest::Client::new(),
            token: Mutex::new(None),
        }
    }

    async fn login(&self) -> Result<String, AgentError> {
        let server = &self.credential.server;
        let response = self
            .http
            .post(format!("{server}/api/v1/login"))
            .json(&json!({"username": self.credential.name, "password": self.credential.secret}))
            .send()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            // Decommissioned (or the robot deleted): nothing to retry.
            let name = &self.credential.name;
            tracing::error!(credential = %name, "the node's credential was revoked (decommissioned?): the agent stops");
            eprintln!(
                "wharf agent: {server} refused the node credential {name}: it was revoked (decommissioned?); stopping"
            );
            std::process::exit(REVOKED_EXIT);
        }
        let body: Value = response
            .error_for_status()
            .map_err(|e| AgentError::Api(e.to_string()))?
            .json()
            .await
            .map_err(|e| AgentError::Api(e.to_string()))?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| AgentError::Api("the login answer has no access_token".into()))?
            .to_string();
        *self.token.lock().await = Some(token.clone());
        Ok(token)
    }
}

#[async_trait]
impl TokenSource for CredentialLogin {
    async fn token(&self) -> Result<String, AgentError> {
        if let Some(token) = self.token.lock().await.clone() {
            return Ok(token);
        }
        self.login().await
    }

    async fn refresh(&self) -> Result<String, AgentError> {
        self.login().await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn saved_root_only_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let node_dir = dir.path().join("node");
        assert_eq!(NodeCredential::load(&node_dir).unwrap(), None);
        let credential = NodeCredential {
            server: "http://127.0.0.1:7700".into(),
            pool: "web".into(),
            labels: [("wharf.io/pool".to_string(), "web".to_string())].into(),
            name: "robot$node+n1".into(),
            secret: "s3cret".into(),
        };
        credential.save(&node_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&node_dir.join(FILE)), 0o600);
        assert_eq!(mode(&node_dir), 0o700);
        assert_eq!(NodeCredential::load(&node_dir).unwrap(), Some(credential));
    }
}
