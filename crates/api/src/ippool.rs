//! IP pools: the addresses pods are given when they ask for one by
//! annotation, as the seed's "assigner" did. IPv4 only.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::meta::{ObjectMeta, check_labels, check_name};

/// Annotation (on a Deployment or its template) naming the pool its pods
/// take their IPs from.
pub const ANNOTATION_IP_POOL: &str = "wharf.io/ip-pool";
/// Annotation pinning a pod to one address (of its pool, or of the pool
/// that contains it).
pub const ANNOTATION_FIXED_IP: &str = "wharf.io/fixed-ip";
/// Annotation giving a pod candidate addresses, comma-separated, of one
/// pool: it claims the first one free. A Deployment whose pods must come
/// back on known addresses (the component flow's rollback) carries it.
pub const ANNOTATION_FIXED_IPS: &str = "wharf.io/fixed-ips";

/// Largest pool, in addresses: claims scan a pool's allocations.
pub const MAX_POOL_ADDRESSES: u64 = 1 << 16;

/// A pool of addresses in one subnet. Cluster-wide: pools have no project.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpPool {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `IpPool`.
    #[serde(default = "ip_pool_kind")]
    pub kind: String,
    /// Name.
    pub metadata: ObjectMeta,
    /// The subnet and the addresses handed out.
    pub spec: IpPoolSpec,
}

fn wharf_v1() -> String {
    "wharf.io/v1".into()
}

fn ip_pool_kind() -> String {
    "IpPool".into()
}

/// The subnet, its gateway, and which of its addresses pods may get.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// The subnet, `a.b.c.d/len`.
    pub cidr: String,
    /// The router pods send other traffic to; never handed out.
    pub gateway: String,
    /// Inclusive ranges handed out; the whole subnet (less network,
    /// broadcast and gateway) when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<IpRange>,
    /// Addresses never handed out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// An inclusive range of addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpRange {
    /// First address.
    pub start: String,
    /// Last address.
    pub end: String,
}

/// A subnet: network address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// Network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len`; host bits must be zero.
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (address, len) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR like 10.0.0.0/24"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{len:?} is not a prefix length (0-32)"))?;
        let subnet = Subnet {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix_len)),
            prefix_len,
        };
        if subnet.network != address {
            return Err(format!(
                "{text} has host bits set; the network is {}/{prefix_len}",
                subnet.network
            ));
        }
        Ok(subnet)
    }

    /// Whether `address` is in the subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// An address held by a pod: what the control plane records and what an
/// agent gets back when it claims its pod's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpClaim {
    /// The pool.
    pub pool: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The pool's gateway.
    pub gateway: Ipv4Addr,
    /// The pod's project.
    pub project: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid: a new pod of the same name does not inherit the claim.
    pub pod_uid: String,
    /// The node the pod was bound to.
    pub node: String,
    /// When, unix milliseconds.
    pub claimed_at: u64,
}

/// A validated pool, ready to hand out addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAddresses {
    /// The subnet.
    pub subnet: Subnet,
    /// The gateway.
    pub gateway: Ipv4Addr,
    ranges: Vec<(u32, u32)>,
    exclude: BTreeSet<u32>,
}

impl PoolAddresses {
    /// Whether the pool hands out `address`.
    pub fn offers(&self, address: Ipv4Addr) -> bool {
        let a = u32::from(address);
        self.ranges.iter().any(|&(s, e)| (s..=e).contains(&a)) && !self.reserved(a)
    }

    fn reserved(&self, a: u32) -> bool {
        self.exclude.contains(&a)
            || a == u32::from(self.gateway)
            || (self.subnet.prefix_len < 31
                && (a == u32::from(self.subnet.network) || a == u32::from(self.subnet.broadcast())))
    }

    /// Every address handed out, in order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges
            .iter()
            .flat_map(|&(s, e)| s..=e)
            .filter(|a| !self.reserved(*a))
            .map(Ipv4Addr::from)
    }

    /// How many addresses the pool hands out.
    pub fn size(&self) -> u64 {
        self.iter().count() as u64
    }
}

