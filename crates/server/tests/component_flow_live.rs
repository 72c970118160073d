//! The component flow end to end through one server (issue 16, Show 2
//! without real containers): a developer commits a 3-replica deployment
//! on pool addresses over the API; the server's leader commits each pod
//! (a committer that pushes a real image into this registry stands for
//! `wharf commit POD`), writes the index, stores the specs as artifacts
//! the referrers API lists, and hands each address over to its pinned
//! deployment, whose pods the real scheduler places and a simulated agent
//! runs; then the rollback returns the original on the same addresses.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::task::AbortOnDropHandle;
use wharf_api::commit::CommitResult;
use wharf_api::component_commit::{SPEC_ARTIFACT_TYPE, split_image};
use wharf_api::{ContainerState, ContainerStatus, IpPool, IpPoolSpec, ObjectMeta, Pod, PodPhase};
use wharf_control::{CommitFailure, FlowTiming, MeasuredChanges, Objects, PodCommitter};
use wharf_oci::{Digest, DigestAlgorithm, Reference, RepositoryName};
use wharf_registry::Registry;

const WEB: &str = "
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations: {wharf.io/ip-pool: pods}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: main, image: shop/web:1, resources: {requests: {cpu: 100m, memory: 32Mi}}}
";

const COMMIT: &str = "/api/v1/projects/shop/deployments/web/commit";

/// Stands for `wharf commit POD`: pushes a small image of its own per pod
/// into this server's registry.
struct PushingCommitter {
    registry: Arc<Registry>,
    calls: AtomicUsize,
    /// The commit (1-based) whose layer is 1 MiB.
    big_on: Option<usize>,
}

impl PushingCommitter {
    async fn push(
        &self,
        repo: &RepositoryName,
        bytes: &[u8],
    ) -> Result<Digest, wharf_registry::RegistryError> {
        let digest = Digest::of(DigestAlgorithm::Sha256, bytes);
        let body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
        self.registry.push_blob(repo, &digest, body).await?;
        Ok(digest)
    }
}

#[async_trait]
impl PodCommitter for PushingCommitter {
    async fn check(
        &self,
        _pod: &Pod,
        container: &str,
        _image: &str,
        on_behalf_of: &str,
    ) -> Result<MeasuredChanges, CommitFailure> {
        assert_eq!((container, on_behalf_of), ("main", "dev"));
        Ok(MeasuredChanges::default())
    }

    async fn commit(
        &self,
        pod: &Pod,
        container: &str,
        image: &str,
        on_behalf_of: &str,
    ) -> Result<CommitResult, CommitFailure> {
        assert_eq!((container, on_behalf_of), ("main", "dev"));
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (repository, tag) = split_image(image).unwrap();
        let repo: RepositoryName = repository.parse().unwrap();
        let config = json!({"architecture": "amd64", "os": "linux",
            "config": {"Labels": {"committed-from": pod.metadata.name}},
            "rootfs": {"type": "layers", "diff_ids": []}});
        let config = serde_json::to_vec(&config).unwrap();
        let mut layer = format!("the changes of {}", pod.metadata.name).into_bytes();
        if self.big_on == Some(call) {
            layer.resize(1 << 20, b'x');
        }
        let failed = |err: wharf_registry::RegistryError| CommitFailure {
            step: "push".into(),
            message: err.to_string(),
        };
        let config_digest = self.push(&repo, &config).await.map_err(failed)?;
        let layer_digest = self.push(&repo, &layer).await.map_err(failed)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest.to_string(), "size": layer.len()}],
        });
        let reference: Reference = tag.parse().unwrap();
        let pushed = self
            .registry
            .put_manifest(
                &repo,
                &reference,
                Some("application/vnd.oci.image.manifest.v1+json"),
                Bytes::from(serde_json::to_vec(&manifest).unwrap()),
            )
            .await
            .map_err(|err| CommitFailure {
                step: "push".into(),
                message: err.to_string(),
            })?;
        Ok(CommitResult {
            image: image.to_string(),
            digest: pushed.digest.to_string(),
            layer_digest: layer_digest.to_string(),
            layer_bytes: layer.len() as u64,
            reused_layers: 0,
            paused_ms: 0,
            total_ms: 1,
        })
    }
}

