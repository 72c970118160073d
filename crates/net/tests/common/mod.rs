//! Helpers shared by the namespace tests: unique names, pod specs, a busybox
//! HTTP server inside a namespace, and fetching from a namespace.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Child;
use wharf_net::PodNetworkSpec;
use wharf_net::testing::{netns_command, netns_exec};

/// Port the test servers listen on inside pod namespaces.
pub const PORT: u16 = 8080;

/// A suffix unique to this test process (tests of one binary share it, so
/// each test adds its own tag): names must not collide with a parallel or
/// earlier run whose namespaces the kernel is still tearing down.
pub fn unique() -> String {
    format!("{:x}", std::process::id())
}

/// `nft list table ip NAME`, or `None` when there is no such table.
pub async fn nft_table(name: &str) -> Option<String> {
    let output = tokio::process::Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .await
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A spec for `pod_id` at `ip`/24 with gateway `<ip's /24>.1`.
pub fn spec(pod_id: &str, ip: [u8; 4]) -> PodNetworkSpec {
    PodNetworkSpec {
        pod_id: pod_id.to_owned(),
        ip: ip.into(),
        prefix_len: 24,
        gateway: Ipv4Addr::new(ip[0], ip[1], ip[2], 1),
    }
}

/// Whether an interface of this name exists in the root namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Runs `ip args...` in the root namespace, returning stdout.
pub async fn ip(args: &[&str]) -> String {
    let output = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `busybox httpd` serving `body` at `/` inside a namespace; killed on drop.
pub struct Httpd {
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Httpd {
    /// Starts the server and waits until it answers inside its namespace.
    pub async fn start(netns: &str, body: &str) -> Httpd {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), body).expect("write index.html");
        let child = netns_command(netns, "busybox")
            .args(["httpd", "-f", "-p", &PORT.to_string(), "-h"])
            .arg(dir.path())
            .spawn()
            .expect("spawn busybox httpd");
        let httpd = Httpd {
            _child: child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fetch(Some(netns), Ipv4Addr::LOCALHOST).await {
                Ok(got) if got == body => return httpd,
                result if Instant::now() > deadline => {
                    panic!("httpd in {netns} not ready: {result:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// `GET http://<addr>:8080/` with busybox wget, from inside `netns` or from
/// the root namespace, giving up after 3 seconds.
pub async fn fetch(netns: Option<&str>, addr: Ipv4Addr) -> Result<String, String> {
    let url = format!("http://{addr}:{PORT}/");
    // Not `wget -T`: Debian's static busybox 1.35 segfaults with it.
    let args = ["wget", "-q", "-O", "-", url.as_str()];
    let attempt = async {
        match netns {
            Some(netns) => netns_exec(netns, "busybox", args)
                .await
                .map_err(|e| e.to_string()),
            None => {
                let output = tokio::process::Command::new("busybox")
                    .args(args)
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|e| format!("cannot run busybox: {e}"))?;
                if output.status.success() {
                    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
                } else {
                    Err(format!(
                        "wget {url} from the root namespace failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ))
                }
            }
        }
    };
    // Dropping the attempt kills wget (`kill_on_drop`).
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("wget {url} from {netns:?} timed out")),
    }
}
