//! A proxy cache project in front of Debian's docker-registry, pulled
//! through with skopeo: the first pull fetches and stores, the cached image
//! is served while docker-registry is stopped, a tag moved upstream shows
//! after the project's TTL, and users cannot push into the cache.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cli::{fails, log_in_as_admin, ok, wharf};
use common::command::checked;
use common::docker_registry::DockerRegistry;
use common::skopeo::Skopeo;
use common::{Image, Layer, OciLayout, TestServer, require_tool};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_oci::Digest;

/// The tag revalidation interval of the test's proxy project.
const TTL: Duration = Duration::from_secs(3);

fn prerequisites() -> bool {
    require_tool("skopeo", "apt-get install skopeo")
        && require_tool("docker-registry", "apt-get install docker-registry")
}

fn cli(home: &Path, args: &[&str]) -> std::process::Output {
    wharf(home).args(args).output().unwrap()
}

/// An image of two random layers, in an OCI layout under `dir` as `v1`.
fn image_in(dir: &Path) -> (Image, OciLayout) {
    let image = Image::new(
        "amd64",
        &[
            Layer::random(&[("app/run", 1 << 20)]),
            Layer::random(&[("app/data", 64 << 10)]),
        ],
    );
    let layout = OciLayout::create(dir);
    layout.add_image(&image, "v1");
    (image, layout)
}

/// `skopeo copy` of the layout's `v1` to docker-registry (no credentials).
async fn push_upstream(upstream: &DockerRegistry, layout: &OciLayout, name: &str) {
    let mut command = tokio::process::Command::new("skopeo");
    command
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg("--dest-no-creds")
        .arg(layout.reference("v1"))
        .arg(format!("docker://{}/{name}", upstream.host()));
    checked(&mut command).await;
}

/// Pulls `name` through Wharf into a fresh layout; the manifest digest and
/// every blob of the image, read back from the layout.
async fn pull_through(skopeo: &Skopeo, name: &str, dir: &Path) -> (Digest, OciLayout) {
    let layout = OciLayout::create(dir);
    skopeo
        .copy(&skopeo.image(name), &layout.reference("pulled"), &[])
        .await;
    let root = layout.resolve("pulled");
    (root.digest, layout)
}

