//! The node's own metrics, by open-falcon's names: read from `/proc` and
//! `statvfs`. Blocking: the collector runs it on a blocking thread.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::Batch;
use super::proc::{self, CpuTimes, DiskCounters};

/// Reads the node's metrics; keeps the previous CPU and disk readings, as
/// `cpu.*` percents and `disk.io.util` are shares of the interval.
pub struct NodeReader {
    proc_root: PathBuf,
    /// `statvfs` each mount (off in tests, whose fixture mounts are not
    /// this machine's).
    statfs: bool,
    cpu: Option<CpuTimes>,
    disks: Option<(Instant, BTreeMap<String, DiskCounters>)>,
}

impl Default for NodeReader {
    fn default() -> Self {
        NodeReader::new("/proc")
    }
}

impl NodeReader {
    /// A reader of the proc files under `proc_root` (`/proc`).
    pub fn new(proc_root: impl Into<PathBuf>) -> NodeReader {
        NodeReader {
            proc_root: proc_root.into(),
            statfs: true,
            cpu: None,
            disks: None,
        }
    }

    /// Adds this instant's node metrics to `batch`. A file that cannot be
    /// read or parsed costs its own metrics only (logged at debug).
    pub fn collect(&mut self, batch: &mut Batch) {
        self.cpu(batch);
        if let Some([one, five, fifteen]) = self.parse("loadavg", proc::load_averages) {
            batch.gauge("load.1min", "", one);
            batch.gauge("load.5min", "", five);
            batch.gauge("load.15min", "", fifteen);
        }
        for (metric, value) in self.parse("meminfo", proc::memory).unwrap_or_default() {
            batch.gauge(metric, "", value);
        }
        self.disks(batch);
        if self.statfs {
            let mounts = self.parse("mounts", |t| Some(proc::disk_mounts(t)));
            for mount in mounts.unwrap_or_default() {
                file_system(&mount, batch);
            }
        }
        for (name, counters) in self
            .parse("net/dev", |t| Some(proc::interfaces(t)))
            .unwrap_or_default()
        {
            // Loopback says nothing about the node; pods' host-side veths
            // are reported per pod (`container.net.*`).
            if name == "lo" || name.starts_with("veth") {
                continue;
            }
            let tags = format!("iface={name}");
            batch.counter("net.if.in.bytes", &tags, counters.in_bytes as f64);
            batch.counter("net.if.out.bytes", &tags, counters.out_bytes as f64);
            batch.counter("net.if.in.packets", &tags, counters.in_packets as f64);
            batch.counter("net.if.out.packets", &tags, counters.out_packets as f64);
            batch.counter("net.if.in.errors", &tags, counters.in_errors as f64);
            batch.counter("net.if.out.errors", &tags, counters.out_errors as f64);
        }
        if let Some(estab) = self.parse("net/snmp", proc::established_tcp) {
            batch.gauge("ss.estab", "", estab as f64);
        }
    }

    /// `cpu.*` from the ticks since the previous reading: none the first time.
    fn cpu(&mut self, batch: &mut Batch) {
        let Some(now) = self.parse("stat", proc::cpu_times) else {
            return;
        };
        if let Some(percents) = self
            .cpu
            .and_then(|before| proc::cpu_percents(&before, &now))
        {
            for (metric, value) in percents {
                batch.gauge(metric, "", value);
            }
        }
        self.cpu = Some(now);
    }

    /// `disk.io.*` per whole disk; `util` from the previous reading.
    fn disks(&mut self, batch: &mut Batch) {
        let Some(disks) = self.parse("diskstats", |t| Some(proc::disks(t))) else {
            return;
        };
        let now = Instant::now();
        for (name, counters) in &disks {
            let tags = format!("device={name}");
            batch.counter("disk.io.read_bytes", &tags, counters.read_bytes as f64);
            batch.counter("disk.io.write_bytes", &tags, counters.write_bytes as f64);
            let before = self.disks.as_ref().and_then(|(at, before)| {
                let elapsed = now.duration_since(*at).as_millis() as u64;
                proc::disk_util(before.get(name)?, counters, elapsed)
            });
            if let Some(util) = before {
                batch.gauge("disk.io.util", &tags, util);
            }
        }
        self.disks = Some((now, disks));
    }

    fn parse<T>(&self, file: &str, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        let path = self.proc_root.join(file);
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&text).ok_or_else(|| "unexpected format".to_owned()));
        parsed
            .inspect_err(
                |err| tracing::debug!(path = %path.display(), error = err, "no metrics from it"),
            )
            .ok()
    }
}

