//! `USER` strings (`uid`, `uid:gid`, `name`, `name:group`) resolved against
//! the image's own `/etc/passwd` and `/etc/group`, the way Docker does.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A user resolved to numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups from `/etc/group` membership.
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd`, for `HOME`.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `user` (empty or `None` = root) inside `rootfs`.
pub(crate) fn resolve(rootfs: &Path, user: Option<&str>) -> Result<ResolvedUser, String> {
    let user = user.map(str::trim).unwrap_or("");
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // Numeric ids need no files; read them only when a name must be looked up
    // or there may be a home directory and groups to find.
    let passwd = read_db(rootfs, "etc/passwd")?
        .map(|text| parse_passwd(&text))
        .unwrap_or_default();
    let groups = read_db(rootfs, "etc/group")?
        .map(|text| parse_group(&text))
        .unwrap_or_default();

    let entry =
        match user_part.parse::<u32>() {
            Ok(uid) => passwd.iter().find(|e| e.uid == uid),
            Err(_) => Some(passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
                format!("user {user_part:?} not found in the image's /etc/passwd")
            })?),
        };
    let uid = match entry {
        Some(e) => e.uid,
        None => user_part.parse().expect("numeric when not found by name"),
    };
    let gid = match group_part {
        None | Some("") => entry.map_or(0, |e| e.gid),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|g| g.name == group)
                    .ok_or_else(|| format!("group {group:?} not found in the image's /etc/group"))?
                    .gid
            }
        },
    };
    // As login's initgroups: the primary group, then every group listing the
    // user. An explicit group replaces them all, as in Docker.
    let mut additional_gids = Vec::new();
    if group_part.is_none_or(str::is_empty)
        && let Some(entry) = entry
    {
        additional_gids.push(gid);
        for group in &groups {
            if group.gid != gid
                && group.members.contains(&entry.name)
                && !additional_gids.contains(&group.gid)
            {
                additional_gids.push(group.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

fn read_db(rootfs: &Path, path: &str) -> Result<Option<String>, String> {
    match read_in_rootfs(rootfs, path) {
        Ok(bytes) => Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned())),
        Err(e) => Err(format!("reading /{path} of the image: {e}")),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .unwrap_or(&"")
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

/// Reads `path` as seen from inside `rootfs`: symlinks are followed as the
/// container would follow them, so an image's absolute link such as
/// `/etc/passwd -> /host/passwd` cannot make us read the host's files.
pub(crate) fn read_in_rootfs(rootfs: &Path, path: &str) -> io::Result<Option<Vec<u8>>> {
    const MAX_LINKS: usize = 40;
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = rootfs
            .join(resolved.iter().collect::<PathBuf>())
            .join(&part);
        let meta = match std::fs::symlink_metadata(&candidate) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other("too many symbolic links"));
            }
            let target = std::fs::read_link(&candidate)?;
            if target.is_absolute() {
                resolved.clear();
            }
            let mut parts = components(&target);
            parts.reverse();
            pending.extend(parts);
        } else {
            resolved.push(part);
        }
    }
    let full = rootfs.join(resolved.iter().collect::<PathBuf>());
    match std::fs::read(&full) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Normal and `..` components; the root and `.` mean nothing inside a rootfs.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             # comment\n\
             app:x:1000:1001:App:/home/app:/bin/sh\n\
             broken line\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:root,app\naudio:x:29: app \nother:x:30:bob\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn empty_is_root_with_its_groups() {
        let dir = rootfs();
        let user = resolve(dir.path(), None).unwrap();
        assert_eq!((user.uid, user.gid), (0, 0));
        assert_eq!(user.additional_gids, vec![0, 10]);
        assert_eq!(user.home.as_deref(), Some("/root"));
        assert_eq!(resolve(dir.path(), Some("")).unwrap(), user);
    }

    #[test]
    fn names_and_numbers() {
        let dir = rootfs();
        let app = resolve(dir.path(), Some("app")).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1001));
        assert_eq!(app.additional_gids, vec![1001, 10, 29]);
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        // A known uid takes the passwd entry's group and memberships.
        assert_eq!(resolve(dir.path(), Some("1000")).unwrap(), app);

        let explicit = resolve(dir.path(), Some("app:wheel")).unwrap();
        assert_eq!((explicit.uid, explicit.gid), (1000, 10));
        assert!(explicit.additional_gids.is_empty());
        let numeric = resolve(dir.path(), Some("1000:7")).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (1000, 7));

        // Unknown numbers need no entry: group 0, no home.
        let nobody = resolve(dir.path(), Some("4242")).unwrap();
        assert_eq!((nobody.uid, nobody.gid, nobody.home), (4242, 0, None));
        assert!(nobody.additional_gids.is_empty());
        let both = resolve(dir.path(), Some("4242:4343")).unwrap();
        assert_eq!((both.uid, both.gid), (4242, 4343));
    }

    #[test]
    fn unknown_names_are_errors() {
        let dir = rootfs();
        let err = resolve(dir.path(), Some("ghost")).unwrap_err();
        assert!(err.contains("user \"ghost\" not found"), "{err}");
        let err = resolve(dir.path(), Some("app:ghosts")).unwrap_err();
        assert!(err.contains("group \"ghosts\" not found"), "{err}");
    }

    #[test]
    fn numbers_need_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let user = resolve(dir.path(), Some("5:6")).unwrap();
        assert_eq!((user.uid, user.gid), (5, 6));
        assert!(resolve(dir.path(), Some("app")).is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_rootfs() {
        let dir = rootfs();
        let root = dir.path();
        fs::create_dir_all(root.join("data")).unwrap();
        fs::rename(root.join("etc/passwd"), root.join("data/passwd")).unwrap();
        // Absolute links resolve against the rootfs, not the host.
        std::os::unix::fs::symlink("/data/passwd", root.join("etc/passwd")).unwrap();
        assert_eq!(resolve(root, Some("app")).unwrap().uid, 1000);
        // `..` cannot climb out of the rootfs either.
        fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../data/passwd", root.join("etc/passwd")).unwrap();
        assert_eq!(resolve(root, Some("app")).unwrap().uid, 1000);
        // A loop is an error, not a hang.
        fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("passwd", root.join("etc/passwd")).unwrap();
        assert!(resolve(root, Some("app")).is_err());
    }
}
