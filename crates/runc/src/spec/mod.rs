//! The OCI runtime spec (`config.json`) for a container: the image's process
//! defaults, overridden by the pod's container, under Wharf's defaults for
//! namespaces, mounts, capabilities and cgroup limits (those of `runc spec`
//! and Docker).

mod types;
pub(crate) mod user;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use wharf_api::{Container, parse_cpu_millis, parse_memory_bytes};

use crate::RuncError;
pub use types::{
    Capabilities, Cpu, DeviceRule, Linux, Memory, Mount, Namespace, Pids, Process, Resources,
    Rlimit, Root, Spec, User,
};

/// `PATH` when neither the image nor the container sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Tasks a container may run unless [`SpecOptions::pids_limit`] says otherwise:
/// enough for any sane service, few enough that a fork bomb stays contained.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// CFS period for CPU limits, in microseconds (Kubernetes' value).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Docker's default capability set: what ordinary images expect root to be
/// able to do, without administration of the host.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the image's config says about its process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessDefaults {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`: `uid`, `uid:gid`, `name` or `name:group`.
    pub user: Option<String>,
}

/// Where and how the container runs: what neither image nor pod says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecOptions {
    /// The prepared root filesystem (an overlay mount, usually).
    pub rootfs: PathBuf,
    /// Host name inside the container (the pod's name).
    pub hostname: String,
    /// The pod's address, written to `/etc/hosts` with the host name.
    pub pod_ip: Option<IpAddr>,
    /// Network namespace to join, such as `/var/run/netns/x`; `None` gives a
    /// new namespace with only loopback.
    pub netns: Option<PathBuf>,
    /// cgroup path, e.g. `/wharf/<pod-uid>/<container>`.
    pub cgroups_path: String,
    /// `NAME=value` pairs added over the image's environment and under the
    /// container's own.
    pub extra_env: Vec<String>,
    /// Mounts the root filesystem read-only.
    pub read_only_rootfs: bool,
    /// Maximum number of tasks.
    pub pids_limit: i64,
    /// The `resolv.conf` to copy (its loopback name servers removed, as
    /// they are unreachable from the pod's network namespace); `None`
    /// writes an empty one.
    pub resolv_conf: Option<PathBuf>,
    /// The pod's volumes as this container mounts them, in order.
    pub volumes: Vec<VolumeBind>,
}

/// A host path bound into the container: a pod volume, or a part of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeBind {
    /// The host path (a directory or file the agent prepared).
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl SpecOptions {
    /// Options with Wharf's defaults: new network namespace, writable root,
    /// [`DEFAULT_PIDS_LIMIT`], the host's `/etc/resolv.conf`.
    pub fn new(
        rootfs: impl Into<PathBuf>,
        hostname: impl Into<String>,
        cgroups_path: impl Into<String>,
    ) -> SpecOptions {
        SpecOptions {
            rootfs: rootfs.into(),
            hostname: hostname.into(),
            pod_ip: None,
            netns: None,
            cgroups_path: cgroups_path.into(),
            extra_env: Vec::new(),
            read_only_rootfs: false,
            pids_limit: DEFAULT_PIDS_LIMIT,
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            volumes: Vec::new(),
        }
    }
}

/// Builds the runtime spec for `container` of an image with `image`
/// defaults. Reads the rootfs's `/etc/passwd` and `/etc/group` when the
/// user is given by name (small, blocking reads).
///
/// ```
/// use wharf_runc::spec::{self, ProcessDefaults, SpecOptions};
///
/// let image = ProcessDefaults {
///     entrypoint: vec!["/bin/server".into()],
///     cmd: vec!["--port=80".into()],
///     ..ProcessDefaults::default()
/// };
/// let container = wharf_api::Container {
///     name: "web".into(),
///     args: vec!["--port=8080".into()],
///     ..Default::default()
/// };
/// let options = SpecOptions::new("/var/lib/wharf/rootfs/web", "web-1", "/wharf/web-1");
/// let spec = spec::build(&image, &container, &options).unwrap();
/// assert_eq!(spec.process.args, ["/bin/server", "--port=8080"]);
/// assert_eq!(spec.process.cwd, "/");
/// ```
pub fn build(
    image: &ProcessDefaults,
    container: &Container,
    options: &SpecOptions,
) -> Result<Spec, RuncError> {
    let name = container.name.as_str();
    let args = process_args(image, container).map_err(|m| RuncError::spec(name, m))?;
    let user = user::resolve(&options.rootfs, image.user.as_deref())
        .map_err(|m| RuncError::spec(name, m))?;
    let env = process_env(image, container, options, user.home.as_deref())
        .map_err(|m| RuncError::spec(name, m))?;
    let cwd = container
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(RuncError::spec(
            name,
            format!("working directory {cwd:?} is not absolute"),
        ));
    }
    let caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let mut spec = Spec {
        oci_version: "1.0.2".into(),
        process: Process {
            terminal: false,
            user: User {
                uid: user.uid,
                gid: user.gid,
                additional_gids: user.additional_gids,
            },
            args,
            env,
            cwd,
            // Inheritable and ambient stay empty: a non-root process keeps no
            // capabilities across exec (the fix for CVE-2022-24769).
            capabilities: Capabilities {
                bounding: caps.clone(),
                effective: caps.clone(),
                permitted: caps,
                inheritable: Vec::new(),
                ambient: Vec::new(),
            },
            // Inherited from the agent (through shim and runc): raising a
            // hard limit needs CAP_SYS_RESOURCE, which sandboxed agents may
            // lack, and the agent's service unit is where limits belong.
            rlimits: Vec::new(),
            // Kubernetes' allowPrivilegeEscalation defaults to true: setuid
            // binaries inside images keep working.
            no_new_privileges: false,
        },
        root: Root {
            path: options.rootfs.clone(),
            readonly: options.read_only_rootfs,
        },
        hostname: options.hostname.clone(),
        mounts: default_mounts(),
        linux: Linux {
            namespaces: namespaces(options.netns.as_deref()),
            resources: resources(container, options.pids_limit)?,
            cgroups_path: options.cgroups_path.clone(),
            masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        },
    };
    for volume in &options.volumes {
        spec.add_bind_mount(&volume.source, &volume.destination, volume.read_only);
    }
    Ok(spec)
}

