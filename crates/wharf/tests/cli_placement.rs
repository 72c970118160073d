//! The seed's cluster as a test (issue 15, part B): a physical cluster with
//! a pool `batch` of old 12-core/16 GB machines and a pool `core` of new
//! 32-core/32 GB ones, simulated (`wharf agent --simulate --pool --class
//! --cpu --memory`) against a real server. A core deployment lands only on
//! new machines, a batch one only on old ones; project `b` is refused on
//! pool `core` (at apply time, and by the scheduler) until granted, then
//! placed, and its grant's quota stops the pod beyond it with the reason. A
//! preferred tier spills over to other machines when it has no room, and
//! says so. A project's default tier places its Deployments that name no
//! tier; one naming its own tier keeps it.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::{fails, ok, run, wharf};
use common::server::ADMIN_PASSWORD;
use serde_json::Value;

/// A background simulated fleet, killed on drop.
struct Fleet(Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fleet(home: &Path, name: &str, pool: &str, class: &str, cpu: &str, memory: &str) -> Fleet {
    let tier = format!("wharf.io/tier={pool}");
    Fleet(
        wharf(home)
            .args(["agent", "--name", name, "--simulate", "2", "--pool", pool])
            .args(["--class", class, "--cpu", cpu, "--memory", memory])
            .args(["--labels", &tier])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn log_in(home: &Path, url: &str) {
    let login = ["login", url, "-u", "admin", "--password-stdin"];
    ok(run(home, &login, &format!("{ADMIN_PASSWORD}\n")));
}

/// The inventory: a physical cluster, the two machine classes and a pool
/// of each.
const INVENTORY: &str = r#"
apiVersion: wharf.io/v1
kind: Cluster
metadata: {name: bj-physical}
spec: {kind: physical, idc: bj1}
---
apiVersion: wharf.io/v1
kind: MachineClass
metadata: {name: legacy-12c16g}
spec: {cpu: {max: "12"}, memory: {max: 16Gi}, pricePerHour: 0.12, tier: batch}
---
apiVersion: wharf.io/v1
kind: MachineClass
metadata: {name: std-32c32g}
spec: {cpu: {min: "32"}, memory: {min: 32Gi}, pricePerHour: 0.40, tier: core}
---
apiVersion: wharf.io/v1
kind: Pool
metadata: {name: batch}
spec: {cluster: bj-physical, machineClasses: [legacy-12c16g]}
---
apiVersion: wharf.io/v1
kind: Pool
metadata: {name: core}
spec: {cluster: bj-physical, machineClasses: [std-32c32g]}
"#;

fn apply(home: &Path, name: &str, yaml: &str) -> std::process::Output {
    let file = home.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    run(home, &["apply", "-f", file.to_str().unwrap()], "")
}

fn deployment(name: &str, project: &str, replicas: u32, extra: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {project}
{extra}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: {name}
          image: demo/{name}:1
          resources:
            requests: {{cpu: "1", memory: 1Gi}}
"#
    )
}

fn pods(home: &Path, project: &str, app: &str) -> Vec<Value> {
    let out = ok(run(
        home,
        &[
            "get",
            "pods",
            "-p",
            project,
            "-l",
            &format!("app={app}"),
            "-o",
            "json",
        ],
        "",
    ));
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until `check` accepts the deployment's pods; panics with them.
fn wait_for_pods(
    home: &Path,
    project: &str,
    app: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = pods(home, project, app);
        if check(&pods) {
            return pods;
        }
        assert!(Instant::now() < deadline, "{what}: {pods:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn deployment_json(home: &Path, project: &str, name: &str) -> Value {
    let shown = ["get", "deployment", name, "-p", project, "-o", "json"];
    serde_json::from_str(&ok(run(home, &shown, ""))).unwrap()
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

fn placed_on(pods: &[Value], count: usize, prefix: &str) -> bool {
    pods.len() == count && pods.iter().all(|p| node_of(p).starts_with(prefix))
}

fn reason(pod: &Value) -> &str {
    pod["status"]["message"].as_str().unwrap_or("")
}

/// The seed's cluster: a server, the inventory, two simulated machines of
/// each class, and `projects` made, the first granted both pools.
struct Seed {
    _fleets: [Fleet; 2],
    home: tempfile::TempDir,
    _server: TestServer,
}

impl Seed {
    fn start(projects: &[&str]) -> Seed {
        let server = TestServer::start();
        let admin = tempfile::tempdir().unwrap();
        let home = admin.path();
        log_in(home, &server.url());
        for project in projects {
            ok(run(home, &["project", "create", project], ""));
        }
        ok(apply(home, "inventory", INVENTORY));
        for pool in ["core", "batch"] {
            ok(run(home, &["pool", "grant", pool, projects[0]], ""));
        }
        let old = fleet(home, "old", "batch", "legacy-12c16g", "12", "16Gi");
        let new = fleet(home, "new", "core", "std-32c32g", "32", "32Gi");
        Seed {
            _fleets: [old, new],
            home: admin,
            _server: server,
        }
    }
}

#[test]
fn core_services_land_on_new_machines_and_pools_obey_grants() {
    let seed = Seed::start(&["a", "b"]);
    let home = seed.home.path();

    // Tier core lands only on the new machines, tier batch only on the old.
    let core = deployment("web", "a", 6, "  annotations: {wharf.io/tier: core}");
    ok(apply(home, "web", &core));
    let batch = deployment("jobs", "a", 6, "  annotations: {wharf.io/tier: batch}");
    ok(apply(home, "jobs", &batch));
    wait_for_pods(home, "a", "web", "core pods on new machines", |p| {
        placed_on(p, 6, "new-")
    });
    wait_for_pods(home, "a", "jobs", "batch pods on old machines", |p| {
        placed_on(p, 6, "old-")
    });

    // A preferred tier fills the new machines (12 GiB pods, two a node),
    // then spills over to an old one, and the pod says why.
    let burst = deployment(
        "burst",
        "a",
        5,
        "  annotations: {wharf.io/tier: core;preferred}",
    )
    .replace("memory: 1Gi", "memory: 12Gi");
    ok(apply(home, "burst", &burst));
    let burst = wait_for_pods(home, "a", "burst", "a preferred tier spilling over", |p| {
        p.len() == 5 && p.iter().all(|p| !node_of(p).is_empty())
    });
    let spilled: Vec<&Value> = burst
        .iter()
        .filter(|p| node_of(p).starts_with("old-"))
        .collect();
    assert_eq!(spilled.len(), 1, "{burst:#?}");
    let why = spilled[0]["metadata"]["annotations"]["wharf.io/scheduling-scores"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.starts_with("preferred tier core has no room: placed on batch; old-"),
        "{why}"
    );

    // Project b names pool core: refused at apply, nothing stored.
    let pinned = deployment("pinned", "b", 2, "").replace(
        "    spec:\n      containers:",
        "    spec:\n      nodeSelector: {wharf.io/pool: core}\n      containers:",
    );
    let refused = fails(apply(home, "pinned", &pinned));
    assert!(
        refused.contains("project b may not place pods on pool core"),
        "{refused}"
    );
    fails(run(home, &["get", "deployment", "pinned", "-p", "b"], ""));

    // Asking only for the tier, its pods wait with the reason.
    let tiered = deployment("api", "b", 2, "  annotations: {wharf.io/tier: core}");
    ok(apply(home, "api", &tiered));
    let waiting = wait_for_pods(home, "b", "api", "b's pods pending with the reason", |p| {
        p.len() == 2
            && p.iter()
                .all(|p| reason(p).contains("2 pool core: project b has no grant"))
    });
    assert!(
        reason(&waiting[0]).contains("2 not in tier core"),
        "{waiting:#?}"
    );

    // Granted with a quota of 3 cores: both placed on new machines.
    ok(run(home, &["pool", "grant", "core", "b", "--cpu", "3"], ""));
    wait_for_pods(home, "b", "api", "b's pods placed once granted", |p| {
        placed_on(p, 2, "new-")
    });
    let grants = ok(run(home, &["pool", "grants", "core"], ""));
    let b_line = grants
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("b"));
    assert!(
        b_line.is_some_and(|l| l.split_whitespace().nth(2) == Some("3")),
        "{grants}"
    );
    let again = fails(run(home, &["pool", "grant", "core", "b"], ""));
    assert!(again.contains("overlaps"), "{again}");

    // The nodeSelector form applies now; its second pod would take b past
    // its quota (2 + 2 cores of 3) and waits with the reason.
    ok(apply(home, "pinned", &pinned));
    let pinned = wait_for_pods(home, "b", "pinned", "the pod beyond the quota waits", |p| {
        p.len() == 2
            && p.iter().filter(|p| node_of(p).starts_with("new-")).count() == 1
            && p.iter().any(|p| {
                reason(p).contains("2 pool core: project b would exceed its cpu quota of 3000m")
            })
    });
    assert!(
        pinned.iter().all(|p| !node_of(p).starts_with("old-")),
        "{pinned:#?}"
    );
}

#[test]
fn a_projects_default_tier_places_deployments_that_name_none() {
    let seed = Seed::start(&["shop"]);
    let home = seed.home.path();

    // A bad tier is refused with the field named, and nothing changes.
    let bad = fails(run(
        home,
        &["project", "update", "shop", "--tier", "gold"],
        "",
    ));
    assert!(
        bad.contains("default_tier: \"gold\" is not a tier"),
        "{bad}"
    );
    let shown = ok(run(home, &["project", "show", "shop"], ""));
    assert!(shown.contains("none"), "{shown}");

    let updated = ok(run(
        home,
        &["project", "update", "shop", "--tier", "core"],
        "",
    ));
    assert!(updated.contains("default tier core"), "{updated}");
    let shown = ok(run(home, &["project", "show", "shop"], ""));
    let tier_line = shown.lines().find(|l| l.starts_with("default tier"));
    assert!(
        tier_line.is_some_and(|l| l.split_whitespace().last() == Some("core")),
        "{shown}"
    );

    // No tier of its own: the project's, so only new machines.
    ok(apply(home, "web", &deployment("web", "shop", 4, "")));
    wait_for_pods(
        home,
        "shop",
        "web",
        "the project's tier on new machines",
        |p| placed_on(p, 4, "new-"),
    );
    let web = deployment_json(home, "shop", "web");
    assert_eq!(
        web["metadata"]["annotations"]["wharf.io/tier"], "core",
        "{web:#}"
    );

    // Its own tier wins.
    let batch = deployment("jobs", "shop", 4, "  annotations: {wharf.io/tier: batch}");
    ok(apply(home, "jobs", &batch));
    wait_for_pods(home, "shop", "jobs", "its own tier on old machines", |p| {
        placed_on(p, 4, "old-")
    });

    // Removed, the project's tier no longer applies.
    let cleared = ok(run(
        home,
        &["project", "update", "shop", "--tier", "none"],
        "",
    ));
    assert!(!cleared.contains("default tier"), "{cleared}");
    ok(apply(home, "plain", &deployment("plain", "shop", 1, "")));
    let plain = deployment_json(home, "shop", "plain");
    assert!(
        plain["metadata"]["annotations"]["wharf.io/tier"].is_null(),
        "{plain:#}"
    );
}
