//! Writes the files of a configMap or secret volume the way kubelet's
//! atomic writer does, so a container never sees half an update:
//!
//! ```text
//! <volume>/..<timestamp>/<path>   this version's files, with their modes
//! <volume>/..data -> ..<timestamp> swapped with one rename(2)
//! <volume>/<top> -> ..data/<top>  one link per top-level name, made once
//! ```
//!
//! A new version goes to a new timestamped directory; renaming a fresh
//! `..data` link over the old one switches every file at once, and the old
//! directory is removed after. Blocking: callers run it off the workers.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use wharf_api::ProjectedFile;

const DATA: &str = "..data";
const DATA_NEXT: &str = "..data_tmp";

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Makes `dir` hold exactly `files`, their group `group` when set (the
/// pod's fsGroup). Returns whether anything changed (nothing does when the
/// current version already holds them).
pub(super) fn write(
    dir: &Path,
    files: &[ProjectedFile],
    group: Option<u32>,
) -> Result<bool, String> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let current = std::fs::read_link(dir.join(DATA)).ok();
    if let Some(version) = &current
        && holds(&dir.join(version), files)
    {
        return Ok(false);
    }
    let version = write_version(dir, files, group)?;
    let next = dir.join(DATA_NEXT);
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(&version, &next).map_err(|e| io(&next, e))?;
    std::fs::rename(&next, dir.join(DATA)).map_err(|e| io(&next, e))?;
    link_top_level(dir, files)?;
    if let Some(old) = current
        && old != version
    {
        let old = dir.join(old);
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(true)
}

/// Writes `files` in a new `..<timestamp>` directory; returns its name.
fn write_version(
    dir: &Path,
    files: &[ProjectedFile],
    group: Option<u32>,
) -> Result<PathBuf, String> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = PathBuf::from(format!("..{stamp}"));
    let root = dir.join(&name);
    std::fs::create_dir(&root).map_err(|e| io(&root, e))?;
    set_mode(&root, 0o755)?;
    for file in files {
        let path = root.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, &file.data).map_err(|e| io(&path, e))?;
        if group.is_some() {
            std::os::unix::fs::lchown(&path, None, group).map_err(|e| io(&path, e))?;
        }
        set_mode(&path, file.mode)?;
    }
    Ok(name)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io(path, e))
}

/// Whether the version at `root` holds exactly `files`, modes included.
fn holds(root: &Path, files: &[ProjectedFile]) -> bool {
    let same = |file: &ProjectedFile| {
        let path = root.join(&file.path);
        let mode = std::fs::symlink_metadata(&path).map(|m| m.permissions().mode() & 0o7777);
        mode.is_ok_and(|mode| mode == file.mode)
            && std::fs::read(&path).is_ok_and(|data| data == file.data)
    };
    files.iter().all(same) && count_files(root) == files.len()
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => count_files(&entry.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// Links each top-level name of `files` through `..data`, and removes the
/// links of names the new version no longer has.
fn link_top_level(dir: &Path, files: &[ProjectedFile]) -> Result<(), String> {
    let wanted: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)
                .map_err(|e| io(&link, e))?;
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if is_link && !name.starts_with("..") && !wanted.contains(name.as_str()) {
            std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str, mode: u32) -> ProjectedFile {
        ProjectedFile {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_appear_through_data_with_their_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        let files = [
            file("mode", "prod", 0o644),
            file("etc/app.ini", "x=1", 0o400),
        ];
        assert!(write(&dir, &files, None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("mode")).unwrap(), "prod");
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/app.ini")).unwrap(),
            "x=1"
        );
        assert_eq!(
            std::fs::read_link(dir.join("mode")).unwrap(),
            Path::new("..data/mode")
        );
        let mode = std::fs::metadata(dir.join("etc/app.ini"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o400);
        // The same files again change nothing.
        let before = versions(&dir);
        assert!(!write(&dir, &files, None).unwrap());
        assert_eq!(versions(&dir), before);
    }

    #[test]
    fn a_change_swaps_data_and_removes_the_old_version() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        write(&dir, &[file("a", "1", 0o644), file("b", "2", 0o644)], None).unwrap();
        let first = versions(&dir);
        assert_eq!(first.len(), 1);
        // A changed mode alone is a change too.
        assert!(write(&dir, &[file("a", "1", 0o600), file("b", "2", 0o644)], None).unwrap());
        assert!(write(&dir, &[file("a", "3", 0o600)], None).unwrap());
        let last = versions(&dir);
        assert_eq!(last.len(), 1);
        assert_ne!(last, first);
        assert_eq!(
            std::fs::read_link(dir.join(DATA)).unwrap(),
            Path::new(&last[0])
        );
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        // A key that went away takes its link with it.
        assert!(std::fs::symlink_metadata(dir.join("b")).is_err());
        assert!(!dir.join(DATA_NEXT).exists());
    }

    #[test]
    fn files_take_the_pods_fs_group() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        write(&dir, &[file("a", "1", 0o440)], Some(4321)).unwrap();
        let meta = std::fs::metadata(dir.join("a")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 4321);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o440);
    }

    #[test]
    fn an_empty_payload_is_an_empty_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("opt");
        assert!(write(&dir, &[], None).unwrap());
        assert!(!write(&dir, &[], None).unwrap());
        let visible: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with(".."))
            .collect();
        assert!(visible.is_empty());
    }
}
