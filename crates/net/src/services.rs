//! Service addresses: traffic to a service's cluster IP and port reaches
//! one of its ready endpoints, chosen at random per connection, by
//! nftables DNAT in a table of the node's own, written whole with `nft -f`
//! as host ports are ([`crate::hostport`] says why).
//!
//! Layout, per service port: a chain `svc-<n>` matched on the cluster IP,
//! protocol and port, which jumps through a `numgen random mod N` verdict
//! map to one of N endpoint chains `svc-<n>-<i>`, each a single DNAT. The
//! endpoint's own traffic coming back to it through the cluster IP (a pod
//! reaching itself) is masqueraded, or its answer would bypass the
//! translation.
//!
//! A service port without ready endpoints is rejected (ICMP port
//! unreachable, so a TCP connect is refused at once), as kube-proxy does,
//! in filter chains on the forward and output hooks, which see packets
//! after DNAT: only what was not translated still has the cluster IP.
//! Letting it through instead would route it out of the node untranslated,
//! and its connection tracking entry (an unanswered SYN is kept for 120 s)
//! would then catch a later connection from the same source port once
//! the service has endpoints: NAT is decided on a connection's first
//! packet only, so that connection would never be translated.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::NetError;
use crate::hostport::{PortProtocol, run_script, safe_name};

/// The service forwards of one node, in nftables table `ip <table>`.
#[derive(Clone, Debug)]
pub struct NftServices {
    table: String,
    host_netns: Option<String>,
}

impl NftServices {
    /// The forwards of node `node`, in the agent's network namespace or in
    /// `host_netns` (a simulated host).
    pub fn new(node: &str, host_netns: Option<String>) -> NftServices {
        NftServices {
            table: format!("wharf-services-{}", safe_name(node)),
            host_netns,
        }
    }

    /// The table's name: `wharf-services-<node>`.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Makes the node's service rules exactly `forwards`, in one atomic
    /// step; none removes the table.
    pub async fn apply(&self, forwards: &[ServiceForward]) -> Result<(), NetError> {
        run_script(self.host_netns.as_deref(), &ruleset(&self.table, forwards)).await
    }
}

/// One port of one service as a node forwards it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceForward {
    /// `project/name:port`, for the rules' comments.
    pub name: String,
    /// TCP or UDP.
    pub protocol: PortProtocol,
    /// The cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The ready endpoints: pod address and target port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// The `nft -f` script that replaces table `table` with `forwards` (or
/// only deletes it when there are none). A service port without ready
/// endpoints is rejected.
pub fn ruleset(table: &str, forwards: &[ServiceForward]) -> String {
    let mut script = format!("table ip {table}\ndelete table ip {table}\n");
    if forwards.is_empty() {
        return script;
    }
    let (live, empty): (Vec<&ServiceForward>, Vec<&ServiceForward>) =
        forwards.iter().partition(|f| !f.endpoints.is_empty());
    let mut dispatch = String::new();
    let mut chains = String::new();
    let mut hairpin = String::new();
    for (n, f) in live.iter().enumerate() {
        let proto = f.protocol.keyword();
        let _ = writeln!(
            dispatch,
            "\t\tip daddr {} {proto} dport {} jump svc-{n} comment \"{}\"",
            f.cluster_ip,
            f.port,
            comment(&f.name)
        );
        let targets: Vec<String> = (0..f.endpoints.len())
            .map(|i| format!("{i} : jump svc-{n}-{i}"))
            .collect();
        let _ = write!(
            chains,
            "\tchain svc-{n} {{\n\t\tnumgen random mod {} vmap {{ {} }}\n\t}}\n",
            f.endpoints.len(),
            targets.join(", ")
        );
        for (i, (ip, port)) in f.endpoints.iter().enumerate() {
            let _ = write!(
                chains,
                "\tchain svc-{n}-{i} {{\n\t\tmeta l4proto {proto} dnat to {ip}:{port}\n\t}}\n"
            );
            let _ = writeln!(
                hairpin,
                "\t\tip saddr {ip} ip daddr {ip} {proto} dport {port} ct status dnat masquerade"
            );
        }
    }
    let mut rejects = String::new();
    for f in &empty {
        let _ = writeln!(
            rejects,
            "\t\tip daddr {} {} dport {} reject comment \"{} has no endpoints\"",
            f.cluster_ip,
            f.protocol.keyword(),
            f.port,
            comment(&f.name)
        );
    }
    let _ = writeln!(script, "table ip {table} {{");
    if !live.is_empty() {
        let _ = write!(
            script,
            "\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}}
\tchain output {{
\t\ttype nat hook output priority -100; policy accept;
\t\tjump services
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
{hairpin}\t}}
\tchain services {{
{dispatch}\t}}
{chains}"
        );
    }
    if !rejects.is_empty() {
        let _ = write!(
            script,
            "\tchain reject-forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tjump no-endpoints
\t}}
\tchain reject-output {{
\t\ttype filter hook output priority filter; policy accept;
\t\tjump no-endpoints
\t}}
\tchain no-endpoints {{
{rejects}\t}}
"
        );
    }
    script.push_str("}\n");
    script
}