impl IpPool {
    /// Checks the pool and returns its addresses.
    pub fn addresses(&self) -> Result<PoolAddresses, ObjectError> {
        let spec = &self.spec;
        let subnet = Subnet::parse(&spec.cidr).map_err(|m| ObjectError::invalid("spec.cidr", m))?;
        let inside = |field: &str, text: &str| -> Result<u32, ObjectError> {
            let address: Ipv4Addr = text.parse().map_err(|_| {
                ObjectError::invalid(field, format!("{text:?} is not an IPv4 address"))
            })?;
            if !subnet.contains(address) {
                return Err(ObjectError::invalid(
                    field,
                    format!("{address} is outside {subnet}"),
                ));
            }
            Ok(u32::from(address))
        };
        let gateway = Ipv4Addr::from(inside("spec.gateway", &spec.gateway)?);
        let mut ranges = Vec::new();
        for (i, range) in spec.ranges.iter().enumerate() {
            let start = inside(&format!("spec.ranges[{i}].start"), &range.start)?;
            let end = inside(&format!("spec.ranges[{i}].end"), &range.end)?;
            if start > end {
                return Err(ObjectError::invalid(
                    format!("spec.ranges[{i}]"),
                    format!("start {} is after end {}", range.start, range.end),
                ));
            }
            if let Some(j) = ranges
                .iter()
                .position(|&(s, e): &(u32, u32)| start <= e && s <= end)
            {
                return Err(ObjectError::invalid(
                    format!("spec.ranges[{i}]"),
                    format!("overlaps spec.ranges[{j}]"),
                ));
            }
            ranges.push((start, end));
        }
        if ranges.is_empty() {
            ranges.push((u32::from(subnet.network), u32::from(subnet.broadcast())));
        }
        ranges.sort_unstable();
        let mut exclude = BTreeSet::new();
        for (i, text) in spec.exclude.iter().enumerate() {
            exclude.insert(inside(&format!("spec.exclude[{i}]"), text)?);
        }
        let total: u64 = ranges.iter().map(|&(s, e)| u64::from(e - s) + 1).sum();
        if total > MAX_POOL_ADDRESSES {
            return Err(ObjectError::invalid(
                "spec.ranges",
                format!("{total} addresses; a pool holds at most {MAX_POOL_ADDRESSES}"),
            ));
        }
        let pool = PoolAddresses {
            subnet,
            gateway,
            ranges,
            exclude,
        };
        if pool.iter().next().is_none() {
            return Err(ObjectError::invalid(
                "spec.ranges",
                "the pool hands out no address",
            ));
        }
        Ok(pool)
    }

    /// Checks name, labels and addresses.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        check_labels("metadata.labels", &self.metadata.labels)?;
        if self.metadata.project.is_some() {
            return Err(ObjectError::invalid(
                "metadata.namespace",
                "IP pools are cluster-wide and have no project",
            ));
        }
        self.addresses().map(|_| ())
    }
}

