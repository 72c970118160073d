//! The component flow on a real store with the real deployment controller;
//! a simulated node agent binds, addresses and runs pods as an agent would,
//! and a fake committer stands for `wharf commit POD`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use tokio_util::task::AbortOnDropHandle;
use wharf_api::{
    ANNOTATION_IP_POOL, ContainerState, ContainerStatus, IpPool, IpPoolSpec, IpRange, Manifest,
    parse_manifests,
};

use std::sync::Arc;

use wharf_api::commit::LABEL_COMMIT_IP;
use wharf_api::component_commit::{
    ANNOTATION_COMMIT_HOLD, ANNOTATION_COMMIT_REPLICAS, ANNOTATION_COMMITTED_FROM, CommitPhase,
    ComponentCommit, ComponentCommitRequest,
};
use wharf_api::{
    ANNOTATION_FIXED_IP, ANNOTATION_FIXED_IPS, Deployment, Node, ObjectMeta, PodPhase,
};

use super::*;
use crate::ControlError;
use crate::deployments::DeploymentController;
use crate::objects::Objects;
use crate::test_objects::{deployment, node, objects};

const TAG: &str = "20261207";
const TIMING: FlowTiming = FlowTiming {
    poll: Duration::from_millis(20),
    release: Duration::from_secs(10),
    run: Duration::from_secs(3),
};

/// Stands for `wharf commit POD`: answers a digest per call, and fails
/// the call numbered `fail_on` (1-based) as a refused push.
#[derive(Default)]
struct FakeCommitter {
    calls: Mutex<Vec<(String, String, String)>>,
    fail_on: Option<usize>,
    /// Pods checked.
    checks: Mutex<Vec<String>>,
    /// What each check measures, and the quota it reports.
    measured: MeasuredChanges,
}

#[async_trait]
impl PodCommitter for FakeCommitter {
    async fn check(
        &self,
        pod: &Pod,
        _container: &str,
        _image: &str,
        on_behalf_of: &str,
    ) -> Result<MeasuredChanges, CommitFailure> {
        assert_eq!(on_behalf_of, "alice", "checks are the requester's");
        self.checks.lock().unwrap().push(pod.metadata.name.clone());
        Ok(self.measured)
    }

    async fn commit(
        &self,
        pod: &Pod,
        container: &str,
        image: &str,
        on_behalf_of: &str,
    ) -> Result<CommitResult, CommitFailure> {
        assert_eq!(on_behalf_of, "alice", "pushes are the requester's");
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((
                pod.metadata.name.clone(),
                container.to_string(),
                image.to_string(),
            ));
            calls.len()
        };
        if self.fail_on == Some(n) {
            return Err(CommitFailure {
                step: "push".into(),
                message: "the registry refused the push".into(),
            });
        }
        Ok(CommitResult {
            image: image.to_string(),
            digest: format!("sha256:{n:064x}"),
            layer_digest: format!("sha256:{:064x}", n + 100),
            layer_bytes: 10,
            reused_layers: 1,
            paused_ms: 1,
            total_ms: 2,
        })
    }
}

/// (repository, artifact digest).
type SpecKey = (String, String);
/// (tag, subject, yaml).
type StoredSpec = (String, String, String);

/// Specs kept in memory.
#[derive(Default)]
struct MemorySpecs {
    specs: Mutex<HashMap<SpecKey, StoredSpec>>,
}

#[async_trait]
impl SpecStore for MemorySpecs {
    async fn put_spec(
        &self,
        repository: &str,
        tag: &str,
        subject: &str,
        yaml: &str,
        _on_behalf_of: &str,
    ) -> Result<String, String> {
        let mut specs = self.specs.lock().unwrap();
        let digest = format!("sha256:{:064x}", specs.len() + 1000);
        specs.insert(
            (repository.to_string(), digest.clone()),
            (tag.to_string(), subject.to_string(), yaml.to_string()),
        );
        Ok(digest)
    }

    async fn get_spec(&self, repository: &str, digest: &str) -> Result<String, String> {
        let specs = self.specs.lock().unwrap();
        specs
            .get(&(repository.to_string(), digest.to_string()))
            .map(|(_, _, yaml)| yaml.clone())
            .ok_or_else(|| format!("no spec {digest} in {repository}"))
    }
}

