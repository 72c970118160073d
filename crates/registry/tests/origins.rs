//! Origins of tag writes for dual-master replication: the conflict rule
//! (later origin time wins, equal times the greater instance id), the
//! `Wharf-Origin` and `Wharf-Tag` headers, and the events that report them;
//! tombstones of deleted tags, which hold the same rule against later
//! writes, and their pruning.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use wharf_oci::{Digest, Reference, RepositoryName, Tag};
use wharf_registry::http::{EventKind, EventSink, Gate, OpenAccess, RegistryEvent};
use wharf_registry::{DeleteOutcome, Origin, RegistryConfig, RegistryError, TagOutcome};
use wharf_store::StoreExt;

const HERE: &str = "dc-here";

#[derive(Default)]
struct Recorder(Mutex<Vec<RegistryEvent>>);

impl EventSink for Recorder {
    fn record(&self, event: RegistryEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    fn take(&self) -> Vec<RegistryEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A registry whose instance id is `dc-here`, recording its events.
fn setup() -> (TestRegistry, Arc<Recorder>) {
    setup_with(RegistryConfig::default())
}

/// [`setup`] with other settings.
fn setup_with(config: RegistryConfig) -> (TestRegistry, Arc<Recorder>) {
    let events = Arc::new(Recorder::default());
    let gate = Gate {
        authorizer: Arc::new(OpenAccess),
        events: events.clone(),
        pull_through: Arc::new(wharf_registry::http::NoPullThrough),
    };
    let config = RegistryConfig {
        instance: HERE.to_string(),
        ..config
    };
    (TestRegistry::with_config_and_gate(config, gate), events)
}

fn origin(instance: &str, at: u64) -> Origin {
    Origin::new(instance, at).unwrap()
}

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn tag(name: &str) -> Tag {
    name.parse().unwrap()
}

fn reference(text: &str) -> Reference {
    text.parse().unwrap()
}

/// The bytes of a distinct image manifest whose blobs are in `repo` and
/// shared with no other such manifest.
async fn manifest_bytes(reg: &TestRegistry, repo: &str, layer: &str) -> Bytes {
    let config = format!(r#"{{"os":"linux","layer":"{layer}"}}"#);
    let manifest = reg
        .image_manifest(repo, config.as_bytes(), &[layer.as_bytes()])
        .await;
    Bytes::from(serde_json::to_vec(&manifest).unwrap())
}

/// A replicated push through the service.
async fn push_from(
    reg: &TestRegistry,
    repo_name: &str,
    reference_text: &str,
    body: &Bytes,
    from: Option<&Origin>,
) -> wharf_registry::PushedManifest {
    reg.registry
        .put_manifest_from(
            &repo(repo_name),
            &reference(reference_text),
            Some(OCI_MANIFEST),
            body.clone(),
            from,
        )
        .await
        .unwrap()
}

async fn tag_origin(reg: &TestRegistry, repo_name: &str, tag_name: &str) -> (Digest, Origin) {
    reg.registry
        .tag_origin(&repo(repo_name), &tag(tag_name))
        .await
        .unwrap()
        .expect("tag exists")
}

#[tokio::test]
async fn replicated_pushes_follow_the_conflict_rule() {
    let (reg, _) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    let three = manifest_bytes(&reg, "p/app", "three").await;
    let (d1, d2, d3) = (sha256(&one), sha256(&two), sha256(&three));

    // A new tag takes the origin it came with.
    let b = origin("dc-b", 1_000_000);
    let pushed = push_from(&reg, "p/app", "v1", &one, Some(&b)).await;
    assert_eq!(pushed.tag, TagOutcome::Stored);
    assert_eq!(pushed.origin, b);
    assert_eq!(
        tag_origin(&reg, "p/app", "v1").await,
        (d1.clone(), b.clone())
    );

    // An older write loses: its manifest is stored by digest, the tag stays.
    let older = origin("dc-z", 999_999);
    let pushed = push_from(&reg, "p/app", "v1", &two, Some(&older)).await;
    assert_eq!(
        pushed.tag,
        TagOutcome::Kept {
            current: d1.clone(),
            current_origin: b.clone()
        }
    );
    assert_eq!(pushed.digest, d2);
    assert_eq!(
        tag_origin(&reg, "p/app", "v1").await,
        (d1.clone(), b.clone())
    );
    reg.get(&format!("/v2/p/app/manifests/{d2}"))
        .await
        .expect(StatusCode::OK);

    // A newer write wins and moves the tag.
    let newer = origin("dc-a", 1_000_001);
    let pushed = push_from(&reg, "p/app", "v1", &two, Some(&newer)).await;
    assert_eq!(
        pushed.tag,
        TagOutcome::Replaced {
            previous: d1.clone(),
            previous_origin: b.clone()
        }
    );
    assert_eq!(
        tag_origin(&reg, "p/app", "v1").await,
        (d2.clone(), newer.clone())
    );

    // Equal times: the greater instance id wins, whichever arrives.
    let tie_lower = origin("dc-0", 1_000_001);
    let pushed = push_from(&reg, "p/app", "v1", &three, Some(&tie_lower)).await;
    assert!(matches!(pushed.tag, TagOutcome::Kept { .. }), "{pushed:?}");
    assert_eq!(tag_origin(&reg, "p/app", "v1").await.0, d2);
    let tie_greater = origin("dc-b", 1_000_001);
    let pushed = push_from(&reg, "p/app", "v1", &three, Some(&tie_greater)).await;
    assert_eq!(
        pushed.tag,
        TagOutcome::Replaced {
            previous: d2.clone(),
            previous_origin: newer.clone()
        }
    );
    assert_eq!(
        tag_origin(&reg, "p/app", "v1").await,
        (d3.clone(), tie_greater.clone())
    );
    // The same origin again is not a win either: no flapping on redelivery.
    let pushed = push_from(&reg, "p/app", "v1", &one, Some(&tie_greater)).await;
    assert!(matches!(pushed.tag, TagOutcome::Kept { .. }), "{pushed:?}");

    // Pushed by digest: no tag involved, the origin does not matter.
    let pushed = push_from(&reg, "p/app", d1.as_str(), &one, Some(&older)).await;
    assert_eq!(pushed.tag, TagOutcome::NoTag);
    assert_eq!(tag_origin(&reg, "p/app", "v1").await.0, d3);
}

#[tokio::test]
async fn same_digest_is_unchanged_and_keeps_its_origin() {
    let (reg, _) = setup();
    let body = manifest_bytes(&reg, "p/app", "layer").await;
    let b = origin("dc-b", 5_000);
    push_from(&reg, "p/app", "v1", &body, Some(&b)).await;
    for again in [origin("dc-c", 9_000), origin("dc-a", 1_000)] {
        let pushed = push_from(&reg, "p/app", "v1", &body, Some(&again)).await;
        assert_eq!(pushed.tag, TagOutcome::Unchanged);
        assert_eq!(tag_origin(&reg, "p/app", "v1").await.1, b);
    }
    // A local push of the same content leaves the tag's origin alone too.
    let pushed = push_from(&reg, "p/app", "v1", &body, None).await;
    assert_eq!(pushed.tag, TagOutcome::Unchanged);
    assert_eq!(tag_origin(&reg, "p/app", "v1").await.1, b);
    let reply = reg
        .send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            body,
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("wharf-tag"), "unchanged");
}

#[tokio::test]
async fn local_push_beats_a_replicated_tag_even_with_a_lagging_clock() {
    let (reg, _) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    // A peer whose clock is five minutes ahead of ours set the tag.
    let ahead = now_millis() + 300_000;
    let peer = origin("dc-peer", ahead);
    push_from(&reg, "p/app", "v1", &one, Some(&peer)).await;

    let reply = reg
        .send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            two.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("wharf-tag"), "replaced");
    let (digest, local) = tag_origin(&reg, "p/app", "v1").await;
    assert_eq!(digest, sha256(&two));
    assert_eq!(local, origin(HERE, ahead + 1));
    assert!(local.wins_over(&peer), "the peer will accept it too");

    // Without a clock problem a local push is stamped now.
    let before = now_millis();
    let pushed = push_from(&reg, "p/app", "v2", &one, None).await;
    assert_eq!(pushed.tag, TagOutcome::Stored);
    assert_eq!(pushed.origin.instance, HERE);
    assert!(pushed.origin.at >= before && pushed.origin.at <= now_millis());
    assert_eq!(tag_origin(&reg, "p/app", "v2").await.1, pushed.origin);

    // A local push over a local tag is an ordinary move, stamped after it
    // even within the same millisecond.
    let previous = tag_origin(&reg, "p/app", "v2").await.1;
    let pushed = push_from(&reg, "p/app", "v2", &two, None).await;
    assert_eq!(
        pushed.tag,
        TagOutcome::Replaced {
            previous: sha256(&one),
            previous_origin: previous.clone()
        }
    );
    assert!(pushed.origin.wins_over(&previous));
    assert_eq!(tag_origin(&reg, "p/app", "v2").await.1, pushed.origin);
}

#[tokio::test]
async fn origins_far_in_the_future_are_refused() {
    let (reg, _) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let pinned = origin("dc-peer", now_millis() + 3_600_000);
    let refused = reg
        .registry
        .put_manifest_from(
            &repo("p/app"),
            &reference("v1"),
            Some(OCI_MANIFEST),
            one.clone(),
            Some(&pinned),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("ahead"), "{refused}");
    assert!(
        reg.registry
            .tag_origin(&repo("p/app"), &tag("v1"))
            .await
            .unwrap()
            .is_none()
    );
    let header = pinned.to_header();
    reg.send(
        Method::PUT,
        "/v2/p/app/manifests/v1",
        &[
            ("content-type", OCI_MANIFEST),
            ("wharf-origin", header.as_str()),
        ],
        one,
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    push_from(
        &reg,
        "p/app",
        "v1",
        &manifest_bytes(&reg, "p/app", "two").await,
        None,
    )
    .await;
    let deleted = reg
        .registry
        .delete_manifest_from(&repo("p/app"), &reference("v1"), Some(&pinned))
        .await;
    assert!(
        deleted.is_err(),
        "a far-future delete must not win: {deleted:?}"
    );
}

#[tokio::test]
async fn tag_deletes_follow_the_conflict_rule() {
    let (reg, _) = setup();
    let body = manifest_bytes(&reg, "p/app", "layer").await;
    let digest = sha256(&body);
    let b = origin("dc-b", 50_000);
    push_from(&reg, "p/app", "v1", &body, Some(&b)).await;
    push_from(&reg, "p/app", "v2", &body, Some(&b)).await;
    push_from(&reg, "p/app", "v3", &body, Some(&b)).await;
    let p_app = repo("p/app");

    // Older: refused by the rule, still answered 202 with Wharf-Tag: kept.
    let reply = reg
        .send(
            Method::DELETE,
            "/v2/p/app/manifests/v1",
            &[("wharf-origin", "dc-z; at=49999")],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reply.header("wharf-tag"), "kept");
    assert_eq!(
        tag_origin(&reg, "p/app", "v1").await,
        (digest.clone(), b.clone())
    );
    // Same time, lower instance: kept as well.
    let outcome = reg
        .registry
        .delete_manifest_from(&p_app, &reference("v1"), Some(&origin("dc-a", 50_000)))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        DeleteOutcome::Kept {
            current: digest.clone(),
            current_origin: b.clone()
        }
    );

    // The very origin that set the tag may delete it.
    let outcome = reg
        .registry
        .delete_manifest_from(&p_app, &reference("v1"), Some(&b))
        .await
        .unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert!(
        reg.registry
            .tag_origin(&p_app, &tag("v1"))
            .await
            .unwrap()
            .is_none()
    );
    // A newer one too, over HTTP.
    let reply = reg
        .send(
            Method::DELETE,
            "/v2/p/app/manifests/v2",
            &[("wharf-origin", "dc-a; at=50001")],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reply.header("wharf-tag"), "deleted");
    reg.get("/v2/p/app/manifests/v2")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");

    // Deletes by digest ignore the origin: content is not in conflict.
    let reply = reg
        .send(
            Method::DELETE,
            &format!("/v2/p/app/manifests/{digest}"),
            &[("wharf-origin", "dc-a; at=1")],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert!(reply.headers.get("wharf-tag").is_none());
    reg.get(&format!("/v2/p/app/manifests/{digest}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    reg.get("/v2/p/app/manifests/v3")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");

    // A local delete needs no origin, and keeps the old signature.
    push_from(
        &reg,
        "p/app",
        "v4",
        &body,
        Some(&origin("dc-b", now_millis() + 60_000)),
    )
    .await;
    reg.registry
        .delete_manifest(&p_app, &reference("v4"))
        .await
        .unwrap();
    assert!(
        reg.registry
            .tag_origin(&p_app, &tag("v4"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn origin_headers_round_trip() {
    let (reg, _) = setup();
    let body = manifest_bytes(&reg, "p/app", "layer").await;
    let digest = sha256(&body);
    let reply = reg
        .send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[
                ("content-type", OCI_MANIFEST),
                ("wharf-origin", "dc-b; at=1700000000123"),
            ],
            body.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("wharf-tag"), "stored");
    assert_eq!(
        tag_origin(&reg, "p/app", "v1").await,
        (digest.clone(), origin("dc-b", 1_700_000_000_123))
    );
    // GET and HEAD by tag tell who set the tag; by digest there is no tag.
    for reply in [
        reg.get("/v2/p/app/manifests/v1").await,
        reg.head("/v2/p/app/manifests/v1").await,
    ] {
        let reply = reply.expect(StatusCode::OK);
        assert_eq!(reply.header("wharf-origin"), "dc-b; at=1700000000123");
        assert_eq!(
            Origin::parse_header(reply.header("wharf-origin")).unwrap(),
            origin("dc-b", 1_700_000_000_123)
        );
    }
    let by_digest = reg
        .get(&format!("/v2/p/app/manifests/{digest}"))
        .await
        .expect(StatusCode::OK);
    assert!(by_digest.headers.get("wharf-origin").is_none());

    // Pushed by digest: no tag.
    let reply = reg
        .send(
            Method::PUT,
            &format!("/v2/p/app/manifests/{digest}"),
            &[("content-type", OCI_MANIFEST)],
            body.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("wharf-tag"), "none");
    // A replicated push that loses is still 201 (the content is stored) with
    // Wharf-Tag: kept.
    let other = manifest_bytes(&reg, "p/app", "other").await;
    let reply = reg
        .send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[
                ("content-type", OCI_MANIFEST),
                ("wharf-origin", "dc-a; at=1700000000000"),
            ],
            other.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("wharf-tag"), "kept");
    assert_eq!(
        reply.header("docker-content-digest"),
        sha256(&other).as_str()
    );
    let reply = reg
        .send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[
                ("content-type", OCI_MANIFEST),
                ("wharf-origin", "dc-c;at=1700000000123"),
            ],
            other.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("wharf-tag"), "replaced");
    let reply = reg.head("/v2/p/app/manifests/v1").await;
    assert_eq!(reply.header("wharf-origin"), "dc-c; at=1700000000123");
}

#[tokio::test]
async fn malformed_origin_headers_are_refused_and_store_nothing() {
    let (reg, events) = setup();
    let body = manifest_bytes(&reg, "p/app", "layer").await;
    let digest = sha256(&body);
    for bad in [
        "dc-b",
        "dc-b; at=",
        "dc-b; at=soon",
        "dc-b; at=-5",
        "DC-B; at=1",
        "dc b; at=1",
        "dc-b; at=1; extra=2",
        "dc-b, dc-c; at=1",
    ] {
        let reply = reg
            .send(
                Method::PUT,
                "/v2/p/app/manifests/v1",
                &[("content-type", OCI_MANIFEST), ("wharf-origin", bad)],
                body.clone(),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
        let message = reply.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.starts_with("invalid origin"), "{bad:?}: {message}");
        assert_eq!(
            reply.json()["errors"][0]["detail"]["header"],
            "Wharf-Origin"
        );
    }
    // Given twice: refused as well.
    reg.send(
        Method::PUT,
        "/v2/p/app/manifests/v1",
        &[
            ("content-type", OCI_MANIFEST),
            ("wharf-origin", "dc-b; at=1"),
            ("wharf-origin", "dc-c; at=2"),
        ],
        body.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    // Nothing stored: no repository, no tag, no manifest content.
    reg.get("/v2/p/app/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    reg.get(&format!("/v2/p/app/manifests/{digest}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert!(
        !reg.blob_files().iter().any(|f| f.ends_with(digest.hex())),
        "refused manifest content was stored"
    );

    // A malformed origin on a delete leaves the tag alone.
    push_from(&reg, "p/app", "v1", &body, None).await;
    reg.send(
        Method::DELETE,
        "/v2/p/app/manifests/v1",
        &[("wharf-origin", "dc-b; at=1 ")],
        Bytes::new(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    assert_eq!(tag_origin(&reg, "p/app", "v1").await.0, digest);
    assert!(events.take().is_empty(), "refused requests are no events");

    // The service checks origins built in code, too.
    let bad = Origin {
        instance: "Not Valid".into(),
        at: 1,
    };
    let err = reg
        .registry
        .put_manifest_from(
            &repo("p/app"),
            &reference("v2"),
            Some(OCI_MANIFEST),
            body.clone(),
            Some(&bad),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::OriginInvalid(_)), "{err}");
    let err = reg
        .registry
        .delete_manifest_from(&repo("p/app"), &reference("v1"), Some(&bad))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::OriginInvalid(_)), "{err}");
}

#[tokio::test]
async fn events_carry_origin_conflict_and_tag_moved() {
    let (reg, events) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    let (d1, d2) = (sha256(&one), sha256(&two));
    async fn put(reg: &TestRegistry, body: &Bytes, reference: &str, origin: Option<&str>) {
        let mut headers = vec![("content-type", OCI_MANIFEST)];
        if let Some(origin) = origin {
            headers.push(("wharf-origin", origin));
        }
        reg.send(
            Method::PUT,
            &format!("/v2/p/app/manifests/{reference}"),
            &headers,
            body.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    }

    // A local push: this instance's origin, the tag moved, no conflict.
    let before = now_millis();
    put(&reg, &one, "v1", None).await;
    let event = events.take().pop().unwrap();
    assert_eq!(event.kind, EventKind::Push);
    assert_eq!(event.digest.as_ref(), Some(&d1));
    let local = event.origin.clone().unwrap();
    assert_eq!(local.instance, HERE);
    assert!(local.at >= before);
    assert_eq!(tag_origin(&reg, "p/app", "v1").await.1, local);
    assert!(event.tag_moved);
    assert_eq!(event.conflict, None);

    // A replicated push that loses: still a push event, with the conflict.
    put(&reg, &two, "v1", Some("dc-a; at=1000")).await;
    let event = events.take().pop().unwrap();
    assert_eq!(event.kind, EventKind::Push);
    assert_eq!(event.digest.as_ref(), Some(&d2));
    assert_eq!(event.origin, Some(origin("dc-a", 1000)));
    assert!(!event.tag_moved);
    let conflict = event.conflict.unwrap();
    assert_eq!(
        conflict,
        format!(
            "tag p/app:v1 kept {d1} (origin {HERE} at {}); incoming {d2} from dc-a at 1000 lost",
            local.at
        )
    );

    // One that wins moves the tag and says so.
    let later = local.at + 10;
    put(&reg, &two, "v1", Some(&format!("dc-a; at={later}"))).await;
    let event = events.take().pop().unwrap();
    assert!(event.tag_moved);
    assert_eq!(event.origin, Some(origin("dc-a", later)));
    assert_eq!(
        event.conflict.unwrap(),
        format!(
            "tag p/app:v1 replaced {d1} (origin {HERE} at {}); incoming {d2} from dc-a at {later} won",
            local.at
        )
    );

    // A replicated push of a new tag or of the same digest is no conflict.
    put(&reg, &two, "v2", Some("dc-a; at=5")).await;
    put(&reg, &two, "v1", Some("dc-b; at=5")).await;
    for event in events.take() {
        assert!(event.tag_moved, "{event:?}");
        assert_eq!(event.conflict, None);
    }

    // By digest: no tag to move.
    put(&reg, &one, d1.as_str(), None).await;
    let event = events.take().pop().unwrap();
    assert!(!event.tag_moved);
    assert_eq!(event.conflict, None);
    assert_eq!(event.origin.unwrap().instance, HERE);

    // A pull has no origin.
    reg.get("/v2/p/app/manifests/v1")
        .await
        .expect(StatusCode::OK);
    let event = events.take().pop().unwrap();
    assert_eq!(event.kind, EventKind::Pull);
    assert_eq!(
        (event.origin, event.conflict, event.tag_moved),
        (None, None, false)
    );

    // A replicated delete that loses: a delete event with the conflict.
    reg.send(
        Method::DELETE,
        "/v2/p/app/manifests/v1",
        &[("wharf-origin", "dc-z; at=7")],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let event = events.take().pop().unwrap();
    assert_eq!(event.kind, EventKind::Delete);
    assert!(!event.tag_moved);
    assert_eq!(event.origin, Some(origin("dc-z", 7)));
    assert_eq!(
        event.conflict.unwrap(),
        format!(
            "tag p/app:v1 kept {d2} (origin dc-a at {later}); incoming delete from dc-z at 7 lost"
        )
    );

    // A local delete: this instance, stamped after the tag's origin.
    reg.delete("/v2/p/app/manifests/v1")
        .await
        .expect(StatusCode::ACCEPTED);
    let event = events.take().pop().unwrap();
    assert_eq!(event.kind, EventKind::Delete);
    assert!(event.tag_moved);
    assert_eq!(event.conflict, None);
    let deleted_by = event.origin.unwrap();
    assert_eq!(deleted_by.instance, HERE);
    assert!(deleted_by.wins_over(&origin("dc-a", later)));

    // A blob delete has no origin.
    let blob = reg.push_blob("p/app", b"loose blob").await;
    reg.delete(&format!("/v2/p/app/blobs/{blob}"))
        .await
        .expect(StatusCode::ACCEPTED);
    let event = events.take().pop().unwrap();
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(
        (event.origin, event.conflict, event.tag_moved),
        (None, None, false)
    );
}

#[tokio::test]
async fn tags_list_with_their_origins() {
    let (reg, _) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    push_from(&reg, "p/app", "a", &one, Some(&origin("dc-b", 10))).await;
    let local = push_from(&reg, "p/app", "b", &two, None).await.origin;
    // Another repository whose name extends this one's is not listed.
    let other = manifest_bytes(&reg, "p/app/sub", "sub").await;
    push_from(&reg, "p/app/sub", "c", &other, None).await;
    // A record written before origins were kept counts as a local write at
    // its last update.
    let legacy = format!(r#"{{"digest":"{}","updated_at":42}}"#, sha256(&one));
    reg.store
        .put("/registry/tags/p/app:old", legacy.into_bytes())
        .await
        .unwrap();

    let listed = reg.registry.tags_with_origin(&repo("p/app")).await.unwrap();
    assert_eq!(
        listed,
        vec![
            (tag("a"), sha256(&one), origin("dc-b", 10)),
            (tag("b"), sha256(&two), local),
            (tag("old"), sha256(&one), origin(HERE, 42)),
        ]
    );
    assert_eq!(
        tag_origin(&reg, "p/app", "old").await,
        (sha256(&one), origin(HERE, 42))
    );
    let reply = reg
        .head("/v2/p/app/manifests/old")
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.header("wharf-origin"), format!("{HERE}; at=42"));
    // A replicated write with an older origin loses against the legacy tag.
    let pushed = push_from(&reg, "p/app", "old", &two, Some(&origin("dc-z", 41))).await;
    assert!(matches!(pushed.tag, TagOutcome::Kept { .. }));
    assert!(
        reg.registry
            .tags_with_origin(&repo("p/none"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicated_pushes_converge_on_the_winner() {
    let (reg, _) = setup();
    let reg = Arc::new(reg);
    let mut bodies = Vec::new();
    // No shared blobs, and every manifest already stored by digest (so no
    // usage to account): only the tag's revision orders these pushes.
    for i in 0..16 {
        let body = manifest_bytes(&reg, "p/app", &format!("layer {i}")).await;
        push_from(&reg, "p/app", sha256(&body).as_str(), &body, None).await;
        bodies.push(body);
    }
    // Every order of arrival must end with the greatest origin's manifest.
    let mut tasks = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let (reg, body) = (reg.clone(), body.clone());
        // Times collide in pairs so that instance ids break ties too.
        let from = origin(&format!("dc-{i}"), 100 + (i as u64 / 2));
        tasks.push(tokio::spawn(async move {
            push_from(&reg, "p/app", "v1", &body, Some(&from)).await
        }));
    }
    let mut moved = 0;
    for task in tasks {
        let pushed = task.await.unwrap();
        if pushed.tag.moved() {
            moved += 1;
        }
    }
    assert!(moved >= 1);
    assert_eq!(
        tag_origin(&reg, "p/app", "v1").await,
        (sha256(&bodies[15]), origin("dc-15", 107))
    );
}

async fn tombstone(reg: &TestRegistry, repo_name: &str, tag_name: &str) -> Option<Origin> {
    reg.registry
        .tombstone_origin(&repo(repo_name), &tag(tag_name))
        .await
        .unwrap()
}

async fn is_tagged(reg: &TestRegistry, repo_name: &str, tag_name: &str) -> bool {
    reg.registry
        .tag_origin(&repo(repo_name), &tag(tag_name))
        .await
        .unwrap()
        .is_some()
}

async fn delete_from(
    reg: &TestRegistry,
    repo_name: &str,
    reference_text: &str,
    from: Option<&Origin>,
) -> DeleteOutcome {
    reg.registry
        .delete_manifest_from(&repo(repo_name), &reference(reference_text), from)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_write_older_than_a_delete_leaves_the_tag_deleted() {
    let (reg, events) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    push_from(&reg, "p/app", "v1", &one, Some(&origin("dc-b", 1_000))).await;

    // A replicated delete newer than the write removes the tag and leaves a
    // tombstone with its origin.
    let deleted_by = origin("dc-a", 2_000);
    assert_eq!(
        delete_from(&reg, "p/app", "v1", Some(&deleted_by)).await,
        DeleteOutcome::Deleted
    );
    assert!(!is_tagged(&reg, "p/app", "v1").await);
    assert_eq!(
        tombstone(&reg, "p/app", "v1").await,
        Some(deleted_by.clone())
    );

    // A write older than the delete (a late copy from the other side) is
    // stored by digest, and the tag stays deleted.
    events.take();
    let reply = reg
        .send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[
                ("content-type", OCI_MANIFEST),
                ("wharf-origin", "dc-b; at=1500"),
            ],
            two.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("wharf-tag"), "kept-deleted");
    let event = events.take().pop().unwrap();
    assert!(!event.tag_moved);
    assert_eq!(
        event.conflict.unwrap(),
        format!(
            "tag p/app:v1 stays deleted (delete from dc-a at 2000); incoming {} from dc-b at 1500 lost",
            sha256(&two)
        )
    );
    assert!(!is_tagged(&reg, "p/app", "v1").await);
    reg.get(&format!("/v2/p/app/manifests/{}", sha256(&two)))
        .await
        .expect(StatusCode::OK);
    // Equal times: the greater instance id wins, as for writes.
    let pushed = push_from(&reg, "p/app", "v1", &one, Some(&origin("dc-0", 2_000))).await;
    assert_eq!(
        pushed.tag,
        TagOutcome::KeptDeleted {
            deleted_origin: deleted_by.clone()
        }
    );
    assert_eq!(tombstone(&reg, "p/app", "v1").await, Some(deleted_by));
}

#[tokio::test]
async fn a_write_newer_than_a_delete_brings_the_tag_back() {
    let (reg, _) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    push_from(&reg, "p/app", "v1", &one, Some(&origin("dc-b", 1_000))).await;
    delete_from(&reg, "p/app", "v1", Some(&origin("dc-a", 2_000))).await;

    // Equal times, greater instance id: the write wins.
    let newer = origin("dc-b", 2_000);
    let pushed = push_from(&reg, "p/app", "v1", &two, Some(&newer)).await;
    assert_eq!(pushed.tag, TagOutcome::Stored);
    assert_eq!(tag_origin(&reg, "p/app", "v1").await, (sha256(&two), newer));
    assert_eq!(tombstone(&reg, "p/app", "v1").await, None, "never both");

    // An older delete arriving now loses against the newer write.
    let outcome = delete_from(&reg, "p/app", "v1", Some(&origin("dc-a", 1_999))).await;
    assert!(matches!(outcome, DeleteOutcome::Kept { .. }), "{outcome:?}");
    assert!(is_tagged(&reg, "p/app", "v1").await);
    assert_eq!(tombstone(&reg, "p/app", "v1").await, None);
}

#[tokio::test]
async fn local_writes_and_deletes_are_stamped_after_what_they_replace() {
    let (reg, _) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    // A peer whose clock runs a minute ahead of this one.
    let ahead = origin("dc-b", now_millis() + 60_000);
    push_from(&reg, "p/app", "v1", &one, Some(&ahead)).await;

    // A local delete beats the write it removes, whatever the clocks say.
    reg.registry
        .delete_manifest(&repo("p/app"), &reference("v1"))
        .await
        .unwrap();
    let deleted_by = tombstone(&reg, "p/app", "v1").await.unwrap();
    assert_eq!(deleted_by.instance, HERE);
    assert!(deleted_by.wins_over(&ahead));

    // A tombstone from a peer ahead of this clock: a local push still wins
    // and replaces it.
    let ahead_delete = origin("dc-b", deleted_by.at + 60_000);
    push_from(&reg, "p/app", "v2", &one, None).await;
    delete_from(&reg, "p/app", "v2", Some(&ahead_delete)).await;
    let pushed = push_from(&reg, "p/app", "v2", &two, None).await;
    assert_eq!(pushed.tag, TagOutcome::Stored);
    assert!(pushed.origin.wins_over(&ahead_delete));
    assert_eq!(tag_origin(&reg, "p/app", "v2").await.1, pushed.origin);
    assert_eq!(tombstone(&reg, "p/app", "v2").await, None);

    // A local delete of a tag that is not there is an error and records nothing.
    let err = reg
        .registry
        .delete_manifest(&repo("p/app"), &reference("never"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::ManifestUnknown(_)), "{err}");
    assert_eq!(tombstone(&reg, "p/app", "never").await, None);
}

#[tokio::test]
async fn a_replicated_delete_of_a_missing_tag_is_remembered() {
    let (reg, _) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    push_from(&reg, "p/app", "other", &one, None).await;

    // The peer deleted a tag this registry never got: 202, Wharf-Tag: absent,
    // and the delete is remembered.
    let reply = reg
        .send(
            Method::DELETE,
            "/v2/p/app/manifests/v1",
            &[("wharf-origin", "dc-a; at=2000")],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reply.header("wharf-tag"), "absent");
    assert_eq!(
        tombstone(&reg, "p/app", "v1").await,
        Some(origin("dc-a", 2_000))
    );
    // So a copy of the older write arriving later stays out.
    let pushed = push_from(&reg, "p/app", "v1", &one, Some(&origin("dc-b", 1_000))).await;
    assert!(matches!(pushed.tag, TagOutcome::KeptDeleted { .. }));

    // An older delete does not replace the newer tombstone; a newer one does.
    assert_eq!(
        delete_from(&reg, "p/app", "v1", Some(&origin("dc-c", 1_500))).await,
        DeleteOutcome::Absent
    );
    assert_eq!(
        tombstone(&reg, "p/app", "v1").await,
        Some(origin("dc-a", 2_000))
    );
    delete_from(&reg, "p/app", "v1", Some(&origin("dc-c", 2_500))).await;
    assert_eq!(
        tombstone(&reg, "p/app", "v1").await,
        Some(origin("dc-c", 2_500))
    );

    // Without an origin, a missing tag is the spec's 404, and nothing is recorded.
    reg.delete("/v2/p/app/manifests/v9")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_eq!(tombstone(&reg, "p/app", "v9").await, None);
    // A malformed or far-future origin changes nothing either.
    reg.send(
        Method::DELETE,
        "/v2/p/app/manifests/v9",
        &[("wharf-origin", "dc-a; at=soon")],
        Bytes::new(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    let pinned = origin("dc-a", now_millis() + 3_600_000);
    assert!(
        reg.registry
            .delete_manifest_from(&repo("p/app"), &reference("v9"), Some(&pinned))
            .await
            .is_err()
    );
    assert_eq!(tombstone(&reg, "p/app", "v9").await, None);
}

#[tokio::test]
async fn deletes_by_digest_leave_tombstones_for_their_tags() {
    let (reg, events) = setup();
    let one = manifest_bytes(&reg, "p/app", "one").await;
    let two = manifest_bytes(&reg, "p/app", "two").await;
    let ahead = origin("dc-b", now_millis() + 60_000);
    push_from(&reg, "p/app", "a", &one, Some(&ahead)).await;
    push_from(&reg, "p/app", "b", &one, None).await;
    push_from(&reg, "p/app", "c", &two, None).await;
    events.take();

    reg.delete(&format!("/v2/p/app/manifests/{}", sha256(&one)))
        .await
        .expect(StatusCode::ACCEPTED);
    // The delete's origin: here, after every tag it removed.
    let deleted_by = events.take().pop().unwrap().origin.unwrap();
    assert_eq!(deleted_by.instance, HERE);
    assert!(deleted_by.wins_over(&ahead));
    for removed in ["a", "b"] {
        assert!(!is_tagged(&reg, "p/app", removed).await);
        assert_eq!(
            tombstone(&reg, "p/app", removed).await,
            Some(deleted_by.clone())
        );
    }
    assert!(is_tagged(&reg, "p/app", "c").await);
    assert_eq!(tombstone(&reg, "p/app", "c").await, None);

    // A replicated delete by digest removes whatever tags point there, and
    // their tombstones carry its origin.
    let from_peer = origin("dc-c", 5);
    delete_from(&reg, "p/app", sha256(&two).as_str(), Some(&from_peer)).await;
    assert_eq!(tombstone(&reg, "p/app", "c").await, Some(from_peer));
    let page = reg.registry.tombstones(10, None).await.unwrap();
    let listed: Vec<String> = page.items.iter().map(|t| t.cursor()).collect();
    assert_eq!(listed, ["p/app:a", "p/app:b", "p/app:c"]);
    assert!(!page.more);
}

#[tokio::test]
async fn tombstones_are_pruned_after_their_retention() {
    let (reg, _) = setup_with(RegistryConfig {
        tombstone_retention: std::time::Duration::from_millis(300),
        ..RegistryConfig::default()
    });
    let one = manifest_bytes(&reg, "p/app", "one").await;
    push_from(&reg, "p/app", "v1", &one, Some(&origin("dc-b", 1_000))).await;
    push_from(&reg, "p/app", "v2", &one, Some(&origin("dc-b", 1_000))).await;
    delete_from(&reg, "p/app", "v1", Some(&origin("dc-a", 2_000))).await;
    assert_eq!(
        reg.registry.prune_tombstones().await.unwrap(),
        0,
        "too young"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // A younger one stays.
    delete_from(&reg, "p/app", "v2", Some(&origin("dc-a", 2_000))).await;
    assert_eq!(reg.registry.prune_tombstones().await.unwrap(), 1);
    assert_eq!(tombstone(&reg, "p/app", "v1").await, None);
    assert!(tombstone(&reg, "p/app", "v2").await.is_some());
    // Once pruned, the delete no longer holds an older write off: what
    // the retention bounds.
    let pushed = push_from(&reg, "p/app", "v1", &one, Some(&origin("dc-b", 1_500))).await;
    assert_eq!(pushed.tag, TagOutcome::Stored);
    let pushed = push_from(&reg, "p/app", "v2", &one, Some(&origin("dc-b", 1_500))).await;
    assert!(matches!(pushed.tag, TagOutcome::KeptDeleted { .. }));
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
