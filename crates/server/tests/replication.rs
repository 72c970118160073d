//! Replication between real servers on loopback: each test starts several
//! Wharf servers (one per "IDC"), configures endpoints and policies through
//! the API, pushes over HTTP and watches the artifacts arrive.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use wharf_oci::{Digest, DigestAlgorithm, RepositoryName, Tag};
use wharf_registry::Origin;
use wharf_replication::{
    EndpointKind, Manifest, RegistryAccess, RegistryCredentials, RemoteOptions, RemoteRegistry,
    ReplicationOptions, TagState,
};
use wharf_server::ServerConfig;

const PASSWORD: &str = "admin-password-1";

/// One running server and an admin session on it.
struct Peer {
    url: String,
    instance: String,
    http: reqwest::Client,
    token: String,
    registry: RemoteRegistry,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Peer {
    async fn start(instance: &str) -> Peer {
        Peer::start_with(instance, |_| {}).await
    }

    async fn start_with(instance: &str, adjust: impl FnOnce(&mut ReplicationOptions)) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.admin_password = Some(PASSWORD.into());
        config.gc_interval = None;
        config.instance = Some(instance.into());
        config.replication = ReplicationOptions {
            reconcile_interval: Duration::from_secs(3600),
            retry_base: Duration::from_millis(100),
            max_attempts: 3,
            ..ReplicationOptions::default()
        };
        adjust(&mut config.replication);
        let serving = common::serve(config, PASSWORD).await;
        let (url, token, stop) = (serving.url, serving.token, serving.stop);
        let http = reqwest::Client::new();
        let registry = RemoteRegistry::new(
            instance,
            EndpointKind::Wharf,
            &url,
            Some(RegistryCredentials::new("admin", PASSWORD)),
            RemoteOptions::default(),
        )
        .unwrap();
        let peer = Peer {
            url,
            instance: instance.into(),
            http,
            token,
            registry,
            _stop: stop,
            _dir: dir,
        };
        peer.api(
            "POST",
            "/api/v1/projects",
            json!({"name": "shop", "public": false}),
        )
        .await;
        peer
    }

