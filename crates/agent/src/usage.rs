//! Reads a container's CPU and memory counters from its cgroup, and for
//! monitoring ([`CgroupSampler::stats`]) its throttling, limits, OOM kills
//! and a process in it (whose `/proc/PID/net/dev` is the pod's network).
//!
//! runc's cgroupfs driver puts a container at its spec's `cgroupsPath`
//! under each hierarchy's root. With cgroup v1 controllers (this project's
//! machines are hybrid: v1 controllers plus a controller-less cgroup2
//! mount) the counters are `cpuacct.usage` and `memory.usage_in_bytes`
//! less `total_inactive_file`; on a pure cgroup v2 host they are
//! `cpu.stat`'s `usage_usec`, `memory.current` and `inactive_file`. The
//! working set is computed as kubelet and cAdvisor do. Throttling is
//! `cpu.stat` in either version (v1's in the `cpu` hierarchy, in
//! nanoseconds; v2's in microseconds), the CPU limit v1's
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us` or v2's `cpu.max`, the memory
//! limit `memory.limit_in_bytes` or `memory.max`, OOM kills the `oom_kill`
//! line of `memory.oom_control` or `memory.events`.
//!
//! The sampler returns raw cumulative counters; rates are the consumer's
//! business (the server's pod metrics, node monitoring). Reading files
//! blocks: call it off the async workers.

use std::io;
use std::path::{Path, PathBuf};

use wharf_api::ContainerUsage;

/// Where the cgroup hierarchies are mounted on Linux.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Memory limits at or above this are v1's way of saying "none" (the
/// largest page-aligned `i64`).
const V1_UNLIMITED: u64 = 1 << 62;

/// What monitoring reads of one container's cgroup. The counters beyond
/// `usage` that a kernel does not have are `None` rather than an error.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU time and the memory working set.
    pub usage: ContainerUsage,
    /// Time the container was throttled by its CPU limit, nanoseconds.
    pub throttled_ns: Option<u64>,
    /// Enforcement periods in which it was throttled.
    pub throttled_periods: Option<u64>,
    /// Its CPU limit in cores; `None`: unlimited.
    pub cpu_limit_cores: Option<f64>,
    /// Its memory limit in bytes; `None`: unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// Processes the kernel killed in it for want of memory.
    pub oom_kills: Option<u64>,
    /// A process in it, if any.
    pub pid: Option<u32>,
}

/// Samples containers' cgroups under one mount root.
#[derive(Clone, Debug)]
pub struct CgroupSampler {
    root: PathBuf,
}

impl Default for CgroupSampler {
    fn default() -> Self {
        CgroupSampler::new(CGROUP_ROOT)
    }
}

impl CgroupSampler {
    /// A sampler of the hierarchies under `root` (`/sys/fs/cgroup`; tests
    /// give a directory of their own).
    pub fn new(root: impl Into<PathBuf>) -> CgroupSampler {
        CgroupSampler { root: root.into() }
    }

    /// The counters of the cgroup at `cgroups_path` (as in the OCI spec,
    /// e.g. `/wharf/<container-id>`).
    ///
    /// ```no_run
    /// let usage = wharf_agent::usage::CgroupSampler::default().sample("/wharf/abc-web")?;
    /// println!("{} ns of CPU", usage.cpu_usage_ns);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn sample(&self, cgroups_path: &str) -> io::Result<ContainerUsage> {
        let relative = cgroups_path.trim_start_matches('/');
        let v1_cpu = self.root.join("cpuacct");
        if v1_cpu.is_dir() {
            self.sample_v1(
                &v1_cpu.join(relative),
                &self.root.join("memory").join(relative),
            )
        } else {
            self.sample_v2(&self.root.join(relative))
        }
    }

    /// Everything monitoring reads of the cgroup at `cgroups_path`: an
    /// error only when [`sample`](CgroupSampler::sample) fails.
    pub fn stats(&self, cgroups_path: &str) -> io::Result<CgroupStats> {
        let usage = self.sample(cgroups_path)?;
        let relative = cgroups_path.trim_start_matches('/');
        if self.root.join("cpuacct").is_dir() {
            let cpu = self.root.join("cpu").join(relative);
            let memory = self.root.join("memory").join(relative);
            let cpu_stat = read_text(&cpu.join("cpu.stat"));
            let quota = read_text(&cpu.join("cpu.cfs_quota_us"));
            let period = read_text(&cpu.join("cpu.cfs_period_us"));
            Ok(CgroupStats {
                usage,
                throttled_ns: cpu_stat
                    .as_deref()
                    .and_then(|s| stat_field(s, "throttled_time")),
                throttled_periods: cpu_stat
                    .as_deref()
                    .and_then(|s| stat_field(s, "nr_throttled")),
                cpu_limit_cores: cores(quota.as_deref(), period.as_deref()),
                memory_limit_bytes: read_text(&memory.join("memory.limit_in_bytes"))
                    .and_then(|t| t.trim().parse().ok())
                    .filter(|limit| *limit < V1_UNLIMITED),
                oom_kills: read_text(&memory.join("memory.oom_control"))
                    .and_then(|t| stat_field(&t, "oom_kill")),
                pid: first_pid(&memory),
            })
        } else {
            let dir = self.root.join(relative);
            let cpu_stat = read_text(&dir.join("cpu.stat"));
            let cpu_max = read_text(&dir.join("cpu.max"));
            let (quota, period) = cpu_max.as_deref().and_then(|t| t.split_once(' ')).unzip();
            Ok(CgroupStats {
                usage,
                throttled_ns: cpu_stat
                    .as_deref()
                    .and_then(|s| stat_field(s, "throttled_usec"))
                    .map(|usec| usec.saturating_mul(1000)),
                throttled_periods: cpu_stat
                    .as_deref()
                    .and_then(|s| stat_field(s, "nr_throttled")),
                cpu_limit_cores: cores(quota, period),
                memory_limit_bytes: read_text(&dir.join("memory.max"))
                    .and_then(|t| t.trim().parse().ok()),
                oom_kills: read_text(&dir.join("memory.events"))
                    .and_then(|t| stat_field(&t, "oom_kill")),
                pid: first_pid(&dir),
            })
        }
    }

    fn sample_v1(&self, cpu: &Path, memory: &Path) -> io::Result<ContainerUsage> {
        let cpu_usage_ns = read_number(&cpu.join("cpuacct.usage"))?;
        let usage = read_number(&memory.join("memory.usage_in_bytes"))?;
        let stat = std::fs::read_to_string(memory.join("memory.stat"))?;
        Ok(ContainerUsage {
            cpu_usage_ns,
            memory_working_set_bytes: working_set(usage, &stat, "total_inactive_file"),
        })
    }

    fn sample_v2(&self, dir: &Path) -> io::Result<ContainerUsage> {
        let cpu_stat = std::fs::read_to_string(dir.join("cpu.stat"))?;
        let usage_usec = stat_field(&cpu_stat, "usage_usec")
            .ok_or_else(|| invalid(dir.join("cpu.stat"), "no usage_usec"))?;
        let usage = read_number(&dir.join("memory.current"))?;
        let stat = std::fs::read_to_string(dir.join("memory.stat"))?;
        Ok(ContainerUsage {
            cpu_usage_ns: usage_usec.saturating_mul(1000),
            memory_working_set_bytes: working_set(usage, &stat, "inactive_file"),
        })
    }
}

