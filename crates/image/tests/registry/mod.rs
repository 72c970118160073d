//! Registries to pull from: a real Wharf server in-process (with a
//! request counter in front), and a tiny fake one that serves whatever it
//! is given, wrong content included.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wharf_oci::Digest;

use crate::common::sha256;

pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Requests seen, by path, and a way to stop serving.
pub struct Served {
    pub addr: SocketAddr,
    requests: Arc<Mutex<HashMap<String, usize>>>,
    /// Every request as `METHOD path?query`, in order.
    uris: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Served {
    /// Serves `router`, counting requests; blob GETs are answered only
    /// after `blob_delay` (to make concurrent pulls overlap for certain).
    async fn start(router: Router, blob_delay: Duration) -> Served {
        let requests: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let uris: Arc<Mutex<Vec<String>>> = Arc::default();
        let counter = requests.clone();
        let uri_log = uris.clone();
        let router = router.layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let counter = counter.clone();
                let uri_log = uri_log.clone();
                async move {
                    uri_log
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", request.method(), request.uri()));
                    let key = format!("{} {}", request.method(), request.uri().path());
                    let is_blob_get = key.starts_with("GET ") && key.contains("/blobs/");
                    *counter.lock().unwrap().entry(key).or_default() += 1;
                    if is_blob_get {
                        tokio::time::sleep(blob_delay).await;
                    }
                    next.run(request).await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Served {
            addr,
            requests,
            uris,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `host:port`, as an image reference's registry.
    pub fn registry(&self) -> String {
        self.addr.to_string()
    }

    /// How many requests were `METHOD path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }

    /// How many requests had a path containing `part`.
    pub fn count_containing(&self, part: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, n)| n)
            .sum()
    }

    /// How many requests (`METHOD path?query`) contained every one of `parts`.
    pub fn count_uris_containing(&self, parts: &[&str]) -> usize {
        let uris = self.uris.lock().unwrap();
        uris.iter()
            .filter(|u| parts.iter().all(|p| u.contains(p)))
            .count()
    }

    /// Stops listening and closes open connections.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .unwrap();
        }
    }
}

/// A Wharf server over a temporary directory.
pub struct Wharf {
    pub served: Served,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Wharf {
    pub async fn start() -> Wharf {
        Wharf::with_blob_delay(Duration::ZERO).await
    }

    /// A server whose blob downloads each take at least `blob_delay`.
    pub async fn with_blob_delay(blob_delay: Duration) -> Wharf {
        let dir = tempfile::tempdir().unwrap();
        let mut config = wharf_server::ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
        );
        config.admin_password = Some(ADMIN_PASSWORD.into());
        config.gc_interval = None;
        let app = wharf_server::App::open(&config).await.unwrap();
        Wharf {
            served: Served::start(app.router, blob_delay).await,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.served.addr)
    }

