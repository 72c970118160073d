//! The registry asks its `Authorizer` before every operation and reports
//! events; these tests plug in a scripted authorizer.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, StatusCode};
use wharf_oci::RepositoryName;
use wharf_registry::RegistryError;
use wharf_registry::http::{Authorizer, Caller, EventKind, EventSink, Gate, Need, RegistryEvent};

/// `x-user: <name>` authenticates; `readable`/`writable` list what each user may do.
struct Scripted {
    readable: HashMap<&'static str, Vec<&'static str>>,
    writable: HashMap<&'static str, Vec<&'static str>>,
}

impl Scripted {
    fn allows(&self, user: &str, need: &Need) -> bool {
        let listed = |map: &HashMap<&str, Vec<&str>>, repo: &RepositoryName| {
            map.get(user)
                .is_some_and(|repos| repos.contains(&repo.as_str()))
        };
        match need {
            Need::Login | Need::Catalog => true,
            Need::Pull(repo) => listed(&self.readable, repo),
            Need::Push(repo) | Need::Delete(repo) => listed(&self.writable, repo),
        }
    }
}

#[async_trait]
impl Authorizer for Scripted {
    async fn admit(
        &self,
        headers: &HeaderMap,
        source: Option<IpAddr>,
        need: &Need,
    ) -> Result<Caller, RegistryError> {
        let Some(user) = headers.get("x-user").and_then(|v| v.to_str().ok()) else {
            return Err(RegistryError::Unauthorized {
                message: "no credentials".into(),
                challenge: "Bearer realm=\"http://test/token\",service=\"test\"".into(),
            });
        };
        if !self.allows(user, need) {
            return Err(RegistryError::Denied(format!("{user} may not")));
        }
        Ok(Caller {
            name: user.to_string(),
            source,
            context: Arc::new(user.to_string()),
        })
    }

    async fn may_pull(&self, caller: &Caller, repo: &RepositoryName) -> bool {
        let user = caller.context.downcast_ref::<String>().unwrap();
        self.allows(user, &Need::Pull(repo.clone()))
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<RegistryEvent>>);

impl EventSink for Recorder {
    fn record(&self, event: RegistryEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn setup() -> (TestRegistry, Arc<Recorder>) {
    let events = Arc::new(Recorder::default());
    let authorizer = Scripted {
        readable: HashMap::from([
            ("alice", vec!["a/app", "b/app"]),
            ("bob", vec!["b/app"]),
            ("carol", vec!["c/app"]),
        ]),
        writable: HashMap::from([("alice", vec!["a/app", "b/app"]), ("carol", vec!["c/app"])]),
    };
    let gate = Gate {
        authorizer: Arc::new(authorizer),
        events: events.clone(),
        pull_through: Arc::new(wharf_registry::http::NoPullThrough),
    };
    (TestRegistry::with_gate(gate), events)
}

#[tokio::test]
async fn every_operation_is_checked() {
    let (reg, _) = setup();
    // Without credentials: 401 with the authorizer's challenge, on every endpoint.
    for (method, uri) in [
        (Method::GET, "/v2/".to_string()),
        (Method::GET, "/v2/_catalog".to_string()),
        (Method::GET, "/v2/_tombstones".to_string()),
        (Method::GET, "/v2/a/app/tags/list".to_string()),
        (Method::GET, "/v2/a/app/manifests/v1".to_string()),
        (Method::PUT, "/v2/a/app/manifests/v1".to_string()),
        (Method::DELETE, "/v2/a/app/manifests/v1".to_string()),
        (Method::GET, format!("/v2/a/app/blobs/{}", sha256(b"x"))),
        (Method::POST, "/v2/a/app/blobs/uploads/".to_string()),
        (Method::GET, format!("/v2/a/app/referrers/{}", sha256(b"x"))),
    ] {
        let reply = reg
            .send(method.clone(), &uri, &[], Bytes::new())
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        assert_eq!(
            reply.header("www-authenticate"),
            "Bearer realm=\"http://test/token\",service=\"test\"",
            "{method} {uri}"
        );
    }
    // bob may read b/app but not write it, and may not read a/app.
    let bob = [("x-user", "bob")];
    reg.send(Method::POST, "/v2/b/app/blobs/uploads/", &bob, Bytes::new())
        .await
        .expect_error(StatusCode::FORBIDDEN, "DENIED");
    reg.send(Method::GET, "/v2/a/app/tags/list", &bob, Bytes::new())
        .await
        .expect_error(StatusCode::FORBIDDEN, "DENIED");
    reg.send(Method::GET, "/v2/", &bob, Bytes::new())
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn catalog_lists_only_readable_repositories() {
    let (reg, _) = setup();
    let alice = [("x-user", "alice")];
    for repo in ["a/app", "b/app"] {
        let data = random_bytes(10);
        let digest = sha256(&data);
        reg.send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &alice,
            data,
        )
        .await
        .expect(StatusCode::CREATED);
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 10},
            "layers": [],
        });
        reg.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/v1"),
            &[("x-user", "alice"), ("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .expect(StatusCode::CREATED);
    }
    let catalog = |user: &'static str| {
        let reg = &reg;
        async move {
            reg.send(
                Method::GET,
                "/v2/_catalog",
                &[("x-user", user)],
                Bytes::new(),
            )
            .await
            .json()["repositories"]
                .clone()
        }
    };
    assert_eq!(
        catalog("alice").await,
        serde_json::json!(["a/app", "b/app"])
    );
    assert_eq!(catalog("bob").await, serde_json::json!(["b/app"]));
    assert_eq!(catalog("carol").await, serde_json::json!([]));
    assert_eq!(catalog("dave").await, serde_json::json!([]));
    // Paging counts visible repositories only.
    let page = reg
        .send(
            Method::GET,
            "/v2/_catalog?n=1",
            &[("x-user", "bob")],
            Bytes::new(),
        )
        .await;
    assert_eq!(page.json()["repositories"], serde_json::json!(["b/app"]));

