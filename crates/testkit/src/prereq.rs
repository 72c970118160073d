//! What a test needs from the machine; see the crate documentation.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether tests run under CI (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `true` when the test may go on. When `available` is false: panics with
/// `what` under CI, otherwise prints "skipping: `what`" and returns false.
#[track_caller]
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if under_ci() {
        panic!("{what} (CI=true, so this test may not be skipped)");
    }
    // Straight to stderr: libtest captures `eprintln!` of passing tests,
    // and a skip should be seen.
    let _ = writeln!(std::io::stderr(), "skipping: {what}");
    false
}

/// Requires the executable `name` on the PATH; `install` says how to get it.
#[track_caller]
pub fn require_tool(name: &str, install: &str) -> bool {
    require(
        find_executable(name).is_some(),
        &format!("{name} not installed: {install}"),
    )
}

/// Requires running as root; `why` names what needs it.
#[track_caller]
pub fn require_root(why: &str) -> bool {
    require(
        is_root(),
        &format!("{why} needs root: run the tests as root"),
    )
}

/// Requires root and every program in `programs` on the PATH, for `test`.
#[track_caller]
pub fn require_root_and(test: &str, programs: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root privileges".to_owned());
    }
    for program in programs {
        if find_executable(program).is_none() {
            missing.push(format!("program `{program}`"));
        }
    }
    require(
        missing.is_empty(),
        &format!("{test} needs {}", missing.join(", ")),
    )
}

/// Whether this process runs with effective uid 0 (read from
/// `/proc/self/status`, which needs no `unsafe` call).
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_the_path_and_by_path() {
        assert!(find_executable("sh").is_some());
        assert!(find_executable("/bin/sh").is_some());
        assert!(find_executable("no-such-program-here").is_none());
        assert!(find_executable("/proc/self/status").is_none());
    }

    #[test]
    fn present_prerequisites_pass() {
        assert!(require(true, "nothing"));
        assert!(require_tool("sh", "always there"));
    }
}
