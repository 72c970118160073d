//! Runs real containers with runc, as root, on a busybox rootfs.
//!
//! The test binary has its own `main` (`harness = false`) because it is also
//! the shim: `<this binary> shim ARGS` runs `shim_main`, exactly as
//! `wharf shim` does in production. Without root, runc or busybox the cases
//! are skipped, unless `CI=true`, where that is a failure.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use wharf_api::{Container, EnvVar, ResourceList};
use wharf_runc::spec::{ProcessDefaults, SpecOptions};
use wharf_runc::{
    Bundle, ExitStatus, Runc, RuncError, ShimArgs, ShimCommand, Started, Status, logs, shim_main,
    wait_for_exit_file,
};

const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "id", "pwd", "grep", "head", "tr", "hostname", "httpd", "true",
    "env", "ls",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        std::process::exit(shim_main(ShimArgs::parse_from(&args[1..])));
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tools = match Tools::find() {
        Ok(tools) => tools,
        Err(reason) => {
            // Fails under CI; elsewhere says why the tests are skipped.
            wharf_testkit::prereq::require(false, &format!("the runc tests: {reason}"));
            return;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run_cases(tools, filter));
}

type Case = fn(&Fixture) -> futures_util::future::BoxFuture<'_, ()>;

async fn run_cases(tools: Tools, filter: Option<String>) {
    macro_rules! cases {
        ($($name:ident),* $(,)?) => {
            [$((stringify!($name), (|f| Box::pin($name(f))) as Case)),*]
        };
    }
    let cases = cases![
        echo_env_args_user,
        exit_code_recorded,
        stop_graceful,
        stop_kills_after_grace,
        cgroup_limits,
        oom_killed,
        shim_survives_signals,
        stop_after_shim_death,
        missing_binary_fails,
        pause_and_resume,
    ];
    let fixture = Fixture::new(tools);
    let started = Instant::now();
    let mut ran = 0;
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        print!("test {name} ... ");
        let at = Instant::now();
        case(&fixture).await;
        println!("ok ({} ms)", at.elapsed().as_millis());
        ran += 1;
    }
    println!(
        "{ran} runc cases passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

struct Tools {
    runc: PathBuf,
    busybox: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root".into());
        }
        let find = |paths: &[&str], package: &str| {
            paths
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .ok_or_else(|| format!("{package} missing (apt-get install -y {package})"))
        };
        Ok(Tools {
            runc: find(
                &["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"],
                "runc",
            )?,
            busybox: find(&["/bin/busybox", "/usr/bin/busybox"], "busybox-static")?,
        })
    }
}

/// A busybox rootfs and a private runc root in a temp directory. Dropping it
/// deletes every container under that root, also after a failed case.
struct Fixture {
    dir: TempDir,
    rootfs: PathBuf,
    runc: Runc,
    shim: ShimCommand,
    /// Makes ids and cgroup paths unique to this run.
    prefix: String,
}

/// A container started by a case.
struct Ctr {
    id: String,
    log: PathBuf,
    exit: PathBuf,
    cgroups_path: String,
    started: Started,
}

impl Fixture {
    fn new(tools: Tools) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("wharf-runc-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "etc", "tmp", "home/app"] {
            fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        fs::copy(&tools.busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
        )
        .unwrap();
        let runc = Runc::new(&tools.runc, dir.path().join("runc-root"));
        Fixture {
            rootfs,
            runc,
            shim: ShimCommand::current_exe(&["shim"]).unwrap(),
            prefix: format!("wharf-test-{}", std::process::id()),
            dir,
        }
    }

