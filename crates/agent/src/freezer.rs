//! Freezing a container through its cgroup's freezer, the mechanism
//! `runc pause` itself uses (cgroup v1 `freezer.state`, v2
//! `cgroup.freeze`), without starting runc.
//!
//! Why not `runc pause` / `runc resume`: each is a process start (a Go
//! binary reading its state directory, a few milliseconds each here),
//! and both sit inside the frozen interval of a commit. A commit with a
//! pre-copy freezes only for a walk of the upper directory and what
//! changed since, often a millisecond or two: two process starts would be
//! most of the pause. runc derives a container's `paused` status from the
//! same freezer (`runc state` reads it), so runc never claims anything
//! false: `paused` while frozen here, `running` once thawed.
//!
//! Reading and writing these files blocks (briefly): call from a blocking
//! thread.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a freeze may take to complete before it is given up (and the
/// cgroup thawed): tasks in uninterruptible sleep (a hung NFS read) can
/// keep a cgroup `FREEZING` indefinitely.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait between reads of the freezer's state; it doubles up to
/// [`MAX_POLL`]. Freezing a few processes takes well under a millisecond.
const FIRST_POLL: Duration = Duration::from_micros(50);
const MAX_POLL: Duration = Duration::from_millis(5);

/// Which cgroup interface the freezer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// `freezer.state`: `FROZEN`, `FREEZING`, `THAWED`.
    V1,
    /// `cgroup.freeze` (0/1), with `frozen 0|1` in `cgroup.events`.
    V2,
}

/// The freezer of one container's cgroup.
#[derive(Debug, Clone)]
pub(crate) struct CgroupFreezer {
    dir: PathBuf,
    version: Version,
}

