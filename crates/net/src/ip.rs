//! Running iproute2 as a child process and reading its JSON output.
//!
//! Every namespace change happens inside the `ip` process (`ip -n <ns>`), never
//! in ours: `setns` only moves the calling thread, and a tokio worker thread
//! left in a pod's namespace would run unrelated tasks there.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use crate::NetError;

/// Generous: `ip` answers in milliseconds, but namespace deletion can wait on
/// the kernel's RCU grace periods on a busy node. A hung command must not hold
/// a pod's lock forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `program args...`, returning its stdout; a non-zero exit becomes
/// [`NetError::Command`] with the stderr.
pub(crate) async fn run<I, S>(program: &str, args: I) -> Result<String, NetError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_input(program, args, None).await
}

/// [`run`] with `input` written to the program's stdin (`nft -f -`).
pub(crate) async fn run_with_input<I, S>(
    program: &str,
    args: I,
    input: Option<&str>,
) -> Result<String, NetError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let command = command_line(program, &args);
    tracing::debug!(%command, "running");
    let stdin = match input {
        Some(_) => std::process::Stdio::piped(),
        None => std::process::Stdio::null(),
    };
    let spawned = Command::new(program)
        .args(&args)
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = spawned.map_err(|source| NetError::Spawn {
        command: command.clone(),
        source,
    })?;
    let output = async {
        if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            pipe.write_all(text.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, output).await {
        Err(_) => {
            return Err(NetError::Timeout {
                command,
                timeout: COMMAND_TIMEOUT,
            });
        }
        Ok(Err(source)) => return Err(NetError::Spawn { command, source }),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        return Err(NetError::Command {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The same as [`run`] without waiting, for `Drop` implementations that
/// cannot await (the test helpers' and the lab's). Errors are returned
/// for logging; callers usually ignore them.
pub(crate) fn run_blocking(program: &str, args: &[&str]) -> Result<(), NetError> {
    let command = command_line(program, args);
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| NetError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn command_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

/// Runs `ip -j <args>` and parses its JSON array.
pub(crate) async fn query<T: for<'de> Deserialize<'de>>(args: &[&str]) -> Result<Vec<T>, NetError> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let stdout = run("ip", &full).await?;
    parse_json(&stdout).map_err(|reason| NetError::UnexpectedOutput {
        command: command_line("ip", &full),
        reason,
    })
}

pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(stdout: &str) -> Result<Vec<T>, String> {
    // Some iproute2 versions print nothing instead of `[]` for empty results.
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(stdout).map_err(|e| e.to_string())
}

/// One entry of `ip -j -d link show`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Link {
    pub ifindex: u32,
    pub ifname: String,
    /// For a veth: the peer's ifindex (in the peer's namespace).
    #[serde(default)]
    pub link_index: Option<u32>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub linkinfo: Option<LinkInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LinkInfo {
    #[serde(default)]
    pub info_kind: Option<String>,
}

impl Link {
    /// `bridge`, `veth`, ...; `device` for physical or kind-less links.
    pub fn kind(&self) -> &str {
        self.linkinfo
            .as_ref()
            .and_then(|info| info.info_kind.as_deref())
            .unwrap_or("device")
    }

    pub fn is_admin_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    /// Whether `self` and `other` are the two ends of one veth pair.
    pub fn is_veth_peer_of(&self, other: &Link) -> bool {
        self.kind() == "veth"
            && other.kind() == "veth"
            && self.link_index == Some(other.ifindex)
            && other.link_index == Some(self.ifindex)
    }
}

/// One entry of `ip -j addr show`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LinkAddrs {
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AddrInfo {
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub local: Option<String>,
    #[serde(default)]
    pub prefixlen: Option<u8>,
}

/// The IPv4 addresses (with prefix lengths) in an `ip -j addr show` answer.
pub(crate) fn ipv4_addrs(entries: &[LinkAddrs]) -> Vec<(Ipv4Addr, u8)> {
    entries
        .iter()
        .flat_map(|e| &e.addr_info)
        .filter(|a| a.family == "inet")
        .filter_map(|a| Some((a.local.as_deref()?.parse().ok()?, a.prefixlen?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from iproute2 6.1 (Debian 12), trimmed.
    const HOST_VETH: &str = r#"[{"ifindex":5,"link_index":2,"ifname":"vprobe1","flags":["BROADCAST","MULTICAST","UP"],"mtu":1400,"link_netnsid":0,"linkinfo":{"info_kind":"veth"}}]"#;
    const POD_LINKS: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"link_type":"loopback"},{"ifindex":2,"link_index":5,"ifname":"eth0","flags":["BROADCAST","MULTICAST"],"mtu":1400,"link_netnsid":0,"linkinfo":{"info_kind":"veth"}}]"#;
    const ADDRS: &str = r#"[{"ifindex":2,"link_index":5,"ifname":"eth0","addr_info":[{"family":"inet","local":"10.5.0.2","prefixlen":24,"broadcast":"10.5.0.255","scope":"global","label":"eth0"},{"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;

    #[test]
    fn reads_links_and_recognises_veth_peers() {
        let host: Vec<Link> = parse_json(HOST_VETH).unwrap();
        let pod: Vec<Link> = parse_json(POD_LINKS).unwrap();
        assert_eq!(host[0].kind(), "veth");
        assert!(host[0].is_admin_up());
        assert_eq!(pod[0].kind(), "device");
        assert!(!pod[0].is_admin_up());
        assert!(host[0].is_veth_peer_of(&pod[1]));
        assert!(!host[0].is_veth_peer_of(&pod[0]));
    }

    #[test]
    fn reads_ipv4_addresses_only() {
        let entries: Vec<LinkAddrs> = parse_json(ADDRS).unwrap();
        assert_eq!(ipv4_addrs(&entries), vec![(Ipv4Addr::new(10, 5, 0, 2), 24)]);
        assert!(parse_json::<LinkAddrs>("  \n").unwrap().is_empty());
        assert!(parse_json::<LinkAddrs>("{").is_err());
    }

    #[tokio::test]
    async fn failed_commands_carry_their_stderr() {
        let err = run("sh", ["-c", "echo nope >&2; exit 3"])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo nope >&2; exit 3` failed (exit status: 3): nope"
        );
        let err = run("/nonexistent/ip", ["link"]).await.unwrap_err();
        assert!(matches!(err, NetError::Spawn { .. }), "{err}");
    }
}
