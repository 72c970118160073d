//! What a pod's `/etc/resolv.conf` says, per its `dnsPolicy`: the agent's
//! name server on the pod's gateway (`ClusterFirst`), the node's file
//! (`Default`, and pods on the node's network), or its `dnsConfig`
//! (`None`).

use std::net::IpAddr;
use std::path::Path;

use wharf_api::{DnsPolicy, Pod};
use wharf_runc::spec::ResolvConf;

use crate::dns::pod_resolv_conf;

/// The node's resolver configuration, unless the agent is told another
/// (`--resolv-conf`, as kubelet's).
pub const NODE_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The file for `pod`, given where the agent's name server answers it
/// (`None`: nowhere, so `ClusterFirst` falls back to the node's file,
/// `node_file`).
/// A policy validation refused never reaches a node; were one to, the
/// node's file is the safe answer.
pub fn resolv_conf_for(pod: &Pod, name_server: Option<IpAddr>, node_file: &Path) -> ResolvConf {
    let node = || ResolvConf::Node(node_file.to_path_buf());
    match pod.spec.dns_policy("spec") {
        Ok(DnsPolicy::ClusterFirst) => match name_server {
            Some(server) => {
                let project = pod.metadata.project.as_deref().unwrap_or_default();
                ResolvConf::Text(pod_resolv_conf(server, project))
            }
            None => node(),
        },
        Ok(DnsPolicy::None) => ResolvConf::Text(
            pod.spec
                .dns_config
                .clone()
                .unwrap_or_default()
                .resolv_conf(),
        ),
        Ok(DnsPolicy::Default) | Err(_) => node(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use serde_json::json;

    fn resolv_conf_for(pod: &Pod, name_server: Option<IpAddr>) -> ResolvConf {
        super::resolv_conf_for(pod, name_server, Path::new(NODE_RESOLV_CONF))
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "web", "image": "web:1"}]);
        serde_json::from_value(
            json!({"metadata": {"name": "web-1", "project": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    fn node() -> ResolvConf {
        ResolvConf::Node(PathBuf::from(NODE_RESOLV_CONF))
    }

    #[test]
    fn cluster_first_points_at_the_agent_with_the_projects_search_list() {
        let server = Some("10.88.0.1".parse().unwrap());
        let expected =
            ResolvConf::Text("nameserver 10.88.0.1\nsearch shop.svc svc\noptions ndots:5\n".into());
        assert_eq!(resolv_conf_for(&pod(json!({})), server), expected);
        let with_host_net = pod(json!({"dnsPolicy": "ClusterFirstWithHostNet"}));
        assert_eq!(resolv_conf_for(&with_host_net, server), expected);
        // No name server here (say, a simulated host): the node's file.
        assert_eq!(resolv_conf_for(&pod(json!({})), None), node());
    }

    #[test]
    fn default_and_the_node_network_keep_the_nodes_file() {
        let server = Some("10.88.0.1".parse().unwrap());
        let default = pod(json!({"dnsPolicy": "Default"}));
        assert_eq!(resolv_conf_for(&default, server), node());
        let host = pod(json!({"hostNetwork": true}));
        assert_eq!(resolv_conf_for(&host, server), node());
    }

    #[test]
    fn none_writes_the_dns_config() {
        let pod = pod(json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["9.9.9.9"], "searches": ["example.com"],
            "options": [{"name": "ndots", "value": "1"}],
        }}));
        assert_eq!(
            resolv_conf_for(&pod, Some("10.88.0.1".parse().unwrap())),
            ResolvConf::Text("nameserver 9.9.9.9\nsearch example.com\noptions ndots:1\n".into())
        );
    }
}
