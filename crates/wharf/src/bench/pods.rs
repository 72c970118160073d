//! Pod start latency: from `apply` to the pod reported `Running`, with the
//! image already in the node's cache — Kubernetes' pod startup SLO (p99 ≤
//! 5 s, image pulls excluded) measured on `wharf up`'s real path: HTTP
//! API, deployment controller, scheduler, agent, IP pool claim, network
//! namespace, overlay mount, runc through the shim, status report.
//!
//! `sequential`: one single-replica deployment after another, each timed
//! alone while the earlier ones keep running. `burst`: one deployment of N
//! replicas, each pod timed from the one apply.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::demo;

/// Options of `wharf bench pods`.
#[derive(Args)]
pub struct PodsBenchArgs {
    /// Pods to start.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// `sequential` (one at a time), `paced` (one every 1/--rate s, without
    /// waiting, as Kubernetes' density tests create pods) or `burst` (all
    /// in one deployment).
    #[arg(long, default_value = "sequential", value_parser = ["sequential", "paced", "burst"])]
    mode: String,
    /// Pods created per second in `paced` mode.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
}

/// A `wharf up` child on its own bridge, ranges and runc root.
pub(super) struct Up {
    child: Child,
    pub(super) url: String,
    pub(super) token: String,
    pub(super) http: reqwest::Client,
    /// The admin's password (registry clients log in with it).
    pub(super) password: String,
    /// `wharf up`'s data directory (the node's state is under `node/`).
    pub(super) dir: std::path::PathBuf,
    _home: tempfile::TempDir,
}

impl Up {
    /// Starts `wharf up` with `extra` arguments after the benchmark's own.
    pub(super) async fn start(dir: &Path, extra: &[&str]) -> Result<Up> {
        let home = tempfile::tempdir()?;
        let password = format!("bench-{:016x}", rand::random::<u64>());
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args([
                "up",
                "--no-demo",
                "--listen",
                "127.0.0.1:0",
                "--gc-interval",
                "0",
            ])
            .args(["--token-ttl", "2h", "--logs-listen", "127.0.0.1:0"])
            .args([
                "--name",
                "bench-node",
                "--bridge",
                "wbench0",
                "--netns-prefix",
                "wbench-",
            ])
            .args([
                "--pod-cidr",
                "10.76.0.0/24",
                "--runc-root",
                "/run/wharf-bench/runc",
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env("RUST_LOG", "warn")
            .env("WHARF_ADMIN_PASSWORD", &password);
        let (child, url, mut lines) =
            super::spawn_listening(command, Duration::from_secs(60)).await?;
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::new();
        let token = super::admin_token(&http, &url, &password).await?;
        let up = Up {
            child,
            url,
            token,
            http,
            password: password.clone(),
            dir: dir.to_path_buf(),
            _home: home,
        };
        up.call(
            reqwest::Method::POST,
            "projects",
            Some(json!({"name": "bench"})),
        )
        .await?;
        let image = tokio::task::spawn_blocking(|| demo::build(Path::new(demo::BUSYBOX))).await??;
        image
            .push(&up.url, "bench/web", "1", "admin", &password)
            .await?;
        let pool = "apiVersion: wharf.io/v1\nkind: IpPool\nmetadata: {name: bench-pool}\nspec: {cidr: 10.77.128.0/24, gateway: 10.77.128.1, ranges: [{start: 10.77.128.10, end: 10.77.128.250}]}\n";
        up.post_yaml("ippools", pool).await?;
        Ok(up)
    }

    /// The process id of the `wharf up` child.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `METHOD /api/v1/<path>` as admin, the body set by `with_body`; the
    /// answer's JSON (`null` when it has none), or the error it names.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value> {
        let request = self
            .http
            .request(method, format!("{}/api/v1/{path}", self.url))
            .bearer_auth(&self.token);
        let response = with_body(request).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        self.send(method, path, |request| match &body {
            Some(body) => request.json(body),
            None => request,
        })
        .await
    }

    pub(super) async fn post_yaml(&self, path: &str, yaml: &str) -> Result<Value> {
        self.send(reqwest::Method::POST, path, |request| {
            request
                .header("content-type", "application/yaml")
                .body(yaml.to_string())
        })
        .await
    }

    /// Deletes deployment `name` of project `bench` (its pods follow).
    pub(super) async fn delete_deployment(&self, name: &str) -> Result<()> {
        let path = format!("projects/bench/deployments/{name}");
        self.call(reqwest::Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// Pods of project `bench`, by deployment label, that are running.
    pub(super) async fn running(&self) -> Result<HashMap<String, usize>> {
        let list = self
            .call(reqwest::Method::GET, "projects/bench/pods", None)
            .await?;
        let mut running = HashMap::new();
        for pod in list["items"].as_array().into_iter().flatten() {
            if pod["status"]["phase"] == "Running" {
                let app = pod["metadata"]["labels"]["app"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                *running.entry(app).or_default() += 1;
            }
        }
        Ok(running)
    }
}

pub(super) fn deployment(name: &str, replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: bench, annotations: {{wharf.io/ip-pool: bench-pool}}}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 5\n      containers:\n        - name: web\n          image: bench/web:1\n          \
         resources: {{requests: {{cpu: 10m, memory: 8Mi}}, limits: {{memory: 32Mi}}}}\n"
    )
}

/// Watches project `bench` and records when each pod is first seen running.
async fn watch_running(
    up: &Up,
    from: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>> {
    let response = up
        .http
        .get(format!(
            "{}/api/v1/projects/bench/pods?watch=true&resourceVersion={from}",
            up.url
        ))
        .bearer_auth(&up.token)
        .send()
        .await?
        .error_for_status()?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut response = response;
        let mut buffer = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let now = Instant::now();
            buffer.extend_from_slice(&chunk);
            while let Some(at) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=at).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let pod = &event["object"];
                if pod["status"]["phase"] == "Running" {
                    let name = pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if seen.insert(name.clone()) {
                        let app = pod["metadata"]["labels"]["app"]
                            .as_str()
                            .unwrap_or_default();
                        let _ = sender.send((format!("{app}/{name}"), now));
                    }
                }
            }
        }
    });
    Ok(receiver)
}

