//! Monitoring against real containers: an agent collecting every second
//! pushes a CPU-burning, memory-holding container's working set and CPU
//! seconds (whose rate is the cores it burns) and its node's `cpu.busy`
//! and `mem.memused`, all readable with `wharf metrics query`; a falcon
//! style push with curl to the agent's `/v1/push` is queryable too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::common::TestServer;
use super::common::cli::wharf;
use super::{Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, running_pods, wait_for};

const NODE: &str = "wma-metrics-1";

/// Holds about 30 MB in a shell variable, then burns a core.
const HOG: &str =
    r#"["/bin/sh", "-c", "x=$(yes abcdefghi | head -c 30000000); while :; do :; done"]"#;

fn hog_deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: hog, namespace: shop}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: hog}}}}\n  template:\n    \
         metadata: {{labels: {{app: hog}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         containers: [{{name: main, image: '{image}', command: {HOG}, \
         resources: {{limits: {{cpu: '1', memory: 128Mi}}}}}}]\n"
    )
}

/// The last value of the one series `wharf metrics query ARGS` answers
/// with over the last two minutes, and its labels; `None` while there is
/// none (before the first push the metric is unknown: an error).
fn last_value(cli: &Cli, args: &[&str]) -> Option<(Value, f64)> {
    let output = wharf(cli.home.path())
        .args(["metrics", "query"])
        .args(args)
        .args(["--since", "2m", "-o", "json"])
        .output()
        .unwrap();
    if !output.status.success() {
        return None;
    }
    let answer: Value = serde_json::from_slice(&output.stdout).ok()?;
    let [only] = answer["series"].as_array()?.as_slice() else {
        return None;
    };
    let value = only["points"].as_array()?.last()?[1].as_f64()?;
    Some((only["labels"].clone(), value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pushes_node_and_container_metrics_and_forwards_falcon_pushes() {
    if !prerequisites("node and container metrics") {
        return;
    }
    let _burning = super::hpa::BURNING.lock().await;
    let server = TestServer::start_with(&[]);
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start_with(
        &cli,
        NodeSpec::local(NODE, "wmabr1", "wma1-", "10.106.1.0/24"),
        &robot,
        &["--metrics-interval", "1s"],
    );
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(&["apply", "-f", "-"], &hog_deployment(&image));
    let pods = wait_for("the hog running", Duration::from_secs(90), || {
        running_pods(&cli, "hog-", 1)
    });
    let pod_tags = format!("project=shop,pod={}", name_of(&pods[0]));
    let minute = Duration::from_secs(60);

    let (labels, working_set) = wait_for("the hog's memory", minute, || {
        last_value(&cli, &["container.mem.working_set", "--tags", &pod_tags])
            .filter(|(_, bytes)| *bytes >= 25e6)
    });
    assert_eq!(labels["container"], "main");
    assert_eq!(labels["endpoint"], NODE);
    assert!(working_set < 128.0 * 1024.0 * 1024.0, "{working_set}");
    let (_, limit) = wait_for("the hog's memory limit", minute, || {
        last_value(&cli, &["container.mem.limit", "--tags", &pod_tags])
    });
    assert_eq!(limit, 128.0 * 1024.0 * 1024.0);
    let (_, cores) = wait_for("the hog's CPU limit", minute, || {
        last_value(&cli, &["container.cpu.limit_cores", "--tags", &pod_tags])
    });
    assert_eq!(cores, 1.0);
    // One shell loop flat out under a one-core limit, on a machine the
    // test's own builds share: well over a third of a core, at most one.
    let (_, burn) = wait_for("the hog's CPU rate", minute, || {
        let args = [
            "container.cpu.usage_seconds",
            "--tags",
            &pod_tags,
            "--rate",
            "--step",
            "5s",
        ];
        last_value(&cli, &args).filter(|(_, cores)| *cores >= 0.35)
    });
    assert!(
        burn <= 1.1,
        "one loop under a one-core limit burns {burn} cores"
    );

    let (_, busy) = wait_for("the node's cpu.busy", minute, || {
        last_value(&cli, &["cpu.busy", "--endpoint", NODE])
    });
    assert!((0.0..=100.0).contains(&busy), "cpu.busy {busy}");
    let (_, used) = wait_for("the node's mem.memused", minute, || {
        last_value(&cli, &["mem.memused", "--endpoint", NODE])
    });
    assert!(used > 0.0);

    // A falcon plugin on the machine pushes to the agent's endpoint.
    let nodes = cli.json(&["get", "nodes"]);
    let endpoint = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == NODE)
        .and_then(|n| n["status"]["endpoint"].as_str())
        .expect("the node reports its endpoint")
        .to_owned();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let push = format!(
        r#"[{{"endpoint":"wma-host","metric":"app.queue.depth","timestamp":{now},"step":60,"value":42,"counterType":"GAUGE","tags":"queue=mail"}}]"#
    );
    let answer = curl_push(&endpoint, &push);
    assert_eq!(answer, "200 success", "{answer}");
    let (labels, depth) = wait_for("the pushed sample", minute, || {
        last_value(&cli, &["app.queue.depth", "--endpoint", "wma-host"])
    });
    assert_eq!(depth, 42.0);
    assert_eq!(labels["pushed_by"], NODE);
    assert_eq!(labels["queue"], "mail");
    // A push may not pose as the agent's own series.
    let posing = push.replace("app.queue.depth", "cpu.busy");
    let answer = curl_push(&endpoint, &posing);
    assert!(answer.starts_with("400 sample 0: metric:"), "{answer}");
}

/// `STATUS BODY` of a POST of `body` to the agent's `/v1/push`.
fn curl_push(endpoint: &str, body: &str) -> String {
    let output = std::process::Command::new("curl")
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "--data-binary",
            body,
        ])
        .arg(format!("{endpoint}/v1/push"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    format!("{status} {body}")
}
