//! Pod volumes on the node, and the containers' mounts of them.
//!
//! ```text
//! <pod dir>/volumes/<name>        emptyDir: a directory (0777), or a tmpfs (medium: Memory)
//!                                 hostPath: a bind mount of the checked node path
//!                                 persistentVolumeClaim: a bind mount of the
//!                                 claim's directory ([`claim_dirs`](super::claim_dirs))
//!                                 configMap, secret, downwardAPI: files kept by
//!                                 [`atomic_writer`]
//!                                 (a secret's on a tmpfs, never on disk)
//! <container dir>/volumes/<i>     mount i's subPath, bound from inside its volume
//! ```
//!
//! configMap, secret and downwardAPI volumes are mounted read-only and
//! their files are rewritten when the object or the pod changes; a subPath mount of one binds the
//! file of that moment and so does not follow updates (as in Kubernetes).
//!
//! Paths that a container or a node user may change are never followed by
//! name: a hostPath is opened without following any symlink and a subPath
//! is resolved with the volume as its root (`openat2`), and what was
//! opened is bound by its file descriptor, so a link swapped in between
//! the check and the mount cannot redirect it. runc then binds only these
//! agent-owned mount points. Everything here blocks: callers run it off
//! the async workers.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use wharf_api::{
    ConfigRef, Container, EmptyDirVolume, HostPathVolume, Pod, ProjectedFile, Resources, Volume,
};
use wharf_runc::spec::VolumeBind;

use super::env::ConfigObjects;
use super::{atomic_writer, mounts};

/// A container's mount of a pod volume, as its launch carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSource {
    /// The volume's directory on the node (`<pod dir>/volumes/<name>`).
    pub root: PathBuf,
    /// The part of the volume to mount instead of its root.
    pub sub_path: Option<String>,
    /// Absolute path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Where volume `name` of the pod in `pod_dir` lives.
fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// The mounts of `container` of the pod's `volumes`, in its order; the
/// files of configMap, secret and downwardAPI volumes are the agent's, so
/// read-only, and a claim volume marked `readOnly` is read-only in every
/// container.
pub(super) fn sources(
    pod_dir: &Path,
    container: &Container,
    volumes: &[Volume],
) -> Vec<VolumeSource> {
    container
        .volume_mounts
        .iter()
        .map(|mount| {
            let read_only_volume = volumes.iter().any(|v| {
                v.name == mount.name
                    && (v.is_projected()
                        || v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.read_only))
            });
            VolumeSource {
                root: volume_dir(pod_dir, &mount.name),
                sub_path: mount.sub_path.clone(),
                destination: mount.mount_path.clone(),
                read_only: mount.read_only || read_only_volume,
            }
        })
        .collect()
}

/// Makes every volume of the pod ready. Idempotent: a volume already
/// mounted (by this agent run or an earlier one) is kept with its data.
/// With the pod's `fs_group`, emptyDir and claim volumes belong to that
/// group and keep it for what is made in them, as kubelet sets a volume's
/// ownership. `claims` holds the directory of each claim the pod names.
pub(super) fn prepare(
    pod_dir: &Path,
    volumes: &[Volume],
    fs_group: Option<u32>,
    claims: &HashMap<String, PathBuf>,
) -> Result<(), String> {
    for volume in volumes {
        let dir = volume_dir(pod_dir, &volume.name);
        let prepared = match (&volume.empty_dir, &volume.host_path) {
            (Some(empty), _) => prepare_empty_dir(&dir, empty, fs_group),
            (None, Some(host)) => prepare_host_path(&dir, host),
            (None, None) if volume.persistent_volume_claim.is_some() => {
                let claim = volume.persistent_volume_claim.as_ref();
                let name = claim.map(|c| c.claim_name.as_str()).unwrap_or_default();
                match claims.get(name) {
                    Some(claim_dir) => prepare_claim(&dir, claim_dir, fs_group),
                    None => Err(format!(
                        "persistentvolumeclaim {name:?} has no directory here"
                    )),
                }
            }
            // Written by `project`, with the objects' data.
            (None, None) if volume.is_projected() => Ok(()),
            // Validation lets no other volume through.
            (None, None) => Err("the volume has no source Wharf supports".into()),
        };
        prepared.map_err(|e| format!("volume {}: {e}", volume.name))?;
    }
    Ok(())
}

/// Size of a secret volume's tmpfs: two versions of a Secret of the
/// largest size (1 MiB) during a swap, and room for file overhead.
const SECRET_VOLUME_BYTES: u64 = 4 << 20;

