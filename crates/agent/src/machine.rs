//! What this machine offers, read from the kernel.

use std::collections::BTreeMap;

use wharf_api::{LABEL_ARCH, LABEL_HOSTNAME, LABEL_OS, Resources};
use wharf_image::Platform;

/// Pods per node unless told otherwise (Kubernetes' default).
pub const DEFAULT_MAX_PODS: u32 = 110;

/// CPU (all online cores), memory (`MemTotal`) and pod slots.
pub fn capacity(max_pods: u32) -> Resources {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    Resources {
        cpu_millis: cores * 1000,
        memory_bytes: mem_total().unwrap_or(0),
        pods: max_pods,
    }
}

fn mem_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Kubernetes' standard labels for node `name` on this machine
/// (`kubernetes.io/hostname`, `os`, `arch`), so that manifests selecting
/// on them work unchanged.
pub fn standard_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_HOSTNAME.to_string(), name.to_string()),
        (LABEL_OS.to_string(), std::env::consts::OS.to_string()),
        // Go's names (amd64, arm64), as in image indexes.
        (LABEL_ARCH.to_string(), Platform::host().architecture),
    ])
}

/// Operating system, architecture, kernel and agent version.
pub fn info() -> BTreeMap<String, String> {
    let mut info = BTreeMap::new();
    info.insert("os".into(), std::env::consts::OS.into());
    info.insert("arch".into(), std::env::consts::ARCH.into());
    if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        info.insert("kernel".into(), kernel.trim().into());
    }
    info.insert("agentVersion".into(), env!("CARGO_PKG_VERSION").into());
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let capacity = capacity(110);
        assert!(capacity.cpu_millis >= 1000);
        assert!(capacity.memory_bytes > 64 << 20);
        assert_eq!(capacity.pods, 110);
        assert!(info().contains_key("kernel"));
    }

    #[test]
    fn standard_labels_name_the_node_as_kubernetes_does() {
        let labels = standard_labels("node-1");
        assert_eq!(labels[LABEL_HOSTNAME], "node-1");
        assert_eq!(labels[LABEL_OS], "linux");
        assert!(["amd64", "arm64"].contains(&labels[LABEL_ARCH].as_str()));
    }
}