/// Kubernetes' rule: `command` replaces the entrypoint and drops the image's
/// cmd; `args` replaces the cmd.
fn process_args(image: &ProcessDefaults, container: &Container) -> Result<Vec<String>, String> {
    let args: Vec<String> = match (container.command.is_empty(), container.args.is_empty()) {
        (false, _) => container
            .command
            .iter()
            .chain(&container.args)
            .cloned()
            .collect(),
        (true, false) => image
            .entrypoint
            .iter()
            .chain(&container.args)
            .cloned()
            .collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    match args.first() {
        None => Err("no command: the image has no entrypoint or cmd, and the container sets no command or args".into()),
        Some(program) if program.is_empty() => Err("the command's program is empty".into()),
        Some(_) => Ok(args),
    }
}

/// `HOSTNAME`, then the image's variables, the extra ones, the container's:
/// later ones replace earlier ones of the same name, in place.
fn process_env(
    image: &ProcessDefaults,
    container: &Container,
    options: &SpecOptions,
    home: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut env = vec![format!("HOSTNAME={}", options.hostname)];
    for entry in image.env.iter().chain(&options.extra_env) {
        set_env(&mut env, entry.clone());
    }
    if !container.env_from.is_empty() {
        return Err("envFrom must be resolved into env by the node first".into());
    }
    for var in &container.env {
        if var.name.is_empty() || var.name.contains('=') {
            return Err(format!("invalid environment variable name {:?}", var.name));
        }
        if var.value_from.is_some() {
            return Err(format!(
                "the value of {} must be resolved by the node first",
                var.name
            ));
        }
        set_env(&mut env, format!("{}={}", var.name, var.value));
    }
    if !env.iter().any(|e| env_name(e) == "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| env_name(e) == "HOME") {
        env.push(format!("HOME={}", home.unwrap_or("/")));
    }
    Ok(env)
}

fn env_name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name)
}

fn set_env(env: &mut Vec<String>, entry: String) {
    let name = env_name(&entry);
    match env.iter_mut().find(|e| env_name(e) == name) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

fn namespaces(netns: Option<&Path>) -> Vec<Namespace> {
    let new = |kind: &str| Namespace {
        kind: kind.into(),
        path: None,
    };
    vec![
        new("pid"),
        new("ipc"),
        new("uts"),
        new("mount"),
        Namespace {
            kind: "network".into(),
            path: netns.map(Path::to_path_buf),
        },
    ]
}

/// Limits become cgroup settings; requests only weigh CPU (`cpu.shares`),
/// as in Kubernetes.
fn resources(container: &Container, pids_limit: i64) -> Result<Resources, RuncError> {
    let name = container.name.as_str();
    let limits = &container.resources.limits;
    let requests = &container.resources.requests;
    let quantity = |r: Result<u64, wharf_api::ObjectError>| {
        r.map_err(|e| RuncError::spec(name, e.to_string()))
    };

    let memory_limit = match &limits.memory {
        Some(text) => quantity(parse_memory_bytes("resources.limits.memory", text))?,
        None => 0,
    };
    let cpu_limit = match &limits.cpu {
        Some(text) => quantity(parse_cpu_millis("resources.limits.cpu", text))?,
        None => 0,
    };
    // Kubernetes defaults the request to the limit.
    let cpu_request = match &requests.cpu {
        Some(text) => quantity(parse_cpu_millis("resources.requests.cpu", text))?,
        None => cpu_limit,
    };

    let memory = (memory_limit > 0).then(|| Memory {
        limit: Some(i64::try_from(memory_limit).unwrap_or(i64::MAX)),
    });
    let cpu = (cpu_limit > 0 || cpu_request > 0).then(|| Cpu {
        // The kernel's range for shares is 2..=262144.
        shares: (cpu_request > 0).then(|| (cpu_request * 1024 / 1000).clamp(2, 262_144)),
        // A quota under 1ms is refused by the kernel.
        quota: (cpu_limit > 0).then(|| {
            i64::try_from(cpu_limit * CPU_PERIOD_US / 1000)
                .unwrap_or(i64::MAX)
                .max(1000)
        }),
        period: (cpu_limit > 0).then_some(CPU_PERIOD_US),
    });
    Ok(Resources {
        // Deny all; runc appends its allow-list of the standard devices.
        devices: vec![DeviceRule {
            allow: false,
            access: "rwm".into(),
        }],
        memory,
        cpu,
        pids: (pids_limit > 0).then_some(Pids { limit: pids_limit }),
    })
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: destination.into(),
        kind: kind.into(),
        source: source.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// The mounts of `runc spec`, which are those of Docker.
fn default_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

impl Spec {
    /// Adds a bind mount of the host's `source` at `destination`.
    pub fn add_bind_mount(&mut self, source: &Path, destination: &str, read_only: bool) {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if read_only {
            options.push("ro".into());
        }
        self.mounts.push(Mount {
            destination: destination.into(),
            kind: "bind".into(),
            source: source.display().to_string(),
            options,
        });
    }

    /// The namespace of `kind`, if the container has one.
    pub fn namespace(&self, kind: &str) -> Option<&Namespace> {
        self.linux.namespaces.iter().find(|n| n.kind == kind)
    }
}

#[cfg(test)]
mod tests;
