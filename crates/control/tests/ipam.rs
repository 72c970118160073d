//! IP pools over a real (redb) store: concurrent claims never share an
//! address, fixed addresses are honoured, addresses come back, and pools
//! cannot lose addresses in use.

use std::collections::BTreeSet;
use std::sync::Arc;

use wharf_api::{ANNOTATION_FIXED_IP, ANNOTATION_IP_POOL, IpPool, ObjectMeta, Pod, parse_ip_pools};
use wharf_control::{ControlError, IpReconciler, Objects};
use wharf_store::{RedbStore, RedbStoreOptions};

const POOL: &str = "apiVersion: wharf.io/v1
kind: IpPool
metadata: {name: web-pool}
spec:
  cidr: 10.77.0.0/24
  gateway: 10.77.0.1
  ranges: [{start: 10.77.0.10, end: 10.77.0.50}]
  exclude: [10.77.0.11]
";

fn objects(dir: &tempfile::TempDir) -> Objects {
    let store =
        RedbStore::open(&dir.path().join("state.redb"), RedbStoreOptions::default()).unwrap();
    Objects::new(Arc::new(store))
}

fn pool(yaml: &str) -> Vec<IpPool> {
    parse_ip_pools(yaml).unwrap().0
}

async fn bound_pod(objects: &Objects, name: &str, annotations: &[(&str, &str)]) -> Pod {
    let pod = Pod {
        metadata: ObjectMeta {
            name: name.into(),
            project: Some("shop".into()),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ObjectMeta::default()
        },
        spec: wharf_api::PodSpec {
            node_name: Some("node-1".into()),
            ..Default::default()
        },
        ..Pod::default()
    };
    objects.create(pod).await.unwrap()
}

#[tokio::test]
async fn concurrent_claims_never_share_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&dir);
    assert_eq!(objects.import_ip_pools(pool(POOL)).await.unwrap(), [true]);
    // 45 pods race for the pool's 40 addresses.
    for i in 0..45 {
        bound_pod(
            &objects,
            &format!("web-{i}"),
            &[(ANNOTATION_IP_POOL, "web-pool")],
        )
        .await;
    }
    let claims = futures_util::future::join_all((0..45).map(|i| {
        let objects = objects.clone();
        async move { objects.claim_pod_ip("shop", &format!("web-{i}")).await }
    }))
    .await;
    let mut addresses = BTreeSet::new();
    let mut exhausted = 0;
    for claim in claims {
        match claim {
            Ok(Some(claim)) => {
                assert!(addresses.insert(claim.ip), "{} handed out twice", claim.ip);
                let octet = claim.ip.octets()[3];
                assert!((10..=50).contains(&octet) && octet != 11, "{}", claim.ip);
                assert_eq!(claim.gateway.to_string(), "10.77.0.1");
                assert_eq!(claim.prefix_len, 24);
            }
            Err(ControlError::Conflict(message)) => {
                assert!(message.contains("no free address"), "{message}");
                exhausted += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((addresses.len(), exhausted), (40, 5));
    assert_eq!(objects.pool_claims("web-pool").await.unwrap().len(), 40);

    // Claiming again returns the address held.
    let held = objects.pod_claim("shop", "web-0").await.unwrap();
    if let Some(held) = held {
        let again = objects
            .claim_pod_ip("shop", "web-0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, held);
        // Released, it goes to a pod that was turned away.
        let released = objects
            .release_pod_ip("shop", "web-0", Some(&held.pod_uid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(released.ip, held.ip);
        let mut retried = 0;
        for i in 0..45 {
            if objects
                .pod_claim("shop", &format!("web-{i}"))
                .await
                .unwrap()
                .is_none()
                && i != 0
            {
                let claim = objects
                    .claim_pod_ip("shop", &format!("web-{i}"))
                    .await
                    .unwrap();
                assert_eq!(claim.unwrap().ip, held.ip);
                retried += 1;
                break;
            }
        }
        assert_eq!(retried, 1);
    }
}

#[tokio::test]
async fn fixed_addresses_are_pinned_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&dir);
    objects.import_ip_pools(pool(POOL)).await.unwrap();
    // A fixed address without a pool finds the pool that offers it.
    bound_pod(&objects, "db", &[(ANNOTATION_FIXED_IP, "10.77.0.20")]).await;
    let claim = objects.claim_pod_ip("shop", "db").await.unwrap().unwrap();
    assert_eq!(
        (claim.pool.as_str(), claim.ip.to_string().as_str()),
        ("web-pool", "10.77.0.20")
    );
    bound_pod(&objects, "db2", &[(ANNOTATION_FIXED_IP, "10.77.0.20")]).await;
    let err = objects
        .claim_pod_ip("shop", "db2")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("held by pod shop/db"), "{err}");
    for (name, bad, expected) in [
        (
            "x1",
            "10.77.0.11",
            "pool web-pool does not offer 10.77.0.11",
        ),
        ("x2", "10.99.0.1", "no IP pool offers"),
        ("x3", "ten", "not an IPv4 address"),
    ] {
        let pool = (ANNOTATION_IP_POOL, "web-pool");
        let fixed = (ANNOTATION_FIXED_IP, bad);
        let annotations = if name == "x1" {
            vec![pool, fixed]
        } else {
            vec![fixed]
        };
        bound_pod(&objects, name, &annotations).await;
        let err = objects
            .claim_pod_ip("shop", name)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{bad}: {err}");
    }
    bound_pod(&objects, "lost", &[(ANNOTATION_IP_POOL, "no-such-pool")]).await;
    assert!(matches!(
        objects.claim_pod_ip("shop", "lost").await,
        Err(ControlError::NotFound { .. })
    ));
    // Pods that ask for nothing get nothing from a pool.
    bound_pod(&objects, "plain", &[]).await;
    assert_eq!(objects.claim_pod_ip("shop", "plain").await.unwrap(), None);
}

#[tokio::test]
async fn pools_keep_addresses_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&dir);
    objects.import_ip_pools(pool(POOL)).await.unwrap();
    bound_pod(&objects, "db", &[(ANNOTATION_FIXED_IP, "10.77.0.40")]).await;
    objects.claim_pod_ip("shop", "db").await.unwrap().unwrap();
    let shrunk = POOL.replace("10.77.0.50", "10.77.0.30");
    let err = objects
        .import_ip_pools(pool(&shrunk))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("10.77.0.40 (shop/db)"), "{err}");
    let err = objects
        .delete_ip_pool("web-pool")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 addresses in use"), "{err}");
    // Growing is fine; importing the same pool again changes nothing.
    let grown = POOL.replace("10.77.0.50", "10.77.0.60");
    assert_eq!(
        objects.import_ip_pools(pool(&grown)).await.unwrap(),
        [false]
    );
    let stored: IpPool = objects.require(None, "web-pool").await.unwrap();
    assert_eq!(stored.spec.ranges[0].end, "10.77.0.60");
    assert_eq!(stored.metadata.generation, 2);
    objects.import_ip_pools(pool(&grown)).await.unwrap();
    let again: IpPool = objects.require(None, "web-pool").await.unwrap();
    assert_eq!(again.metadata.generation, 2);

    objects
        .release_pod_ip("shop", "db", None)
        .await
        .unwrap()
        .unwrap();
    objects.import_ip_pools(pool(&shrunk)).await.unwrap();
    objects.delete_ip_pool("web-pool").await.unwrap();
}

