//! The OCI runtime spec (`config.json`) for a container: the image's process
//! defaults, overridden by the pod's container and its effective security
//! context, under Wharf's defaults for namespaces, mounts, capabilities,
//! seccomp and cgroup limits (those of `runc spec`, Docker and containerd).

mod seccomp;
mod types;
pub(crate) mod user;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use wharf_api::{
    Container, EffectiveSecurity, SeccompProfileType, parse_cpu_millis, parse_memory_bytes,
};

use crate::RuncError;
pub use seccomp::runtime_default as runtime_default_seccomp;
pub use types::{
    Capabilities, Cpu, DeviceRule, Linux, Memory, Mount, Namespace, Pids, Process, Resources,
    Rlimit, Root, Seccomp, SeccompArg, Spec, SyscallRule, User,
};
/// containerd's default capability set (see [`wharf_api::DEFAULT_CAPABILITIES`]).
pub use wharf_api::DEFAULT_CAPABILITIES;

/// `PATH` when neither the image nor the container sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Tasks a container may run unless [`SpecOptions::pids_limit`] says otherwise:
/// enough for any sane service, few enough that a fork bomb stays contained.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// CFS period for CPU limits, in microseconds (Kubernetes' value).
pub const CPU_PERIOD_US: u64 = 100_000;

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
    /// new namespace with only loopback (the agent's own with `hostNetwork`).
    pub netns: Option<PathBuf>,
    /// cgroup path, e.g. `/wharf/<pod-uid>/<container>`.
    pub cgroups_path: String,
    /// `NAME=value` pairs added over the image's environment and under the
    /// container's own.
    pub extra_env: Vec<String>,
    /// Mounts the root filesystem read-only (also when the security
    /// context asks for it).
    pub read_only_rootfs: bool,
    /// User, groups, capabilities, seccomp, privilege and host namespaces,
    /// as the pod's and container's security contexts resolve.
    pub security: EffectiveSecurity,
    /// Maximum number of tasks.
    pub pids_limit: i64,
    /// What `/etc/resolv.conf` says; `None` writes an empty one.
    pub resolv_conf: Option<ResolvConf>,
    /// The pod's volumes as this container mounts them, in order.
    pub volumes: Vec<VolumeBind>,
}

/// Where a container's `/etc/resolv.conf` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvConf {
    /// The node's file at this path, copied; off the node's network its
    /// loopback name servers are left out, as they are unreachable from
    /// the pod's network namespace.
    Node(PathBuf),
    /// This text, as it is (the node agent's name server, or the pod's
    /// `dnsConfig`).
    Text(String),
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
    /// the default capabilities and seccomp profile, [`DEFAULT_PIDS_LIMIT`],
    /// the host's `/etc/resolv.conf`.
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
            security: EffectiveSecurity {
                capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
                ..EffectiveSecurity::default()
            },
            pids_limit: DEFAULT_PIDS_LIMIT,
            resolv_conf: Some(ResolvConf::Node(PathBuf::from("/etc/resolv.conf"))),
            volumes: Vec::new(),
        }
    }
}

impl SpecOptions {
    /// The host name the container's processes see: the pod's, or on the
    /// node's network (whose UTS namespace it shares) the node's own.
    pub fn seen_hostname(&self) -> String {
        match self.security.host_network {
            true => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .unwrap_or_default(),
            false => self.hostname.clone(),
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
    let security = &options.security;
    let user = process_user(&options.rootfs, image.user.as_deref(), security)
        .map_err(|m| RuncError::spec(name, m))?;
    if security.run_as_non_root && user.uid == 0 {
        return Err(RuncError::RunsAsRoot {
            container: name.to_string(),
        });
    }
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
    let caps = if security.privileged {
        // As Docker: "every capability" is every one the agent may pass on;
        // runc fails to start a process asking for more.
        within_bounding_set(&security.capabilities, own_bounding_set())
    } else {
        security.capabilities.clone()
    };
    let seccomp = match security.seccomp {
        _ if security.privileged => None,
        SeccompProfileType::Unconfined => None,
        // Refused at apply; never reaches a node.
        SeccompProfileType::Localhost => {
            return Err(RuncError::spec(
                name,
                "Localhost seccomp profiles are not supported",
            ));
        }
        SeccompProfileType::RuntimeDefault => Some(seccomp::runtime_default(&caps)),
    };
    let (masked_paths, readonly_paths) = if security.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        )
    };
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
            // binaries inside images keep working unless it is set false.
            no_new_privileges: security.no_new_privileges(),
        },
        root: Root {
            path: options.rootfs.clone(),
            readonly: options.read_only_rootfs || security.read_only_root_filesystem,
        },
        // runc sets a host name only in a UTS namespace of the container's own.
        hostname: match security.host_network {
            true => String::new(),
            false => options.hostname.clone(),
        },
        mounts: default_mounts(security.privileged),
        linux: Linux {
            namespaces: namespaces(options.netns.as_deref(), security),
            resources: resources(container, options.pids_limit, security.privileged)?,
            cgroups_path: options.cgroups_path.clone(),
            masked_paths,
            readonly_paths,
            seccomp,
        },
    };
    for volume in &options.volumes {
        spec.add_bind_mount(&volume.source, &volume.destination, volume.read_only);
    }
    Ok(spec)
}

