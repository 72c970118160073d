//! Hostile layers: every attempt to write outside the layer directory is
//! refused with a clear error, nothing appears outside (a sentinel
//! directory stays empty), and no partial layer stays in the cache.

mod common;

use std::fs;
use std::path::Path;

use common::{Layer, import, names};
use wharf_image::{Compression, ImageError, ImageStore, ImageStoreOptions};

struct Case {
    name: &'static str,
    tar: Vec<u8>,
    /// Text the error must contain.
    says: &'static str,
}

fn cases(sentinel: &Path) -> Vec<Case> {
    let sentinel = sentinel.to_str().unwrap();
    vec![
        Case {
            name: "parent traversal",
            tar: Layer::new().file("../escape", b"x").tar(),
            says: "the path contains a `..` component",
        },
        Case {
            name: "nested parent traversal",
            tar: Layer::new().file("a/../../escape", b"x").tar(),
            says: "`..`",
        },
        Case {
            name: "absolute path",
            tar: Layer::new().file(&format!("{sentinel}/abs"), b"x").tar(),
            says: "the path is absolute",
        },
        Case {
            name: "write through a symlink to a directory outside",
            tar: Layer::new()
                .symlink("link", sentinel)
                .file("link/file", b"x")
                .tar(),
            says: "its parent link is a symbolic link",
        },
        Case {
            name: "write through a symlink to /",
            tar: Layer::new()
                .symlink("root", "/")
                .file(&format!("root{sentinel}/file"), b"x")
                .tar(),
            says: "its parent root is a symbolic link",
        },
        Case {
            name: "write through a relative symlink that climbs out",
            tar: Layer::new()
                .symlink("up", "../../../../../../../../..")
                .file(&format!("up{sentinel}/file"), b"x")
                .tar(),
            says: "symbolic link",
        },
        Case {
            name: "directory replaced by a symlink, then written through",
            tar: Layer::new()
                .dir("d/", 0o755)
                .file("d/ok", b"fine")
                .symlink("d", sentinel)
                .file("d/file", b"x")
                .tar(),
            says: "its parent d is a symbolic link",
        },
        Case {
            name: "directory entry through a symlink",
            tar: Layer::new()
                .symlink("link", sentinel)
                .dir("link/sub/", 0o755)
                .tar(),
            says: "symbolic link",
        },
        Case {
            name: "symlink created through a symlink",
            tar: Layer::new()
                .symlink("link", sentinel)
                .symlink("link/evil", "/etc/passwd")
                .tar(),
            says: "symbolic link",
        },
        Case {
            name: "hard link to an absolute path",
            tar: Layer::new().hardlink("passwd", "/etc/passwd").tar(),
            says: "hard link target \"/etc/passwd\": the path is absolute",
        },
        Case {
            name: "hard link climbing out",
            tar: Layer::new()
                .hardlink("passwd", "../../../../../../etc/passwd")
                .tar(),
            says: "`..`",
        },
        Case {
            name: "hard link through a symlinked directory",
            tar: Layer::new()
                .symlink("etc", "/etc")
                .hardlink("passwd", "etc/passwd")
                .tar(),
            says: "its parent etc is a symbolic link",
        },
        Case {
            name: "hard link into a symlinked directory",
            tar: Layer::new()
                .file("f", b"x")
                .symlink("out", sentinel)
                .hardlink("out/f", "f")
                .tar(),
            says: "its parent out is a symbolic link",
        },
        Case {
            name: "hard link to a missing entry",
            tar: Layer::new().hardlink("x", "nothing").tar(),
            says: "no such entry earlier in the layer",
        },
        Case {
            name: "hard link to a directory",
            tar: Layer::new().dir("d/", 0o755).hardlink("x", "d").tar(),
            says: "it is a directory",
        },
        Case {
            name: "whiteout of ..",
            tar: Layer::new().file("a/.wh...", b"").tar(),
            says: "names no deletable entry",
        },
        Case {
            name: "whiteout of .",
            tar: Layer::new().file(".wh..", b"").tar(),
            says: "names no deletable entry",
        },
        Case {
            name: "empty whiteout",
            tar: Layer::new().file(".wh.", b"").tar(),
            says: "names no deletable entry",
        },
        Case {
            name: "whiteout above the root",
            tar: Layer::new().file("../.wh.etc", b"").tar(),
            says: "`..`",
        },
        Case {
            name: "whiteout through a symlink",
            tar: Layer::new()
                .symlink("link", sentinel)
                .file("link/.wh.x", b"")
                .tar(),
            says: "symbolic link",
        },
        Case {
            name: "opaque marker through a symlink",
            tar: Layer::new()
                .symlink("link", sentinel)
                .file("link/.wh..wh..opq", b"")
                .tar(),
            says: "symbolic link",
        },
        Case {
            name: "file replacing the layer root",
            tar: Layer::new().file("./", b"x").tar(),
            says: "it would replace the layer's root directory",
        },
    ]
}

#[tokio::test]
async fn hostile_layers_are_refused_and_write_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = dir.path().join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    let store = ImageStore::open(dir.path().join("cache"), ImageStoreOptions::default())
        .await
        .unwrap();
    let passwd = fs::read("/etc/passwd").unwrap();
    for case in cases(&sentinel) {
        for compression in [Compression::Gzip, Compression::None] {
            let err = import(&store, &case.tar, compression)
                .await
                .expect_err(case.name);
            assert!(
                matches!(err, ImageError::UnsafeEntry { .. }),
                "{}: wrong error {err}",
                case.name
            );
            let message = err.to_string();
            assert!(
                message.contains(case.says) && message.contains("refusing tar entry"),
                "{}: message {message:?} lacks {:?}",
                case.name,
                case.says
            );
            assert!(
                message.starts_with("layer sha256:"),
                "{}: {message}",
                case.name
            );
            assert!(names(&sentinel).is_empty(), "{}: wrote outside", case.name);
            assert!(
                names(&store.root().join("layers/sha256")).is_empty(),
                "{}: partial layer left",
                case.name
            );
            assert!(
                names(&store.root().join("tmp")).is_empty(),
                "{}: tmp/ not cleaned",
                case.name
            );
        }
    }
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
}

#[tokio::test]
async fn symlinks_may_point_anywhere_but_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = dir.path().join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    let outside = sentinel.join("target");
    let store = ImageStore::open(dir.path().join("cache"), ImageStoreOptions::default())
        .await
        .unwrap();
    // A symlink pointing out, then a file of the same name: the file
    // replaces the link instead of writing through it.
    let tar = Layer::new()
        .symlink("abs", "/etc/passwd")
        .symlink("escape", outside.to_str().unwrap())
        .file("escape", b"replaced the link")
        .symlink("dir-link", sentinel.to_str().unwrap())
        .tar();
    let layer = import(&store, &tar, Compression::Gzip).await.unwrap();
    assert_eq!(
        fs::read_link(layer.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let escape = fs::symlink_metadata(layer.join("escape")).unwrap();
    assert!(escape.is_file());
    assert_eq!(
        fs::read(layer.join("escape")).unwrap(),
        b"replaced the link"
    );
    assert!(
        fs::symlink_metadata(layer.join("dir-link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        names(&sentinel).is_empty(),
        "nothing written through a symlink"
    );
}
