//! Runs a pool's [`InitProfile`] on this machine, in the profile's order:
//! packages (apt-get, only the missing ones), kernel modules (modprobe),
//! sysctls (written under `/proc/sys`), files (written atomically), then
//! the script (`sh -c`, with a timeout). Every step checks before it acts,
//! so a second run changes nothing and succeeds.
//!
//! Blocking: it forks and writes files, so callers run it on a blocking
//! thread.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wharf_api::{InitFile, InitProfile};

/// How long the script may run by default.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);
/// How much of the script's output ends a failure message.
const OUTPUT_TAIL: usize = 1024;

/// A step that failed: which, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFailure {
    /// `packages`, `kernelModules`, `sysctls`, `files` or `script`.
    pub step: &'static str,
    /// What went wrong, naming the package, module, key or path.
    pub message: String,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.message)
    }
}

/// What a run leaves behind besides the machine's new state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    /// The script's output (stdout then stderr), empty without a script.
    pub script_output: String,
}

/// Where a profile's steps act: the machine's root and `/proc/sys`, or
/// directories standing in for them in tests.
#[derive(Clone, Debug)]
pub struct InitRunner {
    /// What file paths are under (`/`).
    pub root: PathBuf,
    /// Where sysctls are (`/proc/sys`).
    pub proc_sys: PathBuf,
    /// How long the script may run.
    pub script_timeout: Duration,
}

impl Default for InitRunner {
    fn default() -> Self {
        InitRunner {
            root: PathBuf::from("/"),
            proc_sys: PathBuf::from("/proc/sys"),
            script_timeout: DEFAULT_SCRIPT_TIMEOUT,
        }
    }
}

impl InitRunner {
    /// Runs `profile`'s steps in order, calling `step` as each starts;
    /// stops at the first failure.
    pub fn run(
        &self,
        profile: &InitProfile,
        mut step: impl FnMut(&'static str),
    ) -> Result<InitReport, StepFailure> {
        let fail = |step: &'static str| move |message: String| StepFailure { step, message };
        if !profile.packages.is_empty() {
            step("packages");
            install_packages(&profile.packages).map_err(fail("packages"))?;
        }
        if !profile.kernel_modules.is_empty() {
            step("kernelModules");
            load_modules(&profile.kernel_modules).map_err(fail("kernelModules"))?;
        }
        if !profile.sysctls.is_empty() {
            step("sysctls");
            for (key, value) in &profile.sysctls {
                self.set_sysctl(key, value).map_err(fail("sysctls"))?;
            }
        }
        if !profile.files.is_empty() {
            step("files");
            for file in &profile.files {
                self.write_file(file).map_err(fail("files"))?;
            }
        }
        let mut report = InitReport::default();
        if let Some(script) = &profile.script {
            step("script");
            report.script_output =
                run_script(script, self.script_timeout).map_err(fail("script"))?;
        }
        Ok(report)
    }

    /// Writes `value` to the sysctl `key` unless it has it already
    /// (compared word by word: the kernel writes tabs between fields).
    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let path = sysctl_path(&self.proc_sys, key)?;
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let current = fs::read_to_string(&path)
            .map_err(|e| format!("sysctl {key}: reading {}: {e}", path.display()))?;
        if words(&current) == words(value) {
            return Ok(());
        }
        fs::write(&path, format!("{value}\n"))
            .map_err(|e| format!("sysctl {key}: writing {value:?}: {e}"))
    }