/// This process's capability bounding set (`CapBnd`), or every capability
/// when it cannot be read.
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(u64::MAX)
}

/// The capabilities of `caps` whose bit is set in `bounding`
/// ([`wharf_api::ALL_CAPABILITIES`] is in number order).
fn within_bounding_set(caps: &[String], bounding: u64) -> Vec<String> {
    caps.iter()
        .filter(|cap| {
            wharf_api::ALL_CAPABILITIES
                .iter()
                .position(|c| c == cap)
                .is_some_and(|bit| bit < 64 && bounding & (1 << bit) != 0)
        })
        .cloned()
        .collect()
}

/// The image's user, or `runAsUser` (with the image's groups for that uid)
/// and `runAsGroup`; then `supplementalGroups` and `fsGroup` as extra groups.
fn process_user(
    rootfs: &Path,
    image_user: Option<&str>,
    security: &EffectiveSecurity,
) -> Result<user::ResolvedUser, String> {
    let uid = security.run_as_user.map(|uid| uid.to_string());
    let mut user = user::resolve(rootfs, uid.as_deref().or(image_user))?;
    if let Some(gid) = security.run_as_group {
        // The primary group the image's files gave is replaced, not kept as an extra one.
        let replaced = user.gid;
        user.additional_gids.retain(|&g| g != replaced);
        user.gid = gid;
    }
    for &gid in &security.supplemental_groups {
        if !user.additional_gids.contains(&gid) {
            user.additional_gids.push(gid);
        }
    }
    Ok(user)
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
    let mut env = vec![format!("HOSTNAME={}", options.seen_hostname())];
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

/// New pid, ipc, uts and mount namespaces (no pid or ipc one when the pod
/// shares the node's), and the pod's network namespace. A pod on the
/// node's network shares the node's UTS namespace too, as in Kubernetes,
/// and joins `netns` only when the node itself lives in a named one.
fn namespaces(netns: Option<&Path>, security: &EffectiveSecurity) -> Vec<Namespace> {
    let new = |kind: &str| Namespace {
        kind: kind.into(),
        path: None,
    };
    let mut namespaces = Vec::new();
    if !security.host_pid {
        namespaces.push(new("pid"));
    }
    if !security.host_ipc {
        namespaces.push(new("ipc"));
    }
    if !security.host_network {
        namespaces.push(new("uts"));
    }
    namespaces.push(new("mount"));
    if !security.host_network || netns.is_some() {
        namespaces.push(Namespace {
            kind: "network".into(),
            path: netns.map(Path::to_path_buf),
        });
    }
    namespaces
}

/// Limits become cgroup settings; requests only weigh CPU (`cpu.shares`),
/// as in Kubernetes.
fn resources(
    container: &Container,
    pids_limit: i64,
    privileged: bool,
) -> Result<Resources, RuncError> {
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
        // Deny all (runc appends its allow-list of the standard devices),
        // or, privileged, allow all.
        devices: vec![DeviceRule {
            allow: privileged,
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

/// The mounts of `runc spec`, which are those of Docker; privileged, `/sys`
/// and the cgroup tree are writable, as Docker's `--privileged` makes them.
fn default_mounts(privileged: bool) -> Vec<Mount> {
    let sys = if privileged {
        &["nosuid", "noexec", "nodev"][..]
    } else {
        &["nosuid", "noexec", "nodev", "ro"][..]
    };
    let cgroup = if privileged {
        &["nosuid", "noexec", "nodev", "relatime"][..]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"][..]
    };
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
        mount("/sys", "sysfs", "sysfs", sys),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup),
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
