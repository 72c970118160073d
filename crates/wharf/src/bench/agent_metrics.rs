//! Monitoring's cost on a node: the CPU and memory of `wharf up` (server,
//! controllers and the agent) with N idle real pods, once with metrics
//! collection off (`--metrics-interval 0`) and once at the interval
//! measured (10 s). The difference is the collection's cost plus the
//! server storing what it pushes: an upper bound of the agent's overhead.
//! CPU as in `bench probes` (utime + stime of the process over the window).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::pods::with_up_args;
use super::probes::{Cores, phase};

/// Options of `wharf bench agent-metrics`.
#[derive(Args)]
pub struct AgentMetricsBenchArgs {
    /// Running pods (one container each) while measuring.
    #[arg(long, default_value_t = 50)]
    containers: usize,
    /// Seconds of each measurement window.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The collection interval measured.
    #[arg(long, default_value = "10s")]
    interval: String,
}

/// CPU and memory of one run.
struct Cost {
    cores: Cores,
    rss_kib: u64,
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: AgentMetricsBenchArgs) -> Result<()> {
    let window = Duration::from_secs(args.seconds);
    let off = measure(&args, "0", window).await?;
    let on = measure(&args, &args.interval, window).await?;
    println!(
        "wharf up with {} idle pods, CPU as a fraction of one core over {window:?} (children: runc), RSS at the end:",
        args.containers
    );
    println!(
        "  metrics off:           {} cores, RSS {} MiB",
        off.cores,
        off.rss_kib / 1024
    );
    println!(
        "  metrics every {:>6}: {} cores, RSS {} MiB",
        args.interval,
        on.cores,
        on.rss_kib / 1024
    );
    println!(
        "  collection + ingest:   {:.4} cores ({:.2}% of one core), RSS {:+} MiB",
        on.cores.own - off.cores.own,
        (on.cores.own - off.cores.own) * 100.0,
        (on.rss_kib as i64 - off.rss_kib as i64) / 1024
    );
    Ok(())
}

/// A fresh `wharf up` collecting every `interval`, measured with the pods
/// running.
async fn measure(args: &AgentMetricsBenchArgs, interval: &str, window: Duration) -> Result<Cost> {
    // A long lease: on a loaded machine a late heartbeat would otherwise
    // fence (stop) the pool-addressed pods and they would never all run.
    let extra = ["--metrics-interval", interval, "--node-lease-ttl", "30s"];
    with_up_args("agent metrics benchmark", &extra, async |up| {
        let pid = up.pid().context("wharf up has exited")?;
        let cores = phase(up, pid, "idle", args.containers, "", window).await?;
        Ok(Cost {
            cores,
            rss_kib: rss_kib(pid)?,
        })
    })
    .await
}

/// Resident memory of process `pid`, KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_resident_size() {
        let kib = super::rss_kib(std::process::id()).unwrap();
        assert!(kib > 100, "{kib} KiB");
    }
}
