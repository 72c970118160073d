//! `BridgeDriver` against real namespaces in the root namespace: pods on
//! one bridge reach each other and are reached by the host, several pools
//! share the bridge, teardown is complete and idempotent, setup completes
//! after a crash half-way and undoes its own work when it fails.
//!
//! Needs root, `ip` and `busybox`: skipped without them, failed under `CI=true`.
//! Each test uses its own bridge, namespace prefix and subnets.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::{Httpd, fetch, ip, link_exists, spec, unique};
use wharf_net::testing::NodeCleanup;
use wharf_net::{BridgeConfig, BridgeDriver, NetError, NetworkDriver, host_veth_name};
use wharf_testkit::prereq::require_root_and as prerequisites;

/// A config with a bridge and prefix of its own for test `tag`.
fn config(tag: &str) -> BridgeConfig {
    let id = unique();
    BridgeConfig {
        bridge: format!("wb{tag}{id}"),
        netns_prefix: format!("wt{tag}{id}-"),
        ..BridgeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_and_two_pools_on_one_bridge() {
    if !prerequisites("two_pods_and_two_pools_on_one_bridge", &["ip", "busybox"]) {
        return;
    }
    let config = config("1");
    let _cleanup = NodeCleanup::new(config.clone());
    let driver = BridgeDriver::new(config.clone()).unwrap();
    let id = unique();
    let a = spec(&format!("a{id}"), [10, 77, 0, 10]);
    let b = spec(&format!("b{id}"), [10, 77, 0, 11]);
    let c = spec(&format!("c{id}"), [10, 78, 0, 10]);

    // Concurrently: the three race to create the bridge and its addresses.
    let (net_a, net_b, net_c) =
        tokio::try_join!(driver.setup(&a), driver.setup(&b), driver.setup(&c)).unwrap();
    assert_eq!(net_a.netns_name, format!("wt1{id}-a{id}"));
    assert_eq!(
        net_a.netns_path,
        Path::new("/var/run/netns").join(&net_a.netns_name)
    );
    assert_eq!(net_a.host_veth, format!("vwa{id}"));
    assert!(net_a.netns_path.exists());

    // Inside pod A: its address on eth0, the default route via the gateway.
    let addr = ip(&["-n", &net_a.netns_name, "-4", "addr", "show", "dev", "eth0"]).await;
    assert!(addr.contains("inet 10.77.0.10/24"), "{addr}");
    let routes = ip(&["-n", &net_a.netns_name, "route"]).await;
    assert!(
        routes.contains("default via 10.77.0.1 dev eth0"),
        "{routes}"
    );
    // The bridge carries both pools' gateways; the host veths hang off it.
    let bridge_addrs = ip(&["-4", "addr", "show", "dev", &config.bridge]).await;
    assert!(bridge_addrs.contains("inet 10.77.0.1/24"), "{bridge_addrs}");
    assert!(bridge_addrs.contains("inet 10.78.0.1/24"), "{bridge_addrs}");
    let veth = ip(&["-d", "link", "show", "dev", &net_c.host_veth]).await;
    assert!(
        veth.contains(&format!("master {}", config.bridge)),
        "{veth}"
    );
    // So a pod reaching its own hostPort gets the answer.
    assert!(veth.contains("hairpin on"), "{veth}");

    let _httpd_a = Httpd::start(&net_a.netns_name, "pod a").await;
    let _httpd_b = Httpd::start(&net_b.netns_name, "pod b").await;
    let _httpd_c = Httpd::start(&net_c.netns_name, "pod c").await;
    // The host reaches every pod address directly, in both pools.
    assert_eq!(fetch(None, a.ip).await.unwrap(), "pod a");
    assert_eq!(fetch(None, b.ip).await.unwrap(), "pod b");
    assert_eq!(fetch(None, c.ip).await.unwrap(), "pod c");
    // Pods of one pool reach each other over the bridge, both ways.
    assert_eq!(fetch(Some(&net_a.netns_name), b.ip).await.unwrap(), "pod b");
    assert_eq!(fetch(Some(&net_b.netns_name), a.ip).await.unwrap(), "pod a");

    let mut expected = vec![a.pod_id.clone(), b.pod_id.clone(), c.pod_id.clone()];
    expected.sort();
    assert_eq!(driver.list().await.unwrap(), expected);

    // Setting up a pod that is complete changes nothing.
    assert_eq!(driver.setup(&a).await.unwrap(), net_a);
    assert_eq!(fetch(None, a.ip).await.unwrap(), "pod a");

    for pod in [&a, &b, &c] {
        driver.teardown(&pod.pod_id).await.unwrap();
    }
    assert!(driver.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_removes_namespace_and_veth_and_is_idempotent() {
    if !prerequisites(
        "teardown_removes_namespace_and_veth_and_is_idempotent",
        &["ip"],
    ) {
        return;
    }
    let config = config("2");
    let _cleanup = NodeCleanup::new(config.clone());
    let driver = BridgeDriver::new(config.clone()).unwrap();
    let pod = spec(&format!("t{}", unique()), [10, 80, 0, 10]);

    let net = driver.setup(&pod).await.unwrap();
    assert!(net.netns_path.exists());
    assert!(link_exists(&net.host_veth));

    driver.teardown(&pod.pod_id).await.unwrap();
    assert!(!net.netns_path.exists());
    assert!(!link_exists(&net.host_veth));
    assert!(driver.list().await.unwrap().is_empty());
    // The bridge is shared and stays.
    assert!(link_exists(&config.bridge));

    driver.teardown(&pod.pod_id).await.unwrap();
    // A pod that never existed tears down as well.
    driver.teardown("nosuchpod").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_completes_after_a_crash_half_way() {
    if !prerequisites("setup_completes_after_a_crash_half_way", &["ip", "busybox"]) {
        return;
    }
    let config = config("3");
    let _cleanup = NodeCleanup::new(config.clone());
    let driver = BridgeDriver::new(config.clone()).unwrap();
    let id = unique();

    // Crashed right after creating the namespace.
    let first = spec(&format!("n{id}"), [10, 81, 0, 10]);
    ip(&["netns", "add", &config.netns_name(&first.pod_id)]).await;
    let net = driver.setup(&first).await.unwrap();
    let _httpd = Httpd::start(&net.netns_name, "first").await;
    assert_eq!(fetch(None, first.ip).await.unwrap(), "first");

    // Crashed before the address and route were set: a retry restores them.
    ip(&["-n", &net.netns_name, "-4", "addr", "flush", "dev", "eth0"]).await;
    assert!(fetch(None, first.ip).await.is_err());
    assert_eq!(driver.setup(&first).await.unwrap(), net);
    assert_eq!(fetch(None, first.ip).await.unwrap(), "first");
    let routes = ip(&["-n", &net.netns_name, "route"]).await;
    assert!(
        routes.contains("default via 10.81.0.1 dev eth0"),
        "{routes}"
    );

    // A leftover host veth whose peer is not in the namespace is replaced.
    let second = spec(&format!("v{id}"), [10, 81, 0, 11]);
    let stray_peer = format!("sx{id}");
    let veth = host_veth_name(&second.pod_id);
    ip(&["netns", "add", &config.netns_name(&second.pod_id)]).await;
    ip(&[
        "link",
        "add",
        "name",
        &veth,
        "type",
        "veth",
        "peer",
        "name",
        &stray_peer,
    ])
    .await;
    let net2 = driver.setup(&second).await.unwrap();
    assert!(
        !link_exists(&stray_peer),
        "stale veth pair was not replaced"
    );
    let _httpd2 = Httpd::start(&net2.netns_name, "second").await;
    assert_eq!(fetch(None, second.ip).await.unwrap(), "second");
    assert_eq!(
        fetch(Some(&net.netns_name), second.ip).await.unwrap(),
        "second"
    );

    // Crashed inside `ip netns add`: a plain file where the mount should be.
    let third = spec(&format!("f{id}"), [10, 81, 0, 12]);
    std::fs::write(config.netns_path(&third.pod_id), b"").unwrap();
    let net3 = driver.setup(&third).await.unwrap();
    let _httpd3 = Httpd::start(&net3.netns_name, "third").await;
    assert_eq!(fetch(None, third.ip).await.unwrap(), "third");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_setup_undoes_what_it_created() {
    if !prerequisites("failed_setup_undoes_what_it_created", &["ip"]) {
        return;
    }
    // Above the veth maximum (65535): refused by the kernel once the veth
    // and namespace exist, which is the point.
    let config = BridgeConfig {
        mtu: Some(70_000),
        ..config("4")
    };
    let _cleanup = NodeCleanup::new(config.clone());
    let driver = BridgeDriver::new(config.clone()).unwrap();
    let id = unique();
    let pod = spec(&format!("u{id}"), [10, 82, 0, 10]);

    let err = driver.setup(&pod).await.unwrap_err();
    match &err {
        NetError::Command {
            command, stderr, ..
        } => {
            assert!(command.contains("mtu 70000"), "{err}");
            assert!(!stderr.is_empty(), "{err}");
        }
        other => panic!("expected the failing ip command, got {other:?}"),
    }
    assert!(
        !config.netns_path(&pod.pod_id).exists(),
        "namespace left behind"
    );
    assert!(
        !link_exists(&host_veth_name(&pod.pod_id)),
        "veth left behind"
    );
    assert!(driver.list().await.unwrap().is_empty());

    // A namespace this call did not create (a crashed earlier attempt's)
    // stays; the veth it did create goes.
    let netns = config.netns_name(&pod.pod_id);
    ip(&["netns", "add", &netns]).await;
    driver.setup(&pod).await.unwrap_err();
    assert!(config.netns_path(&pod.pod_id).exists());
    assert!(
        !link_exists(&host_veth_name(&pod.pod_id)),
        "veth left behind"
    );
    let links = ip(&["-n", &netns, "link", "show"]).await;
    assert!(!links.contains("eth0"), "{links}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_with_another_prefix_length_is_a_conflict() {
    if !prerequisites("gateway_with_another_prefix_length_is_a_conflict", &["ip"]) {
        return;
    }
    let config = config("5");
    let _cleanup = NodeCleanup::new(config.clone());
    let driver = BridgeDriver::new(config.clone()).unwrap();
    let id = unique();
    driver
        .setup(&spec(&format!("g{id}"), [10, 83, 0, 10]))
        .await
        .unwrap();

    let mut other = spec(&format!("h{id}"), [10, 83, 0, 11]);
    other.prefix_len = 16;
    other.gateway = Ipv4Addr::new(10, 83, 0, 1);
    let err = driver.setup(&other).await.unwrap_err();
    assert!(matches!(err, NetError::GatewayConflict { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "bridge {} already has 10.83.0.1/24; pod {} needs 10.83.0.1/16",
            config.bridge, other.pod_id
        )
    );
    assert!(!config.netns_path(&other.pod_id).exists());
}

/// The bridge is the pods' gateway: its MAC must not follow its ports,
/// or a pod that cached the MAC of a gone pod's veth loses its gateway.
/// A bridge made by hand (or an earlier version) gets one pinned too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_its_mac_as_pods_come_and_go() {
    if !prerequisites("the_gateway_keeps_its_mac_as_pods_come_and_go", &["ip"]) {
        return;
    }
    let sys = |config: &BridgeConfig, file: &str| {
        let path = Path::new("/sys/class/net").join(&config.bridge).join(file);
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    };
    for made_by_hand in [false, true] {
        let config = config("m");
        let _cleanup = NodeCleanup::new(config.clone());
        if made_by_hand {
            ip(&["link", "add", "name", &config.bridge, "type", "bridge"]).await;
        }
        let driver = BridgeDriver::new(config.clone()).unwrap();
        let id = unique();
        let first = spec(&format!("f{id}"), [10, 76, 0, 10]);
        driver.setup(&first).await.unwrap();
        // NET_ADDR_SET: the kernel no longer picks the lowest port MAC.
        assert_eq!(sys(&config, "addr_assign_type"), "3");
        let gateway_mac = sys(&config, "address");
        assert_ne!(gateway_mac, "00:00:00:00:00:00");
        for n in 0..4u8 {
            let pod = spec(&format!("p{n}{id}"), [10, 76, 0, 20 + n]);
            driver.setup(&pod).await.unwrap();
            assert_eq!(sys(&config, "address"), gateway_mac, "pod {n} added");
        }
        driver.teardown(&first.pod_id).await.unwrap();
        for n in 0..4u8 {
            driver.teardown(&format!("p{n}{id}")).await.unwrap();
            assert_eq!(sys(&config, "address"), gateway_mac, "pod {n} removed");
        }
    }
}
