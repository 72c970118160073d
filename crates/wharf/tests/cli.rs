//! The client commands against a real server: login, users, projects,
//! members, robots, audit, logout.

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::TestServer;
use common::cli::{ok, run_with_stdin};
use common::server::{ADMIN_PASSWORD, spawn_listening};
use serde_json::Value;

/// Runs `wharf ARGS` with its own home directory, feeding `stdin`.
fn wharf(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = common::cli::wharf(home);
    command.args(args);
    run_with_stdin(command, stdin)
}

#[track_caller]
fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "unexpectedly succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn an_operator_session() {
    let server = TestServer::start();
    let url = server.url();
    let admin_home = tempfile::tempdir().unwrap();
    let home = admin_home.path();

    fails(wharf(
        home,
        &["login", &url, "-u", "admin", "--password-stdin"],
        "wrong-password\n",
    ));
    let out = ok(wharf(
        home,
        &["login", &url, "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    ));
    assert!(
        out.contains(&format!("logged in to {url} as admin")),
        "{out}"
    );
    let config = home.join(".config/wharf/config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains(ADMIN_PASSWORD),
        "the password is not stored"
    );

    ok(wharf(
        home,
        &["user", "create", "alice", "--password-stdin"],
        "alice-password\n",
    ));
    ok(wharf(
        home,
        &["project", "create", "shop", "--quota", "1GiB"],
        "",
    ));
    let projects = json(&ok(wharf(home, &["project", "list", "-o", "json"], "")));
    let shop = projects
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "shop")
        .expect("shop listed");
    assert_eq!(shop["quota_bytes"], 1u64 << 30);
    let table = ok(wharf(home, &["project", "list"], ""));
    assert!(table.lines().next().unwrap().contains("NAME"), "{table}");
    assert!(table.contains("shop"));

    ok(wharf(
        home,
        &[
            "project",
            "member",
            "add",
            "shop",
            "alice",
            "--role",
            "developer",
        ],
        "",
    ));
    let members = json(&ok(wharf(
        home,
        &["project", "member", "list", "shop", "-o", "json"],
        "",
    )));
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "alice" && m["role"] == "developer"),
        "{members}"
    );
    fails(wharf(
        home,
        &[
            "project", "member", "add", "shop", "alice", "--role", "owner",
        ],
        "",
    ));

    let created = json(&ok(wharf(
        home,
        &[
            "robot",
            "create",
            "shop",
            "ci",
            "--actions",
            "pull",
            "--expires",
            "30d",
            "-o",
            "json",
        ],
        "",
    )));
    let secret = created["secret"]
        .as_str()
        .expect("the secret is shown once")
        .to_string();
    let robots = ok(wharf(home, &["robot", "list", "shop", "-o", "json"], ""));
    assert!(
        robots.contains("robot$shop+ci") && !robots.contains(&secret),
        "{robots}"
    );

    let events = json(&ok(wharf(
        home,
        &["audit", "--project", "shop", "-o", "json"],
        "",
    )));
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"member.set") && actions.contains(&"robot.create"),
        "{actions:?}"
    );

    // A developer may not administer users; the error says why.
    let alice_home = tempfile::tempdir().unwrap();
    ok(wharf(
        alice_home.path(),
        &["login", &url, "-u", "alice", "--password-stdin"],
        "alice-password\n",
    ));
    let denied = fails(wharf(alice_home.path(), &["user", "list"], ""));
    assert!(denied.contains("denied"), "{denied}");
    let own = json(&ok(wharf(
        alice_home.path(),
        &["project", "list", "-o", "json"],
        "",
    )));
    assert_eq!(
        own.as_array().unwrap().len(),
        1,
        "alice sees only her project: {own}"
    );

    ok(wharf(
        home,
        &["project", "member", "remove", "shop", "alice"],
        "",
    ));
    ok(wharf(home, &["robot", "delete", "shop", "ci"], ""));
    let out = ok(wharf(home, &["user", "disable", "alice"], ""));
    assert_eq!(out, "disabled user alice\n");
    let user = json(&ok(wharf(
        home,
        &["user", "enable", "alice", "-o", "json"],
        "",
    )));
    assert_eq!(user["disabled"], false, "{user}");
    let err = fails(wharf(home, &["user", "disable", "nobody"], ""));
    assert!(err.contains("disabling user nobody"), "{err}");
    ok(wharf(home, &["user", "delete", "alice"], ""));
    ok(wharf(home, &["logout"], ""));
    assert!(!config.exists());
    let hint = fails(wharf(home, &["project", "list"], ""));
    assert!(hint.contains("not logged in"), "{hint}");
}

