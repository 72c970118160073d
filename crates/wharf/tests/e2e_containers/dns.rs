//! Service names inside pods: the agent's name server answers
//! `NAME.PROJECT.svc` and the short name with the cluster IP, relays
//! other names to the resolvers of the agent's `--resolv-conf` (a stand-in
//! upstream on a loopback address here), and requests to the name spread
//! over the service's three endpoints.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};

use super::common::TestServer;
use super::exec::exec;
use super::{Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, running_pods, wait_for};

/// Where the stand-in upstream listens: port 53 (resolv.conf names no
/// port) of a loopback address no one else uses.
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 102, 0, 53);
/// What it answers for every name.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 102);

const ECHO_SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 80}]
";

/// An upstream name server answering every query with
/// [`UPSTREAM_ANSWER`] over UDP, counting them.
fn upstream(asked: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(UPSTREAM), 53))
        .expect("port 53 of 127.102.0.53 is free");
    socket.set_nonblocking(true).unwrap();
    let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            asked.fetch_add(1, Ordering::SeqCst);
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            for question in request.queries {
                if question.query_type() == hickory_proto::rr::RecordType::A {
                    response.add_answer(Record::from_rdata(
                        question.name().clone(),
                        30,
                        RData::A(A(UPSTREAM_ANSWER)),
                    ));
                }
                response.add_query(question);
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), from).await;
        }
    })
}

/// The service's cluster IP, once it has one.
fn cluster_ip(cli: &Cli) -> Ipv4Addr {
    wait_for("echo's cluster IP", Duration::from_secs(20), || {
        let service = cli.json(&["get", "svc", "echo", "-p", "shop"]);
        service["spec"]["clusterIP"].as_str()?.parse().ok()
    })
}

/// Runs `command` in the client pod; its output when it succeeds.
fn in_client(cli: &Cli, client: &str, command: &[&str]) -> Option<String> {
    let output = exec(cli, client, command);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_names_resolve_in_pods_and_spread_over_the_endpoints() {
    if !prerequisites("pod DNS") {
        return;
    }
    let asked = Arc::new(AtomicUsize::new(0));
    let _upstream = upstream(asked.clone());
    let server = TestServer::start_with(&["--service-cidr", "10.202.0.0/16"]);
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {UPSTREAM}\n")).unwrap();
    let _node = Node::start_with(
        &cli,
        NodeSpec::local("wdn-1", "wdnbr1", "wdn1-", "10.102.1.0/24"),
        &robot,
        &["--resolv-conf", resolv_conf.to_str().unwrap()],
    );
    let image = format!("{}/shop/web:1.0", server.host());
    for (name, replicas) in [("echo", 3), ("client", 1)] {
        let deployment = super::seed_deployment(name, &image, "none", replicas)
            .replace("  annotations: {wharf.io/ip-pool: none}\n", "");
        cli.run_with(&["apply", "-f", "-"], &deployment);
    }
    cli.run_with(&["apply", "-f", "-"], ECHO_SERVICE);
    let echoes = wait_for("3 echo pods running", Duration::from_secs(120), || {
        running_pods(&cli, "echo-", 3)
    });
    let client = wait_for("the client pod running", Duration::from_secs(60), || {
        running_pods(&cli, "client-", 1)
    });
    let client = name_of(&client[0]);
    let ip = cluster_ip(&cli);
    assert!(
        ip.octets()[..2] == [10, 202],
        "{ip} is outside --service-cidr"
    );

    let resolv = in_client(&cli, &client, &["cat", "/etc/resolv.conf"]).unwrap();
    assert_eq!(
        resolv,
        "nameserver 10.102.1.1\nsearch shop.svc svc\noptions ndots:5\n"
    );

    // The full name and the short one give the cluster IP (busybox's
    // nslookup tries every search domain and fails for `echo.svc`, so its
    // output is what counts).
    for name in ["echo.shop.svc", "echo"] {
        wait_for(
            &format!("{name} resolving"),
            Duration::from_secs(20),
            || {
                let answer = exec(&cli, &client, &["busybox", "nslookup", name]);
                let answer = String::from_utf8_lossy(&answer.stdout).into_owned();
                answer
                    .contains(&format!("Name:\techo.shop.svc\nAddress: {ip}\n"))
                    .then_some(())
            },
        );
    }
    let unknown = exec(&cli, &client, &["busybox", "nslookup", "nope.shop.svc"]);
    assert!(!unknown.status.success(), "{unknown:?}");

    // Other names reach the node's resolvers through the agent.
    let before = asked.load(Ordering::SeqCst);
    let answer = exec(&cli, &client, &["busybox", "nslookup", "db.example.net"]);
    let answer = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.contains(&format!(
            "Name:\tdb.example.net\nAddress: {UPSTREAM_ANSWER}\n"
        )),
        "{answer}"
    );
    assert!(asked.load(Ordering::SeqCst) > before);

    // The short name, through the search list and the C library's
    // resolver as applications use it, reaches an endpoint.
    let expected: BTreeSet<String> = echoes.iter().map(name_of).collect();
    let get = |host: &str| {
        let script = format!(
            "printf 'GET /cgi-bin/hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} 80 | tail -n 1"
        );
        in_client(&cli, &client, &["sh", "-c", &script])
    };
    wait_for("the short name answering", Duration::from_secs(20), || {
        let name = get("echo")?;
        expected.contains(name.trim()).then_some(())
    });

    // Requests to the full name spread over the three endpoints, each
    // answering with its pod name.
    let mut seen = BTreeSet::new();
    wait_for(
        "all three endpoints answering",
        Duration::from_secs(30),
        || {
            if let Some(name) = get("echo.shop.svc") {
                seen.insert(name.trim().to_string());
            }
            (seen == expected).then_some(())
        },
    );
}
