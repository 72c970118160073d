//! `NftServices` against the kernel: the rules written are accepted and
//! listed in the node's own table, and applying none removes the table.
//!
//! Needs root and `nft`: skipped without them, failed under `CI=true`.

mod common;

use std::net::Ipv4Addr;

use common::nft_table as table;
use wharf_net::PortProtocol;
use wharf_net::services::{NftServices, ServiceForward};
use wharf_testkit::prereq::require_root_and as prerequisites;

#[tokio::test]
async fn rules_are_accepted_by_the_kernel_and_removed_with_the_last_service() {
    if !prerequisites("service forwards", &["nft"]) {
        return;
    }
    let node = NftServices::new("wtk-nft", None);
    let web = ServiceForward {
        name: "shop/web:80".into(),
        protocol: PortProtocol::Tcp,
        cluster_ip: Ipv4Addr::new(10, 195, 0, 10),
        port: 80,
        endpoints: vec![
            (Ipv4Addr::new(10, 95, 254, 2), 8080),
            (Ipv4Addr::new(10, 95, 254, 3), 8080),
        ],
    };
    let dns = ServiceForward {
        name: "shop/dns:53".into(),
        protocol: PortProtocol::Udp,
        cluster_ip: Ipv4Addr::new(10, 195, 0, 11),
        port: 53,
        endpoints: vec![(Ipv4Addr::new(10, 95, 254, 4), 5353)],
    };
    node.apply(&[web.clone(), dns]).await.unwrap();
    let listed = table(node.table()).await.expect("the node's table");
    for rule in [
        "ip daddr 10.195.0.10 tcp dport 80 jump svc-0",
        "numgen random mod 2 vmap { 0 : jump svc-0-0, 1 : jump svc-0-1 }",
        "dnat to 10.95.254.3:8080",
        "ip daddr 10.195.0.11 udp dport 53 jump svc-1",
        "dnat to 10.95.254.4:5353",
    ] {
        assert!(listed.contains(rule), "{rule}\n{listed}");
    }
    // Rewritten whole: the UDP service is gone, the other stays.
    node.apply(&[web]).await.unwrap();
    let listed = table(node.table()).await.expect("the node's table");
    assert!(!listed.contains("udp dport 53"), "{listed}");
    assert!(listed.contains("tcp dport 80"), "{listed}");
    node.apply(&[]).await.unwrap();
    assert_eq!(table(node.table()).await, None);
}
