//! Autoscaling's inputs against real containers: the agent measures a
//! container's CPU and memory from its cgroup and `wharf top pods` shows
//! them, rising while the container burns CPU and falling once it stops.

use std::time::Duration;

use super::common::TestServer;
use super::common::cli::wharf;
use super::exec::exec;
use super::{
    Cli, Node, NodeSpec, name_of, one_container_deployment, prerequisites, push_demo_image,
    running_pods, wait_for,
};

/// Burns a CPU while /tmp/burn exists, else idles: `wharf exec` turns the
/// load on and off.
const BURNER: &str =
    r#"["/bin/sh", "-c", "while :; do if [ -e /tmp/burn ]; then :; else sleep 1; fi; done"]"#;

/// The pod's (CPU millicores, memory MiB) as `wharf top pods` prints them.
fn top(cli: &Cli, pod: &str) -> Option<(u64, u64)> {
    let output = wharf(cli.home.path())
        .args(["top", "pods", "-p", "shop", pod])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let row: Vec<&str> = text.lines().nth(1)?.split_whitespace().collect();
    let cpu = row.get(1)?.strip_suffix('m')?.parse().ok()?;
    let memory = row.get(2)?.strip_suffix("Mi")?.parse().ok()?;
    Some((cpu, memory))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_pods_shows_the_cpu_a_container_burns_and_its_memory() {
    if !prerequisites("pod metrics from cgroups") {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start_with(
        &cli,
        NodeSpec::local("wta-top-1", "wtabr1", "wta1-", "10.94.1.0/24"),
        &robot,
        &["--usage-interval", "1s"],
    );
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(
        &["apply", "-f", "-"],
        &one_container_deployment("burner", &image, BURNER),
    );
    let pods = wait_for("the burner running", Duration::from_secs(90), || {
        running_pods(&cli, "burner-", 1)
    });
    let pod = name_of(&pods[0]);

    let (idle, _) = wait_for("metrics of the idle pod", Duration::from_secs(30), || {
        top(&cli, &pod)
    });
    assert!(idle < 200, "idle at {idle}m");
    let burn = exec(&cli, &pod, &["touch", "/tmp/burn"]);
    assert!(burn.status.success(), "{burn:?}");
    // One core flat out, shared with the test's own builds: well over 300m.
    let (busy, memory) = wait_for("the burning pod's CPU", Duration::from_secs(30), || {
        top(&cli, &pod).filter(|(cpu, _)| *cpu >= 300)
    });
    assert!(busy <= 1100, "one shell loop uses at most a core: {busy}m");
    assert!(memory < 64, "a shell's working set: {memory}Mi");
    let stop = exec(&cli, &pod, &["rm", "/tmp/burn"]);
    assert!(stop.status.success(), "{stop:?}");
    wait_for("the pod's CPU back down", Duration::from_secs(30), || {
        top(&cli, &pod).filter(|(cpu, _)| *cpu < 100)
    });
}
