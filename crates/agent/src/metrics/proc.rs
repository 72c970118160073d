//! Parsers for the `/proc` files the node collector reads. Pure functions
//! of the text, so they are tested with fixture text; reading the files is
//! [`super::node`]'s.

use std::collections::BTreeMap;

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

impl CpuTimes {
    /// Every tick counted (guest time is already inside user and nice).
    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

impl CpuTimes {
    /// Ticks spent working and all ticks: the scheduler's view of load,
    /// where waiting for I/O is idle (falcon's `cpu.busy` counts it busy).
    pub fn busy_and_total(&self) -> (u64, u64) {
        let total = self.total();
        (total - self.idle - self.iowait, total)
    }
}

/// Reads the first (`cpu `) line of `/proc/stat`.
pub fn cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut fields = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>());
    let mut next = || fields.next().and_then(Result::ok);
    Some(CpuTimes {
        user: next()?,
        nice: next()?,
        system: next()?,
        idle: next()?,
        iowait: next()?,
        irq: next()?,
        softirq: next()?,
        steal: next().unwrap_or(0),
    })
}

/// falcon's `cpu.*` percents over the interval between two readings
/// (`None` when no tick passed, or the counters went back: a reboot).
pub fn cpu_percents(before: &CpuTimes, after: &CpuTimes) -> Option<Vec<(&'static str, f64)>> {
    let total = after.total().checked_sub(before.total())?;
    if total == 0 {
        return None;
    }
    let percent = |a: u64, b: u64| a.saturating_sub(b) as f64 * 100.0 / total as f64;
    let idle = percent(after.idle, before.idle);
    Some(vec![
        ("cpu.idle", idle),
        ("cpu.busy", 100.0 - idle),
        ("cpu.user", percent(after.user, before.user)),
        ("cpu.system", percent(after.system, before.system)),
        ("cpu.iowait", percent(after.iowait, before.iowait)),
        ("cpu.steal", percent(after.steal, before.steal)),
    ])
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn load_averages(loadavg: &str) -> Option<[f64; 3]> {
    let mut fields = loadavg
        .split_ascii_whitespace()
        .map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// falcon's `mem.*` gauges from `/proc/meminfo`, in bytes (and percent).
/// Free memory is `MemAvailable` where the kernel has it (what can be had
/// without swapping), else free + buffers + page cache, as falcon does.
pub fn memory(meminfo: &str) -> Option<Vec<(&'static str, f64)>> {
    let fields = meminfo_fields(meminfo);
    let total = *fields.get("MemTotal")?;
    let free = available(&fields);
    let swap_total = fields.get("SwapTotal").copied().unwrap_or(0);
    let swap_free = fields.get("SwapFree").copied().unwrap_or(0);
    let free_percent = if total == 0 {
        0.0
    } else {
        free as f64 * 100.0 / total as f64
    };
    Some(vec![
        ("mem.memtotal", total as f64),
        ("mem.memused", total.saturating_sub(free) as f64),
        ("mem.memfree", free as f64),
        ("mem.memfree.percent", free_percent),
        ("mem.swapused", swap_total.saturating_sub(swap_free) as f64),
    ])
}

/// Memory that can be had without swapping, in bytes: `mem.memfree`.
pub fn memory_available(meminfo: &str) -> Option<u64> {
    let fields = meminfo_fields(meminfo);
    fields.contains_key("MemTotal").then(|| available(&fields))
}

/// `/proc/meminfo`'s fields in bytes.
fn meminfo_fields(meminfo: &str) -> BTreeMap<&str, u64> {
    meminfo
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let kib = rest.split_ascii_whitespace().next()?.parse::<u64>().ok()?;
            Some((key, kib * 1024))
        })
        .collect()
}

/// `MemAvailable` where the kernel has it, else free + buffers + cache.
fn available(fields: &BTreeMap<&str, u64>) -> u64 {
    match fields.get("MemAvailable") {
        Some(available) => *available,
        None => {
            let field = |key| fields.get(key).copied().unwrap_or(0);
            field("MemFree") + field("Buffers") + field("Cached")
        }
    }
}

/// One block device's counters from `/proc/diskstats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskCounters {
    /// Bytes read since boot.
    pub read_bytes: u64,
    /// Bytes written since boot.
    pub write_bytes: u64,
    /// Milliseconds the device had I/O in flight (for `disk.io.util`).
    pub io_ms: u64,
}

