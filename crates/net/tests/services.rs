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

/// The flake this pins: a connection tried while a service had no
/// endpoints was routed out untranslated, and its tracking entry then
/// caught a later connection from the same source port, which was never
/// translated and timed out. Now the first is refused at once and leaves
/// nothing behind, so the second, from the same port, is served.
#[tokio::test]
async fn a_port_tried_before_the_service_had_endpoints_is_served_after() {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wharf_net::testing::HostNamespace;

    if !prerequisites("service forwards", &["nft", "curl"]) {
        return;
    }
    let client = HostNamespace::create(
        &format!("wtk-svc-{}", common::unique()),
        "10.96.251.1/30".parse().unwrap(),
        "10.96.251.2/30".parse().unwrap(),
    )
    .await
    .unwrap();
    client
        .exec("ip", ["route", "add", "default", "via", "10.96.251.1"])
        .await
        .unwrap();
    // As on a node: the root namespace routes, so an untranslated packet
    // would leave by the default route.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    let listener = tokio::net::TcpListener::bind("10.96.251.1:18087")
        .await
        .unwrap();
    // Reads the request before answering: closing with it unread would
    // reset the connection under curl.
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut chunk = [0u8; 512];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.write_all(b"served\n").await;
            let _ = stream.shutdown().await;
        }
    });
    let node = NftServices::new("wtk-nft-empty", None);
    let mut web = ServiceForward {
        name: "shop/web:80".into(),
        protocol: PortProtocol::Tcp,
        cluster_ip: Ipv4Addr::new(10, 195, 0, 20),
        port: 80,
        endpoints: vec![],
    };
    // From one source port (busybox nc ignores `-p` when it connects),
    // giving up after 3 s; the server's answer is not HTTP. The port is
    // this run's: a run without the fix leaves its entry for 120 s.
    let port = (40_000 + std::process::id() % 20_000).to_string();
    let connect = || async {
        let started = Instant::now();
        let output = client
            .command("curl")
            .args(["-sS", "--http0.9", "--local-port", &port])
            .args([
                "--connect-timeout",
                "3",
                "-m",
                "5",
                "http://10.195.0.20:80/",
            ])
            .output()
            .await
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (said, started.elapsed())
    };

    node.apply(std::slice::from_ref(&web)).await.unwrap();
    let (said, took) = connect().await;
    // curl's words for ECONNREFUSED.
    assert!(said.contains("Couldn't connect"), "{said}");
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not {took:?}"
    );

    web.endpoints = vec![(Ipv4Addr::new(10, 96, 251, 1), 18087)];
    node.apply(&[web]).await.unwrap();
    let (said, _) = connect().await;
    assert_eq!(said.trim(), "served");

    node.apply(&[]).await.unwrap();
    server.abort();
    client.delete().await.unwrap();
}