    /// Writes `file` under the root atomically (a temp file in the same
    /// directory, fsynced, renamed over), unless it already has that
    /// content and mode.
    fn write_file(&self, file: &InitFile) -> Result<(), String> {
        let target = under_root(&self.root, &file.path)?;
        let mode = match &file.mode {
            Some(mode) => u32::from_str_radix(mode, 8)
                .map_err(|_| format!("{}: mode {mode:?} is not octal", file.path))?,
            None => 0o644,
        };
        if let Ok(meta) = fs::symlink_metadata(&target)
            && meta.is_file()
            && meta.permissions().mode() & 0o7777 == mode
            && fs::read(&target).is_ok_and(|c| c == file.content.as_bytes())
        {
            return Ok(());
        }
        let at = |e: std::io::Error| format!("{}: {e}", file.path);
        let dir = target
            .parent()
            .ok_or_else(|| format!("{}: no parent", file.path))?;
        fs::create_dir_all(dir).map_err(at)?;
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let temp = dir.join(format!(".{name}.wharf-init.{}", std::process::id()));
        let written = (|| {
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            out.write_all(file.content.as_bytes())?;
            // Set explicitly: the umask must not narrow the profile's mode.
            out.set_permissions(fs::Permissions::from_mode(mode))?;
            out.sync_all()?;
            fs::rename(&temp, &target)?;
            File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(at)
    }
}

/// `/proc/sys/<key with dots as slashes>`, refusing a key that could
/// name anything outside it.
fn sysctl_path(proc_sys: &Path, key: &str) -> Result<PathBuf, String> {
    let parts: Vec<&str> = key.split('.').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    if !parts.iter().all(plain) {
        return Err(format!("{key:?} is not a sysctl name"));
    }
    Ok(parts
        .iter()
        .fold(proc_sys.to_path_buf(), |p, part| p.join(part)))
}

/// `path` (absolute, no `..`) under `root`.
fn under_root(root: &Path, path: &str) -> Result<PathBuf, String> {
    let relative = Path::new(path)
        .strip_prefix("/")
        .map_err(|_| format!("{path:?} is not an absolute path"))?;
    let normal = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !normal || relative.as_os_str().is_empty() {
        return Err(format!("{path:?} is not a plain absolute path"));
    }
    Ok(root.join(relative))
}

/// Installs the packages dpkg does not list as installed, without
/// questions; refreshes the package lists once if the install fails.
fn install_packages(packages: &[String]) -> Result<(), String> {
    let missing: Vec<&String> = packages.iter().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = || {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        output_of(&mut apt, "apt-get install")
    };
    if install().is_ok() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    output_of(&mut update, "apt-get update")?;
    install().map(drop)
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

/// Loads the modules not loaded yet.
fn load_modules(modules: &[String]) -> Result<(), String> {
    for module in modules {
        if Path::new("/sys/module").join(module).exists() {
            continue;
        }
        output_of(
            Command::new("modprobe").arg(module),
            &format!("modprobe {module}"),
        )?;
    }
    Ok(())
}

/// Runs `command` to its end; its output, or an error with its tail.
fn output_of(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    let text = merged(&out.stdout, &out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{what}: {}: {}", out.status, tail(&text)))
    }
}

/// Runs `script` with `sh -c`, killing it (and whatever it started, its
/// process group) after `timeout`; its output.
fn run_script(script: &str, timeout: Duration) -> Result<String, String> {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting sh: {e}"))?;
    // Drained on threads of their own, so a chatty script never blocks
    // on a full pipe while we wait for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        match child
            .try_wait()
            .map_err(|e| format!("waiting for sh: {e}"))?
        {
            Some(status) => break Some(status),
            None if started.elapsed() >= timeout => {
                // The group: a child left holding the pipes would keep
                // the output readers waiting.
                let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
                let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let output = merged(
        &stdout.join().unwrap_or_default(),
        &stderr.join().unwrap_or_default(),
    );
    match status {
        Some(status) if status.success() => Ok(output),
        Some(status) => Err(format!("{status}: {}", tail(&output))),
        None => Err(format!(
            "killed after {}s: {}",
            timeout.as_secs(),
            tail(&output)
        )),
    }
}

fn merged(stdout: &[u8], stderr: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(stderr));
    text
}

/// The last [`OUTPUT_TAIL`] bytes of `text` (at a character boundary),
/// trimmed.
fn tail(text: &str) -> &str {
    let text = text.trim();
    let mut from = text.len().saturating_sub(OUTPUT_TAIL);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn runner(dir: &Path) -> InitRunner {
        let proc_sys = dir.join("proc-sys");
        fs::create_dir_all(proc_sys.join("net/ipv4")).unwrap();
        fs::write(proc_sys.join("net/ipv4/ip_default_ttl"), "64\n").unwrap();
        fs::write(proc_sys.join("net/ipv4/ping_group_range"), "1\t0\n").unwrap();
        InitRunner {
            root: dir.join("root"),
            proc_sys,
            script_timeout: Duration::from_secs(5),
        }
    }

    fn file(path: &str, content: &str, mode: Option<&str>) -> InitFile {
        InitFile {
            path: path.into(),
            content: content.into(),
            mode: mode.map(str::to_string),
        }
    }

    #[test]
    fn steps_run_in_order_and_a_second_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let runner = runner(dir.path());
        let marker = dir.path().join("ran");
        let profile = InitProfile {
            sysctls: BTreeMap::from([
                ("net.ipv4.ip_default_ttl".into(), "77".into()),
                ("net.ipv4.ping_group_range".into(), "0 2147483647".into()),
            ]),
            files: vec![
                file("/etc/wharf/motd", "hello\n", Some("0600")),
                file("/etc/plain", "plain", None),
            ],
            script: Some(format!("echo ran >> {}; echo done", marker.display())),
            ..InitProfile::default()
        };
        let mut steps = Vec::new();
        let report = runner.run(&profile, |s| steps.push(s)).unwrap();
        assert_eq!(steps, ["sysctls", "files", "script"]);
        assert_eq!(report.script_output, "done\n");
        let sys = |key: &str| fs::read_to_string(runner.proc_sys.join(key)).unwrap();
        assert_eq!(sys("net/ipv4/ip_default_ttl"), "77\n");
        let motd = runner.root.join("etc/wharf/motd");
        assert_eq!(fs::read_to_string(&motd).unwrap(), "hello\n");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&motd), 0o600);
        assert_eq!(mode(&runner.root.join("etc/plain")), 0o644, "the default");

        // Again: files and sysctls already right are not rewritten (same
        // inode, same modification time); no temp file is left.
        let inode = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            let m = fs::metadata(p).unwrap();
            (m.ino(), m.mtime_nsec())
        };
        let before = inode(&motd);
        fs::write(
            runner.proc_sys.join("net/ipv4/ping_group_range"),
            "0\t2147483647\n",
        )
        .unwrap();
        let sysctl_before = inode(&runner.proc_sys.join("net/ipv4/ping_group_range"));
        runner.run(&profile, |_| {}).unwrap();
        assert_eq!(inode(&motd), before);
        let sysctl_after = inode(&runner.proc_sys.join("net/ipv4/ping_group_range"));
        assert_eq!(sysctl_before, sysctl_after, "tabs and spaces read alike");
        let names: Vec<_> = fs::read_dir(runner.root.join("etc/wharf"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["motd"]);

        // A changed mode or content is written again.
        let mut changed = profile.clone();
        changed.files[0].mode = Some("0640".into());
        changed.files[0].content = "bye\n".into();
        runner.run(&changed, |_| {}).unwrap();
        assert_eq!(fs::read_to_string(&motd).unwrap(), "bye\n");
        assert_eq!(mode(&motd), 0o640);
    }

    #[test]
    fn a_failing_script_names_its_exit_and_its_output_tail() {
        let dir = tempfile::tempdir().unwrap();
        let runner = runner(dir.path());
        let profile = InitProfile {
            script: Some("echo preparing; echo 'no disk /dev/sdz' >&2; exit 3".into()),
            ..InitProfile::default()
        };
        let failure = runner.run(&profile, |_| {}).unwrap_err();
        assert_eq!(failure.step, "script");
        assert!(failure.message.contains("exit status: 3"), "{failure}");
        assert!(failure.message.contains("no disk /dev/sdz"), "{failure}");

        let slow = InitProfile {
            script: Some("echo started; sleep 30".into()),
            ..InitProfile::default()
        };
        let quick = InitRunner {
            script_timeout: Duration::from_millis(300),
            ..runner
        };
        let started = Instant::now();
        let failure = quick.run(&slow, |_| {}).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(failure.message.contains("killed after"), "{failure}");
    }

    #[test]
    fn nothing_is_written_outside_proc_sys_or_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let runner = runner(dir.path());
        for key in ["..", "net..ipv4", "net/ipv4.x", "../../etc/passwd", ""] {
            assert!(sysctl_path(&runner.proc_sys, key).is_err(), "{key:?}");
        }
        assert!(sysctl_path(&runner.proc_sys, "net.ipv4.ip_forward").is_ok());
        for path in ["relative", "/a/../b", "/"] {
            assert!(under_root(&runner.root, path).is_err(), "{path:?}");
        }
        let missing = InitProfile {
            sysctls: BTreeMap::from([("net.ipv4.no_such_key".into(), "1".into())]),
            ..InitProfile::default()
        };
        let failure = runner.run(&missing, |_| {}).unwrap_err();
        assert_eq!(failure.step, "sysctls");
        assert!(
            failure.message.contains("net.ipv4.no_such_key"),
            "{failure}"
        );
    }

    #[test]
    fn tails_cut_at_a_character() {
        let long = "é".repeat(OUTPUT_TAIL);
        assert!(tail(&long).len() <= OUTPUT_TAIL);
        assert_eq!(tail("  short \n"), "short");
    }
}