/// The whole disks of `/proc/diskstats` (partitions, loop, RAM and
/// device-mapper devices left out, as falcon leaves them) by name.
pub fn disks(diskstats: &str) -> BTreeMap<String, DiskCounters> {
    diskstats
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let name = *fields.get(2)?;
            if !is_whole_disk(name) {
                return None;
            }
            let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
            // Sectors in diskstats are 512 bytes whatever the device's own.
            let counters = DiskCounters {
                read_bytes: number(5)? * 512,
                write_bytes: number(9)? * 512,
                io_ms: number(12)?,
            };
            Some((name.to_owned(), counters))
        })
        .collect()
}

fn is_whole_disk(name: &str) -> bool {
    let ends_in_digit = name.ends_with(|c: char| c.is_ascii_digit());
    if ["sd", "vd", "hd", "xvd"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return !ends_in_digit;
    }
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        // nvme0n1 is a disk, nvme0n1p1 its partition.
        return !name
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .contains('p');
    }
    false
}

/// `disk.io.util`: the share of `elapsed_ms` the device was busy, percent.
pub fn disk_util(before: &DiskCounters, after: &DiskCounters, elapsed_ms: u64) -> Option<f64> {
    let busy = after.io_ms.checked_sub(before.io_ms)?;
    (elapsed_ms > 0).then(|| (busy as f64 * 100.0 / elapsed_ms as f64).min(100.0))
}

/// One interface's counters from `/proc/net/dev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Bytes received.
    pub in_bytes: u64,
    /// Packets received.
    pub in_packets: u64,
    /// Receive errors.
    pub in_errors: u64,
    /// Bytes sent.
    pub out_bytes: u64,
    /// Packets sent.
    pub out_packets: u64,
    /// Send errors.
    pub out_errors: u64,
}

/// Every interface of a `/proc/net/dev` text by name.
pub fn interfaces(net_dev: &str) -> BTreeMap<String, InterfaceCounters> {
    net_dev
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let numbers: Vec<u64> = rest
                .split_ascii_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let number = |i: usize| numbers.get(i).copied();
            let counters = InterfaceCounters {
                in_bytes: number(0)?,
                in_packets: number(1)?,
                in_errors: number(2)?,
                out_bytes: number(8)?,
                out_packets: number(9)?,
                out_errors: number(10)?,
            };
            Some((name.trim().to_owned(), counters))
        })
        .collect()
}

/// `ss.estab`: the TCP connections established now (`CurrEstab` in the
/// `Tcp:` table of `/proc/net/snmp`: ESTABLISHED and CLOSE-WAIT, the
/// count falcon reports from `ss -s`).
pub fn established_tcp(snmp: &str) -> Option<u64> {
    let mut tables = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let header = tables.next()?;
    let values = tables.next()?;
    let at = header
        .split_ascii_whitespace()
        .position(|n| n == "CurrEstab")?;
    values.split_ascii_whitespace().nth(at)?.parse().ok()
}

/// A mounted file system `df.*` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub path: String,
    /// Its type (`ext4`, `xfs` ...).
    pub fstype: String,
}

/// File system types on disks: pseudo file systems (proc, tmpfs, cgroup),
/// the containers' overlays and network mounts (a hung server would hang
/// the collector) are not `df`'s business.
const DISK_FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "vfat", "jfs", "reiserfs",
];

