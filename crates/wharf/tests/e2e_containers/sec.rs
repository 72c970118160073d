//! `securityContext` checked from inside real containers: user and groups,
//! read-only root, capabilities, no_new_privs and the seccomp filter as the
//! kernel reports them; `runAsNonRoot` over a root image never starts;
//! `hostPID` is refused until a system administrator allows privileged
//! workloads in the project, then the container sees the node's PID 1, and
//! a privileged container holds every capability without a filter.

use std::time::Duration;

use super::common::TestServer;
use super::common::cli::{run_with_stdin, wharf};
use super::{
    Cli, Node, NodeSpec, name_of, prerequisites, push_tar_image, shop_with_puller, tar_of, wait_for,
};

/// An image of busybox alone, user root (no `USER`), with a writable `/tmp`.
fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    tar_of(&[
        ("bin", tar::EntryType::Directory, 0o755, b""),
        ("bin/busybox", tar::EntryType::Regular, 0o755, &busybox),
        ("tmp", tar::EntryType::Directory, 0o1777, b""),
    ])
}

/// A server with project `shop` holding the busybox image (returned), and
/// node `e2e-sec-N` (N is 1 or 2) pulling from it.
async fn busybox_on_a_node(n: u8) -> (TestServer, Cli, Node, String) {
    let (name, bridge, netns_prefix, pod_cidr) = match n {
        1 => ("e2e-sec-1", "wts1", "wts1-", "10.81.1.0/24"),
        _ => ("e2e-sec-2", "wts2", "wts2-", "10.81.2.0/24"),
    };
    let server = TestServer::start();
    let (cli, robot) = shop_with_puller(&server).await;
    let image = push_tar_image(&server, "busybox", &busybox_layer()).await;
    let node = Node::start(
        &cli,
        NodeSpec {
            name,
            bridge,
            netns_prefix,
            pod_cidr,
            host_netns: None,
            address: None,
        },
        &robot,
    );
    (server, cli, node, image)
}

/// A one-replica Deployment running `script` with busybox's shell; `pod`
/// and `container` are extra lines of the pod spec and of the container.
pub(super) fn deployment(
    name: &str,
    image: &str,
    pod: &str,
    container: &str,
    script: &str,
) -> String {
    let script: String = script
        .lines()
        .map(|l| format!("              {l}\n"))
        .collect();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
{pod}      containers:
        - name: main
          image: '{image}'
{container}          command: [/bin/busybox, sh, -c]
          args:
            - |
{script}"
    )
}

/// The log of the first pod named `prefix-...` once it holds `marker`.
fn log_with(cli: &Cli, prefix: &str, marker: &str) -> String {
    wait_for(
        &format!("{prefix}'s log to show {marker}"),
        Duration::from_secs(60),
        || {
            let pod = cli
                .pods("shop")
                .into_iter()
                .find(|p| name_of(p).starts_with(&format!("{prefix}-")))?;
            let output = wharf(cli.home.path())
                .args(["logs", "-p", "shop", &name_of(&pod)])
                .output()
                .ok()?;
            let log = String::from_utf8_lossy(&output.stdout).to_string();
            log.contains(marker).then_some(log)
        },
    )
}

/// The value of `Name:` in a `/proc/self/status` dump within `log`.
fn status_field<'l>(log: &'l str, name: &str) -> &'l str {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in\n{log}"))
        .trim()
}

