//! The EC2 driver against moto's EC2 emulator: instances are created with
//! the pool's tags, listed by them, and terminated; a bad request comes
//! back as the provider's refusal.

use std::collections::BTreeMap;

use wharf_provider::{Credentials, MachineRequest, MachineState, ProviderError, provider_for};
use wharf_testkit::moto::MotoServer;

fn spec(endpoint: &str, image: &str) -> wharf_api::ProviderSpec {
    let settings: BTreeMap<String, String> = [
        ("endpoint", endpoint),
        ("region", "us-east-1"),
        ("imageId", image),
        ("instanceType.small", "t3.small"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into_iter()
    .collect();
    wharf_api::ProviderSpec {
        driver: "ec2".into(),
        settings,
        credentials_secret: Some("aws".into()),
        machines: vec![],
    }
}

fn keys() -> Credentials {
    Credentials {
        access_key_id: "AKIDWHARFTEST".into(),
        secret_access_key: "not-a-real-secret".into(),
    }
}

#[tokio::test]
async fn instances_are_created_listed_by_pool_and_terminated() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let http = reqwest::Client::new();
    let ec2 = provider_for(&spec(&moto.endpoint, "ami-wharf0001"), Some(keys()), http).unwrap();
    let request = MachineRequest {
        cluster: "aws".into(),
        pool: "burst".into(),
        count: 2,
        machine_class: "small".into(),
        join_command: Some("echo join".into()),
        in_use: vec![],
    };
    let made = ec2.create(&request).await.unwrap();
    assert_eq!(made.len(), 2);
    assert!(made.iter().all(|m| m.id.starts_with("i-")));
    // Another pool's instance is not listed with this one's.
    let other = MachineRequest {
        pool: "other".into(),
        count: 1,
        ..request.clone()
    };
    ec2.create(&other).await.unwrap();
    let mut listed = ec2.list("aws", "burst").await.unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut ids: Vec<_> = made.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    assert_eq!(listed.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids);
    assert!(listed.iter().all(|m| m.state != MachineState::Gone));
    assert!(ec2.list("elsewhere", "burst").await.unwrap().is_empty());

    ec2.delete(&ids[..1]).await.unwrap();
    let left = ec2.list("aws", "burst").await.unwrap();
    assert_eq!(left.len(), 1, "a terminated instance is gone: {left:?}");
    assert_eq!(left[0].id, ids[1]);
}

#[tokio::test]
async fn a_refusal_carries_the_providers_code() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let ec2 = provider_for(
        &spec(&moto.endpoint, "ami-wharf0001"),
        Some(keys()),
        reqwest::Client::new(),
    )
    .unwrap();
    let err = ec2
        .delete(&["i-doesnotexist0000".into()])
        .await
        .unwrap_err();
    match err {
        ProviderError::Refused { action, code, .. } => {
            assert_eq!(action, "TerminateInstances");
            assert!(code.starts_with("InvalidInstanceID"), "{code}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
}
