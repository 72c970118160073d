//! A pod's `dnsPolicy` and `dnsConfig`: which name servers its
//! `/etc/resolv.conf` lists. The node's agent writes the file; this
//! module says what it is to say and refuses what it cannot honour.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ObjectError, PodSpec};

/// Most name servers a resolv.conf is read for (glibc's `MAXNS`), as
/// Kubernetes limits them.
pub const MAX_DNS_NAMESERVERS: usize = 3;

/// Most search domains Kubernetes accepts.
pub const MAX_DNS_SEARCHES: usize = 32;

/// `dnsConfig`: name servers, search domains and options written as given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDnsConfig {
    /// Name server addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    /// Resolver options (`ndots`, `timeout`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PodDnsConfigOption>,
}

/// One resolver option: `name` or `name:value`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodDnsConfigOption {
    /// The option's name.
    pub name: String,
    /// Its value, for options that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Where a pod's names are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsPolicy {
    /// The node agent's name server: services by name, the rest forwarded
    /// to the node's resolvers. The default; a pod on the node's network
    /// gets [`DnsPolicy::Default`] instead, as in Kubernetes.
    ClusterFirst,
    /// The node's own resolv.conf.
    Default,
    /// Only `dnsConfig`.
    None,
}

impl PodSpec {
    /// The policy in force, `dnsPolicy` checked against `hostNetwork` and
    /// `dnsConfig`; errors name the field under `field`.
    pub fn dns_policy(&self, field: &str) -> Result<DnsPolicy, ObjectError> {
        let policy = match self.dns_policy.as_deref() {
            None | Some("ClusterFirst") if self.host_network => DnsPolicy::Default,
            None | Some("ClusterFirst") => DnsPolicy::ClusterFirst,
            Some("ClusterFirstWithHostNet") if self.host_network => {
                return Err(ObjectError::invalid(
                    format!("{field}.dnsPolicy"),
                    "ClusterFirstWithHostNet with hostNetwork is not supported: the node agent's \
                     name server listens on the pod bridge only; use Default or None",
                ));
            }
            Some("ClusterFirstWithHostNet") => DnsPolicy::ClusterFirst,
            Some("Default") => DnsPolicy::Default,
            Some("None") => DnsPolicy::None,
            Some(other) => {
                return Err(ObjectError::invalid(
                    format!("{field}.dnsPolicy"),
                    format!(
                        "{other:?} is not one of ClusterFirst, ClusterFirstWithHostNet, Default, None"
                    ),
                ));
            }
        };
        match (&self.dns_config, policy) {
            (None, DnsPolicy::None) => Err(ObjectError::invalid(
                format!("{field}.dnsConfig"),
                "dnsPolicy None needs a dnsConfig with at least one name server",
            )),
            (Some(config), DnsPolicy::None) => {
                config.validate(&format!("{field}.dnsConfig"))?;
                Ok(policy)
            }
            (Some(_), _) => Err(ObjectError::invalid(
                format!("{field}.dnsConfig"),
                "is honoured with dnsPolicy None only (it is not merged into other policies)",
            )),
            (None, _) => Ok(policy),
        }
    }
}

impl PodDnsConfig {
    fn validate(&self, field: &str) -> Result<(), ObjectError> {
        let invalid = |at: String, why: String| Err(ObjectError::invalid(at, why));
        if self.nameservers.is_empty() || self.nameservers.len() > MAX_DNS_NAMESERVERS {
            return invalid(
                format!("{field}.nameservers"),
                format!("needs 1 to {MAX_DNS_NAMESERVERS} addresses"),
            );
        }
        for (i, server) in self.nameservers.iter().enumerate() {
            if server.parse::<IpAddr>().is_err() {
                return invalid(
                    format!("{field}.nameservers[{i}]"),
                    format!("{server:?} is not an IP address"),
                );
            }
        }
        if self.searches.len() > MAX_DNS_SEARCHES {
            return invalid(
                format!("{field}.searches"),
                format!("at most {MAX_DNS_SEARCHES} search domains"),
            );
        }
        for (i, search) in self.searches.iter().enumerate() {
            if !is_plain_word(search) {
                return invalid(
                    format!("{field}.searches[{i}]"),
                    format!("{search:?} is not a domain name"),
                );
            }
        }
        for (i, option) in self.options.iter().enumerate() {
            let value_ok = option.value.as_deref().is_none_or(is_plain_word);
            if !is_plain_word(&option.name) || !value_ok {
                return invalid(
                    format!("{field}.options[{i}]"),
                    "names and values are single words without ':'".into(),
                );
            }
        }
        Ok(())
    }

