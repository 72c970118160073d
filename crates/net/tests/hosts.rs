//! Two "hosts" on one machine: each a `HostNamespace` with its own
//! `BridgeDriver` (bridge `wharf0` inside it). A pod is reachable from its
//! own host; pods and hosts of different hosts are not (separate L2 domains,
//! no routes between them), even with addresses from the same pool.
//!
//! Needs root, `ip` and `busybox`: skipped without them, failed under `CI=true`.

mod common;

use std::net::Ipv4Addr;

use common::{Httpd, fetch, ip, spec, unique};
use wharf_net::testing::{HostNamespace, NodeCleanup};
use wharf_net::{BridgeConfig, BridgeDriver, Ipv4Cidr, NetworkDriver};
use wharf_testkit::prereq::require_root_and as prerequisites;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_reachable_from_their_host_only() {
    if !prerequisites(
        "pods_are_reachable_from_their_host_only",
        &["ip", "busybox"],
    ) {
        return;
    }
    let id = unique();
    let cidr = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
    // Declared before the cleanup guards so they are dropped after them:
    // pods' veths are deleted inside the hosts while these still exist.
    let host_a = HostNamespace::create(
        &format!("wha{id}"),
        cidr("10.203.0.1/30"),
        cidr("10.203.0.2/30"),
    )
    .await
    .unwrap();
    let host_b = HostNamespace::create(
        &format!("whb{id}"),
        cidr("10.203.0.5/30"),
        cidr("10.203.0.6/30"),
    )
    .await
    .unwrap();
    let config_for = |host: &HostNamespace, tag: &str| BridgeConfig {
        netns_prefix: format!("wt6{tag}{id}-"),
        host_netns: Some(host.name().to_owned()),
        ..BridgeConfig::default()
    };
    let (config_a, config_b) = (config_for(&host_a, "a"), config_for(&host_b, "b"));
    let _cleanup_a = NodeCleanup::new(config_a.clone());
    let _cleanup_b = NodeCleanup::new(config_b.clone());
    let driver_a = BridgeDriver::new(config_a).unwrap();
    let driver_b = BridgeDriver::new(config_b).unwrap();

    // The hosts' uplinks work: each host namespace is reachable from the root.
    let uplink = host_a
        .exec("ip", ["-4", "addr", "show", "dev", "eth0"])
        .await
        .unwrap();
    assert!(uplink.contains("inet 10.203.0.2/30"), "{uplink}");
    assert_eq!(host_a.root_side().addr, Ipv4Addr::new(10, 203, 0, 1));

    // Same pool on both hosts: only an L2 domain per host connects pods.
    let pod_a = spec(&format!("a{id}"), [10, 79, 0, 10]);
    let pod_b = spec(&format!("b{id}"), [10, 79, 0, 11]);
    let net_a = driver_a.setup(&pod_a).await.unwrap();
    let net_b = driver_b.setup(&pod_b).await.unwrap();

    // Each bridge lives inside its host, not in the root namespace.
    let bridge = ip(&["-n", host_a.name(), "-4", "addr", "show", "dev", "wharf0"]).await;
    assert!(bridge.contains("inet 10.79.0.1/24"), "{bridge}");
    let veth = ip(&["-n", host_b.name(), "link", "show", "dev", &net_b.host_veth]).await;
    assert!(veth.contains("master wharf0"), "{veth}");
    assert_eq!(driver_a.list().await.unwrap(), [pod_a.pod_id.as_str()]);
    assert_eq!(driver_b.list().await.unwrap(), [pod_b.pod_id.as_str()]);

    let _httpd_a = Httpd::start(&net_a.netns_name, "pod a").await;
    let _httpd_b = Httpd::start(&net_b.netns_name, "pod b").await;

    // Per-host reachability, and the pods' way back to their host.
    assert_eq!(fetch(Some(host_a.name()), pod_a.ip).await.unwrap(), "pod a");
    assert_eq!(fetch(Some(host_b.name()), pod_b.ip).await.unwrap(), "pod b");
    // Isolation: across hosts, neither pod to pod nor host to pod.
    // Each attempt waits for ARP to give up, so they run side by side.
    let attempts = tokio::join!(
        fetch(Some(&net_a.netns_name), pod_b.ip),
        fetch(Some(host_a.name()), pod_b.ip),
        fetch(Some(&net_b.netns_name), pod_a.ip),
        fetch(Some(host_b.name()), pod_a.ip),
    );
    for (from, attempt) in ["pod a", "host a", "pod b", "host b"]
        .iter()
        .zip([attempts.0, attempts.1, attempts.2, attempts.3])
    {
        assert!(
            attempt.is_err(),
            "{from} reached the other host's pod: {attempt:?}"
        );
    }

    driver_a.teardown(&pod_a.pod_id).await.unwrap();
    driver_b.teardown(&pod_b.pod_id).await.unwrap();
    assert!(driver_a.list().await.unwrap().is_empty());
    let links = ip(&["-n", host_a.name(), "link", "show"]).await;
    assert!(!links.contains(&net_a.host_veth), "{links}");
}
