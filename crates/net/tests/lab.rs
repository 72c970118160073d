//! A lab network for real: two machines on a bridge, each link shaped to
//! 4 MiB/s per direction. Into a machine, out of it, and from one machine
//! to the other, 6 MiB take about 1.5 s (never under 1.2 s: the bucket
//! lets 256 KiB through at once); an unshaped lab moves them far faster.
//! Dropping the lab leaves no namespace or link of its prefix.
//!
//! Prefix `wppt` and 10.123.250.0/24, inside the P2P show's 10.123.0.0/16
//! and apart from its `wpp` names. Needs root, `ip`, `tc`, `nsenter`,
//! `curl` and `busybox`: skipped without them, failed under `CI=true`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_net::Ipv4Cidr;
use wharf_net::lab::{LabNetwork, LabSpec};
use wharf_testkit::prereq::require_root_and as prerequisites;

const MIB: u64 = 1 << 20;
const PAYLOAD: u64 = 6 * MIB;

fn spec(rate: Option<u64>) -> LabSpec {
    LabSpec {
        prefix: "wppt".into(),
        host: Ipv4Cidr::new(Ipv4Addr::new(10, 123, 250, 1), 24),
        machine_base: Ipv4Addr::new(10, 123, 250, 10),
        machines: 2,
        rate_bytes_per_second: rate,
    }
}

/// Serves `PAYLOAD` bytes to each connection on the host's address once
/// it sent a byte; returns the port.
async fn host_server(address: Ipv4Addr) -> u16 {
    let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ask = [0u8; 1];
                if socket.read_exact(&mut ask).await.is_ok() {
                    let _ = socket.write_all(&vec![7u8; PAYLOAD as usize]).await;
                }
            });
        }
    });
    port
}

/// `GET path` over HTTP/1.0 from `address:8080`; the body's length.
async fn http_get(address: Ipv4Addr, path: &str) -> u64 {
    let mut socket = tokio::net::TcpStream::connect((address, 8080))
        .await
        .unwrap();
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    (answer.len() - body - 4) as u64
}

/// Runs `script` with busybox's `sh` inside machine `index`; its run time.
async fn timed_in(lab: &LabNetwork, index: usize, script: &str) -> Duration {
    let started = Instant::now();
    let output = lab.machines()[index]
        .command("busybox")
        .args(["sh", "-c", script])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_shaped_both_ways_and_machines_reach_each_other() {
    if !prerequisites(
        "links_are_shaped_both_ways_and_machines_reach_each_other",
        &["ip", "tc", "nsenter", "busybox"],
    ) {
        return;
    }
    let rate = 4 * MIB;
    let lab = LabNetwork::create(spec(Some(rate))).await.unwrap();
    let host = lab.host_address();
    let port = host_server(host).await;
    let expected = PAYLOAD as f64 / rate as f64;
    let within = |what: &str, took: Duration| {
        let seconds = took.as_secs_f64();
        assert!(
            seconds > expected * 0.8 && seconds < expected * 4.0,
            "{what}: {PAYLOAD} bytes at {rate} bytes/s took {seconds:.2} s"
        );
    };
    let download = format!("printf d | busybox nc {host} {port} | wc -c | grep -qx {PAYLOAD}");
    within("into machine 0", timed_in(&lab, 0, &download).await);
    // Both machines serve a file over HTTP (busybox httpd).
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("blob"), vec![1u8; PAYLOAD as usize]).unwrap();
    std::fs::write(served.path().join("ready"), b"ok").unwrap();
    let mut servers = Vec::new();
    for machine in lab.machines() {
        let child = machine
            .command("busybox")
            .args([
                "httpd",
                "-f",
                "-p",
                &format!("{}:8080", machine.address),
                "-h",
            ])
            .arg(served.path())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        servers.push(child);
    }
    for machine in lab.machines() {
        let ready = format!(
            "for i in $(seq 50); do busybox wget -q -O /dev/null http://{}:8080/ready && exit 0; sleep 0.1; done; exit 1",
            machine.address
        );
        timed_in(&lab, machine.index, &ready).await;
    }
    // Out of machine 0: the host downloads its file.
    let started = Instant::now();
    let got = http_get(lab.machines()[0].address, "/blob").await;
    assert_eq!(got, PAYLOAD, "bytes out of machine 0");
    within("out of machine 0", started.elapsed());
    // Machine to machine over the bridge: both links shaped.
    let peer = lab.machines()[1].address;
    let fetch =
        format!("busybox wget -q -O - http://{peer}:8080/blob | wc -c | grep -qx {PAYLOAD}");
    within("machine 1 to machine 0", timed_in(&lab, 0, &fetch).await);
    drop(servers);
    drop(lab);

    // Unshaped, the same download is much faster than the shaped rate.
    let lab = LabNetwork::create(spec(None)).await.unwrap();
    let port = host_server(host).await;
    let download = format!("printf d | busybox nc {host} {port} | wc -c | grep -qx {PAYLOAD}");
    let took = timed_in(&lab, 0, &download).await;
    assert!(
        took.as_secs_f64() < expected / 2.0,
        "unshaped: {:.2} s",
        took.as_secs_f64()
    );
    drop(lab);
    let leftovers: Vec<String> = std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .chain(
            std::fs::read_dir("/sys/class/net")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        )
        .filter(|name| name.starts_with("wppt"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
