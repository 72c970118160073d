//! What a pod's network looks like, the names derived from a pod id, and the
//! checks that run before anything is created.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::NetError;

/// Where iproute2 keeps named network namespaces (bind mounts of
/// `/proc/<pid>/ns/net`). OCI runtimes take a path under it as the pod's
/// network namespace.
pub const NETNS_DIR: &str = "/var/run/netns";

/// The name of the pod's interface inside its namespace.
pub const POD_INTERFACE: &str = "eth0";

/// Linux interface names are at most 15 bytes (IFNAMSIZ minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Longest accepted pod id.
pub const MAX_POD_ID_LEN: usize = 40;

/// The node-side plumbing one pod needs: its fixed address, chosen by the
/// control plane, and its pool's gateway.
///
/// ```
/// use std::net::Ipv4Addr;
/// use wharf_net::PodNetworkSpec;
///
/// let spec = PodNetworkSpec {
///     pod_id: "3f9a0c2b7d1e".into(),
///     ip: Ipv4Addr::new(10, 77, 0, 10),
///     prefix_len: 24,
///     gateway: Ipv4Addr::new(10, 77, 0, 1),
/// };
/// spec.validate().unwrap();
///
/// let outside = PodNetworkSpec { ip: Ipv4Addr::new(10, 78, 0, 10), ..spec };
/// assert!(outside.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodNetworkSpec {
    /// Stable short id of the pod (e.g. the first 12 hex digits of its
    /// uid); `[a-z0-9]{1,40}`. Names of the namespace and veth derive from it.
    pub pod_id: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Prefix length of the pool's subnet (1 to 30).
    pub prefix_len: u8,
    /// The pool's gateway: carried by the node bridge, the pod's default route.
    pub gateway: Ipv4Addr,
}

impl PodNetworkSpec {
    /// Checks the pod id and that `ip` is a usable host address of the
    /// subnet `gateway/prefix_len` other than the gateway itself.
    pub fn validate(&self) -> Result<(), NetError> {
        validate_pod_id(&self.pod_id)?;
        let invalid = |reason: String| NetError::InvalidSpec {
            pod_id: self.pod_id.clone(),
            reason,
        };
        if !(1..=30).contains(&self.prefix_len) {
            return Err(invalid(format!(
                "prefix length /{} must be between /1 and /30 to hold a gateway and a pod",
                self.prefix_len
            )));
        }
        for (what, addr) in [("ip", self.ip), ("gateway", self.gateway)] {
            if addr.is_unspecified()
                || addr.is_loopback()
                || addr.is_multicast()
                || addr.is_broadcast()
            {
                return Err(invalid(format!(
                    "{what} {addr} is not a unicast host address"
                )));
            }
        }
        let subnet = self.subnet();
        let network = subnet.network();
        let broadcast = subnet.broadcast();
        if self.gateway == network || self.gateway == broadcast {
            return Err(invalid(format!(
                "gateway {} is the network or broadcast address of {subnet}",
                self.gateway
            )));
        }
        if !subnet.contains(self.ip) {
            return Err(invalid(format!(
                "ip {} is outside {subnet} (gateway {})",
                self.ip, self.gateway
            )));
        }
        if self.ip == self.gateway {
            return Err(invalid(format!(
                "ip {} is the gateway of {subnet}",
                self.ip
            )));
        }
        if self.ip == network {
            return Err(invalid(format!(
                "ip {} is the network address of {subnet}",
                self.ip
            )));
        }
        if self.ip == broadcast {
            return Err(invalid(format!(
                "ip {} is the broadcast address of {subnet}",
                self.ip
            )));
        }
        Ok(())
    }

    /// The pool's subnet, `network/prefix_len`.
    pub fn subnet(&self) -> Ipv4Cidr {
        let gateway = Ipv4Cidr::new(self.gateway, self.prefix_len);
        Ipv4Cidr::new(gateway.network(), self.prefix_len)
    }

    /// The pod's address with its prefix, as set on `eth0`.
    pub fn address(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(self.ip, self.prefix_len)
    }

    /// The pod's MAC address, derived from its IP (`0a:58:` and the four
    /// address bytes, locally administered). Addresses are reused as pods
    /// come and go: with a random MAC, neighbours (the node, other pods)
    /// would keep sending a reused address's traffic to the gone pod's MAC
    /// until their cache entry expires, and a new pod's first requests
    /// through a service would time out.
    pub fn mac(&self) -> String {
        let [a, b, c, d] = self.ip.octets();
        format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
    }

    /// The gateway with its prefix, as set on the bridge.
    pub fn gateway_address(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(self.gateway, self.prefix_len)
    }
}

/// A pod's network as plumbed on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The pod.
    pub pod_id: String,
    /// Name of the pod's network namespace (`ip netns` name).
    pub netns_name: String,
    /// Path of the namespace, `/var/run/netns/<name>`, for the OCI runtime
    /// config's `linux.namespaces` entry of type `network`.
    pub netns_path: PathBuf,
    /// The pod's address on `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of the pool's subnet.
    pub prefix_len: u8,
    /// The pod's default gateway.
    pub gateway: Ipv4Addr,
    /// Name of the veth end on the node, attached to the bridge.
    pub host_veth: String,
}

