//! Probe cost: the CPU of `wharf up` (server, controllers and the agent
//! that runs the probes) while N real pods sit idle, first without probes,
//! then with an httpGet readiness and a tcpSocket liveness probe each
//! every second, then M pods with an exec readiness probe every second.
//! CPU is utime + stime from `/proc/PID/stat` over the window, as a
//! fraction of one core; the probes' cost is the difference from the
//! probe-free run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use super::pods::{Up, deployment, wait, with_up};

/// Options of `wharf bench probes`.
#[derive(Args)]
pub struct ProbesBenchArgs {
    /// Pods with network probes (and pods without probes, for the baseline).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Pods with an exec probe.
    #[arg(long, default_value_t = 20)]
    exec_pods: usize,
    /// Seconds of each measurement window.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// Network probes every second: httpGet readiness, tcpSocket liveness.
const NETWORK_PROBES: &str = "          readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1}\n          livenessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}\n";
/// An exec probe every second.
const EXEC_PROBES: &str =
    "          readinessProbe: {exec: {command: [cat, /www/index.html]}, periodSeconds: 1}\n";

/// Runs the benchmark and prints the figures.
pub async fn run(args: ProbesBenchArgs) -> Result<()> {
    with_up("probe benchmark", async |up| measure(up, &args).await).await
}

async fn measure(up: &Up, args: &ProbesBenchArgs) -> Result<()> {
    let pid = up.pid().context("wharf up has exited")?;
    let window = Duration::from_secs(args.seconds);
    println!(
        "CPU of wharf up (server + controllers + agent), fraction of one core over {window:?}:"
    );
    let baseline = phase(up, pid, "plain", args.pods, "", window).await?;
    println!(
        "  {} pods, no probes:                            {baseline:.3}",
        args.pods
    );
    let network = phase(up, pid, "net", args.pods, NETWORK_PROBES, window).await?;
    println!(
        "  {} pods, httpGet + tcpSocket every 1 s ({} probes/s): {network:.3}  (probes: {:.3})",
        args.pods,
        2 * args.pods,
        network - baseline
    );
    let exec = phase(up, pid, "exec", args.exec_pods, EXEC_PROBES, window).await?;
    println!(
        "  {} pods, exec every 1 s:                       {exec:.3}  (agent process only; runc exec children not counted)",
        args.exec_pods
    );
    Ok(())
}

/// Runs `count` pods of deployment `name` with `probes`, measures the CPU
/// of process `pid` over `window` once they all run, then deletes them.
async fn phase(
    up: &Up,
    pid: u32,
    name: &str,
    count: usize,
    probes: &str,
    window: Duration,
) -> Result<f64> {
    up.post_yaml("apply", &format!("{}{probes}", deployment(name, count)))
        .await?;
    wait(up, name, count, Duration::from_secs(300)).await?;
    // Let start-up work (status reports, first checks) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (before, at) = (cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(window).await;
    let used = cpu_ticks(pid)? - before;
    let cores = used as f64 / USER_HZ / at.elapsed().as_secs_f64();
    up.call(
        reqwest::Method::DELETE,
        &format!("projects/bench/deployments/{name}"),
        None,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while up.running().await?.contains_key(name) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(cores)
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ: 100 on Linux).
const USER_HZ: f64 = 100.0;

/// utime + stime of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}