/// Plays node n1's agent: binds pending pods, claims their addresses,
/// runs them (except pods of `broken` images), and stops Terminating ones.
async fn agent(objects: Objects, broken: Arc<Mutex<HashSet<String>>>) {
    loop {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        for pod in pods {
            let name = pod.metadata.name.clone();
            if pod.metadata.is_terminating() {
                let uid = pod.metadata.uid.as_str();
                objects
                    .release_pod_ip("shop", &name, Some(uid))
                    .await
                    .unwrap();
                let _ = objects.confirm_pod_stopped("shop", &name, uid).await;
                continue;
            }
            if pod.spec.node_name.is_none() {
                let _ = objects.bind("n1", std::slice::from_ref(&pod)).await;
                continue;
            }
            if pod.status.phase == PodPhase::Running {
                continue;
            }
            let image = pod.spec.containers[0].image.clone();
            if broken.lock().unwrap().contains(&image) {
                continue;
            }
            // Without a pool the node gives a node-local address.
            let address = match objects.claim_pod_ip("shop", &name).await {
                Ok(Some(claim)) => claim.ip.to_string(),
                Ok(None) => "172.17.0.2".to_string(),
                Err(_) => continue,
            };
            let _ = objects
                .modify::<Pod>(Some("shop"), &name, |p| {
                    p.status.phase = PodPhase::Running;
                    p.status.pod_ip = Some(address.clone());
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
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    objects: Objects,
    committer: Arc<FakeCommitter>,
    specs: Arc<MemorySpecs>,
    broken: Arc<Mutex<HashSet<String>>>,
    flow: Arc<CommitFlowController>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

impl Harness {
    /// Deployment shop/`name` with 3 replicas on pool addresses, running.
    async fn new(name: &str, fail_on: Option<usize>, pooled: bool) -> Harness {
        let committer = FakeCommitter {
            fail_on,
            ..Default::default()
        };
        Harness::with_committer(name, committer, pooled).await
    }

    async fn with_committer(name: &str, committer: FakeCommitter, pooled: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "n1", true).await;
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
                ranges: vec![IpRange {
                    start: "10.92.0.10".into(),
                    end: "10.92.0.30".into(),
                }],
                exclude: vec![],
            },
        };
        objects.import_ip_pools(vec![pool]).await.unwrap();
        let created = deployment(&objects, name).await;
        objects
            .modify::<Deployment>(Some("shop"), name, |d| {
                d.spec.replicas = 3;
                if pooled {
                    d.metadata
                        .annotations
                        .insert(ANNOTATION_IP_POOL.into(), "pods".into());
                }
                true
            })
            .await
            .unwrap();
        drop(created);
        let committer = Arc::new(committer);
        let specs = Arc::new(MemorySpecs::default());
        let broken = Arc::new(Mutex::new(HashSet::new()));
        let controller = DeploymentController::new(objects.clone());
        let tasks = vec![
            AbortOnDropHandle::new(tokio::spawn(controller.run())),
            AbortOnDropHandle::new(tokio::spawn(agent(objects.clone(), broken.clone()))),
        ];
        let timing = TIMING;
        let flow =
            CommitFlowController::new(objects.clone(), committer.clone(), specs.clone(), timing);
        let h = Harness {
            _dir: dir,
            objects,
            committer,
            specs,
            broken,
            flow,
            _tasks: tasks,
        };
        h.wait_available(name, 3).await;
        h
    }

    async fn wait_available(&self, name: &str, replicas: u32) {
        for _ in 0..500 {
            let d: Deployment = self.objects.require(Some("shop"), name).await.unwrap();
            if d.status.available_replicas == replicas
                && self.live(name).await.len() == replicas as usize
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("deployment {name} never had {replicas} available replicas");
    }

    /// Live (not Terminating) pods of deployment `name` (by owner name).
    async fn live(&self, owner: &str) -> Vec<Pod> {
        let (pods, _) = self.objects.list::<Pod>(Some("shop"), None).await.unwrap();
        pods.into_iter()
            .filter(|p| !p.metadata.is_terminating())
            .filter(|p| crate::deployments::deployment_of(p).as_deref() == Some(owner))
            .collect()
    }

    /// Address -> (owner, image) of the running pods of `owners`.
    async fn serving(&self) -> BTreeMap<String, (String, String)> {
        let (pods, _) = self.objects.list::<Pod>(Some("shop"), None).await.unwrap();
        let mut serving = BTreeMap::new();
        for pod in pods {
            if pod.metadata.is_terminating() || pod.status.phase != PodPhase::Running {
                continue;
            }
            let claim = self
                .objects
                .pod_ip_claim("shop", &pod.metadata.name)
                .await
                .unwrap()
                .expect("a running pod holds its address");
            assert_eq!(claim.pod_uid, pod.metadata.uid);
            let owner = crate::deployments::deployment_of(&pod).unwrap();
            let previous = serving.insert(
                claim.ip.to_string(),
                (owner, pod.spec.containers[0].image.clone()),
            );
            assert!(previous.is_none(), "one pod per address");
        }
        serving
    }

    async fn start(&self, name: &str) -> Result<ComponentCommit, ControlError> {
        let request = ComponentCommitRequest {
            tag: Some(TAG.into()),
            container: None,
        };
        self.objects
            .start_component_commit("shop", name, &request, "alice", 0)
            .await
    }

    async fn pinned(&self) -> Vec<Deployment> {
        let (all, _) = self
            .objects
            .list::<Deployment>(Some("shop"), None)
            .await
            .unwrap();
        all.into_iter()
            .filter(|d| {
                d.metadata
                    .annotations
                    .contains_key(ANNOTATION_COMMITTED_FROM)
            })
            .collect()
    }
}

fn image_of(ip: &str) -> String {
    format!("shop/shop-web-{ip}:{TAG}")
}

#[tokio::test]
async fn the_whole_flow_moves_three_pods_onto_pinned_deployments_on_the_same_addresses() {
    let h = Harness::new("web", None, true).await;
    let before = h.serving().await;
    assert_eq!(before.len(), 3);
    let started = h.start("web").await.unwrap();
    assert_eq!(started.status.phase, CommitPhase::Pending);

    let done = h.flow.drive("shop", "web").await.unwrap();
    assert_eq!(done.status.phase, CommitPhase::Done, "{:?}", done.status);
    assert!(done.status.failure.is_none());

    // Images named per the rule, one commit per pod, as the requester.
    let calls = h.committer.calls.lock().unwrap().clone();
    let committed: HashSet<String> = calls.iter().map(|(_, _, image)| image.clone()).collect();
    let expected: HashSet<String> = before.keys().map(|ip| image_of(ip)).collect();
    assert_eq!(committed, expected);
    assert!(calls.iter().all(|(_, container, _)| container == "main"));

    // The index holds the three pairs, as the seed keeps them.
    let index = h.objects.commit_index(None, None).await.unwrap();
    let pairs: HashSet<(String, String)> = index.into_iter().map(|e| (e.image, e.ip)).collect();
    let wanted: HashSet<(String, String)> =
        before.keys().map(|ip| (image_of(ip), ip.clone())).collect();
    assert_eq!(pairs, wanted);
    let one_ip = before.keys().next().unwrap();
    let by_ip = h.objects.commit_index(None, Some(one_ip)).await.unwrap();
    assert_eq!(by_ip.len(), 1);
    let other_project = vec!["other".to_string()];
    assert!(
        h.objects
            .commit_index(Some(&other_project), None)
            .await
            .unwrap()
            .is_empty()
    );

    // Every address is served by its pinned deployment, with the snapshot.
    let after = h.serving().await;
    for (ip, (owner, image)) in &after {
        assert_eq!(owner, &format!("web-{}", ip.replace('.', "-")));
        assert_eq!(image, &image_of(ip));
    }
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same addresses"
    );
    let pinned = h.pinned().await;
    assert_eq!(pinned.len(), 3);
    for d in &pinned {
        let ip = &d.metadata.annotations[ANNOTATION_FIXED_IP];
        assert_eq!(d.spec.replicas, 1);
        assert_eq!(d.spec.selector.match_labels[LABEL_COMMIT_IP], *ip);
        assert_eq!(d.spec.template.metadata.labels[LABEL_COMMIT_IP], *ip);
        assert_eq!(
            d.spec.template.metadata.annotations[ANNOTATION_FIXED_IP],
            *ip
        );
        assert_eq!(d.metadata.annotations[ANNOTATION_COMMITTED_FROM], "web");
    }

    // The original is at 0, keeps its spec and its former count, holds nothing.
    let original: Deployment = h.objects.require(Some("shop"), "web").await.unwrap();
    assert_eq!(original.spec.replicas, 0);
    assert_eq!(
        original.metadata.annotations[ANNOTATION_COMMIT_REPLICAS],
        "3"
    );
    assert!(
        !original
            .metadata
            .annotations
            .contains_key(ANNOTATION_COMMIT_HOLD)
    );
    assert_eq!(
        original.spec.template.spec.containers[0].image,
        "shop/web:1"
    );
    assert!(h.live("web").await.is_empty());

    // Each record complete; each spec stored, attached to its image, and
    // it is the pinned deployment (parsed back as a Kubernetes manifest).
    let specs = h.specs.specs.lock().unwrap().clone();
    assert_eq!(specs.len(), 3);
    for record in &done.status.pods {
        assert!(record.indexed && record.labelled && record.handed_over);
        let (repository, _) = wharf_api::component_commit::split_image(&record.image).unwrap();
        let artifact = record.spec_artifact.clone().unwrap();
        let (tag, subject, yaml) = &specs[&(repository.to_string(), artifact)];
        assert_eq!(tag, &format!("{TAG}.deployment"));
        assert_eq!(Some(subject), record.digest.as_ref());
        let Manifest::Deployment(parsed) = parse_manifests(yaml).unwrap().remove(0).manifest else {
            panic!("the spec is a deployment");
        };
        assert_eq!(parsed.metadata.name, record.pinned_deployment);
        assert_eq!(parsed.spec.template.spec.containers[0].image, record.image);
    }

    // A second start is refused until the component is rolled back.
    let err = h.start("web").await.unwrap_err();
    assert!(err.to_string().contains("roll it back first"), "{err}");
}

#[tokio::test]
async fn snapshots_the_quota_cannot_hold_together_stop_the_flow_before_any_commit() {
    // Each pod's changes fit what the quota leaves; the three together do not.
    let committer = FakeCommitter {
        measured: MeasuredChanges {
            bytes: 400,
            quota_remaining_bytes: Some(1000),
        },
        ..Default::default()
    };
    let h = Harness::with_committer("web", committer, true).await;
    let before = h.serving().await;
    h.start("web").await.unwrap();
    let failed = h.flow.drive("shop", "web").await.unwrap();
    assert_eq!(failed.status.phase, CommitPhase::Failed);
    let failure = failed.status.failure.clone().unwrap();
    assert_eq!(failure.step, "check");
    assert!(
        failure.message.contains(
            "the 3 snapshots hold 1200 bytes of changes; project shop's quota leaves 1000 bytes"
        ),
        "{failure:?}"
    );
    assert_eq!(
        h.committer.checks.lock().unwrap().len(),
        3,
        "every pod checked"
    );
    assert!(
        h.committer.calls.lock().unwrap().is_empty(),
        "nothing committed"
    );
    assert!(h.pinned().await.is_empty());
    assert_eq!(h.serving().await, before);
}

#[tokio::test]
async fn a_failed_second_commit_stops_the_flow_with_every_pod_on_its_original() {
    let h = Harness::new("web", Some(2), true).await;
    let before = h.serving().await;
    h.start("web").await.unwrap();
    let failed = h.flow.drive("shop", "web").await.unwrap();
    assert_eq!(failed.status.phase, CommitPhase::Failed);
    let failure = failed.status.failure.clone().unwrap();
    assert_eq!(failure.step, "commit");
    assert_eq!(
        failure.pod.as_deref(),
        Some(failed.status.pods[1].pod.as_str())
    );
    assert!(failure.message.contains("refused the push"), "{failure:?}");
    assert_eq!(
        h.committer.calls.lock().unwrap().len(),
        2,
        "the flow stopped there"
    );

    assert!(h.pinned().await.is_empty(), "nothing pinned");
    assert_eq!(h.serving().await, before, "every pod on its original");
    let original: Deployment = h.objects.require(Some("shop"), "web").await.unwrap();
    assert_eq!(original.spec.replicas, 3);
    assert!(
        !original
            .metadata
            .annotations
            .contains_key(ANNOTATION_COMMIT_HOLD)
    );
    // The first pod went through its steps: labelled with its address.
    let first = &failed.status.pods[0];
    let pod: Pod = h.objects.require(Some("shop"), &first.pod).await.unwrap();
    assert_eq!(pod.metadata.labels[LABEL_COMMIT_IP], first.ip);
    assert!(first.indexed && first.spec_artifact.is_some());
}

#[tokio::test]
async fn a_pinned_pod_that_never_runs_is_undone_and_the_original_restored_on_its_address() {
    let h = Harness::new("web", None, true).await;
    let before = h.serving().await;
    let started = h.start("web").await.unwrap();
    let second = started.status.pods[1].clone();
    h.broken.lock().unwrap().insert(second.image.clone());

    let failed = h.flow.drive("shop", "web").await.unwrap();
    assert_eq!(failed.status.phase, CommitPhase::Failed);
    let failure = failed.status.failure.clone().unwrap();
    assert_eq!(failure.step, "takeover");
    assert_eq!(failure.pod.as_deref(), Some(second.pod.as_str()));
    assert!(failure.message.contains("undone"), "{failure:?}");
    let (events, _) = h
        .objects
        .list::<wharf_api::Event>(Some("shop"), None)
        .await
        .unwrap();
    let warned = events.iter().find(|e| e.reason == "CommitFailed").unwrap();
    assert_eq!(warned.involved_object.name, "web");
    assert!(
        warned.message.contains("step takeover"),
        "{}",
        warned.message
    );

    // The first address is pinned, the second back on the original, the
    // third never left it.
    let serving = h.serving().await;
    assert_eq!(
        serving.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    let first = &failed.status.pods[0];
    assert!(first.handed_over);
    assert_eq!(serving[&first.ip].1, first.image);
    assert_eq!(
        serving[&second.ip],
        ("web".to_string(), "shop/web:1".to_string())
    );
    let third = &failed.status.pods[2];
    assert_eq!(serving[&third.ip].0, "web");
    let pinned: Vec<String> = h
        .pinned()
        .await
        .into_iter()
        .map(|d| d.metadata.name)
        .collect();
    assert_eq!(pinned, std::slice::from_ref(&first.pinned_deployment));
    let original: Deployment = h.objects.require(Some("shop"), "web").await.unwrap();
    assert_eq!(original.spec.replicas, 2);

    // And the rollback from there brings everything back.
    h.broken.lock().unwrap().clear();
    h.objects
        .request_commit_rollback("shop", "web")
        .await
        .unwrap();
    let rolled = h.flow.drive("shop", "web").await.unwrap();
    assert_eq!(
        rolled.status.phase,
        CommitPhase::RolledBack,
        "{:?}",
        rolled.status
    );
    let serving = h.serving().await;
    assert!(serving.values().all(|(owner, _)| owner == "web"));
    assert_eq!(
        serving.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn rollback_returns_the_original_deployment_on_the_same_addresses() {
    let h = Harness::new("web", None, true).await;
    let before = h.serving().await;
    let err = h
        .objects
        .request_commit_rollback("shop", "web")
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::NotFound { .. }), "{err}");
    h.start("web").await.unwrap();
    assert_eq!(
        h.flow.drive("shop", "web").await.unwrap().status.phase,
        CommitPhase::Done
    );

    let requested = h
        .objects
        .request_commit_rollback("shop", "web")
        .await
        .unwrap();
    assert_eq!(requested.status.phase, CommitPhase::RollingBack);
    let err = h
        .objects
        .request_commit_rollback("shop", "web")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wait until it ends"), "{err}");
    let rolled = h.flow.drive("shop", "web").await.unwrap();
    assert_eq!(
        rolled.status.phase,
        CommitPhase::RolledBack,
        "{:?}",
        rolled.status
    );
    assert!(rolled.status.pods.iter().all(|r| !r.handed_over));

    assert!(h.pinned().await.is_empty(), "pinned deployments gone");
    let serving = h.serving().await;
    assert_eq!(
        serving.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert!(
        serving
            .values()
            .all(|(owner, image)| owner == "web" && image == "shop/web:1")
    );
    let original: Deployment = h.objects.require(Some("shop"), "web").await.unwrap();
    assert_eq!(original.spec.replicas, 3);
    for key in [
        ANNOTATION_COMMIT_HOLD,
        ANNOTATION_COMMIT_REPLICAS,
        ANNOTATION_FIXED_IPS,
    ] {
        assert!(
            !original.metadata.annotations.contains_key(key),
            "{key} lifted"
        );
    }
    h.wait_available("web", 3).await;
    // A new commit may start again.
    h.start("web").await.unwrap();
}

#[tokio::test]
async fn a_name_too_long_once_the_address_is_added_is_refused_before_any_commit() {
    // 53 characters: the pinned deployment `<name>-10-92-0-1x` passes 63.
    let name = format!("w{}", "e".repeat(52));
    let h = Harness::new(&name, None, true).await;
    let err = h.start(&name).await.unwrap_err();
    let text = err.to_string();
    let pod = &h.live(&name).await[0].metadata.name;
    assert!(matches!(err, ControlError::Invalid(_)), "{text}");
    assert!(text.contains("pinned deployment"), "{text}");
    assert!(
        text.contains(&format!("{name}-10-92-0-")),
        "names the name: {text}"
    );
    assert!(text.contains(pod.as_str()), "names the pod: {text}");
    assert!(
        h.objects
            .get::<ComponentCommit>(Some("shop"), &name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.committer.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn pods_without_pool_addresses_or_a_deployment_not_available_are_refused() {
    let h = Harness::new("web", None, false).await;
    let err = h.start("web").await.unwrap_err();
    assert!(
        err.to_string().contains("no address from an IP pool"),
        "{err}"
    );

    // A deployment an autoscaler scales.
    let h = Harness::new("web", None, true).await;
    h.objects
        .apply_hpa(crate::test_objects::hpa("web", 5))
        .await
        .unwrap();
    let err = h.start("web").await.unwrap_err().to_string();
    assert!(err.contains("HorizontalPodAutoscaler web"), "{err}");

    // A pod on a node that is down.
    let h = Harness::new("web", None, true).await;
    h.objects
        .modify::<Node>(None, "n1", |n| {
            n.status.ready = false;
            true
        })
        .await
        .unwrap();
    let err = h.start("web").await.unwrap_err().to_string();
    assert!(err.contains("on node \"n1\", which is not ready"), "{err}");
    assert!(err.contains(&h.live("web").await[0].metadata.name), "{err}");

    let h = Harness::new("web", None, true).await;
    // One pod stops running: the deployment is no longer available.
    let pod = h.live("web").await.remove(0);
    h.broken.lock().unwrap().insert("shop/web:1".into());
    h.objects
        .modify::<Pod>(Some("shop"), &pod.metadata.name, |p| {
            p.status.phase = PodPhase::Pending;
            p.status.container_statuses.clear();
            true
        })
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..100 {
        match h.start("web").await {
            Err(err) => {
                refused = Some(err);
                break;
            }
            Ok(_) => {
                h.objects
                    .delete::<ComponentCommit>(Some("shop"), "web", None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let err = refused.expect("refused once the controller saw the pod");
    let text = err.to_string();
    assert!(
        text.contains("not available") || text.contains(&pod.metadata.name),
        "{text}"
    );
    assert!(h.committer.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_new_leader_resumes_the_flow_where_the_old_one_stopped() {
    let h = Harness::new("web", None, true).await;
    let before = h.serving().await;
    h.start("web").await.unwrap();
    // The first leader gets one address handed over, then dies.
    let first = tokio::spawn({
        let flow = h.flow.clone();
        async move { flow.drive("shop", "web").await }
    });
    let handed_over = async {
        loop {
            let c: ComponentCommit = h.objects.require(Some("shop"), "web").await.unwrap();
            if c.status.pods.iter().any(|r| r.handed_over) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), handed_over)
        .await
        .expect("one address handed over");
    first.abort();

    // The next leader's controller finds the flow in the store and ends it.
    let leader = CommitFlowController::new(
        h.objects.clone(),
        h.committer.clone(),
        h.specs.clone(),
        TIMING,
    );
    let _leading = AbortOnDropHandle::new(tokio::spawn(leader.run()));
    let done = async {
        loop {
            let c: ComponentCommit = h.objects.require(Some("shop"), "web").await.unwrap();
            if !c.status.phase.is_active() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .expect("the flow ends under the new leader");
    assert_eq!(done.status.phase, CommitPhase::Done, "{:?}", done.status);
    assert_eq!(
        h.committer.calls.lock().unwrap().len(),
        3,
        "no pod committed twice"
    );
    let after = h.serving().await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert!(after.iter().all(|(ip, (_, image))| *image == image_of(ip)));
    assert_eq!(h.pinned().await.len(), 3);
}
