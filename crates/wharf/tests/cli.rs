//! The client commands against a real server: login, users, projects,
//! members, robots, audit, logout.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::TestServer;
use common::cli::{fails, ok, run as wharf};
use common::server::{ADMIN_PASSWORD, spawn_listening};
use serde_json::Value;

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

/// Logs `home` in as admin, with `extra` options of `wharf login`.
fn log_in_as_admin(home: &Path, url: &str, extra: &[&str]) -> String {
    let mut args = vec!["login", url, "-u", "admin", "--password-stdin"];
    args.extend_from_slice(extra);
    ok(wharf(home, &args, &format!("{ADMIN_PASSWORD}\n")))
}

/// Applies `deployment(name, project)`.
fn apply(home: &Path, name: &str, project: &str) {
    ok(wharf(
        home,
        &["apply", "-f", "-"],
        &deployment(name, project),
    ));
}

/// A deployment `name` in `project`, labelled `app: NAME` as its pods are,
/// on no node (nothing needs to run).
fn deployment(name: &str, project: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {project}, labels: {{app: {name}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: {name}, image: example/{name}:1}}]
"
    )
}

/// `field` of the metadata of each object `wharf ARGS` (a JSON list)
/// prints, sorted.
fn listed(home: &Path, args: &[&str], field: &str) -> Vec<String> {
    let list = json(&ok(wharf(home, args, "")));
    let mut values: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|o| o["metadata"][field].as_str().unwrap().to_string())
        .collect();
    values.sort();
    values
}

/// The names of the deployments `get deployments ARGS -o json` lists.
fn deployment_names(home: &Path, args: &[&str]) -> Vec<String> {
    let mut command = vec!["get", "deployments", "-o", "json"];
    command.extend_from_slice(args);
    listed(home, &command, "name")
}

#[test]
fn the_login_default_project_stands_in_for_p() {
    let server = TestServer::start();
    let url = server.url();
    let admin_home = tempfile::tempdir().unwrap();
    let home = admin_home.path();
    log_in_as_admin(home, &url, &[]);
    for project in ["shop", "lab"] {
        ok(wharf(home, &["project", "create", project], ""));
    }
    apply(home, "web", "shop");
    apply(home, "api", "lab");

    // Neither -p nor a default: the error says how to set one.
    let hint = fails(wharf(home, &["get", "deployments"], ""));
    assert!(
        hint.contains("-p PROJECT") && hint.contains("wharf project use PROJECT"),
        "{hint}"
    );
    let unknown = fails(wharf(home, &["project", "use", "nothere"], ""));
    assert!(unknown.contains("using project nothere"), "{unknown}");

    let out = ok(wharf(home, &["project", "use", "shop"], ""));
    assert_eq!(out, "default project: shop\n");
    assert_eq!(deployment_names(home, &[]), ["web"]);
    // apply: the default fills in for a manifest without a namespace, and
    // does not contradict one that has its own (kubectl's context namespace).
    let no_namespace = deployment("cart", "shop").replace(", namespace: shop", "");
    ok(wharf(home, &["apply", "-f", "-"], &no_namespace));
    assert_eq!(deployment_names(home, &[]), ["cart", "web"]);
    apply(home, "jobs", "lab");
    assert_eq!(deployment_names(home, &["-p", "lab"]), ["api", "jobs"]);
    ok(wharf(home, &["delete", "deployment", "cart"], ""));
    ok(wharf(
        home,
        &["delete", "deployment", "jobs", "-p", "lab"],
        "",
    ));
    assert_eq!(deployment_names(home, &["-p", "lab"]), ["api"], "-p wins");
    ok(wharf(home, &["describe", "deployment", "web"], ""));
    // -l describes what the selector matches, kubectl-style.
    let described = ok(wharf(
        home,
        &["describe", "deployments", "-l", "app=web"],
        "",
    ));
    assert!(described.contains("web"), "{described}");
    let none = fails(wharf(
        home,
        &["describe", "deployments", "-l", "app=nothing"],
        "",
    ));
    assert!(none.contains("no deployments match app=nothing"), "{none}");

    // login --project sets it; logging in again without it keeps it.
    let out = log_in_as_admin(home, &url, &["--project", "lab"]);
    assert!(out.contains("(default project lab)"), "{out}");
    log_in_as_admin(home, &url, &[]);
    assert_eq!(deployment_names(home, &[]), ["api"]);
    ok(wharf(
        home,
        &["scale", "deployment", "api", "--replicas", "0"],
        "",
    ));
    ok(wharf(home, &["delete", "deployment", "api"], ""));
    assert!(deployment_names(home, &[]).is_empty());
}

