//! `wharf commit POD` with real runc, overlayfs and a real push: a
//! container that wrote a file, deleted one of its image's and replaced an
//! image directory with a new one is committed; a new Deployment of the
//! snapshot sees exactly that; the base layers were not sent again; the
//! pause was reported; a caller without push on the target is refused
//! before the container is touched; and docker (the test's own dockerd)
//! pulls and runs the committed image.
//!
//! The node pulls and pushes with its own node credential (from a join
//! token), which may push only while the server's commit grant lives.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::common::cli::{run_with_stdin, wharf};
use super::common::docker::DockerDaemon;
use super::common::skopeo::Skopeo;
use super::common::{Credentials, Image, Layer, OciLayout, TestServer, require_tool};
use super::{Cli, Node, NodeSpec, name_of, prerequisites, running_pods, tar_of, wait_for};

const NODE: &str = "wcm-1";

/// Two layers: busybox with the applets the test uses, then the content
/// the container changes (a file it deletes, a directory it replaces).
fn base_layers() -> Vec<Layer> {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut tools: Vec<(String, tar::EntryType, u32, Vec<u8>)> = vec![
        ("bin".into(), tar::EntryType::Directory, 0o755, Vec::new()),
        (
            "bin/busybox".into(),
            tar::EntryType::Regular,
            0o755,
            busybox,
        ),
        ("tmp".into(), tar::EntryType::Directory, 0o1777, Vec::new()),
    ];
    for applet in ["sh", "cat", "ls", "rm", "mkdir", "echo", "sleep", "test"] {
        tools.push((
            format!("bin/{applet}"),
            tar::EntryType::Symlink,
            0o777,
            b"busybox".to_vec(),
        ));
    }
    let tools: Vec<(&str, tar::EntryType, u32, &[u8])> = tools
        .iter()
        .map(|(p, k, m, b)| (p.as_str(), *k, *m, b.as_slice()))
        .collect();
    let content = tar_of(&[
        ("etc", tar::EntryType::Directory, 0o755, b""),
        ("etc/gone.txt", tar::EntryType::Regular, 0o644, b"doomed\n"),
        ("keep.txt", tar::EntryType::Regular, 0o644, b"kept\n"),
        ("srv", tar::EntryType::Directory, 0o755, b""),
        ("srv/site", tar::EntryType::Directory, 0o755, b""),
        (
            "srv/site/old1.html",
            tar::EntryType::Regular,
            0o644,
            b"old 1\n",
        ),
        (
            "srv/site/old2.html",
            tar::EntryType::Regular,
            0o644,
            b"old 2\n",
        ),
    ]);
    vec![Layer::from_tar(&tar_of(&tools)), Layer::from_tar(&content)]
}

/// What the container does at start: a new file, a deleted image file, an
/// image directory replaced by a new one with one file (overlayfs makes it
/// opaque), a file in its volume; then it waits.
const CHANGES: &str = "echo hello > /new.txt && rm /etc/gone.txt && rm -rf /srv/site \
    && mkdir /srv/site && echo fresh > /srv/site/only.txt && echo scratch > /scratch/tmp.txt \
    && echo changed; trap 'exit 0' TERM; sleep 3600 & wait";

fn deployment(name: &str, image: &str, script: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes: [{{name: scratch, emptyDir: {{}}}}]
      containers:
        - name: main
          image: '{image}'
          command: [/bin/sh, -c, "{script}"]
          volumeMounts: [{{name: scratch, mountPath: /scratch}}]
"#
    )
}

/// The digests of the blobs the registry stores.
fn stored_blobs(server: &TestServer) -> BTreeSet<String> {
    let root = server.data_dir().join("registry/blobs/sha256");
    let mut found = BTreeSet::new();
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.insert(format!("sha256:{}", file.file_name().to_string_lossy()));
        }
    }
    found
}