/// A name safe inside a double-quoted nftables comment.
fn comment(name: &str) -> String {
    name.chars()
        .map(|c| if c == '"' || c == '\\' { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(endpoints: Vec<(Ipv4Addr, u16)>) -> ServiceForward {
        ServiceForward {
            name: "shop/web:80".into(),
            protocol: PortProtocol::Tcp,
            cluster_ip: Ipv4Addr::new(10, 195, 0, 10),
            port: 80,
            endpoints,
        }
    }

    #[test]
    fn no_services_deletes_the_table() {
        assert_eq!(ruleset("t", &[]), "table ip t\ndelete table ip t\n");
    }

    #[test]
    fn a_service_port_without_endpoints_is_rejected_not_routed() {
        let script = ruleset("t", &[web(vec![])]);
        assert!(!script.contains("dnat"), "{script}");
        for line in [
            "type filter hook forward priority filter; policy accept;",
            "type filter hook output priority filter; policy accept;",
            "ip daddr 10.195.0.10 tcp dport 80 reject comment \"shop/web:80 has no endpoints\"",
        ] {
            assert!(script.lines().any(|l| l.trim() == line), "{line}\n{script}");
        }
        let mut both = ruleset("t", &[web(vec![(Ipv4Addr::new(10, 95, 0, 2), 80)])]);
        assert!(!both.contains("reject"), "{both}");
        let mut other = web(vec![]);
        other.port = 81;
        both = ruleset("t", &[web(vec![(Ipv4Addr::new(10, 95, 0, 2), 80)]), other]);
        assert!(both.contains("dnat to 10.95.0.2:80"), "{both}");
        assert!(both.contains("tcp dport 81 reject"), "{both}");
    }

    #[test]
    fn a_service_port_balances_over_its_endpoints() {
        let a = Ipv4Addr::new(10, 95, 0, 2);
        let b = Ipv4Addr::new(10, 95, 0, 3);
        let mut dns = web(vec![(b, 5353)]);
        dns.protocol = PortProtocol::Udp;
        dns.port = 53;
        dns.name = "shop/dns:53".into();
        let script = ruleset("wharf-services-n", &[web(vec![(a, 8080), (b, 8081)]), dns]);
        assert!(script.starts_with(
            "table ip wharf-services-n\ndelete table ip wharf-services-n\ntable ip wharf-services-n {"
        ));
        for line in [
            "ip daddr 10.195.0.10 tcp dport 80 jump svc-0 comment \"shop/web:80\"",
            "numgen random mod 2 vmap { 0 : jump svc-0-0, 1 : jump svc-0-1 }",
            "meta l4proto tcp dnat to 10.95.0.2:8080",
            "meta l4proto tcp dnat to 10.95.0.3:8081",
            "ip daddr 10.195.0.10 udp dport 53 jump svc-1 comment \"shop/dns:53\"",
            "numgen random mod 1 vmap { 0 : jump svc-1-0 }",
            "meta l4proto udp dnat to 10.95.0.3:5353",
            "ip saddr 10.95.0.2 ip daddr 10.95.0.2 tcp dport 8080 ct status dnat masquerade",
            "type nat hook output priority -100; policy accept;",
        ] {
            assert!(script.lines().any(|l| l.trim() == line), "{line}\n{script}");
        }
    }

    #[test]
    fn comments_cannot_break_out_of_their_quotes() {
        assert_eq!(comment("a\"b\\c"), "a_b_c");
    }
}
