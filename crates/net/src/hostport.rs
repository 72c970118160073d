//! Host ports: traffic to the node on a pod's `hostPort` reaches the pod,
//! as the CNI portmap plugin does, with nftables DNAT in a table of the
//! node's own.
//!
//! The whole table is written at once from every pod's forwards (`nft -f`
//! runs a script as one transaction): a change never leaves half a rule
//! set, rules of pods not listed disappear with the rewrite (the agent's
//! reconciliation on start), and an empty set deletes the table. Agents
//! sharing a machine in tests each have their own table, named after
//! their node, so they never touch each other's rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::spec::Ipv4Cidr;
use crate::{NetError, ip};

/// A transport protocol of a forwarded port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl PortProtocol {
    /// The protocol's name in nftables rules.
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
            PortProtocol::Sctp => "sctp",
        }
    }
}

/// One `hostPort` of a pod: the node's port (on `host_ip` only, when
/// given) forwarded to the pod's address and container port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPortForward {
    /// TCP, UDP or SCTP.
    pub protocol: PortProtocol,
    /// The node address it listens on; `None`: every node address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The port on the node.
    pub host_port: u16,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// Prefix length of the pod's subnet: pods of that subnet reaching
    /// the port are masqueraded, since the answer would otherwise go to
    /// them directly over the bridge, past the translation.
    pub pod_prefix_len: u8,
    /// The port in the pod.
    pub container_port: u16,
}

/// Installs the node's host port forwards. [`NftHostPorts`] for real,
/// [`crate::testing::MemoryHostPorts`] for logic tests.
#[async_trait]
pub trait HostPortDriver: Send + Sync {
    /// Makes the node's forwards exactly `forwards` (by pod id), in one
    /// atomic step; an empty map removes them all.
    async fn apply(
        &self,
        forwards: &BTreeMap<String, Vec<HostPortForward>>,
    ) -> Result<(), NetError>;
}

/// Host port forwards in nftables table `ip <table>`, written with `nft -f`.
///
/// ```no_run
/// # async fn example() -> Result<(), wharf_net::NetError> {
/// use std::collections::BTreeMap;
/// use wharf_net::{HostPortDriver, HostPortForward, NftHostPorts, PortProtocol};
///
/// let node = NftHostPorts::new("node-1", None);
/// assert_eq!(node.table(), "wharf-hostports-node-1");
/// let web = HostPortForward {
///     protocol: PortProtocol::Tcp,
///     host_ip: None,
///     host_port: 8080,
///     pod_ip: [10, 88, 0, 5].into(),
///     pod_prefix_len: 24,
///     container_port: 80,
/// };
/// node.apply(&BTreeMap::from([("3f9a0c2b7d1e".to_string(), vec![web])])).await?;
/// node.apply(&BTreeMap::new()).await?; // the table is gone
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct NftHostPorts {
    table: String,
    host_netns: Option<String>,
}

impl NftHostPorts {
    /// The forwards of node `node`, in the agent's network namespace or
    /// in `host_netns` (a simulated host).
    pub fn new(node: &str, host_netns: Option<String>) -> NftHostPorts {
        NftHostPorts {
            table: table_name(node),
            host_netns,
        }
    }

    /// The table's name: `wharf-hostports-<node>`.
    pub fn table(&self) -> &str {
        &self.table
    }
}

#[async_trait]
impl HostPortDriver for NftHostPorts {
    async fn apply(
        &self,
        forwards: &BTreeMap<String, Vec<HostPortForward>>,
    ) -> Result<(), NetError> {
        run_script(self.host_netns.as_deref(), &ruleset(&self.table, forwards)).await
    }
}

/// Runs an `nft -f` script (one transaction) in the agent's network
/// namespace or in `host_netns`.
pub(crate) async fn run_script(host_netns: Option<&str>, script: &str) -> Result<(), NetError> {
    let mut args: Vec<&str> = Vec::new();
    let program = match host_netns {
        Some(ns) => {
            args.extend(["netns", "exec", ns, "nft"]);
            "ip"
        }
        None => "nft",
    };
    args.extend(["-f", "-"]);
    ip::run_with_input(program, args, Some(script)).await?;
    Ok(())
}

/// The table of node `node`. Node names are DNS names; anything else an
/// nftables name may not hold becomes `_`.
pub fn table_name(node: &str) -> String {
    format!("wharf-hostports-{}", safe_name(node))
}

