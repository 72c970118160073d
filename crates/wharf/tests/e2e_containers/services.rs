//! Services on real containers: a cluster IP spreads connections over the
//! ready pods of a Deployment — from another pod, from the node, and from
//! a pod reaching itself; a pod whose readiness probe fails leaves the
//! service's endpoints and stops receiving requests, and comes back when
//! it recovers; a UDP port is forwarded too; deleting the service removes
//! its nftables rules.

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::common::cli::ok;
use super::exec::exec;
use super::hostnet::{udp_echo, udp_echo_server};
use super::{
    Cli, Node, NodeSpec, ip_of, name_of, pod_id, prerequisites, push_demo_image, require_tool,
    running_pods, wait_for,
};

/// Each pod answers HTTP on its named port `http` with its own name, and
/// is ready while `/tmp/ready` exists.
const ECHO_SCRIPT: &str = "trap 'exit 0' TERM
mkdir -p /tmp/www && hostname > /tmp/www/index.html && touch /tmp/ready
httpd -f -p 8080 -h /tmp/www & wait";

const READINESS: &str = "          ports: [{name: http, containerPort: 8080}]
          readinessProbe:
            exec: {command: [cat, /tmp/ready]}
            periodSeconds: 1
            failureThreshold: 1
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports:
    - {name: web, port: 80, targetPort: http}
    - {name: dns, port: 53, protocol: UDP, targetPort: 9053}
";

/// The nftables table of node `wsv-1`'s service rules.
const TABLE: &str = "wharf-services-wsv-1";

