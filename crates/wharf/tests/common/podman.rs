//! `podman` with storage, run state, configuration and credentials of its
//! own in a temporary directory, so it neither reads nor changes the
//! machine's containers state: vfs storage under `--root`/`--runroot`,
//! libpod state under `--tmpdir`, its own `registries.conf`, `storage.conf`
//! and `containers.conf` (CNI network backend: netavark would create
//! `/run/containers/networks`), and `REGISTRY_AUTH_FILE` for logins.
//! Podman 4.3 keeps its blob info cache in `/var/lib/containers/cache`
//! whatever `--root` says, so each command runs in a private mount
//! namespace (`unshare --mount`) with a directory of ours bound there.
//!
//! Only image commands are used (pull, tag, push, login): no container runs,
//! so no cgroup manager is needed; `--cgroup-manager cgroupfs` and
//! `--events-backend file` keep podman from asking systemd or journald.

use std::path::PathBuf;
use std::process::Output;

use tokio::process::Command;

use super::command::{checked, output, output_with_stdin};
use super::registry::Credentials;

const SYSTEM_DIR: &str = "/var/lib/containers";

/// A private podman installation; its directory goes away on drop.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Creates the directories and configuration files podman needs.
    pub fn new() -> Podman {
        // Lowercase, as podman names images pulled from `oci:` layouts after
        // their path and image names must be lowercase.
        let dir = tempfile::Builder::new()
            .prefix(&format!("wharf-podman-{}", super::api::random_suffix()))
            .rand_bytes(0)
            .tempdir()
            .expect("creating the podman directory");
        for sub in ["xdg", "tmp", "libpod", "net", "var-lib", "cni-plugins"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("creating podman directories");
        }
        let path = |name: &str| dir.path().join(name).display().to_string();
        let files = [
            ("auth.json", r#"{"auths":{}}"#.to_string()),
            ("registries.conf", String::new()),
            (
                "storage.conf",
                format!(
                    "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                    path("run"),
                    path("root")
                ),
            ),
            // Layers on their way in or out are spooled in `tmp`, not /var/tmp;
            // no CNI plugin of the machine is needed (nor looked for).
            (
                "containers.conf",
                format!(
                    "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
                     [engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
                     image_copy_tmp_dir = \"{}\"\n",
                    path("cni-plugins"),
                    path("tmp")
                ),
            ),
        ];
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content)
                .unwrap_or_else(|e| panic!("writing podman's {name}: {e}"));
        }
        Podman { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `podman` command with the private state.
    pub fn command(&self) -> Command {
        // Where podman writes whatever its flags say: `/var/lib/containers`,
        // or `/var/lib` on a machine that has no such directory yet.
        let system_dir = if std::path::Path::new(SYSTEM_DIR).is_dir() {
            SYSTEM_DIR
        } else {
            "/var/lib"
        };
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(self.path("var-lib"))
            .arg(system_dir)
            .arg("podman")
            .env("XDG_RUNTIME_DIR", self.path("xdg"))
            .env("TMPDIR", self.path("tmp"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("run"))
            .arg("--tmpdir")
            .arg(self.path("libpod"))
            .arg("--network-config-dir")
            .arg(self.path("net"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        command
    }

    /// `podman args...`; panics unless it succeeds.
    pub async fn run(&self, args: &[&str]) -> Output {
        checked(self.command().args(args)).await
    }

    /// `podman args...`, whatever its outcome.
    pub async fn try_run(&self, args: &[&str]) -> Output {
        output(self.command().args(args)).await
    }

    /// `podman login --tls-verify=false -u USER --password-stdin REGISTRY`,
    /// whatever its outcome.
    pub async fn login(&self, registry: &str, credentials: &Credentials) -> Output {
        output_with_stdin(
            self.command()
                .args(["login", "--tls-verify=false", "--username"])
                .arg(&credentials.user)
                .arg("--password-stdin")
                .arg(registry),
            credentials.password.as_bytes(),
        )
        .await
    }

    /// A path inside the private directory (e.g. for `--digestfile`, or an
    /// OCI layout whose path must be lowercase).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path(name)
    }
}
