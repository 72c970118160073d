//! An in-process server over a temporary directory, and request helpers.

#![allow(dead_code)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use wharf_server::{App, ServerConfig};
pub use wharf_testkit::http::Reply;

pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub app: App,
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.admin_password = Some(ADMIN_PASSWORD.into());
        config.gc_interval = None;
        adjust(&mut config);
        let app = App::open(&config).await.unwrap();
        TestApp { dir, app }
    }

    pub fn router(&self) -> Router {
        self.app.router.clone()
    }

    /// Opens watch `uri` (`...?watch=true&resourceVersion=N`) as `token`:
    /// its newline-delimited JSON body, which streams until dropped.
    pub async fn watch(&self, token: &str, uri: &str) -> Body {
        use tower::ServiceExt;
        let request = Request::builder()
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let response = self.router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        response.into_body()
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "registry.test");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        wharf_testkit::http::send(
            &self.router(),
            request.body(Body::from(body.into())).unwrap(),
        )
        .await
    }

    /// An API access token for `user`.
    pub async fn api_login(&self, user: &str, password: &str) -> String {
        let reply = self.api_login_reply(user, password).await;
        reply["access_token"].as_str().unwrap().to_string()
    }

    /// The whole answer to an API login (access and refresh token).
    pub async fn api_login_reply(&self, user: &str, password: &str) -> Value {
        self.send(
            Method::POST,
            "/api/v1/login",
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&json!({"username": user, "password": password})).unwrap(),
        )
        .await
        .expect(StatusCode::OK)
        .json()
    }

    pub async fn admin_token(&self) -> String {
        self.api_login("admin", ADMIN_PASSWORD).await
    }

    /// A JSON API call with a bearer token.
    pub async fn api(&self, token: &str, method: Method, uri: &str, body: Value) -> Reply {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        self.send(
            method,
            uri,
            &[
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".into()),
            ],
            bytes,
        )
        .await
    }

    /// `POST /api/v1/apply` of a YAML manifest.
    pub async fn apply_yaml(&self, token: &str, yaml: &str) -> Reply {
        self.send(
            Method::POST,
            "/api/v1/apply",
            &[
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/yaml".into()),
            ],
            yaml.to_string(),
        )
        .await
    }

    pub async fn create_user(&self, admin: &str, name: &str, password: &str) {
        self.api(
            admin,
            Method::POST,
            "/api/v1/users",
            json!({"name": name, "password": password}),
        )
        .await
        .expect(StatusCode::CREATED);
    }

    pub async fn create_project(&self, token: &str, name: &str, public: bool) {
        self.api(
            token,
            Method::POST,
            "/api/v1/projects",
            json!({"name": name, "public": public}),
        )
        .await
        .expect(StatusCode::CREATED);
    }

    /// Creates private project `name` limited to `quota` bytes.
    pub async fn create_project_with_quota(&self, token: &str, name: &str, quota: u64) {
        self.api(
            token,
            Method::POST,
            "/api/v1/projects",
            json!({"name": name, "quota_bytes": quota}),
        )
        .await
        .expect(StatusCode::CREATED);
    }

    pub async fn add_member(&self, token: &str, project: &str, user: &str, role: &str) {
        self.api(
            token,
            Method::PUT,
            &format!("/api/v1/projects/{project}/members/{user}"),
            json!({"role": role}),
        )
        .await
        .expect(StatusCode::OK);
    }

    /// Project `shop` with a guest `gus` and a developer `dev`: their tokens.
    pub async fn shop_with_guest_and_developer(&self, admin: &str) -> (String, String) {
        self.create_project(admin, "shop", false).await;
        for (user, role) in [("gus", "guest"), ("dev", "developer")] {
            self.create_user(admin, user, "a-long-password").await;
            self.add_member(admin, "shop", user, role).await;
        }
        let guest = self.api_login("gus", "a-long-password").await;
        let developer = self.api_login("dev", "a-long-password").await;
        (guest, developer)
    }

    /// A registry token for `scope`, asked with Basic credentials (or none).
    pub async fn registry_token(&self, credentials: Option<(&str, &str)>, scope: &str) -> Reply {
        let mut headers = Vec::new();
        if let Some((user, password)) = credentials {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push(("authorization", format!("Basic {encoded}")));
        }
        self.send(
            Method::GET,
            &format!("/service/token?service=wharf&scope={scope}"),
            &headers,
            Bytes::new(),
        )
        .await
    }

    pub async fn token_for(&self, user: &str, password: &str, scope: &str) -> String {
        let reply = self
            .registry_token(Some((user, password)), scope)
            .await
            .expect(StatusCode::OK);
        reply.json()["token"].as_str().unwrap().to_string()
    }

    /// A registry request with a bearer token.
    pub async fn v2(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        extra: &[(&str, String)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut headers = vec![("authorization", format!("Bearer {token}"))];
        headers.extend(extra.iter().cloned());
        self.send(method, uri, &headers, body).await
    }

    pub async fn flush_audit(&self) {
        self.app.audit.flush().await.unwrap();
    }

    /// Every audit event recorded so far with `action`, oldest first.
    pub async fn audit_events(&self, action: &str) -> Vec<wharf_audit::AuditEvent> {
        self.flush_audit().await;
        let query = wharf_audit::AuditQuery {
            action: Some(action.into()),
            limit: 1000,
            ..Default::default()
        };
        let mut events = self.app.audit.query(&query).await.unwrap();
        events.sort_by_key(|e| e.at_ms);
        events
    }

    /// Creates robot `name` in `project` with `actions`; returns its full
    /// name and secret.
    pub async fn create_robot(
        &self,
        token: &str,
        project: &str,
        name: &str,
        actions: &str,
    ) -> (String, String) {
        let reply = self
            .api(
                token,
                Method::POST,
                &format!("/api/v1/projects/{project}/robots"),
                json!({"name": name, "actions": actions}),
            )
            .await
            .expect(StatusCode::CREATED)
            .json();
        (
            reply["robot"]["name"].as_str().unwrap().to_string(),
            reply["secret"].as_str().unwrap().to_string(),
        )
    }

    /// A form POST to the token endpoint.
    pub async fn token_form(&self, form: &str) -> Reply {
        self.send(
            Method::POST,
            "/service/token",
            &[("content-type", "application/x-www-form-urlencoded".into())],
            form.to_string(),
        )
        .await
    }
}

pub fn sha256(data: &[u8]) -> String {
    wharf_oci::Digest::of(wharf_oci::DigestAlgorithm::Sha256, data).to_string()
}

pub const SHORT: Duration = Duration::from_millis(50);

/// The next `count` events of a watch body, waiting up to 10 s for them.
pub async fn watch_events(body: &mut Body, count: usize) -> Vec<Value> {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while text.lines().count() < count {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("the watch delivered only {text:?}"))
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A real server on a loopback port, with an administrator's API token.
pub struct Serving {
    pub url: String,
    pub token: String,
    /// Send (or drop) to shut the server down.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// Ends when the server has shut down.
    pub running: tokio::task::JoinHandle<Result<(), wharf_server::ServerError>>,
}

/// Starts `config` as a real server and logs in as `admin` with `password`.
pub async fn serve(config: ServerConfig, password: &str) -> Serving {
    let server = wharf_server::Server::bind(config).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let login: Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();
    Serving {
        url,
        token,
        stop,
        running,
    }
}
