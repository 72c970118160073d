//! `wharf bench commit`: freezing a running container into an image, beside
//! `docker commit` + `docker push` of the same change in the same run.
//!
//! Per change size S (MiB) and run, a container writes S MiB of random
//! bytes (incompressible: every byte is read, compressed and sent) and is
//! committed with `POST .../pods/NAME/commit` to `wharf up`'s registry; the
//! same image runs under a private `dockerd`, writes the same amount, and
//! is committed and pushed to the same registry. Figures: the time Wharf
//! kept the container frozen, the time to read the changed bytes once (the
//! pause target), Wharf's total, and docker's commit, push and their sum.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tokio::process::Command;
use wharf_api::commit::{CommitProgress, CommitResult};

use super::pods::{Up, percentile, with_up};

/// Options of `wharf bench commit`.
#[derive(Args)]
pub struct CommitBenchArgs {
    /// Sizes of the change to commit, in MiB.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1024")]
    sizes: Vec<u64>,
    /// Runs per size.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Compare with `docker commit` + `docker push` (needs `dockerd`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    docker: bool,
}

/// One run's figures.
#[derive(Default)]
struct Run {
    read: Duration,
    paused: Duration,
    total: Duration,
    docker_commit: Duration,
    docker_push: Duration,
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: CommitBenchArgs) -> Result<()> {
    with_up("commit benchmark", async |up| measure(up, &args).await).await
}

async fn measure(up: &Up, args: &CommitBenchArgs) -> Result<()> {
    let docker = if args.docker {
        Some(Docker::start().await?)
    } else {
        None
    };
    let registry = up.url.trim_start_matches("http://").to_string();
    if let Some(docker) = &docker {
        docker
            .run_with_stdin(
                &["login", "-u", "admin", "--password-stdin", &registry],
                &up.password,
            )
            .await?;
        docker
            .run(&["pull", &format!("{registry}/bench/web:1")])
            .await?;
    }
    println!(
        "size MiB  run  read ms  paused ms  wharf total ms  docker commit ms  docker push ms  docker total ms"
    );
    let mut summary = Vec::new();
    for &size in &args.sizes {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let mut figures = wharf_run(up, size, run).await?;
            if let Some(docker) = &docker {
                docker_run(docker, &registry, size, run, &mut figures).await?;
            }
            println!(
                "{size:>8}  {run:>3}  {:>7}  {:>9}  {:>14}  {:>16}  {:>14}  {:>15}",
                figures.read.as_millis(),
                figures.paused.as_millis(),
                figures.total.as_millis(),
                figures.docker_commit.as_millis(),
                figures.docker_push.as_millis(),
                (figures.docker_commit + figures.docker_push).as_millis(),
            );
            runs.push(figures);
        }
        summary.push((size, runs));
    }
    println!("\nsummary (p50 / p99 of {} runs)", args.runs);
    println!(
        "size MiB  read ms      paused ms    wharf total ms  docker commit+push ms  paused/read p99  total/docker p50"
    );
    for (size, runs) in &summary {
        let pick = |f: fn(&Run) -> Duration| {
            let mut values: Vec<Duration> = runs.iter().map(f).collect();
            values.sort();
            (percentile(&values, 50.0), percentile(&values, 99.0))
        };
        let read = pick(|r| r.read);
        let paused = pick(|r| r.paused);
        let total = pick(|r| r.total);
        let docker = pick(|r| r.docker_commit + r.docker_push);
        let ratio = |a: Duration, b: Duration| {
            if b.is_zero() {
                "-".to_string()
            } else {
                format!("{:.2}", a.as_secs_f64() / b.as_secs_f64())
            }
        };
        println!(
            "{size:>8}  {:>5} / {:<5}  {:>5} / {:<5}  {:>6} / {:<6}  {:>8} / {:<8}      {:>15}  {:>16}",
            read.0.as_millis(),
            read.1.as_millis(),
            paused.0.as_millis(),
            paused.1.as_millis(),
            total.0.as_millis(),
            total.1.as_millis(),
            docker.0.as_millis(),
            docker.1.as_millis(),
            ratio(paused.1, read.1),
            ratio(total.0, docker.0),
        );
    }
    Ok(())
}

/// The shell line every container runs: write `size` MiB, then mark it done.
fn writer(size: u64) -> String {
    format!(
        "dd if=/dev/urandom of=/change bs=1M count={size} 2>/dev/null && touch /written && sleep 3600"
    )
}