    // Deleted tags are listed under the same rule.
    for repo in ["a/app", "b/app"] {
        reg.send(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/v1"),
            &alice,
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    }
    let deleted = |user: &'static str, query: &'static str| {
        let reg = &reg;
        async move {
            let reply = reg
                .send(
                    Method::GET,
                    &format!("/v2/_tombstones{query}"),
                    &[("x-user", user)],
                    Bytes::new(),
                )
                .await
                .expect(StatusCode::OK);
            let link = reply.headers.get("link").cloned();
            let listed: Vec<String> = reply.json()["tombstones"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["repository"].as_str().unwrap(),
                        t["tag"].as_str().unwrap()
                    )
                })
                .collect();
            (listed, link)
        }
    };
    assert_eq!(deleted("alice", "").await.0, ["a/app:v1", "b/app:v1"]);
    assert_eq!(deleted("bob", "").await.0, ["b/app:v1"]);
    assert!(deleted("carol", "").await.0.is_empty());
    let (first, link) = deleted("alice", "?n=1").await;
    assert_eq!(first, ["a/app:v1"]);
    assert_eq!(
        link.unwrap().to_str().unwrap(),
        "</v2/_tombstones?n=1&last=a%2Fapp%3Av1>; rel=\"next\""
    );
    assert_eq!(
        deleted("alice", "?n=1&last=a/app:v1").await,
        (vec!["b/app:v1".to_string()], None)
    );
    // Paging counts visible tombstones only.
    assert_eq!(
        deleted("bob", "?n=1").await,
        (vec!["b/app:v1".to_string()], None)
    );
}

#[tokio::test]
async fn mounts_need_read_access_to_the_source() {
    let (reg, _) = setup();
    let data = random_bytes(100);
    let digest = sha256(&data);
    // alice pushes to a/app (bob cannot read it).
    reg.send(
        Method::POST,
        &format!("/v2/a/app/blobs/uploads/?digest={digest}"),
        &[("x-user", "alice")],
        data,
    )
    .await
    .expect(StatusCode::CREATED);
    // carol may write c/app but not read a/app: no mount, an upload session instead.
    let carol = [("x-user", "carol")];
    for uri in [
        format!("/v2/c/app/blobs/uploads/?mount={digest}&from=a/app"),
        format!("/v2/c/app/blobs/uploads/?mount={digest}"),
    ] {
        let reply = reg
            .send(Method::POST, &uri, &carol, Bytes::new())
            .await
            .expect(StatusCode::ACCEPTED);
        assert!(
            reply
                .header("location")
                .starts_with("/v2/c/app/blobs/uploads/")
        );
    }
    reg.send(
        Method::HEAD,
        &format!("/v2/c/app/blobs/{digest}"),
        &carol,
        Bytes::new(),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    // alice may read a/app: both forms mount.
    let alice = [("x-user", "alice")];
    reg.send(
        Method::POST,
        &format!("/v2/b/app/blobs/uploads/?mount={digest}&from=a/app"),
        &alice,
        Bytes::new(),
    )
    .await
    .expect(StatusCode::CREATED);
    reg.send(
        Method::DELETE,
        &format!("/v2/b/app/blobs/{digest}"),
        &alice,
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    reg.send(
        Method::POST,
        &format!("/v2/b/app/blobs/uploads/?mount={digest}"),
        &alice,
        Bytes::new(),
    )
    .await
    .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn events_record_pushes_pulls_and_deletes() {
    let (reg, events) = setup();
    let alice = [("x-user", "alice")];
    let data = random_bytes(10);
    let digest = sha256(&data);
    reg.send(
        Method::POST,
        &format!("/v2/a/app/blobs/uploads/?digest={digest}"),
        &alice,
        data,
    )
    .await
    .expect(StatusCode::CREATED);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 10},
        "layers": [],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256(&body);
    reg.send(
        Method::PUT,
        "/v2/a/app/manifests/v1",
        &[("x-user", "alice"), ("content-type", OCI_MANIFEST)],
        body,
    )
    .await
    .expect(StatusCode::CREATED);
    reg.send(Method::GET, "/v2/a/app/manifests/v1", &alice, Bytes::new())
        .await
        .expect(StatusCode::OK);
    reg.send(Method::HEAD, "/v2/a/app/manifests/v1", &alice, Bytes::new())
        .await
        .expect(StatusCode::OK);
    reg.send(
        Method::GET,
        "/v2/a/app/manifests/v1",
        &[("x-user", "bob")],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    reg.send(
        Method::DELETE,
        "/v2/a/app/manifests/v1",
        &alice,
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);

    let events = events.0.lock().unwrap();
    let summary: Vec<(EventKind, String)> =
        events.iter().map(|e| (e.kind, e.actor.clone())).collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Push, "alice".to_string()),
            (EventKind::Pull, "alice".to_string()),
            (EventKind::Delete, "alice".to_string()),
        ],
        "HEAD is not a pull; refusals are the authorizer's to record"
    );
    assert_eq!(events[0].digest.as_ref(), Some(&manifest_digest));
    assert_eq!(events[0].reference, "v1");
    assert_eq!(events[0].repository.as_str(), "a/app");
}