    /// The resolv.conf text it asks for.
    pub fn resolv_conf(&self) -> String {
        let mut text = String::new();
        for server in &self.nameservers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        let options: Vec<String> = self
            .options
            .iter()
            .map(|o| match &o.value {
                Some(value) => format!("{}:{value}", o.name),
                None => o.name.clone(),
            })
            .collect();
        if !options.is_empty() {
            text.push_str(&format!("options {}\n", options.join(" ")));
        }
        text
    }
}

/// Text that stays one word of one resolv.conf line.
fn is_plain_word(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ':' && c != '#' && c != ';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policy: Option<&str>, host_network: bool, config: Option<PodDnsConfig>) -> PodSpec {
        PodSpec {
            dns_policy: policy.map(str::to_string),
            dns_config: config,
            host_network,
            ..PodSpec::default()
        }
    }

    fn config(nameservers: &[&str]) -> PodDnsConfig {
        PodDnsConfig {
            nameservers: nameservers.iter().map(|s| s.to_string()).collect(),
            searches: vec!["example.com".into()],
            options: vec![
                PodDnsConfigOption {
                    name: "ndots".into(),
                    value: Some("2".into()),
                },
                PodDnsConfigOption {
                    name: "edns0".into(),
                    value: None,
                },
            ],
        }
    }

    #[test]
    fn cluster_first_is_the_default_except_on_the_node_network() {
        assert_eq!(
            spec(None, false, None).dns_policy("spec"),
            Ok(DnsPolicy::ClusterFirst)
        );
        assert_eq!(
            spec(None, true, None).dns_policy("spec"),
            Ok(DnsPolicy::Default)
        );
        let with_host_net = spec(Some("ClusterFirst"), true, None);
        assert_eq!(with_host_net.dns_policy("spec"), Ok(DnsPolicy::Default));
        let plain = spec(Some("ClusterFirstWithHostNet"), false, None);
        assert_eq!(plain.dns_policy("spec"), Ok(DnsPolicy::ClusterFirst));
        let default = spec(Some("Default"), false, None);
        assert_eq!(default.dns_policy("spec"), Ok(DnsPolicy::Default));
    }

    #[test]
    fn what_is_not_honoured_is_refused_naming_the_field() {
        let err = |s: PodSpec| s.dns_policy("spec").unwrap_err().to_string();
        assert!(err(spec(Some("ClusterFirstWithHostNet"), true, None)).contains("spec.dnsPolicy"));
        assert!(err(spec(Some("Cluster"), false, None)).contains("spec.dnsPolicy"));
        assert!(err(spec(Some("None"), false, None)).contains("spec.dnsConfig"));
        let merged = spec(Some("ClusterFirst"), false, Some(config(&["9.9.9.9"])));
        assert!(err(merged).contains("spec.dnsConfig"));
        let bad_server = spec(Some("None"), false, Some(config(&["dns.example"])));
        assert!(err(bad_server).contains("spec.dnsConfig.nameservers[0]"));
        let many = spec(Some("None"), false, Some(config(&["1.1.1.1"; 4])));
        assert!(err(many).contains("spec.dnsConfig.nameservers"));
        let mut injected = config(&["9.9.9.9"]);
        injected.searches = vec!["a.com\nnameserver 6.6.6.6".into()];
        let injected = spec(Some("None"), false, Some(injected));
        assert!(err(injected).contains("spec.dnsConfig.searches[0]"));
    }

    #[test]
    fn none_writes_the_dns_config_as_given() {
        let spec = spec(
            Some("None"),
            false,
            Some(config(&["9.9.9.9", "2001:db8::1"])),
        );
        assert_eq!(spec.dns_policy("spec"), Ok(DnsPolicy::None));
        assert_eq!(
            spec.dns_config.unwrap().resolv_conf(),
            "nameserver 9.9.9.9\nnameserver 2001:db8::1\nsearch example.com\noptions ndots:2 edns0\n"
        );
    }
}