/// `count` requests to `http://ip/` from inside pod `pod`: the names that
/// answered (one line each; failures answer nothing). busybox `nc`: the
/// static busybox's `wget` segfaults on this machine.
fn ask_from(cli: &Cli, pod: &str, ip: &str, count: usize) -> Vec<String> {
    let script = format!(
        "i=0; while [ $i -lt {count} ]; do \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80 | tail -n 1; i=$((i+1)); done"
    );
    let output = exec(cli, pod, &["sh", "-c", &script]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The ready and not-ready addresses of the service's endpoints.
fn endpoints(cli: &Cli) -> (BTreeSet<String>, BTreeSet<String>) {
    let object = cli.json(&["get", "endpoints", "-p", "shop", "echo"]);
    let mut ready = BTreeSet::new();
    let mut unready = BTreeSet::new();
    for subset in object["subsets"].as_array().cloned().unwrap_or_default() {
        for (field, set) in [
            ("addresses", &mut ready),
            ("notReadyAddresses", &mut unready),
        ] {
            for address in subset[field].as_array().cloned().unwrap_or_default() {
                set.insert(address["ip"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    (ready, unready)
}

/// UDP echo servers beside the pods (busybox has none), stopped on drop.
struct UdpServers(Vec<Child>);

impl Drop for UdpServers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn nft_table() -> Option<String> {
    let output = Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_balances_over_ready_pods_and_follows_readiness() {
    if !prerequisites("services")
        || !require_tool("nft", "apt-get install nftables")
        || !require_tool("python3", "apt-get install python3")
    {
        return;
    }
    let server = super::common::TestServer::start_with(&["--service-cidr", "10.201.0.0/16"]);
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start(
        &cli,
        NodeSpec::local("wsv-1", "wsvbr1", "wsv1-", "10.101.1.0/24"),
        &robot,
    );
    let image = format!("{}/shop/web:1.0", server.host());
    let echo = super::sec::deployment("echo", &image, "", READINESS, ECHO_SCRIPT)
        .replace("replicas: 1", "replicas: 3");
    cli.run_with(&["apply", "-f", "-"], &echo);
    let client = super::sec::deployment(
        "client",
        &image,
        "",
        "",
        "trap 'exit 0' TERM\nsleep 100000 & wait",
    );
    cli.run_with(&["apply", "-f", "-"], &client);
    cli.run_with(&["apply", "-f", "-"], SERVICE);
    let pods = wait_for("3 echo pods ready", Duration::from_secs(90), || {
        running_pods(&cli, "echo-", 3)
    });
    let client = wait_for("the client pod", Duration::from_secs(60), || {
        running_pods(&cli, "client-", 1)
    });
    let client = name_of(&client[0]);
    let names: BTreeSet<String> = pods.iter().map(name_of).collect();
    let service = cli.json(&["get", "svc", "-p", "shop", "echo"]);
    let vip = service["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(vip.starts_with("10.201."), "{service}");

    // From another pod, every ready pod answers through the cluster IP.
    let seen: BTreeSet<String> = wait_for("all 3 pods answer", Duration::from_secs(20), || {
        let seen: BTreeSet<String> = ask_from(&cli, &client, &vip, 30).into_iter().collect();
        (seen == names).then_some(seen)
    });
    assert_eq!(seen, names);
    // From the node, and from a pod reaching itself among the others.
    let host = Command::new("curl")
        .args(["-sf", "-m", "3", &format!("http://{vip}/")])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&host.stdout).trim().to_string();
    assert!(names.contains(&answer), "the node got {answer:?}");
    let first = name_of(&pods[0]);
    let itself = ask_from(&cli, &first, &vip, 30);
    assert!(
        itself.contains(&first),
        "{first} never reached itself: {itself:?}"
    );
    let rules = nft_table().expect("the node's service table");
    assert!(rules.contains("shop/echo:80"), "{rules}");
    // UDP: every pod echoes on the target port, every datagram is answered.
    let _udp = UdpServers(
        pods.iter()
            .map(|p| udp_echo_server(&format!("wsv1-{}", pod_id(p)), 9053))
            .collect(),
    );
    let udp = format!("{vip}:53");
    wait_for(
        "UDP through the cluster IP",
        Duration::from_secs(10),
        || {
            (0..6)
                .all(|_| udp_echo(None, &udp, "hi").as_deref() == Some("echo hi"))
                .then_some(())
        },
    );

    // One pod unready: out of the endpoints within a couple of seconds,
    // and out of the rotation.
    let gone = &pods[1];
    let (gone_name, gone_ip) = (name_of(gone), ip_of(gone).to_string());
    let unready_at = Instant::now();
    ok(exec(&cli, &gone_name, &["rm", "/tmp/ready"]));
    wait_for(
        "the pod out of the endpoints",
        Duration::from_secs(10),
        || {
            let (ready, unready) = endpoints(&cli);
            (!ready.contains(&gone_ip) && unready.contains(&gone_ip)).then_some(())
        },
    );
    let took = unready_at.elapsed();
    assert!(took < Duration::from_secs(4), "the endpoints took {took:?}");
    wait_for("the rules without it", Duration::from_secs(5), || {
        let answers = ask_from(&cli, &client, &vip, 30);
        (answers.len() == 30 && !answers.contains(&gone_name)).then_some(())
    });
    let answers: BTreeSet<String> = ask_from(&cli, &client, &vip, 30).into_iter().collect();
    let others: BTreeSet<String> = names.iter().filter(|n| **n != gone_name).cloned().collect();
    assert_eq!(answers, others, "only the ready pods answer");

    // Ready again: back in both.
    ok(exec(&cli, &gone_name, &["touch", "/tmp/ready"]));
    wait_for(
        "the pod back in the endpoints",
        Duration::from_secs(10),
        || endpoints(&cli).0.contains(&gone_ip).then_some(()),
    );
    wait_for("the pod answering again", Duration::from_secs(10), || {
        let seen: BTreeSet<String> = ask_from(&cli, &client, &vip, 30).into_iter().collect();
        (seen == names).then_some(())
    });

    // The service deleted: its rules go (the node's only service: the
    // whole table), and the address answers no more.
    cli.run(&["delete", "svc", "-p", "shop", "echo"]);
    wait_for("the service table gone", Duration::from_secs(10), || {
        nft_table().is_none().then_some(())
    });
    assert!(ask_from(&cli, &client, &vip, 1).is_empty());
}
