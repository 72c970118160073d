//! Unpacking layers into the cache: files, modes, owners, times, links,
//! xattrs and devices survive; whiteouts and opaque directories work under
//! a real overlayfs mount; bad digests and tar bombs leave nothing behind.
//! Needs root (chown, mknod, trusted xattrs, mount).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{Layer, assert_cache_clean, blob, import, names, sha256};
use wharf_image::{Compression, ImageError, ImageStore, ImageStoreOptions, UnpackLimits};
use wharf_testkit::prereq::require_root;

async fn store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("cache"), ImageStoreOptions::default())
        .await
        .unwrap()
}

fn sample_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc/", 0o755)
        .file_with("etc/app.conf", b"port=80\n", 0o640, 1000, 2000)
        .file_with("bin/tool", b"#!/bin/sh\necho hi\n", 0o755, 0, 0)
        .file_with("bin/suid", b"x", 0o4755, 0, 0)
        .symlink("bin/sh", "/bin/busybox")
        .symlink("etc/conf-link", "app.conf")
        .hardlink("bin/tool2", "bin/tool")
        .dir_owned("home/user/", 0o700, 1000, 1000)
        .pax(&[("SCHILY.xattr.user.origin", b"wharf-test")])
        .file("etc/tagged", b"tagged")
        .fifo("run/pipe")
        .char_device("dev/null", 1, 3)
        .tar()
}

#[tokio::test]
async fn unpacks_files_links_owners_and_modes_for_every_compression() {
    if !require_root("unpacks_files_links_owners_and_modes_for_every_compression") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let tar = sample_layer();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let layer = import(&store, &tar, compression).await.unwrap();
        assert_eq!(
            layer,
            store.layer_dir(&blob(&tar, compression).descriptor.digest)
        );
        check_sample_layer(&layer);
    }
    assert_eq!(names(&store.root().join("layers/sha256")).len(), 3);
    assert!(names(&store.root().join("tmp")).is_empty());
}

fn check_sample_layer(layer: &Path) {
    let meta = |p: &str| fs::symlink_metadata(layer.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(fs::read(layer.join("etc/app.conf")).unwrap(), b"port=80\n");
    let conf = meta("etc/app.conf");
    assert_eq!(
        (conf.mode() & 0o7777, conf.uid(), conf.gid()),
        (0o640, 1000, 2000)
    );
    assert_eq!(conf.mtime(), 1_600_000_000);
    assert_eq!(meta("bin/tool").mode() & 0o7777, 0o755);
    assert_eq!(
        meta("bin/suid").mode() & 0o7777,
        0o4755,
        "set-uid bit survives chown"
    );
    // Implicit parents are plain 0755 directories.
    assert_eq!(meta("bin").mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(layer.join("etc/conf-link")).unwrap(),
        Path::new("app.conf")
    );
    assert_eq!(meta("bin/tool2").ino(), meta("bin/tool").ino());
    assert_eq!(meta("bin/tool").nlink(), 2);
    let home = meta("home/user");
    assert!(home.is_dir());
    assert_eq!(
        (home.mode() & 0o7777, home.uid(), home.gid()),
        (0o700, 1000, 1000)
    );
    assert_eq!(
        meta("etc").mtime(),
        1_600_000_000,
        "directory times are set after their contents"
    );
    let xattr = xattr::get(layer.join("etc/tagged"), "user.origin").unwrap();
    assert_eq!(xattr.as_deref(), Some(&b"wharf-test"[..]));
    assert!(meta("run/pipe").file_type().is_fifo());
    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
}

/// Mounts `lowerdir=upper:lower` read-only; unmounts on drop.
struct Overlay {
    mountpoint: std::path::PathBuf,
}

impl Overlay {
    fn mount(layers_bottom_first: &[&Path], mountpoint: &Path) -> Overlay {
        fs::create_dir_all(mountpoint).unwrap();
        let lowerdir: Vec<String> = layers_bottom_first
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={}", lowerdir.join(":")))
            .arg(mountpoint)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount overlay failed: {status}");
        Overlay {
            mountpoint: mountpoint.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
    }
}

#[tokio::test]
async fn whiteouts_and_opaque_directories_work_under_overlayfs() {
    if !require_root("whiteouts_and_opaque_directories_work_under_overlayfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let lower = Layer::new()
        .file("keep", b"kept")
        .file("gone", b"deleted above")
        .file("data/old-1", b"1")
        .file("data/old-2", b"2")
        .file("other/x", b"x")
        .tar();
    let upper = Layer::new()
        .file(".wh.gone", b"")
        .dir("data/", 0o755)
        .file("data/.wh..wh..opq", b"")
        .file("data/new", b"new")
        .file("other/.wh.x", b"")
        .file("other/y", b"y")
        .tar();
    let lower = import(&store, &lower, Compression::Gzip).await.unwrap();
    let upper = import(&store, &upper, Compression::Zstd).await.unwrap();

    let whiteout = fs::symlink_metadata(upper.join("gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(
        !upper.join(".wh.gone").exists(),
        "the OCI marker itself is not kept"
    );
    assert!(!upper.join("data/.wh..wh..opq").exists());
    let opaque = xattr::get(upper.join("data"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));

    let mountpoint = dir.path().join("mnt");
    let overlay = Overlay::mount(&[&lower, &upper], &mountpoint);
    assert_eq!(
        names(&mountpoint),
        ["data", "keep", "other"],
        "`gone` is deleted"
    );
    assert_eq!(names(&mountpoint.join("data")), ["new"], "`data` is opaque");
    assert_eq!(
        names(&mountpoint.join("other")),
        ["y"],
        "`other/x` is deleted, `other` is not opaque"
    );
    assert_eq!(fs::read(mountpoint.join("keep")).unwrap(), b"kept");
    drop(overlay);
    assert!(names(&mountpoint).is_empty(), "unmounted");
}

#[tokio::test]
async fn later_entries_replace_earlier_ones_and_whiteouts_spare_their_own_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let tar = Layer::new()
        .pax_global(&[("comment", b"made by git archive")])
        .file("a", b"first")
        .file("a", b"second")
        .dir("b/", 0o755)
        .file("b/inner", b"x")
        .file("b", b"file now")
        .file("c", b"file")
        .dir("c/", 0o750)
        .file("kept", b"mine")
        .file(".wh.kept", b"")
        .tar();
    let layer = import(&store, &tar, Compression::None).await.unwrap();
    assert_eq!(fs::read(layer.join("a")).unwrap(), b"second");
    assert_eq!(fs::read(layer.join("b")).unwrap(), b"file now");
    assert!(layer.join("c").is_dir());
    assert_eq!(
        fs::metadata(layer.join("c")).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_eq!(fs::read(layer.join("kept")).unwrap(), b"mine");
}

#[tokio::test]
async fn digest_and_diff_id_mismatches_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let tar = Layer::new().file("f", b"content").tar();
    let good = blob(&tar, Compression::Gzip);
    let file = dir.path().join("blob");
    fs::write(&file, &good.bytes).unwrap();

    let wrong_diff_id = sha256(b"something else");
    let err = store
        .import_layer(&file, &good.descriptor, &wrong_diff_id)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("uncompressed content of layer sha256:"),
        "{err}"
    );
    assert_cache_clean(&store);

    let mut wrong_digest = good.descriptor.clone();
    wrong_digest.digest = sha256(b"another blob");
    let err = store
        .import_layer(&file, &wrong_digest, &good.diff_id)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_cache_clean(&store);

    let mut wrong_size = good.descriptor.clone();
    wrong_size.size += 1;
    let err = store
        .import_layer(&file, &wrong_size, &good.diff_id)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
    assert_cache_clean(&store);

    let mut not_a_layer = good.descriptor.clone();
    not_a_layer.media_type = "application/vnd.cncf.helm.chart.content.v1.tar+gzip".into();
    let err = store
        .import_layer(&file, &not_a_layer, &good.diff_id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::UnsupportedMediaType { .. }),
        "{err}"
    );

    let garbage = dir.path().join("garbage");
    fs::write(&garbage, b"not gzip at all").unwrap();
    let descriptor = common::descriptor(common::GZIP, b"not gzip at all");
    let err = store
        .import_layer(&garbage, &descriptor, &good.diff_id)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::MalformedLayer { .. }), "{err}");
    assert_cache_clean(&store);
}

