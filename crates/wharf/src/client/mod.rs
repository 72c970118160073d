//! HTTP client for the server's `/api/v1/`, acting for the stored login.
//!
//! It adds the bearer token, refreshes the access token once when it has
//! expired or is refused, saves the new one, and turns the server's
//! `{"error": {"code", "message"}}` bodies into [`ApiError`]s.

pub mod config;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use config::{CredentialsFile, StoredSession};

/// Refresh this long before the recorded expiry, so a request does not race it.
const EXPIRY_MARGIN_SECS: u64 = 10;

/// No API call of the CLI should take longer; GC on a large store is the slowest.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// A client for one server, with the login stored for it (if any).
pub struct ApiClient {
    http: reqwest::Client,
    server: Url,
    session: Option<StoredSession>,
    credentials: CredentialsFile,
}

impl ApiClient {
    /// A client for `server_override` (from `--server` or `WHARF_SERVER`) or,
    /// without one, for the server of the stored login.
    ///
    /// The stored tokens are sent only to the server that issued them; another
    /// server is talked to without credentials, and refusals say to log in.
    pub fn for_stored_login(server_override: Option<&str>) -> Result<ApiClient> {
        let credentials = CredentialsFile::locate()?;
        let stored = credentials.load()?;
        let server = match (server_override, &stored) {
            (Some(url), _) => parse_server_url(url)?,
            (None, Some(session)) => parse_server_url(&session.server)?,
            (None, None) => bail!("not logged in: run wharf login URL -u USER"),
        };
        let session = stored.filter(|session| {
            parse_server_url(&session.server).is_ok_and(|stored| stored == server)
        });
        Ok(ApiClient {
            http: http_client()?,
            server,
            session,
            credentials,
        })
    }

    /// A client without credentials, for logging in.
    pub fn anonymous(server: &str) -> Result<ApiClient> {
        Ok(ApiClient {
            http: http_client()?,
            server: parse_server_url(server)?,
            session: None,
            credentials: CredentialsFile::locate()?,
        })
    }

    /// The server URL, without a trailing slash.
    pub fn server(&self) -> &str {
        self.server.as_str().trim_end_matches('/')
    }

    /// The user the stored login is for, when it applies to this server.
    pub fn user(&self) -> Option<&str> {
        self.session.as_ref().map(|session| session.user.as_str())
    }

    /// `GET /api/v1/<path>`.
    pub async fn get(&mut self, path: &[&str]) -> Result<Value> {
        self.call(Method::GET, path, &[], None).await
    }

    /// `GET /api/v1/<path>?<query>`.
    pub async fn get_with_query(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value> {
        self.call(Method::GET, path, query, None).await
    }

    /// `POST /api/v1/<path>` with a JSON body.
    pub async fn post(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    /// `PUT /api/v1/<path>` with a JSON body.
    pub async fn put(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::PUT, path, &[], Some(body)).await
    }

    /// `PUT /api/v1/<path>` with a body that carries a password of its own.
    ///
    /// A 401 answer may then mean that password was wrong; such a request is
    /// not retried, so a wrong password is not tried twice.
    pub async fn put_with_password(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        self.call_with(Method::PUT, path, &[], Some(body), Unauthorized::Report)
            .await
    }

    /// `PATCH /api/v1/<path>` with a JSON body.
    pub async fn patch(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::PATCH, path, &[], Some(body)).await
    }

    /// `DELETE /api/v1/<path>`.
    pub async fn delete(&mut self, path: &[&str]) -> Result<Value> {
        self.call(Method::DELETE, path, &[], None).await
    }