/// `df.*` of one mount.
fn file_system(mount: &proc::Mount, batch: &mut Batch) {
    let stat = match nix::sys::statvfs::statvfs(mount.path.as_str()) {
        Ok(stat) => stat,
        Err(err) => {
            tracing::debug!(mount = mount.path, error = %err, "no df metrics");
            return;
        }
    };
    let unit = stat.fragment_size() as f64;
    let total = stat.blocks() as f64 * unit;
    // Free as an unprivileged user sees it (falcon's too); used counts the
    // root-reserved blocks as neither.
    let free = stat.blocks_available() as f64 * unit;
    let used = (stat.blocks() - stat.blocks_free()) as f64 * unit;
    let tags = format!("fstype={},mount={}", mount.fstype, mount.path);
    batch.gauge("df.bytes.total", &tags, total);
    batch.gauge("df.bytes.used", &tags, used);
    batch.gauge("df.bytes.free", &tags, free);
    batch.gauge("df.bytes.used.percent", &tags, percent(used, used + free));
    let inodes = stat.files() as f64;
    let inodes_free = stat.files_free() as f64;
    batch.gauge("df.inodes.total", &tags, inodes);
    batch.gauge("df.inodes.used", &tags, inodes - inodes_free);
    batch.gauge("df.inodes.free", &tags, inodes_free);
    batch.gauge(
        "df.inodes.used.percent",
        &tags,
        percent(inodes - inodes_free, inodes),
    );
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part * 100.0 / whole
    } else {
        0.0
    }
}

#[cfg(test)]
impl NodeReader {
    fn without_statfs(mut self) -> NodeReader {
        self.statfs = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(stat: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = root.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("stat", stat);
        write("loadavg", "0.50 0.25 0.10 1/100 42\n");
        write("meminfo", "MemTotal: 1000 kB\nMemAvailable: 500 kB\n");
        write("diskstats", "8 0 sda 1 0 2 0 1 0 4 0 0 100 0\n");
        write(
            "net/dev",
            "h\nh\n lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n eth0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n veth1a: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n",
        );
        write("net/snmp", "Tcp: CurrEstab\nTcp: 7\n");
        root
    }

    fn names(batch: &Batch) -> Vec<String> {
        batch
            .samples
            .iter()
            .map(|s| format!("{}{{{}}}", s.metric, s.tags))
            .collect()
    }

    #[test]
    fn cpu_and_disk_util_wait_for_a_second_reading() {
        let root = fixture("cpu  100 0 100 800 0 0 0 0\n");
        let mut reader = NodeReader::new(root.path()).without_statfs();
        let mut first = Batch::new("n1", 1_700_000_000, 10);
        reader.collect(&mut first);
        let first_names = names(&first);
        assert!(!first_names.iter().any(|n| n.starts_with("cpu.")));
        assert!(!first_names.iter().any(|n| n.starts_with("disk.io.util")));
        for expected in [
            "load.1min{}",
            "mem.memused{}",
            "disk.io.read_bytes{device=sda}",
            "net.if.in.bytes{iface=eth0}",
            "ss.estab{}",
        ] {
            assert!(
                first_names.iter().any(|n| n == expected),
                "{expected} in {first_names:?}"
            );
        }
        assert!(
            !first_names
                .iter()
                .any(|n| n.contains("iface=lo") || n.contains("veth"))
        );

        std::fs::write(root.path().join("stat"), "cpu  150 0 150 900 0 0 0 0\n").unwrap();
        // disk.io.util is a share of the time between readings: some must pass.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut second = Batch::new("n1", 1_700_000_010, 10);
        reader.collect(&mut second);
        let busy = second
            .samples
            .iter()
            .find(|s| s.metric == "cpu.busy")
            .unwrap();
        assert_eq!(busy.value, 50.0);
        assert_eq!(busy.endpoint, "n1");
        assert!(
            names(&second)
                .iter()
                .any(|n| n == "disk.io.util{device=sda}")
        );
    }

    #[test]
    fn a_missing_file_costs_only_its_metrics() {
        let root = fixture("garbage\n");
        std::fs::remove_file(root.path().join("meminfo")).unwrap();
        let mut batch = Batch::new("n1", 1_700_000_000, 10);
        NodeReader::new(root.path())
            .without_statfs()
            .collect(&mut batch);
        let names = names(&batch);
        assert!(!names.iter().any(|n| n.starts_with("mem.")));
        assert!(names.iter().any(|n| n == "load.15min{}"));
    }

    #[test]
    fn the_root_file_system_reports_df() {
        let mut batch = Batch::new("n1", 1_700_000_000, 10);
        let root = proc::Mount {
            path: "/".into(),
            fstype: "ext4".into(),
        };
        file_system(&root, &mut batch);
        let value = |metric: &str| {
            batch
                .samples
                .iter()
                .find(|s| s.metric == metric)
                .unwrap_or_else(|| panic!("{metric}"))
                .value
        };
        assert!(value("df.bytes.total") > 0.0);
        assert!(value("df.bytes.used") + value("df.bytes.free") <= value("df.bytes.total"));
        assert!((0.0..=100.0).contains(&value("df.inodes.used.percent")));
        assert_eq!(batch.samples[0].tags, "fstype=ext4,mount=/");
    }
}