/// Commits a fresh pod that wrote `size` MiB.
async fn wharf_run(up: &Up, size: u64, run: usize) -> Result<Run> {
    let name = format!("c{size}r{run}");
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: bench, annotations: {{wharf.io/ip-pool: bench-pool}}}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 1\n      containers:\n        - name: web\n          image: bench/web:1\n          \
         command: [/bin/sh, -c, {:?}]\n",
        writer(size)
    );
    up.post_yaml("apply", &yaml).await?;
    let pod = running_pod(up, &name).await?;
    let upper = up
        .dir
        .join("node/pods")
        .join(format!("bench_{pod}"))
        .join("containers/web/upper");
    wait_for_file(&upper.join("written"), Duration::from_secs(300)).await?;
    let read = tokio::task::spawn_blocking(move || read_all(&upper)).await??;
    let started = Instant::now();
    let result = commit(up, &pod, &format!("bench/commit-{name}:1")).await?;
    let total = started.elapsed();
    up.delete_deployment(&name).await?;
    Ok(Run {
        read,
        paused: Duration::from_millis(result.paused_ms),
        total: total.max(Duration::from_millis(result.total_ms)),
        ..Run::default()
    })
}

/// The name of deployment `name`'s pod once it runs.
async fn running_pod(up: &Up, name: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = up
            .call(reqwest::Method::GET, "projects/bench/pods", None)
            .await?;
        let found =
            list["items"].as_array().into_iter().flatten().find(|p| {
                p["metadata"]["labels"]["app"] == name && p["status"]["phase"] == "Running"
            });
        if let Some(pod) = found {
            return Ok(pod["metadata"]["name"]
                .as_str()
                .context("a pod without a name")?
                .to_string());
        }
        if Instant::now() > deadline {
            bail!("deployment {name} has no running pod after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_file(path: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Reads every regular file under `dir` once: what the pause is held to.
fn read_all(dir: &Path) -> Result<Duration> {
    use std::io::Read;
    let started = Instant::now();
    let mut buffer = vec![0u8; 1 << 20];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let mut file = std::fs::File::open(entry.path())?;
                while file.read(&mut buffer)? > 0 {}
            }
        }
    }
    Ok(started.elapsed())
}

/// `POST .../pods/POD/commit` to `image`; the result of its last line.
async fn commit(up: &Up, pod: &str, image: &str) -> Result<CommitResult> {
    let mut response = up
        .http
        .post(format!(
            "{}/api/v1/projects/bench/pods/{pod}/commit",
            up.url
        ))
        .bearer_auth(&up.token)
        .json(&json!({"image": image}))
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        bail!("commit of {pod}: {status}: {}", response.text().await?);
    }
    let mut buffer = Vec::new();
    let mut last = None;
    while let Some(chunk) = response.chunk().await? {
        buffer.extend_from_slice(&chunk);
        while let Some(at) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=at).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            last = Some(
                serde_json::from_slice::<CommitProgress>(&line).with_context(|| {
                    format!("a progress line: {}", String::from_utf8_lossy(&line))
                })?,
            );
        }
    }
    match last {
        Some(CommitProgress::Done(result)) => Ok(result),
        Some(CommitProgress::Failed { step, message }) => {
            bail!("commit of {pod} failed at {step}: {message}")
        }
        other => bail!("commit of {pod} ended without a result (last line {other:?})"),
    }
}

/// The same change under docker: run, write, `docker commit`, `docker push`.
async fn docker_run(
    docker: &Docker,
    registry: &str,
    size: u64,
    run: usize,
    figures: &mut Run,
) -> Result<()> {
    let name = format!("d{size}r{run}");
    let image = format!("{registry}/bench/docker-{name}:1");
    docker
        .run(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            &format!("{registry}/bench/web:1"),
            "/bin/sh",
            "-c",
            &writer(size),
        ])
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while docker
        .run(&["exec", &name, "/bin/ls", "/written"])
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("docker container {name} did not write its change within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    docker.run(&["commit", &name, &image]).await?;
    figures.docker_commit = started.elapsed();
    let started = Instant::now();
    docker.run(&["push", &image]).await?;
    figures.docker_push = started.elapsed();
    docker.run(&["rm", "-f", &name]).await?;
    docker.run(&["rmi", &image]).await?;
    Ok(())
}

/// A private `dockerd`: its own socket, data and exec roots, no bridge and
/// no iptables changes; stopped when dropped.
struct Docker {
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Docker {
    async fn start() -> Result<Docker> {
        // Short: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("wb").tempdir_in("/tmp")?;
        let root = dir.path();
        let log = std::fs::File::create(root.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg(format!("--host=unix://{}", root.join("d.sock").display()))
            .arg(format!("--data-root={}", root.join("root").display()))
            .arg(format!("--exec-root={}", root.join("x").display()))
            .arg(format!("--pidfile={}", root.join("pid").display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting dockerd (apt-get install docker.io)")?;
        let docker = Docker { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while docker.run(&["info"]).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "dockerd did not answer within 60 s; see {}",
                    docker.log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(docker)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("--host")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("d.sock").display()
            ))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    async fn run(&self, args: &[&str]) -> Result<()> {
        let output = self.command(args).output().await?;
        if !output.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    async fn run_with_stdin(&self, args: &[&str], input: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut child = self.command(args).stdin(Stdio::piped()).spawn()?;
        let mut stdin = child.stdin.take().context("docker's stdin")?;
        stdin.write_all(input.as_bytes()).await?;
        drop(stdin);
        let output = child.wait_with_output().await?;
        if !output.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM lets dockerd stop its containers and unmount.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