    async fn api(&self, token: &str, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn admin_api_token(&self) -> String {
        let response = self
            .http
            .post(self.url("/api/v1/login"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "login: {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Creates a private project and a robot that may pull from it;
    /// returns the robot's full name and secret.
    pub async fn project_with_puller(&self, project: &str) -> (String, String) {
        let admin = self.admin_api_token().await;
        self.api(
            &admin,
            "/api/v1/projects",
            json!({"name": project, "public": false}),
        )
        .await;
        let robot = self
            .api(
                &admin,
                &format!("/api/v1/projects/{project}/robots"),
                json!({"name": "puller", "actions": "pull"}),
            )
            .await;
        (
            robot["robot"]["name"].as_str().unwrap().to_string(),
            robot["secret"].as_str().unwrap().to_string(),
        )
    }

    /// A push token for `repo`, asked as admin with Basic credentials.
    async fn push_token(&self, repo: &str) -> String {
        let response = self
            .http
            .get(self.url(&format!(
                "/service/token?service=wharf&scope=repository:{repo}:pull,push"
            )))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "token: {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    /// Pushes an image's blobs and manifest under `reference`.
    pub async fn push(&self, repo: &str, image: &Image, reference: &str) {
        let token = self.push_token(repo).await;
        for blob in image.blobs() {
            self.push_blob(&token, repo, blob).await;
        }
        self.push_manifest(&token, repo, reference, OCI_MANIFEST, &image.manifest)
            .await;
    }

    /// Pushes an image whose manifest has media type `media_type` (a
    /// Docker schema 2 manifest, say).
    pub async fn push_as(&self, repo: &str, image: &Image, reference: &str, media_type: &str) {
        let token = self.push_token(repo).await;
        for blob in image.blobs() {
            self.push_blob(&token, repo, blob).await;
        }
        self.push_manifest(&token, repo, reference, media_type, &image.manifest)
            .await;
    }

    /// `GET /v2/<repo>/<kind>/<reference>` as admin: the content type and body.
    pub async fn get(&self, repo: &str, kind: &str, reference: &str) -> (String, Vec<u8>) {
        let token = self.push_token(repo).await;
        let response = self
            .http
            .get(self.url(&format!("/v2/{repo}/{kind}/{reference}")))
            .bearer_auth(token)
            .header(
                header::ACCEPT,
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {repo} {kind} {reference}: {}",
            response.status()
        );
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        (content_type, response.bytes().await.unwrap().to_vec())
    }

    /// The status of `GET /v2/<repo>/<kind>/<reference>` as admin.
    pub async fn status(&self, repo: &str, kind: &str, reference: &str) -> u16 {
        let token = self.push_token(repo).await;
        let response = self
            .http
            .get(self.url(&format!("/v2/{repo}/{kind}/{reference}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    /// Pushes an index over already pushed images.
    pub async fn push_index(&self, repo: &str, index: &[u8], reference: &str) {
        let token = self.push_token(repo).await;
        self.push_manifest(&token, repo, reference, OCI_INDEX, index)
            .await;
    }

    async fn push_blob(&self, token: &str, repo: &str, bytes: &[u8]) {
        let response = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "start upload");
        let location = response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string();
        let response = self
            .http
            .put(self.url(&format!("{location}?digest={}", sha256(bytes))))
            .bearer_auth(token)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "finish upload");
    }

    async fn push_manifest(
        &self,
        token: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) {
        let response = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .bearer_auth(token)
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "push manifest: {}",
            response.text().await.unwrap()
        );
    }
}

/// An image built in memory: layer blobs, config and manifest.
pub struct Image {
    pub layers: Vec<crate::common::Blob>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(layers: Vec<crate::common::Blob>, architecture: &str, cmd: &[&str]) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": architecture,
            "os": "linux",
            "config": {
                "Entrypoint": ["/bin/web"],
                "Cmd": cmd,
                "Env": ["PATH=/bin", "MODE=test"],
                "WorkingDir": "/srv",
                "User": "1000",
                "ExposedPorts": {"8080/tcp": {}},
                "Labels": {"team": "shop"},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let manifest = manifest_for(&config, &layers);
        Image {
            layers,
            config,
            manifest,
        }
    }

    pub fn blobs(&self) -> impl Iterator<Item = &[u8]> {
        self.layers
            .iter()
            .map(|l| l.bytes.as_slice())
            .chain(std::iter::once(self.config.as_slice()))
    }

    pub fn digest(&self) -> Digest {
        sha256(&self.manifest)
    }
}

pub fn manifest_for(config: &[u8], layers: &[crate::common::Blob]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config).to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| &l.descriptor).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// An index of `(architecture, image)` entries.
pub fn index_of(entries: &[(&str, &Image)]) -> Vec<u8> {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(architecture, image)| {
            json!({
                "mediaType": OCI_MANIFEST,
                "digest": image.digest().to_string(),
                "size": image.manifest.len(),
                "platform": {"os": "linux", "architecture": architecture},
            })
        })
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .unwrap()
}

/// A registry that serves fixed content under `/v2/<repo>/manifests/<ref>`
/// and `/v2/<repo>/blobs/<digest>` without checking it, behind a Docker
/// token challenge. Tokens are `t1`, `t2`, ...: manifests accept any, blobs
/// only from `t2` on, answering `t1` with 403 `insufficient_scope` (as a
/// registry does for a token of too narrow a scope).
pub struct FakeRegistry {
    pub served: Served,
}

#[derive(Default)]
struct FakeState {
    content: HashMap<String, (String, Vec<u8>)>,
    tokens: AtomicUsize,
    addr: Mutex<Option<SocketAddr>>,
}

impl FakeRegistry {
    /// Serves `content`: request path → (content type, body).
    pub async fn start(content: HashMap<String, (String, Vec<u8>)>) -> FakeRegistry {
        let state = Arc::new(FakeState {
            content,
            ..FakeState::default()
        });
        let router = Router::new()
            .route("/token", axum::routing::get(fake_token))
            .route("/v2/{*rest}", axum::routing::get(fake_v2))
            .with_state(state.clone());
        let served = Served::start(router, Duration::ZERO).await;
        *state.addr.lock().unwrap() = Some(served.addr);
        FakeRegistry { served }
    }
}

async fn fake_token(State(state): State<Arc<FakeState>>) -> impl IntoResponse {
    let n = state.tokens.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(json!({"token": format!("t{n}"), "expires_in": 300}))
}

async fn fake_v2(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let addr = state.addr.lock().unwrap().expect("address set");
    let challenge = |error: &str| {
        format!(
            r#"Bearer realm="http://{addr}/token",service="fake",scope="repository:shop/web:pull"{error}"#
        )
    };
    match token {
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge(""))],
            )
                .into_response();
        }
        Some("t1") if path.contains("/blobs/") => {
            let value = challenge(r#",error="insufficient_scope""#);
            return (StatusCode::FORBIDDEN, [(header::WWW_AUTHENTICATE, value)]).into_response();
        }
        Some(_) => {}
    }
    match state.content.get(&path) {
        Some((content_type, body)) => Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.clone()))
            .unwrap(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
