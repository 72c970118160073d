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
        "CPU of wharf up (server + controllers + agent) and of the children it reaped (runc), \
         fraction of one core over {window:?}:"
    );
    let baseline = phase(up, pid, "plain", args.pods, "", window).await?;
    println!("  {} pods, no probes: {baseline}", args.pods);
    let network = phase(up, pid, "net", args.pods, NETWORK_PROBES, window).await?;
    println!(
        "  {} pods, httpGet + tcpSocket every 1 s ({} probes/s): {network}; probes: {:.3}",
        args.pods,
        2 * args.pods,
        network.own - baseline.own
    );
    let exec = phase(up, pid, "exec", args.exec_pods, EXEC_PROBES, window).await?;
    println!("  {} pods, exec every 1 s: {exec}", args.exec_pods);
    Ok(())
}

/// CPU as fractions of one core: the process's own, its children's.
#[derive(Clone, Copy)]
pub(super) struct Cores {
    pub(super) own: f64,
    pub(super) children: f64,
}

impl std::fmt::Display for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:.3} (children {:.3})", self.own, self.children)
    }
}

/// Runs `count` pods of deployment `name` with `probes`, measures the CPU
/// of process `pid` over `window` once they all run, then deletes them.
pub(super) async fn phase(
    up: &Up,
    pid: u32,
    name: &str,
    count: usize,
    probes: &str,
    window: Duration,
) -> Result<Cores> {
    up.post_yaml("apply", &format!("{}{probes}", deployment(name, count)))
        .await?;
    wait(up, name, count, Duration::from_secs(300)).await?;
    // Let start-up work (status reports, first checks) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (before, at) = (cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(window).await;
    let after = cpu_ticks(pid)?;
    let per_second = USER_HZ * at.elapsed().as_secs_f64();
    let cores = Cores {
        own: (after.own - before.own) as f64 / per_second,
        children: (after.children - before.children) as f64 / per_second,
    };
    up.delete_deployment(name).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while up.running().await?.contains_key(name) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(cores)
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ: 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU of process `pid` in clock ticks: its own (utime + stime) and that of
/// the children it reaped (cutime + cstime: `runc` runs, exec probes).
fn cpu_ticks(pid: u32) -> Result<Ticks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14 to 17 of the whole line.
    let field = |i: usize| -> Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    Ok(Ticks {
        own: field(11)? + field(12)?,
        children: field(13)? + field(14)?,
    })
}

/// CPU ticks of a process and of its reaped children.
#[derive(Clone, Copy)]
struct Ticks {
    own: u64,
    children: u64,
}