#[tokio::test]
async fn addresses_of_vanished_pods_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&dir);
    objects.import_ip_pools(pool(POOL)).await.unwrap();
    bound_pod(&objects, "gone", &[(ANNOTATION_IP_POOL, "web-pool")]).await;
    bound_pod(&objects, "kept", &[(ANNOTATION_IP_POOL, "web-pool")]).await;
    objects.claim_pod_ip("shop", "gone").await.unwrap().unwrap();
    let kept = objects.claim_pod_ip("shop", "kept").await.unwrap().unwrap();
    objects.delete_pod("shop", "gone").await.unwrap();

    let mut reconciler = IpReconciler::new(objects.clone(), std::time::Duration::from_secs(30));
    // The first pass only notes the orphan: its agent may still be tearing down.
    assert_eq!(reconciler.pass().await.unwrap(), 0);
    assert!(objects.pod_claim("shop", "gone").await.unwrap().is_some());
    assert_eq!(reconciler.pass().await.unwrap(), 1);
    assert!(objects.pod_claim("shop", "gone").await.unwrap().is_none());
    assert_eq!(
        objects.pool_claims("web-pool").await.unwrap(),
        std::slice::from_ref(&kept)
    );

    // A new pod with the old one's name does not inherit its address.
    objects.delete_pod("shop", "kept").await.unwrap();
    bound_pod(&objects, "kept", &[(ANNOTATION_FIXED_IP, "10.77.0.12")]).await;
    let fresh = objects.claim_pod_ip("shop", "kept").await.unwrap().unwrap();
    assert_eq!(fresh.ip.to_string(), "10.77.0.12");
    assert_eq!(objects.pool_claims("web-pool").await.unwrap(), [fresh]);
}