#[tokio::test]
async fn limits_stop_tar_bombs() {
    let dir = tempfile::tempdir().unwrap();
    let options = ImageStoreOptions {
        limits: UnpackLimits {
            max_bytes: 64 << 10,
            max_entries: 5,
        },
        ..ImageStoreOptions::default()
    };
    let store = ImageStore::open(dir.path().join("cache"), options)
        .await
        .unwrap();

    let mut many = Layer::new();
    for i in 0..6 {
        many.file(&format!("f{i}"), b"x");
    }
    let err = import(&store, &many.tar(), Compression::Gzip)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("entry count limit of 5"), "{err}");
    assert_cache_clean(&store);

    // 1 MiB of zeros compresses to about a kilobyte.
    let big = Layer::new().file("zeros", &vec![0u8; 1 << 20]).tar();
    let err = import(&store, &big, Compression::Zstd).await.unwrap_err();
    assert!(matches!(err, ImageError::LayerTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("size limit"), "{err}");
    assert_cache_clean(&store);
}

#[tokio::test]
async fn huge_long_names_are_refused_before_they_are_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    // A GNU long-name record of 4 MiB: the tar reader would buffer it whole.
    let mut header = tar::Header::new_gnu();
    header.set_path("././@LongLink").unwrap();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(4 << 20);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &vec![b'a'; 4 << 20][..]).unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_path("x").unwrap();
    file.set_size(0);
    file.set_cksum();
    builder.append(&file, &[][..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let err = import(&store, &tar, Compression::Gzip).await.unwrap_err();
    assert!(
        err.to_string().contains("tar header and extension limit"),
        "{err}"
    );
    assert_cache_clean(&store);
}

#[tokio::test]
async fn an_existing_layer_is_reused_and_tmp_is_emptied_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let store = ImageStore::open(&root, ImageStoreOptions::default())
        .await
        .unwrap();
    let tar = Layer::new().file("f", b"1").tar();
    let first = import(&store, &tar, Compression::Gzip).await.unwrap();
    let marker = fs::metadata(&first).unwrap().ino();
    let again = import(&store, &tar, Compression::Gzip).await.unwrap();
    assert_eq!(
        fs::metadata(&again).unwrap().ino(),
        marker,
        "not unpacked twice"
    );

    // What a crash mid-unpack leaves is discarded on the next open.
    fs::create_dir_all(root.join("tmp/unpack-crashed/half")).unwrap();
    let store = ImageStore::open(&root, ImageStoreOptions::default())
        .await
        .unwrap();
    assert!(names(&store.root().join("tmp")).is_empty());
    assert_eq!(names(&store.root().join("layers/sha256")).len(), 1);
}