#[test]
fn ip_pools_from_yaml() {
    let server = TestServer::start();
    let url = server.url();
    let home_dir = tempfile::tempdir().unwrap();
    let home = home_dir.path();
    ok(wharf(
        home,
        &["login", &url, "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    ));
    let pool = "apiVersion: wharf.io/v1
kind: IpPool
metadata: {name: web-pool}
spec:
  cidr: 10.77.0.0/24
  gateway: 10.77.0.1
  ranges: [{start: 10.77.0.10, end: 10.77.0.50}]
  exclude: [10.77.0.11]
";
    let file = home.join("pool.yaml");
    std::fs::write(&file, pool).unwrap();
    let file = file.to_str().unwrap();
    let out = ok(wharf(home, &["ippool", "import", file], ""));
    assert_eq!(out.trim(), "ippool/web-pool created");
    let out = ok(wharf(home, &["ippool", "import", "-"], pool));
    assert_eq!(out.trim(), "ippool/web-pool configured");
    let table = ok(wharf(home, &["ippool", "list"], ""));
    assert!(
        table.contains("web-pool") && table.contains("10.77.0.0/24") && table.contains("0/40"),
        "{table}"
    );
    let shown = json(&ok(wharf(
        home,
        &["ippool", "show", "web-pool", "-o", "json"],
        "",
    )));
    assert_eq!(shown["summary"]["size"], 40);
    assert_eq!(shown["pool"]["spec"]["exclude"][0], "10.77.0.11");
    let text = ok(wharf(home, &["ippool", "show", "web-pool"], ""));
    assert!(text.contains("10.77.0.10-10.77.0.50"), "{text}");

    // A bad pool is refused with the field at fault, and nothing changes.
    let bad = pool.replace("10.77.0.50", "10.78.0.50");
    let err = fails(wharf(home, &["ippool", "import", "-"], &bad));
    assert!(err.contains("spec.ranges[0].end"), "{err}");
    let shown = json(&ok(wharf(
        home,
        &["ippool", "show", "web-pool", "-o", "json"],
        "",
    )));
    assert_eq!(shown["pool"]["spec"]["ranges"][0]["end"], "10.77.0.50");

    ok(wharf(home, &["ippool", "delete", "web-pool"], ""));
    let err = fails(wharf(home, &["ippool", "show", "web-pool"], ""));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let server = TestServer::options().env("RUST_LOG", "debug").start();
    let home = tempfile::tempdir().unwrap();
    let login = wharf(
        home.path(),
        &["login", &server.url(), "-u", "admin", "--password-stdin"],
        ADMIN_PASSWORD,
    );
    ok(login);
    let log = server.log_text();
    assert!(log.contains("DEBUG"), "the server logged: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log that is not a terminal: {log:?}"
    );
}

#[test]
fn the_generated_admin_password_is_printed_on_the_first_start_only() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // Starts `wharf server` on `data`; returns it, its URL and what it
    // printed right after its address, if anything.
    let start = || {
        let mut command = common::cli::wharf(root.path());
        command
            .env_remove("WHARF_ADMIN_PASSWORD")
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stderr(Stdio::null());
        let (child, addr, lines) = spawn_listening(&mut command, String::new);
        let next = lines.next(Duration::from_secs(2)).ok();
        (KillOnDrop(child), format!("http://{addr}"), next)
    };
    let (first_run, _, first) = start();
    let password = first
        .as_deref()
        .and_then(|line| line.strip_prefix("admin password: "))
        .unwrap_or_else(|| panic!("no password on the first start: {first:?}"))
        .to_string();
    drop(first_run);
    let (_second_run, url, second) = start();
    assert_eq!(second, None, "printed again on a restart");
    // The password printed once is still the one.
    let home = tempfile::tempdir().unwrap();
    ok(wharf(
        home.path(),
        &["login", &url, "-u", "admin", "--password-stdin"],
        &password,
    ));
}

/// A child process killed when the test is done with it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
