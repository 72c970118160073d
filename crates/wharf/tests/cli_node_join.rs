//! A machine joins with `wharf node join-command`'s one line — the
//! server's join script run by `sh` as root, here without systemd, so the
//! agent starts in the background — and leaves with `wharf node
//! decommission`: its credential is revoked and its agent stops (exit 78).
//! Agents run with `--runtime none`; the real-container join is
//! `e2e_containers`' business.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::{fails, ok, run, wharf};
use common::server::ADMIN_PASSWORD;
use serde_json::Value;

const NODE: &str = "wrd-join-1";

/// The agent the join script started in the background (not our child),
/// stopped by its pid on drop.
struct ByPid(String);

impl Drop for ByPid {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.trim()).status();
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn log_in(home: &Path, url: &str) {
    let login = ["login", url, "-u", "admin", "--password-stdin"];
    ok(run(home, &login, &format!("{ADMIN_PASSWORD}\n")));
}

/// Waits up to 30 s for `check`, then fails with `what`.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node(home: &Path, name: &str) -> Option<Value> {
    let out = run(home, &["get", "node", name, "-o", "json"], "");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The value the join line gives `name` (`NAME='value'`).
fn setting(line: &str, name: &str) -> String {
    let start = line.find(&format!("{name}='")).unwrap() + name.len() + 2;
    let end = start + line[start..].find('\'').unwrap();
    line[start..end].to_string()
}

#[test]
fn a_machine_joins_with_the_join_command_and_leaves_with_decommission() {
    let server = TestServer::start();
    let url = server.url();
    let admin = tempfile::tempdir().unwrap();
    let home = admin.path();
    log_in(home, &url);
    let line = ok(run(
        home,
        &["node", "join-command", "--pool", "web", "--ttl", "10m"],
        "",
    ));
    let line = line.trim();
    assert!(line.starts_with("curl -fsSL"), "{line}");
    assert_eq!(line.lines().count(), 1);

    // The "machine": its own directories, no systemd, no login anywhere.
    let machine = tempfile::tempdir().unwrap();
    let node_dir = machine.path().join("node");
    let bin = machine.path().join("bin/wharf");
    let joined = Command::new("sh")
        .args(["-c", line])
        .env("HOME", machine.path())
        .env("WHARF_NODE_NAME", NODE)
        .env("WHARF_NODE_DIR", &node_dir)
        .env("WHARF_BIN", &bin)
        .env("WHARF_NO_SYSTEMD", "1")
        .env("WHARF_AGENT_ARGS", "--runtime none")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&joined.stdout).to_string();
    assert!(
        joined.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    assert!(said.contains("systemd is not running here"), "{said}");
    assert!(said.contains("runc, iproute2, nftables present"), "{said}");
    let script_agent = ByPid(std::fs::read_to_string(node_dir.join("agent.pid")).unwrap());
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_wharf")).unwrap(),
        "the server's own binary, installed"
    );

    wait_for("the joined node to be ready", || {
        node(home, NODE).is_some_and(|n| n["status"]["ready"] == true)
    });
    let joined_node = node(home, NODE).unwrap();
    assert_eq!(joined_node["metadata"]["labels"]["wharf.io/pool"], "web");
    use std::os::unix::fs::PermissionsExt;
    let credential = node_dir.join("credential.json");
    let mode = std::fs::metadata(&credential).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the credential is root's only");
    let saved: Value = serde_json::from_slice(&std::fs::read(&credential).unwrap()).unwrap();
    assert_eq!(saved["name"], format!("robot$node+{NODE}"));

    // The token was for one machine.
    let token = setting(line, "WHARF_JOIN_TOKEN");
    let other = tempfile::tempdir().unwrap();
    let reused = fails(run(
        other.path(),
        &[
            "agent",
            "--server",
            &url,
            "--name",
            "wrd-join-2",
            "--runtime",
            "none",
            "--join-token",
            &token,
            "--node-dir",
            other.path().join("node").to_str().unwrap(),
        ],
        "",
    ));
    assert!(
        reused.contains("join token already used (by node wrd-join-1)"),
        "{reused}"
    );
    let again = Command::new("sh")
        .args(["-c", line])
        .env("WHARF_NODE_NAME", "wrd-join-2")
        .env("WHARF_NODE_DIR", other.path().join("node2"))
        .env("WHARF_BIN", other.path().join("wharf"))
        .env("WHARF_NO_SYSTEMD", "1")
        .output()
        .unwrap();
    assert!(!again.status.success(), "a used token downloads nothing");
    assert!(!other.path().join("wharf").exists());

    // A restarted agent logs in with the saved credential: no token, no
    // login in its home.
    drop(script_agent);
    let mut restarted = wharf(machine.path())
        .args([
            "agent",
            "--server",
            &url,
            "--name",
            NODE,
            "--runtime",
            "none",
        ])
        .args(["--node-dir", node_dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        restarted.try_wait().unwrap().is_none(),
        "the restarted agent runs"
    );

    let out = ok(run(
        home,
        &["node", "decommission", NODE, "--timeout", "30s"],
        "",
    ));
    assert!(out.contains("credential revoked"), "{out}");
    assert!(node(home, NODE).is_none(), "the node is gone");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = restarted.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = restarted.kill();
            panic!("the agent of a decommissioned node kept running");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut log = String::new();
    use std::io::Read;
    restarted
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("revoked"), "{log}");
    assert!(node(home, NODE).is_none(), "it did not come back");
}
