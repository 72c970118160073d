//! Failover with real containers: two agents as two hosts (their own
//! network namespaces); one host dies (agent killed with SIGKILL, its
//! containers killed, its uplink cut); its pods run again on the other
//! host within seconds, a fixed-IP pod never answers from two places, and
//! the agent, back, removes its stale copies before anything else.
//!
//! A killed agent cannot fence itself, so the host's death is played in
//! full (its containers die with it); a cut-off agent that lives stops its
//! pool-addressed pods itself (unit-tested in the agent's `fencing`).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    Cli, Node, NodeSpec, TestServer, name_of, pool_yaml, prerequisites, push_demo_image,
    running_pods, seed_deployment, wait_for,
};

const FIXED_IP: &str = "10.93.1.20";

/// One replica of the demo server at `FIXED_IP`.
fn fixed_ip_deployment(image: &str) -> String {
    let pool = "wharf.io/ip-pool: wtf-pool";
    let seed = seed_deployment("pinned", image, "wtf-pool", 1);
    assert!(seed.contains(pool), "{seed}");
    seed.replace(pool, &format!("wharf.io/fixed-ip: \"{FIXED_IP}\""))
}

/// Who answers at `FIXED_IP` from inside host namespace `host`.
fn answer_in(host: &str) -> Option<String> {
    let url = format!("http://{FIXED_IP}/cgi-bin/hostname");
    let output = Command::new("ip")
        .args(["netns", "exec", host, "curl", "-sf", "-m", "1", &url])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Probes `FIXED_IP` from every host namespace until stopped; returns each
/// round's answers.
fn probe(hosts: Vec<String>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Vec<String>>> {
    std::thread::spawn(move || {
        let mut rounds = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            rounds.push(hosts.iter().filter_map(|h| answer_in(h)).collect());
            std::thread::sleep(Duration::from_millis(50));
        }
        rounds
    })
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap_or_default().as_millis() as u64
}

/// Prints when each link of the failover chain happened, in seconds after
/// the kill (`killed`, unix ms): the lease expiry noticed (NodeNotReady),
/// the node tainted, the pods evicted, the replacements started by the
/// agent (startTime; between eviction and it: deployment controller,
/// scheduler, agent watch) and their containers reported Running.
async fn print_trace(server: &TestServer, killed: u64, replacements: &[Value]) {
    let admin = server.admin().await;
    let mut steps: Vec<(String, u64)> = Vec::new();
    for path in ["/api/v1/events", "/api/v1/projects/shop/events"] {
        let (_, events) = admin.call(reqwest::Method::GET, path, None).await;
        for event in events.as_array().into_iter().flatten() {
            let at = event["lastTimestamp"].as_u64().unwrap_or_default();
            let reason = event["reason"].as_str().unwrap_or_default();
            let wanted = [
                "NodeNotReady",
                "NodeUnreachable",
                "TaintManagerEviction",
                "Started",
            ];
            if at >= killed && wanted.contains(&reason) {
                let object = event["involvedObject"]["name"].as_str().unwrap_or_default();
                steps.push((format!("{reason} {object}"), at));
            }
        }
    }
    for pod in replacements {
        if let Some(at) = pod["status"]["startTime"].as_u64() {
            steps.push((format!("startTime {}", name_of(pod)), at));
        }
    }
    steps.sort_by_key(|(_, at)| *at);
    let trace: Vec<String> = steps
        .iter()
        .map(|(step, at)| format!("+{:.2}s {step}", at.saturating_sub(killed) as f64 / 1000.0))
        .collect();
    eprintln!("failover trace: {}", trace.join("; "));
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn pods_of(cli: &Cli, prefix: &str) -> Vec<Value> {
    cli.pods("shop")
        .into_iter()
        .filter(|p| name_of(p).starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_pods_run_elsewhere_within_seconds_and_a_fixed_ip_never_twice() {
    if !prerequisites("failover") {
        return;
    }
    let hosts = super::host_namespaces(&[("wtfa", "10.93.250"), ("wtfb", "10.93.251")]).await;
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    cli.run_with(
        &["ippool", "import", "-"],
        &pool_yaml("wtf-pool", "10.93.1"),
    );
    let mut nodes: Vec<Node> = [
        ("wtf-a", "wtfa", "wtfa-", "10.93.250.2"),
        ("wtf-b", "wtfb", "wtfb-", "10.93.251.2"),
    ]
    .into_iter()
    .map(|(name, host, prefix, address)| {
        let spec = NodeSpec {
            name,
            bridge: "wtfbr0",
            netns_prefix: prefix,
            pod_cidr: "10.93.0.0/24",
            host_netns: Some(host),
            address: Some(address),
        };
        // The default lease and heartbeat: what the failover time depends on.
        Node::start_with(&cli, spec, &robot, &["--lease-ttl", "2s"])
    })
    .collect();
    wait_for("both nodes ready", Duration::from_secs(20), || {
        let list = cli.json(&["get", "nodes"]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        (items
            .iter()
            .filter(|n| n["status"]["ready"] == true)
            .count()
            == 2)
            .then_some(())
    });
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(&["apply", "-f", "-"], &fixed_ip_deployment(&image));
    let pinned = wait_for("the fixed-IP pod running", Duration::from_secs(60), || {
        running_pods(&cli, "pinned-", 1)
    })
    .remove(0);
    let doomed_name = node_of(&pinned).to_string();
    let doomed = nodes
        .iter()
        .position(|n| n.spec.name == doomed_name)
        .unwrap();
    let survivor = 1 - doomed;
    cli.run_with(
        &["apply", "-f", "-"],
        &seed_deployment("spread", &image, "wtf-pool", 4),
    );
    let spread = wait_for("4 pods running", Duration::from_secs(60), || {
        running_pods(&cli, "spread-", 4)
    });
    let lost: Vec<String> = spread
        .iter()
        .filter(|p| node_of(p) == doomed_name)
        .map(name_of)
        .collect();
    let host_names: Vec<String> = hosts.iter().map(|h| h.name().to_string()).collect();
    assert_eq!(
        answer_in(&host_names[doomed]).as_deref(),
        Some(name_of(&pinned).as_str())
    );

    // The host dies: agent and containers killed, uplink cut.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(host_names.clone(), stop.clone());
    let stale = nodes[doomed].containers();
    let killed = Instant::now();
    let killed_ms = unix_ms();
    nodes[doomed].crash();
    for (_, pid) in &stale {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
    }
    let uplink = hosts[doomed].root_veth().to_string();
    Command::new("ip")
        .args(["link", "set", &uplink, "down"])
        .output()
        .unwrap();

    let (replaced, moved) = wait_for("replacements running", Duration::from_secs(30), || {
        let pinned_now = running_pods(&cli, "pinned-", 1)?;
        let spread_now = running_pods(&cli, "spread-", 4)?;
        let all: Vec<Value> = pinned_now.iter().chain(&spread_now).cloned().collect();
        all.iter()
            .all(|p| node_of(p) == nodes[survivor].spec.name)
            .then(|| (pinned_now[0].clone(), all))
    });
    let took = killed.elapsed();
    eprintln!("failover: all replacements running {took:?} after the kill");
    let lost_set: Vec<&str> = lost.iter().map(String::as_str).collect();
    let replacements: Vec<Value> = moved
        .into_iter()
        .filter(|p| {
            p["status"]["startTime"]
                .as_u64()
                .is_some_and(|t| t >= killed_ms)
        })
        .filter(|p| !lost_set.contains(&name_of(p).as_str()))
        .collect();
    print_trace(&server, killed_ms, &replacements).await;
    // 2 s lease + 1 s toleration + starting containers; the benchmark measures.
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    for name in &lost {
        assert!(pods_of(&cli, name).is_empty(), "{name} was replaced");
    }
    let (_, events) = server
        .admin()
        .await
        .call(reqwest::Method::GET, "/api/v1/projects/shop/events", None)
        .await;
    assert!(
        events.to_string().contains("TaintManagerEviction"),
        "{events}"
    );
    let described = cli.run(&["describe", "node", &doomed_name]);
    assert!(described.contains("NodeUnreachable"), "{described}");
    let replacement = name_of(&replaced);
    wait_for("the replacement answers", Duration::from_secs(10), || {
        (answer_in(&host_names[survivor]).as_deref() == Some(replacement.as_str())).then_some(())
    });

    // The agent comes back (its uplink still cut): it removes the pods no
    // longer its own, containers and network namespaces (that it does so
    // before starting anything is unit-tested with a recording runtime).
    assert!(!stale.is_empty() && !nodes[doomed].namespaces().is_empty());
    nodes[doomed].spawn();
    wait_for("stale pods removed", Duration::from_secs(30), || {
        let node = &nodes[doomed];
        (node.containers().is_empty() && node.namespaces().is_empty()).then_some(())
    });
    Command::new("ip")
        .args(["link", "set", &uplink, "up"])
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let rounds = prober.join().unwrap();

    // Never two answers in one round, and the old pod never again once the
    // replacement answered.
    let old = name_of(&pinned);
    assert!(rounds.iter().all(|r| r.len() <= 1), "{rounds:?}");
    let answers: Vec<&String> = rounds.iter().flatten().collect();
    if let Some(first_new) = answers.iter().position(|a| **a == replacement) {
        assert!(
            answers[first_new..].iter().all(|a| **a != old),
            "the old copy answered after its replacement: {answers:?}"
        );
    }
    assert!(answers.contains(&&replacement), "{answers:?}");
    assert_eq!(
        running_pods(&cli, "pinned-", 1).map(|p| name_of(&p[0])),
        Some(replacement),
        "no duplicate"
    );

    drop(nodes);
    for host in hosts {
        host.delete().await.unwrap();
    }
}