/// Node n1's agent: claims the addresses of the pods bound to it, runs
/// them, and stops the Terminating ones.
async fn agent(objects: Objects) {
    loop {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        for pod in pods {
            let name = pod.metadata.name.clone();
            if pod.metadata.is_terminating() {
                let uid = pod.metadata.uid.as_str();
                let _ = objects.release_pod_ip("shop", &name, Some(uid)).await;
                let _ = objects.confirm_pod_stopped("shop", &name, uid).await;
                continue;
            }
            if pod.spec.node_name.is_none() || pod.status.phase == PodPhase::Running {
                continue;
            }
            let Ok(Some(claim)) = objects.claim_pod_ip("shop", &name).await else {
                continue;
            };
            let _ = objects
                .modify::<Pod>(Some("shop"), &name, |p| {
                    p.status.phase = PodPhase::Running;
                    p.status.pod_ip = Some(claim.ip.to_string());
                    p.status.container_statuses = vec![ContainerStatus {
                        name: "main".into(),
                        ready: true,
                        state: ContainerState::Running { started_at: 1 },
                        ..Default::default()
                    }];
                    true
                })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Address -> (owning deployment, image) of the running pods.
async fn serving(objects: &Objects) -> BTreeMap<String, (String, String)> {
    let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
    let mut serving = BTreeMap::new();
    for pod in pods {
        if pod.metadata.is_terminating() || pod.status.phase != PodPhase::Running {
            continue;
        }
        let claim = objects
            .pod_ip_claim("shop", &pod.metadata.name)
            .await
            .unwrap()
            .unwrap();
        let owner = pod.metadata.owner_references[0].name.clone();
        serving.insert(
            claim.ip.to_string(),
            (owner, pod.spec.containers[0].image.clone()),
        );
    }
    serving
}

async fn phase_after(app: &TestApp, token: &str, wanted: &str) -> Value {
    wait_for(wanted, || async {
        let commit = app
            .api(token, Method::GET, COMMIT, Value::Null)
            .await
            .json();
        let phase = commit["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if wanted != "Failed" {
            assert_ne!(phase, "Failed", "{commit}");
        }
        (phase == wanted).then_some(commit)
    })
    .await
}

/// A server leading, with pool `pods`, node n1 and its simulated agent,
/// and deployment shop/web running 3 pods on pool addresses.
struct Live {
    app: TestApp,
    committer: Arc<PushingCommitter>,
    admin: String,
    guest: String,
    developer: String,
    objects: Objects,
    before: BTreeMap<String, (String, String)>,
    _running: (wharf_control::Running, AbortOnDropHandle<()>),
}

impl Live {
    /// `big_on`: the commit of that number (1-based) pushes a 1 MiB layer.
    async fn new(big_on: Option<usize>) -> Live {
        let mut app = TestApp::new().await;
        let committer = Arc::new(PushingCommitter {
            registry: app.app.registry.clone(),
            calls: AtomicUsize::new(0),
            big_on,
        });
        let timing = FlowTiming {
            poll: Duration::from_millis(50),
            release: Duration::from_secs(30),
            run: Duration::from_secs(30),
        };
        app.app.set_pod_committer(committer.clone(), timing);
        let admin = app.admin_token().await;
        let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;
        let objects = app.app.control.objects().clone();
        let pool = IpPool {
            api_version: "wharf.io/v1".into(),
            kind: "IpPool".into(),
            metadata: ObjectMeta {
                name: "pods".into(),
                ..Default::default()
            },
            spec: IpPoolSpec {
                cidr: "10.92.0.0/24".into(),
                gateway: "10.92.0.1".into(),
                ..Default::default()
            },
        };
        objects.import_ip_pools(vec![pool]).await.unwrap();
        let node = json!({"metadata": {"name": "n1"},
            "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}}});
        app.api(&admin, Method::POST, "/api/v1/nodes", node)
            .await
            .expect(StatusCode::OK);
        let beat = json!({"ttlSeconds": 60});
        app.api(&admin, Method::PUT, "/api/v1/nodes/n1/heartbeat", beat)
            .await
            .expect(StatusCode::OK);
        let controllers = app.app.control.start("test".into());
        let agent = AbortOnDropHandle::new(tokio::spawn(agent(objects.clone())));
        app.apply_yaml(&developer, WEB).await.expect(StatusCode::OK);
        let before = wait_for("three pods on pool addresses", || async {
            let path = "/api/v1/projects/shop/deployments/web";
            let d = app.api(&guest, Method::GET, path, Value::Null).await.json();
            let serving = serving(&objects).await;
            (d["status"]["availableReplicas"] == 3 && serving.len() == 3).then_some(serving)
        })
        .await;
        Live {
            app,
            committer,
            admin,
            guest,
            developer,
            objects,
            before,
            _running: (controllers, agent),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_committed_taken_over_and_rolled_back_on_the_same_addresses() {
    let Live {
        app,
        committer,
        guest,
        developer,
        objects,
        before,
        // Kept to the end: the leader and the agent.
        _running,
        ..
    } = Live::new(None).await;
    let accepted = app
        .api(&developer, Method::POST, COMMIT, json!({"tag": "20261207"}))
        .await
        .expect(StatusCode::ACCEPTED)
        .json();
    assert_eq!(accepted["status"]["pods"].as_array().unwrap().len(), 3);
    let done = phase_after(&app, &guest, "Done").await;
    assert_eq!(committer.calls.load(Ordering::SeqCst), 3);

    // Served by the pinned deployments, on the same addresses, with the snapshots.
    let image_of = |ip: &str| format!("shop/shop-web-{ip}:20261207");
    let after = serving(&objects).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (ip, (owner, image)) in &after {
        assert_eq!(owner, &format!("web-{}", ip.replace('.', "-")));
        assert_eq!(image, &image_of(ip));
    }
    let original = app
        .api(
            &guest,
            Method::GET,
            "/api/v1/projects/shop/deployments/web",
            Value::Null,
        )
        .await
        .json();
    assert_eq!(original["spec"]["replicas"], 0);
    assert_eq!(
        original["metadata"]["annotations"]["wharf.io/commit-replicas"],
        "3"
    );

    // The index, as a reader of the project sees it.
    let index = app
        .api(&guest, Method::GET, "/api/v1/commits/ips", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    let pairs: Vec<(String, String)> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ip"].as_str().unwrap().into(),
                e["image"].as_str().unwrap().into(),
            )
        })
        .collect();
    let wanted: Vec<(String, String)> =
        before.keys().map(|ip| (ip.clone(), image_of(ip))).collect();
    let mut pairs_sorted = pairs.clone();
    pairs_sorted.sort();
    assert_eq!(pairs_sorted, wanted);

    // The specs: from the route, and from the registry's referrers API.
    let specs = app
        .api(&guest, Method::GET, &format!("{COMMIT}/specs"), Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(specs.as_array().unwrap().len(), 3, "{specs}");
    for (record, spec) in done["status"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .zip(specs.as_array().unwrap())
    {
        let image = record["image"].as_str().unwrap();
        let (repository, _) = split_image(image).unwrap();
        let subject = record["digest"].as_str().unwrap();
        assert!(spec["yaml"].as_str().unwrap().contains(image), "{spec}");
        let token = app
            .token_for(
                "gus",
                "a-long-password",
                &format!("repository:{repository}:pull"),
            )
            .await;
        let referrers = app
            .v2(
                &token,
                Method::GET,
                &format!("/v2/{repository}/referrers/{subject}"),
                &[],
                Bytes::new(),
            )
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(
            referrers["manifests"][0]["artifactType"],
            SPEC_ARTIFACT_TYPE
        );
        assert_eq!(referrers["manifests"][0]["digest"], record["specArtifact"]);
    }

    // Rollback: the original again, on the same addresses.
    app.api(
        &guest,
        Method::POST,
        &format!("{COMMIT}/rollback"),
        Value::Null,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(
        &developer,
        Method::POST,
        &format!("{COMMIT}/rollback"),
        Value::Null,
    )
    .await
    .expect(StatusCode::ACCEPTED);
    phase_after(&app, &guest, "RolledBack").await;
    let back = serving(&objects).await;
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert!(
        back.values()
            .all(|(owner, image)| owner == "web" && image == "shop/web:1"),
        "{back:?}"
    );
    let (deployments, _) = objects
        .list::<wharf_api::Deployment>(Some("shop"), None)
        .await
        .unwrap();
    let names: Vec<&str> = deployments
        .iter()
        .map(|d| d.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["web"], "the pinned deployments are gone");
    assert_eq!(deployments[0].spec.replicas, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_registry_refuses_mid_flow_leaves_every_pod_on_its_original() {
    let live = Live::new(Some(2)).await;
    let app = &live.app;
    // The second pod's snapshot does not fit the project's quota.
    app.api(
        &live.admin,
        Method::PATCH,
        "/api/v1/projects/shop",
        json!({"quota_bytes": 256 * 1024}),
    )
    .await
    .expect(StatusCode::OK);
    app.api(
        &live.developer,
        Method::POST,
        COMMIT,
        json!({"tag": "20261207"}),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let failed = phase_after(app, &live.guest, "Failed").await;
    let failure = &failed["status"]["failure"];
    assert_eq!(failure["step"], "commit", "{failed}");
    assert_eq!(failure["pod"], failed["status"]["pods"][1]["pod"]);
    assert!(
        failure["message"].as_str().unwrap().contains("quota"),
        "the registry's refusal is named: {failure}"
    );
    assert_eq!(
        live.committer.calls.load(Ordering::SeqCst),
        2,
        "stopped there"
    );
    let serving = serving(&live.objects).await;
    assert_eq!(
        serving.keys().collect::<Vec<_>>(),
        live.before.keys().collect::<Vec<_>>()
    );
    assert!(
        serving
            .values()
            .all(|(owner, image)| owner == "web" && image == "shop/web:1"),
        "every pod on its original: {serving:?}"
    );
    let (deployments, _) = live
        .objects
        .list::<wharf_api::Deployment>(Some("shop"), None)
        .await
        .unwrap();
    assert_eq!(deployments.len(), 1, "nothing pinned");
    assert_eq!(deployments[0].spec.replicas, 3);
}
