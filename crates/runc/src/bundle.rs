//! A runc bundle: a directory with `config.json` and the files bind-mounted
//! over the container's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
//! The rootfs lives elsewhere (an overlay mount prepared by the caller) and
//! is only referenced by path.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use wharf_api::Container;

use crate::RuncError;
use crate::fsutil;
use crate::spec::{self, ProcessDefaults, ResolvConf, Spec, SpecOptions};

const CONFIG: &str = "config.json";
const HOSTS: &str = "hosts";
const HOSTNAME: &str = "hostname";
const RESOLV_CONF: &str = "resolv.conf";
/// Written by `runc run --pid-file` once the container's process runs.
const PID_FILE: &str = "init.pid";

/// A bundle directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    /// Creates the bundle in `dir` (made absolute; created if missing):
    /// builds the spec with [`spec::build`], writes the `/etc` files and
    /// `config.json` atomically. Rewriting an existing bundle replaces its
    /// files.
    pub async fn create(
        dir: impl Into<PathBuf>,
        image: &ProcessDefaults,
        container: &Container,
        options: &SpecOptions,
    ) -> Result<Bundle, RuncError> {
        let dir = absolute(dir.into())?;
        let (image, container, options) = (image.clone(), container.clone(), options.clone());
        tokio::task::spawn_blocking(move || {
            Bundle::create_blocking(dir, &image, &container, &options)
        })
        .await
        .map_err(RuncError::join)?
    }

    /// [`Bundle::create`] for callers outside async code.
    pub fn create_blocking(
        dir: PathBuf,
        image: &ProcessDefaults,
        container: &Container,
        options: &SpecOptions,
    ) -> Result<Bundle, RuncError> {
        let bundle = Bundle {
            dir: absolute(dir)?,
        };
        let mut spec = spec::build(image, container, options)?;
        fs::create_dir_all(&bundle.dir).map_err(|e| RuncError::io(&bundle.dir, e))?;
        let host_network = options.security.host_network;
        let resolv = match &options.resolv_conf {
            Some(ResolvConf::Node(path)) => {
                let host = read_text(path)?;
                // On the node's network the node's own resolver is reachable.
                match host_network {
                    true => host,
                    false => resolv_conf(&host),
                }
            }
            Some(ResolvConf::Text(text)) => text.clone(),
            None => String::new(),
        };
        let hosts = match host_network {
            // As kubelet: a pod on the node's network sees the node's names.
            true => read_text(Path::new(NODE_HOSTS))?,
            false => hosts(&options.hostname, options.pod_ip),
        };
        let files = [
            (HOSTS, "/etc/hosts", hosts),
            (
                HOSTNAME,
                "/etc/hostname",
                format!("{}\n", options.seen_hostname()),
            ),
            (RESOLV_CONF, "/etc/resolv.conf", resolv),
        ];
        for (name, destination, content) in files {
            let path = bundle.dir.join(name);
            fsutil::write_atomic(&path, content.as_bytes()).map_err(|e| RuncError::io(&path, e))?;
            spec.add_bind_mount(&path, destination, false);
        }
        bundle.write_spec_blocking(&spec)?;
        Ok(bundle)
    }

    /// An existing bundle, e.g. one found again after the agent restarted.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Bundle, RuncError> {
        Ok(Bundle {
            dir: absolute(dir.into())?,
        })
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG)
    }

    /// Where runc records the pid of the container's process once it runs.
    pub fn pid_file(&self) -> PathBuf {
        pid_file(&self.dir)
    }

    /// Reads `config.json`.
    pub async fn read_spec(&self) -> Result<Spec, RuncError> {
        let path = self.config_path();
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| RuncError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| RuncError::Json {
            path: path.display().to_string(),
            source,
        })
    }

    /// Replaces `config.json` atomically.
    pub async fn write_spec(&self, spec: &Spec) -> Result<(), RuncError> {
        let (bundle, spec) = (self.clone(), spec.clone());
        tokio::task::spawn_blocking(move || bundle.write_spec_blocking(&spec))
            .await
            .map_err(RuncError::join)?
    }

    fn write_spec_blocking(&self, spec: &Spec) -> Result<(), RuncError> {
        let path = self.config_path();
        let json = serde_json::to_vec_pretty(spec).expect("specs serialize");
        fsutil::write_atomic(&path, &json).map_err(|e| RuncError::io(&path, e))
    }

    /// Removes the files this crate wrote and the directory if it is then
    /// empty. Never recurses: a rootfs mounted inside the bundle is left
    /// alone.
    pub async fn remove(&self) -> Result<(), RuncError> {
        for name in [CONFIG, HOSTS, HOSTNAME, RESOLV_CONF, PID_FILE] {
            let path = self.dir.join(name);
            fsutil::remove_if_exists(&path).map_err(|e| RuncError::io(&path, e))?;
        }
        match tokio::fs::remove_dir(&self.dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Someone else's files remain (e.g. a rootfs directory): keep it.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTEMPTY) => Ok(()),
            Err(e) => Err(RuncError::io(&self.dir, e)),
        }
    }
}

pub(crate) fn pid_file(bundle_dir: &Path) -> PathBuf {
    bundle_dir.join(PID_FILE)
}

/// The node's `/etc/hosts`, copied for pods on the node's network.
const NODE_HOSTS: &str = "/etc/hosts";

/// A host file's text; empty when it does not exist.
fn read_text(path: &Path) -> Result<String, RuncError> {
    let bytes = fsutil::read_if_exists(path).map_err(|e| RuncError::io(path, e))?;
    Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
}

