//! configMap, secret and downwardAPI volumes in real containers: a
//! ConfigMap key as a file at an item's path with its mode, read-only; a
//! Secret on a tmpfs; the pod's labels and name as files; and a ConfigMap
//! changed with `wharf apply` showing in the mounted file within a minute,
//! through the `..data` swap.

use std::time::{Duration, Instant};

use super::config::running_with;
use super::{Cli, Node, NodeSpec, TestServer, prerequisites, push_demo_image, wait_for};

const SECRET_VALUE: &str = "e2e-vol-s3cret-42";

fn config_map(mode: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app, namespace: shop}}\n\
         data: {{mode: {mode}, other: unused}}\n"
    )
}

/// The ConfigMap, a Secret and a Deployment that prints what it sees, then
/// the ConfigMap's file every second.
fn manifests(image: &str) -> String {
    let script = "echo SECRET=$(cat /etc/db/password); grep ' /etc/db ' /proc/mounts; \
                  ls -lL /etc/app/conf/mode.txt; ls /etc/app; \
                  cat /etc/podinfo/labels; echo NAME=$(cat /etc/podinfo/name); \
                  touch /etc/app/x 2>/dev/null || echo READONLY; \
                  while true; do echo MODE=$(cat /etc/app/conf/mode.txt); sleep 1; done";
    format!(
        r#"{config_map}---
apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: shop}}
stringData: {{password: {SECRET_VALUE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: cmvol, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: cmvol}}}}
  template:
    metadata: {{labels: {{app: cmvol}}}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes:
        - {{name: conf, configMap: {{name: app, items: [{{key: mode, path: conf/mode.txt, mode: 0400}}]}}}}
        - {{name: creds, secret: {{secretName: db}}}}
        - name: podinfo
          downwardAPI:
            items:
              - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
              - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      containers:
        - name: main
          image: {image}
          command: ["/bin/sh", "-c", "{script}"]
          volumeMounts:
            - {{name: conf, mountPath: /etc/app}}
            - {{name: creds, mountPath: /etc/db}}
            - {{name: podinfo, mountPath: /etc/podinfo}}
"#,
        config_map = config_map("prod"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_and_secret_volumes_hold_the_objects_and_follow_changes() {
    if !prerequisites("configMap and secret volumes") {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let node = Node::start(
        &cli,
        NodeSpec {
            name: "e2e-cmvol-1",
            bridge: "wtm1",
            netns_prefix: "wtm1-",
            pod_cidr: "10.86.1.0/24",
            host_netns: None,
            address: None,
        },
        &robot,
    );
    let image = format!("{}/shop/web:1.0", server.host());

    cli.run_with(&["apply", "-f", "-"], &manifests(&image));
    let (_, _, log) = running_with(&cli, "cmvol-", "MODE=prod");
    assert!(
        log.lines().any(|l| l == format!("SECRET={SECRET_VALUE}")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("tmpfs /etc/db tmpfs ro")),
        "the secret volume is a read-only tmpfs:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("-r-------- ") && l.ends_with("/etc/app/conf/mode.txt")),
        "the item's mode applies:\n{log}"
    );
    // Only the item is projected, and the volume is read-only.
    assert!(log.lines().any(|l| l == "conf"), "{log}");
    assert!(!log.contains("other"), "{log}");
    assert!(log.lines().any(|l| l == "READONLY"), "{log}");
    assert!(log.lines().any(|l| l == "app=\"cmvol\""), "{log}");
    assert!(log.lines().any(|l| l.starts_with("NAME=cmvol-")), "{log}");
    assert!(!node.log().contains(SECRET_VALUE));

    let changed = Instant::now();
    cli.run_with(&["apply", "-f", "-"], &config_map("staging"));
    running_with(&cli, "cmvol-", "MODE=staging");
    assert!(
        changed.elapsed() < Duration::from_secs(60),
        "the change took {:?}",
        changed.elapsed()
    );

    cli.run(&["delete", "deployment", "cmvol", "-p", "shop"]);
    wait_for("the pods gone", Duration::from_secs(60), || {
        (node.containers().is_empty() && cli.pods("shop").is_empty()).then_some(())
    });
}