/// Memory usage less the inactive file cache the kernel can drop at once
/// (never below zero: the two are read at slightly different moments).
fn working_set(usage: u64, memory_stat: &str, inactive_key: &str) -> u64 {
    usage.saturating_sub(stat_field(memory_stat, inactive_key).unwrap_or(0))
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A CFS quota over its period in cores; `-1` (v1) or `max` (v2) is none.
fn cores(quota: Option<&str>, period: Option<&str>) -> Option<f64> {
    let quota: f64 = quota?.trim().parse().ok()?;
    let period: f64 = period?.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// The first process listed in the cgroup directory `dir`.
fn first_pid(dir: &Path) -> Option<u32> {
    read_text(&dir.join("cgroup.procs"))?
        .lines()
        .find_map(|line| line.trim().parse().ok())
}

/// A small cgroup file's text; `None` when the kernel has no such file.
fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_number(path: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| invalid(path.to_path_buf(), "not a number"))
}

fn invalid(path: PathBuf, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v1_reads_cpuacct_and_the_working_set() {
        let root = tempfile::tempdir().unwrap();
        let cpu = root.path().join("cpuacct/wharf/abc-web");
        let memory = root.path().join("memory/wharf/abc-web");
        write(&cpu, "cpuacct.usage", "1500000000\n");
        write(&memory, "memory.usage_in_bytes", "10485760\n");
        write(
            &memory,
            "memory.stat",
            "cache 4096\ninactive_file 999\ntotal_inactive_file 2097152\n",
        );
        let usage = CgroupSampler::new(root.path())
            .sample("/wharf/abc-web")
            .unwrap();
        assert_eq!(
            usage,
            ContainerUsage {
                cpu_usage_ns: 1_500_000_000,
                memory_working_set_bytes: 8 * 1024 * 1024,
            }
        );
    }

    #[test]
    fn v2_reads_cpu_stat_and_the_working_set() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wharf/abc-web");
        write(&dir, "cpu.stat", "usage_usec 2500\nuser_usec 2000\n");
        write(&dir, "memory.current", "4096\n");
        write(&dir, "memory.stat", "anon 1024\ninactive_file 8192\n");
        let usage = CgroupSampler::new(root.path())
            .sample("wharf/abc-web")
            .unwrap();
        // More inactive cache than usage (read at different moments): zero.
        assert_eq!(
            usage,
            ContainerUsage {
                cpu_usage_ns: 2_500_000,
                memory_working_set_bytes: 0,
            }
        );
    }

    #[test]
    fn v1_stats_read_throttling_limits_oom_kills_and_a_pid() {
        let root = tempfile::tempdir().unwrap();
        let cpu = root.path().join("cpu/wharf/c");
        let memory = root.path().join("memory/wharf/c");
        write(&root.path().join("cpuacct/wharf/c"), "cpuacct.usage", "7\n");
        write(
            &cpu,
            "cpu.stat",
            "nr_periods 50\nnr_throttled 20\nthrottled_time 3000000000\n",
        );
        write(&cpu, "cpu.cfs_quota_us", "50000\n");
        write(&cpu, "cpu.cfs_period_us", "100000\n");
        write(&memory, "memory.usage_in_bytes", "4096\n");
        write(&memory, "memory.stat", "total_inactive_file 0\n");
        write(&memory, "memory.limit_in_bytes", "67108864\n");
        write(
            &memory,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(&memory, "cgroup.procs", "4242\n4243\n");
        let stats = CgroupSampler::new(root.path()).stats("/wharf/c").unwrap();
        assert_eq!(
            stats,
            CgroupStats {
                usage: ContainerUsage {
                    cpu_usage_ns: 7,
                    memory_working_set_bytes: 4096,
                },
                throttled_ns: Some(3_000_000_000),
                throttled_periods: Some(20),
                cpu_limit_cores: Some(0.5),
                memory_limit_bytes: Some(64 << 20),
                oom_kills: Some(2),
                pid: Some(4242),
            }
        );
        // Unlimited, as v1 writes it; an older kernel without oom_kill.
        write(&cpu, "cpu.cfs_quota_us", "-1\n");
        write(&memory, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&memory, "memory.oom_control", "oom_kill_disable 0\n");
        let stats = CgroupSampler::new(root.path()).stats("/wharf/c").unwrap();
        assert_eq!(
            (
                stats.cpu_limit_cores,
                stats.memory_limit_bytes,
                stats.oom_kills
            ),
            (None, None, None)
        );
    }

    #[test]
    fn v2_stats_read_cpu_max_memory_max_and_events() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wharf/c");
        write(
            &dir,
            "cpu.stat",
            "usage_usec 10\nnr_periods 9\nnr_throttled 4\nthrottled_usec 1500\n",
        );
        write(&dir, "cpu.max", "200000 100000\n");
        write(&dir, "memory.current", "100\n");
        write(&dir, "memory.stat", "inactive_file 0\n");
        write(&dir, "memory.max", "max\n");
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        let stats = CgroupSampler::new(root.path()).stats("/wharf/c").unwrap();
        assert_eq!(stats.throttled_ns, Some(1_500_000));
        assert_eq!(stats.throttled_periods, Some(4));
        assert_eq!(stats.cpu_limit_cores, Some(2.0));
        assert_eq!(stats.memory_limit_bytes, None);
        assert_eq!(stats.oom_kills, Some(1));
        assert_eq!(stats.pid, None);
        write(&dir, "cpu.max", "max 100000\n");
        write(&dir, "memory.max", "1048576\n");
        let stats = CgroupSampler::new(root.path()).stats("/wharf/c").unwrap();
        assert_eq!(stats.cpu_limit_cores, None);
        assert_eq!(stats.memory_limit_bytes, Some(1 << 20));
    }

    #[test]
    fn a_missing_cgroup_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("cpuacct")).unwrap();
        let err = CgroupSampler::new(root.path())
            .sample("/wharf/gone")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn garbage_in_a_counter_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("cpuacct/c"), "cpuacct.usage", "lots\n");
        let err = CgroupSampler::new(root.path()).sample("/c").unwrap_err();
        assert!(err.to_string().contains("cpuacct.usage"), "{err}");
    }
}