fn blob_path(server: &TestServer, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    server
        .data_dir()
        .join("registry/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

/// The entry names of a gzip layer.
fn layer_entries(path: &Path) -> BTreeSet<String> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

/// A node credential (`robot$node+NAME`) from a join token.
pub(super) async fn node_credential(server: &TestServer, name: &str) -> Credentials {
    let api = server.admin().await;
    let token = api
        .expect(
            Method::POST,
            "/api/v1/pools/web/join-tokens",
            Some(json!({"ttlSeconds": 600})),
            reqwest::StatusCode::CREATED,
        )
        .await;
    let joined: Value = server
        .client()
        .post(format!("{}/api/v1/join", server.url()))
        .json(&json!({"token": token["token"], "node": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Credentials {
        user: format!("robot$node+{name}"),
        password: joined["secret"].as_str().unwrap().to_string(),
    }
}

fn exec(cli: &Cli, pod: &str, command: &[&str]) -> std::process::Output {
    wharf(cli.home.path())
        .args(["exec", "-p", "shop", pod, "--"])
        .args(command)
        .output()
        .unwrap()
}

fn runc_status(node: &Node, pod: &str) -> String {
    let id = node
        .containers()
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| id.ends_with("-main") && pod_matches(id, pod))
        .unwrap_or_else(|| panic!("no container of {pod}: {:?}", node.containers()));
    let output = std::process::Command::new("runc")
        .arg("--root")
        .arg(&node.runc_root)
        .args(["state", &id])
        .output()
        .unwrap();
    let state: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    state["status"].as_str().unwrap_or_default().to_string()
}

/// Whether runtime id `id` is a container of the pod with short id `pod`.
fn pod_matches(id: &str, pod: &str) -> bool {
    id.starts_with(pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_container_runs_again_as_it_was_and_docker_pulls_it() {
    if !(prerequisites("committing a container")
        && require_tool("dockerd", "apt-get install docker.io"))
    {
        return;
    }
    let server = TestServer::start();
    let cli = Cli::login(&server);
    let api = server.admin().await;
    api.create_project("shop", false, None).await;
    api.create_project("vault", false, None).await;
    // A quota smaller than the container's changes (12 bytes of content).
    api.create_project("tiny", false, Some(8)).await;
    let developer = api.create_member("shop", "builder", "developer").await;
    api.set_member("tiny", "builder", "developer").await;

    // The base image: two layers, pushed with skopeo.
    let arch = wharf_image::Platform::host().architecture;
    let image = Image::new(&arch, &base_layers());
    let layout_dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(layout_dir.path());
    layout.add_image(&image, "base");
    let skopeo = Skopeo::new(&server);
    skopeo
        .copy(&layout.reference("base"), &skopeo.image("shop/base:1"), &[])
        .await;
    let base = format!("{}/shop/base:1", server.host());

    let robot = node_credential(&server, NODE).await;
    let node = Node::start(
        &cli,
        NodeSpec::local(NODE, "wcmbr1", "wcm", "10.119.1.0/24"),
        &robot,
    );
    cli.run_with(&["apply", "-f", "-"], &deployment("app", &base, CHANGES));
    let pods = wait_for("the app pod running", Duration::from_secs(90), || {
        running_pods(&cli, "app-", 1)
    });
    let pod = name_of(&pods[0]);
    wait_for("the changes made", Duration::from_secs(20), || {
        cli.run(&["logs", "-p", "shop", &pod])
            .contains("changed")
            .then_some(())
    });
    let pod_id = super::pod_id(&pods[0]);
    let restarts = pods[0]["status"]["containerStatuses"][0]["restartCount"].clone();

    // A developer of shop may not push to vault: refused before the node
    // is asked, the container untouched.
    let before = stored_blobs(&server);
    let home = tempfile::tempdir().unwrap();
    let mut login = wharf(home.path());
    login.args([
        "login",
        &server.url(),
        "-u",
        &developer.user,
        "--password-stdin",
    ]);
    super::common::cli::ok(run_with_stdin(login, &format!("{}\n", developer.password)));
    let refused = wharf(home.path())
        .args(["commit", "-p", "shop", &pod, "vault/stolen:1"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("may not push to repository vault/stolen"),
        "{message}"
    );
    assert_eq!(runc_status(&node, &pod_id), "running");
    assert!(
        !node.log().contains("commit asked"),
        "the agent was reached"
    );
    let events = cli.run(&["describe", "pod", "-p", "shop", &pod]);
    assert!(!events.contains("Commit"), "{events}");
    assert_eq!(stored_blobs(&server), before);

    // A snapshot the target's quota cannot hold: refused by the node after
    // measuring, before pausing.
    let over = wharf(home.path())
        .args(["commit", "-p", "shop", &pod, "tiny/snap:1"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&over.stderr);
    assert!(!over.status.success(), "{message}");
    assert!(
        message.contains("exceed what project tiny's quota leaves (8 bytes)"),
        "{message}"
    );
    assert!(!message.contains("paused"), "{message}");
    assert_eq!(runc_status(&node, &pod_id), "running");
    assert_eq!(stored_blobs(&server), before);

    // The developer commits to shop: progress on stderr, result on stdout.
    let committed = wharf(home.path())
        .args([
            "commit",
            "-p",
            "shop",
            &pod,
            "shop/snap:1",
            "-a",
            "builder <b@example.com>",
            "-m",
            "frozen for the test",
            "--change",
            "ENV STAGE=snapshot",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&committed.stderr);
    assert!(committed.status.success(), "{progress}");
    let result: Value = serde_json::from_slice(&committed.stdout).unwrap();
    assert!(
        progress.contains("paused") && progress.contains("resumed after"),
        "{progress}"
    );
    assert!(
        result["pausedMs"].is_u64() && result["totalMs"].is_u64(),
        "{result}"
    );
    assert_eq!(result["image"], format!("{}/shop/snap:1", server.host()));
    // Both base layers mounted, not sent; only the new layer, the config
    // and the manifest are new in the registry.
    assert_eq!(result["reusedLayers"], 2, "{result}");
    let after = stored_blobs(&server);
    let added: BTreeSet<String> = after.difference(&before).cloned().collect();
    let manifest: Value = serde_json::from_slice(&skopeo.inspect_raw("shop/snap:1").await).unwrap();
    let expected: BTreeSet<String> = [
        result["layerDigest"].as_str().unwrap().to_string(),
        manifest["config"]["digest"].as_str().unwrap().to_string(),
        result["digest"].as_str().unwrap().to_string(),
    ]
    .into();
    assert_eq!(added, expected);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (i, layer) in image.layers.iter().enumerate() {
        assert_eq!(layers[i]["digest"], layer.digest.as_str());
    }
    // The layer: the new file, whiteout and opaque directory; not the
    // node's files, runc's mount points nor the volume.
    let entries = layer_entries(&blob_path(&server, result["layerDigest"].as_str().unwrap()));
    for present in [
        "new.txt",
        "etc/.wh.gone.txt",
        "srv/site/.wh..wh..opq",
        "srv/site/only.txt",
    ] {
        assert!(entries.contains(present), "{present} missing: {entries:?}");
    }
    for absent in [
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "scratch",
        "scratch/tmp.txt",
        "proc",
        "dev",
        "sys",
    ] {
        assert!(
            !entries.contains(absent),
            "{absent} in the layer: {entries:?}"
        );
    }
    let config: Value = serde_json::from_slice(
        &std::fs::read(blob_path(
            &server,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let history = config["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(history["author"], "builder <b@example.com>");
    assert_eq!(history["comment"], "frozen for the test");
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "STAGE=snapshot"), "{config}");
    assert!(
        env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")),
        "{config}"
    );
    // The container went on running, its run the same.
    assert_eq!(runc_status(&node, &pod_id), "running");
    let now = running_pods(&cli, "app-", 1).expect("the pod still running");
    assert_eq!(
        now[0]["status"]["containerStatuses"][0]["restartCount"],
        restarts
    );
    let described = cli.run(&["describe", "pod", "-p", "shop", &pod]);
    assert!(described.contains("Committed"), "{described}");

    // Without the pause, zstd: nothing frozen, an OCI zstd layer on the
    // same base layers.
    let unpaused = wharf(home.path())
        .args([
            "commit",
            "-p",
            "shop",
            &pod,
            "shop/snap:zstd",
            "--pause=false",
            "--compression",
            "zstd",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&unpaused.stderr);
    assert!(unpaused.status.success(), "{progress}");
    assert!(
        !progress.contains("paused") && !progress.contains("resumed"),
        "{progress}"
    );
    let zstd: Value = serde_json::from_slice(&unpaused.stdout).unwrap();
    assert_eq!(
        (zstd["pausedMs"].as_u64(), zstd["reusedLayers"].as_u64()),
        (Some(0), Some(2))
    );
    let zstd_manifest: Value =
        serde_json::from_slice(&skopeo.inspect_raw("shop/snap:zstd").await).unwrap();
    assert_eq!(
        zstd_manifest["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    // A new Deployment from the snapshot sees exactly the changes.
    let snapshot = result["image"].as_str().unwrap().to_string();
    cli.run_with(
        &["apply", "-f", "-"],
        &deployment(
            "again",
            &snapshot,
            "echo up; trap 'exit 0' TERM; sleep 3600 & wait",
        ),
    );
    let again = wait_for(
        "the snapshot's pod running",
        Duration::from_secs(90),
        || running_pods(&cli, "again-", 1),
    );
    let again = name_of(&again[0]);
    let out = |command: &[&str]| {
        let output = exec(&cli, &again, command);
        assert!(output.status.success(), "{command:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(out(&["cat", "/new.txt"]), "hello\n");
    assert_eq!(out(&["cat", "/keep.txt"]), "kept\n");
    assert_eq!(out(&["ls", "/srv/site"]), "only.txt\n");
    assert_eq!(out(&["cat", "/srv/site/only.txt"]), "fresh\n");
    assert!(
        !exec(&cli, &again, &["test", "-e", "/etc/gone.txt"])
            .status
            .success()
    );
    assert_eq!(
        out(&["ls", "/scratch"]),
        "",
        "the volume's content is not the image's"
    );
    assert!(out(&["sh", "-c", "echo $STAGE"]).contains("snapshot"));

    // docker pulls and runs it.
    let daemon = DockerDaemon::start().await;
    let login = daemon.login(&server.host(), &developer).await;
    assert!(login.status.success(), "docker login: {login:?}");
    daemon.run(&["pull", &snapshot]).await;
    let ran = daemon
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            &snapshot,
            "cat",
            "/new.txt",
            "/srv/site/only.txt",
        ])
        .await;
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello\nfresh\n");
    let listing = daemon
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            &snapshot,
            "ls",
            "/srv/site",
            "/etc",
        ])
        .await;
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        !listing.contains("gone.txt") && !listing.contains("old1.html"),
        "{listing}"
    );
}
