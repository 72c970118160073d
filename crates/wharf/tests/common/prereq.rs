//! What an end-to-end test needs from the machine. A missing prerequisite
//! fails the test under CI (`CI=true`), where the tools must be installed,
//! and skips it elsewhere so that `cargo test` works on any machine.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `true` when the test may go on. When `available` is false: panics with
/// `what` under CI, otherwise prints "skipping: `what`" and returns false.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} (CI=true, so this test may not be skipped)");
    }
    // Straight to stderr: libtest captures `eprintln!` of passing tests,
    // and a skip should be seen.
    let _ = writeln!(std::io::stderr(), "skipping: {what}");
    false
}

/// Requires the executable `name` on the PATH; `install` says how to get it.
pub fn require_tool(name: &str, install: &str) -> bool {
    require(
        find_executable(name).is_some(),
        &format!("{name} not installed: {install}"),
    )
}

/// Requires running as root; `why` names what needs it.
pub fn require_root(why: &str) -> bool {
    require(
        nix::unistd::geteuid().is_root(),
        &format!("{why} needs root: run the tests as root"),
    )
}

/// The first executable called `name` on the PATH (or `name` itself when it
/// is a path).
pub fn find_executable(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return is_executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
