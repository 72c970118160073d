//! The `wharf` client as a child process: its own configuration directory
//! (`HOME`), standard input fed from a string, and success checks that show
//! what it printed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `wharf` with `home` as its home directory and none of the environment
/// that would point it elsewhere.
pub fn wharf(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("WHARF_SERVER")
        .env_remove("WHARF_PROJECT");
    command
}

/// Runs `wharf ARGS` with its own home directory, feeding `stdin`.
pub fn run(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = wharf(home);
    command.args(args);
    run_with_stdin(command, stdin)
}

/// The standard error of a run that must have failed.
#[track_caller]
pub fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "unexpectedly succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// Runs `command` to its end with `input` on its standard input.
pub fn run_with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The standard output of a run that must have succeeded.
#[track_caller]
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Logs `home`'s client in to `url` as `admin`.
pub fn log_in_as_admin(home: &Path, url: &str) {
    ok(run(
        home,
        &["login", url, "-u", "admin", "--password-stdin"],
        &format!("{}\n", super::server::ADMIN_PASSWORD),
    ));
}
