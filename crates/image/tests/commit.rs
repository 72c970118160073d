//! Commit: a real overlayfs upper directory snapshotted into a layer tar
//! (checked entry by entry, then applied with the crate's own unpack and
//! compared with the merged view), compressed, and pushed over its base to
//! an in-process Wharf registry, then pulled back by a fresh cache.
//!
//! Needs root (overlay mounts, whiteouts, trusted xattrs) and `mount`.

mod common;
mod registry;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::{Layer, blob, sha256};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use registry::{ADMIN_PASSWORD, Image, Wharf, manifest_for};
use serde_json::{Value, json};
use wharf_image::{
    CommitPush, Compression, ConfigChanges, ImageError, ImageRef, ImageStore, ImageStoreOptions,
    NewLayer, Platform, PullPolicy, PullProgress, RegistryCredentials, Snapshot, UnpackLimits,
    UnpackOptions, measure_upper, unpack_layer,
};
use wharf_testkit::prereq::{require_root, require_root_and};

const NO_PROGRESS: &(dyn Fn(u64, u64) + Sync) = &|_, _| {};
const NO_PULL_PROGRESS: &(dyn Fn(PullProgress) + Sync) = &|_| {};
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// A version 2 `security.capability` granting cap_net_bind_service.
const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const CREATED: &str = "2026-12-07T08:00:00Z";

async fn open_store(dir: &Path) -> ImageStore {
    ImageStore::open(dir, ImageStoreOptions::default())
        .await
        .unwrap()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An overlay mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn overlay(lowers: &[&Path], upper: Option<(&Path, &Path)>, target: &Path) -> Mount {
        fs::create_dir_all(target).unwrap();
        let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut options = format!("lowerdir={}", lowers.join(":"));
        if let Some((upper, work)) = upper {
            options.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &options,
                target.to_str().unwrap(),
            ],
        );
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One tar entry as the test looks at it.
#[derive(Debug)]
struct Entry {
    /// `<type> <path>[ -> <link>]`.
    line: String,
    mode: u32,
    uid: u64,
    gid: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    data: Vec<u8>,
}

/// The whole uncompressed tar a snapshot makes.
fn tar_of(snapshot: &Snapshot) -> Vec<u8> {
    let mut tar = Vec::new();
    snapshot.tar_reader().read_to_end(&mut tar).unwrap();
    tar
}

fn read_tar(snapshot: &Snapshot) -> Vec<Entry> {
    let tar = tar_of(snapshot);
    let mut archive = tar::Archive::new(&tar[..]);
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Fifo => "fifo",
            tar::EntryType::Char => "char",
            other => panic!("unexpected entry type {other:?}"),
        };
        let mut line = format!("{kind} {}", entry.path().unwrap().display());
        if let Some(link) = entry.link_name().unwrap() {
            line.push_str(&format!(" -> {}", link.display()));
        }
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for extension in extensions {
                let extension = extension.unwrap();
                if let Some(name) = extension.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), extension.value_bytes().to_vec());
                }
            }
        }
        let header = entry.header();
        let (mode, uid, gid) = (
            header.mode().unwrap(),
            header.uid().unwrap(),
            header.gid().unwrap(),
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.push(Entry {
            line,
            mode,
            uid,
            gid,
            xattrs,
            data,
        });
    }
    entries
}

