//! Env from ConfigMaps, Secrets and the pod in real containers: a
//! Deployment's container prints what it got, and a pod whose ConfigMap is
//! missing waits with `CreateContainerConfigError` until it is created.

use std::time::Duration;

use super::{Cli, Node, NodeSpec, TestServer, prerequisites, push_demo_image, wait_for};
use serde_json::Value;

const SECRET_VALUE: &str = "e2e-s3cret-71b";

/// A ConfigMap, a Secret and a Deployment printing its environment.
fn manifests(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: app, namespace: shop}}
data: {{mode: prod, GREETING: hello, 1st: skipped}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: shop}}
stringData: {{password: {SECRET_VALUE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: envtest, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: envtest}}}}
  template:
    metadata: {{labels: {{app: envtest}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: {image}
          command: ["/bin/sh", "-c", "env; echo ARGS $(POD_NAME); sleep 3600"]
          resources: {{limits: {{memory: 64Mi}}}}
          envFrom:
            - {{prefix: CM_, configMapRef: {{name: app}}}}
            - {{configMapRef: {{name: app}}}}
          env:
            - {{name: FROM_CM, valueFrom: {{configMapKeyRef: {{name: app, key: mode}}}}}}
            - {{name: FROM_SECRET, valueFrom: {{secretKeyRef: {{name: db, key: password}}}}}}
            - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
            - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
            - {{name: MEMORY_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
            - {{name: NOT_THERE, valueFrom: {{secretKeyRef: {{name: db, key: nope, optional: true}}}}}}
            - {{name: SAID, value: "$(FROM_CM) for $(POD_NAME)"}}
"#
    )
}

/// A Deployment whose container needs ConfigMap `late`.
fn waiting_deployment(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: waits, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: waits}}}}
  template:
    metadata: {{labels: {{app: waits}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: {image}
          command: ["/bin/sh", "-c", "echo LATE=$LATE; sleep 3600"]
          env:
            - {{name: LATE, valueFrom: {{configMapKeyRef: {{name: late, key: k}}}}}}
"#
    )
}

/// The first pod of project `shop` whose name starts with `prefix`.
fn pod_named(cli: &Cli, prefix: &str) -> Option<Value> {
    cli.pods("shop").into_iter().find(|p| {
        p["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(prefix))
    })
}

/// The running pod `prefix-...` once its log holds `line`: its name, IP and log.
pub(super) fn running_with(cli: &Cli, prefix: &str, line: &str) -> (String, String, String) {
    wait_for(
        &format!("{prefix} printing {line}"),
        Duration::from_secs(90),
        || {
            let pod = pod_named(cli, prefix)?;
            if pod["status"]["phase"] != "Running" {
                return None;
            }
            let name = pod["metadata"]["name"].as_str()?.to_string();
            let ip = pod["status"]["podIP"].as_str()?.to_string();
            let log = cli.run(&["logs", "-p", "shop", &name]);
            log.contains(line).then_some((name, ip, log))
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_comes_from_config_maps_secrets_and_the_pod() {
    if !prerequisites("env from config objects") {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let node = Node::start(
        &cli,
        NodeSpec {
            name: "e2e-config-1",
            bridge: "wtc1",
            netns_prefix: "wtc1-",
            pod_cidr: "10.82.1.0/24",
            host_netns: None,
            address: None,
        },
        &robot,
    );
    let image = format!("{}/shop/web:1.0", server.host());

    cli.run_with(&["apply", "-f", "-"], &manifests(&image));
    let (name, ip, log) = running_with(&cli, "envtest-", "ARGS envtest-");
    for line in [
        "FROM_CM=prod".to_string(),
        format!("FROM_SECRET={SECRET_VALUE}"),
        format!("POD_NAME={name}"),
        format!("POD_IP={ip}"),
        "MEMORY_MI=64".to_string(),
        "CM_GREETING=hello".to_string(),
        "CM_mode=prod".to_string(),
        "CM_1st=skipped".to_string(),
        "GREETING=hello".to_string(),
        format!("SAID=prod for {name}"),
        format!("ARGS {name}"),
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "{line} missing from:\n{log}"
        );
    }
    assert!(!log.contains("NOT_THERE"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("1st=")), "{log}");
    assert!(ip.starts_with("10.82.1."), "{ip}");
    // The value reaches the container only: not the pod, its description
    // or events, nor the agent's log.
    let described = cli.run(&["describe", "pod", &name, "-p", "shop"]);
    let pod = cli.run(&["get", "pod", &name, "-p", "shop", "-o", "yaml"]);
    assert!(
        described.contains("InvalidEnvironmentVariableNames")
            && described.contains("Keys [1st] from the EnvFrom configMap shop/app were skipped"),
        "{described}"
    );
    for text in [&described, &pod, &node.log()] {
        assert!(!text.contains(SECRET_VALUE), "{text}");
    }

    cli.run_with(&["apply", "-f", "-"], &waiting_deployment(&image));
    let waiting = wait_for(
        "the missing configmap named",
        Duration::from_secs(60),
        || {
            let pod = pod_named(&cli, "waits-")?;
            (pod["status"]["reason"] == "CreateContainerConfigError").then_some(pod)
        },
    );
    let message = waiting["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("configmap \"late\" not found"),
        "{waiting}"
    );
    let name = waiting["metadata"]["name"].as_str().unwrap().to_string();
    let described = cli.run(&["describe", "pod", &name, "-p", "shop"]);
    assert!(
        described.contains("CreateContainerConfigError"),
        "{described}"
    );
    cli.run(&[
        "create",
        "configmap",
        "late",
        "-p",
        "shop",
        "--from-literal",
        "k=now",
    ]);
    running_with(&cli, "waits-", "LATE=now");

    for deployment in ["envtest", "waits"] {
        cli.run(&["delete", "deployment", deployment, "-p", "shop"]);
    }
    wait_for("the pods gone", Duration::from_secs(60), || {
        (node.containers().is_empty() && cli.pods("shop").is_empty()).then_some(())
    });
}
