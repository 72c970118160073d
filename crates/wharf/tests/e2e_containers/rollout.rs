//! Rolling updates with real containers: a 3-replica deployment updated
//! v1 -> v2 by `apply` while a sampler checks every 200 ms that the ready
//! pods never drop below `replicas - maxUnavailable` and the pods never
//! exceed `replicas + maxSurge`; the history shows both revisions and undo
//! brings v1 back; then an update to a container that never becomes ready
//! stops at maxUnavailable, `rollout status` fails with
//! ProgressDeadlineExceeded, and the old pods keep running and ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::common::TestServer;
use super::common::cli::wharf;
use super::{Cli, Node, NodeSpec, prerequisites, push_demo_image, wait_node_ready};

const REPLICAS: usize = 3;
const MAX_SURGE: usize = 1;
const MAX_UNAVAILABLE: usize = 1;

/// The deployment at `version` (an env change is a new template), its
/// container of `image` running `script`.
fn deployment(image: &str, version: &str, script: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: roll, namespace: shop}}
spec:
  replicas: {REPLICAS}
  minReadySeconds: 2
  progressDeadlineSeconds: 15
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: {MAX_SURGE}, maxUnavailable: {MAX_UNAVAILABLE}}}
  selector:
    matchLabels: {{app: roll}}
  template:
    metadata:
      labels: {{app: roll}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
          image: {image}
          command: ["/bin/sh", "-c", "{script}"]
          env:
            - {{name: VERSION, value: {version}}}
"#
    )
}

const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

fn version_of(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["env"][0]["value"]
        .as_str()
        .unwrap_or_default()
}

fn is_live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && pod["status"]["containerStatuses"][0]["ready"] == true
}

/// What the sampler saw: the most live pods at once, and the fewest live
/// ready pods (of `version`, when given) at once.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(usize, usize)>,
}

impl Sampler {
    fn start(cli: &Cli, version: Option<&'static str>) -> Sampler {
        let home = cli.home.path().to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut most, mut fewest_ready) = (0, usize::MAX);
            while !stopped.load(Ordering::SeqCst) {
                let out = wharf(&home)
                    .args(["get", "pods", "-p", "shop", "-o", "json"])
                    .output()
                    .unwrap();
                if let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) {
                    let pods = list["items"].as_array().cloned().unwrap_or_default();
                    let live: Vec<&Value> = pods.iter().filter(|p| is_live(p)).collect();
                    let ready = live
                        .iter()
                        .filter(|p| is_ready(p))
                        .filter(|p| version.is_none_or(|v| version_of(p) == v))
                        .count();
                    most = most.max(live.len());
                    fewest_ready = fewest_ready.min(ready);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (most, fewest_ready)
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn apply(cli: &Cli, yaml: &str) {
    cli.run_with(&["apply", "-f", "-"], yaml);
}

fn rollout_status(cli: &Cli) -> std::process::Output {
    wharf(cli.home.path())
        .args([
            "rollout",
            "status",
            "deployment/roll",
            "-p",
            "shop",
            "--timeout",
            "120s",
        ])
        .output()
        .unwrap()
}

fn versions(cli: &Cli) -> Vec<(String, bool)> {
    let mut all: Vec<(String, bool)> = cli
        .pods("shop")
        .iter()
        .filter(|p| is_live(p))
        .map(|p| (version_of(p).to_string(), is_ready(p)))
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_updates_keep_pods_available_and_a_stuck_one_leaves_the_old_pods_serving() {
    if !prerequisites("rolling_updates") {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start(
        &cli,
        NodeSpec {
            name: "wtr-1",
            bridge: "wtrbr1",
            netns_prefix: "wtr1-",
            pod_cidr: "10.92.1.0/24",
            host_netns: None,
            address: None,
        },
        &robot,
    );
    wait_node_ready(&cli);
    let image = format!("{}/shop/web:1.0", server.host());
    let deployment = |version: &str, script: &str| deployment(&image, version, script);

    apply(&cli, &deployment("v1", SERVE));
    let first = rollout_status(&cli);
    assert!(first.status.success(), "{first:?}");

    // v1 -> v2 by apply, sampled all along.
    let sampler = Sampler::start(&cli, None);
    apply(&cli, &deployment("v2", SERVE));
    let second = rollout_status(&cli);
    let (most, fewest_ready) = sampler.finish();
    assert!(second.status.success(), "{second:?}");
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(said.contains("successfully rolled out"), "{said}");
    assert!(most <= REPLICAS + MAX_SURGE, "{most} pods at once");
    assert!(
        fewest_ready >= REPLICAS - MAX_UNAVAILABLE,
        "only {fewest_ready} ready at once"
    );
    let v2 = vec![("v2".to_string(), true); REPLICAS];
    assert_eq!(versions(&cli), v2);
    let history = cli.run(&["rollout", "history", "deployment/roll", "-p", "shop"]);
    let numbers: Vec<&str> = history.lines().skip(2).map(|l| &l[..1]).collect();
    assert_eq!(numbers, ["1", "2"], "{history}");

    // Undo: v1 again, as revision 3, within the same limits.
    let sampler = Sampler::start(&cli, None);
    cli.run(&["rollout", "undo", "deployment/roll", "-p", "shop"]);
    let undone = rollout_status(&cli);
    let (most, fewest_ready) = sampler.finish();
    assert!(undone.status.success(), "{undone:?}");
    assert!(most <= REPLICAS + MAX_SURGE, "{most} pods at once");
    assert!(
        fewest_ready >= REPLICAS - MAX_UNAVAILABLE,
        "only {fewest_ready} ready at once"
    );
    let v1 = vec![("v1".to_string(), true); REPLICAS];
    assert_eq!(versions(&cli), v1);

    // A template whose container exits at once never becomes ready: the
    // rollout stops at maxUnavailable and fails at the deadline, while
    // the v1 pods left keep running and ready.
    let sampler = Sampler::start(&cli, Some("v1"));
    apply(&cli, &deployment("broken", "exit 1"));
    let stuck = rollout_status(&cli);
    std::thread::sleep(Duration::from_secs(3));
    let (most, fewest_v1_ready) = sampler.finish();
    assert!(!stuck.status.success(), "{stuck:?}");
    let err = String::from_utf8_lossy(&stuck.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    assert!(most <= REPLICAS + MAX_SURGE, "{most} pods at once");
    assert!(
        fewest_v1_ready >= REPLICAS - MAX_UNAVAILABLE,
        "only {fewest_v1_ready} v1 pods ready"
    );
    let now = versions(&cli);
    let old: Vec<&(String, bool)> = now.iter().filter(|(v, _)| v == "v1").collect();
    assert_eq!(old.len(), REPLICAS - MAX_UNAVAILABLE, "{now:?}");
    assert!(old.iter().all(|(_, ready)| *ready), "{now:?}");
    assert!(
        now.iter()
            .filter(|(v, _)| v == "broken")
            .all(|(_, ready)| !ready),
        "{now:?}"
    );
    let d = cli.json(&["get", "deployment", "roll", "-p", "shop"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
}