/// The files of each configMap, secret and downwardAPI volume of `pod`,
/// from `objects` and the pod itself (`allocatable` standing in for
/// missing limits). `Err` says what is missing.
pub(super) fn projections(
    pod: &Pod,
    objects: &ConfigObjects,
    allocatable: Resources,
) -> Result<Vec<(Volume, Vec<ProjectedFile>)>, String> {
    let mut out = Vec::new();
    for volume in &pod.spec.volumes {
        let files = if let Some(downward) = &volume.downward_api {
            downward.files(pod, allocatable)
        } else {
            let (wanted, projection) = match (&volume.config_map, &volume.secret) {
                (Some(c), _) => (ConfigRef::ConfigMap(c.name.clone()), c.projection()),
                (None, Some(s)) => (ConfigRef::Secret(s.secret_name.clone()), s.projection()),
                (None, None) => continue,
            };
            projection.files(&wanted.to_string(), objects.entries(&wanted))
        };
        let files = files.map_err(|e| format!("volume {}: {e}", volume.name))?;
        out.push((volume.clone(), files));
    }
    Ok(out)
}

/// Writes a configMap, secret or downwardAPI volume's files (a secret's
/// on a tmpfs mounted first), owned by group `fs_group` when set; says
/// whether they changed.
pub(super) fn project(
    pod_dir: &Path,
    volume: &Volume,
    files: &[ProjectedFile],
    fs_group: Option<u32>,
) -> Result<bool, String> {
    let dir = volume_dir(pod_dir, &volume.name);
    let on_tmpfs = || -> Result<(), String> {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        if mounts::is_mount_point(&dir) {
            return Ok(());
        }
        let options = format!("size={SECRET_VOLUME_BYTES},mode=0755");
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )
        .map_err(|e| format!("mounting a tmpfs at {}: {e}", dir.display()))
    };
    if volume.secret.is_some() {
        on_tmpfs().map_err(|e| format!("volume {}: {e}", volume.name))?;
    }
    // With an fsGroup the files belong to it and its members may read
    // them, as kubelet sets a volume's ownership.
    let files: Vec<ProjectedFile> = files
        .iter()
        .map(|file| ProjectedFile {
            mode: file.mode | if fs_group.is_some() { 0o040 } else { 0 },
            ..file.clone()
        })
        .collect();
    atomic_writer::write(&dir, &files, fs_group).map_err(|e| format!("volume {}: {e}", volume.name))
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// A directory everyone in the pod may write (as in Kubernetes, whatever
/// user the containers run as); in memory, a tmpfs of the volume's size.
/// With `fs_group` it belongs to that group, and setgid makes what is
/// created in it belong to the group too.
fn prepare_empty_dir(
    dir: &Path,
    empty: &EmptyDirVolume,
    fs_group: Option<u32>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    if empty.in_memory() && !mounts::is_mount_point(dir) {
        let bytes = empty.memory_bytes("sizeLimit").map_err(|e| e.to_string())?;
        let options = format!("size={bytes},mode=0777");
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| format!("mounting a tmpfs at {}: {e}", dir.display()))?;
    }
    share_with_pod(dir, fs_group)
}

/// Lets everyone in the pod write `dir`; with `fs_group` it belongs to
/// that group, and setgid makes what is created in it belong to the group.
fn share_with_pod(dir: &Path, fs_group: Option<u32>) -> Result<(), String> {
    let mode = match fs_group {
        Some(gid) => {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|e| io(dir, e))?;
            0o2777
        }
        None => 0o777,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| io(dir, e))
}

/// Binds the claim's directory (made by the agent, so its path is the
/// agent's) at `dir`, shared with the pod as an emptyDir is.
fn prepare_claim(dir: &Path, claim_dir: &Path, fs_group: Option<u32>) -> Result<(), String> {
    share_with_pod(claim_dir, fs_group)?;
    if mounts::is_mount_point(dir) {
        return Ok(());
    }
    let opened = nix::fcntl::open(
        claim_dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(claim_dir, e))?;
    bind_fd(&opened, dir)
}

/// Binds the node path, checked against its `type`, at `dir`.
fn prepare_host_path(dir: &Path, host: &HostPathVolume) -> Result<(), String> {
    if mounts::is_mount_point(dir) {
        return Ok(());
    }
    let kind = host.kind.as_deref().unwrap_or_default();
    let target = open_host_path(&host.path, kind).map_err(|e| format!("hostPath {e}"))?;
    bind_fd(&target, dir)
}