/// The nearest-rank `p` percentile of `sorted`.
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: PodsBenchArgs) -> Result<()> {
    with_up("pod start benchmark", async |up| measure(up, &args).await).await
}

/// Runs `measure` against a `wharf up` of its own (as root: `benchmark`
/// runs containers), torn down afterwards whatever happened.
pub(super) async fn with_up(
    benchmark: &str,
    measure: impl AsyncFnOnce(&Up) -> Result<()>,
) -> Result<()> {
    with_up_args(benchmark, &[], measure).await
}

/// [`with_up`] with more `wharf up` arguments; the measurement's value.
pub(super) async fn with_up_args<T>(
    benchmark: &str,
    extra: &[&str],
    measure: impl AsyncFnOnce(&Up) -> Result<T>,
) -> Result<T> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the {benchmark} runs containers: run it as root");
    }
    let dir = tempfile::tempdir()?;
    let mut up = Up::start(dir.path(), extra).await?;
    let measured = measure(&up).await;
    // The containers must not outlive the benchmark, whatever happened.
    let torn_down = teardown(&mut up).await;
    let value = measured?;
    torn_down?;
    Ok(value)
}

async fn measure(up: &Up, args: &PodsBenchArgs) -> Result<()> {
    // Warm the node's image cache: the SLO excludes pulls.
    up.post_yaml("apply", &deployment("warm", 1)).await?;
    wait(up, "warm", 1, Duration::from_secs(60)).await?;
    up.delete_deployment("warm").await?;
    let revision = up
        .call(reqwest::Method::GET, "projects/bench/pods", None)
        .await?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut seen = watch_running(up, &revision).await?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    match args.mode.as_str() {
        "burst" => {
            let applied = Instant::now();
            up.post_yaml("apply", &deployment("burst", args.pods))
                .await?;
            while latencies.len() < args.pods {
                let (_, at) = tokio::time::timeout(Duration::from_secs(120), seen.recv())
                    .await
                    .context("pods did not all start within 120 s")?
                    .context("the watch ended")?;
                latencies.push(at - applied);
            }
        }
        "paced" => {
            let every = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
            let mut applied = HashMap::new();
            let mut next = Instant::now();
            for i in 0..args.pods {
                tokio::time::sleep_until(next.into()).await;
                next += every;
                let name = format!("p{i:03}");
                applied.insert(name.clone(), Instant::now());
                up.post_yaml("apply", &deployment(&name, 1)).await?;
                while let Ok((key, at)) = seen.try_recv() {
                    let app = key.split('/').next().unwrap_or_default();
                    latencies.push(at - applied[app]);
                }
            }
            while latencies.len() < args.pods {
                let (key, at) = tokio::time::timeout(Duration::from_secs(120), seen.recv())
                    .await
                    .context("pods did not all start within 120 s")?
                    .context("the watch ended")?;
                let app = key.split('/').next().unwrap_or_default();
                latencies.push(at - applied[app]);
            }
        }
        _ => {
            for i in 0..args.pods {
                let name = format!("p{i:03}");
                let applied = Instant::now();
                up.post_yaml("apply", &deployment(&name, 1)).await?;
                loop {
                    let (key, at) = tokio::time::timeout(Duration::from_secs(60), seen.recv())
                        .await
                        .with_context(|| format!("pod of {name} did not start within 60 s"))?
                        .context("the watch ended")?;
                    if key.starts_with(&format!("{name}/")) {
                        latencies.push(at - applied);
                        break;
                    }
                }
            }
        }
    }
    let total = started.elapsed();
    latencies.sort();
    let p50 = percentile(&latencies, 50.0);
    let p90 = percentile(&latencies, 90.0);
    let p99 = percentile(&latencies, 99.0);
    let max = *latencies.last().expect("at least one pod");
    let mode = match args.mode.as_str() {
        "paced" => format!("paced at {} pods/s", args.rate),
        other => other.to_string(),
    };
    println!(
        "pod start latency, apply -> Running, image cached, {} pods, {mode}:",
        latencies.len(),
    );
    println!(
        "  p50 {:.0} ms   p90 {:.0} ms   p99 {:.0} ms   max {:.0} ms   (all {} in {:.1} s)",
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        latencies.len(),
        total.as_secs_f64()
    );
    println!(
        "  Kubernetes SLO p99 <= 5000 ms: {}; Wharf target p99 <= 1000 ms: {}",
        if p99 <= Duration::from_secs(5) {
            "met"
        } else {
            "MISSED"
        },
        if p99 <= Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}

/// Deletes every deployment, waits until the node has removed their
/// containers and namespaces, and stops `wharf up`.
async fn teardown(up: &mut Up) -> Result<()> {
    let deployments = up
        .call(reqwest::Method::GET, "projects/bench/deployments", None)
        .await?;
    for d in deployments["items"].as_array().into_iter().flatten() {
        if let Some(name) = d["metadata"]["name"].as_str() {
            up.delete_deployment(name).await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = up
            .call(reqwest::Method::GET, "projects/bench/pods", None)
            .await?;
        if list["items"].as_array().is_none_or(Vec::is_empty) {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("warning: pods still present after 120 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The agent removes a pod's containers and namespace after the pod
    // object is gone.
    let runc_root = "/run/wharf-bench/runc";
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let listed = Command::new("runc")
            .args(["--root", runc_root, "list", "-q"])
            .output()
            .await?;
        let namespaces = Command::new("ip").args(["netns", "list"]).output().await?;
        let namespaces_left = String::from_utf8_lossy(&namespaces.stdout).contains("wbench-");
        if listed.stdout.iter().all(u8::is_ascii_whitespace) && !namespaces_left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = up.child.kill().await;
    let _ = Command::new("ip")
        .args(["link", "delete", "wbench0"])
        .output()
        .await;
    Ok(())
}

pub(super) async fn wait(up: &Up, app: &str, count: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if up.running().await?.get(app).copied().unwrap_or(0) >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{app}: {count} pods not running within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