    /// `POST /api/v1/login`: stores and returns the new session.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<StoredSession> {
        #[derive(Deserialize)]
        struct LoginResponse {
            access_token: String,
            expires_in: u64,
            refresh_token: String,
            user: String,
        }
        let body = json!({ "username": user, "password": password });
        let response = self
            .send(Method::POST, &["login"], &[], Some(&body), None)
            .await?;
        let answer: LoginResponse = serde_json::from_value(decode(response).await?)
            .context("the server's login answer is not what wharf expects")?;
        let session = StoredSession {
            server: self.server().to_string(),
            user: answer.user,
            access_token: answer.access_token,
            refresh_token: answer.refresh_token,
            expires_at: unix_now().saturating_add(answer.expires_in),
        };
        self.credentials.save(&session)?;
        self.session = Some(session.clone());
        Ok(session)
    }

    /// Sends a request with the access token, refreshing it at most once.
    async fn call(
        &mut self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        self.call_with(method, path, query, body, Unauthorized::RefreshAndRetry)
            .await
    }

    async fn call_with(
        &mut self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        on_unauthorized: Unauthorized,
    ) -> Result<Value> {
        let mut refreshed = false;
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.expires_within(unix_now(), EXPIRY_MARGIN_SECS))
        {
            self.refresh().await?;
            refreshed = true;
        }
        let mut response = self.send_with_token(&method, path, query, body).await?;
        if response.status() == StatusCode::UNAUTHORIZED
            && self.session.is_some()
            && !refreshed
            && on_unauthorized == Unauthorized::RefreshAndRetry
        {
            // Tokens also die early: password changes, disabled users, key rotation.
            self.refresh().await?;
            response = self.send_with_token(&method, path, query, body).await?;
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            let refusal = ApiError::read(response).await;
            return Err(match self.session {
                None => self.login_needed(&refusal),
                // The token was just refreshed, or the request carries
                // credentials of its own (a current password): the refusal
                // is about the request, and the server's message says why.
                Some(_) => refusal.into(),
            });
        }
        decode(response).await
    }

    async fn send_with_token(
        &self,
        method: &Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let token = self.session.as_ref().map(|s| s.access_token.as_str());
        self.send(method.clone(), path, query, body, token).await
    }

    /// `POST /api/v1/token`: trades the refresh token for a new access token
    /// and stores it.
    async fn refresh(&mut self) -> Result<()> {
        #[derive(Deserialize)]
        struct RefreshResponse {
            access_token: String,
            expires_in: u64,
        }
        let Some(session) = &self.session else {
            return Ok(());
        };
        let body = json!({ "refresh_token": session.refresh_token });
        let response = self
            .send(Method::POST, &["token"], &[], Some(&body), None)
            .await?;
        let status = response.status();
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
        ) {
            let refusal = ApiError::read(response).await;
            return Err(self.login_needed(&refusal));
        }
        let answer: RefreshResponse = serde_json::from_value(decode(response).await?)
            .context("the server's token answer is not what wharf expects")?;
        let mut session = session.clone();
        session.access_token = answer.access_token;
        session.expires_at = unix_now().saturating_add(answer.expires_in);
        self.credentials.save(&session)?;
        self.session = Some(session);
        Ok(())
    }

    /// The error for a refused login: none stored for this server, or expired.
    fn login_needed(&self, refusal: &ApiError) -> anyhow::Error {
        let server = self.server();
        match &self.session {
            None => anyhow!(
                "not logged in to {server}: run wharf login {server} -u USER ({})",
                refusal.message
            ),
            Some(session) => anyhow!(
                "session expired: run wharf login {server} -u {} ({})",
                session.user,
                refusal.message
            ),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<reqwest::Response> {
        let url = api_url(&self.server, path, query);
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|err| {
            anyhow!(
                "cannot reach {}: is the server running? ({})",
                self.server(),
                root_cause(&err)
            )
        })
    }
}

/// What a 401 answer to a request means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unauthorized {
    /// The token was refused: refresh it and send the request again.
    RefreshAndRetry,
    /// It may be about credentials in the request itself: report it.
    Report,
}

/// An error answer from the server.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The server's `error.code`, e.g. `DENIED`; empty if the body had none.
    pub code: String,
    /// The server's `error.message`, or the body text.
    pub message: String,
}

impl ApiError {
    /// Reads the error body of `response`.
    async fn read(response: reqwest::Response) -> ApiError {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        ApiError::from_body(status, &text)
    }