fn absolute(path: PathBuf) -> Result<PathBuf, RuncError> {
    std::path::absolute(&path).map_err(|e| RuncError::io(&path, e))
}

/// Loopback names plus the pod's own name: on its address when it has one,
/// else on 127.0.1.1 (Debian's convention) so the name still resolves.
fn hosts(hostname: &str, pod_ip: Option<IpAddr>) -> String {
    let own = pod_ip.map_or_else(|| "127.0.1.1".to_string(), |ip| ip.to_string());
    format!(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         {own}\t{hostname}\n"
    )
}

/// The host's resolver configuration without loopback name servers: a
/// resolver on the host's 127.0.0.53 is unreachable from the pod's network
/// namespace, so listing it would only add timeouts.
fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>)
            && ip.is_loopback()
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file() {
        let with_ip = hosts("web-1", Some("10.88.0.7".parse().unwrap()));
        assert!(with_ip.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(with_ip.ends_with("10.88.0.7\tweb-1\n"), "{with_ip}");
        assert!(hosts("web-1", None).ends_with("127.0.1.1\tweb-1\n"));
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\nsearch corp\noptions edns0\n";
        assert_eq!(
            resolv_conf(host),
            "# generated\nnameserver 10.0.0.2\nsearch corp\noptions edns0\n"
        );
    }

    /// An image running `/bin/true`, and a container `web` of it.
    fn true_image_and_container() -> (ProcessDefaults, Container) {
        let image = ProcessDefaults {
            cmd: vec!["/bin/true".into()],
            ..Default::default()
        };
        let container = Container {
            name: "web".into(),
            ..Default::default()
        };
        (image, container)
    }

    #[test]
    fn host_network_copies_the_nodes_names_and_resolver() {
        let dir = tempfile::tempdir().unwrap();
        let host_resolv = dir.path().join("host-resolv.conf");
        fs::write(&host_resolv, "nameserver 127.0.0.53\n").unwrap();
        let mut options = SpecOptions::new(dir.path().join("rootfs"), "web-1", "/wharf/web-1");
        options.security.host_network = true;
        options.resolv_conf = Some(ResolvConf::Node(host_resolv));
        let (image, container) = true_image_and_container();
        let bundle =
            Bundle::create_blocking(dir.path().join("bundle"), &image, &container, &options)
                .unwrap();
        let b = bundle.dir();
        let read = |name: &str| fs::read_to_string(b.join(name)).unwrap();
        assert_eq!(read("resolv.conf"), "nameserver 127.0.0.53\n");
        assert_eq!(read("hosts"), fs::read_to_string(NODE_HOSTS).unwrap());
        let node = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(read("hostname").trim(), node.trim());
    }

    #[tokio::test]
    async fn create_writes_files_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let host_resolv = dir.path().join("host-resolv.conf");
        fs::write(&host_resolv, "nameserver 127.0.0.1\nnameserver 9.9.9.9\n").unwrap();
        let mut options = SpecOptions::new(dir.path().join("rootfs"), "web-1", "/wharf/web-1");
        options.pod_ip = Some("10.88.0.7".parse().unwrap());
        options.resolv_conf = Some(ResolvConf::Node(host_resolv));
        let (image, container) = true_image_and_container();
        let bundle = Bundle::create(dir.path().join("bundle"), &image, &container, &options)
            .await
            .unwrap();
        let b = bundle.dir();
        assert_eq!(fs::read_to_string(b.join("hostname")).unwrap(), "web-1\n");
        assert_eq!(
            fs::read_to_string(b.join("resolv.conf")).unwrap(),
            "nameserver 9.9.9.9\n"
        );
        assert!(
            fs::read_to_string(b.join("hosts"))
                .unwrap()
                .contains("10.88.0.7\tweb-1")
        );

        let spec = bundle.read_spec().await.unwrap();
        assert_eq!(spec.process.args, ["/bin/true"]);
        let binds: Vec<_> = spec
            .mounts
            .iter()
            .filter(|m| m.kind == "bind")
            .map(|m| (m.destination.as_str(), m.source.clone()))
            .collect();
        assert_eq!(
            binds,
            [
                ("/etc/hosts", b.join("hosts").display().to_string()),
                ("/etc/hostname", b.join("hostname").display().to_string()),
                (
                    "/etc/resolv.conf",
                    b.join("resolv.conf").display().to_string()
                ),
            ]
        );

        // A missing host resolv.conf gives an empty one; the bundle can be rewritten.
        options.resolv_conf = Some(ResolvConf::Node(dir.path().join("missing")));
        Bundle::create(b.to_path_buf(), &image, &container, &options)
            .await
            .unwrap();
        assert_eq!(fs::read_to_string(b.join("resolv.conf")).unwrap(), "");

        // Given text is written as it is, loopback servers included.
        let text = "nameserver 127.0.0.9\nsearch shop.svc svc\n";
        options.resolv_conf = Some(ResolvConf::Text(text.into()));
        Bundle::create(b.to_path_buf(), &image, &container, &options)
            .await
            .unwrap();
        assert_eq!(fs::read_to_string(b.join("resolv.conf")).unwrap(), text);

        // Removal keeps directories it did not write into.
        fs::create_dir(b.join("rootfs")).unwrap();
        bundle.remove().await.unwrap();
        assert!(!b.join("config.json").exists() && b.join("rootfs").exists());
        fs::remove_dir(b.join("rootfs")).unwrap();
        bundle.remove().await.unwrap();
        assert!(!b.exists());
    }
}
