//! The names the agent answers for itself: one per service,
//! `NAME.PROJECT.svc`, also reachable as `NAME.PROJECT.svc.cluster.local`
//! for manifests written against Kubernetes' default cluster domain.
//! Built once per [`ServiceView`] so a lookup is a hash probe.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use wharf_api::{CLUSTER_IP_NONE, Service};

use crate::service_view::ServiceView;

/// The zone the agent is authoritative for.
pub const SERVICE_ZONE: &str = "svc";

/// Kubernetes' default cluster domain, accepted after [`SERVICE_ZONE`].
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// What a name is, as far as the agent's own zone goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A service: its cluster IP, or a headless service's ready endpoints
    /// (possibly none).
    Service(&'a [Ipv4Addr]),
    /// Under `svc` but no such service: NXDOMAIN.
    NoSuchName,
    /// Not under `svc`: for the host's resolvers.
    Elsewhere,
}

/// Every service name of a [`ServiceView`] with its addresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NameTable {
    /// `name.project` (lowercase) to addresses.
    services: HashMap<String, Vec<Ipv4Addr>>,
}

impl NameTable {
    /// The names of `view`'s services.
    ///
    /// ```
    /// use wharf_agent::dns::{Lookup, NameTable};
    /// use wharf_agent::service_view::ServiceView;
    ///
    /// let web: wharf_api::Service = serde_json::from_value(serde_json::json!({
    ///     "metadata": {"name": "web", "project": "shop"},
    ///     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
    /// }))
    /// .unwrap();
    /// let table = NameTable::build(&ServiceView { services: vec![web], endpoints: vec![] });
    /// let ip = "10.96.0.10".parse().unwrap();
    /// assert_eq!(table.lookup("Web.Shop.svc."), Lookup::Service(&[ip]));
    /// assert_eq!(table.lookup("api.shop.svc"), Lookup::NoSuchName);
    /// assert_eq!(table.lookup("example.com"), Lookup::Elsewhere);
    /// ```
    pub fn build(view: &ServiceView) -> NameTable {
        let services = view
            .services
            .iter()
            .map(|service| (key(service), addresses(service, view)))
            .collect();
        NameTable { services }
    }

    /// What `name` (any case, with or without the final dot) is.
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let name = name
            .strip_suffix(CLUSTER_DOMAIN)
            .and_then(|rest| rest.strip_suffix('.'))
            .unwrap_or(&name);
        let under_zone = match name.strip_suffix(SERVICE_ZONE) {
            Some("") => Some(""),
            Some(rest) => rest.strip_suffix('.'),
            None => None,
        };
        match under_zone {
            None => Lookup::Elsewhere,
            Some(service) => match self.services.get(service) {
                Some(addresses) => Lookup::Service(addresses),
                None => Lookup::NoSuchName,
            },
        }
    }
}

/// `name.project`, lowercase (names are lowercase already; projects
/// should be, but DNS compares without case anyway).
fn key(service: &Service) -> String {
    let meta = &service.metadata;
    format!(
        "{}.{}",
        meta.name,
        meta.project.as_deref().unwrap_or_default()
    )
    .to_ascii_lowercase()
}

/// The cluster IP; for a headless service its ready endpoints, sorted.
fn addresses(service: &Service, view: &ServiceView) -> Vec<Ipv4Addr> {
    if let Some(ip) = service.cluster_ip() {
        return vec![ip];
    }
    if service.spec.cluster_ip.as_deref().map(str::trim) != Some(CLUSTER_IP_NONE) {
        // Not allocated yet: the name exists, with no address so far.
        return Vec::new();
    }
    let meta = &service.metadata;
    let mut ips: Vec<Ipv4Addr> = view
        .endpoints
        .iter()
        .filter(|e| e.metadata.name == meta.name && e.metadata.project == meta.project)
        .flat_map(|e| &e.subsets)
        .flat_map(|subset| &subset.addresses)
        .filter_map(|address| address.ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wharf_api::Endpoints;

    fn service(project: &str, name: &str, cluster_ip: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "project": project},
            "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    fn endpoints(project: &str, name: &str, ready: &[&str], not_ready: &[&str]) -> Endpoints {
        let list = |ips: &[&str]| ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>();
        serde_json::from_value(json!({
            "metadata": {"name": name, "project": project},
            "subsets": [{
                "addresses": list(ready),
                "notReadyAddresses": list(not_ready),
                "ports": [{"port": 8080, "protocol": "TCP"}],
            }],
        }))
        .unwrap()
    }

    fn table() -> NameTable {
        NameTable::build(&ServiceView {
            services: vec![
                service("shop", "web", Some("10.96.0.10")),
                service("bank", "web", Some("10.96.0.20")),
                service("shop", "db", Some("None")),
                service("shop", "pending", None),
            ],
            endpoints: vec![
                endpoints("shop", "db", &["10.88.0.7", "10.88.0.5"], &["10.88.0.9"]),
                // Same name in another project: not the headless one's.
                endpoints("bank", "db", &["10.88.0.66"], &[]),
            ],
        })
    }

    fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn a_service_name_is_its_cluster_ip_per_project() {
        let table = table();
        let shop = ips(&["10.96.0.10"]);
        assert_eq!(table.lookup("web.shop.svc"), Lookup::Service(&shop));
        assert_eq!(table.lookup("web.shop.svc."), Lookup::Service(&shop));
        let bank = ips(&["10.96.0.20"]);
        assert_eq!(table.lookup("web.bank.svc"), Lookup::Service(&bank));
    }

    #[test]
    fn names_compare_without_case_and_take_the_cluster_domain() {
        let table = table();
        let shop = ips(&["10.96.0.10"]);
        assert_eq!(table.lookup("WEB.Shop.SVC."), Lookup::Service(&shop));
        assert_eq!(
            table.lookup("web.shop.svc.cluster.local."),
            Lookup::Service(&shop)
        );
        assert_eq!(
            table.lookup("Web.Shop.Svc.Cluster.Local"),
            Lookup::Service(&shop)
        );
    }

    #[test]
    fn a_headless_service_is_its_ready_endpoints() {
        let table = table();
        let ready = ips(&["10.88.0.5", "10.88.0.7"]);
        assert_eq!(table.lookup("db.shop.svc"), Lookup::Service(&ready));
    }

    #[test]
    fn a_service_without_an_address_yet_exists_with_none() {
        assert_eq!(table().lookup("pending.shop.svc"), Lookup::Service(&[]));
    }

    #[test]
    fn unknown_names_under_svc_do_not_exist() {
        let table = table();
        for name in [
            "api.shop.svc",
            "web.other.svc",
            "shop.svc",
            "svc",
            "svc.",
            "a.web.shop.svc",
            "svc.cluster.local",
            "web.shop.svc.cluster.local.extra.svc",
        ] {
            assert_eq!(table.lookup(name), Lookup::NoSuchName, "{name}");
        }
    }

    #[test]
    fn other_names_are_not_ours() {
        let table = table();
        for name in [
            "example.com",
            "web.shop.svc.example.com",
            "websvc",
            "web.shopsvc",
            "cluster.local",
            "web.shop.svccluster.local",
            "",
            ".",
        ] {
            assert_eq!(table.lookup(name), Lookup::Elsewhere, "{name}");
        }
    }
}