    fn from_body(status: StatusCode, body: &str) -> ApiError {
        #[derive(Deserialize)]
        struct Envelope {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: String,
            message: String,
        }
        match serde_json::from_str::<Envelope>(body) {
            Ok(Envelope { error }) => ApiError {
                status,
                code: error.code,
                message: error.message,
            },
            Err(_) => {
                let text = body.trim();
                let message = if text.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no reason given")
                        .to_lowercase()
                } else {
                    text.chars().take(200).collect()
                };
                ApiError {
                    status,
                    code: String::new(),
                    message,
                }
            }
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            status if status.is_server_error() => write!(
                f,
                "the server failed ({status}): {}; its log may say more",
                self.message
            ),
            StatusCode::NOT_FOUND if self.code.is_empty() => write!(
                f,
                "{}: the server does not know this request; is it an older wharf?",
                self.message
            ),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// The JSON body of a successful answer (`null` when empty), or the error.
async fn decode(response: reqwest::Response) -> Result<Value> {
    if !response.status().is_success() {
        return Err(ApiError::read(response).await.into());
    }
    let body = response
        .bytes()
        .await
        .context("reading the server's answer")?;
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).context("the server's answer is not JSON")
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}

/// Checks and normalizes a server URL: `http://host[:port][/prefix]`.
pub fn parse_server_url(text: &str) -> Result<Url> {
    let hint = "give the server as http://HOST:PORT, e.g. http://127.0.0.1:7700";
    let mut url =
        Url::parse(text.trim()).with_context(|| format!("invalid server URL {text:?}: {hint}"))?;
    match url.scheme() {
        "http" => {}
        // reqwest is built without TLS in this workspace; say so instead of a transport error.
        "https" => bail!("server URL {text:?}: this wharf build speaks plain http only; {hint}"),
        _ => bail!("invalid server URL {text:?}: {hint}"),
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        bail!("invalid server URL {text:?}: {hint}");
    }
    // A path prefix is kept; `api_url` appends to it.
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

/// `<server>/api/v1/<segments...>?<query>`, each segment percent-encoded
/// (robot names contain `$` and `+`).
fn api_url(server: &Url, path: &[&str], query: &[(&str, String)]) -> Url {
    let mut url = server.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .expect("http URLs always have a path");
        segments.pop_if_empty().extend(["api", "v1"]).extend(path);
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (k, v)));
    }
    url
}

/// The innermost cause of `err`: reqwest's own message only says that
/// sending failed, its root cause says why ("Connection refused").
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked_and_normalized() {
        let url = |text| parse_server_url(text).map(|u| u.to_string());
        assert_eq!(
            url("http://127.0.0.1:7700/").unwrap(),
            "http://127.0.0.1:7700/"
        );
        assert_eq!(
            url("http://h/wharf/").unwrap(),
            "http://h/wharf",
            "a path prefix is kept"
        );
        assert!(url("127.0.0.1:7700").is_err());
        assert!(url("ftp://h").is_err());
        let https = format!("{:#}", parse_server_url("https://h").unwrap_err());
        assert!(https.contains("plain http"), "{https}");
    }

    #[test]
    fn api_urls_encode_segments() {
        let server = parse_server_url("http://h:1").unwrap();
        assert_eq!(
            api_url(&server, &["projects", "p", "robots", "robot$p+ci"], &[]).as_str(),
            "http://h:1/api/v1/projects/p/robots/robot$p+ci"
        );
        assert_eq!(
            api_url(&server, &["users", "a/b"], &[]).as_str(),
            "http://h:1/api/v1/users/a%2Fb"
        );
        let prefixed = parse_server_url("http://h/wharf/").unwrap();
        assert_eq!(
            api_url(&prefixed, &["audit"], &[("action", "artifact.*".into())]).as_str(),
            "http://h/wharf/api/v1/audit?action=artifact.*"
        );
    }

    #[test]
    fn error_bodies() {
        let err = ApiError::from_body(
            StatusCode::FORBIDDEN,
            r#"{"error":{"code":"DENIED","message":"access denied: system administrators only"}}"#,
        );
        assert_eq!(err.code, "DENIED");
        assert_eq!(err.to_string(), "access denied: system administrators only");
        let err = ApiError::from_body(StatusCode::BAD_GATEWAY, "");
        assert_eq!(
            err.to_string(),
            "the server failed (502 Bad Gateway): bad gateway; its log may say more"
        );
    }
}