/// What the container checks about itself, ending with `done`.
const SELF_CHECK: &str = "B=/bin/busybox
$B id
$B touch /tmp/probe 2>&1 || echo root-not-writable
$B grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status
$B unshare -U $B true 2>&1; echo unshare=$?
echo done
exec $B sleep 3600";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_contexts_hold_inside_the_container() {
    if !prerequisites("securityContext inside containers") {
        return;
    }
    let (_server, cli, _node, image) = busybox_on_a_node(1).await;

    let locked = deployment(
        "locked",
        &image,
        "      securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000], fsGroup: 2000}\n",
        "          securityContext:\n            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}\n",
        SELF_CHECK,
    );
    let root_image = deployment(
        "rootimage",
        &image,
        "      securityContext: {runAsNonRoot: true}\n",
        "",
        "echo started",
    );
    cli.run_with(&["apply", "-f", "-"], &format!("{locked}---\n{root_image}"));

    let log = log_with(&cli, "locked", "done");
    let id = log.lines().find(|l| l.starts_with("uid=")).unwrap_or("");
    assert!(id.starts_with("uid=1000 gid=3000"), "{log}");
    let groups = id.split("groups=").nth(1).unwrap_or("");
    for group in ["2000", "4000"] {
        assert!(groups.split(',').any(|g| g == group), "{group}: {id}");
    }
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(log.contains("root-not-writable"), "{log}");
    // Only NET_BIND_SERVICE (bit 10) is left to bound; a non-root process
    // keeps none effective across exec.
    assert_eq!(status_field(&log, "CapBnd"), "0000000000000400", "{log}");
    assert_eq!(status_field(&log, "CapEff"), "0000000000000000", "{log}");
    assert_eq!(status_field(&log, "NoNewPrivs"), "1", "{log}");
    assert_eq!(status_field(&log, "Seccomp"), "2", "{log}");
    // The filter, not a missing capability: unprivileged users may make a
    // user namespace on this kernel (the privileged test shows it works
    // unconfined).
    assert!(log.contains("Operation not permitted"), "{log}");
    assert!(log.contains("unshare=1"), "{log}");

    // A root image under runAsNonRoot: never started, and says why.
    let pod = wait_for("the root image refused", Duration::from_secs(60), || {
        cli.pods("shop").into_iter().find(|p| {
            name_of(p).starts_with("rootimage-")
                && p["status"]["reason"] == "CreateContainerConfigError"
        })
    });
    let message = pod["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("container has runAsNonRoot and image will run as root"),
        "{message}"
    );
    let described = cli.run(&["describe", "pod", "-p", "shop", &name_of(&pod)]);
    assert!(described.contains("runAsNonRoot"), "{described}");
    std::thread::sleep(Duration::from_secs(3));
    let pod = cli
        .pods("shop")
        .into_iter()
        .find(|p| name_of(p).starts_with("rootimage-"))
        .unwrap();
    assert_ne!(pod["status"]["phase"], "Running", "{pod}");
    assert!(
        pod["status"]["containerStatuses"][0]["state"]["running"].is_null(),
        "{pod}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_pid_needs_allow_privileged_then_sees_the_nodes_processes() {
    if !prerequisites("hostPID and allowPrivileged") {
        return;
    }
    let (_server, cli, _node, image) = busybox_on_a_node(2).await;
    let manifest = deployment(
        "hostpid",
        &image,
        "      hostPID: true\n      securityContext: {seccompProfile: {type: Unconfined}}\n",
        "",
        "B=/bin/busybox
echo pid1=$($B cat /proc/1/comm) self=$$
$B unshare -U $B true 2>&1; echo unshare=$?
echo done
exec $B sleep 3600",
    );
    let mut apply = wharf(cli.home.path());
    apply.args(["apply", "-f", "-"]);
    let refused = run_with_stdin(apply, &manifest);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    for field in [
        "spec.template.spec.hostPID",
        "spec.template.spec.securityContext.seccompProfile.type",
        "allow-privileged",
    ] {
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
    let deployments = cli.run(&["get", "deployments", "-p", "shop"]);
    assert!(!deployments.contains("hostpid"), "{deployments}");
    assert!(cli.pods("shop").is_empty());

    let shown = cli.run(&["project", "show", "shop"]);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("allow privileged") && l.ends_with("no")),
        "{shown}"
    );
    cli.run(&["project", "update", "shop", "--allow-privileged=true"]);
    let shown = cli.run(&["project", "show", "shop"]);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("allow privileged") && l.ends_with("yes")),
        "{shown}"
    );
    cli.run_with(&["apply", "-f", "-"], &manifest);
    let log = log_with(&cli, "hostpid", "done");
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    assert!(
        log.contains(&format!("pid1={} ", host_init.trim())),
        "host PID 1 is {host_init}: {log}"
    );
    assert!(!log.contains("self=1\n"), "{log}");
    // Unconfined: the user namespace the default filter refuses is made.
    assert!(log.contains("unshare=0"), "{log}");

    // Privileged, now allowed: every capability, no filter, writable /sys.
    let privileged = deployment(
        "privileged",
        &image,
        "",
        "          securityContext: {privileged: true}\n",
        "B=/bin/busybox
$B grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status
$B grep ' /sys ' /proc/self/mounts
echo done
exec $B sleep 3600",
    );
    cli.run_with(&["apply", "-f", "-"], &privileged);
    let log = log_with(&cli, "privileged", "done");
    // Every capability the agent holds (this process's set: the agent is
    // its child), as with Docker.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own_bounding = status_field(&own, "CapBnd");
    assert_eq!(status_field(&log, "CapBnd"), own_bounding, "{log}");
    assert_eq!(status_field(&log, "CapEff"), own_bounding, "{log}");
    assert_eq!(status_field(&log, "Seccomp"), "0", "{log}");
    assert!(log.contains("sysfs /sys sysfs rw,"), "{log}");
}