/// An IPv4 address with a prefix length, written `a.b.c.d/n`.
///
/// ```
/// use wharf_net::Ipv4Cidr;
///
/// let cidr: Ipv4Cidr = "10.77.0.10/24".parse().unwrap();
/// assert_eq!(cidr.network().to_string(), "10.77.0.0");
/// assert_eq!(cidr.to_string(), "10.77.0.10/24");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address (not necessarily the network address).
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// An address with a prefix length; lengths above 32 are clamped to 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        Self {
            addr,
            prefix_len: prefix_len.min(32),
        }
    }

    fn mask(&self) -> u32 {
        // `checked_shl` because shifting a u32 by 32 overflows.
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// The first address of the subnet.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The last address of the subnet.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `addr` lies in the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            NetError::InvalidConfig(format!("{s:?} is not an ipv4 address with a prefix length"))
        };
        let (addr, len) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix_len: u8 = len.parse().map_err(|_| invalid())?;
        if prefix_len > 32 {
            return Err(invalid());
        }
        Ok(Self { addr, prefix_len })
    }
}

/// Checks a pod id against `[a-z0-9]{1,40}`: the ids end up in interface and
/// namespace names and on `ip` command lines, so nothing else is let through.
pub fn validate_pod_id(pod_id: &str) -> Result<(), NetError> {
    let ok = !pod_id.is_empty()
        && pod_id.len() <= MAX_POD_ID_LEN
        && pod_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidPodId {
            pod_id: pod_id.to_owned(),
        })
    }
}

/// The name of a pod's veth end on the node: `vw<pod_id>` when that fits in
/// 15 bytes (pod ids of up to 13 characters, which covers the usual 12-hex
/// id), otherwise `vw` and 13 hex digits of a hash of the id, so that long
/// ids sharing a prefix still get distinct interfaces.
///
/// ```
/// assert_eq!(wharf_net::host_veth_name("3f9a0c2b7d1e"), "vw3f9a0c2b7d1e");
/// assert_eq!(wharf_net::host_veth_name(&"a".repeat(40)).len(), 15);
/// ```
pub fn host_veth_name(pod_id: &str) -> String {
    short_ifname("vw", pod_id)
}

/// `prefix` + `id` if it fits an interface name, else `prefix` + a hash of `id`.
pub(crate) fn short_ifname(prefix: &str, id: &str) -> String {
    let room = MAX_IFNAME_LEN.saturating_sub(prefix.len());
    if id.len() <= room {
        format!("{prefix}{id}")
    } else {
        let hash = format!("{:016x}", fnv1a64(id.as_bytes()));
        format!("{prefix}{}", &hash[..room.min(hash.len())])
    }
}

/// FNV-1a: stable across builds and platforms (unlike `DefaultHasher`), which
/// matters because teardown after an agent upgrade must derive the same name.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks a name that goes on an `ip` command line as an interface name.
pub(crate) fn validate_ifname(what: &'static str, name: &str) -> Result<(), NetError> {
    if name.len() > MAX_IFNAME_LEN {
        return Err(invalid_name(what, name, "longer than 15 bytes"));
    }
    validate_simple_name(what, name)
}

/// Checks a name used as (part of) a network namespace name: a file name
/// under [`NETNS_DIR`] and an argument to `ip`.
pub(crate) fn validate_netns_name(what: &'static str, name: &str) -> Result<(), NetError> {
    if name.len() > 64 {
        return Err(invalid_name(what, name, "longer than 64 bytes"));
    }
    validate_simple_name(what, name)
}