/// Reads the `IpPool` documents of a YAML (or JSON) file, validated,
/// with the fields that were not understood (`pool NAME: spec.x`).
pub fn parse_ip_pools(text: &str) -> Result<(Vec<IpPool>, Vec<String>), ObjectError> {
    let mut pools = Vec::new();
    let mut unknown = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let at =
            |e: &dyn std::fmt::Display| ObjectError::Parse(format!("document {}: {e}", index + 1));
        let value = serde_norway::Value::deserialize(document).map_err(|e| at(&e))?;
        if value.is_null() {
            continue;
        }
        let (pool, fields): (IpPool, Vec<String>) = crate::manifest::read(value, index)?;
        if pool.api_version != "wharf.io/v1" || pool.kind != "IpPool" {
            return Err(ObjectError::UnsupportedKind {
                kind: pool.kind,
                api_version: pool.api_version,
            });
        }
        pool.validate().map_err(|e| at(&e))?;
        if pools
            .iter()
            .any(|p: &IpPool| p.metadata.name == pool.metadata.name)
        {
            return Err(at(&format!("pool {} appears twice", pool.metadata.name)));
        }
        unknown.extend(
            fields
                .into_iter()
                .map(|f| format!("pool {}: {f}", pool.metadata.name)),
        );
        pools.push(pool);
    }
    if pools.is_empty() {
        return Err(ObjectError::Parse("no IP pools in the file".into()));
    }
    Ok((pools, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, gateway: &str, ranges: &[(&str, &str)], exclude: &[&str]) -> IpPool {
        IpPool {
            metadata: ObjectMeta {
                name: "web-pool".into(),
                ..ObjectMeta::default()
            },
            spec: IpPoolSpec {
                cidr: cidr.into(),
                gateway: gateway.into(),
                ranges: ranges
                    .iter()
                    .map(|(s, e)| IpRange {
                        start: s.to_string(),
                        end: e.to_string(),
                    })
                    .collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            },
            ..IpPool::default()
        }
    }

    #[test]
    fn the_seed_pool_hands_out_its_range_less_exclusions() {
        let seed = pool(
            "10.77.0.0/24",
            "10.77.0.1",
            &[("10.77.0.10", "10.77.0.50")],
            &["10.77.0.11"],
        );
        seed.validate().unwrap();
        let addresses = seed.addresses().unwrap();
        assert_eq!(addresses.size(), 40);
        let first: Vec<String> = addresses.iter().take(2).map(|a| a.to_string()).collect();
        assert_eq!(first, ["10.77.0.10", "10.77.0.12"]);
        assert!(addresses.offers("10.77.0.50".parse().unwrap()));
        assert!(!addresses.offers("10.77.0.11".parse().unwrap()));
        assert!(!addresses.offers("10.77.0.51".parse().unwrap()));
    }

    #[test]
    fn a_pool_without_ranges_is_its_subnet_less_reserved_addresses() {
        let whole = pool("192.168.5.0/29", "192.168.5.1", &[], &[]);
        let all: Vec<String> = whole
            .addresses()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            all,
            [
                "192.168.5.2",
                "192.168.5.3",
                "192.168.5.4",
                "192.168.5.5",
                "192.168.5.6"
            ]
        );
    }

    #[test]
    fn reads_pool_files() {
        let yaml = "apiVersion: wharf.io/v1\nkind: IpPool\nmetadata: {name: web-pool}\nspec:\n  cidr: 10.77.0.0/24\n  gateway: 10.77.0.1\n  ranges: [{start: 10.77.0.10, end: 10.77.0.50}]\n  exclude: [10.77.0.11]\n  vlan: 12\n---\n";
        let (pools, unknown) = parse_ip_pools(yaml).unwrap();
        assert_eq!(pools[0].spec.exclude, ["10.77.0.11"]);
        assert_eq!(unknown, ["pool web-pool: spec.vlan"]);
        let twice = format!("{yaml}{yaml}");
        assert!(
            parse_ip_pools(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let bad = yaml.replace("10.77.0.50", "10.78.0.50");
        let err = parse_ip_pools(&bad).unwrap_err().to_string();
        assert!(err.contains("spec.ranges[0].end"), "{err}");
        assert!(matches!(
            parse_ip_pools(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {cidr: x, gateway: y}\n"
            ),
            Err(ObjectError::UnsupportedKind { .. })
        ));
    }

    #[test]
    fn bad_pools_say_which_field_is_wrong() {
        let cases = [
            (pool("10.77.0.0/33", "10.77.0.1", &[], &[]), "spec.cidr"),
            (pool("10.77.0.5/24", "10.77.0.1", &[], &[]), "spec.cidr"),
            (pool("10.77.0.0/24", "10.78.0.1", &[], &[]), "spec.gateway"),
            (
                pool(
                    "10.77.0.0/24",
                    "10.77.0.1",
                    &[("10.77.0.9", "10.77.1.2")],
                    &[],
                ),
                "spec.ranges[0].end",
            ),
            (
                pool(
                    "10.77.0.0/24",
                    "10.77.0.1",
                    &[("10.77.0.9", "10.77.0.2")],
                    &[],
                ),
                "spec.ranges[0]",
            ),
            (
                pool(
                    "10.77.0.0/24",
                    "10.77.0.1",
                    &[("10.77.0.2", "10.77.0.9"), ("10.77.0.9", "10.77.0.20")],
                    &[],
                ),
                "spec.ranges[1]",
            ),
            (
                pool("10.77.0.0/24", "10.77.0.1", &[], &["nope"]),
                "spec.exclude[0]",
            ),
            (
                pool(
                    "10.77.0.0/24",
                    "10.77.0.1",
                    &[("10.77.0.1", "10.77.0.1")],
                    &[],
                ),
                "spec.ranges",
            ),
            (pool("10.0.0.0/8", "10.0.0.1", &[], &[]), "spec.ranges"),
        ];
        for (bad, field) in cases {
            match bad.validate() {
                Err(ObjectError::Invalid { field: f, .. }) => assert_eq!(f, field, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