/// The projects of the objects `get KIND -A -o json` lists, sorted.
fn projects_listed(home: &Path, kind: &str) -> Vec<String> {
    listed(home, &["get", kind, "-A", "-o", "json"], "project")
}

#[test]
fn all_projects_lists_what_the_caller_can_read() {
    let server = TestServer::start();
    let url = server.url();
    let admin_home = tempfile::tempdir().unwrap();
    let home = admin_home.path();
    log_in_as_admin(home, &url, &[]);
    ok(wharf(
        home,
        &["user", "create", "alice", "--password-stdin"],
        "alice-password\n",
    ));
    for project in ["shop", "lab"] {
        ok(wharf(home, &["project", "create", project], ""));
    }
    let alice_in_shop = "project member add shop alice --role developer";
    ok(wharf(
        home,
        &alice_in_shop.split(' ').collect::<Vec<_>>(),
        "",
    ));
    apply(home, "web", "shop");
    apply(home, "api", "lab");
    let alice_home = tempfile::tempdir().unwrap();
    let alice = alice_home.path();
    ok(wharf(
        alice,
        &["login", &url, "-u", "alice", "--password-stdin"],
        "alice-password\n",
    ));

    assert_eq!(projects_listed(home, "deployments"), ["lab", "shop"]);
    assert_eq!(projects_listed(alice, "deployments"), ["shop"]);
    let table = ok(wharf(alice, &["get", "deployments", "-A"], ""));
    let mut lines = table.lines();
    assert!(
        lines.next().unwrap().starts_with("PROJECT"),
        "a PROJECT column first: {table}"
    );
    assert!(lines.next().unwrap().starts_with("shop"), "{table}");
    assert!(!table.contains("api"), "{table}");

    // The pods (pending: there is no node) come with their deployments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while projects_listed(home, "pods") != ["lab", "shop"] {
        assert!(
            std::time::Instant::now() < deadline,
            "no pods in both projects"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(projects_listed(alice, "pods"), ["shop"]);

    let err = fails(wharf(home, &["get", "nodes", "-A"], ""));
    assert!(err.contains("nodes belong to no project"), "{err}");
    fails(wharf(home, &["get", "pods", "-A", "-p", "shop"], ""));
}

#[test]
fn selectors_choose_what_get_and_delete_touch() {
    let server = TestServer::start();
    let url = server.url();
    let admin_home = tempfile::tempdir().unwrap();
    let home = admin_home.path();
    log_in_as_admin(home, &url, &["--project", "shop"]);
    ok(wharf(home, &["project", "create", "shop"], ""));
    for name in ["web", "api", "db"] {
        apply(home, name, "shop");
    }
    assert_eq!(
        deployment_names(home, &["-l", "app in (web,api)"]),
        ["api", "web"]
    );
    assert_eq!(deployment_names(home, &["-l", "app!=web"]), ["api", "db"]);
    assert!(deployment_names(home, &["-l", "!app"]).is_empty());
    assert_eq!(
        projects_listed(home, "deployments"),
        ["shop", "shop", "shop"]
    );
    let list = json(&ok(wharf(
        home,
        &["get", "deployments", "-A", "-l", "app=db", "-o", "json"],
        "",
    )));
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    fails(wharf(home, &["get", "deployments", "-l", "app in"], ""));

    let out = ok(wharf(
        home,
        &["delete", "deployments", "-l", "app in (web,db)"],
        "",
    ));
    assert!(
        out.contains("deployment.apps/web deleted") && out.contains("deployment.apps/db deleted"),
        "{out}"
    );
    assert_eq!(deployment_names(home, &[]), ["api"]);
    let none = wharf(home, &["delete", "pods", "-l", "app=nothing"], "");
    assert!(none.status.success());
    let said = String::from_utf8(none.stderr).unwrap();
    assert!(
        said.contains("no pods match app=nothing in project shop"),
        "{said}"
    );
    fails(wharf(
        home,
        &["delete", "pods", "api-1", "-l", "app=api"],
        "",
    ));

    // The api deployment's pod (pending: there is no node) goes by label.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while projects_listed(home, "pods").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no pod of api");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = ok(wharf(home, &["delete", "pods", "-l", "app=api"], ""));
    assert!(
        out.starts_with("pod/api-") && out.contains(" deleted"),
        "{out}"
    );
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
