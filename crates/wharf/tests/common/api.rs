//! The `/api/v1/` administration API, logged in as one user: users,
//! projects, members, robots, settings and the audit log, and the cluster
//! objects a scheduling check needs. Every helper panics with the server's
//! answer when the call does not succeed.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::registry::{Credentials, plain_http_client};

/// A logged-in API session.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Who is logged in.
    pub credentials: Credentials,
}

impl ApiClient {
    /// `POST /api/v1/login` at `base` (`http://HOST:PORT`); the status and
    /// body of the refusal if it fails.
    pub async fn login(
        base: &str,
        credentials: &Credentials,
    ) -> Result<ApiClient, (StatusCode, Value)> {
        let http = plain_http_client();
        let response = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({ "username": credentials.user, "password": credentials.password }))
            .send()
            .await
            .expect("POST /api/v1/login");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::OK {
            return Err((status, body));
        }
        let token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login answer without access_token: {body}"))
            .to_string();
        Ok(ApiClient {
            http,
            base: base.to_string(),
            token,
            credentials: credentials.clone(),
        })
    }

    /// The session's access token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Any API call: status and JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// A call that must answer `expected`; its body.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: StatusCode,
    ) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert_eq!(
            status, expected,
            "{method} {path} as {}: {value}",
            self.credentials.user
        );
        value
    }

    /// Registers node `name` (2 CPUs, 4 GiB, 10 pods) with a heartbeat
    /// valid for a minute.
    pub async fn add_node(&self, name: &str) {
        let node = json!({"metadata": {"name": name}, "status": {"capacity": {"cpuMillis": 2000, "memoryBytes": 4u64 << 30, "pods": 10}}});
        self.expect(Method::POST, "/api/v1/nodes", Some(node), StatusCode::OK)
            .await;
        self.expect(
            Method::PUT,
            &format!("/api/v1/nodes/{name}/heartbeat"),
            Some(json!({"ttlSeconds": 60})),
            StatusCode::OK,
        )
        .await;
    }

    /// Creates project `project` and node `node`, then schedules the
    /// one-pod deployment `first` there: the controllers lead.
    pub async fn start_cluster(&self, project: &str, node: &str) {
        self.create_project(project, false, None).await;
        self.add_node(node).await;
        self.schedule(project, "first", 1, Duration::from_secs(30))
            .await;
    }

    /// Applies a deployment ([`ApiClient::apply_deployment`]) and waits
    /// until its pods are bound ([`ApiClient::wait_bound`]); how long that
    /// took.
    pub async fn schedule(
        &self,
        project: &str,
        name: &str,
        replicas: u32,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        self.apply_deployment(project, name, replicas).await;
        self.wait_bound(project, name, replicas as usize, within)
            .await;
        started.elapsed()
    }

    /// Applies Deployment `name` in project `project`: `replicas` pods of
    /// `shop/app:v1` (never pulled unless an agent runs them).
    pub async fn apply_deployment(&self, project: &str, name: &str, replicas: u32) {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": project},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "shop/app:v1"}]}}},
        });
        // JSON is YAML: apply takes it as it is.
        self.expect(
            Method::POST,
            "/api/v1/apply",
            Some(deployment),
            StatusCode::OK,
        )
        .await;
    }

    /// Waits until deployment `project/name` has `replicas` pods, all bound
    /// to a node (the controllers and the scheduler ran); how long it took.
    pub async fn wait_bound(
        &self,
        project: &str,
        name: &str,
        replicas: usize,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        let path = format!("/api/v1/projects/{project}/pods?labelSelector=app%3D{name}");
        loop {
            let pods = self.expect(Method::GET, &path, None, StatusCode::OK).await;
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            if items.len() == replicas && items.iter().all(|p| p["spec"]["nodeName"].is_string()) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "pods of {project}/{name} not bound within {within:?}: {pods}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a user; returns their credentials.
    pub async fn create_user(&self, name: &str, password: &str) -> Credentials {
        self.expect(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "name": name, "password": password, "admin": false })),
            StatusCode::CREATED,
        )
        .await;
        Credentials::new(name, password)
    }

    /// Creates a project.
    pub async fn create_project(
        &self,
        name: &str,
        public: bool,
        quota_bytes: Option<u64>,
    ) -> Value {
        self.expect(
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "name": name, "public": public, "quota_bytes": quota_bytes })),
            StatusCode::CREATED,
        )
        .await
    }

    /// `GET /api/v1/projects/{name}` (with `usage_bytes`).
    pub async fn project(&self, name: &str) -> Value {
        self.expect(
            Method::GET,
            &format!("/api/v1/projects/{name}"),
            None,
            StatusCode::OK,
        )
        .await
    }

    /// Gives `user` the `role` in `project`.
    pub async fn set_member(&self, project: &str, user: &str, role: &str) {
        self.expect(
            Method::PUT,
            &format!("/api/v1/projects/{project}/members/{user}"),
            Some(json!({ "role": role })),
            StatusCode::OK,
        )
        .await;
    }

    /// Creates a user and makes them `role` in `project`.
    pub async fn create_member(&self, project: &str, name: &str, role: &str) -> Credentials {
        let credentials = self
            .create_user(name, &format!("{name}-pw-{}", random_suffix()))
            .await;
        self.set_member(project, name, role).await;
        credentials
    }

    /// Creates robot `name` in `project` allowed `actions` (e.g. `"pull"`);
    /// returns its full name and secret.
    pub async fn create_robot(&self, project: &str, name: &str, actions: &str) -> Credentials {
        let body = self
            .expect(
                Method::POST,
                &format!("/api/v1/projects/{project}/robots"),
                Some(json!({ "name": name, "actions": actions, "expires_in_secs": 3600 })),
                StatusCode::CREATED,
            )
            .await;
        let full = body["robot"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("robot answer without robot.name: {body}"));
        let secret = body["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("robot answer without secret: {body}"));
        Credentials::new(full, secret)
    }

    /// Deletes robot `name` of `project`.
    pub async fn delete_robot(&self, project: &str, name: &str) {
        self.expect(
            Method::DELETE,
            &format!("/api/v1/projects/{project}/robots/{name}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    }

    /// Disables or enables a user.
    pub async fn set_disabled(&self, user: &str, disabled: bool) -> Value {
        self.expect(
            Method::PUT,
            &format!("/api/v1/users/{user}/disabled"),
            Some(json!({ "disabled": disabled })),
            StatusCode::OK,
        )
        .await
    }

    /// Allows or forbids anonymous pulls from public projects.
    pub async fn set_anonymous_pull(&self, allowed: bool) {
        self.expect(
            Method::PUT,
            "/api/v1/settings",
            Some(json!({ "anonymous_pull": allowed })),
            StatusCode::OK,
        )
        .await;
    }

    /// `GET /api/v1/audit?...`: the events matching `query`.
    pub async fn audit(&self, query: &[(&str, &str)]) -> Vec<Value> {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let body = self
            .expect(
                Method::GET,
                &format!("/api/v1/audit?{}", query.join("&")),
                None,
                StatusCode::OK,
            )
            .await;
        body.as_array()
            .unwrap_or_else(|| panic!("audit answer is not a list: {body}"))
            .clone()
    }
}

/// Percent-encodes a query value (robot names hold `$` and `+`).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A few random hex digits, so that passwords differ between runs.
pub fn random_suffix() -> String {
    hex::encode(super::image::random_bytes(6))
}
