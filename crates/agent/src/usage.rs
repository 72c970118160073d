//! Reads a container's CPU and memory counters from its cgroup.
//!
//! runc's cgroupfs driver puts a container at its spec's `cgroupsPath`
//! under each hierarchy's root. With cgroup v1 controllers (this project's
//! machines are hybrid: v1 controllers plus a controller-less cgroup2
//! mount) the counters are `cpuacct.usage` and `memory.usage_in_bytes`
//! less `total_inactive_file`; on a pure cgroup v2 host they are
//! `cpu.stat`'s `usage_usec`, `memory.current` and `inactive_file`. The
//! working set is computed as kubelet and cAdvisor do.
//!
//! The sampler returns raw cumulative counters; rates are the consumer's
//! business (the server's pod metrics, node monitoring). Reading files
//! blocks: call it off the async workers.

use std::io;
use std::path::{Path, PathBuf};

use wharf_api::ContainerUsage;

/// Where the cgroup hierarchies are mounted on Linux.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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
