//! Pod volumes for real: an emptyDir shared by two containers, a Memory
//! emptyDir that is a tmpfs of its size, read-only mounts, subPath, a
//! hostPath under the administrator's prefix (one outside it refused at
//! apply, creating nothing), a subPath through a container's symlink to
//! `/` that stays in its volume, and nothing left mounted or on disk once
//! the pod is gone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::common::TestServer;
use super::common::cli::{run_with_stdin, wharf};
use super::{Cli, Node, NodeSpec, pod_id, prerequisites, push_demo_image, running_pods, wait_for};

/// Runs `script` with the image's shell inside container `id` of `node`.
fn exec(node: &Node, id: &str, script: &str) -> std::process::Output {
    Command::new("runc")
        .arg("--root")
        .arg(&node.runc_root)
        .args(["exec", id, "/bin/sh", "-c", script])
        .output()
        .unwrap()
}

fn stdout_of(node: &Node, id: &str, script: &str) -> Option<String> {
    let output = exec(node, id, script);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn volumes_deployment(image: &str, host_dir: &Path) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: vol, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: vol}}}}
  template:
    metadata: {{labels: {{app: vol}}}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes:
        - {{name: shared, emptyDir: {{}}}}
        - {{name: scratch, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
        - {{name: host, hostPath: {{path: {host}, type: DirectoryOrCreate}}}}
      containers:
        - name: writer
          image: {image}
          command: [/bin/sh, -c, 'mkdir -p /shared/sub && echo inner > /shared/sub/file && echo hello > /shared/msg; rm -rf /shared/escape; ln -s / /shared/escape; exec sleep 3600']
          volumeMounts:
            - {{name: shared, mountPath: /shared}}
            - {{name: scratch, mountPath: /scratch}}
            - {{name: host, mountPath: /host}}
        - name: reader
          image: {image}
          command: [/bin/sh, -c, 'test -L /in/escape || exit 1; exec sleep 3600']
          volumeMounts:
            - {{name: shared, mountPath: /in, readOnly: true}}
            - {{name: shared, mountPath: /escaped, subPath: escape}}
            - {{name: shared, mountPath: /sub, subPath: sub}}
            - {{name: host, mountPath: /host-ro, readOnly: true}}
"#,
        host = host_dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_shared_bounded_read_only_and_removed_with_the_pod() {
    if !prerequisites("pod volumes") {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let mut node = Node::start(
        &cli,
        NodeSpec {
            name: "e2e-vol-1",
            bridge: "wtv1",
            netns_prefix: "wtv1-",
            pod_cidr: "10.83.1.0/24",
            host_netns: None,
            address: None,
        },
        &robot,
    );
    let allowed = tempfile::tempdir().unwrap();
    let allowed_dir = allowed.path().canonicalize().unwrap();
    let image = format!("{}/shop/web:1.0", server.host());

    // No prefix allowed yet: the hostPath is refused at apply, naming the
    // field, and nothing is created.
    let manifest = volumes_deployment(&image, &allowed_dir.join("data"));
    let mut apply = wharf(cli.home.path());
    apply.args(["apply", "-f", "-"]);
    let refused = run_with_stdin(apply, &manifest);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "applied: {error}");
    assert!(
        error.contains("spec.template.spec.volumes[2].hostPath.path"),
        "{error}"
    );
    let outside = allowed_dir.join("outside");
    // A prefix must be a plain absolute path.
    for bad in ["srv/data", "/srv/../etc"] {
        let set = wharf(cli.home.path())
            .args(["settings", "set", "--host-path-prefixes", bad])
            .output()
            .unwrap();
        let error = String::from_utf8_lossy(&set.stderr);
        assert!(
            !set.status.success() && error.contains("host_path_prefixes"),
            "{bad}: {error}"
        );
    }
    let data = allowed_dir.join("data");
    cli.run(&[
        "settings",
        "set",
        "--host-path-prefixes",
        &format!("/nonexistent/elsewhere,{}", data.display()),
    ]);
    let settings = cli.json(&["settings", "show"]);
    assert_eq!(
        settings["host_path_prefixes"][1].as_str(),
        data.to_str(),
        "{settings}"
    );
    let mut apply = wharf(cli.home.path());
    apply.args(["apply", "-f", "-"]);
    let refused = run_with_stdin(apply, &volumes_deployment(&image, &outside));
    assert!(!refused.status.success());
    let deployments = cli.json(&["get", "deployments", "-p", "shop"]);
    assert_eq!(
        deployments["items"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{deployments}"
    );
    assert!(!outside.exists(), "nothing was made on the node");

    // Allowed: the pod runs with its volumes.
    cli.run_with(&["apply", "-f", "-"], &manifest);
    let pods = wait_for("the pod running", Duration::from_secs(60), || {
        running_pods(&cli, "vol-", 1)
    });
    let id = pod_id(&pods[0]);
    let (writer, reader) = (format!("{id}-writer"), format!("{id}-reader"));
    // One container writes, the other reads.
    let read = wait_for(
        "the reader to see the file",
        Duration::from_secs(20),
        || stdout_of(&node, &reader, "cat /in/msg"),
    );
    assert_eq!(read, "hello");
    assert_eq!(
        stdout_of(&node, &reader, "cat /sub/file").as_deref(),
        Some("inner")
    );
    // The reader restarts until the writer's link to `/` exists; its
    // subPath through that link is then the volume's root, not the node's.
    let listed = wait_for("the reader restarted", Duration::from_secs(30), || {
        stdout_of(&node, &reader, "ls /escaped")
    });
    let names: Vec<&str> = listed.lines().collect();
    assert!(
        names.contains(&"msg") && !names.contains(&"etc"),
        "{names:?}"
    );
    // A write through the subPath lands in the volume.
    assert!(stdout_of(&node, &reader, "echo back > /sub/from-reader").is_some());
    assert_eq!(
        stdout_of(&node, &writer, "cat /shared/sub/from-reader").as_deref(),
        Some("back")
    );
    // readOnly mounts refuse writes.
    let write = exec(&node, &reader, "echo x > /in/new");
    assert!(!write.status.success(), "{write:?}");
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
        "{write:?}"
    );
    assert!(!exec(&node, &reader, "touch /host-ro/new").status.success());
    // The Memory emptyDir is a tmpfs of its sizeLimit.
    let mounts = stdout_of(&node, &writer, "cat /proc/mounts").unwrap();
    let scratch = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/scratch"))
        .unwrap_or_else(|| panic!("no /scratch in {mounts}"));
    assert!(
        scratch.starts_with("tmpfs /scratch tmpfs ") && scratch.contains("size=8192k"),
        "{scratch}"
    );
    let full = exec(
        &node,
        &writer,
        "dd if=/dev/zero of=/scratch/big bs=1M count=16",
    );
    assert!(!full.status.success(), "wrote 16 MiB into 8: {full:?}");
    assert!(stdout_of(&node, &writer, "rm /scratch/big").is_some());
    // The hostPath was made (DirectoryOrCreate) and is the node's directory.
    assert!(stdout_of(&node, &writer, "echo node > /host/from-pod").is_some());
    let host_file = allowed_dir.join("data/from-pod");
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "node\n");
    let pod_dirs = node.node_dir().join("pods");
    assert_eq!(std::fs::read_dir(&pod_dirs).unwrap().count(), 1);

    // A restarted agent adopts the pod and keeps its volumes as they are:
    // the tmpfs with its data, mounted once.
    assert!(stdout_of(&node, &writer, "echo kept > /scratch/keep").is_some());
    let volume_mounts = |node: &Node| {
        node.mounts()
            .iter()
            .filter(|m| m.contains("/volumes/"))
            .count()
    };
    let before = volume_mounts(&node);
    node.crash();
    node.spawn();
    wait_for("the agent back", Duration::from_secs(30), || {
        node.log().contains("adopting a pod").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        stdout_of(&node, &writer, "cat /scratch/keep").as_deref(),
        Some("kept")
    );
    assert_eq!(volume_mounts(&node), before, "{:?}", node.mounts());

    // Deleting the pod leaves no mount and no directory, and the node's
    // own files in the hostPath stay.
    cli.run(&["delete", "deployment", "vol", "-p", "shop"]);
    wait_for("the pod gone", Duration::from_secs(60), || {
        (node.containers().is_empty()
            && node.mounts().is_empty()
            && std::fs::read_dir(&pod_dirs).unwrap().count() == 0)
            .then_some(())
    });
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "node\n");
}
