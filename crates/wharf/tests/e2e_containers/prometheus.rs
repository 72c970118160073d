//! Debian's Prometheus scrapes the server: a metrics:read robot's token
//! in `authorization.credentials_file`, one target for the cluster. A real
//! agent runs a container; Prometheus' query API then answers the node's
//! CPU (`node_cpu_busy`) and the container's memory
//! (`container_mem_working_set`); the agent's own `/metrics` takes the same
//! token. Disabling the robot stops both.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::common::TestServer;
use super::{
    Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, require_tool, running_pods,
    wait_for,
};

const NODE: &str = "wmb-prom-1";

fn sleeper_deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: idle, namespace: shop}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: idle}}}}\n  template:\n    \
         metadata: {{labels: {{app: idle}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         containers: [{{name: main, image: '{image}', command: ['/bin/sh', '-c', 'sleep 3600']}}]\n"
    )
}

/// A private Prometheus on loopback, killed on drop.
pub(super) struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second with
    /// the bearer token in `token_file`; its data lives under `dir`.
    pub(super) fn start(dir: &Path, target: &str, token_file: &Path) -> Prometheus {
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: wharf\n    metrics_path: /metrics\n    \
             authorization:\n      type: Bearer\n      credentials_file: {}\n    \
             static_configs:\n      - targets: ['{target}']\n",
            token_file.display()
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The instant vector `query` answers now: (labels, value) pairs, or
    /// `None` while Prometheus is not answering yet.
    pub(super) fn query(&self, query: &str) -> Option<Vec<(Value, f64)>> {
        let output = Command::new("curl")
            .args(["-sS", "--fail", "-G", "--data-urlencode"])
            .arg(format!("query={query}"))
            .arg(format!("{}/api/v1/query", self.url))
            .output()
            .unwrap();
        let answer: Value = serde_json::from_slice(&output.stdout).ok()?;
        let result = answer["data"]["result"].as_array()?;
        Some(
            result
                .iter()
                .filter_map(|r| {
                    let value = r["value"][1].as_str()?.parse().ok()?;
                    Some((r["metric"].clone(), value))
                })
                .collect(),
        )
    }

    /// The one value `query` answers, when it answers exactly one.
    pub(super) fn one(&self, query: &str) -> Option<(Value, f64)> {
        match self.query(query)?.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_prometheus_scrapes_node_cpu_and_container_memory() {
    if !prerequisites("Prometheus scraping")
        || !require_tool("prometheus", "apt-get install prometheus")
    {
        return;
    }
    let server = TestServer::start_with(&[]);
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start_with(
        &cli,
        NodeSpec::local(NODE, "wmbbr1", "wmb1-", "10.107.1.0/24"),
        &robot,
        &["--metrics-interval", "1s"],
    );
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(&["apply", "-f", "-"], &sleeper_deployment(&image));
    let pods = wait_for("the container running", Duration::from_secs(90), || {
        running_pods(&cli, "idle-", 1)
    });
    let pod = name_of(&pods[0]);

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("wharf.token");
    let created = cli.run(&[
        "robot",
        "create",
        "shop",
        "prometheus",
        "--permission",
        "metrics:read",
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(
        created.contains("(metrics:read; expires never)"),
        "{created}"
    );
    let prometheus = Prometheus::start(dir.path(), &server.host(), &token_file);
    let minute = Duration::from_secs(60);

    wait_for("a successful scrape", minute, || {
        prometheus
            .one("up{job=\"wharf\"}")
            .filter(|(_, up)| *up == 1.0)
    });
    let (_, busy) = wait_for("the node's CPU in Prometheus", minute, || {
        prometheus.one(&format!("node_cpu_busy{{node=\"{NODE}\"}}"))
    });
    assert!((0.0..=100.0).contains(&busy), "node_cpu_busy {busy}");
    let query =
        format!("container_mem_working_set{{node=\"{NODE}\",project=\"shop\",pod=\"{pod}\"}}");
    let (labels, bytes) = wait_for("the container's memory in Prometheus", minute, || {
        prometheus.one(&query).filter(|(_, bytes)| *bytes > 0.0)
    });
    assert_eq!(labels["container"], "main");
    assert!(bytes < 1e9, "an idle shell's working set: {bytes}");
    // The server's own metrics come with the same scrape.
    let (_, pushes) = wait_for("the agent's pushes counted", minute, || {
        prometheus.one(
            "sum(wharf_http_requests_total{route=\"/api/v1/nodes/{node}/metrics\",status=\"200\"})",
        )
    });
    assert!(pushes >= 1.0);

    // Revoking the robot stops the scrape at once.
    cli.run(&["robot", "disable", "shop", "prometheus"]);
    wait_for("scrapes refused", minute, || {
        prometheus
            .one("up{job=\"wharf\"}")
            .filter(|(_, up)| *up == 0.0)
    });
}
