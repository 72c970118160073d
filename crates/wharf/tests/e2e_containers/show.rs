//! The issue's first showcase as a user would check it: one Deployment of
//! two containers with a ConfigMap volume, a Secret and the pod's own
//! fields in env, an emptyDir they share and a locked-down security
//! context, every property checked from inside the running containers with
//! `wharf exec` (not from logs); a changed ConfigMap reaches the mounted
//! file within a minute; a root image under `runAsNonRoot` is refused with
//! the reason in `get pod` and `describe pod`. And `describe pod` lists
//! the events of an image that cannot be pulled and of a crash loop.

use std::process::Output;
use std::time::{Duration, Instant};

use super::common::cli::wharf;
use super::{
    Cli, Node, NodeSpec, TestServer, name_of, prerequisites, push_demo_image, running_pods,
    wait_for,
};

const SECRET_VALUE: &str = "wtw-s3cret-5e1";

fn config_map(greeting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: greeting, namespace: shop}}\n\
         data: {{greeting.txt: {greeting}}}\n"
    )
}

/// A one-replica Deployment `name` (pods labelled `app: NAME`) whose pod
/// spec is `pod`, written at the pod spec's indentation.
fn deployment(name: &str, pod: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 1\n{pod}---\n"
    )
}

/// The locked-down Deployment `show` (containers `app` and `sidecar`) and
/// Deployment `rootimg`, which asks for a non-root user of an image whose
/// user is root.
fn manifests(image: &str) -> String {
    let locked = "securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}";
    let show = format!(
        r#"      securityContext: {{runAsUser: 1000, runAsGroup: 3000}}
      volumes:
        - {{name: conf, configMap: {{name: greeting}}}}
        - {{name: shared, emptyDir: {{}}}}
      containers:
        - name: app
          image: {image}
          command: [/bin/sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
          {locked}
          env:
            - {{name: DB_PASSWORD, valueFrom: {{secretKeyRef: {{name: db, key: password}}}}}}
            - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
            - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
            - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
          volumeMounts:
            - {{name: conf, mountPath: /etc/greeting}}
            - {{name: shared, mountPath: /shared}}
        - name: sidecar
          image: {image}
          command: [/bin/sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
          {locked}
          volumeMounts:
            - {{name: shared, mountPath: /data}}
"#
    );
    let root_image = format!(
        "      securityContext: {{runAsNonRoot: true}}\n      containers: [{{name: main, image: '{image}'}}]\n"
    );
    deployment("show", &show) + &deployment("rootimg", &root_image)
}

/// A server with project `shop` holding the demo image, and node `wtw-N`
/// (N is 1 or 2) running its containers.
async fn demo_on_a_node(n: u8) -> (TestServer, Cli, Node) {
    let (name, bridge, netns_prefix, pod_cidr) = match n {
        1 => ("wtw-1", "wtwbr1", "wtw1-", "10.89.1.0/24"),
        _ => ("wtw-2", "wtwbr2", "wtw2-", "10.89.2.0/24"),
    };
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let robot = push_demo_image(&server, &cli).await;
    let spec = NodeSpec::local(name, bridge, netns_prefix, pod_cidr);
    let node = Node::start(&cli, spec, &robot);
    (server, cli, node)
}

/// Deletes `deployments` and waits until their pods and containers are gone.
fn delete_all(cli: &Cli, node: &Node, deployments: &[&str]) {
    for deployment in deployments {
        cli.run(&["delete", "deployment", deployment, "-p", "shop"]);
    }
    wait_for("the pods gone", Duration::from_secs(60), || {
        (node.containers().is_empty() && cli.pods("shop").is_empty()).then_some(())
    });
}

/// `wharf exec` of `command` in `container` of `pod`.
fn exec(cli: &Cli, pod: &str, container: &str, command: &[&str]) -> Output {
    wharf(cli.home.path())
        .args(["exec", "-p", "shop", pod, "-c", container, "--"])
        .args(command)
        .output()
        .unwrap()
}

/// The standard output of a command that must succeed.
fn exec_ok(cli: &Cli, pod: &str, container: &str, command: &[&str]) -> String {
    let output = exec(cli, pod, container, command);
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `Name:` in `/proc/self/status` as `container` sees it.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in\n{status}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployment_shows_config_secrets_volumes_and_security_through_exec() {
    if !prerequisites("the config and security showcase") {
        return;
    }
    let (server, cli, node) = demo_on_a_node(1).await;
    let image = format!("{}/shop/web:1.0", server.host());
    let literal = format!("password={SECRET_VALUE}");
    cli.run(&[
        "create",
        "secret",
        "generic",
        "db",
        "-p",
        "shop",
        "--from-literal",
        &literal,
    ]);
    let objects = config_map("hello") + "---\n" + &manifests(&image);
    cli.run_with(&["apply", "-f", "-"], &objects);
    let pods = wait_for("the show pod running", Duration::from_secs(90), || {
        running_pods(&cli, "show-", 1)
    });
    let pod = name_of(&pods[0]);

    for container in ["app", "sidecar"] {
        let id = exec_ok(&cli, &pod, container, &["id"]);
        assert!(id.starts_with("uid=1000 gid=3000"), "{container}: {id}");
        // The root is read-only although the user could not write to `/`
        // anyway: the error is the file system's, not the permission's.
        let refused = exec(&cli, &pod, container, &["touch", "/probe"]);
        assert!(!refused.status.success(), "{container}: {refused:?}");
        let error = String::from_utf8_lossy(&refused.stderr);
        assert!(
            error.contains("Read-only file system"),
            "{container}: {error}"
        );
        let status = exec_ok(&cli, &pod, container, &["cat", "/proc/self/status"]);
        assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
        assert_eq!(status_field(&status, "CapBnd"), "0000000000000000");
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    }

    // The emptyDir is writable and shared: what `app` writes, `sidecar`
    // reads at its own mount path.
    exec_ok(
        &cli,
        &pod,
        "app",
        &["sh", "-c", "echo from-app > /shared/note"],
    );
    assert_eq!(
        exec_ok(&cli, &pod, "sidecar", &["cat", "/data/note"]),
        "from-app\n"
    );

    assert_eq!(
        exec_ok(&cli, &pod, "app", &["cat", "/etc/greeting/greeting.txt"]),
        "hello"
    );
    let described = cli.json(&["get", "pod", &pod, "-p", "shop"]);
    let pod_ip = described["status"]["podIP"].as_str().unwrap();
    assert!(pod_ip.starts_with("10.89.1."), "{described}");
    let env = exec_ok(&cli, &pod, "app", &["env"]);
    for line in [
        format!("DB_PASSWORD={SECRET_VALUE}"),
        format!("POD_NAME={pod}"),
        format!("POD_IP={pod_ip}"),
        "NODE_NAME=wtw-1".to_string(),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }

    let changed = Instant::now();
    cli.run_with(&["apply", "-f", "-"], &config_map("bonjour"));
    wait_for(
        "the changed ConfigMap in the file",
        Duration::from_secs(60),
        || {
            let file = exec(&cli, &pod, "app", &["cat", "/etc/greeting/greeting.txt"]);
            (file.stdout == b"bonjour").then_some(())
        },
    );
    assert!(changed.elapsed() < Duration::from_secs(60));

    // A root image under runAsNonRoot never starts, and says why.
    let refused = wait_for("the root image refused", Duration::from_secs(60), || {
        cli.pods("shop").into_iter().find(|p| {
            name_of(p).starts_with("rootimg-")
                && p["status"]["reason"] == "CreateContainerConfigError"
        })
    });
    let reason = "container has runAsNonRoot and image will run as root";
    let message = refused["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(reason), "{refused}");
    let described = cli.run(&["describe", "pod", "-p", "shop", &name_of(&refused)]);
    assert!(
        described.contains("CreateContainerConfigError"),
        "{described}"
    );
    assert!(described.contains(reason), "{described}");
    assert!(refused["status"]["containerStatuses"][0]["state"]["running"].is_null());

    delete_all(&cli, &node, &["show", "rootimg"]);
}

/// A one-container Deployment of `image` running `command` with its shell.
fn failing_deployment(name: &str, image: &str, command: &str) -> String {
    let pod = format!(
        "      containers:\n        - {{name: main, image: '{image}', command: [/bin/sh, -c, '{command}']}}\n"
    );
    deployment(name, &pod)
}

/// `describe pod` of the first pod named `prefix-...` once it holds every
/// one of `lines`.
fn described_with(cli: &Cli, prefix: &str, lines: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut described = String::new();
    loop {
        let pod = cli
            .pods("shop")
            .into_iter()
            .find(|p| name_of(p).starts_with(&format!("{prefix}-")));
        if let Some(pod) = pod {
            described = cli.run(&["describe", "pod", "-p", "shop", &name_of(&pod)]);
            if lines.iter().all(|l| described.contains(l)) {
                return described;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{lines:?} never in:\n{described}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pod_lists_pull_back_off_and_crash_loop_events() {
    if !prerequisites("pod events of failures") {
        return;
    }
    let (server, cli, node) = demo_on_a_node(2).await;
    let missing = format!("{}/shop/missing:1.0", server.host());
    let image = format!("{}/shop/web:1.0", server.host());
    cli.run_with(
        &["apply", "-f", "-"],
        &(failing_deployment("nopull", &missing, "true")
            + &failing_deployment("crashy", &image, "exit 3")),
    );

    let pulled = format!("Failed to pull image \"{missing}\"");
    let backed_off = format!("Back-off pulling image \"{missing}\"");
    let described = described_with(&cli, "nopull", &["Events:", &pulled, &backed_off]);
    for line in [pulled, backed_off] {
        let event = described.lines().find(|l| l.contains(&line)).unwrap();
        assert!(event.trim_start().starts_with("Warning"), "{described}");
    }
    assert!(described.contains("BackOff"), "{described}");

    let described = described_with(
        &cli,
        "crashy",
        &[
            "Started container main",
            "Back-off restarting failed container main",
        ],
    );
    let event = described
        .lines()
        .find(|l| l.contains("Back-off restarting failed container main"))
        .unwrap();
    assert!(
        event.split_whitespace().take(2).eq(["Warning", "BackOff"]),
        "{described}"
    );

    delete_all(&cli, &node, &["nopull", "crashy"]);
}