/// Opens the node's `path` (`O_PATH`) without following a symlink in any
/// component, making it first for the `...OrCreate` types, and checks it
/// is what `kind` says.
fn open_host_path(path: &str, kind: &str) -> Result<OwnedFd, String> {
    let named = Path::new(path);
    let create_dirs = matches!(kind, "DirectoryOrCreate" | "FileOrCreate");
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some((last, parents)) = components.split_last() else {
        return Err(format!("{path}: not a path below /"));
    };
    let mut dir = nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| io(named, e))?;
    for component in parents {
        dir = open_child(&dir, component, true, create_dirs).map_err(|e| io(named, e))?;
    }
    let opened = match kind {
        "DirectoryOrCreate" => open_child(&dir, last, true, true),
        "FileOrCreate" => match open_child(&dir, last, false, false) {
            Err(Errno::ENOENT) => create_file(&dir, last),
            other => other,
        },
        _ => open_child(&dir, last, false, false),
    };
    let fd = match opened {
        Err(Errno::ENOENT) => return Err(format!("{path} does not exist")),
        Err(Errno::ELOOP) => return Err(format!("{path}: symlinks are not followed")),
        Err(e) => return Err(io(named, e)),
        Ok(fd) => fd,
    };
    let file = File::from(fd);
    let file_type = file.metadata().map_err(|e| io(named, e))?.file_type();
    let matches = match kind {
        "Directory" | "DirectoryOrCreate" => file_type.is_dir(),
        "File" | "FileOrCreate" => file_type.is_file(),
        "Socket" => file_type.is_socket(),
        "CharDevice" => file_type.is_char_device(),
        "BlockDevice" => file_type.is_block_device(),
        _ => true,
    };
    if !matches {
        return Err(format!("{path} is not of type {kind}"));
    }
    Ok(file.into())
}

