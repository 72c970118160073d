//! What the node remembers of each pod, on disk, so that a restarted agent
//! finds its containers, addresses and namespaces again.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::driver::Exit;

/// A pod's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// The address.
    pub ip: Ipv4Addr,
    /// Prefix length of its subnet.
    pub prefix_len: u8,
    /// The gateway.
    pub gateway: Ipv4Addr,
    /// The cluster pool it was claimed from; `None`: the node-local range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// Runtime id.
    pub id: String,
    /// Runs started after the first.
    pub restart_count: u32,
    /// Whether a run was started and not yet seen to end.
    pub running: bool,
    /// When the current (or last) run started, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// How the last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Exit>,
    /// The `preStop` hook of the current run, its ports as numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<wharf_api::LifecycleHandler>,
}

/// One pod on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Project.
    pub project: String,
    /// Name.
    pub name: String,
    /// Uid: a new pod of the same name is a different pod.
    pub uid: String,
    /// Short id naming its namespace and containers.
    pub pod_id: String,
    /// Seconds between SIGTERM and SIGKILL.
    pub grace_seconds: u64,
    /// Its address, once claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Its network namespace, once set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// When its first container started, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Its containers by name.
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Whether it runs on the node's network (no address or namespace of
    /// its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Its `hostPort`s as forwarded on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<wharf_net::HostPortForward>,
}

impl PodRecord {
    /// The directory of pod `project/name` under `pods_dir`. Names are
    /// DNS labels, so `_` cannot occur in either and the join is unambiguous.
    pub fn dir(pods_dir: &Path, project: &str, name: &str) -> PathBuf {
        pods_dir.join(format!("{project}_{name}"))
    }

    /// Writes the record atomically and durably.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("records serialize");
        wharf_fs::AtomicWrite::new(&dir.join("pod.json"))
            .create_parents()
            .write(&bytes)
    }

    /// Every record under `pods_dir`; unreadable ones are reported and skipped.
    pub fn load_all(pods_dir: &Path) -> Vec<PodRecord> {
        let Ok(entries) = std::fs::read_dir(pods_dir) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("pod.json");
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(record) => records.push(record),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "unreadable pod record")
                    }
                },
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "unreadable pod record")
                }
            }
        }
        records
    }
}

/// Addresses from the node-local range for pods that ask for no pool: one
/// file per address claimed, created exclusively, naming the pod's uid.
#[derive(Clone, Debug)]
pub struct LocalAddresses {
    dir: PathBuf,
    subnet: wharf_api::Subnet,
    gateway: Ipv4Addr,
}

impl LocalAddresses {
    /// The range `subnet` (with `gateway`, never handed out), claims kept in `dir`.
    pub fn new(dir: PathBuf, subnet: wharf_api::Subnet, gateway: Ipv4Addr) -> LocalAddresses {
        LocalAddresses {
            dir,
            subnet,
            gateway,
        }
    }

    /// Claims a free address for the pod with `uid`, or returns the one it holds.
    pub fn claim(&self, uid: &str) -> std::io::Result<Address> {
        std::fs::create_dir_all(&self.dir)?;
        let first = u32::from(self.subnet.network) + 1;
        let last = u32::from(self.subnet.broadcast()).saturating_sub(1);
        for candidate in first..=last {
            let ip = Ipv4Addr::from(candidate);
            if ip == self.gateway {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(uid.as_bytes())?;
                    file.sync_all()?;
                    return Ok(self.address(ip));
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    if std::fs::read_to_string(&path).is_ok_and(|held| held == uid) {
                        return Ok(self.address(ip));
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Err(std::io::Error::other(format!(
            "the node-local range {} has no free address",
            self.subnet
        )))
    }

    /// Gives back `ip` if the pod with `uid` holds it.
    pub fn release(&self, ip: Ipv4Addr, uid: &str) {
        let path = self.dir.join(ip.to_string());
        if std::fs::read_to_string(&path).is_ok_and(|held| held == uid) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Gives back any address the pod with `uid` holds: the claim of a step
    /// cancelled before it recorded the address leaves one unrecorded.
    pub fn release_any(&self, uid: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for path in entries.flatten().map(|entry| entry.path()) {
            if std::fs::read_to_string(&path).is_ok_and(|held| held == uid) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn address(&self, ip: Ipv4Addr) -> Address {
        Address {
            ip,
            prefix_len: self.subnet.prefix_len,
            gateway: self.gateway,
            pool: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_are_exclusive_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = wharf_api::Subnet::parse("10.88.0.0/29").unwrap();
        let local = LocalAddresses::new(dir.path().into(), subnet, "10.88.0.1".parse().unwrap());
        let a = local.claim("uid-a").unwrap();
        assert_eq!(a.ip.to_string(), "10.88.0.2");
        assert_eq!(
            local.claim("uid-a").unwrap(),
            a,
            "claiming again returns the same"
        );
        let ips: Vec<String> = ["b", "c", "d", "e"]
            .iter()
            .map(|u| local.claim(u).unwrap().ip.to_string())
            .collect();
        assert_eq!(ips, ["10.88.0.3", "10.88.0.4", "10.88.0.5", "10.88.0.6"]);
        assert!(local.claim("f").is_err(), "the range is full");
        local.release(a.ip, "someone-else");
        assert!(local.claim("f").is_err(), "only the holder releases");
        local.release(a.ip, "uid-a");
        assert_eq!(local.claim("f").unwrap().ip, a.ip);
        // An address whose claim went unrecorded comes back by its holder.
        local.release_any("c");
        assert_eq!(local.claim("g").unwrap().ip.to_string(), "10.88.0.4");
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let record = PodRecord {
            project: "shop".into(),
            name: "web-1".into(),
            uid: "u".into(),
            pod_id: "abc".into(),
            grace_seconds: 30,
            address: None,
            netns: None,
            start_time: Some(1),
            containers: BTreeMap::from([("web".into(), ContainerRecord::default())]),
            host_network: false,
            host_ports: Vec::new(),
        };
        let pod_dir = PodRecord::dir(dir.path(), "shop", "web-1");
        record.save(&pod_dir).unwrap();
        std::fs::create_dir_all(dir.path().join("junk")).unwrap();
        std::fs::write(dir.path().join("junk/pod.json"), b"{").unwrap();
        assert_eq!(PodRecord::load_all(dir.path()), [record]);
    }
}
