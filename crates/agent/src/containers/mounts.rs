//! Mounts the agent makes under a pod's directory (container roots, volume
//! tmpfs and bind mounts) and their removal. A directory is only deleted
//! once nothing is mounted under it: deleting through a bind mount would
//! delete the host files it shows.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

/// Unmounts `target` if something is mounted there.
pub(super) fn unmount(target: &Path) -> Result<(), String> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(err) => Err(format!("unmounting {}: {err}", target.display())),
    }
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
pub fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points_under(&text, dir)
}

/// [`mounted_under`] from the text of a mountinfo file.
fn mount_points_under(text: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    // Later mounts may stack over earlier ones; children sort after parents.
    points.reverse();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// Whether something is mounted exactly at `path`.
pub(super) fn is_mount_point(path: &Path) -> bool {
    mounted_under(path).iter().any(|p| p == path)
}

/// Unmounts everything at or under `dir`, deepest first; fails if a mount
/// stays, so the caller does not delete through it.
pub(super) fn unmount_all_under(dir: &Path) -> Result<(), String> {
    for point in mounted_under(dir) {
        unmount(&point)?;
    }
    match mounted_under(dir).first() {
        Some(left) => Err(format!("{} is still mounted", left.display())),
        None => Ok(()),
    }
}

/// Removes `dir` and what is in it once nothing is mounted under it; an
/// absent directory is fine.
pub(super) fn remove_unmounted(dir: &Path) -> Result<(), String> {
    unmount_all_under(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
pub(super) fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_under_a_directory_come_deepest_first() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:52 / /n/pods/a/containers/web/rootfs rw - overlay overlay rw
99 22 0:53 / /n/pods/a/volumes/cache rw - tmpfs tmpfs rw,size=65536k
100 98 0:54 / /n/pods/a/containers/web/volumes/0 rw - ext4 /dev/vda rw
101 22 0:55 / /n/pods/ab/volumes/x rw - tmpfs tmpfs rw
102 22 0:56 / /n/pods/a/volumes/my\\040dir rw - tmpfs tmpfs rw
";
        let points = mount_points_under(text, Path::new("/n/pods/a"));
        assert_eq!(
            points,
            [
                PathBuf::from("/n/pods/a/containers/web/volumes/0"),
                PathBuf::from("/n/pods/a/containers/web/rootfs"),
                PathBuf::from("/n/pods/a/volumes/my dir"),
                PathBuf::from("/n/pods/a/volumes/cache"),
            ]
        );
    }
}
