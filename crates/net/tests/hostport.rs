//! `NftHostPorts` against the kernel: each apply leaves exactly the listed
//! pods' rules, in the node's own table, and an empty set leaves no table.
//!
//! Needs root and `nft`: skipped without them, failed under `CI=true`.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::nft_table as table;
use wharf_net::{HostPortDriver, HostPortForward, NftHostPorts, PortProtocol};
use wharf_testkit::prereq::require_root_and as prerequisites;

fn forward(host_port: u16, last: u8) -> HostPortForward {
    HostPortForward {
        protocol: PortProtocol::Tcp,
        host_ip: None,
        host_port,
        pod_ip: Ipv4Addr::new(10, 88, 254, last),
        pod_prefix_len: 24,
        container_port: 80,
    }
}

#[tokio::test]
async fn each_apply_leaves_exactly_the_listed_pods_rules() {
    if !prerequisites("host port forwards", &["nft"]) {
        return;
    }
    let node = NftHostPorts::new("wth-nft", None);
    let other = NftHostPorts::new("wth-nft-other", None);
    let both = BTreeMap::from([
        ("aaa".to_string(), vec![forward(18091, 5)]),
        ("bbb".to_string(), vec![forward(18092, 6)]),
    ]);
    node.apply(&both).await.unwrap();
    other
        .apply(&BTreeMap::from([(
            "ccc".to_string(),
            vec![forward(18093, 7)],
        )]))
        .await
        .unwrap();
    let listed = table(node.table()).await.expect("the node's table");
    for rule in [
        "tcp dport 18091 dnat to 10.88.254.5:80 comment \"pod aaa\"",
        "tcp dport 18092 dnat to 10.88.254.6:80 comment \"pod bbb\"",
    ] {
        assert!(listed.contains(rule), "{rule}\n{listed}");
    }

    // Pod aaa is gone (say, while the agent was down): rewriting drops it.
    let only_b = BTreeMap::from([("bbb".to_string(), vec![forward(18092, 6)])]);
    node.apply(&only_b).await.unwrap();
    let listed = table(node.table()).await.expect("the node's table");
    assert!(
        !listed.contains("pod aaa") && listed.contains("pod bbb"),
        "{listed}"
    );

    node.apply(&BTreeMap::new()).await.unwrap();
    assert_eq!(table(node.table()).await, None);
    node.apply(&BTreeMap::new()).await.unwrap();
    let others = table(other.table())
        .await
        .expect("another node's table is untouched");
    assert!(others.contains("pod ccc"), "{others}");
    other.apply(&BTreeMap::new()).await.unwrap();
    assert_eq!(table(other.table()).await, None);
}