/// Opens `name` in `dir` (`O_PATH`), never through a symlink; a missing
/// directory is made when `create` says so.
fn open_child(dir: &OwnedFd, name: &str, directory: bool, create: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if directory {
        flags |= OFlag::O_DIRECTORY;
    }
    let how = || {
        OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
    };
    match openat2(dir, name, how()) {
        Err(Errno::ENOENT) if create => {
            match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => openat2(dir, name, how()),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

/// Makes an empty file `name` in `dir` (0644) and opens it (`O_PATH`).
fn create_file(dir: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(0o644))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(dir, name, how) {
        Ok(_) | Err(Errno::EEXIST) => open_child(dir, name, false, false),
        Err(e) => Err(e),
    }
}

/// Binds what `fd` names at `target`, made first as an empty directory or
/// file to match.
fn bind_fd(fd: &OwnedFd, target: &Path) -> Result<(), String> {
    let is_dir = File::from(fd.try_clone().map_err(|e| io(target, e))?)
        .metadata()
        .map_err(|e| io(target, e))?
        .is_dir();
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    let made = if is_dir {
        std::fs::create_dir(target)
    } else {
        File::create_new(target).map(drop)
    };
    match made {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(target, e)),
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding at {}: {e}", target.display()))
}

/// Opens `sub_path` inside the volume at `root`, resolving every component
/// (symlinks and `..` included) with `root` as `/`, so nothing outside the
/// volume is reached; missing directories are made, as kubelet does.
fn open_sub_path(root: &Path, sub_path: &str) -> Result<OwnedFd, String> {
    let named = root.join(sub_path);
    let how = |flags: OFlag| {
        OpenHow::new()
            .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let volume = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| io(root, e))?;
    match openat2(&volume, sub_path, how(OFlag::empty())) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(io(&named, e)),
    }
    // Made directories get the volume's own mode, as kubelet gives them,
    // so a subPath of an emptyDir is writable by any user.
    let mode = std::fs::metadata(root)
        .map_err(|e| io(root, e))?
        .permissions()
        .mode();
    let mode = Mode::from_bits_truncate(mode & 0o7777);
    let mut dir = volume;
    for component in sub_path.split('/').filter(|c| !c.is_empty()) {
        dir = match openat2(&dir, component, how(OFlag::O_DIRECTORY)) {
            Err(Errno::ENOENT) => make_dir(&dir, component, mode).map_err(|e| io(&named, e))?,
            other => other.map_err(|e| io(&named, e))?,
        };
    }
    Ok(dir)
}

/// Makes directory `name` in `dir` with `mode` (whatever the umask) and
/// opens it, resolving inside `dir` only: the chmod goes through the
/// opened directory, never through a link a container put in its place.
fn make_dir(dir: &OwnedFd, name: &str, mode: Mode) -> Result<OwnedFd, Errno> {
    let made = match nix::sys::stat::mkdirat(dir, name, mode) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(e),
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let opened = openat2(dir, name, how)?;
    if made {
        nix::sys::stat::fchmod(&opened, mode)?;
    }
    Ok(opened)
}

/// The binds of a container's mounts for runc. Each subPath is resolved
/// inside its volume and bound at `<container dir>/volumes/<i>` (the binds
/// of an earlier run are removed first).
pub(super) fn binds(
    container_dir: &Path,
    sources: &[VolumeSource],
) -> Result<Vec<VolumeBind>, String> {
    let subs = container_dir.join("volumes");
    mounts::remove_unmounted(&subs)?;
    let mut binds = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let host = match &source.sub_path {
            None => source.root.clone(),
            Some(sub_path) => {
                let fd = open_sub_path(&source.root, sub_path)
                    .map_err(|e| format!("subPath {sub_path}: {e}"))?;
                let target = subs.join(i.to_string());
                bind_fd(&fd, &target)?;
                target
            }
        };
        binds.push(VolumeBind {
            source: host,
            destination: source.destination.clone(),
            read_only: source.read_only,
        });
    }
    Ok(binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn an_empty_dir_belongs_to_the_pods_fs_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let empty: EmptyDirVolume = serde_json::from_str("{}").unwrap();
        let plain = dir.path().join("plain");
        prepare_empty_dir(&plain, &empty, None).unwrap();
        assert_eq!(std::fs::metadata(&plain).unwrap().mode() & 0o7777, 0o777);
        let shared = dir.path().join("shared");
        prepare_empty_dir(&shared, &empty, Some(4321)).unwrap();
        let meta = std::fs::metadata(&shared).unwrap();
        assert_eq!(meta.gid(), 4321);
        assert_eq!(meta.mode() & 0o7777, 0o2777, "group-writable and setgid");
        // What is made inside takes the group.
        std::fs::write(shared.join("file"), "x").unwrap();
        assert_eq!(std::fs::metadata(shared.join("file")).unwrap().gid(), 4321);
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volume");
        std::fs::create_dir_all(root.join("data/app")).unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("data/up")).unwrap();
        std::os::unix::fs::symlink("/data/app", root.join("inside")).unwrap();
        let root = root.canonicalize().unwrap();

        let fd = open_sub_path(&root, "data/app").unwrap();
        assert_eq!(path_of(&fd), root.join("data/app"));
        // An absolute link resolves against the volume, not the node.
        let fd = open_sub_path(&root, "inside").unwrap();
        assert_eq!(path_of(&fd), root.join("data/app"));
        // `..` stops at the volume's root.
        let fd = open_sub_path(&root, "data/up").unwrap();
        assert_eq!(path_of(&fd), root);
        // A link to a node directory names one inside the volume instead
        // (absent here), and nothing outside is reached or made.
        assert!(open_sub_path(&root, "escape/secret").is_err());
        assert!(open_sub_path(&root, "escape/new").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        // Missing directories are made, with the volume's mode.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let fd = open_sub_path(&root, "logs/web").unwrap();
        assert_eq!(path_of(&fd), root.join("logs/web"));
        for made in ["logs", "logs/web"] {
            let mode = std::fs::metadata(root.join(made))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o777, "{made}");
        }
    }

    #[test]
    fn host_paths_are_checked_against_their_type_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("d")).unwrap();
        std::fs::write(base.join("f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", base.join("link")).unwrap();
        let at = |name: &str| base.join(name).display().to_string();

        assert!(open_host_path(&at("d"), "Directory").is_ok());
        assert!(open_host_path(&at("f"), "File").is_ok());
        assert!(open_host_path(&at("f"), "").is_ok());
        let err = open_host_path(&at("f"), "Directory").unwrap_err();
        assert!(err.contains("not of type Directory"), "{err}");
        let err = open_host_path(&at("d"), "Socket").unwrap_err();
        assert!(err.contains("not of type Socket"), "{err}");
        let err = open_host_path(&at("missing"), "Directory").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        for kind in ["", "Directory", "DirectoryOrCreate"] {
            let err = open_host_path(&at("link"), kind).unwrap_err();
            assert!(err.contains("symlinks"), "{kind}: {err}");
            let err = open_host_path(&at("link/ssl"), kind).unwrap_err();
            assert!(
                !err.is_empty(),
                "{kind}: a link in a parent is not followed"
            );
        }
        let made = open_host_path(&at("new/dir"), "DirectoryOrCreate").unwrap();
        assert_eq!(path_of(&made), base.join("new/dir"));
        let made = open_host_path(&at("new/file"), "FileOrCreate").unwrap();
        assert_eq!(path_of(&made), base.join("new/file"));
        assert!(base.join("new/file").is_file());
    }
}
