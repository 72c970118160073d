//! `wharf bench prometheus`: the cost of keeping the same series, the same
//! way, in Debian's Prometheus and in Wharf. Prometheus scrapes ENDPOINTS
//! exporter targets of SERIES gauges each every INTERVAL; then a `wharf
//! server` receives the same ENDPOINTS x SERIES samples every INTERVAL as
//! agents push them (one push per endpoint). Each runs alone for DURATION
//! after a warm-up; the figures are the process's CPU (utime + stime over
//! the measured window) and resident memory at its end. The exporter and
//! the pushers live in this process and are not counted, as an agent's
//! own cost is not.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_util::task::AbortOnDropHandle;

use crate::units;

/// Arguments of `wharf bench prometheus`.
#[derive(Args)]
pub struct PrometheusBenchArgs {
    /// Simulated endpoints (exporter targets for Prometheus, pushing agents for Wharf).
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// Series per endpoint.
    #[arg(long, default_value_t = 100)]
    series: usize,
    /// Scrape and push interval.
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    interval: Duration,
    /// Measured time for each of the two.
    #[arg(long, default_value = "60s", value_parser = units::parse_duration)]
    duration: Duration,
}

/// CPU and memory of one process over the measured window.
struct Cost {
    cpu_seconds: f64,
    rss_bytes: u64,
}

/// Runs the comparison and prints a table.
pub async fn run(args: PrometheusBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let total = args.endpoints * args.series;
    eprintln!(
        "{} endpoints x {} series = {total} series every {:?}, {:?} each",
        args.endpoints, args.series, args.interval, args.duration
    );
    let prometheus = measure_prometheus(&args, dir.path()).await?;
    let wharf = measure_wharf(&args, &dir.path().join("wharf")).await?;
    let window = args.duration.as_secs_f64();
    println!("| store | series | CPU (share of one core) | RSS |");
    println!("|---|---:|---:|---:|");
    for (name, cost) in [
        ("Prometheus (Debian), scraping", prometheus),
        ("wharf server, pushed", wharf),
    ] {
        println!(
            "| {name} | {total} | {:.1} % | {} MiB |",
            100.0 * cost.cpu_seconds / window,
            cost.rss_bytes >> 20
        );
    }
    Ok(())
}

async fn measure_prometheus(args: &PrometheusBenchArgs, dir: &Path) -> Result<Cost> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let exporter = listener.local_addr()?;
    let series = args.series;
    let _exporter = AbortOnDropHandle::new(tokio::spawn(serve_exporter(listener, series)));
    // One target per endpoint: the same exporter under distinct labels, so
    // Prometheus keeps ENDPOINTS x SERIES series.
    let mut config = format!(
        "global:\n  scrape_interval: {0}s\n  scrape_timeout: {0}s\nscrape_configs:\n  - job_name: bench\n    static_configs:\n",
        args.interval.as_secs().max(1)
    );
    for i in 0..args.endpoints {
        config.push_str(&format!(
            "      - targets: ['{exporter}']\n        labels: {{endpoint: 'e{i}'}}\n"
        ));
    }
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config)?;
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting prometheus (apt-get install prometheus)")?;
    let pid = child.id().context("prometheus exited")?;
    let cost = measure(pid, args).await;
    drop(child);
    cost
}

async fn measure_wharf(args: &PrometheusBenchArgs, dir: &Path) -> Result<Cost> {
    let password = format!("bench-{:016x}", rand::random::<u64>());
    let mut command = super::server_command(&password)?;
    command.arg("--data-dir").arg(dir);
    let (child, url, _) = super::spawn_listening(command, Duration::from_secs(30)).await?;
    let pid = child.id().context("wharf server exited")?;
    let http = reqwest::Client::new();
    let token = super::admin_token(&http, &url, &password).await?;
    let pushing = AbortOnDropHandle::new(tokio::spawn(push_forever(
        http,
        url,
        token,
        args.endpoints,
        args.series,
        args.interval,
    )));
    let cost = measure(pid, args).await;
    drop(pushing);
    drop(child);
    cost
}

/// Lets `pid` warm up for two intervals, then measures it for the duration.
async fn measure(pid: u32, args: &PrometheusBenchArgs) -> Result<Cost> {
    tokio::time::sleep(args.interval * 2).await;
    let before = cpu_seconds(pid)?;
    tokio::time::sleep(args.duration).await;
    Ok(Cost {
        cpu_seconds: cpu_seconds(pid)? - before,
        rss_bytes: rss_bytes(pid)?,
    })
}

/// Pushes every endpoint's samples once an interval, as agents do.
async fn push_forever(
    http: reqwest::Client,
    url: String,
    token: String,
    endpoints: usize,
    series: usize,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let now = crate::client::unix_now() as i64;
        let started = Instant::now();
        for e in 0..endpoints {
            let node = format!("bench-{e}");
            let samples: Vec<serde_json::Value> = (0..series)
                .map(|s| {
                    serde_json::json!({"endpoint": node, "metric": format!("bench.m{s}"), "tags": "",
                        "value": rand::random::<f64>(), "timestamp": now, "counterType": "GAUGE",
                        "step": interval.as_secs()})
                })
                .collect();
            let pushed = http
                .post(format!("{url}/api/v1/nodes/{node}/metrics"))
                .bearer_auth(&token)
                .json(&samples)
                .send()
                .await;
            if let Err(err) = pushed.and_then(|r| r.error_for_status()) {
                eprintln!("push failed: {err}");
            }
        }
        if started.elapsed() > interval {
            eprintln!(
                "pushing took {:?}, longer than the interval",
                started.elapsed()
            );
        }
    }
}

/// A minimal HTTP/1.1 exporter: every request gets `series` gauges with
/// fresh values; connections are kept alive, as Prometheus keeps them.
async fn serve_exporter(listener: TcpListener, series: usize) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve_connection(stream, series));
    }
}

async fn serve_connection(mut stream: TcpStream, series: usize) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        // Scrapes are GETs without a body: a request ends at its blank line.
        while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            request.drain(..end + 4);
            let mut body = String::with_capacity(series * 40);
            for s in 0..series {
                body.push_str(&format!("bench_m{s} {}\n", rand::random::<f64>()));
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(body.as_bytes()).await.is_err()
            {
                return;
            }
        }
    }
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    Ok(super::probes::cpu_ticks(pid)?.own as f64 / super::probes::USER_HZ)
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}
