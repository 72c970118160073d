//! `wharf exec` (with and without a terminal), `wharf port-forward` and
//! `wharf logs --previous` against real containers.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;

use super::common::api::ApiClient;
use super::common::cli::{ok, run_with_stdin, wharf};
use super::common::{Credentials, TestServer};
use super::{Cli, Node, NodeSpec, name_of, prerequisites, push_demo_image, running_pods, wait_for};

/// The lines of /proc/<pid>/status that say who a process is and what it
/// may do.
const IDENTITY: [&str; 9] = [
    "Uid:",
    "Gid:",
    "Groups:",
    "CapInh:",
    "CapPrm:",
    "CapEff:",
    "CapBnd:",
    "NoNewPrivs:",
    "Seccomp:",
];

fn identity(status: &str) -> Vec<&str> {
    status
        .lines()
        .filter(|l| IDENTITY.iter().any(|key| l.starts_with(key)))
        .collect()
}

pub(super) fn exec(cli: &Cli, pod: &str, command: &[&str]) -> Output {
    wharf(cli.home.path())
        .args(["exec", "-p", "shop", pod, "--"])
        .args(command)
        .output()
        .unwrap()
}

/// A CLI session of another user.
fn login_as(server: &TestServer, who: &Credentials) -> Cli {
    let home = tempfile::tempdir().unwrap();
    let mut login = wharf(home.path());
    login.args(["login", &server.url(), "-u", &who.user, "--password-stdin"]);
    ok(run_with_stdin(login, &format!("{}\n", who.password)));
    Cli { home }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_port_forward_and_previous_logs_reach_into_running_pods() {
    if !prerequisites("exec into containers") {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let _node = Node::start(
        &cli,
        NodeSpec {
            name: "e2e-exec-1",
            bridge: "wtx1",
            netns_prefix: "wtx1-",
            pod_cidr: "10.85.1.0/24",
            host_netns: None,
            address: None,
        },
        &robot,
    );
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(
        &["apply", "-f", "-"],
        &super::seed_deployment("web", &image, "none", 1)
            .replace("  annotations: {wharf.io/ip-pool: none}\n", ""),
    );
    let pods = wait_for("the web pod running", Duration::from_secs(90), || {
        running_pods(&cli, "web-", 1)
    });
    let pod = name_of(&pods[0]);

    // A command's output, stderr and exit code come back.
    let output = exec(&cli, &pod, &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    // Input reaches it with -i, and its end too.
    let mut piped = wharf(cli.home.path());
    piped.args(["exec", "-i", "-p", "shop", &pod, "--", "cat"]);
    assert_eq!(ok(run_with_stdin(piped, "typed\n")), "typed\n");

    // The process is the container's: same user, capabilities,
    // no_new_privs, seccomp mode and cgroups as the container's own.
    let own = ok(exec(&cli, &pod, &["cat", "/proc/self/status"]));
    let main = ok(exec(&cli, &pod, &["cat", "/proc/1/status"]));
    assert_eq!(identity(&own), identity(&main));
    assert_eq!(identity(&own).len(), IDENTITY.len(), "{own}");
    let own = ok(exec(&cli, &pod, &["cat", "/proc/self/cgroup"]));
    let main = ok(exec(&cli, &pod, &["cat", "/proc/1/cgroup"]));
    assert_eq!(own, main);
    let missing = exec(&cli, &pod, &["/no/such/program"]);
    assert_ne!(missing.status.code(), Some(0));
    let no_container = wharf(cli.home.path())
        .args(["exec", "-p", "shop", &pod, "-c", "nope", "--", "true"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&no_container.stderr);
    assert_eq!(no_container.status.code(), Some(1), "{message}");
    assert!(message.contains("container nope of pod"), "{message}");

    // Audited with the command, never with what was typed.
    let api = server.admin().await;
    let events = api.audit(&[("action", "pod.exec")]).await;
    assert!(
        events.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains(r#"["cat","/proc/self/status"]"#))),
        "{events:?}"
    );
    assert!(!format!("{events:?}").contains("typed"), "{events:?}");

    interactive_shell(&cli, &pod);
    port_forward(&cli, &pod);

    // Guests may read the pod and its logs, not act inside it.
    let guest_credentials = api.create_member("shop", "visitor", "guest").await;
    let guest = login_as(&server, &guest_credentials);
    guest.run(&["logs", "-p", "shop", &pod]);
    let refused = exec(&guest, &pod, &["id"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("denied") || message.contains("403"),
        "{message}"
    );
    let refused = wharf(guest.home.path())
        .args(["port-forward", "-p", "shop", &pod, "80"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    // The agent does not take the server's word through the request: it
    // asks the server itself, with the caller's token.
    let guest_api = ApiClient::login(&server.url(), &guest_credentials)
        .await
        .unwrap();
    let nodes = cli.json(&["get", "nodes"]);
    let endpoint = nodes["items"][0]["status"]["endpoint"].as_str().unwrap();
    for (token, expected) in [(guest_api.token(), 403), (api.token(), 101)] {
        let url = format!("{endpoint}/v1/pods/shop/{pod}/exec?command=%5B%22true%22%5D");
        let status = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .header("connection", "upgrade")
            .header("upgrade", "wharf-exec.v1")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), expected, "{url}");
    }
    // Nor may a pull-only robot (the node's).
    let robot_api = ApiClient::login(&server.url(), &robot).await.unwrap();
    let exec_right = format!("/api/v1/projects/shop/pods/{pod}/exec");
    let (status, _) = robot_api.call(Method::GET, &exec_right, None).await;
    assert_eq!(status.as_u16(), 403);
    let (status, _) = api.call(Method::GET, &exec_right, None).await;
    assert_eq!(status.as_u16(), 204);

    previous_logs(&cli, &image, &pod);
}

/// `exec -it` through a pseudo-terminal the test holds, as a person at a
/// terminal would use it.
fn interactive_shell(cli: &Cli, pod: &str) {
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let slave_path = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave = || -> Stdio {
        let flags = rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY;
        let fd: OwnedFd =
            rustix::fs::open(slave_path.as_c_str(), flags, rustix::fs::Mode::empty()).unwrap();
        fd.into()
    };
    let mut child = wharf(cli.home.path())
        .args(["exec", "-it", "-p", "shop", pod, "--", "sh"])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let shown = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            shown
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut keyboard = std::fs::File::from(master.try_clone().unwrap());
    let mut type_line = |line: &str| keyboard.write_all(format!("{line}\r").as_bytes()).unwrap();
    let seen = |what: &str| {
        let screen = screen.clone();
        let what = what.to_string();
        wait_for(
            &format!("{what:?} on the terminal"),
            Duration::from_secs(20),
            move || screen.lock().unwrap().contains(&what).then_some(()),
        )
    };

    type_line("echo $((6*7))");
    seen("42");
    type_line("busybox tty");
    seen("/dev/pts/");
    // A resize of the local terminal reaches the remote one.
    let size = rustix::termios::Winsize {
        ws_row: 50,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&master, size).unwrap();
    let cli_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(cli_pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    wait_for("the new size inside", Duration::from_secs(20), || {
        type_line("busybox stty size");
        std::thread::sleep(Duration::from_millis(300));
        screen.lock().unwrap().contains("50 132").then_some(())
    });
    type_line("exit 3");
    let status = wait_child(&mut child);
    assert_eq!(status.code(), Some(3), "{}", screen.lock().unwrap());
}

fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    wait_for("the CLI to exit", Duration::from_secs(20), || {
        child.try_wait().unwrap()
    })
}

/// Starts `wharf port-forward POD REMOTE`; the child (its stderr piped)
/// and the local port it printed.
fn start_forward(cli: &Cli, pod: &str, remote: u16) -> (Child, String) {
    let mut child = wharf(cli.home.path())
        .args(["port-forward", "-p", "shop", pod, &remote.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let local = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.strip_suffix(&format!(" -> {remote}\n")))
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    (child, local)
}

fn curl(local: &str, path: &str) -> Output {
    std::process::Command::new("curl")
        .args(["-sf", "-m", "5", &format!("http://127.0.0.1:{local}{path}")])
        .output()
        .unwrap()
}

/// `port-forward` to the pod's HTTP server answers on loopback, on a port
/// it picked and printed; a closed port fails only its connections.
fn port_forward(cli: &Cli, pod: &str) {
    let (mut child, local) = start_forward(cli, pod, 80);
    for _ in 0..2 {
        let page = curl(&local, "/");
        let page = String::from_utf8_lossy(&page.stdout);
        assert!(page.contains("Hello from a Wharf pod"), "{page}");
    }
    let answer = curl(&local, "/cgi-bin/hostname");
    assert_eq!(String::from_utf8_lossy(&answer.stdout).trim(), pod);
    let _ = child.kill();
    let _ = child.wait();

    // A closed port: the connection is closed, the CLI says why and goes on.
    let (mut child, local) = start_forward(cli, pod, 81);
    // Read the CLI's errors as they come: killing it before its message
    // is whole would cut the message.
    let mut stderr = child.stderr.take().unwrap();
    let said = Arc::new(Mutex::new(String::new()));
    let reader = std::thread::spawn({
        let said = said.clone();
        move || {
            let mut buffer = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                said.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        }
    });
    assert!(!curl(&local, "/").status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !said.lock().unwrap().contains('\n') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(child.try_wait().unwrap(), None, "port-forward gave up");
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let errors = said.lock().unwrap().clone();
    assert!(errors.contains("error: port 81:"), "{errors}");
    assert!(errors.contains("refused"), "{errors}");
}

/// `logs --previous` shows the run before the last restart, alone; a
/// container that never restarted has none.
fn previous_logs(cli: &Cli, image: &str, web: &str) {
    let refused = wharf(cli.home.path())
        .args(["logs", "-p", "shop", web, "--previous"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("no previous run"), "{message}");

    let counter = super::one_container_deployment(
        "runs",
        image,
        r#"[/bin/sh, -c, 'echo "begin $(cat /proc/uptime)"; echo middle; sleep 1; echo end; exit 1']"#,
    );
    cli.run_with(&["apply", "-f", "-"], &counter);
    let pod = wait_for("the container restarted", Duration::from_secs(90), || {
        cli.pods("shop")
            .into_iter()
            .find(|p| name_of(p).starts_with("runs-"))
            .filter(|p| p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1))
    });
    let pod = name_of(&pod);
    let previous = cli.run(&["logs", "-p", "shop", &pod, "--previous"]);
    let lines: Vec<&str> = previous.lines().collect();
    assert_eq!(lines.len(), 3, "{previous:?}");
    assert!(lines[0].starts_with("begin "), "{previous:?}");
    assert_eq!(lines[1..], ["middle", "end"], "{previous:?}");
    // `logs` still shows every run, the previous one among them.
    let all = cli.run(&["logs", "-p", "shop", &pod]);
    assert!(all.contains(&previous), "{all:?}");
    assert!(all.matches("begin ").count() >= 2, "{all:?}");
    let tail = cli.run(&["logs", "-p", "shop", &pod, "--previous", "--tail", "1"]);
    assert_eq!(tail, "end\n");
}
