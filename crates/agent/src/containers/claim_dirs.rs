//! The directories of PersistentVolumeClaims bound to this node.
//!
//! ```text
//! <data dir>/claims/<project>/<claim uid>    a claim's data, bind-mounted
//!                                            into each pod volume naming it
//! ```
//!
//! Keyed by project and the claim's uid, never by a name a user chose: a
//! claim deleted and made again under the same name starts empty. A
//! directory is made on first use and kept across pod deletion and agent
//! restarts; it is removed once its claim is no longer bound here (deleted
//! in the control plane, which happens only when no pod uses it) and no
//! pod this agent holds uses it. Nothing bounds its size: capacity is
//! recorded on the claim, not enforced.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the claims of this node live.
#[derive(Clone, Debug)]
pub(super) struct ClaimDirs {
    root: PathBuf,
}

impl ClaimDirs {
    /// Claim directories under `<data_dir>/claims`.
    pub(super) fn new(data_dir: &Path) -> ClaimDirs {
        ClaimDirs {
            root: data_dir.join("claims"),
        }
    }

    /// The directory of the claim with `uid` in `project`.
    pub(super) fn dir(&self, project: &str, uid: &str) -> PathBuf {
        self.root.join(project).join(uid)
    }

    /// Makes the claim's directory if it is not there yet; the root stays
    /// root-only, as the agent's other state.
    pub(super) fn make(&self, project: &str, uid: &str) -> Result<PathBuf, String> {
        use std::os::unix::fs::DirBuilderExt;
        // Both come from the control plane; still, each must stay one
        // path component under the root.
        for part in [project, uid] {
            if part.is_empty() || part.contains('/') || part == "." || part == ".." {
                return Err(format!("{part:?} cannot name a claim directory"));
            }
        }
        let dir = self.dir(project, uid);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.root.join(project))
            .map_err(|e| format!("{}: {e}", self.root.display()))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
        Ok(dir)
    }

    /// Removes every claim directory that is neither `bound` here nor
    /// `in_use` by a pod (both as `(project, uid)`); returns what went.
    /// Removal does not follow symlinks a container left in the data.
    pub(super) fn release(
        &self,
        bound: &HashSet<(String, String)>,
        in_use: &HashSet<(String, String)>,
    ) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for (project, uid) in self.present() {
            let key = (project, uid);
            if bound.contains(&key) || in_use.contains(&key) {
                continue;
            }
            let dir = self.dir(&key.0, &key.1);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => removed.push(dir),
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "removing a released claim failed")
                }
            }
        }
        removed
    }

    /// The claim directories present, as `(project, uid)`.
    fn present(&self) -> Vec<(String, String)> {
        let names = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        };
        names(&self.root)
            .into_iter()
            .flat_map(|project| {
                names(&self.root.join(&project))
                    .into_iter()
                    .map(move |uid| (project.clone(), uid))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(project: &str, uid: &str) -> (String, String) {
        (project.into(), uid.into())
    }

    #[test]
    fn directories_stay_while_bound_or_used_and_go_after() {
        let data = tempfile::tempdir().unwrap();
        let dirs = ClaimDirs::new(data.path());
        let kept = dirs.make("shop", "uid-1").unwrap();
        std::fs::write(kept.join("data.txt"), "hello").unwrap();
        assert_eq!(dirs.make("shop", "uid-1").unwrap(), kept, "made once");
        for (project, uid) in [("shop", ".."), ("..", "x"), ("shop", "a/b"), ("shop", "")] {
            assert!(dirs.make(project, uid).is_err(), "{project}/{uid}");
        }
        assert_eq!(
            std::fs::read_to_string(kept.join("data.txt")).unwrap(),
            "hello"
        );
        let used = dirs.make("shop", "uid-2").unwrap();
        let released = dirs.make("lab", "uid-3").unwrap();
        // A link a container left points outside: removal does not follow it.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), released.join("link")).unwrap();
        let bound = HashSet::from([key("shop", "uid-1")]);
        let in_use = HashSet::from([key("shop", "uid-2")]);
        assert_eq!(dirs.release(&bound, &in_use), vec![released.clone()]);
        assert!(kept.join("data.txt").exists() && used.exists());
        assert!(!released.exists());
        assert!(outside.path().join("keep").exists());
        assert_eq!(dirs.release(&HashSet::new(), &HashSet::new()).len(), 2);
        assert!(!kept.exists());
    }
}