/// What the layout holds matches `image` byte for byte.
fn assert_same_content(layout: &OciLayout, image: &Image) {
    let root = layout.resolve("pulled");
    assert_eq!(root.digest, image.manifest.digest);
    assert_eq!(layout.closure(&root), image.digests());
    for blob in image.blobs() {
        assert_eq!(
            layout.read_blob(&blob.digest),
            blob.bytes,
            "{}",
            blob.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_docker_registry_survive_its_outage_and_follow_a_moved_tag() {
    if !prerequisites() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut upstream = DockerRegistry::on_loopback();
    let server = TestServer::start();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    log_in_as_admin(&home, &server.url());
    ok(cli(
        &home,
        &[
            "replication",
            "endpoint",
            "add",
            "dr",
            "--url",
            &upstream.url(),
            "--kind",
            "registry",
        ],
    ));
    // Bad settings are refused, naming what is wrong.
    let refused = fails(cli(
        &home,
        &["project", "create", "nope", "--proxy-endpoint", "missing"],
    ));
    assert!(
        refused.contains("proxy_cache.endpoint") && refused.contains("missing"),
        "{refused}"
    );
    ok(cli(
        &home,
        &[
            "project",
            "create",
            "proxy",
            "--proxy-endpoint",
            "dr",
            "--proxy-ttl",
            "3s",
        ],
    ));
    let shown: Value =
        serde_json::from_str(&ok(cli(&home, &["project", "show", "proxy", "-o", "json"]))).unwrap();
    assert_eq!(shown["proxy_cache"]["endpoint"], "dr", "{shown}");
    assert_eq!(shown["proxy_cache"]["ttl_secs"], 3, "{shown}");

    // An image upstream, pulled through Wharf: the same bytes.
    let (first, first_layout) = image_in(&work.path().join("first"));
    push_upstream(&upstream, &first_layout, "library/app:1").await;
    let skopeo = Skopeo::new(&server);
    let (digest, pulled) =
        pull_through(&skopeo, "proxy/library/app:1", &work.path().join("p1")).await;
    assert_eq!(digest, first.manifest.digest);
    assert_same_content(&pulled, &first);
    // Stored as ordinary content of the project, and audited.
    let shown: Value =
        serde_json::from_str(&ok(cli(&home, &["project", "show", "proxy", "-o", "json"]))).unwrap();
    let stored: u64 = first.blobs().iter().map(|b| b.size()).sum();
    assert_eq!(shown["usage_bytes"].as_u64(), Some(stored), "{shown}");
    let fetches = audited_fetches(&home, 1 + first.blobs().len()).await;
    assert!(
        fetches
            .iter()
            .any(|e| e["resource"] == "proxy/library/app:1"
                && e["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("endpoint dr")),
        "{fetches:?}"
    );

    // Users cannot push into the cache.
    let push = skopeo
        .try_copy(
            &first_layout.reference("v1"),
            &skopeo.image("proxy/library/app:mine"),
            &[],
        )
        .await;
    let said = String::from_utf8_lossy(&push.stderr);
    assert!(
        !push.status.success() && said.contains("proxy cache"),
        "{said}"
    );
    let refused = fails(cli(&home, &["image", "delete", "proxy/library/app:1"]));
    assert!(refused.contains("proxy cache of endpoint dr"), "{refused}");
    // The image is listed as any other.
    let listed = ok(cli(&home, &["image", "list", "proxy"]));
    assert!(listed.contains("library/app"), "{listed}");
    api_refusals(&server).await;

    // docker-registry down: the cached tag is served (after its TTL, stale,
    // with a log line); uncached content fails naming the upstream.
    upstream.stop();
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    let (digest, pulled) =
        pull_through(&skopeo, "proxy/library/app:1", &work.path().join("p2")).await;
    assert_eq!(digest, first.manifest.digest);
    assert_same_content(&pulled, &first);
    assert!(
        server.log_text().contains("stale"),
        "{}",
        server.log_tail(20)
    );
    let missing = skopeo.try_inspect_raw("proxy/library/other:1").await;
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && said.contains("endpoint dr"),
        "{said}"
    );

    // Up again, with a new image under the same tag: after the TTL the pull
    // through Wharf returns it.
    upstream.restart();
    let (second, second_layout) = image_in(&work.path().join("second"));
    push_upstream(&upstream, &second_layout, "library/app:1").await;
    let started = Instant::now();
    let mut seen = digest;
    while seen != second.manifest.digest {
        assert!(started.elapsed() < TTL * 4, "the pull still returns {seen}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dir = work
            .path()
            .join(format!("p3-{}", started.elapsed().as_millis()));
        (seen, _) = pull_through(&skopeo, "proxy/library/app:1", &dir).await;
    }
    let (_, pulled) = pull_through(&skopeo, "proxy/library/app:1", &work.path().join("p4")).await;
    assert_same_content(&pulled, &second);
    // The first image stays pullable by digest, from the cache only.
    upstream.stop();
    let by_digest = format!("proxy/library/app@{}", first.manifest.digest);
    let (digest, _) = pull_through(&skopeo, &by_digest, &work.path().join("p5")).await;
    assert_eq!(digest, first.manifest.digest);
}

/// Settings refused through the API, each naming what is wrong.
async fn api_refusals(server: &TestServer) {
    let admin = server.admin().await;
    let refused = |status: StatusCode, body: &Value, needle: &str| {
        assert!(body.to_string().contains(needle), "{status} {body}");
    };
    // Set at creation only: neither changed nor removed later.
    for change in [
        json!({"proxy_cache": null}),
        json!({"proxy_cache": {"endpoint": "dr"}}),
    ] {
        let (status, body) = admin
            .call(Method::PATCH, "/api/v1/projects/proxy", Some(change))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        refused(
            status,
            &body,
            "proxy_cache: set only when a project is created",
        );
    }
    let create = |name: &str, ttl: u64| json!({"name": name, "proxy_cache": {"endpoint": "dr", "ttl_secs": ttl}});
    let (status, body) = admin
        .call(Method::POST, "/api/v1/projects", Some(create("zero", 0)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    refused(status, &body, "proxy_cache.ttl_secs");
    // Only administrators lend the endpoint's credentials to a project.
    let user = admin.create_user("carol", "carol-password-1").await;
    let carol = server.api_as(&user).await;
    let (status, body) = carol
        .call(Method::POST, "/api/v1/projects", Some(create("mine", 60)))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    refused(
        status,
        &body,
        "only system administrators create proxy cache projects",
    );
    // The endpoint stays while the cache uses it.
    let (status, body) = admin
        .call(Method::DELETE, "/api/v1/replication/endpoints/dr", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    refused(status, &body, "upstream of proxy cache project(s) proxy");
}

/// The `proxy.fetch` audit events, once at least `count` are recorded.
async fn audited_fetches(home: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Value = serde_json::from_str(&ok(cli(
            home,
            &["audit", "--action", "proxy.fetch", "-o", "json"],
        )))
        .unwrap();
        let events = events.as_array().cloned().unwrap_or_default();
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
