//! A cloud pool autoscaled through the EC2 driver against moto's emulator,
//! with the real deployment controller and scheduling loop: a deployment
//! that fits no node gets instances (seen with DescribeInstances), nodes
//! named after the instances take its pods, and scaled to zero its idle
//! instances are terminated and their nodes removed.

use std::sync::Arc;
use std::time::Duration;

use wharf_api::{
    Cluster, LABEL_INSTANCE_ID, LABEL_POOL, MachineClass, Manifest, Node, Pod, Pool, PoolGrant,
    Resources, Secret, parse_manifests,
};
use wharf_control::{
    ConfigObjects, DeploymentController, Objects, PROVIDER_SECRETS_PROJECT, PoolAutoscaler,
    ProviderFactory, SchedulingLoop,
};
use wharf_provider::{Credentials, MachineProvider};
use wharf_scheduler::SchedulerConfig;
use wharf_seal::SecretBox;
use wharf_store::{RedbStore, RedbStoreOptions};
use wharf_testkit::moto::MotoServer;

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// A cloud cluster on moto, a class of 2-cpu machines and pool `burst`
/// autoscaled from 0 to 3, idle machines removed after 2 s.
async fn inventory(objects: &Objects, secrets: &ConfigObjects, endpoint: &str) {
    objects
        .create::<Cluster>(from_json(serde_json::json!({
            "metadata": {"name": "aws"},
            "spec": {"kind": "cloud", "provider": {
                "driver": "ec2", "credentialsSecret": "aws-keys",
                "settings": {"endpoint": endpoint, "region": "us-east-1",
                             "imageId": "ami-wharf0001", "instanceType": "t3.small"}}}
        })))
        .await
        .unwrap();
    objects
        .create::<MachineClass>(from_json(serde_json::json!({
            "metadata": {"name": "c2"},
            "spec": {"cpu": {"min": "2"}, "memory": {"min": "4Gi"}, "pricePerHour": 0.02}
        })))
        .await
        .unwrap();
    objects
        .create::<Pool>(from_json(serde_json::json!({
            "metadata": {"name": "burst"},
            "spec": {"cluster": "aws", "autoscale": {
                "min": 0, "max": 3, "machineClass": "c2", "scaleDownDelaySeconds": 2}}
        })))
        .await
        .unwrap();
    // Pool `burst` is managed: project shop needs a grant to use it.
    objects
        .create::<PoolGrant>(from_json(serde_json::json!({
            "metadata": {"name": "burst.shop"},
            "spec": {"pool": "burst", "project": "shop"}
        })))
        .await
        .unwrap();
    let mut keys: Secret = from_json(serde_json::json!({
        "metadata": {"name": "aws-keys", "namespace": PROVIDER_SECRETS_PROJECT}
    }));
    keys.data
        .insert("accessKeyId".into(), b"AKIDWHARF".to_vec());
    keys.data
        .insert("secretAccessKey".into(), b"test-only".to_vec());
    secrets.apply_secret(keys).await.unwrap();
}

async fn deployment(objects: &Objects, replicas: u32) {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: batch, namespace: shop}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: batch}}}}\n  template:\n    \
         metadata: {{labels: {{app: batch}}}}\n    spec:\n      \
         nodeSelector: {{{LABEL_POOL}: burst}}\n      \
         containers: [{{name: main, image: shop/batch:1, \
         resources: {{requests: {{cpu: 1500m, memory: 1Gi}}}}}}]\n"
    );
    let Manifest::Deployment(deployment) = parse_manifests(&yaml).unwrap().remove(0).manifest
    else {
        panic!("a deployment");
    };
    objects.create(*deployment).await.unwrap();
}

/// What an agent started with an instance's identity registers.
async fn agent_joins(objects: &Objects, instance: &str) {
    let capacity = Resources {
        cpu_millis: 2000,
        memory_bytes: 4 << 30,
        pods: 110,
    };
    let mut node = Node::new(instance, capacity);
    node.metadata
        .labels
        .insert(LABEL_POOL.into(), "burst".into());
    node.metadata
        .labels
        .insert(LABEL_INSTANCE_ID.into(), instance.into());
    node.status.ready = true;
    objects.create(node).await.unwrap();
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bound_pods(objects: &Objects) -> usize {
    let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
    pods.iter().filter(|p| p.spec.node_name.is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_pool_grows_for_unschedulable_pods_and_shrinks_when_idle() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb"), RedbStoreOptions::default());
    let objects = Objects::new(Arc::new(store.unwrap()));
    let secrets = ConfigObjects::new(objects.clone(), SecretBox::from_key([9; 32]));
    inventory(&objects, &secrets, &moto.endpoint).await;
    // The driver the server uses, and one of its own to look at moto.
    let http = reqwest::Client::new();
    let factory: ProviderFactory = Arc::new(move |spec, credentials| {
        wharf_provider::provider_for(spec, credentials, http.clone())
    });
    let cluster: Cluster = objects.require(None, "aws").await.unwrap();
    let keys = Credentials {
        access_key_id: "AKIDWHARF".into(),
        secret_access_key: "test-only".into(),
    };
    let ec2: Arc<dyn MachineProvider> =
        factory(cluster.spec.provider.as_ref().unwrap(), Some(keys)).unwrap();
    let autoscaler = PoolAutoscaler::new(objects.clone(), secrets, factory)
        .with_interval(Duration::from_millis(500));
    let _controllers = (
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            DeploymentController::new(objects.clone()).run(),
        )),
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            SchedulingLoop::new(objects.clone(), SchedulerConfig::default()).run(),
        )),
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(Arc::new(autoscaler).run())),
    );

    // Three 1.5-cpu pods for a pool without nodes: three 2-cpu instances.
    deployment(&objects, 3).await;
    wait_for("three instances in moto", || async {
        ec2.list("aws", "burst").await.unwrap().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let instances = ec2.list("aws", "burst").await.unwrap();
    assert_eq!(instances.len(), 3, "no more than the pods need");
    for instance in &instances {
        agent_joins(&objects, &instance.id).await;
    }
    wait_for("the pods placed on the instances' nodes", || async {
        bound_pods(&objects).await == 3
    })
    .await;

    // Scaled to zero: the agents confirm their pods stopped, and after the
    // delay the instances are terminated and the nodes removed.
    objects.scale_deployment("shop", "batch", 0).await.unwrap();
    wait_for("the pods stopped", || async {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        for pod in &pods {
            let name = &pod.metadata.name;
            let _ = objects
                .confirm_pod_stopped("shop", name, &pod.metadata.uid)
                .await;
        }
        pods.is_empty()
    })
    .await;
    wait_for("the instances terminated", || async {
        ec2.list("aws", "burst").await.unwrap().is_empty()
    })
    .await;
    wait_for("the nodes removed", || async {
        let (nodes, _) = objects.list::<Node>(None, None).await.unwrap();
        nodes.is_empty()
    })
    .await;
}
