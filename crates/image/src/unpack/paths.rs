//! Lexical checks on archive paths, before anything touches the disk.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of an OCI whiteout file's name.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the file that makes its directory opaque.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Prefix of AUFS bookkeeping files (`.wh..wh.plnk`, ...), which carry
/// nothing a container sees.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// An archive path as a relative path inside the layer (empty for the
/// layer's root), or why it is refused. `.` components and repeated or
/// trailing slashes are dropped; `..` and absolute paths are refused, not
/// rewritten, because a layer that contains them was not made by an honest
/// image builder.
pub(crate) fn relative_path(raw: &Path) -> Result<PathBuf, String> {
    let mut path = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("the path is absolute".into());
            }
        }
    }
    Ok(path)
}

/// What an entry's file name says it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// Not a whiteout: an ordinary entry.
    None,
    /// `.wh..wh..opq`: hide the lower layers' contents of the parent dir.
    Opaque,
    /// `.wh.<name>`: hide `<name>` of the lower layers.
    Delete(&'a OsStr),
    /// AUFS bookkeeping: skipped.
    Meta,
}

/// Classifies `name`, refusing whiteouts of `.`, `..` or nothing.
pub(crate) fn whiteout_kind(name: &OsStr) -> Result<Whiteout<'_>, String> {
    let bytes = name.as_bytes();
    if !bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(Whiteout::None);
    }
    if name == OPAQUE_MARKER {
        return Ok(Whiteout::Opaque);
    }
    if bytes.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        return Ok(Whiteout::Meta);
    }
    let target = &bytes[WHITEOUT_PREFIX.len()..];
    if target.is_empty() || target == b"." || target == b".." {
        return Err(format!(
            "whiteout {:?} names no deletable entry",
            name.to_string_lossy()
        ));
    }
    Ok(Whiteout::Delete(OsStr::from_bytes(target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_harmless_paths() {
        for (raw, expected) in [
            ("a/b", "a/b"),
            ("./a/b/", "a/b"),
            ("a//b/./c", "a/b/c"),
            ("./", ""),
            (".", ""),
            ("a/.wh.b", "a/.wh.b"),
        ] {
            assert_eq!(
                relative_path(Path::new(raw)).unwrap(),
                Path::new(expected),
                "{raw}"
            );
        }
    }

    #[test]
    fn refuses_escapes() {
        for raw in ["../x", "a/../../x", "a/..", "/etc/passwd", "//x", "./../x"] {
            assert!(relative_path(Path::new(raw)).is_err(), "{raw} accepted");
        }
    }

    #[test]
    fn classifies_whiteouts() {
        let kind = |s: &str| whiteout_kind(OsStr::new(s)).map(|w| format!("{w:?}"));
        assert_eq!(kind("file").unwrap(), "None");
        assert_eq!(kind(".whx").unwrap(), "None");
        assert_eq!(kind(".wh..wh..opq").unwrap(), "Opaque");
        assert_eq!(kind(".wh..wh.plnk").unwrap(), "Meta");
        assert_eq!(kind(".wh.gone").unwrap(), "Delete(\"gone\")");
        assert_eq!(kind(".wh..hidden").unwrap(), "Delete(\".hidden\")");
        for bad in [".wh.", ".wh..", ".wh..."] {
            assert!(kind(bad).is_err(), "{bad} accepted");
        }
    }
}
