//! `skopeo` driven against a [`TestServer`], with the registry flags (plain
//! HTTP on loopback, credentials) added in one place.

use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

use super::TestServer;
use super::command::{checked, output};
use super::registry::Credentials;
use super::server::admin_credentials;

/// Skopeo pointed at one registry, as one user or anonymously.
pub struct Skopeo {
    host: String,
    credentials: Option<Credentials>,
}

impl Skopeo {
    /// Skopeo for the registry of `server`, logged in as `admin`.
    pub fn new(server: &TestServer) -> Skopeo {
        Skopeo::as_user(server, &admin_credentials())
    }

    /// Skopeo logging in as `credentials`.
    pub fn as_user(server: &TestServer, credentials: &Credentials) -> Skopeo {
        Skopeo {
            host: server.host(),
            credentials: Some(credentials.clone()),
        }
    }

    /// Skopeo without credentials.
    pub fn anonymous(server: &TestServer) -> Skopeo {
        Skopeo {
            host: server.host(),
            credentials: None,
        }
    }

    /// `docker://HOST/name`, where `name` is `repo:tag` or `repo@digest`.
    pub fn image(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.host)
    }

    /// `skopeo copy [extra] src dst`; panics if it fails.
    pub async fn copy(&self, src: &str, dst: &str, extra: &[&str]) -> Output {
        checked(&mut self.copy_command(src, dst, extra)).await
    }

    /// `skopeo copy [extra] src dst`, whatever its outcome.
    pub async fn try_copy(&self, src: &str, dst: &str, extra: &[&str]) -> Output {
        output(&mut self.copy_command(src, dst, extra)).await
    }

    /// `skopeo inspect --raw`: the manifest bytes the registry serves.
    pub async fn inspect_raw(&self, name: &str) -> Vec<u8> {
        checked(self.inspect_command(name).arg("--raw"))
            .await
            .stdout
    }

    /// `skopeo inspect`: the summary skopeo derives (with `Digest`).
    pub async fn inspect(&self, name: &str) -> Value {
        let output = checked(&mut self.inspect_command(name)).await;
        serde_json::from_slice(&output.stdout).expect("skopeo inspect prints JSON")
    }

    /// `skopeo inspect --raw`, whatever its outcome.
    pub async fn try_inspect_raw(&self, name: &str) -> Output {
        output(self.inspect_command(name).arg("--raw")).await
    }

    /// `skopeo list-tags`, the tags as listed.
    pub async fn list_tags(&self, repo: &str) -> Vec<String> {
        let mut command = self.command("list-tags");
        command.arg("--tls-verify=false");
        self.add_creds(&mut command, "");
        let output = checked(command.arg(self.image(repo))).await;
        let listing: Value =
            serde_json::from_slice(&output.stdout).expect("skopeo list-tags prints JSON");
        listing["Tags"]
            .as_array()
            .unwrap_or_else(|| panic!("no Tags in {listing}"))
            .iter()
            .map(|t| t.as_str().expect("tags are strings").to_string())
            .collect()
    }

    /// `skopeo delete`; panics if it fails.
    pub async fn delete(&self, name: &str) {
        let mut command = self.command("delete");
        command.arg("--tls-verify=false");
        self.add_creds(&mut command, "");
        checked(command.arg(self.image(name))).await;
    }

    fn copy_command(&self, src: &str, dst: &str, extra: &[&str]) -> Command {
        let mut command = self.command("copy");
        command.args(["--src-tls-verify=false", "--dest-tls-verify=false"]);
        // Credentials only for the ends that are this registry.
        if src.starts_with("docker://") {
            self.add_creds(&mut command, "src-");
        }
        if dst.starts_with("docker://") {
            self.add_creds(&mut command, "dest-");
        }
        command.args(extra).args([src, dst]);
        command
    }

    fn inspect_command(&self, name: &str) -> Command {
        let mut command = self.command("inspect");
        command.arg("--tls-verify=false");
        self.add_creds(&mut command, "");
        command.arg(self.image(name));
        command
    }

    /// `--{prefix}creds USER:PW`, or `--{prefix}no-creds` so that no auth
    /// file of the machine is consulted.
    fn add_creds(&self, command: &mut Command, prefix: &str) {
        match &self.credentials {
            Some(credentials) => command
                .arg(format!("--{prefix}creds"))
                .arg(credentials.colon_pair()),
            None => command.arg(format!("--{prefix}no-creds")),
        };
    }

    fn command(&self, verb: &str) -> Command {
        let mut command = Command::new("skopeo");
        // The policy only matters for signatures; don't depend on the host's.
        command.args(["--insecure-policy", verb]);
        command
    }
}
