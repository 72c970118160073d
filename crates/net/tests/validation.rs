//! Checks that need no privileges: invalid specs and configurations are
//! refused before any command runs, and the in-memory driver behaves like
//! the real one for the agent's tests.

use std::net::Ipv4Addr;
use std::path::Path;

use wharf_net::testing::MemoryDriver;
use wharf_net::{
    BridgeConfig, BridgeDriver, NetError, NetworkDriver, PodNetworkSpec, host_veth_name,
};

fn spec(pod_id: &str, ip: [u8; 4], gateway: [u8; 4]) -> PodNetworkSpec {
    PodNetworkSpec {
        pod_id: pod_id.to_owned(),
        ip: ip.into(),
        prefix_len: 24,
        gateway: gateway.into(),
    }
}

#[tokio::test]
async fn invalid_specs_are_refused_before_anything_is_created() {
    let id = format!("{:x}", std::process::id());
    let config = BridgeConfig {
        bridge: format!("wbv{id}"),
        netns_prefix: format!("wtv{id}-"),
        ..BridgeConfig::default()
    };
    // Even with an `ip` that works, nothing may run: the bridge would be the
    // first thing created.
    let driver = BridgeDriver::new(config.clone()).unwrap();
    let pod = format!("v{id}");
    let cases = [
        spec(&pod, [10, 84, 1, 10], [10, 84, 0, 1]),
        spec(&pod, [10, 84, 0, 1], [10, 84, 0, 1]),
        spec(&pod, [10, 84, 0, 0], [10, 84, 0, 1]),
        spec(&pod, [10, 84, 0, 255], [10, 84, 0, 1]),
        spec("Not-A-Pod", [10, 84, 0, 10], [10, 84, 0, 1]),
        spec("", [10, 84, 0, 10], [10, 84, 0, 1]),
    ];
    for case in &cases {
        let err = driver.setup(case).await.unwrap_err();
        assert!(
            matches!(
                err,
                NetError::InvalidSpec { .. } | NetError::InvalidPodId { .. }
            ),
            "{case:?}: {err}"
        );
    }
    let err = driver.setup(&cases[0]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid network spec for pod {pod}: ip 10.84.1.10 is outside 10.84.0.0/24 (gateway 10.84.0.1)"
        )
    );
    let err = driver.setup(&cases[1]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("ip 10.84.0.1 is the gateway of 10.84.0.0/24"),
        "{err}"
    );

    assert!(!Path::new("/sys/class/net").join(&config.bridge).exists());
    assert!(
        !Path::new("/sys/class/net")
            .join(host_veth_name(&pod))
            .exists()
    );
    assert!(!config.netns_path(&pod).exists());

    let err = driver.teardown("../etc").await.unwrap_err();
    assert!(matches!(err, NetError::InvalidPodId { .. }), "{err}");
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        BridgeConfig {
            bridge: "a-bridge-name-too-long".into(),
            ..BridgeConfig::default()
        },
        BridgeConfig {
            bridge: "br 0".into(),
            ..BridgeConfig::default()
        },
        BridgeConfig {
            netns_prefix: String::new(),
            ..BridgeConfig::default()
        },
        BridgeConfig {
            netns_prefix: "a/b".into(),
            ..BridgeConfig::default()
        },
        BridgeConfig {
            host_netns: Some("-n".into()),
            ..BridgeConfig::default()
        },
        BridgeConfig {
            mtu: Some(67),
            ..BridgeConfig::default()
        },
    ];
    for config in bad {
        let err = BridgeDriver::new(config.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                NetError::InvalidName { .. } | NetError::InvalidConfig(_)
            ),
            "{config:?}: {err}"
        );
    }
    let err = BridgeDriver::new(BridgeConfig {
        bridge: "a-bridge-name-too-long".into(),
        ..BridgeConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid bridge name \"a-bridge-name-too-long\": longer than 15 bytes"
    );
    let driver = BridgeDriver::new(BridgeConfig::default()).unwrap();
    assert_eq!(driver.config().netns_name("abc"), "wharf-abc");
    assert_eq!(
        driver.config().netns_path("abc"),
        Path::new("/var/run/netns/wharf-abc")
    );
}

#[tokio::test]
async fn memory_driver_records_pods_like_the_bridge_driver_names_them() {
    let driver = MemoryDriver::new("wharf-");
    let a = spec("abc", [10, 0, 0, 2], [10, 0, 0, 1]);
    let net = driver.setup(&a).await.unwrap();
    assert_eq!(net.netns_name, "wharf-abc");
    assert_eq!(net.host_veth, "vwabc");
    assert_eq!(net.ip, Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(driver.setup(&a).await.unwrap(), net);
    assert_eq!(driver.list().await.unwrap(), ["abc"]);

    assert!(
        driver
            .setup(&spec("abd", [10, 0, 0, 1], [10, 0, 0, 1]))
            .await
            .is_err()
    );
    driver.fail_setups(Some("no room"));
    let err = driver
        .setup(&spec("abd", [10, 0, 0, 3], [10, 0, 0, 1]))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "injected failure for pod abd: no room");
    driver.fail_setups(None);

    driver.teardown("abc").await.unwrap();
    driver.teardown("abc").await.unwrap();
    assert!(driver.list().await.unwrap().is_empty());
    assert_eq!(driver.calls(), (4, 2));
}
