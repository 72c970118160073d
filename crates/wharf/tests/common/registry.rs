//! Registry requests with Docker token authentication, done the way real
//! clients do it: send the request; on `401` (or a `403` that carries an
//! `insufficient_scope` challenge, RFC 6750 §3.1) read the `WWW-Authenticate`
//! challenge, get a token from its realm with Basic credentials (or none),
//! and send the request again with `Authorization: Bearer`. Tokens are kept
//! per resource (`repository:NAME`, `registry:catalog`) and reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use serde_json::Value;

use super::image::{Image, sha256};

/// A user name and password (or robot name and secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Login name.
    pub user: String,
    /// Password or robot secret.
    pub password: String,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// `USER:PASSWORD`, as skopeo's `--creds` takes it.
    pub fn colon_pair(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }
}

/// The parameters of a `Bearer` challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    /// Where tokens come from.
    pub realm: String,
    /// The service to name in token requests.
    pub service: String,
    /// The scope the request needs, if the registry said.
    pub scope: Option<String>,
    /// `invalid_token`, `insufficient_scope`, or none.
    pub error: Option<String>,
}

impl Challenge {
    /// The `Bearer` challenge of a response, if it has one.
    pub fn of(headers: &HeaderMap) -> Option<Challenge> {
        let value = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
        let params = value.strip_prefix("Bearer ")?;
        let mut challenge = Challenge::default();
        for (key, value) in parse_params(params) {
            match key.as_str() {
                "realm" => challenge.realm = value,
                "service" => challenge.service = value,
                "scope" => challenge.scope = Some(value),
                "error" => challenge.error = Some(value),
                _ => {}
            }
        }
        (!challenge.realm.is_empty()).then_some(challenge)
    }
}

/// `key="value",key="value"` pairs (values may contain commas).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, remainder)) => (value.to_string(), remainder),
                None => (quoted.to_string(), ""),
            },
            None => match after.split_once(',') {
                Some((value, remainder)) => (value.to_string(), remainder),
                None => (after.to_string(), ""),
            },
        };
        params.push((key, value));
        rest = remainder.trim_start_matches(',').trim();
    }
    params
}

/// What the token endpoint answered.
#[derive(Debug)]
pub struct TokenResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers (`Retry-After` on 429).
    pub headers: HeaderMap,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
}

impl TokenResponse {
    /// The token, or a panic naming what the endpoint said instead.
    pub fn token(&self) -> String {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "token request refused: {}",
            self.body
        );
        self.body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("token response without token: {}", self.body))
            .to_string()
    }
}

/// The resource a registry path acts on, as tokens name it:
/// `repository:NAME`, `registry:catalog`, or `None` for `/v2/` itself.
pub fn resource_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return None;
    }
    if rest.starts_with("_catalog") {
        return Some("registry:catalog".into());
    }
    let end = ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker))
        .max()?;
    Some(format!("repository:{}", &rest[..end]))
}

/// The resource part of a scope: `repository:p/app:pull` → `repository:p/app`.
fn resource_of_scope(scope: &str) -> Option<String> {
    let (resource, _actions) = scope.rsplit_once(':')?;
    Some(resource.to_string())
}

/// What to ask the token server for when challenged with `scope`: the
/// actions named plus `pull` and `push` on repositories, as docker does
/// before a push, so that one token serves a test's mix of reads and writes.
/// The token server grants only what the caller may do.
fn widened(scope: &str) -> String {
    let Some((resource, actions)) = scope.rsplit_once(':') else {
        return scope.to_string();
    };
    if !resource.starts_with("repository:") {
        return scope.to_string();
    }
    let mut all = vec!["pull", "push"];
    for action in actions.split(',') {
        if !all.contains(&action) {
            all.push(action);
        }
    }
    format!("{resource}:{}", all.join(","))
}

struct Inner {
    http: reqwest::Client,
    credentials: Option<Credentials>,
    /// Token per resource (`None` key: the last token of any kind, for `/v2/`).
    tokens: Mutex<HashMap<Option<String>, String>>,
}

/// A registry client acting as one user (or anonymously). Cheap to clone;
/// clones share the token cache.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