impl CgroupFreezer {
    /// The freezer of the cgroup process `pid` is in: the v1 `freezer`
    /// hierarchy when one is mounted (hybrid hosts), otherwise cgroup v2.
    pub(crate) fn of_process(pid: u32) -> io::Result<CgroupFreezer> {
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        let freezer = locate(&cgroups, &mounts).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no freezer cgroup found for process {pid}"),
            )
        })?;
        let control = freezer.control_file();
        if !control.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing", control.display()),
            ));
        }
        Ok(freezer)
    }

    fn control_file(&self) -> PathBuf {
        match self.version {
            Version::V1 => self.dir.join("freezer.state"),
            Version::V2 => self.dir.join("cgroup.freeze"),
        }
    }

    /// Freezes the cgroup and waits until every task in it is frozen. If
    /// that does not happen within [`FREEZE_TIMEOUT`], or anything fails,
    /// the cgroup is thawed again before the error is returned.
    pub(crate) fn freeze(&self) -> io::Result<()> {
        let result = self.freeze_and_wait();
        if result.is_err() {
            let _ = self.thaw();
        }
        result
    }

    fn freeze_and_wait(&self) -> io::Result<()> {
        let (control, on) = match self.version {
            Version::V1 => (self.control_file(), "FROZEN"),
            Version::V2 => (self.control_file(), "1"),
        };
        fs::write(&control, on)?;
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let mut pause = FIRST_POLL;
        loop {
            if self.is_frozen()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not freeze within {} s",
                        self.dir.display(),
                        FREEZE_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_POLL);
            if self.version == Version::V1 {
                // A task forked while freezing can be missed; asking again
                // picks it up (runc does the same).
                fs::write(&control, on)?;
            }
        }
    }

    /// Whether every task of the cgroup is frozen now.
    fn is_frozen(&self) -> io::Result<bool> {
        Ok(match self.version {
            Version::V1 => fs::read_to_string(self.dir.join("freezer.state"))?.trim() == "FROZEN",
            Version::V2 => fs::read_to_string(self.dir.join("cgroup.events"))?
                .lines()
                .any(|line| line.trim() == "frozen 1"),
        })
    }

    /// Thaws the cgroup. A single write that takes effect at once (the
    /// tasks wake as they are scheduled), so it is also safe from `Drop`.
    pub(crate) fn thaw(&self) -> io::Result<()> {
        let off = match self.version {
            Version::V1 => "THAWED",
            Version::V2 => "0",
        };
        fs::write(self.control_file(), off)
    }

    /// The processes in the cgroup (read while frozen, this is all of
    /// them).
    pub(crate) fn processes(&self) -> io::Result<Vec<u32>> {
        let text = fs::read_to_string(self.dir.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

/// The freezer of the cgroup named in `cgroups` (a `/proc/PID/cgroup`),
/// mounted as `mounts` (a `/proc/self/mountinfo`) says.
fn locate(cgroups: &str, mounts: &str) -> Option<CgroupFreezer> {
    let mut v2_path = None;
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        if controllers.split(',').any(|c| c == "freezer")
            && let Some(dir) = mounted(mounts, path, |fstype, options| {
                fstype == "cgroup" && options.split(',').any(|o| o == "freezer")
            })
        {
            return Some(CgroupFreezer {
                dir,
                version: Version::V1,
            });
        }
        if controllers.is_empty() {
            v2_path = Some(path);
        }
    }
    let dir = mounted(mounts, v2_path?, |fstype, _| fstype == "cgroup2")?;
    Some(CgroupFreezer {
        dir,
        version: Version::V2,
    })
}

/// Where the cgroup `path` is, on the first mount of a hierarchy that
/// `wanted(fstype, super options)` accepts.
fn mounted(mounts: &str, path: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    for line in mounts.lines() {
        // `id parent maj:min root mountpoint options [optional...] - fstype source super`
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = before.split(' ');
        let (Some(root), Some(mountpoint)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        let mut after = after.split(' ');
        let (Some(fstype), Some(options)) = (after.next(), after.nth(1)) else {
            continue;
        };
        if !wanted(fstype, options) {
            continue;
        }
        // A mount of a sub-tree shows the paths below its root.
        let relative = Path::new(path).strip_prefix(root).ok()?;
        return Some(Path::new(mountpoint).join(relative));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime shared:9 - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    /// A real cgroup (v1 freezer hierarchy where there is one, else v2)
    /// with a `sleep` in it: found from the process, frozen until the
    /// kernel says so, its process listed, thawed.
    #[test]
    fn freezes_and_thaws_a_real_cgroup() {
        if !nix::unistd::Uid::effective().is_root() {
            // The agent's crate has no testkit: the same rule by hand.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "freezing a cgroup needs root (CI=true, so this test may not be skipped)"
            );
            eprintln!("skipping: freezing a cgroup needs root");
            return;
        }
        let name = format!("/wharf-freezer-test-{}", std::process::id());
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let cgroup = locate(&format!("1:freezer:{name}\n0::{name}\n"), &mounts).unwrap();
        fs::create_dir(&cgroup.dir).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        fs::write(cgroup.dir.join("cgroup.procs"), pid.to_string()).unwrap();

        let found = CgroupFreezer::of_process(pid).unwrap();
        assert_eq!((&found.dir, found.version), (&cgroup.dir, cgroup.version));
        assert!(!found.is_frozen().unwrap());
        found.freeze().unwrap();
        assert!(found.is_frozen().unwrap());
        assert_eq!(found.processes().unwrap(), [pid]);
        found.thaw().unwrap();
        assert!(!found.is_frozen().unwrap());

        child.kill().unwrap();
        child.wait().unwrap();
        // The cgroup is removable once empty; the kernel may take a moment.
        for _ in 0..100 {
            if fs::remove_dir(&cgroup.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!cgroup.dir.exists());
    }

    #[test]
    fn finds_the_v1_freezer_on_a_hybrid_host() {
        let cgroups = "6:freezer:/wharf/pod1-web\n4:memory:/wharf/pod1-web\n0::/\n";
        let freezer = locate(cgroups, HYBRID_MOUNTS).unwrap();
        assert_eq!(freezer.version, Version::V1);
        assert_eq!(
            freezer.control_file(),
            Path::new("/sys/fs/cgroup/freezer/wharf/pod1-web/freezer.state")
        );
    }

    #[test]
    fn finds_cgroup_v2_without_a_v1_freezer() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";
        let freezer = locate("0::/wharf/pod1-web\n", mounts).unwrap();
        assert_eq!(freezer.version, Version::V2);
        assert_eq!(
            freezer.control_file(),
            Path::new("/sys/fs/cgroup/wharf/pod1-web/cgroup.freeze")
        );
        assert!(locate("0::/x\n", HYBRID_MOUNTS.lines().next().unwrap()).is_none());
    }
}
