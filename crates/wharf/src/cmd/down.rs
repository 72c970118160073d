//! `wharf down [--purge]`: stops what `wharf up` started on this machine
//! and removes what it left in the kernel — containers, their root
//! mounts, pod network namespaces, the node bridge (and with it its
//! routes) — and with `--purge` the data directory too.
//!
//! `wharf up` records where those are in `up.json` in its data directory;
//! without that file (an older or crashed start) the defaults of `wharf up`
//! are assumed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::agent::NodeOptions;

/// The file in the data directory where `wharf up` records what it runs.
pub const UP_STATE_FILE: &str = "up.json";

/// Where a `wharf up` keeps what `wharf down` must remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpState {
    /// The `wharf up` process.
    pub pid: u32,
    /// The node's directory (image cache, container roots, logs).
    pub node_dir: PathBuf,
    /// runc's state directory for the node's containers.
    pub runc_root: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// The node bridge.
    pub bridge: String,
    /// Prefix of the pods' network namespace names.
    pub netns_prefix: String,
    /// The node's name, which names its host port forwards' table.
    #[serde(default)]
    pub node: String,
}

impl UpState {
    /// What a `wharf up` with `options` for node `name` and data in
    /// `data_dir` uses.
    pub fn of(options: &NodeOptions, name: &str, data_dir: &Path) -> UpState {
        UpState {
            pid: std::process::id(),
            node_dir: options
                .node_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("node")),
            runc_root: options.runc_root_of(name),
            runc: options.runc.clone(),
            bridge: options.bridge.clone(),
            netns_prefix: options.netns_prefix.clone(),
            node: name.to_string(),
        }
    }

    /// Records it in `data_dir` (root only, replaced whole).
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(UP_STATE_FILE);
        wharf_fs::AtomicWrite::new(&path)
            .mode(0o600)
            .write(&serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Options of `wharf down`.
#[derive(Args)]
pub struct DownArgs {
    /// The data directory `wharf up` used.
    #[arg(long, default_value = "/var/lib/wharf", env = "WHARF_DATA_DIR")]
    data_dir: PathBuf,
    /// Also delete the data directory: images, state, the admin password.
    #[arg(long)]
    purge: bool,
}

/// Runs `wharf down`.
pub fn run(args: DownArgs) -> Result<()> {
    let state = match std::fs::read(args.data_dir.join(UP_STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("reading up.json")?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => default_state(&args.data_dir),
        Err(err) => return Err(err).context("reading up.json"),
    };
    let mut done = Vec::new();
    if stop_process(state.pid)? {
        done.push(format!("stopped wharf up (pid {})", state.pid));
    }
    let containers = remove_containers(&state);
    let mounts = unmount_under(&state.node_dir)?;
    let namespaces = remove_namespaces(&state.netns_prefix);
    done.push(format!(
        "removed {containers} containers, {mounts} mounts, {namespaces} network namespaces"
    ));
    if !state.node.is_empty() && remove_table(&wharf_net::hostport::table_name(&state.node)) {
        done.push(format!(
            "removed the host port forwards of node {}",
            state.node
        ));
    }
    if !state.node.is_empty() && remove_table(&services_table(&state.node)) {
        done.push(format!(
            "removed the service forwards of node {}",
            state.node
        ));
    }
    if ip(&["link", "show", &state.bridge]) {
        if !ip(&["link", "delete", &state.bridge]) {
            bail!("deleting bridge {}", state.bridge);
        }
        done.push(format!("deleted bridge {} and its routes", state.bridge));
    }
    let _ = std::fs::remove_dir_all(&state.runc_root);
    if args.purge {
        match std::fs::remove_dir_all(&args.data_dir) {
            Ok(()) => done.push(format!("deleted {}", args.data_dir.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("deleting {}", args.data_dir.display()));
            }
        }
    } else {
        let _ = std::fs::remove_file(args.data_dir.join(UP_STATE_FILE));
        done.push(format!(
            "kept the data in {} (--purge deletes it)",
            args.data_dir.display()
        ));
    }
    for line in done {
        println!("{line}");
    }
    Ok(())
}

/// What `wharf up` uses with its defaults (no up.json).
fn default_state(data_dir: &Path) -> UpState {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        node: NodeOptions,
    }
    let defaults = Defaults::parse_from(["wharf"]);
    let mut state = UpState::of(&defaults.node, &super::up::host_node_name(), data_dir);
    state.pid = 0;
    state
}

/// Stops `pid` if it is a running `wharf up`: SIGTERM (it stops its server
/// and agent cleanly), SIGKILL after 20 s. Whether it was running.
fn stop_process(pid: u32) -> Result<bool> {
    if pid == 0 || !is_wharf_up(pid) {
        return Ok(false);
    }
    signal(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_wharf_up(pid) {
        if Instant::now() > deadline {
            signal(pid, "KILL");
            std::thread::sleep(Duration::from_millis(200));
            if is_wharf_up(pid) {
                bail!("wharf up (pid {pid}) does not stop");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(true)
}

/// Whether `pid` is a live `wharf up` (not a reused pid, not a zombie).
fn is_wharf_up(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true);
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    !zombie
        && args.first().is_some_and(|a| a.ends_with(b"wharf"))
        && args.get(1) == Some(&&b"up"[..])
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}

/// Force-deletes every container under the node's runc root; how many.
fn remove_containers(state: &UpState) -> usize {
    let Ok(output) = Command::new(&state.runc)
        .arg("--root")
        .arg(&state.runc_root)
        .args(["list", "-q"])
        .output()
    else {
        return 0;
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|id| !id.is_empty())
        .filter(|id| {
            Command::new(&state.runc)
                .arg("--root")
                .arg(&state.runc_root)
                .args(["delete", "--force", id])
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

/// Unmounts everything mounted under `dir`, deepest first; how many.
fn unmount_under(dir: &Path) -> Result<usize> {
    let points = wharf_agent::containers::mounted_under(dir);
    for point in &points {
        let unmounted = Command::new("umount")
            .arg(point)
            .status()
            .is_ok_and(|s| s.success())
            // Still busy (a process in a dying container): detach it.
            || Command::new("umount")
                .arg("-l")
                .arg(point)
                .status()
                .is_ok_and(|s| s.success());
        if !unmounted {
            bail!("unmounting {}", point.display());
        }
    }
    Ok(points.len())
}

/// Deletes nftables table `ip <table>` (a node's host port or service
/// forwards); whether there was one.
fn remove_table(table: &str) -> bool {
    succeeds("nft", &["list", "table", "ip", table])
        && succeeds("nft", &["delete", "table", "ip", table])
}

/// The table of node `node`'s service forwards.
fn services_table(node: &str) -> String {
    wharf_net::services::NftServices::new(node, None)
        .table()
        .to_string()
}

/// Deletes the network namespaces named with `prefix`; how many.
fn remove_namespaces(prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .filter(|name| ip(&["netns", "delete", name]))
        .count()
}

/// Runs `ip ARGS`; whether it succeeded.
fn ip(args: &[&str]) -> bool {
    succeeds("ip", args)
}

/// Runs `program ARGS` quietly; whether it succeeded.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_not_taken_for_wharf_up() {
        assert!(!is_wharf_up(std::process::id()));
        assert!(!is_wharf_up(0));
    }

    #[test]
    fn without_up_json_the_defaults_of_wharf_up_are_assumed() {
        let state = default_state(Path::new("/var/lib/wharf"));
        assert_eq!(state.pid, 0);
        assert_eq!(state.node_dir, Path::new("/var/lib/wharf/node"));
        assert_eq!(state.bridge, "wharf0");
        assert_eq!(state.netns_prefix, "wharf-");
        assert!(state.runc_root.starts_with("/run/wharf"));
        assert_eq!(state.node, super::super::up::host_node_name());
    }

    #[test]
    fn the_nodes_nftables_tables_are_removed() {
        if !succeeds("nft", &["list", "tables"]) {
            assert!(
                std::env::var_os("CI").is_none(),
                "nft needs root and nftables"
            );
            return;
        }
        for table in [
            wharf_net::hostport::table_name("wth-down"),
            services_table("wsv-down"),
        ] {
            assert!(succeeds("nft", &["add", "table", "ip", &table]));
            assert!(remove_table(&table));
            assert!(!succeeds("nft", &["list", "table", "ip", &table]));
            assert!(!remove_table(&table), "nothing left to remove");
        }
    }
}
