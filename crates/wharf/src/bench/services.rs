//! The service datapath: `wrk` from inside a pod's network namespace
//! against a service's cluster IP (nftables DNAT over 3 busybox httpd
//! endpoints), against a service with one endpoint, and straight against
//! that endpoint's pod, in turn, in the same run: requests per second and
//! latency of each, and each VIP's throughput as a share of the direct
//! one. The one-endpoint service isolates the cost of the rules from
//! the spreading over more servers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use super::pods::{Up, deployment, wait};

/// Options of `wharf bench services`.
#[derive(Args)]
pub struct ServicesBenchArgs {
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Runs of each target, alternated (VIP, direct, VIP, ...).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// A service in front of deployment `app`'s pods.
fn service(app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {app}, namespace: bench}}\nspec:\n  selector: {{app: {app}}}\n  ports: [{{port: 80, targetPort: 80}}]\n"
    )
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: ServicesBenchArgs) -> Result<()> {
    if !installed("wrk").await {
        bail!("wrk not found: apt-get install wrk");
    }
    super::pods::with_up("service benchmark", async |up| measure(up, &args).await).await
}

async fn measure(up: &Up, args: &ServicesBenchArgs) -> Result<()> {
    for (app, replicas) in [("echo", 3), ("solo", 1), ("client", 1)] {
        up.post_yaml("apply", &deployment(app, replicas)).await?;
    }
    for app in ["echo", "solo"] {
        up.post_yaml("apply", &service(app)).await?;
    }
    for (app, replicas) in [("echo", 3), ("solo", 1), ("client", 1)] {
        wait(up, app, replicas, Duration::from_secs(120)).await?;
    }
    let spread = cluster_ip(up, "echo").await?;
    let single = cluster_ip(up, "solo").await?;
    let endpoints = ready_endpoints(up, "echo", 3).await?;
    let direct = ready_endpoints(up, "solo", 1).await?.remove(0);
    let client_ip = pod_address(up, "client").await?;
    let netns = netns_of(&client_ip)
        .await?
        .with_context(|| format!("no network namespace holds {client_ip}"))?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "wrk -t{} -c{} -d{}s --latency from pod namespace {netns}; load before: {}",
        args.threads,
        args.connections,
        args.seconds,
        load.trim()
    );
    let targets = [
        (format!("service {spread} -> {endpoints:?}"), spread),
        (format!("service {single} -> [{direct}]"), single),
        (format!("pod {direct}"), direct.clone()),
    ];
    let mut runs: Vec<Vec<WrkRun>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.rounds {
        for (runs, (_, ip)) in runs.iter_mut().zip(&targets) {
            runs.push(wrk(&netns, ip, args).await?);
        }
    }
    let rates: Vec<f64> = runs
        .iter()
        .map(|runs| mean(runs.iter().map(|r| r.requests_per_second)))
        .collect();
    let direct_rate = rates[2];
    for ((name, _), (runs, rate)) in targets.iter().zip(runs.iter().zip(&rates)) {
        println!(
            "  {name}: {rate:.0} req/s, {:.1}% of direct",
            100.0 * rate / direct_rate
        );
        for run in runs {
            println!("    {run}");
        }
    }
    Ok(())
}

/// The cluster IP of service `name`.
async fn cluster_ip(up: &Up, name: &str) -> Result<String> {
    let path = format!("projects/bench/services/{name}");
    let service = up.call(reqwest::Method::GET, &path, None).await?;
    let ip = service["spec"]["clusterIP"].as_str();
    Ok(ip.context("the service has no cluster IP")?.to_string())
}

/// The address of a pod of deployment `app`.
async fn pod_address(up: &Up, app: &str) -> Result<String> {
    let pods = up
        .call(reqwest::Method::GET, "projects/bench/pods", None)
        .await?;
    let found = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|p| {
            (p["metadata"]["labels"]["app"] == app)
                .then(|| p["status"]["podIP"].as_str())
                .flatten()
        });
    Ok(found
        .with_context(|| format!("no {app} pod address"))?
        .to_string())
}

/// One wrk run's figures.
struct WrkRun {
    requests_per_second: f64,
    /// Latency: average, 50th and 99th percentile, as wrk prints them.
    average: String,
    p50: String,
    p99: String,
    errors: String,
}

impl std::fmt::Display for WrkRun {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0} req/s, latency avg {} p50 {} p99 {}{}",
            self.requests_per_second, self.average, self.p50, self.p99, self.errors
        )
    }
}

/// Runs wrk inside network namespace `netns` against `http://ip/`.
async fn wrk(netns: &str, ip: &str, args: &ServicesBenchArgs) -> Result<WrkRun> {
    let output = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "wrk", "--latency"])
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg(format!("http://{ip}/"))
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk against {ip} failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output: {text}"))
}

/// The figures of wrk's `--latency` report.
fn parse_wrk(text: &str) -> Option<WrkRun> {
    let field = |prefix: &str, at: usize| -> Option<String> {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        line.split_whitespace().nth(at).map(str::to_string)
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(|l| format!("; {}", l.trim()))
        .collect();
    Some(WrkRun {
        requests_per_second: field("Requests/sec:", 1)?.parse().ok()?,
        average: field("Latency ", 1)?,
        p50: field("50%", 1)?,
        p99: field("99%", 1)?,
        errors,
    })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Waits until service `name`'s endpoints list `count` ready addresses.
async fn ready_endpoints(up: &Up, name: &str, count: usize) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = format!("projects/bench/endpoints/{name}");
    loop {
        let endpoints = up
            .call(reqwest::Method::GET, &path, None)
            .await
            .unwrap_or(Value::Null);
        let ready: Vec<String> = endpoints["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(str::to_string))
            .collect();
        if ready.len() >= count {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            bail!(
                "the service has {} ready endpoints, not {count}",
                ready.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pod network namespace (`wbench-*`, the benchmark node's prefix)
/// whose `eth0` holds `ip`.
async fn netns_of(ip: &str) -> Result<Option<String>> {
    let list = tokio::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .await?;
    let names = String::from_utf8_lossy(&list.stdout);
    for name in names.lines().filter_map(|l| l.split_whitespace().next()) {
        if !name.starts_with("wbench-") {
            continue;
        }
        let addresses = tokio::process::Command::new("ip")
            .args(["-n", name, "-4", "-o", "addr", "show", "dev", "eth0"])
            .output()
            .await?;
        if String::from_utf8_lossy(&addresses.stdout).contains(&format!(" {ip}/")) {
            return Ok(Some(name.to_string()));
        }
    }
    Ok(None)
}

/// Whether `program` can be run (it is asked for its version).
async fn installed(program: &str) -> bool {
    tokio::process::Command::new(program)
        .arg("-v")
        .output()
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_latency_report() {
        let text = "Running 10s test @ http://10.96.0.1/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  40.00ms   90.00%
    Req/Sec     5.10k   300.00     6.00k    70.00%
  Latency Distribution
     50%    2.90ms
     75%    3.50ms
     90%    4.20ms
     99%    8.00ms
  101234 requests in 10.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
Requests/sec:  10123.40
Transfer/sec:      2.00MB
";
        let run = parse_wrk(text).unwrap();
        assert_eq!(run.requests_per_second, 10123.4);
        assert_eq!(run.average, "3.10ms");
        assert_eq!(run.p50, "2.90ms");
        assert_eq!(run.p99, "8.00ms");
        assert!(run.errors.contains("read 2"), "{}", run.errors);
    }
}