/// Everything a container sees under `root` (but `skip`), path by path:
/// type, mode, owner, content or link target, and xattrs.
fn describe(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full).unwrap();
        if !rel.as_os_str().is_empty() {
            let kind = meta.file_type();
            let what = if kind.is_dir() {
                "dir".to_string()
            } else if kind.is_symlink() {
                format!("symlink {}", fs::read_link(&full).unwrap().display())
            } else if kind.is_fifo() {
                "fifo".to_string()
            } else if kind.is_char_device() {
                format!("char {:x}", meta.rdev())
            } else {
                format!("file {:?}", sha256(&fs::read(&full).unwrap()))
            };
            let mut xattrs: Vec<String> = xattr::list(&full)
                .unwrap()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("trusted.overlay."))
                .map(|n| format!("{n}={:?}", xattr::get(&full, &n).unwrap()))
                .collect();
            xattrs.sort();
            tree.insert(
                rel.display().to_string(),
                format!(
                    "{what} mode {:o} owner {}:{} xattrs {xattrs:?}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
        if meta.is_dir() {
            for child in fs::read_dir(&full).unwrap() {
                let child = rel.join(child.unwrap().file_name());
                if !skip.iter().any(|s| Path::new(s) == child) {
                    pending.push(child);
                }
            }
        }
    }
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_a_real_overlay_holds_exactly_the_changes_and_reapplies_to_the_same_view() {
    if !require_root_and(
        "snapshot_of_a_real_overlay_holds_exactly_the_changes",
        &["mount", "umount"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| dir.path().join(p);
    let (lower, upper, work, merged) = (at("lower"), at("upper"), at("work"), at("merged"));
    for d in [&upper, &work] {
        fs::create_dir_all(d).unwrap();
    }
    for (path, content) in [
        ("etc/conf", "old"),
        ("etc/hostname", "base"),
        ("gone.txt", "deleted by the container"),
        ("keep/a", "deleted with its directory"),
        ("olddir/x", "hidden by the opaque dir"),
        ("olddir/sub/y", "hidden too"),
        ("bin/tool", "#!tool"),
    ] {
        let full = lower.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    let _mount = Mount::overlay(&[&lower], Some((&upper, &work)), &merged);
    let m = |p: &str| merged.join(p);
    fs::write(m("new.txt"), b"new content").unwrap();
    fs::set_permissions(m("new.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(m("new.txt"), Some(1234), Some(5678)).unwrap();
    xattr::set(m("new.txt"), "user.note", b"hello").unwrap();
    fs::write(m("etc/conf"), b"changed").unwrap();
    fs::remove_file(m("gone.txt")).unwrap();
    fs::remove_dir_all(m("keep")).unwrap();
    fs::remove_dir_all(m("olddir")).unwrap();
    fs::create_dir(m("olddir")).unwrap();
    fs::write(m("olddir/fresh"), b"fresh").unwrap();
    std::os::unix::fs::symlink("new.txt", m("link")).unwrap();
    fs::hard_link(m("new.txt"), m("hard.txt")).unwrap();
    nix::unistd::mkfifo(&m("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
    xattr::set(m("bin/tool"), "security.capability", &CAPABILITY).unwrap();
    mknod(
        &m("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    fs::set_permissions(m("null"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::write(m("big.bin"), vec![7u8; 100_001]).unwrap();
    let long = format!("deep/{}", "n".repeat(120));
    fs::create_dir(m("deep")).unwrap();
    fs::write(m(&long), b"long name").unwrap();
    // The agent's own files and mounts: left out.
    fs::write(m("etc/resolv.conf"), b"nameserver 10.0.0.1").unwrap();
    fs::create_dir_all(m("mnt/vol")).unwrap();
    fs::write(m("mnt/vol/data"), b"volume").unwrap();

    let store = open_store(&at("cache")).await;
    let exclude = vec![PathBuf::from("/etc/resolv.conf"), PathBuf::from("/mnt/vol")];
    let measured = measure_upper(&upper, &exclude).unwrap();
    let snapshot = store.snapshot_upper(&upper, &exclude).await.unwrap();
    let entries = read_tar(&snapshot);
    let lines: Vec<&str> = entries.iter().map(|e| e.line.as_str()).collect();
    let long_line = format!("file {long}");
    assert_eq!(
        lines,
        [
            "file big.bin",
            "dir bin/",
            "file bin/tool",
            "dir deep/",
            &long_line,
            "dir etc/",
            "file etc/conf",
            "file .wh.gone.txt",
            "file hard.txt",
            "file .wh.keep",
            "symlink link -> new.txt",
            "dir mnt/",
            "hardlink new.txt -> hard.txt",
            "char null",
            "dir olddir/",
            "file olddir/.wh..wh..opq",
            "file olddir/fresh",
            "fifo pipe",
        ]
    );
    let entry = |line: &str| entries.iter().find(|e| e.line == line).unwrap();
    let hard = entry("file hard.txt");
    assert_eq!((hard.mode, hard.uid, hard.gid), (0o640, 1234, 5678));
    assert_eq!(hard.data, b"new content");
    assert_eq!(hard.xattrs["user.note"], b"hello");
    assert_eq!(
        entry("file bin/tool").xattrs["security.capability"],
        CAPABILITY
    );
    assert_eq!(entry("file big.bin").data, vec![7u8; 100_001]);
    assert_eq!(
        (
            entry("char null").mode,
            entries
                .iter()
                .filter(|e| e.line.starts_with("char"))
                .count()
        ),
        (0o666, 1),
        "a device that is no whiteout is kept as one"
    );
    assert_eq!(entry("file etc/conf").data, b"changed");
    assert_eq!(entry(&long_line).data, b"long name");
    for e in &entries {
        assert!(
            !e.xattrs.keys().any(|k| k.contains("overlay")),
            "overlay xattr in {}: {:?}",
            e.line,
            e.xattrs
        );
    }
    assert_eq!(measured.entries, entries.len() as u64);
    assert_eq!(snapshot.entries, entries.len() as u64);
    let content: u64 = [100_001, 6, 9, 7, 11, 5].iter().sum();
    assert_eq!((measured.bytes, snapshot.content_bytes), (content, content));
    assert_eq!(snapshot.tar_bytes, tar_of(&snapshot).len() as u64);

    // Applied with the crate's own unpack over the untouched lower layer,
    // the layer gives exactly the container's view (minus what was left out).
    let applied = at("applied");
    let options = UnpackOptions {
        label: "snapshot".into(),
        compression: Compression::None,
        diff_id: None,
        limits: UnpackLimits::default(),
        watch: None,
    };
    unpack_layer(snapshot.tar_reader(), &applied, &options).unwrap();
    let _check = Mount::overlay(&[&applied, &lower], None, &at("check"));
    let skip = ["etc/resolv.conf", "mnt/vol"];
    let expected = describe(&merged, &skip);
    assert!(expected.contains_key("new.txt") && !expected.contains_key("gone.txt"));
    assert!(!expected.contains_key("keep"));
    assert!(!expected.contains_key("olddir/x"));
    assert_eq!(describe(&at("check"), &skip), expected);

    let path = snapshot.staging_dir().to_path_buf();
    assert!(path.exists());
    drop(snapshot);
    assert!(!path.exists(), "the staged contents are removed on drop");
}

/// A plain directory standing in for an upper directory (no whiteouts).
fn plain_upper(dir: &Path) -> PathBuf {
    let upper = dir.join("upper");
    fs::create_dir_all(upper.join("srv")).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(upper.join("srv/data.bin"), data).unwrap();
    fs::write(upper.join("srv/new.txt"), b"committed").unwrap();
    std::os::unix::fs::symlink("new.txt", upper.join("srv/link")).unwrap();
    upper
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compresses_with_gzip_and_zstd_in_one_pass_with_digest_and_diff_id() {
    for (compression, media_type) in [
        (
            Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let upper = plain_upper(dir.path());
        let store = open_store(&dir.path().join("cache")).await;
        let snapshot = store.snapshot_upper(&upper, &[]).await.unwrap();
        let tar = tar_of(&snapshot);
        let snapshot_path = snapshot.staging_dir().to_path_buf();
        let calls = Mutex::new(Vec::new());
        let layer = store
            .compress_snapshot(snapshot, compression, &|done, total| {
                calls.lock().unwrap().push((done, total))
            })
            .await
            .unwrap();
        assert!(!snapshot_path.exists(), "the snapshot is consumed");
        let blob = fs::read(&layer.path).unwrap();
        let unpacked = match compression {
            Compression::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&blob[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            _ => zstd::decode_all(&blob[..]).unwrap(),
        };
        assert_eq!(unpacked, tar, "{compression:?} round trip");
        assert!(blob.len() < tar.len(), "{compression:?} compresses");
        assert_eq!(layer.digest, sha256(&blob));
        assert_eq!(layer.diff_id, sha256(&tar));
        assert_eq!(layer.size, blob.len() as u64);
        assert_eq!(layer.media_type, media_type);
        let total = tar.len() as u64;
        assert_eq!(calls.lock().unwrap().last(), Some(&(total, total)));
        let path = layer.path.clone();
        drop(layer);
        assert!(!path.exists(), "the blob is removed on drop");
        assert!(common::names(&store.root().join("tmp")).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_upper_directory_makes_an_empty_layer() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let store = open_store(&dir.path().join("cache")).await;
    assert_eq!(measure_upper(&upper, &[]).unwrap(), Default::default());
    let snapshot = store.snapshot_upper(&upper, &[]).await.unwrap();
    assert_eq!((snapshot.entries, snapshot.tar_bytes), (0, 1024));
    let layer = store
        .compress_snapshot(snapshot, Compression::Zstd, NO_PROGRESS)
        .await
        .unwrap();
    let tar = zstd::decode_all(&fs::read(&layer.path).unwrap()[..]).unwrap();
    assert_eq!(tar, vec![0u8; 1024]);
    assert_eq!(layer.diff_id, sha256(&tar));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_overlay_markers_of_both_namespaces_and_refuses_redirects() {
    if !require_root("trusted.overlay.* xattrs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let upper = plain_upper(dir.path());
    let store = open_store(&dir.path().join("cache")).await;
    // A `userxattr` mount marks opaque directories in the user namespace.
    fs::create_dir(upper.join("opaque")).unwrap();
    xattr::set(upper.join("opaque"), "user.overlay.opaque", b"y").unwrap();
    xattr::set(upper.join("srv"), "trusted.overlay.origin", b"\0\xfb").unwrap();
    let snapshot = store.snapshot_upper(&upper, &[]).await.unwrap();
    let entries = read_tar(&snapshot);
    let lines: Vec<&str> = entries.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "dir opaque/",
            "file opaque/.wh..wh..opq",
            "dir srv/",
            "file srv/data.bin",
            "symlink srv/link -> new.txt",
            "file srv/new.txt",
        ]
    );
    assert!(
        entries.iter().all(|e| e.xattrs.is_empty()),
        "overlay's xattrs are not copied"
    );
    drop(snapshot);

    for (path, name, what) in [
        ("srv", "trusted.overlay.redirect", "redirect_dir"),
        ("srv/new.txt", "trusted.overlay.metacopy", "metacopy"),
    ] {
        xattr::set(upper.join(path), name, b"x").unwrap();
        let err = measure_upper(&upper, &[]).unwrap_err();
        assert!(
            err.to_string().contains(what) && err.to_string().contains(&format!("/{path}")),
            "{err}"
        );
        let err = store.snapshot_upper(&upper, &[]).await.unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
        xattr::remove(upper.join(path), name).unwrap();
    }
    assert!(common::names(&store.root().join("tmp")).is_empty());
}

#[tokio::test]
async fn refuses_what_a_layer_cannot_hold_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let upper = plain_upper(dir.path());
    let store = open_store(&dir.path().join("cache")).await;
    fs::write(upper.join("srv/.wh.sneaky"), b"").unwrap();
    let err = measure_upper(&upper, &[]).unwrap_err();
    assert!(
        matches!(&err, ImageError::UnsupportedChange { path, .. } if path == "/srv/.wh.sneaky"),
        "{err}"
    );
    let err = store.snapshot_upper(&upper, &[]).await.unwrap_err();
    assert!(err.to_string().contains("/srv/.wh.sneaky"), "{err}");
    assert!(common::names(&store.root().join("tmp")).is_empty());
    // Excluding it is fine; relative exclusions name nothing.
    let size = measure_upper(&upper, &[PathBuf::from("/srv/.wh.sneaky")]).unwrap();
    assert_eq!(size.entries, 4);
    let err = measure_upper(&upper, &[PathBuf::from("etc/hosts")]).unwrap_err();
    assert!(err.to_string().contains("must be absolute"), "{err}");
    // Sockets cannot be archived; whoever listens makes them anew.
    let _socket = std::os::unix::net::UnixListener::bind(upper.join("srv/app.sock")).unwrap();
    let with_socket = measure_upper(&upper, &[PathBuf::from("/srv/.wh.sneaky")]).unwrap();
    assert_eq!(with_socket, size);
    let err = measure_upper(&dir.path().join("missing"), &[]).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

// ---- pushing -------------------------------------------------------------

fn host_arch() -> String {
    Platform::host().architecture
}

fn base_layers() -> Vec<common::Blob> {
    let os = Layer::new()
        .file_with("bin/web", b"#!/bin/web\n", 0o755, 0, 0)
        .dir("srv/", 0o755)
        .tar();
    let app = Layer::new()
        .file("srv/index.html", b"<h1>shop</h1>")
        .file("srv/keep.txt", b"kept")
        .tar();
    vec![blob(&os, Compression::Gzip), blob(&app, Compression::Gzip)]
}

/// A base config with fields Wharf does not know, which a commit keeps.
fn base_config(layers: &[common::Blob]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    serde_json::to_vec(&json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": "2020-01-01T00:00:00Z",
        "x-vendor-field": {"kept": [1, 2, 3]},
        "config": {
            "Entrypoint": ["/bin/web"],
            "Cmd": ["--port", "8080"],
            "Env": ["PATH=/bin", "MODE=test"],
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"team": "shop"},
            "StopSignal": "SIGTERM",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "base os"}, {"created_by": "base app"}],
    }))
    .unwrap()
}

fn oci_base() -> Image {
    let layers = base_layers();
    let config = base_config(&layers);
    let manifest = manifest_for(&config, &layers);
    Image {
        layers,
        config,
        manifest,
    }
}

fn docker_base() -> Image {
    let layers = base_layers();
    let config = base_config(&layers);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": sha256(&config).to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": DOCKER_GZIP, "digest": l.descriptor.digest.to_string(), "size": l.descriptor.size,
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    Image {
        layers,
        config,
        manifest,
    }
}

/// An upper directory as a container leaves it: a new file, a deleted one
/// (a 0/0 whiteout, which needs root) and the agent's resolv.conf.
fn container_upper(dir: &Path) -> PathBuf {
    let upper = dir.join("upper");
    fs::create_dir_all(upper.join("srv")).unwrap();
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("srv/new.txt"), b"committed state").unwrap();
    mknod(
        &upper.join("srv/index.html"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    fs::write(upper.join("etc/resolv.conf"), b"nameserver 10.0.0.1").unwrap();
    upper
}

fn admin() -> RegistryCredentials {
    RegistryCredentials::new("admin", ADMIN_PASSWORD)
}

fn reference(wharf: &Wharf, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("{}/{rest}", wharf.served.registry())).unwrap()
}

async fn make_layer(store: &ImageStore, dir: &Path, compression: Compression) -> NewLayer {
    let upper = container_upper(dir);
    let snapshot = store
        .snapshot_upper(&upper, &[PathBuf::from("/etc/resolv.conf")])
        .await
        .unwrap();
    store
        .compress_snapshot(snapshot, compression, NO_PROGRESS)
        .await
        .unwrap()
}

/// Pulls `image` with a fresh cache and checks what a container of it sees.
async fn pull_and_check_view(
    wharf: &Wharf,
    dir: &Path,
    image: &ImageRef,
    digest: &wharf_oci::Digest,
) {
    let fresh = open_store(dir).await;
    let pulled = fresh
        .pull(image, Some(&admin()), PullPolicy::Always, NO_PULL_PROGRESS)
        .await
        .unwrap();
    assert_eq!(&pulled.manifest_digest, digest);
    assert_eq!(pulled.layers.len(), 3);
    let lowers: Vec<&Path> = pulled.layers.iter().rev().map(PathBuf::as_path).collect();
    let view = dir.join("view");
    let _mount = Mount::overlay(&lowers, None, &view);
    assert_eq!(
        fs::read(view.join("srv/new.txt")).unwrap(),
        b"committed state"
    );
    assert_eq!(fs::read(view.join("srv/keep.txt")).unwrap(), b"kept");
    assert!(view.join("bin/web").is_file());
    assert!(
        !view.join("srv/index.html").exists(),
        "the deleted file stays deleted"
    );
    assert!(
        !view.join("etc/resolv.conf").exists(),
        "the agent's file is left out"
    );
    let _ = wharf;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_a_commit_over_its_base_reusing_base_layers_and_pulls_it_back() {
    if !require_root_and(
        "pushes_a_commit_over_its_base (whiteouts, overlay mounts)",
        &["mount", "umount"],
    ) {
        return;
    }
    let wharf = Wharf::start().await;
    wharf.project_with_puller("shop").await;
    wharf.project_with_puller("other").await;
    let base = oci_base();
    wharf.push("shop/base", &base, "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("node")).await;
    let base_ref = reference(&wharf, "shop/base:1.0");
    let pulled = store
        .pull(
            &base_ref,
            Some(&admin()),
            PullPolicy::Always,
            NO_PULL_PROGRESS,
        )
        .await
        .unwrap();
    let layer = make_layer(&store, dir.path(), Compression::Gzip).await;
    let changes = ConfigChanges::parse(&[
        "ENV MODE=prod".to_string(),
        "LABEL tier=web".to_string(),
        "EXPOSE 9090".to_string(),
        r#"CMD ["--port", "9090"]"#.to_string(),
    ])
    .unwrap();

    // Same repository, another tag: base layers are there. Another
    // project: base layers are mounted. Either way only the new layer and
    // the config are uploaded.
    for (i, (target, mounts)) in [("shop/base:snap", 0), ("other/app:v1", 2)]
        .into_iter()
        .enumerate()
    {
        let target_ref = reference(&wharf, target);
        let repo = target_ref.repository().as_str().to_string();
        let uploads = format!("/v2/{repo}/blobs/uploads/");
        let base_uploads: Vec<usize> = base
            .layers
            .iter()
            .map(|l| {
                let hex = l.descriptor.digest.hex();
                wharf.served.count_uris_containing(&["digest=", hex])
            })
            .collect();
        let patch = format!("PATCH {uploads}");
        let patches = wharf.served.count_uris_containing(&[&patch]);
        let progress = Mutex::new(Vec::new());
        let pushed = store
            .push_commit(
                CommitPush {
                    base: &base_ref,
                    base_digest: &pulled.manifest_digest,
                    layer: &layer,
                    changes: &changes,
                    author: Some("Ann <ann@example.com>"),
                    message: Some("snapshot of web"),
                    created: CREATED,
                    target: &target_ref,
                },
                Some(&admin()),
                &|done, total| progress.lock().unwrap().push((done, total)),
            )
            .await
            .unwrap_or_else(|e| panic!("push to {target}: {e}"));
        assert_eq!(pushed.reused_layers, 2, "{target}");
        let (_, config) = wharf
            .get(&repo, "blobs", pushed.config_digest.as_str())
            .await;
        assert_eq!(
            pushed.uploaded_bytes,
            layer.size + config.len() as u64,
            "{target}: only the new layer and the config are sent"
        );
        for (base_layer, before) in base.layers.iter().zip(base_uploads) {
            let digest = &base_layer.descriptor.digest;
            assert_eq!(
                wharf
                    .served
                    .count_uris_containing(&["digest=", digest.hex()]),
                before,
                "{target}: base layer {digest} was never uploaded"
            );
            assert_eq!(
                wharf
                    .served
                    .count_uris_containing(&[&format!("POST {uploads}?mount="), digest.hex()])
                    > 0,
                mounts > 0,
                "{target}: base layer {digest} mounted only into another repository"
            );
        }
        assert!(
            wharf
                .served
                .count_uris_containing(&["PUT /v2/", &repo, "digest=", layer.digest.hex()])
                > 0,
            "{target}: the new layer was uploaded (the URIs are matched as sent)"
        );
        assert_eq!(
            wharf.served.count_uris_containing(&[&patch]) - patches,
            1,
            "{target}: one streamed upload, the new layer's"
        );
        let last = *progress.lock().unwrap().last().unwrap();
        assert_eq!(
            last.0, pushed.uploaded_bytes,
            "{target}: progress ends at what was sent"
        );

        let (content_type, manifest) = wharf
            .get(&repo, "manifests", target_ref.tag().unwrap().as_str())
            .await;
        assert_eq!(content_type, OCI_MANIFEST);
        assert_eq!(sha256(&manifest), pushed.manifest_digest);

        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["x-vendor-field"], json!({"kept": [1, 2, 3]}));
        assert_eq!(config["config"]["StopSignal"], json!("SIGTERM"));
        assert_eq!(config["created"], json!(CREATED));
        assert_eq!(config["author"], json!("Ann <ann@example.com>"));
        assert_eq!(
            config["history"],
            json!([
                {"created_by": "base os"},
                {"created_by": "base app"},
                {"created": CREATED, "created_by": "wharf commit", "author": "Ann <ann@example.com>", "comment": "snapshot of web"},
            ])
        );
        let diff_ids: Vec<String> = base
            .layers
            .iter()
            .map(|l| l.diff_id.to_string())
            .chain([layer.diff_id.to_string()])
            .collect();
        assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids));
        let c = &config["config"];
        assert_eq!(c["Env"], json!(["PATH=/bin", "MODE=prod"]));
        assert_eq!(c["Labels"], json!({"team": "shop", "tier": "web"}));
        assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "9090/tcp": {}}));
        assert_eq!(c["Cmd"], json!(["--port", "9090"]));
        assert_eq!(
            c["Entrypoint"],
            json!(["/bin/web"]),
            "CMD alone keeps the entrypoint"
        );

        let fresh = dir.path().join(format!("fresh-{i}"));
        pull_and_check_view(&wharf, &fresh, &target_ref, &pushed.manifest_digest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_without_access_to_the_target_is_refused_naming_the_step() {
    if !require_root("a commit's layer holds a whiteout") {
        return;
    }
    let wharf = Wharf::start().await;
    let (robot, secret) = wharf.project_with_puller("shop").await;
    wharf.project_with_puller("other").await;
    wharf.push("shop/base", &oci_base(), "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("node")).await;
    let puller = RegistryCredentials::new(&robot, &secret);
    let base_ref = reference(&wharf, "shop/base:1.0");
    let pulled = store
        .pull(
            &base_ref,
            Some(&puller),
            PullPolicy::Always,
            NO_PULL_PROGRESS,
        )
        .await
        .unwrap();
    let layer = make_layer(&store, dir.path(), Compression::Gzip).await;
    let none = ConfigChanges::default();
    for target in ["other/app:v1", "shop/base:snap"] {
        let target_ref = reference(&wharf, target);
        let err = store
            .push_commit(
                CommitPush {
                    base: &base_ref,
                    base_digest: &pulled.manifest_digest,
                    layer: &layer,
                    changes: &none,
                    author: None,
                    message: None,
                    created: CREATED,
                    target: &target_ref,
                },
                Some(&puller),
                NO_PROGRESS,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&target_ref.to_string()), "{err}");
        let ImageError::CommitPush { step, source, .. } = &err else {
            panic!("{target}: {err}");
        };
        assert!(
            matches!(**source, ImageError::Unauthorized { .. }),
            "{target}: {err}"
        );
        assert!(
            step.starts_with("reuse base layer") || step.starts_with("upload layer"),
            "{target}: {err}"
        );
        let repo = target_ref.repository().as_str();
        let tag = target_ref.tag().unwrap().as_str();
        assert_eq!(
            wharf.status(repo, "manifests", tag).await,
            404,
            "{target}: nothing tagged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_base_commits_over_this_platforms_manifest() {
    if !require_root_and(
        "a_multi_arch_base (whiteouts, overlay mounts)",
        &["mount", "umount"],
    ) {
        return;
    }
    let wharf = Wharf::start().await;
    wharf.project_with_puller("shop").await;
    let ours = oci_base();
    let other_arch = if host_arch() == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let theirs = Image::new(base_layers(), other_arch, &["--other"]);
    wharf
        .push("shop/multi", &ours, &ours.digest().to_string())
        .await;
    wharf
        .push("shop/multi", &theirs, &theirs.digest().to_string())
        .await;
    let index = registry::index_of(&[(other_arch, &theirs), (host_arch().as_str(), &ours)]);
    wharf.push_index("shop/multi", &index, "1").await;
    let dir = tempfile::tempdir().unwrap();
    let base_ref = reference(&wharf, "shop/multi:1");
    let node = open_store(&dir.path().join("node")).await;
    let pulled = node
        .pull(
            &base_ref,
            Some(&admin()),
            PullPolicy::Always,
            NO_PULL_PROGRESS,
        )
        .await
        .unwrap();
    assert_eq!(
        pulled.manifest_digest,
        sha256(&index),
        "the base resolved to the index"
    );
    let layer = make_layer(&node, dir.path(), Compression::Gzip).await;
    let none = ConfigChanges::default();
    // Pushed by the node that pulled it (its record names the platform
    // manifest) and by one that did not (the index is resolved again).
    let fresh = open_store(&dir.path().join("other-node")).await;
    for (store, tag) in [(&node, "snap"), (&fresh, "snap2")] {
        let target = reference(&wharf, &format!("shop/multi:{tag}"));
        let pushed = store
            .push_commit(
                CommitPush {
                    base: &base_ref,
                    base_digest: &pulled.manifest_digest,
                    layer: &layer,
                    changes: &none,
                    author: None,
                    message: None,
                    created: CREATED,
                    target: &target,
                },
                Some(&admin()),
                NO_PROGRESS,
            )
            .await
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(pushed.reused_layers, 2);
        let (content_type, manifest) = wharf.get("shop/multi", "manifests", tag).await;
        assert_eq!(
            content_type, OCI_MANIFEST,
            "{tag}: an image manifest, not an index"
        );
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        let (_, config) = wharf
            .get(
                "shop/multi",
                "blobs",
                manifest["config"]["digest"].as_str().unwrap(),
            )
            .await;
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["architecture"], json!(host_arch()), "{tag}");
        assert_eq!(
            config["config"]["Cmd"],
            json!(["--port", "8080"]),
            "{tag}: this platform's config"
        );
        pull_and_check_view(
            &wharf,
            &dir.path().join(format!("fresh-{tag}")),
            &target,
            &pushed.manifest_digest,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_base_stays_docker_with_gzip_and_becomes_oci_with_zstd() {
    if !require_root_and(
        "a_docker_base_stays_docker (whiteouts, overlay mounts)",
        &["mount", "umount"],
    ) {
        return;
    }
    let wharf = Wharf::start().await;
    wharf.project_with_puller("shop").await;
    let base = docker_base();
    wharf
        .push_as("shop/dock", &base, "1", DOCKER_MANIFEST)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("node")).await;
    let base_ref = reference(&wharf, "shop/dock:1");
    let pulled = store
        .pull(
            &base_ref,
            Some(&admin()),
            PullPolicy::Always,
            NO_PULL_PROGRESS,
        )
        .await
        .unwrap();
    let none = ConfigChanges::default();
    for (compression, tag) in [(Compression::Gzip, "gz"), (Compression::Zstd, "zst")] {
        let work = dir.path().join(tag);
        fs::create_dir_all(&work).unwrap();
        let layer = make_layer(&store, &work, compression).await;
        // The zstd commit is pushed by a cache that never pulled the base:
        // the base manifest is found through the registry instead.
        let pusher = match compression {
            Compression::Zstd => open_store(&work.join("other-node")).await,
            _ => store.clone(),
        };
        let target = reference(&wharf, &format!("shop/dock:{tag}"));
        let pushed = pusher
            .push_commit(
                CommitPush {
                    base: &base_ref,
                    base_digest: &pulled.manifest_digest,
                    layer: &layer,
                    changes: &none,
                    author: None,
                    message: None,
                    created: CREATED,
                    target: &target,
                },
                Some(&admin()),
                NO_PROGRESS,
            )
            .await
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(pushed.reused_layers, 2);
        let (content_type, manifest) = wharf.get("shop/dock", "manifests", tag).await;
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        let layer_types: Vec<&str> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap())
            .collect();
        match compression {
            Compression::Gzip => {
                assert_eq!(content_type, DOCKER_MANIFEST);
                assert_eq!(manifest["config"]["mediaType"], json!(DOCKER_CONFIG));
                assert_eq!(layer_types, [DOCKER_GZIP; 3]);
            }
            _ => {
                assert_eq!(content_type, OCI_MANIFEST);
                assert_eq!(
                    manifest["config"]["mediaType"],
                    json!("application/vnd.oci.image.config.v1+json")
                );
                assert_eq!(
                    layer_types,
                    [
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                        "application/vnd.oci.image.layer.v1.tar+zstd",
                    ]
                );
            }
        }
        pull_and_check_view(
            &wharf,
            &work.join("fresh"),
            &target,
            &pushed.manifest_digest,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_on_another_registry_is_refused_before_anything_is_sent() {
    let wharf = Wharf::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("node")).await;
    let upper = plain_upper(dir.path());
    let snapshot = store.snapshot_upper(&upper, &[]).await.unwrap();
    let layer = store
        .compress_snapshot(snapshot, Compression::Gzip, NO_PROGRESS)
        .await
        .unwrap();
    let base_ref = reference(&wharf, "shop/base:1.0");
    let digest = sha256(b"any manifest");
    let none = ConfigChanges::default();
    let before = wharf.served.count_containing("/");
    for target in [
        "127.0.0.2:5000/shop/base:snap".to_string(),
        format!("{}/shop/base@{digest}", wharf.served.registry()),
    ] {
        let target = ImageRef::parse(&target).unwrap();
        let err = store
            .push_commit(
                CommitPush {
                    base: &base_ref,
                    base_digest: &digest,
                    layer: &layer,
                    changes: &none,
                    author: None,
                    message: None,
                    created: CREATED,
                    target: &target,
                },
                Some(&admin()),
                NO_PROGRESS,
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        if target.digest().is_none() {
            assert!(matches!(err, ImageError::CrossRegistry { .. }), "{text}");
            assert!(
                text.contains("127.0.0.2:5000") && text.contains(&wharf.served.registry()),
                "names both registries: {text}"
            );
        } else {
            assert!(text.contains("names a tag, not a digest"), "{text}");
        }
    }
    let target = reference(&wharf, "shop/base:snap");
    let err = store
        .push_commit(
            CommitPush {
                base: &base_ref,
                base_digest: &digest,
                layer: &layer,
                changes: &none,
                author: None,
                message: None,
                created: "yesterday",
                target: &target,
            },
            Some(&admin()),
            NO_PROGRESS,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"yesterday\" is not an RFC 3339 time"),
        "{err}"
    );
    assert_eq!(
        wharf.served.count_containing("/"),
        before,
        "no request reached the registry"
    );
}
