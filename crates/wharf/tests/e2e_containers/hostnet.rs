//! `hostNetwork` and `hostPort` on a real node: a pod on the node's network
//! (only where the project allows privileged workloads) sees the node's
//! interfaces and reports the node's address; a pod's `hostPort`s answer,
//! TCP and UDP, on the node's address from the node itself and from
//! another network namespace, and stop answering, with no nftables rule
//! left, once the pod is deleted; an agent playing a host in a namespace
//! of its own keeps both inside that namespace.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::TestServer;
use super::sec::{busybox_layer, deployment, log_with, refused_apply};
use super::{
    Cli, Node, NodeSpec, name_of, pod_id, prerequisites, push_tar_image, require_tool,
    shop_with_puller, wait_for,
};

/// Runs `program args` and says whether it succeeded (its output dropped).
fn quietly(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(program: &str, args: &[&str]) {
    assert!(quietly(program, args), "{program} {args:?} failed");
}

/// Links and namespaces a test made on the machine, removed on drop.
#[derive(Default)]
struct Plumbing {
    links: Vec<&'static str>,
    namespaces: Vec<&'static str>,
    children: Vec<Child>,
}

impl Drop for Plumbing {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for link in &self.links {
            quietly("ip", &["link", "delete", link]);
        }
        for namespace in &self.namespaces {
            quietly("ip", &["netns", "delete", namespace]);
        }
    }
}