impl RegistryClient {
    /// A client logging in with `credentials`, or anonymous with `None`.
    pub fn new(credentials: Option<Credentials>) -> RegistryClient {
        RegistryClient {
            inner: Arc::new(Inner {
                http: plain_http_client(),
                credentials,
                tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whose credentials this client uses.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.inner.credentials.as_ref()
    }

    /// A request to `url`, authenticated on demand when sent.
    pub fn request(&self, method: Method, url: Url) -> RegistryRequest {
        RegistryRequest {
            client: self.clone(),
            builder: self.inner.http.request(method, url),
        }
    }

    /// `GET realm?service=...&scope=...` with this client's credentials.
    pub async fn fetch_token(&self, realm: &str, service: &str, scopes: &[&str]) -> TokenResponse {
        let mut url =
            Url::parse(realm).unwrap_or_else(|e| panic!("bad token realm {realm:?}: {e}"));
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("service", service);
            for scope in scopes {
                query.append_pair("scope", scope);
            }
        }
        let mut request = self.inner.http.get(url);
        if let Some(credentials) = &self.inner.credentials {
            request = request.basic_auth(&credentials.user, Some(&credentials.password));
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("token request to {realm}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        TokenResponse {
            status,
            headers,
            body,
        }
    }

    fn cached(&self, resource: &Option<String>) -> Option<String> {
        let tokens = self.inner.tokens.lock().expect("token cache");
        match resource {
            Some(_) => tokens.get(resource).cloned(),
            // `/v2/` takes any valid token.
            None => tokens.values().next().cloned(),
        }
    }

    fn remember(&self, resource: Option<String>, token: String) {
        self.inner
            .tokens
            .lock()
            .expect("token cache")
            .insert(resource, token);
    }

    /// Answers a challenge: a token for its scope (widened), or `None` when
    /// the token server refuses.
    async fn answer(&self, challenge: &Challenge) -> Option<String> {
        let scope = challenge.scope.as_deref().map(widened);
        let scopes: Vec<&str> = scope.iter().map(String::as_str).collect();
        let response = self
            .fetch_token(&challenge.realm, &challenge.service, &scopes)
            .await;
        if response.status != StatusCode::OK {
            return None;
        }
        response.body["token"].as_str().map(str::to_string)
    }

    /// Pushes `image` as `repo:tag` over the HTTP API (monolithic blob
    /// uploads, then the manifest); returns the status of the first request
    /// that did not succeed, or of the manifest PUT.
    pub async fn push_image(
        &self,
        base: &str,
        repo: &str,
        tag: &str,
        image: &Image,
    ) -> (StatusCode, Value) {
        for blob in image.blobs().into_iter().skip(1) {
            let url = url(
                base,
                &format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest),
            );
            let response = self
                .request(Method::POST, url)
                .header("Content-Type", "application/octet-stream")
                .body(blob.bytes.clone())
                .send()
                .await
                .expect("blob upload");
            if response.status() != StatusCode::CREATED {
                let status = response.status();
                return (status, response.json().await.unwrap_or(Value::Null));
            }
        }
        let url = url(base, &format!("/v2/{repo}/manifests/{tag}"));
        let response = self
            .request(Method::PUT, url)
            .header("Content-Type", image.manifest.media_type.as_str())
            .body(image.manifest.bytes.clone())
            .send()
            .await
            .expect("manifest PUT");
        let status = response.status();
        if status == StatusCode::CREATED {
            let digest = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert_eq!(digest, sha256(&image.manifest.bytes).as_str());
        }
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v2/<repo>/manifests/<reference>`: status and body.
    pub async fn get_manifest(
        &self,
        base: &str,
        repo: &str,
        reference: &str,
    ) -> (StatusCode, Vec<u8>) {
        let response = self
            .request(
                Method::GET,
                url(base, &format!("/v2/{repo}/manifests/{reference}")),
            )
            .header("Accept", ACCEPT_MANIFESTS)
            .send()
            .await
            .expect("manifest GET");
        let status = response.status();
        (status, response.bytes().await.expect("body").to_vec())
    }

    /// `GET /v2/_catalog`: the repositories listed.
    pub async fn catalog(&self, base: &str) -> (StatusCode, Vec<String>) {
        let response = self
            .request(Method::GET, url(base, "/v2/_catalog?n=1000"))
            .send()
            .await
            .expect("catalog GET");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let names = body["repositories"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (status, names)
    }
}

/// Every manifest type the tests push.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// `base` + `path`, parsed.
pub fn url(base: &str, path: &str) -> Url {
    Url::parse(&format!("{base}{path}")).unwrap_or_else(|e| panic!("bad URL {base}{path}: {e}"))
}

/// An HTTP client for loopback: no proxy, short connect timeout.
pub fn plain_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("building the HTTP client")
}

/// A registry request that authenticates itself when challenged.
pub struct RegistryRequest {
    client: RegistryClient,
    builder: reqwest::RequestBuilder,
}

impl RegistryRequest {
    /// Adds a header.
    pub fn header<K, V>(mut self, key: K, value: V) -> RegistryRequest
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.builder = self.builder.header(key, value);
        self
    }

    /// Sets the body. Streaming bodies cannot be sent twice: a request with
    /// one goes out with the token already held for its resource, if any.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> RegistryRequest {
        self.builder = self.builder.body(body);
        self
    }

    /// Sends the request; on a `401`, or a `403` with a `Bearer` challenge
    /// (a token too narrow for this request), gets a token and sends it once
    /// more. A refused token request leaves the first answer.
    pub async fn send(self) -> reqwest::Result<Response> {
        let client = self.client;
        let mut request = self.builder.build()?;
        let resource = resource_of(request.url().path());
        let retry = request.try_clone();
        if let Some(token) = client.cached(&resource) {
            set_bearer(request.headers_mut(), &token);
        }
        let response = client.inner.http.execute(request).await?;
        let challenged = response.status() == StatusCode::UNAUTHORIZED
            || (response.status() == StatusCode::FORBIDDEN
                && response.headers().contains_key(WWW_AUTHENTICATE));
        if !challenged {
            return Ok(response);
        }
        let (Some(mut retry), Some(challenge)) = (retry, Challenge::of(response.headers())) else {
            return Ok(response);
        };
        let Some(token) = client.answer(&challenge).await else {
            return Ok(response);
        };
        let key = challenge
            .scope
            .as_deref()
            .and_then(resource_of_scope)
            .or(resource);
        client.remember(key, token.clone());
        set_bearer(retry.headers_mut(), &token);
        client.inner.http.execute(retry).await
    }
}

fn set_bearer(headers: &mut HeaderMap, token: &str) {
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("token is a header value");
    headers.insert(AUTHORIZATION, value);
}