/// `node` with every character an nftables name may not hold as `_`.
pub(crate) fn safe_name(node: &str) -> String {
    node.chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '-' {
            true => c,
            false => '_',
        })
        .collect()
}

/// The `nft -f` script that replaces table `table` with `forwards` (or
/// only deletes it when there are none). Declaring the table first makes
/// the deletion succeed when it does not exist yet.
pub fn ruleset(table: &str, forwards: &BTreeMap<String, Vec<HostPortForward>>) -> String {
    let mut script = format!("table ip {table}\ndelete table ip {table}\n");
    if forwards.values().all(Vec::is_empty) {
        return script;
    }
    let mut dnat = String::new();
    let mut hairpin = String::new();
    for (pod, list) in forwards {
        for f in list {
            let proto = f.protocol.keyword();
            let daddr = f
                .host_ip
                .map(|ip| format!("ip daddr {ip} "))
                .unwrap_or_default();
            let _ = writeln!(
                dnat,
                "\t\t{daddr}{proto} dport {} dnat to {}:{} comment \"pod {pod}\"",
                f.host_port, f.pod_ip, f.container_port
            );
            let subnet = Ipv4Cidr::new(f.pod_ip, f.pod_prefix_len);
            let subnet = Ipv4Cidr::new(subnet.network(), f.pod_prefix_len);
            let _ = writeln!(
                hairpin,
                "\t\tip saddr {subnet} ip daddr {} {proto} dport {} ct status dnat masquerade comment \"pod {pod}\"",
                f.pod_ip, f.container_port
            );
        }
    }
    // Only traffic for the node's own addresses is forwarded, as portmap
    // does; loopback is left alone (the kernel drops loopback sources
    // routed out of the node).
    let _ = write!(
        script,
        "table ip {table} {{
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local jump forwards
\t}}
\tchain output {{
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr != 127.0.0.0/8 fib daddr type local jump forwards
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
{hairpin}\t}}
\tchain forwards {{
{dnat}\t}}
}}
"
    );
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(protocol: PortProtocol, host_ip: Option<Ipv4Addr>) -> HostPortForward {
        HostPortForward {
            protocol,
            host_ip,
            host_port: 8080,
            pod_ip: Ipv4Addr::new(10, 88, 0, 5),
            pod_prefix_len: 24,
            container_port: 80,
        }
    }

    #[test]
    fn tables_are_named_after_the_node() {
        assert_eq!(table_name("wth-1"), "wharf-hostports-wth-1");
        assert_eq!(table_name("a.b c"), "wharf-hostports-a_b_c");
    }

    #[test]
    fn no_forwards_deletes_the_table() {
        let empty = BTreeMap::from([("p1".to_string(), Vec::new())]);
        assert_eq!(
            ruleset("t", &empty),
            "table ip t\ndelete table ip t\n",
            "declared first, so deleting a missing table succeeds"
        );
    }

    #[test]
    fn every_forward_gets_a_dnat_and_a_hairpin_rule() {
        let forwards = BTreeMap::from([
            ("aaa".to_string(), vec![forward(PortProtocol::Tcp, None)]),
            (
                "bbb".to_string(),
                vec![forward(
                    PortProtocol::Udp,
                    Some(Ipv4Addr::new(192, 0, 2, 7)),
                )],
            ),
        ]);
        let script = ruleset("wharf-hostports-n", &forwards);
        assert!(script.starts_with(
            "table ip wharf-hostports-n\ndelete table ip wharf-hostports-n\ntable ip wharf-hostports-n {"
        ));
        for line in [
            "tcp dport 8080 dnat to 10.88.0.5:80 comment \"pod aaa\"",
            "ip daddr 192.0.2.7 udp dport 8080 dnat to 10.88.0.5:80 comment \"pod bbb\"",
            "ip saddr 10.88.0.0/24 ip daddr 10.88.0.5 tcp dport 80 ct status dnat masquerade comment \"pod aaa\"",
            "type nat hook output priority -100; policy accept;",
            "ip daddr != 127.0.0.0/8 fib daddr type local jump forwards",
        ] {
            assert!(script.lines().any(|l| l.trim() == line), "{line}\n{script}");
        }
    }

    #[test]
    fn forwards_round_trip_through_records() {
        let f = forward(PortProtocol::Sctp, None);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"{"protocol":"sctp","hostPort":8080,"podIp":"10.88.0.5","podPrefixLen":24,"containerPort":80}"#
        );
        assert_eq!(serde_json::from_str::<HostPortForward>(&json).unwrap(), f);
    }
}
