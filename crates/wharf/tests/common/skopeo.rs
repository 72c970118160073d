//! `skopeo` driven against a [`TestServer`], with the registry flags (plain
//! HTTP on loopback; credentials later) added in one place.

use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

use super::TestServer;
use super::command::{checked, output};

/// Skopeo pointed at one registry.
pub struct Skopeo {
    host: String,
}

impl Skopeo {
    /// Skopeo for the registry of `server`.
    pub fn new(server: &TestServer) -> Skopeo {
        Skopeo {
            host: server.host(),
        }
    }

    /// `docker://HOST/name`, where `name` is `repo:tag` or `repo@digest`.
    pub fn image(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.host)
    }

    /// `skopeo copy [extra] src dst`; panics if it fails.
    pub async fn copy(&self, src: &str, dst: &str, extra: &[&str]) -> Output {
        checked(
            self.command("copy")
                .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
                .args(extra)
                .args([src, dst]),
        )
        .await
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
        let output = checked(
            self.command("list-tags")
                .arg("--tls-verify=false")
                .arg(self.image(repo)),
        )
        .await;
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
        checked(
            self.command("delete")
                .arg("--tls-verify=false")
                .arg(self.image(name)),
        )
        .await;
    }

    fn inspect_command(&self, name: &str) -> Command {
        let mut command = self.command("inspect");
        command.arg("--tls-verify=false").arg(self.image(name));
        command
    }

    fn command(&self, verb: &str) -> Command {
        let mut command = Command::new("skopeo");
        // The policy only matters for signatures; don't depend on the host's.
        command.args(["--insecure-policy", verb]);
        command
    }
}