/// The disk file systems of `/proc/mounts`, each device once (its first
/// mount: bind mounts of it elsewhere are the same space).
pub fn disk_mounts(mounts: &str) -> Vec<Mount> {
    let mut seen = std::collections::HashSet::new();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (device, path, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (DISK_FILESYSTEMS.contains(&fstype) && seen.insert(device.to_owned())).then(|| Mount {
                path: unescape_octal(path),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_BEFORE: &str =
        "cpu  1000 0 500 8000 200 0 0 300 0 0\ncpu0 500 0 250 4000 100 0 0 150 0 0\nintr 1\n";
    const STAT_AFTER: &str =
        "cpu  1400 0 600 8400 300 0 0 300 0 0\ncpu0 700 0 300 4200 150 0 0 150 0 0\n";

    #[test]
    fn cpu_percents_come_from_the_delta_of_two_readings() {
        let before = cpu_times(STAT_BEFORE).unwrap();
        let after = cpu_times(STAT_AFTER).unwrap();
        // 1000 ticks passed: 400 user, 100 system, 400 idle, 100 iowait.
        let percents: BTreeMap<_, _> = cpu_percents(&before, &after).unwrap().into_iter().collect();
        assert_eq!(percents["cpu.user"], 40.0);
        assert_eq!(percents["cpu.system"], 10.0);
        assert_eq!(percents["cpu.idle"], 40.0);
        assert_eq!(percents["cpu.busy"], 60.0);
        assert_eq!(percents["cpu.iowait"], 10.0);
        assert_eq!(percents["cpu.steal"], 0.0);
        // No tick passed, or counters reset (reboot): no percents.
        assert!(cpu_percents(&after, &after).is_none());
        assert!(cpu_percents(&after, &before).is_none());
        assert!(cpu_times("intr 1\n").is_none());
    }

    #[test]
    fn load_averages_are_the_first_three_fields() {
        assert_eq!(
            load_averages("2.55 2.61 2.05 6/214 32155\n"),
            Some([2.55, 2.61, 2.05])
        );
        assert_eq!(load_averages("2.55\n"), None);
    }

    #[test]
    fn memory_uses_memavailable_and_reports_bytes() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\nBuffers:          50 kB\nCached:          300 kB\nSwapTotal:       400 kB\nSwapFree:        100 kB\n";
        let mem: BTreeMap<_, _> = memory(meminfo).unwrap().into_iter().collect();
        assert_eq!(mem["mem.memtotal"], 1_024_000.0);
        assert_eq!(mem["mem.memfree"], 256_000.0);
        assert_eq!(mem["mem.memused"], 768_000.0);
        assert_eq!(mem["mem.memfree.percent"], 25.0);
        assert_eq!(mem["mem.swapused"], 307_200.0);
        // An old kernel without MemAvailable: free + buffers + cache.
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 300 kB\n";
        let mem: BTreeMap<_, _> = memory(old).unwrap().into_iter().collect();
        assert_eq!(mem["mem.memfree"], 450.0 * 1024.0);
        assert!(memory("MemFree: 1 kB\n").is_none());
    }

    #[test]
    fn diskstats_keeps_whole_disks_in_bytes() {
        let text = "\
   7       0 loop0 10 0 80 0 0 0 0 0 0 0 0 0 0 0 0
   8       0 sda 100 5 2048 60 50 3 4096 70 0 1500 130 0 0 0 0
   8       1 sda1 90 5 2000 60 50 3 4096 70 0 1400 130 0 0 0 0
 259       0 nvme0n1 1 0 8 0 1 0 8 0 0 20 0
 259       1 nvme0n1p1 1 0 8 0 1 0 8 0 0 20 0
 253       0 dm-0 1 0 8 0 1 0 8 0 0 20 0
";
        let disks = disks(text);
        assert_eq!(disks.keys().collect::<Vec<_>>(), ["nvme0n1", "sda"]);
        assert_eq!(
            disks["sda"],
            DiskCounters {
                read_bytes: 2048 * 512,
                write_bytes: 4096 * 512,
                io_ms: 1500,
            }
        );
        let later = DiskCounters {
            io_ms: 4000,
            ..disks["sda"]
        };
        assert_eq!(disk_util(&disks["sda"], &later, 10_000), Some(25.0));
        assert_eq!(disk_util(&disks["sda"], &later, 1_000), Some(100.0));
        assert_eq!(disk_util(&later, &disks["sda"], 1_000), None);
    }

    #[test]
    fn net_dev_reads_each_interface() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 5793 69    0    1    0     0          0         0 5793 69    0    0    0     0       0          0
  eth0: 1000 10 1 0 0 0 0 0 2000 20 2 0 0 0 0 0
";
        let interfaces = interfaces(text);
        assert_eq!(interfaces.len(), 2);
        assert_eq!(
            interfaces["eth0"],
            InterfaceCounters {
                in_bytes: 1000,
                in_packets: 10,
                in_errors: 1,
                out_bytes: 2000,
                out_packets: 20,
                out_errors: 2,
            }
        );
    }

    #[test]
    fn established_connections_come_from_the_tcp_table() {
        let snmp = "\
Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs
Tcp: 1 200 120000 -1 160872 129410 2065 2944 34 7931331
Udp: InDatagrams
Udp: 5
";
        assert_eq!(established_tcp(snmp), Some(34));
        assert_eq!(established_tcp("Ip: a\nIp: 1\n"), None);
    }

    #[test]
    fn mounts_keep_disk_file_systems_once_per_device() {
        let text = "\
proc /proc proc rw 0 0
/dev/sda1 / ext4 rw,relatime 0 0
overlay /var/lib/wharf/node/c/rootfs overlay rw 0 0
tmpfs /run tmpfs rw 0 0
/dev/sda1 /var/lib/wharf/claims/x ext4 rw 0 0
/dev/sdb1 /data\\040disk xfs rw 0 0
server:/export /mnt/nfs nfs4 rw 0 0
";
        assert_eq!(
            disk_mounts(text),
            [
                Mount {
                    path: "/".into(),
                    fstype: "ext4".into()
                },
                Mount {
                    path: "/data disk".into(),
                    fstype: "xfs".into()
                },
            ]
        );
    }
}
