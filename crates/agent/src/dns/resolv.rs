//! `resolv.conf`, both ways: the host's name servers the agent forwards
//! to, and the file a pod gets to use the agent's server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::names::SERVICE_ZONE;

/// The name servers of a `resolv.conf` text, on port 53; the local host
/// when it lists none, as glibc does.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    let servers: Vec<SocketAddr> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(address)) => address.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if servers.is_empty() {
        return vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53)];
    }
    servers
}

/// A pod's `resolv.conf` for the agent's server at `nameserver`: the
/// project's services by their short names, other projects' by
/// `NAME.PROJECT`, and `ndots:5` as Kubernetes sets it, so that names
/// with fewer dots try the search list first.
///
/// ```
/// let text = wharf_agent::dns::pod_resolv_conf("10.88.0.1".parse().unwrap(), "shop");
/// assert_eq!(text, "nameserver 10.88.0.1\nsearch shop.svc svc\noptions ndots:5\n");
/// ```
pub fn pod_resolv_conf(nameserver: IpAddr, project: &str) -> String {
    format!(
        "nameserver {nameserver}\nsearch {project}.{SERVICE_ZONE} {SERVICE_ZONE}\noptions ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\n\
                    nameserver   9.9.9.9 \nnameserver 2001:db8::1\nnameserver fe80::1%eth0\n\
                    options edns0\nnameserver\n";
        assert_eq!(
            nameservers(text),
            [
                "127.0.0.53:53".parse().unwrap(),
                "9.9.9.9:53".parse().unwrap(),
                "[2001:db8::1]:53".parse::<SocketAddr>().unwrap(),
            ]
        );
    }

    #[test]
    fn no_nameserver_means_the_local_host() {
        assert_eq!(nameservers(""), ["127.0.0.1:53".parse().unwrap()]);
    }
}