    /// An API call that must succeed; its JSON answer.
    async fn api(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self.try_api(method, path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    async fn try_api(&self, method: &str, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Makes `other` an endpoint of this server.
    async fn add_endpoint(&self, other: &Peer) {
        self.add_endpoint_at(other, &other.url).await;
    }

    /// Makes `other`, reached at `url`, an endpoint of this server.
    async fn add_endpoint_at(&self, other: &Peer, url: &str) {
        self.api(
            "POST",
            "/api/v1/replication/endpoints",
            json!({"name": other.instance, "url": url, "username": "admin", "password": PASSWORD}),
        )
        .await;
    }

    async fn add_policy(&self, name: &str, endpoint: &str, extra: Value) {
        let mut policy = json!({"name": name, "endpoint": endpoint, "triggers": {"onEvent": true}});
        if let (Some(policy), Some(extra)) = (policy.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                policy.insert(k.clone(), v.clone());
            }
        }
        self.api("POST", "/api/v1/replication/policies", policy)
            .await;
    }

    /// Turns a policy on or off (off: as if the link were cut, for events
    /// and reconcile passes alike).
    async fn enable(&self, policy: &str, enabled: bool) {
        let path = format!("/api/v1/replication/policies/{policy}");
        let mut p = self.api("GET", &path, Value::Null).await;
        p["enabled"] = json!(enabled);
        self.api("PUT", &path, p).await;
    }

    /// Runs a reconcile pass now; the jobs it created.
    async fn reconcile(&self) -> Vec<Value> {
        let pass = self
            .api("POST", "/api/v1/replication/reconcile", Value::Null)
            .await;
        pass["items"].as_array().unwrap().clone()
    }

    /// The tasks of a job.
    async fn tasks_of(&self, job: &Value) -> Vec<Value> {
        let path = format!("/api/v1/replication/jobs/{}", job["id"].as_str().unwrap());
        let detail = self.api("GET", &path, Value::Null).await;
        detail["taskList"].as_array().unwrap().clone()
    }

    /// Pushes a one-layer image with `layer_size` bytes seeded by `seed`.
    async fn push(&self, repo: &str, tag: &str, seed: u8, layer_size: usize) -> Digest {
        push_image(&self.registry, repo, tag, seed, layer_size).await
    }

    async fn tag(&self, repo: &str, tag: &str) -> Option<TagState> {
        let repo: RepositoryName = repo.parse().unwrap();
        let tag: Tag = tag.parse().unwrap();
        // A project replication has yet to create answers "denied": not there yet.
        self.registry.tag(&repo, &tag).await.ok().flatten()
    }

    /// Waits until `repo:tag` points at `digest` (or is absent, for `None`).
    async fn wait_for(&self, repo: &str, tag: &str, digest: Option<&Digest>) -> Option<TagState> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.tag(repo, tag).await;
            if state.as_ref().map(|s| &s.digest) == digest {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {repo}:{tag} is {state:?}, expected {digest:?}; jobs: {}",
                self.instance,
                self.api("GET", "/api/v1/replication/jobs", Value::Null)
                    .await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn jobs(&self, policy: &str) -> Vec<Value> {
        let jobs = self
            .api(
                "GET",
                &format!("/api/v1/replication/jobs?policy={policy}"),
                Value::Null,
            )
            .await;
        jobs["items"].as_array().unwrap().clone()
    }

    /// Waits until `policy` has at least `count` jobs (events become jobs
    /// asynchronously), then until none is pending or running.
    async fn settle_jobs(&self, policy: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.jobs(policy).await.len() < count {
            assert!(
                Instant::now() < deadline,
                "{policy}: fewer than {count} jobs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.settle().await;
    }

    /// Waits until no job is pending or running.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let jobs = self
                .api("GET", "/api/v1/replication/jobs", Value::Null)
                .await;
            let busy = jobs["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| matches!(j["state"].as_str(), Some("pending" | "running")));
            if !busy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: jobs still running: {jobs}",
                self.instance
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn audit_actions(&self, action: &str) -> Vec<Value> {
        let audit = self
            .api(
                "GET",
                &format!("/api/v1/audit?action={action}"),
                Value::Null,
            )
            .await;
        audit.as_array().cloned().unwrap_or_default()
    }
}

/// A TCP relay in front of a server, standing for the network link to it:
/// cut, it drops every connection through it and closes new ones at once.
struct Link {
    url: String,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn to(peer: &Peer) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = peer.url.trim_start_matches("http://").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let (cut, connections) = (cut.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    let target = target.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(relay.abort_handle());
                }
            }
        });
        Link {
            url,
            cut,
            connections,
            accepting,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

fn stream_of(bytes: Bytes) -> wharf_replication::ByteStream {
    futures_util::stream::once(async move { Ok(bytes) }).boxed()
}

async fn upload(registry: &dyn RegistryAccess, repo: &RepositoryName, content: Bytes) -> Digest {
    let digest = Digest::of(DigestAlgorithm::Sha256, &content);
    let session = registry.start_upload(repo).await.unwrap();
    let len = content.len() as u64;
    let session = registry
        .append_upload(repo, &session, 0, len, stream_of(content))
        .await
        .unwrap();
    registry
        .finish_upload(repo, &session, &digest)
        .await
        .unwrap();
    digest
}

/// Pushes a config and one layer of `layer_size` bytes, then the manifest.
async fn push_image(
    registry: &dyn RegistryAccess,
    repo: &str,
    tag: &str,
    seed: u8,
    layer_size: usize,
) -> Digest {
    let repo: RepositoryName = repo.parse().unwrap();
    let layer: Vec<u8> = (0..layer_size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let layer = Bytes::from(layer);
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"seed":"{seed}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    ));
    let layer_digest = upload(registry, &repo, layer.clone()).await;
    let config_digest = upload(registry, &repo, config.clone()).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    });
    let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    let manifest = Manifest {
        digest: Digest::of(DigestAlgorithm::Sha256, &bytes),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes,
    };
    registry
        .put_manifest(&repo, tag, &manifest, None)
        .await
        .unwrap();
    manifest.digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_feeds_two_slaves_and_deletions_follow_the_policy() {
    let (master, b, c) = tokio::join!(
        Peer::start("idc-a"),
        Peer::start("idc-b"),
        Peer::start("idc-c")
    );
    master.add_endpoint(&b).await;
    master.add_endpoint(&c).await;
    master
        .add_policy("to-b", "idc-b", json!({"replicateDeletion": true}))
        .await;
    master
        .add_policy("to-c", "idc-c", json!({"replicateDeletion": false}))
        .await;

    let digest = master.push("shop/web", "1.0", 1, 64 << 10).await;
    let at_b = b.wait_for("shop/web", "1.0", Some(&digest)).await.unwrap();
    let at_c = c.wait_for("shop/web", "1.0", Some(&digest)).await.unwrap();
    // The slaves record where the artifact came from.
    assert_eq!(at_b.origin.as_ref().unwrap().instance, "idc-a");
    assert_eq!(at_c.origin.unwrap().instance, "idc-a");

    let repo: RepositoryName = "shop/web".parse().unwrap();
    master.registry.delete(&repo, "1.0", None).await.unwrap();
    b.wait_for("shop/web", "1.0", None).await;
    master.settle().await;
    assert_eq!(
        c.tag("shop/web", "1.0").await.unwrap().digest,
        digest,
        "to-c keeps deletions local"
    );

    let jobs = master.jobs("to-b").await;
    assert_eq!(jobs.len(), 2, "one copy and one delete: {jobs:?}");
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "succeeded" && j["trigger"] == "event")
    );
    let detail = master
        .api(
            "GET",
            &format!(
                "/api/v1/replication/jobs/{}",
                jobs[1]["id"].as_str().unwrap()
            ),
            Value::Null,
        )
        .await;
    let task = &detail["taskList"][0];
    assert_eq!(task["kind"], "copy");
    // Finished jobs are in the audit log (recorded right after the job's final state).
    let started = Instant::now();
    while master.audit_actions("replication.job").await.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no replication.job audit records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task["state"], "succeeded");
    assert!(task["bytesDone"].as_u64().unwrap() >= 64 << 10, "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hierarchy_forwards_each_arrival_to_the_next_hop() {
    let (main, sub, branch) = tokio::join!(
        Peer::start("main"),
        Peer::start("sub"),
        Peer::start("branch")
    );
    main.add_endpoint(&sub).await;
    sub.add_endpoint(&branch).await;
    main.add_policy("to-sub", "sub", json!({})).await;
    sub.add_policy("to-branch", "branch", json!({"destNamespace": "mirror"}))
        .await;
    // No project `mirror` at the branch: replication creates it (private).

    let digest = main.push("shop/api", "v1", 7, 4096).await;
    let arrived = branch
        .wait_for("mirror/api", "v1", Some(&digest))
        .await
        .unwrap();
    assert_eq!(arrived.origin.unwrap().instance, "main");
    let project = branch
        .api("GET", "/api/v1/projects/mirror", Value::Null)
        .await;
    assert_eq!(project["public"], false, "{project}");
    assert!(
        branch.tag("shop/api", "v1").await.is_none(),
        "the namespace was mapped"
    );
}

/// Two servers with push policies to each other (deletions replicated),
/// and one tag written on each side and replicated: `shop/x:1` from a,
/// `shop/y:1` from b.
async fn dual_master() -> (Peer, Peer) {
    let (a, b) = tokio::join!(Peer::start("idc-a"), Peer::start("idc-b"));
    a.add_endpoint(&b).await;
    b.add_endpoint(&a).await;
    a.add_policy("to-b", "idc-b", json!({"replicateDeletion": true}))
        .await;
    b.add_policy("to-a", "idc-a", json!({"replicateDeletion": true}))
        .await;
    let from_a = a.push("shop/x", "1", 1, 1000).await;
    let from_b = b.push("shop/y", "1", 2, 1000).await;
    b.wait_for("shop/x", "1", Some(&from_a)).await;
    a.wait_for("shop/y", "1", Some(&from_b)).await;
    a.settle().await;
    b.settle().await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dual_master_converges_without_loops_and_resolves_conflicts() {
    let (a, b) = dual_master().await;
    // Each artifact crossed once: no job sends it back where it came from.
    assert_eq!(a.jobs("to-b").await.len(), 1);
    assert_eq!(b.jobs("to-a").await.len(), 1);

    // A partition: both sides write the same tag; the later write wins on both.
    a.enable("to-b", false).await;
    b.enable("to-a", false).await;
    let older = a.push("shop/z", "1", 3, 1000).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newer = b.push("shop/z", "1", 4, 1000).await;
    assert_ne!(older, newer);
    a.enable("to-b", true).await;
    b.enable("to-a", true).await;
    let from_a_pass = a
        .api("POST", "/api/v1/replication/reconcile", Value::Null)
        .await;
    let from_b_pass = b
        .api("POST", "/api/v1/replication/reconcile", Value::Null)
        .await;
    assert_eq!(
        from_a_pass["items"].as_array().unwrap().len(),
        0,
        "a's older write is not sent"
    );
    assert_eq!(
        from_b_pass["items"].as_array().unwrap().len(),
        1,
        "b's newer write is sent"
    );
    let at_a = a.wait_for("shop/z", "1", Some(&newer)).await.unwrap();
    assert_eq!(at_a.origin.unwrap().instance, "idc-b");
    assert_eq!(b.tag("shop/z", "1").await.unwrap().digest, newer);
    // The overwritten side records the decision.
    let conflicts = a.audit_actions("artifact.conflict").await;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    // A second pass finds nothing to do on either side.
    a.settle().await;
    b.settle().await;
    for peer in [&a, &b] {
        let pass = peer
            .api("POST", "/api/v1/replication/reconcile", Value::Null)
            .await;
        assert_eq!(
            pass["items"].as_array().unwrap().len(),
            0,
            "{}: {pass}",
            peer.instance
        );
    }
    // A deletion replicates and does not come back: b's delete event names
    // a as its origin, so b makes no job for it.
    let jobs_at_b = b.jobs("to-a").await.len();
    let repo: RepositoryName = "shop/x".parse().unwrap();
    a.registry.delete(&repo, "1", None).await.unwrap();
    b.wait_for("shop/x", "1", None).await;
    b.settle().await;
    assert_eq!(
        b.jobs("to-a").await.len(),
        jobs_at_b,
        "the delete went back to a"
    );
    assert_eq!(a.tag("shop/x", "1").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dual_master_deletes_during_a_partition_converge_and_stay_deleted() {
    // One tag first written on each side (shop/x on a, shop/y on b).
    let (a, b) = dual_master().await;

    // The partition: a deletes both tags, b writes another one.
    a.enable("to-b", false).await;
    b.enable("to-a", false).await;
    let x: RepositoryName = "shop/x".parse().unwrap();
    let y: RepositoryName = "shop/y".parse().unwrap();
    a.registry.delete(&x, "1", None).await.unwrap();
    a.registry.delete(&y, "1", None).await.unwrap();
    let from_b_later = b.push("shop/v", "1", 3, 500).await;
    a.enable("to-b", true).await;
    b.enable("to-a", true).await;

    // b's pass first, the order that used to undo a delete: b copies only
    // its new tag; a's tombstones keep the deleted ones out.
    let from_b_pass = b.reconcile().await;
    assert_eq!(from_b_pass.len(), 1, "{from_b_pass:?}");
    let copies = b.tasks_of(&from_b_pass[0]).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        (&copies[0]["kind"], &copies[0]["repository"]),
        (&json!("copy"), &json!("shop/v"))
    );
    // a's pass repeats both deletes at b, with a's delete origins.
    let from_a_pass = a.reconcile().await;
    assert_eq!(from_a_pass.len(), 1, "{from_a_pass:?}");
    let deletes = a.tasks_of(&from_a_pass[0]).await;
    let mut planned: Vec<(String, String)> = deletes
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_string(),
                t["repository"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    planned.sort();
    assert_eq!(
        planned,
        [
            ("delete".to_string(), "shop/x".to_string()),
            ("delete".to_string(), "shop/y".to_string())
        ]
    );
    assert!(
        deletes
            .iter()
            .all(|t| t["origin"].as_str().unwrap().starts_with("idc-a;")),
        "{deletes:?}"
    );

    // Both sides agree: the deletes hold, the write made meanwhile arrived.
    b.wait_for("shop/x", "1", None).await;
    b.wait_for("shop/y", "1", None).await;
    a.wait_for("shop/v", "1", Some(&from_b_later)).await;
    a.settle().await;
    b.settle().await;
    for peer in [&a, &b] {
        assert_eq!(peer.tag("shop/x", "1").await, None, "{}", peer.instance);
        assert_eq!(peer.tag("shop/y", "1").await, None, "{}", peer.instance);
        assert_eq!(
            peer.tag("shop/v", "1").await.map(|s| s.digest),
            Some(from_b_later.clone())
        );
        assert!(peer.reconcile().await.is_empty(), "{}", peer.instance);
    }

    // A newer write of a deleted tag wins over the tombstone everywhere.
    let again = b.push("shop/x", "1", 4, 500).await;
    a.wait_for("shop/x", "1", Some(&again)).await;
    b.settle().await;
    for peer in [&a, &b] {
        assert!(peer.reconcile().await.is_empty(), "{}", peer.instance);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicated_write_older_than_the_destination_tag_is_kept_out() {
    let b = Peer::start("idc-b").await;
    let repo: RepositoryName = "shop/w".parse().unwrap();
    let newer = b.push("shop/w", "1", 9, 100).await;
    let older = push_image(&b.registry, "shop/w", "scratch", 8, 100).await;
    let manifest = b
        .registry
        .manifest(&repo, older.as_str())
        .await
        .unwrap()
        .unwrap();
    let stale = Origin::new("idc-a", 1).unwrap();
    let write = b
        .registry
        .put_manifest(&repo, "1", &manifest, Some(&stale))
        .await
        .unwrap();
    assert!(
        matches!(write, wharf_replication::TagWrite::Kept(_)),
        "{write:?}"
    );
    assert_eq!(b.tag("shop/w", "1").await.unwrap().digest, newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bandwidth_limit_chunks_and_cancel_stop_a_running_copy() {
    let (a, b) = tokio::join!(
        Peer::start_with("idc-a", |o| o.chunk_size = 1 << 20),
        Peer::start("idc-b")
    );
    a.add_endpoint(&b).await;
    // 1 MiB/s: a 6 MiB layer takes about six seconds.
    a.add_policy(
        "slow",
        "idc-b",
        json!({"triggers": {"onEvent": false}, "bandwidthLimit": 1 << 20}),
    )
    .await;
    let digest = a.push("shop/big", "1", 5, 6 << 20).await;
    let job = a
        .api("POST", "/api/v1/replication/policies/slow/run", Value::Null)
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/replication/jobs/{id}");
    // Wait for at least one saved chunk: the resume point is in the task.
    let started = Instant::now();
    let detail = loop {
        let detail = a.api("GET", &path, Value::Null).await;
        if detail["taskList"][0]["resume"]["offset"]
            .as_u64()
            .unwrap_or(0)
            >= 1 << 20
        {
            break detail;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no progress: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let done = detail["taskList"][0]["bytesDone"].as_u64().unwrap();
    assert!(
        (done as f64) < 1.5 * (1 << 20) as f64 * (elapsed + 0.3),
        "{done} bytes in {elapsed}s"
    );
    a.api("POST", &format!("{path}/cancel"), Value::Null).await;
    a.settle().await;
    let cancelled = a.api("GET", &path, Value::Null).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["taskList"][0]["state"], "cancelled");
    let sent = cancelled["taskList"][0]["bytesDone"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = a.api("GET", &path, Value::Null).await;
    assert_eq!(
        later["taskList"][0]["bytesDone"].as_u64().unwrap(),
        sent,
        "the copy stopped"
    );
    assert!(b.tag("shop/big", "1").await.is_none());

    // Unlimited, a new run finishes and the destination verified the digest.
    let mut policy = a
        .api("GET", "/api/v1/replication/policies/slow", Value::Null)
        .await;
    policy.as_object_mut().unwrap().remove("bandwidthLimit");
    a.api("PUT", "/api/v1/replication/policies/slow", policy)
        .await;
    a.api("POST", "/api/v1/replication/policies/slow/run", Value::Null)
        .await;
    b.wait_for("shop/big", "1", Some(&digest)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn definitions_are_checked_and_secrets_never_shown() {
    let (a, b) = tokio::join!(Peer::start("idc-a"), Peer::start("idc-b"));
    a.add_endpoint(&b).await;
    let endpoints = a
        .api("GET", "/api/v1/replication/endpoints", Value::Null)
        .await;
    let text = endpoints.to_string();
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(endpoints["items"][0]["sealedPassword"], "<sealed>");
    let check = a
        .api(
            "POST",
            "/api/v1/replication/endpoints/idc-b/check",
            Value::Null,
        )
        .await;
    assert_eq!(check["instance"], "idc-b");

    let bad = [
        json!({"name": "p", "endpoint": "nope"}),
        json!({"name": "p", "endpoint": "idc-b", "filters": {"tag": "{a"}}),
        json!({"name": "p", "endpoint": "idc-b", "triggers": {"cron": "not cron"}}),
        json!({"name": "p", "endpoint": "idc-b", "bogus": true}),
        json!({"name": "P/..", "endpoint": "idc-b"}),
    ];
    for policy in bad {
        let (status, body) = a
            .try_api("POST", "/api/v1/replication/policies", policy.clone())
            .await;
        assert!(status.is_client_error(), "{policy}: {status} {body}");
    }
    assert_eq!(
        a.api("GET", "/api/v1/replication/policies", Value::Null)
            .await["items"],
        json!([])
    );
    let (status, _) = a
        .try_api(
            "POST",
            "/api/v1/replication/endpoints",
            json!({"name": "x", "url": "ftp://host"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    a.add_policy("p", "idc-b", json!({})).await;
    let (status, body) = a
        .try_api("DELETE", "/api/v1/replication/endpoints/idc-b", Value::Null)
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    // Non-admins are refused.
    let (status, _) = a
        .http
        .get(format!("{}/api/v1/replication/policies", a.url))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cron_runs_copy_only_what_the_filters_match() {
    let (a, b) = tokio::join!(Peer::start("idc-a"), Peer::start("idc-b"));
    a.add_endpoint(&b).await;
    let wanted = a.push("shop/tools", "1.2", 5, 100).await;
    a.push("shop/tools", "1.3", 6, 100).await;
    a.push("shop/tools", "dev", 5, 100).await;
    a.push("shop/other", "1.2", 5, 100).await;
    a.add_policy(
        "nightly",
        "idc-b",
        json!({
            "triggers": {"cron": "* * * * * *"},
            "filters": {"repository": "shop/tool*", "tag": "1.*", "label": "seed=5"},
        }),
    )
    .await;
    b.wait_for("shop/tools", "1.2", Some(&wanted)).await;
    a.settle().await;
    let jobs = a.jobs("nightly").await;
    assert!(jobs.iter().all(|j| j["trigger"] == "cron"), "{jobs:?}");
    assert!(
        b.tag("shop/tools", "1.3").await.is_none(),
        "label seed=6 does not match"
    );
    assert!(
        b.tag("shop/tools", "dev").await.is_none(),
        "tag glob 1.* does not match"
    );
    assert!(
        b.tag("shop/other", "1.2").await.is_none(),
        "repository glob does not match"
    );
}

/// Pushes two images by digest and an index naming them under `tag`.
async fn push_index(registry: &dyn RegistryAccess, repo_name: &str, tag: &str) -> Digest {
    let repo: RepositoryName = repo_name.parse().unwrap();
    let mut children = Vec::new();
    for (seed, arch) in [(21u8, "amd64"), (22, "arm64")] {
        let digest = push_image(registry, repo_name, "scratch", seed, 2048).await;
        let child = registry
            .manifest(&repo, digest.as_str())
            .await
            .unwrap()
            .unwrap();
        registry
            .put_manifest(&repo, digest.as_str(), &child, None)
            .await
            .unwrap();
        children.push(json!({
            "mediaType": child.media_type,
            "digest": child.digest,
            "size": child.bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    registry.delete(&repo, "scratch", None).await.unwrap();
    let bytes = Bytes::from(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        }))
        .unwrap(),
    );
    let index = Manifest {
        digest: Digest::of(DigestAlgorithm::Sha256, &bytes),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        bytes,
    };
    registry
        .put_manifest(&repo, tag, &index, None)
        .await
        .unwrap();
    index.digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_arrives_with_its_children_and_shared_blobs_are_not_sent_twice() {
    let (a, b) = tokio::join!(Peer::start("idc-a"), Peer::start("idc-b"));
    a.add_endpoint(&b).await;
    a.add_policy("to-b", "idc-b", json!({})).await;
    let index = push_index(&a.registry, "shop/multi", "1").await;
    b.wait_for("shop/multi", "1", Some(&index)).await;
    let repo: RepositoryName = "shop/multi".parse().unwrap();
    let copied = b.registry.manifest(&repo, "1").await.unwrap().unwrap();
    let parsed = wharf_oci::ParsedManifest::parse(Some(&copied.media_type), &copied.bytes).unwrap();
    for child in parsed.child_manifests() {
        assert!(b.registry.has_manifest(&repo, &child.digest).await.unwrap());
    }
    // The same content under another name: its blobs are mounted or found,
    // so the task moves only manifests.
    a.settle().await;
    let again = push_image(&a.registry, "shop/multi", "2", 21, 2048).await;
    b.wait_for("shop/multi", "2", Some(&again)).await;
    a.settle().await;
    let jobs = a.jobs("to-b").await;
    let newest = a
        .api(
            "GET",
            &format!(
                "/api/v1/replication/jobs/{}",
                jobs[0]["id"].as_str().unwrap()
            ),
            Value::Null,
        )
        .await;
    let sent = newest["taskList"][0]["bytesDone"].as_u64().unwrap();
    assert!(
        sent < 2048,
        "blobs the destination had were sent again: {newest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_jobs_past_their_retention_are_pruned() {
    let (a, b) = tokio::join!(
        Peer::start_with("idc-a", |o| {
            o.job_retention = Duration::ZERO;
            o.reconcile_interval = Duration::from_millis(300);
        }),
        Peer::start("idc-b")
    );
    a.add_endpoint(&b).await;
    a.add_policy("to-b", "idc-b", json!({})).await;
    let digest = a.push("shop/short", "1", 3, 100).await;
    b.wait_for("shop/short", "1", Some(&digest)).await;
    let started = Instant::now();
    while !a.jobs("to-b").await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the job was never pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.tag("shop/short", "1").await.unwrap().digest, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_names_its_first_failure() {
    let a = Peer::start("idc-a").await;
    // Nothing listens on port 1: every try is refused.
    a.api(
        "POST",
        "/api/v1/replication/endpoints",
        json!({"name": "gone", "url": "http://127.0.0.1:1", "kind": "registry"}),
    )
    .await;
    a.add_policy("to-gone", "gone", json!({"triggers": {"onEvent": false}}))
        .await;
    a.push("shop/x", "1", 1, 100).await;
    let job = a
        .api(
            "POST",
            "/api/v1/replication/policies/to-gone/run",
            Value::Null,
        )
        .await;
    a.settle().await;
    let detail = a
        .api(
            "GET",
            &format!("/api/v1/replication/jobs/{}", job["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(detail["state"], "failed", "{detail}");
    assert_eq!(detail["taskList"][0]["attempts"], 3, "{detail}");
    let error = detail["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("shop/x:1: gone:"), "{detail}");
}

/// a pushes to b through a link a test can cut; a asks an unreachable b
/// again every 200 ms, and its periodic reconcile pass is an hour away (as
/// every peer's here), so only the probe can repair in time.
async fn behind_a_link(adjust: impl FnOnce(&mut ReplicationOptions)) -> (Peer, Peer, Link) {
    let (a, b) = tokio::join!(
        Peer::start_with("idc-a", |o| {
            o.probe_interval = Duration::from_millis(200);
            adjust(o);
        }),
        Peer::start("idc-b")
    );
    let link = Link::to(&b).await;
    a.add_endpoint_at(&b, &link.url).await;
    a.add_policy("to-b", "idc-b", json!({"replicateDeletion": true}))
        .await;
    (a, b, link)
}

/// How long after the link came back `repo:tag` was at `digest` on `peer`.
async fn converged(
    peer: &Peer,
    repo: &str,
    tag: &str,
    digest: Option<&Digest>,
    since: Instant,
) -> Duration {
    peer.wait_for(repo, tag, digest).await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_answering_again_is_reconciled_at_once() {
    let (a, b, link) = behind_a_link(|_| {}).await;
    let kept = a.push("shop/x", "1", 1, 500).await;
    b.wait_for("shop/x", "1", Some(&kept)).await;
    a.settle().await;

    link.cut();
    let written = a.push("shop/y", "1", 2, 500).await;
    let x: RepositoryName = "shop/x".parse().unwrap();
    a.registry.delete(&x, "1", None).await.unwrap();
    // Both event jobs give up against the cut link (three tries).
    a.settle_jobs("to-b", 3).await;
    let failed = a.jobs("to-b").await;
    assert!(
        failed[..2].iter().all(|j| j["state"] == "failed"),
        "{failed:?}"
    );

    let restored = Instant::now();
    link.restore();
    let took = converged(&b, "shop/y", "1", Some(&written), restored).await;
    let took = took.max(converged(&b, "shop/x", "1", None, restored).await);
    eprintln!("converged {} ms after the link came back", took.as_millis());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let repaired = &a.jobs("to-b").await[0];
    assert_eq!(repaired["trigger"], "reconcile", "{repaired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_and_a_deferred_reconcile_go_when_the_endpoint_answers_again() {
    // A task that failed waits 20 s before its next try.
    let (a, b, link) = behind_a_link(|o| o.retry_base = Duration::from_secs(20)).await;
    link.cut();
    let by_event = a.push("shop/y", "1", 2, 500).await;
    // A write no event carries (the policy is off for it): only a
    // reconcile pass copies it, and the policy is busy with the event job.
    a.enable("to-b", false).await;
    let by_reconcile = a.push("shop/z", "1", 3, 500).await;
    a.enable("to-b", true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = a.jobs("to-b").await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0]["state"], "running", "{waiting:?}");

    let restored = Instant::now();
    link.restore();
    let retried = converged(&b, "shop/y", "1", Some(&by_event), restored).await;
    let reconciled = converged(&b, "shop/z", "1", Some(&by_reconcile), restored).await;
    eprintln!(
        "retry {} ms, deferred reconcile {} ms after the link came back",
        retried.as_millis(),
        reconciled.as_millis()
    );
    assert!(retried < Duration::from_secs(5), "retry took {retried:?}");
    assert!(
        reconciled < Duration::from_secs(5),
        "reconcile took {reconciled:?}"
    );
}

/// The JSON lines of a job's watch, read until the server ends the stream.
async fn watch_job_lines(peer: &Peer, id: &str) -> Vec<Value> {
    let response = peer
        .http
        .get(format!(
            "{}/api/v1/replication/jobs/{id}?watch=true",
            peer.url
        ))
        .bearer_auth(&peer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.bytes_stream();
    let mut buffered = Vec::new();
    let mut lines = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            buffered.extend_from_slice(&chunk.unwrap());
            while let Some(end) = buffered.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffered.drain(..=end).collect();
                lines.push(serde_json::from_slice::<Value>(&line).unwrap());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the watch ends once the job is final");
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_watch_streams_task_progress_until_the_final_state() {
    let (a, b) = tokio::join!(
        Peer::start_with("idc-a", |o| o.chunk_size = 1 << 20),
        Peer::start("idc-b")
    );
    a.add_endpoint(&b).await;
    // 2 MiB/s in 1 MiB chunks: each saved chunk is a change the watch sends.
    a.add_policy(
        "paced",
        "idc-b",
        json!({"triggers": {"onEvent": false}, "bandwidthLimit": 2 << 20}),
    )
    .await;
    let digest = a.push("shop/big", "1", 9, 5 << 20).await;
    let job = a
        .api(
            "POST",
            "/api/v1/replication/policies/paced/run",
            Value::Null,
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();

    // Only administrators may watch a job, as only they may read it.
    let refused = a
        .http
        .get(format!("{}/api/v1/replication/jobs/{id}?watch=true", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    a.api(
        "POST",
        "/api/v1/users",
        json!({"name": "dev", "password": "dev-password-1"}),
    )
    .await;
    let login: Value = a
        .http
        .post(format!("{}/api/v1/login", a.url))
        .json(&json!({"username": "dev", "password": "dev-password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dev = login["access_token"].as_str().unwrap();
    let refused = a
        .http
        .get(format!("{}/api/v1/replication/jobs/{id}?watch=true", a.url))
        .bearer_auth(dev)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

    let lines = watch_job_lines(&a, &id).await;
    assert_eq!(lines[0]["type"], "ADDED", "{lines:?}");
    assert!(
        lines[1..].iter().all(|l| l["type"] == "MODIFIED"),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l["object"]["id"] == id.as_str()));
    let done: Vec<u64> = lines
        .iter()
        .map(|l| l["object"]["taskList"][0]["bytesDone"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    let running: Vec<u64> = lines
        .iter()
        .filter(|l| l["object"]["taskList"][0]["state"] == "running")
        .map(|l| l["object"]["taskList"][0]["bytesDone"].as_u64().unwrap())
        .filter(|bytes| *bytes > 0)
        .collect();
    let distinct: std::collections::BTreeSet<_> = running.iter().collect();
    assert!(
        distinct.len() >= 2,
        "the watch showed the copy's progress while it ran: {done:?}"
    );
    let last = &lines.last().unwrap()["object"];
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["taskList"][0]["state"], "succeeded");
    assert!(last["taskList"][0]["bytesDone"].as_u64().unwrap() >= 5 << 20);
    b.wait_for("shop/big", "1", Some(&digest)).await;

    // A finished job's watch sends it once and ends.
    let again = watch_job_lines(&a, &id).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["object"]["state"], "succeeded");
}