    fn container(command: &[&str]) -> Container {
        Container {
            name: "main".into(),
            image: "busybox".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    async fn start(
        &self,
        name: &str,
        image: &ProcessDefaults,
        container: &Container,
    ) -> Result<Ctr, RuncError> {
        let id = format!("{}-{name}", self.prefix);
        let cgroups_path = format!("/{id}");
        let mut options = SpecOptions::new(&self.rootfs, name, &cgroups_path);
        options.pod_ip = Some("10.88.0.9".parse().unwrap());
        let dir = self.dir.path().join("bundles").join(name);
        let bundle = Bundle::create(&dir, image, container, &options).await?;
        let log = dir.join("log");
        let exit = dir.join("exit.json");
        let started = self
            .runc
            .create_and_start(&bundle, &id, &log, &exit, &self.shim)
            .await?;
        Ok(Ctr {
            id,
            log,
            exit,
            cgroups_path,
            started,
        })
    }

    async fn run_to_end(
        &self,
        name: &str,
        image: &ProcessDefaults,
        container: &Container,
    ) -> (Ctr, ExitStatus, String) {
        let ctr = self.start(name, image, container).await.unwrap();
        let status = wait_for_exit_file(&ctr.exit, Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no exit file"));
        let log = fs::read_to_string(&ctr.log).unwrap();
        (ctr, status, log)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let root = self.runc.root();
        let Ok(out) = Command::new(self.runc.binary())
            .arg("--root")
            .arg(root)
            .args(["list", "--quiet"])
            .output()
        else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new(self.runc.binary())
                .arg("--root")
                .arg(root)
                .args(["delete", "--force", id])
                .status();
        }
    }
}

fn image_with_user(user: Option<&str>) -> ProcessDefaults {
    ProcessDefaults {
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        env: vec!["GREETING=from-image".into(), "IMAGE_ONLY=kept".into()],
        working_dir: Some("/home/app".into()),
        user: user.map(String::from),
    }
}

fn memory_cgroup(ctr: &Ctr) -> PathBuf {
    Path::new("/sys/fs/cgroup/memory").join(ctr.cgroups_path.trim_start_matches('/'))
}

/// (a) Arguments, environment, user (by name and by number), working
/// directory and `/etc` files reach the process; output lands in the log.
async fn echo_env_args_user(f: &Fixture) {
    let script = "echo \"args:$*\"; echo \"greeting:$GREETING image:$IMAGE_ONLY home:$HOME\"; \
                  id; pwd; cat /etc/hostname; grep 10.88.0.9 /etc/hosts; grep SigBlk /proc/self/status";
    let mut container = Fixture::container(&["sh", "-c", script, "sh"]);
    container.args = vec!["first".into(), "second arg".into()];
    container.working_dir = Some("/tmp".into());
    container.env = vec![EnvVar {
        name: "GREETING".into(),
        value: "hello".into(),
        value_from: None,
    }];

    let (_, status, log) = f
        .run_to_end("echo", &image_with_user(Some("app")), &container)
        .await;
    assert_eq!((status.exit_code, status.signal), (0, None), "{log}");
    assert!(status.reason.is_none(), "{status:?}");
    for expected in [
        "args:first second arg",
        "greeting:hello image:kept home:/home/app",
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)",
        "/tmp\n",
        "echo\n",
        "10.88.0.9\techo",
        // The shim's blocked signals are not inherited.
        "SigBlk:\t0000000000000000",
    ] {
        assert!(
            log.contains(expected),
            "missing {expected:?} in log:\n{log}"
        );
    }

    // A numeric user and group, and the image's working directory.
    let container = Fixture::container(&["sh", "-c", "id; pwd"]);
    let (_, status, log) = f
        .run_to_end("numeric", &image_with_user(Some("1000:2000")), &container)
        .await;
    assert_eq!(status.exit_code, 0, "{log}");
    assert!(log.contains("uid=1000(app) gid=2000(extra)"), "{log}");
    assert!(log.contains("/home/app\n"), "{log}");
}

/// (b) A non-zero exit code is recorded.
async fn exit_code_recorded(f: &Fixture) {
    let container = Fixture::container(&["sh", "-c", "echo bye; exit 3"]);
    let (ctr, status, log) = f
        .run_to_end("exit3", &image_with_user(None), &container)
        .await;
    assert_eq!((status.exit_code, status.signal), (3, None));
    assert_eq!(log, "bye\n");
    // runc deleted the container when it exited.
    assert_eq!(f.runc.state(&ctr.id).await.unwrap(), None);
}

/// `pause` freezes the container (runc reports it paused and a process
/// appending to a file stops appending); `resume` lets it go on.
async fn pause_and_resume(f: &Fixture) {
    let container = Fixture::container(&[
        "sh",
        "-c",
        "echo ready; while true; do echo x >> /tmp/ticks; done",
    ]);
    let ctr = f
        .start("pause", &image_with_user(None), &container)
        .await
        .unwrap();
    wait_for_log(&ctr, "ready").await;
    let size = || fs::metadata(f.rootfs.join("tmp/ticks")).map_or(0, |m| m.len());
    f.runc.pause(&ctr.id).await.unwrap();
    let state = f.runc.state(&ctr.id).await.unwrap().unwrap();
    assert_eq!(state.status, wharf_runc::Status::Paused);
    let frozen = size();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(size(), frozen, "the container kept running while paused");
    f.runc.resume(&ctr.id).await.unwrap();
    let state = f.runc.state(&ctr.id).await.unwrap().unwrap();
    assert_eq!(state.status, wharf_runc::Status::Running);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(size() > frozen, "the container did not run again");
    f.runc
        .stop(&ctr.id, &ctr.exit, Duration::from_secs(1))
        .await
        .unwrap();
}

/// (c1) A process that handles SIGTERM ends well within its grace period.
async fn stop_graceful(f: &Fixture) {
    let container = Fixture::container(&[
        "sh",
        "-c",
        "trap 'echo term; exit 0' TERM; echo ready; sleep 1000 & wait",
    ]);
    let ctr = f
        .start("graceful", &image_with_user(None), &container)
        .await
        .unwrap();
    wait_for_log(&ctr, "ready").await;
    let at = Instant::now();
    let status = f
        .runc
        .stop(&ctr.id, &ctr.exit, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("exit status");
    assert!(
        at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        at.elapsed()
    );
    assert_eq!((status.exit_code, status.signal), (0, None));
    assert!(fs::read_to_string(&ctr.log).unwrap().contains("term"));
}

/// (c2) A process ignoring SIGTERM is killed after the grace period; the
/// container and its cgroup are gone afterwards.
async fn stop_kills_after_grace(f: &Fixture) {
    let container = Fixture::container(&["sh", "-c", "trap '' TERM; sleep 1000"]);
    let ctr = f
        .start("stubborn", &image_with_user(None), &container)
        .await
        .unwrap();
    let state = f.runc.state(&ctr.id).await.unwrap().expect("state");
    assert_eq!(
        (state.status, state.pid),
        (Status::Running, ctr.started.pid)
    );
    assert!(memory_cgroup(&ctr).exists());

    let grace = Duration::from_millis(800);
    let at = Instant::now();
    let status = f
        .runc
        .stop(&ctr.id, &ctr.exit, grace)
        .await
        .unwrap()
        .expect("exit status");
    assert!(at.elapsed() >= grace, "stopped after {:?}", at.elapsed());
    assert_eq!((status.exit_code, status.signal), (137, Some(9)));
    assert_eq!(f.runc.state(&ctr.id).await.unwrap(), None);
    assert!(!memory_cgroup(&ctr).exists(), "cgroup left behind");
    assert!(!Path::new(&format!("/proc/{}", ctr.started.pid)).exists());
    // Deleting what is gone is fine.
    f.runc.delete(&ctr.id).await.unwrap();
}

/// (d) Limits reach the container's cgroup; `list` sees the container.
async fn cgroup_limits(f: &Fixture) {
    let mut container = Fixture::container(&["sleep", "1000"]);
    container.resources.limits = ResourceList {
        cpu: Some("500m".into()),
        memory: Some("64Mi".into()),
    };
    let ctr = f
        .start("limits", &image_with_user(None), &container)
        .await
        .unwrap();

    let cgroups = fs::read_to_string(format!("/proc/{}/cgroup", ctr.started.pid)).unwrap();
    let memory_line = cgroups
        .lines()
        .find(|l| l.contains(":memory:"))
        .expect("v1 memory controller");
    assert!(
        memory_line.ends_with(&format!(":memory:{}", ctr.cgroups_path)),
        "{cgroups}"
    );
    let read = |controller: &str, file: &str| {
        let path = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(ctr.cgroups_path.trim_start_matches('/'))
            .join(file);
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("pids", "pids.max"), "4096");

    let listed = f.runc.list().await.unwrap();
    let me = listed.iter().find(|s| s.id == ctr.id).expect("listed");
    assert_eq!((me.status, me.pid), (Status::Running, ctr.started.pid));

    // `sleep` as pid 1 ignores SIGTERM: a short grace, then SIGKILL.
    let status = f
        .runc
        .stop(&ctr.id, &ctr.exit, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(status.map(|s| s.exit_code), Some(137));
    assert!(!f.runc.list().await.unwrap().iter().any(|s| s.id == ctr.id));
}

/// The shim reports an out-of-memory kill.
async fn oom_killed(f: &Fixture) {
    let mut container = Fixture::container(&[
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    container.resources.limits.memory = Some("16Mi".into());
    let (_, status, log) = f
        .run_to_end("oom", &image_with_user(None), &container)
        .await;
    assert!(!log.contains("survived"), "{log}");
    assert_eq!(status.exit_code, 137, "{status:?}");
    assert_eq!(
        status.reason.as_deref(),
        Some(wharf_runc::REASON_OOM_KILLED),
        "{status:?}"
    );
}

/// (e) The shim has its own process group, shrugs off the signals a dying
/// agent's group or session would get, and still records the exit; a
/// followed log ends with the container.
async fn shim_survives_signals(f: &Fixture) {
    let container = Fixture::container(&["sh", "-c", "echo start; sleep 1; echo done"]);
    let ctr = f
        .start("survivor", &image_with_user(None), &container)
        .await
        .unwrap();
    let shim = ctr.started.shim_pid;
    assert_eq!(process_group(shim), Some(shim), "shim leads its own group");
    assert_ne!(process_group(shim), process_group(std::process::id()));

    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        kill(Pid::from_raw(shim as i32), signal).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(alive(shim), "shim died of a signal");
    let state = f.runc.state(&ctr.id).await.unwrap().expect("still there");
    assert_eq!(state.status, Status::Running);

    let exit = ctr.exit.clone();
    let followed = logs::read_until(&ctr.log, None, async move {
        let _ = wait_for_exit_file(&exit, Duration::from_secs(10)).await;
    });
    let chunks: Vec<_> = followed.collect().await;
    let text: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(String::from_utf8(text).unwrap(), "start\ndone\n");
    let status = wharf_runc::exit_status(&ctr.exit)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(status.exit_code, 0);
    let tail: Vec<_> = logs::read(&ctr.log, false, Some(1)).collect().await;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].as_ref().unwrap().as_ref(), b"done\n");
}

/// A container whose shim and `runc run` were killed keeps running; `stop`
/// still ends it and deletes what nobody else will.
async fn stop_after_shim_death(f: &Fixture) {
    let container = Fixture::container(&["sleep", "1000"]);
    let ctr = f
        .start("orphan", &image_with_user(None), &container)
        .await
        .unwrap();
    let shim = ctr.started.shim_pid;
    let runc = children(shim);
    assert_eq!(runc.len(), 1, "shim children: {runc:?}");
    for pid in [shim, runc[0]] {
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = f.runc.state(&ctr.id).await.unwrap().expect("outlives runc");
    assert_eq!(state.status, Status::Running);

    let status = f
        .runc
        .stop(&ctr.id, &ctr.exit, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(status, None, "nobody was left to record an exit");
    assert_eq!(f.runc.state(&ctr.id).await.unwrap(), None);
    assert!(!alive(ctr.started.pid));
    assert!(!memory_cgroup(&ctr).exists(), "cgroup left behind");
}

/// (f) A missing program fails the start with runc's message.
async fn missing_binary_fails(f: &Fixture) {
    let container = Fixture::container(&["/nope/missing"]);
    let err = match f.start("missing", &image_with_user(None), &container).await {
        Ok(_) => panic!("a missing binary started"),
        Err(err) => err,
    };
    let message = err.to_string();
    assert!(matches!(err, RuncError::StartFailed { .. }), "{message}");
    assert!(message.contains("/nope/missing"), "{message}");
    assert!(message.contains("no such file or directory"), "{message}");
    let exit = f.dir.path().join("bundles/missing/exit.json");
    let status = wharf_runc::exit_status(&exit)
        .await
        .unwrap()
        .expect("recorded");
    assert!(status.is_start_error(), "{status:?}");
    assert_eq!(
        f.runc
            .state(&format!("{}-missing", f.prefix))
            .await
            .unwrap(),
        None
    );
}

async fn wait_for_log(ctr: &Ctr, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&ctr.log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(Instant::now() < deadline, "no {text:?} in the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if stat_field(child, 1) == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Field 5 of `/proc/<pid>/stat`.
fn process_group(pid: u32) -> Option<u32> {
    stat_field(pid, 2)
}

/// Numeric field `4 + n` of `/proc/<pid>/stat` (1 = parent, 2 = group).
fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(n)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rfind(')')
                .map(|i| stat[i + 2..].starts_with(|c| c != 'Z'))
        })
        .unwrap_or(false)
}