/// The machine's nftables rules.
fn ruleset() -> String {
    let output = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A server with project `shop` holding the busybox image (returned), and
/// node `wth-N` (bridge `wthbrN`, pods in 10.88.N.0/24) at `address`,
/// living in `host_netns` when given, pulling from it.
async fn busybox_on(
    name: &'static str,
    address: &'static str,
    host_netns: Option<&'static str>,
) -> (TestServer, Cli, Node, String) {
    let (bridge, netns_prefix, pod_cidr) = match name {
        "wth-1" => ("wthbr1", "wth1-", "10.88.1.0/24"),
        "wth-2" => ("wthbr2", "wth2-", "10.88.2.0/24"),
        _ => ("wthbr3", "wth3-", "10.88.3.0/24"),
    };
    let server = TestServer::start();
    let (cli, robot) = shop_with_puller(&server).await;
    let image = push_tar_image(&server, "busybox", &busybox_layer()).await;
    let spec = NodeSpec {
        name,
        bridge,
        netns_prefix,
        pod_cidr,
        host_netns,
        address: Some(address),
    };
    let node = Node::start(&cli, spec, &robot);
    (server, cli, node, image)
}

/// A Deployment of one `hostNetwork` pod (`container`: more lines of its
/// container) that logs `file` and its host name, then `done`.
fn on_node_network(name: &str, image: &str, container: &str, file: &str) -> String {
    let script = format!(
        "B=/bin/busybox
$B cat {file}
echo host=$($B hostname)
echo done
exec $B sleep 3600"
    );
    deployment(name, image, "      hostNetwork: true\n", container, &script)
}

/// The running pod named `prefix-...` of project `shop`.
fn running_pod(cli: &Cli, prefix: &str) -> serde_json::Value {
    wait_for(
        &format!("{prefix} running"),
        Duration::from_secs(60),
        || {
            cli.pods("shop").into_iter().find(|p| {
                name_of(p).starts_with(&format!("{prefix}-"))
                    && p["status"]["phase"] == "Running"
                    && p["status"]["podIP"].is_string()
            })
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_needs_allow_privileged_then_shares_the_nodes_network() {
    if !prerequisites("hostNetwork") {
        return;
    }
    // An interface only the node's namespace has (a veth pair: the dummy
    // module is not everywhere).
    let mut plumbing = Plumbing::default();
    quietly("ip", &["link", "delete", "wthd1"]);
    run(
        "ip",
        &[
            "link", "add", "wthd1", "type", "veth", "peer", "name", "wthd1p",
        ],
    );
    plumbing.links.push("wthd1");

    let (_server, cli, _node, image) = busybox_on("wth-1", "192.0.2.71", None).await;
    let manifest = on_node_network(
        "onhost",
        &image,
        "          ports: [{containerPort: 18070}]\n",
        "/proc/net/dev",
    );
    let stderr = refused_apply(&cli, &manifest);
    assert!(
        stderr.contains("spec.template.spec.hostNetwork") && stderr.contains("allow-privileged"),
        "{stderr}"
    );
    let deployments = cli.run(&["get", "deployments", "-p", "shop"]);
    assert!(!deployments.contains("onhost"), "{deployments}");
    assert!(cli.pods("shop").is_empty());

    cli.run(&["project", "update", "shop", "--allow-privileged=true"]);
    cli.run_with(&["apply", "-f", "-"], &manifest);
    let log = log_with(&cli, "onhost", "done");
    assert!(log.contains("wthd1:"), "the node's interfaces: {log}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        log.contains(&format!("host={}\n", hostname.trim())),
        "{log}"
    );
    let pod = running_pod(&cli, "onhost");
    assert_eq!(pod["status"]["podIP"], "192.0.2.71", "{pod}");
    assert!(
        !Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("wth1-"))
            .unwrap_or(true),
        "no namespace of its own"
    );
    let described = cli.run(&["describe", "pod", "-p", "shop", &name_of(&pod)]);
    assert!(described.contains("host namespaces network"), "{described}");
}

/// Node address of the hostPort test, on a link to a client namespace.
const NODE_ADDRESS: &str = "10.88.252.1";
const CLIENT_NETNS: &str = "wthc2";

/// A client namespace reaching the node over a veth pair:
/// `NODE_ADDRESS`/30 on the node's end.
fn client_namespace(plumbing: &mut Plumbing) {
    quietly("ip", &["netns", "delete", CLIENT_NETNS]);
    quietly("ip", &["link", "delete", "wthv2h"]);
    run("ip", &["netns", "add", CLIENT_NETNS]);
    plumbing.namespaces.push(CLIENT_NETNS);
    run(
        "ip",
        &[
            "link",
            "add",
            "wthv2h",
            "type",
            "veth",
            "peer",
            "name",
            "wthv2c",
            "netns",
            CLIENT_NETNS,
        ],
    );
    plumbing.links.push("wthv2h");
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{NODE_ADDRESS}/30"),
            "dev",
            "wthv2h",
        ],
    );
    run("ip", &["link", "set", "wthv2h", "up"]);
    let client = ["netns", "exec", CLIENT_NETNS, "ip"];
    let inside = |args: &[&str]| run("ip", &[&client[..], args].concat());
    inside(&["addr", "add", "10.88.252.2/30", "dev", "wthv2c"]);
    inside(&["link", "set", "wthv2c", "up"]);
    inside(&["link", "set", "lo", "up"]);
    inside(&["route", "add", "default", "via", NODE_ADDRESS]);
}

/// `curl http://ADDR/` from the node, or from `netns`.
fn curl(netns: Option<&str>, addr: &str) -> Option<String> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let output = command
        .args(["-sf", "-m", "3", &format!("http://{addr}/")])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Sends `text` over UDP to `addr` from the node, or from `netns`, and
/// returns the answer.
pub(super) fn udp_echo(netns: Option<&str>, addr: &str, text: &str) -> Option<String> {
    let Some(ns) = netns else {
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        socket.send_to(text.as_bytes(), addr).ok()?;
        let mut buf = [0u8; 512];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    let (host, port) = addr.split_once(':')?;
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\n\
         s.sendto(b'{text}',('{host}',{port}))\nprint(s.recv(512).decode(),end='')"
    );
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A UDP echo server on `port` inside network namespace `netns`: busybox
/// has no UDP server, so it stands beside the container in the pod's
/// namespace, where the forward must bring the datagrams.
pub(super) fn udp_echo_server(netns: &str, port: u16) -> Child {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0',{port}))\nwhile True:\n  d,a=s.recvfrom(512)\n  s.sendto(b'echo '+d,a)"
    );
    Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", &script])
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_forward_tcp_and_udp_until_the_pod_is_deleted() {
    if !prerequisites("hostPort forwarding")
        || !require_tool("nft", "apt-get install nftables")
        || !require_tool("python3", "apt-get install python3")
    {
        return;
    }
    let mut plumbing = Plumbing::default();
    client_namespace(&mut plumbing);
    let (_server, cli, _node, image) = busybox_on("wth-2", NODE_ADDRESS, None).await;
    let manifest = deployment(
        "forwarded",
        &image,
        "",
        &format!(
            "          ports:
            - {{containerPort: 80, hostPort: 18071}}
            - {{containerPort: 80, hostPort: 18072, hostIP: {NODE_ADDRESS}}}
            - {{containerPort: 9053, hostPort: 18073, protocol: UDP}}
"
        ),
        "B=/bin/busybox
$B mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html
exec $B httpd -f -p 80 -h /tmp/www",
    );
    cli.run_with(&["apply", "-f", "-"], &manifest);
    let pod = running_pod(&cli, "forwarded");
    let pod_ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert!(pod_ip.starts_with("10.88.2."), "{pod}");
    let table = ruleset();
    assert!(table.contains("table ip wharf-hostports-wth-2"), "{table}");
    let netns = format!("wth2-{}", pod_id(&pod));
    plumbing.children.push(udp_echo_server(&netns, 9053));

    // The rules are in place once the pod runs; httpd may take a moment.
    let all_port = format!("{NODE_ADDRESS}:18071");
    let from_node = wait_for(
        "the hostPort from the node",
        Duration::from_secs(20),
        || curl(None, &all_port),
    );
    assert_eq!(from_node, "hello-from-pod");
    assert_eq!(
        curl(Some(CLIENT_NETNS), &all_port).as_deref(),
        Some("hello-from-pod")
    );
    // The pod reaching its own host port: the answer comes back through
    // the node only because the request was masqueraded.
    assert_eq!(
        curl(Some(&netns), &all_port).as_deref(),
        Some("hello-from-pod")
    );
    // hostIP: only that address forwards the port; the bridge's gateway
    // address (the node's too) does not.
    let on_host_ip = format!("{NODE_ADDRESS}:18072");
    assert_eq!(
        curl(Some(CLIENT_NETNS), &on_host_ip).as_deref(),
        Some("hello-from-pod")
    );
    assert_eq!(
        curl(None, "10.88.2.1:18071").as_deref(),
        Some("hello-from-pod")
    );
    assert_eq!(curl(None, "10.88.2.1:18072"), None);

    let udp = format!("{NODE_ADDRESS}:18073");
    let echoed = wait_for("the UDP hostPort", Duration::from_secs(20), || {
        udp_echo(Some(CLIENT_NETNS), &udp, "ping")
    });
    assert_eq!(echoed, "echo ping");
    assert_eq!(udp_echo(None, &udp, "pong").as_deref(), Some("echo pong"));

    cli.run(&["delete", "deployment", "forwarded", "-p", "shop"]);
    wait_for("the pod gone", Duration::from_secs(60), || {
        cli.pods("shop").is_empty().then_some(())
    });
    assert_eq!(curl(None, &all_port), None);
    assert_eq!(curl(Some(CLIENT_NETNS), &all_port), None);
    let rules = ruleset();
    assert!(!rules.contains("wharf-hostports-wth-2"), "{rules}");
    assert!(!rules.contains(&pod_ip), "{rules}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_host_forwards_its_host_ports_and_shares_its_network() {
    if !prerequisites("hostPort and hostNetwork on a simulated host")
        || !require_tool("nft", "apt-get install nftables")
    {
        return;
    }
    // The node lives in namespace wthh3, reached at 10.88.253.2.
    let _host = wharf_net::testing::HostNamespace::create(
        "wthh3",
        "10.88.253.1/30".parse().unwrap(),
        "10.88.253.2/30".parse().unwrap(),
    )
    .await
    .unwrap();
    let (_server, cli, _node, image) = busybox_on("wth-3", "10.88.253.2", Some("wthh3")).await;
    cli.run(&["project", "update", "shop", "--allow-privileged=true"]);
    let on_host = on_node_network("simhost", &image, "", "/proc/net/fib_trie");
    let forwarded = deployment(
        "simfwd",
        &image,
        "",
        "          ports: [{containerPort: 80, hostPort: 18075}]\n",
        "B=/bin/busybox
$B mkdir -p /tmp/www && echo hello-from-simulated-host > /tmp/www/index.html
exec $B httpd -f -p 80 -h /tmp/www",
    );
    cli.run_with(&["apply", "-f", "-"], &format!("{on_host}---\n{forwarded}"));

    let log = log_with(&cli, "simhost", "done");
    assert!(
        log.contains("|-- 10.88.253.2\n"),
        "the host's address: {log}"
    );
    assert!(
        !log.contains("|-- 10.88.253.1\n"),
        "not the machine's: {log}"
    );
    let pod = running_pod(&cli, "simhost");
    assert_eq!(pod["status"]["podIP"], "10.88.253.2", "{pod}");

    running_pod(&cli, "simfwd");
    let answer = wait_for(
        "the simulated host's hostPort",
        Duration::from_secs(20),
        || curl(None, "10.88.253.2:18075"),
    );
    assert_eq!(answer, "hello-from-simulated-host");
    let inside = Command::new("ip")
        .args(["netns", "exec", "wthh3", "nft", "list", "ruleset"])
        .output()
        .unwrap();
    let inside = String::from_utf8_lossy(&inside.stdout);
    assert!(inside.contains("wharf-hostports-wth-3"), "{inside}");
    assert!(
        !ruleset().contains("wharf-hostports-wth-3"),
        "the machine's own rules are untouched"
    );
}
