//! `USER` strings (`uid`, `uid:gid`, `name`, `name:group`) resolved against
//! the image's own `/etc/passwd` and `/etc/group`, the way Docker does.

use std::io;
use std::path::Path;

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
    match read_in_rootfs(rootfs, path, MAX_DB_BYTES) {
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

/// Largest `/etc/passwd` or `/etc/group` read from an image: real ones are
/// kilobytes; a hostile one may be gigabytes.
pub(crate) const MAX_DB_BYTES: u64 = 4 << 20;

/// Reads `path` as seen from inside `rootfs`, without ever blocking or
/// leaving it: the kernel resolves every component, symlinks included, with
/// `rootfs` as `/` (`openat2` with `RESOLVE_IN_ROOT`), so an image's link
/// such as `/etc/passwd -> /host/passwd` or `../../..` cannot reach the
/// host. The file is opened non-blocking (a FIFO must not hang the agent)
/// and must be a regular file of at most `limit` bytes. `None` when absent.
pub(crate) fn read_in_rootfs(rootfs: &Path, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let root = match std::fs::File::open(rootfs) {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let relative = path.trim_start_matches('/');
    let file = match openat2(&root, relative, how) {
        Ok(fd) => std::fs::File::from(fd),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(errno) => return Err(errno.into()),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a regular file (a {})", kind_of(&meta.file_type())),
        ));
    }
    if meta.len() > limit {
        return Err(too_large(limit));
    }
    // The size may grow between the check and the read (an upper layer being
    // written): read one byte past the limit to notice.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    io::Read::read_to_end(&mut io::Read::take(file, limit + 1), &mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(Some(bytes))
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {} MiB", limit >> 20),
    )
}

fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "special file"
    }
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

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = rootfs();
        let root = dir.path();
        let passwd = root.join("etc/passwd");
        fs::remove_file(&passwd).unwrap();
        nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        // Opening a FIFO for reading would wait for a writer for ever.
        let err = resolve(root, Some("app")).unwrap_err();
        assert!(err.contains("/etc/passwd") && err.contains("FIFO"), "{err}");
        // The same through a link, and a directory in its place.
        fs::rename(&passwd, root.join("etc/pipe")).unwrap();
        std::os::unix::fs::symlink("/etc/pipe", &passwd).unwrap();
        let err = resolve(root, Some("1000")).unwrap_err();
        assert!(err.contains("FIFO"), "{err}");
        fs::remove_file(&passwd).unwrap();
        fs::create_dir(&passwd).unwrap();
        let err = resolve(root, None).unwrap_err();
        assert!(err.contains("directory"), "{err}");
    }

    #[test]
    fn oversized_databases_are_refused() {
        let dir = rootfs();
        let group = dir.path().join("etc/group");
        let file = fs::File::create(&group).unwrap();
        // Sparse: no disk needed for a file past the limit.
        file.set_len(MAX_DB_BYTES + 1).unwrap();
        let err = resolve(dir.path(), Some("app")).unwrap_err();
        assert!(
            err.contains("/etc/group") && err.contains("larger than 4 MiB"),
            "{err}"
        );
        file.set_len(MAX_DB_BYTES).unwrap();
        assert_eq!(resolve(dir.path(), Some("5:6")).unwrap().uid, 5);
    }
}
