//! Preheat end to end without root: a real `wharf server`, an in-process
//! agent with the node's own credential and a real image cache (no
//! containers), and the CLI. An explicit preheat of the node's pool, and a
//! push matching a policy, both end with the image in the node's cache,
//! its progress in `wharf image preheat status` and the node in
//! `wharf image distribution`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::cli::{run_with_stdin, wharf};
use common::registry::Credentials;
use common::server::admin_credentials;
use common::{Image, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_agent::containers::{ImagePuller, ImageStorePuller};
use wharf_agent::{
    Agent, AgentConfig, AgentError, HttpNodeApi, Progress, Runtime, Synced, TokenSource,
};
use wharf_api::{Pod, PodPhase, PodStatus};
use wharf_image::{ImageRef, ImageStore, ImageStoreOptions, RegistryCredentials};

/// The node's API login with its join credential.
struct NodeLogin {
    base: String,
    credentials: Credentials,
}

#[async_trait]
impl TokenSource for NodeLogin {
    async fn token(&self) -> Result<String, AgentError> {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/login", self.base))
            .json(
                &json!({"username": self.credentials.user, "password": self.credentials.password}),
            )
            .send()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?
            .json()
            .await
            .map_err(|e| AgentError::Api(e.to_string()))?;
        answer["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AgentError::Api(format!("login refused: {answer}")))
    }

    async fn refresh(&self) -> Result<String, AgentError> {
        self.token().await
    }
}

/// A node that keeps an image cache and runs no containers: what preheat
/// needs of a runtime, and the cache it reports.
struct CacheOnly {
    puller: ImageStorePuller,
}

#[async_trait]
impl Runtime for CacheOnly {
    async fn sync(&self, pod: &Pod, _progress: Progress<'_>) -> Synced {
        Synced {
            status: PodStatus {
                phase: PodPhase::Pending,
                ..pod.status.clone()
            },
            again_in: None,
        }
    }

    async fn remove(&self, _project: &str, _name: &str, _uid: Option<&str>) {}

    async fn pods(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    async fn cached_layers(&self) -> Option<Vec<wharf_api::CachedLayer>> {
        self.puller.cached_layers().await
    }

    async fn preheat(
        &self,
        image: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, String> {
        self.puller
            .warm(image, progress)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Joins node `name` to `pool`; its credential.
async fn join(
    server: &TestServer,
    admin: &common::api::ApiClient,
    name: &str,
    pool: &str,
) -> Credentials {
    let token = admin
        .expect(
            Method::POST,
            &format!("/api/v1/pools/{pool}/join-tokens"),
            Some(json!({"ttlSeconds": 600})),
            StatusCode::CREATED,
        )
        .await;
    let joined: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/join", server.url()))
        .json(&json!({"token": token["token"], "node": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = joined["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("join refused: {joined}"));
    Credentials::new(&format!("robot$node+{name}"), secret)
}

/// A CLI session of the administrator.
struct Session {
    home: tempfile::TempDir,
}

impl Session {
    fn login(server: &TestServer) -> Session {
        let session = Session {
            home: tempfile::tempdir().unwrap(),
        };
        let admin = admin_credentials();
        session.run(
            &[
                "login",
                &server.url(),
                "-u",
                &admin.user,
                "--password-stdin",
            ],
            &format!("{}\n", admin.password),
        );
        session
    }

    fn run(&self, args: &[&str], stdin: &str) -> String {
        let mut command = wharf(self.home.path());
        command.args(args);
        let output = run_with_stdin(command, stdin);
        assert!(
            output.status.success(),
            "wharf {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&args, "")).unwrap()
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preheats_put_the_image_in_the_nodes_cache_and_report_it() {
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("shop", false, None).await;
    let image = Image::sample();
    let (status, body) = server
        .registry()
        .push_image(&server.url(), "shop/web", "1.0", &image)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let node = join(&server, &admin, "seed-a", "core").await;
    let cache = tempfile::tempdir().unwrap();
    let options = ImageStoreOptions {
        reserve_bytes: 0,
        ..ImageStoreOptions::default()
    };
    let store = Arc::new(ImageStore::open(cache.path(), options).await.unwrap());
    let puller = ImageStorePuller::new(
        store.clone(),
        Some(RegistryCredentials::new(&node.user, &node.password)),
        Some(server.host()),
    );
    let tokens = Arc::new(NodeLogin {
        base: server.url(),
        credentials: node.clone(),
    });
    let api = Arc::new(HttpNodeApi::new(&server.url(), tokens).unwrap());
    let mut config = AgentConfig::new("seed-a");
    config.preheat_interval = Duration::from_millis(300);
    config.metrics_interval = Duration::ZERO;
    config.labels.insert("wharf.io/pool".into(), "core".into());
    let agent = Agent::new(api, Arc::new(CacheOnly { puller }), config);
    let _agent = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(agent.run()));

    let session = Session::login(&server);
    // Wait for the node to be ready: preheats go to ready nodes only.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = admin
            .expect(Method::GET, "/api/v1/nodes", None, StatusCode::OK)
            .await;
        if nodes["items"][0]["status"]["ready"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node is never ready: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An explicit preheat of the pool.
    let started = session.run(&["image", "preheat", "shop/web:1.0", "--pool", "core"], "");
    assert!(started.contains("to pool core (seed-a)"), "{started}");
    let name = started.split_whitespace().nth(1).unwrap().to_string();
    let done = eventually("the preheat to finish", || {
        let shown = session.json(&["image", "preheat", "status", &name, "-p", "shop"]);
        (shown["status"]["phase"] != "Pending" && shown["status"]["phase"] != "Running")
            .then_some(shown)
    })
    .await;
    assert_eq!(done["status"]["phase"], "Succeeded", "{done}");
    let entry = &done["status"]["nodes"][0];
    assert_eq!(entry["node"], "seed-a");
    assert_eq!(entry["state"], "Done");
    assert!(entry["bytes"].as_u64().unwrap() > 3 << 20, "{entry}");
    let reference = ImageRef::parse(&format!(
        "{}/shop/web@{}",
        server.host(),
        image.manifest.digest
    ))
    .unwrap();
    assert!(
        store.cached(&reference).await.is_some(),
        "the image is in the node's cache"
    );
    // The node reported its cache at once: the distribution shows it.
    let distribution = eventually("the node's cache report", || {
        let shown = session.json(&["image", "distribution", "shop/web:1.0"]);
        (shown["nodes"][0]["complete"] == true).then_some(shown)
    })
    .await;
    assert_eq!(distribution["nodes"][0]["node"], "seed-a");
    let table = session.run(&["image", "preheat", "status", "-p", "shop"], "");
    assert!(
        table.contains(&name) && table.contains("Succeeded") && table.contains("1/1"),
        "{table}"
    );

    // A policy: the next matching push warms the seed by itself.
    let created = session.run(
        &[
            "image",
            "preheat",
            "policy",
            "create",
            "releases",
            "-p",
            "shop",
            "--repository",
            "web",
            "--tag",
            "v*",
        ],
        "",
    );
    assert!(created.contains("warm seeds"), "{created}");
    let listed = session.run(&["image", "preheat", "policy", "list", "-p", "shop"], "");
    assert!(
        listed.contains("releases") && listed.contains("v*"),
        "{listed}"
    );
    let second = Image::new("amd64", &[common::Layer::random(&[("srv/page", 4096)])]);
    let (status, body) = server
        .registry()
        .push_image(&server.url(), "shop/web", "v2", &second)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let warmed = eventually("the policy's preheat to finish", || {
        let list = session.json(&["image", "preheat", "status", "-p", "shop"]);
        let items = list.as_array().cloned().unwrap_or_default();
        items
            .into_iter()
            .find(|p| p["spec"]["policy"] == "releases" && p["status"]["phase"] == "Succeeded")
    })
    .await;
    assert_eq!(warmed["spec"]["reference"], "v2");
    assert_eq!(warmed["status"]["nodes"][0]["node"], "seed-a");
    let reference = ImageRef::parse(&format!(
        "{}/shop/web@{}",
        server.host(),
        second.manifest.digest
    ))
    .unwrap();
    assert!(store.cached(&reference).await.is_some());
    session.run(
        &[
            "image", "preheat", "policy", "delete", "releases", "-p", "shop",
        ],
        "",
    );
}