fn validate_simple_name(what: &'static str, name: &str) -> Result<(), NetError> {
    if name.is_empty() {
        return Err(invalid_name(what, name, "empty"));
    }
    // A leading '-' would be read as an option by `ip`.
    if name.starts_with('-') || name == "." || name == ".." {
        return Err(invalid_name(
            what,
            name,
            "must not start with '-' or be '.' or '..'",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid_name(
            what,
            name,
            "only letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(())
}

fn invalid_name(what: &'static str, name: &str, reason: &'static str) -> NetError {
    NetError::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ip: [u8; 4], prefix_len: u8, gateway: [u8; 4]) -> PodNetworkSpec {
        PodNetworkSpec {
            pod_id: "abc123".into(),
            ip: ip.into(),
            prefix_len,
            gateway: gateway.into(),
        }
    }

    fn reason(spec: &PodNetworkSpec) -> String {
        match spec.validate() {
            Err(err @ NetError::InvalidSpec { .. }) => err.to_string(),
            other => panic!("expected an invalid spec, got {other:?}"),
        }
    }

    #[test]
    fn accepts_host_addresses_of_the_gateway_subnet() {
        spec([10, 77, 0, 10], 24, [10, 77, 0, 1])
            .validate()
            .unwrap();
        spec([10, 77, 0, 254], 24, [10, 77, 0, 1])
            .validate()
            .unwrap();
        spec([10, 77, 3, 0], 16, [10, 77, 0, 1]).validate().unwrap();
        spec([192, 168, 1, 2], 30, [192, 168, 1, 1])
            .validate()
            .unwrap();
    }

    #[test]
    fn a_reused_address_gets_the_same_locally_administered_mac() {
        let one = spec([10, 77, 0, 10], 24, [10, 77, 0, 1]);
        let mut again = spec([10, 77, 0, 10], 24, [10, 77, 0, 1]);
        again.pod_id = "other".into();
        assert_eq!(one.mac(), "0a:58:0a:4d:00:0a");
        assert_eq!(one.mac(), again.mac());
        assert_ne!(one.mac(), spec([10, 77, 0, 11], 24, [10, 77, 0, 1]).mac());
    }

    #[test]
    fn refuses_addresses_that_cannot_be_a_pod() {
        let msg = reason(&spec([10, 78, 0, 10], 24, [10, 77, 0, 1]));
        assert_eq!(
            msg,
            "invalid network spec for pod abc123: ip 10.78.0.10 is outside 10.77.0.0/24 (gateway 10.77.0.1)"
        );
        assert!(
            reason(&spec([10, 77, 0, 1], 24, [10, 77, 0, 1]))
                .contains("ip 10.77.0.1 is the gateway")
        );
        assert!(reason(&spec([10, 77, 0, 0], 24, [10, 77, 0, 1])).contains("network address"));
        assert!(reason(&spec([10, 77, 0, 255], 24, [10, 77, 0, 1])).contains("broadcast address"));
        assert!(reason(&spec([10, 77, 0, 10], 24, [10, 77, 0, 0])).contains("gateway 10.77.0.0"));
        assert!(reason(&spec([10, 77, 0, 10], 31, [10, 77, 0, 11])).contains("/31"));
        assert!(reason(&spec([10, 77, 0, 10], 0, [10, 77, 0, 1])).contains("/0"));
        assert!(reason(&spec([127, 0, 0, 2], 8, [127, 0, 0, 1])).contains("not a unicast"));
    }

    #[test]
    fn pod_ids_are_lowercase_alphanumeric() {
        validate_pod_id("3f9a0c2b7d1e").unwrap();
        validate_pod_id(&"z".repeat(40)).unwrap();
        for bad in ["", "ABC", "a-b", "a/b", "a b", "ä", &"a".repeat(41)] {
            let err = validate_pod_id(bad).unwrap_err();
            assert!(
                matches!(err, NetError::InvalidPodId { .. }),
                "{bad:?}: {err}"
            );
        }
        let err = spec([10, 0, 0, 2], 24, [10, 0, 0, 1]);
        let err = PodNetworkSpec {
            pod_id: "Bad".into(),
            ..err
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pod id \"Bad\": expected 1 to 40 characters from [a-z0-9]"
        );
    }

    #[test]
    fn veth_names_fit_and_stay_distinct() {
        assert_eq!(host_veth_name("a"), "vwa");
        assert_eq!(host_veth_name("0123456789abc"), "vw0123456789abc");
        let long_a = host_veth_name("0123456789abcdef0");
        let long_b = host_veth_name("0123456789abcdef1");
        assert_eq!(long_a.len(), MAX_IFNAME_LEN);
        assert_ne!(long_a, long_b);
        // Stable across releases: teardown derives the same name as setup did.
        assert_eq!(long_a, host_veth_name("0123456789abcdef0"));
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn cidr_arithmetic_and_parsing() {
        let cidr: Ipv4Cidr = "10.77.1.9/16".parse().unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 77, 0, 0));
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(10, 77, 255, 255));
        assert!(cidr.contains(Ipv4Addr::new(10, 77, 200, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 78, 0, 1)));
        let all: Ipv4Cidr = "1.2.3.4/0".parse().unwrap();
        assert_eq!(all.network(), Ipv4Addr::UNSPECIFIED);
        assert!(all.contains(Ipv4Addr::new(200, 1, 1, 1)));
        let host: Ipv4Cidr = "1.2.3.4/32".parse().unwrap();
        assert_eq!(host.broadcast(), Ipv4Addr::new(1, 2, 3, 4));
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0/8", "x/8"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn config_names_are_checked() {
        validate_ifname("bridge name", "wharf0").unwrap();
        assert!(validate_ifname("bridge name", "a-very-long-bridge").is_err());
        assert!(validate_ifname("bridge name", "-x").is_err());
        assert!(validate_ifname("bridge name", "a b").is_err());
        assert!(validate_ifname("bridge name", "").is_err());
        validate_netns_name("netns prefix", "wharf-").unwrap();
        assert!(validate_netns_name("netns prefix", "a/b").is_err());
        assert!(validate_netns_name("netns prefix", "..").is_err());
    }
}
