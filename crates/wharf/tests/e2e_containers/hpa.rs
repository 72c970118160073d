//! Autoscaling against real containers: the agent measures a container's
//! CPU and memory from its cgroup and `wharf top pods` shows them, rising
//! while the container burns CPU and falling once it stops; a
//! HorizontalPodAutoscaler scales its deployment up within one sync period
//! of the metric crossing its target, and back down after its window.

use std::time::{Duration, Instant};

use super::common::TestServer;
use super::common::cli::wharf;
use super::exec::exec;
use super::{
    Cli, Node, NodeSpec, name_of, one_container_deployment, prerequisites, push_demo_image,
    running_pods, wait_for,
};

/// Held by each test that burns CPU: two burners at once on a small
/// machine starve each other's measurements.
pub(super) static BURNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// A server, a node sampling usage every second, and the one running pod
/// of the deployment `manifest` makes of the demo image; the server and
/// node stop when it is dropped.
struct Burner {
    _server: TestServer,
    cli: Cli,
    _node: Node,
    pod: String,
}

impl Burner {
    async fn start(
        server_args: &[&str],
        node: NodeSpec,
        deployment: &str,
        manifest: impl Fn(&str) -> String,
    ) -> Burner {
        let server = TestServer::start_with(server_args);
        let cli = Cli::login(&server);
        let robot = push_demo_image(&server, &cli).await;
        let node = Node::start_with(&cli, node, &robot, &["--usage-interval", "1s"]);
        let image = format!("{}/shop/web:1.0", server.host());
        cli.run_with(&["apply", "-f", "-"], &manifest(&image));
        let prefix = format!("{deployment}-");
        let pods = wait_for("the pod running", Duration::from_secs(90), || {
            running_pods(&cli, &prefix, 1)
        });
        Burner {
            pod: name_of(&pods[0]),
            _server: server,
            cli,
            _node: node,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_pods_shows_the_cpu_a_container_burns_and_its_memory() {
    if !prerequisites("pod metrics from cgroups") {
        return;
    }
    let _burning = BURNING.lock().await;
    let burner = Burner::start(
        &[],
        NodeSpec::local("wta-top-1", "wtabr1", "wta1-", "10.94.1.0/24"),
        "burner",
        |image| one_container_deployment("burner", image, BURNER),
    )
    .await;
    let (cli, pod) = (&burner.cli, &burner.pod);

    let (idle, _) = wait_for("metrics of the idle pod", Duration::from_secs(30), || {
        top(cli, pod)
    });
    assert!(idle < 200, "idle at {idle}m");
    let burn = exec(cli, pod, &["touch", "/tmp/burn"]);
    assert!(burn.status.success(), "{burn:?}");
    // One core flat out, shared with the test's own builds: well over 300m.
    let (busy, memory) = wait_for("the burning pod's CPU", Duration::from_secs(30), || {
        top(cli, pod).filter(|(cpu, _)| *cpu >= 300)
    });
    assert!(busy <= 1100, "one shell loop uses at most a core: {busy}m");
    assert!(memory < 64, "a shell's working set: {memory}Mi");
    let stop = exec(cli, pod, &["rm", "/tmp/burn"]);
    assert!(stop.status.success(), "{stop:?}");
    wait_for("the pod's CPU back down", Duration::from_secs(30), || {
        top(cli, pod).filter(|(cpu, _)| *cpu < 100)
    });
}

/// The autoscaler's sync period in the Show test (Kubernetes: 15 s).
const SYNC: Duration = Duration::from_secs(3);
/// Its scale-down stabilization window (Kubernetes: 300 s).
const DOWN_WINDOW: Duration = Duration::from_secs(10);

fn busy_deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: busy, namespace: shop}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: busy}}}}\n  template:\n    \
         metadata: {{labels: {{app: busy}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         containers: [{{name: main, image: '{image}', command: {BURNER}, \
         resources: {{requests: {{cpu: 100m}}}}}}]\n"
    )
}

fn busy_hpa() -> String {
    format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n\
         metadata: {{name: busy, namespace: shop}}\nspec:\n  \
         scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: busy}}\n  \
         minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    \
         resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}\n  \
         behavior:\n    scaleDown: {{stabilizationWindowSeconds: {}}}\n",
        DOWN_WINDOW.as_secs()
    )
}

fn replicas(cli: &Cli) -> u64 {
    cli.json(&["get", "deploy", "busy", "-p", "shop"])["spec"]["replicas"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_burning_load_scales_the_deployment_up_and_back_down() {
    if !prerequisites("horizontal pod autoscaling") {
        return;
    }
    let _burning = BURNING.lock().await;
    let sync = format!("{}s", SYNC.as_secs());
    let usage_interval = Duration::from_secs(1);
    let burner = Burner::start(
        &["--hpa-sync-period", &sync],
        NodeSpec::local("wha-hpa-1", "whabr1", "wha1-", "10.103.1.0/24"),
        "busy",
        busy_deployment,
    )
    .await;
    let (cli, pod) = (&burner.cli, &burner.pod);
    cli.run_with(&["apply", "-f", "-"], &busy_hpa());
    // Idle, it stays at one replica (the minimum) sync after sync.
    wait_for("metrics of the idle pod", Duration::from_secs(30), || {
        top(cli, pod)
    });
    std::thread::sleep(SYNC * 2);
    assert_eq!(replicas(cli), 1);

    let burn = exec(cli, pod, &["touch", "/tmp/burn"]);
    assert!(burn.status.success(), "{burn:?}");
    // 100m requested, 50% wanted: the target is ceil(usage / 50m), the
    // maximum of 3 from 101m on (a loaded machine may give the loop less
    // than a core).
    wait_for(
        "the metric above its target",
        Duration::from_secs(60),
        || top(cli, pod).filter(|(cpu, _)| *cpu > 100),
    );
    let crossed = Instant::now();
    wait_for("three replicas", SYNC + Duration::from_secs(30), || {
        (replicas(cli) == 3).then_some(())
    });
    let took = crossed.elapsed();
    // One sync period, plus a sample and the test's own polling.
    let allowed = SYNC + usage_interval + Duration::from_secs(2);
    assert!(
        took <= allowed,
        "scaled up {took:?} after the metric crossed"
    );
    let described = cli.run(&["describe", "hpa", "busy", "-p", "shop"]);
    assert!(
        described.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{described}"
    );
    wait_for("the new replicas running", Duration::from_secs(60), || {
        running_pods(cli, "busy-", 3)
    });

    let stop = exec(cli, pod, &["rm", "/tmp/burn"]);
    assert!(stop.status.success(), "{stop:?}");
    let stopped = Instant::now();
    wait_for(
        "one replica again",
        DOWN_WINDOW + SYNC * 2 + Duration::from_secs(30),
        || (replicas(cli) == 1).then_some(()),
    );
    let took = stopped.elapsed();
    // The window holds the last high recommendation, made at most one sync
    // before the load stopped.
    assert!(
        took + SYNC >= DOWN_WINDOW,
        "scaled down {took:?} after the load stopped, within the {DOWN_WINDOW:?} window"
    );
    let table = cli.run(&["get", "hpa", "-p", "shop"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["busy", "Deployment/busy"], "{table}");
    assert_eq!(row[2], "cpu:", "{table}");
}
