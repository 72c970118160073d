//! HTTP client for the server's `/api/v1/`, acting for the stored login.
//!
//! It adds the bearer token, refreshes the access token once when it has
//! expired or is refused, saves the new one, and turns the server's
//! `{"error": {"code", "message"}}` bodies into [`ApiRefusal`]s. Watches
//! come back as [`JsonLines`].

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

/// How long one streamed answer (a watch) may last; the caller resumes it
/// from where it got to when the stream ends.
const STREAM_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

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

    /// The stored login's default project, when the login applies to this
    /// server.
    pub fn default_project(&self) -> Option<&str> {
        self.session.as_ref()?.default_project.as_deref()
    }

    /// Stores `project` as the login's default project.
    pub fn set_default_project(&mut self, project: &str) -> Result<()> {
        let Some(session) = &mut self.session else {
            bail!("not logged in to {}: run wharf login", self.server());
        };
        session.default_project = Some(project.to_string());
        self.credentials.save(session)
    }

    /// `GET /api/v1/<path>`.
    pub async fn get(&mut self, path: &[&str]) -> Result<Value> {
        self.call(Method::GET, path, &[], Payload::Empty).await
    }

    /// `GET /api/v1/<path>?<query>`.
    pub async fn get_with_query(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value> {
        self.call(Method::GET, path, query, Payload::Empty).await
    }

    /// `POST /api/v1/<path>` with a JSON body.
    pub async fn post(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::POST, path, &[], Payload::Json(body))
            .await
    }

    /// `POST /api/v1/<path>?<query>` with a text body of `content_type`
    /// (a YAML manifest for `apply`).
    pub async fn post_text(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
        content_type: &'static str,
        text: &str,
    ) -> Result<Value> {
        let body = Payload::Text { content_type, text };
        self.call(Method::POST, path, query, body).await
    }

    /// `GET /api/v1/<path>?<query>` answered with newline-delimited JSON
    /// (`watch=true`), read as it arrives.
    pub async fn get_lines(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<JsonLines> {
        Ok(JsonLines {
            response: self.get_stream(path, query).await?,
            buffer: Vec::new(),
            ended: false,
        })
    }

    /// `POST /api/v1/<path>` with a JSON body, answered with
    /// newline-delimited JSON (a commit's progress), read as it arrives.
    pub async fn post_lines(&mut self, path: &[&str], body: &Value) -> Result<JsonLines> {
        let request = Request {
            method: Method::POST,
            path,
            query: &[],
            body: Payload::Json(body),
            timeout: STREAM_TIMEOUT,
        };
        let response = self
            .respond(&request, Unauthorized::RefreshAndRetry)
            .await?;
        if !response.status().is_success() {
            return Err(ApiRefusal::read(response).await.into());
        }
        Ok(JsonLines {
            response,
            buffer: Vec::new(),
            ended: false,
        })
    }

    /// `GET /api/v1/<path>?<query>` answered with a stream of bytes (a
    /// container's log), returned as it arrives.
    pub async fn get_stream(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<reqwest::Response> {
        let request = Request {
            method: Method::GET,
            path,
            query,
            body: Payload::Empty,
            timeout: STREAM_TIMEOUT,
        };
        let response = self
            .respond(&request, Unauthorized::RefreshAndRetry)
            .await?;
        if !response.status().is_success() {
            return Err(ApiRefusal::read(response).await.into());
        }
        Ok(response)
    }

    /// `POST /api/v1/<path>?<query>` upgraded to `protocol` (`exec`,
    /// `port-forward`): the raw connection after `101 Switching Protocols`.
    pub async fn upgrade(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
        protocol: &'static str,
    ) -> Result<reqwest::Upgraded> {
        let request = Request {
            method: Method::POST,
            path,
            query,
            body: Payload::Upgrade(protocol),
            timeout: STREAM_TIMEOUT,
        };
        let response = self
            .respond(&request, Unauthorized::RefreshAndRetry)
            .await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ApiRefusal::read(response).await.into());
        }
        response
            .upgrade()
            .await
            .context("the server did not switch protocols")
    }

    /// `PUT /api/v1/<path>` with a JSON body.
    pub async fn put(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::PUT, path, &[], Payload::Json(body)).await
    }

    /// `PUT /api/v1/<path>` with a body that carries a password of its own.
    ///
    /// A 401 answer may then mean that password was wrong; such a request is
    /// not retried, so a wrong password is not tried twice.
    pub async fn put_with_password(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        let request = Request::new(Method::PUT, path, &[], Payload::Json(body));
        self.call_with(&request, Unauthorized::Report).await
    }

    /// `PATCH /api/v1/<path>` with a JSON body.
    pub async fn patch(&mut self, path: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::PATCH, path, &[], Payload::Json(body))
            .await
    }

    /// `DELETE /api/v1/<path>`.
    pub async fn delete(&mut self, path: &[&str]) -> Result<Value> {
        self.delete_with_query(path, &[]).await
    }

    /// `DELETE /api/v1/<path>?<query>` (a pod's `gracePeriodSeconds`).
    pub async fn delete_with_query(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value> {
        self.call(Method::DELETE, path, query, Payload::Empty).await
    }

    /// `POST /api/v1/login`: stores and returns the new session, with
    /// `default_project` for commands without `-p`.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        default_project: Option<String>,
    ) -> Result<StoredSession> {
        #[derive(Deserialize)]
        struct LoginResponse {
            access_token: String,
            expires_in: u64,
            refresh_token: String,
            user: String,
        }
        let body = json!({ "username": user, "password": password });
        let request = Request::new(Method::POST, &["login"], &[], Payload::Json(&body));
        let response = self.send(&request, None).await?;
        let answer: LoginResponse = serde_json::from_value(decode(response).await?)
            .context("the server's login answer is not what wharf expects")?;
        let session = StoredSession {
            server: self.server().to_string(),
            user: answer.user,
            access_token: answer.access_token,
            refresh_token: answer.refresh_token,
            expires_at: unix_now().saturating_add(answer.expires_in),
            default_project,
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
        body: Payload<'_>,
    ) -> Result<Value> {
        let request = Request::new(method, path, query, body);
        self.call_with(&request, Unauthorized::RefreshAndRetry)
            .await
    }

    async fn call_with(
        &mut self,
        request: &Request<'_>,
        on_unauthorized: Unauthorized,
    ) -> Result<Value> {
        let response = self.respond(request, on_unauthorized).await?;
        decode(response).await
    }

    /// Sends a request with the access token, refreshing it at most once;
    /// a refusal of the login becomes an error, any other answer is returned.
    async fn respond(
        &mut self,
        request: &Request<'_>,
        on_unauthorized: Unauthorized,
    ) -> Result<reqwest::Response> {
        let mut refreshed = false;
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.expires_within(unix_now(), EXPIRY_MARGIN_SECS))
        {
            self.refresh().await?;
            refreshed = true;
        }
        let mut response = self.send_with_token(request).await?;
        if response.status() == StatusCode::UNAUTHORIZED
            && self.session.is_some()
            && !refreshed
            && on_unauthorized == Unauthorized::RefreshAndRetry
        {
            // Tokens also die early: password changes, disabled users, key rotation.
            self.refresh().await?;
            response = self.send_with_token(request).await?;
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            let refusal = ApiRefusal::read(response).await;
            return Err(match self.session {
                None => self.login_needed(&refusal),
                // The token was just refreshed, or the request carries
                // credentials of its own (a current password): the refusal
                // is about the request, and the server's message says why.
                Some(_) => refusal.into(),
            });
        }
        Ok(response)
    }

    async fn send_with_token(&self, request: &Request<'_>) -> Result<reqwest::Response> {
        let token = self.session.as_ref().map(|s| s.access_token.as_str());
        self.send(request, token).await
    }

    /// The access token to send now, refreshed first when it is about to
    /// expire (for long-running clients such as the node agent).
    pub async fn access_token(&mut self) -> Result<String> {
        let expiring = self
            .session
            .as_ref()
            .is_some_and(|s| s.expires_within(unix_now(), EXPIRY_MARGIN_SECS));
        if expiring {
            self.refresh().await?;
        }
        self.session
            .as_ref()
            .map(|s| s.access_token.clone())
            .ok_or_else(|| {
                anyhow!(
                    "not logged in to {}: run wharf login {} -u USER",
                    self.server(),
                    self.server()
                )
            })
    }

    /// A new access token after the server refused the current one.
    pub async fn refreshed_token(&mut self) -> Result<String> {
        self.refresh().await?;
        self.access_token().await
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
        let request = Request::new(Method::POST, &["token"], &[], Payload::Json(&body));
        let response = self.send(&request, None).await?;
        let status = response.status();
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
        ) {
            let refusal = ApiRefusal::read(response).await;
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
    fn login_needed(&self, refusal: &ApiRefusal) -> anyhow::Error {
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

    async fn send(&self, request: &Request<'_>, token: Option<&str>) -> Result<reqwest::Response> {
        let url = api_url(&self.server, request.path, request.query);
        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .timeout(request.timeout);
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        builder = match request.body {
            Payload::Empty => builder,
            Payload::Json(body) => builder.json(body),
            Payload::Text { content_type, text } => builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(text.to_string()),
            Payload::Upgrade(protocol) => builder
                .header(reqwest::header::CONNECTION, "upgrade")
                .header(reqwest::header::UPGRADE, protocol),
        };
        builder.send().await.map_err(|err| {
            anyhow!(
                "cannot reach {}: is the server running? ({})",
                self.server(),
                root_cause(&err)
            )
        })
    }
}

/// One request to the API, as sent (and sent again after a token refresh).
struct Request<'a> {
    method: Method,
    path: &'a [&'a str],
    query: &'a [(&'a str, String)],
    body: Payload<'a>,
    timeout: Duration,
}

impl<'a> Request<'a> {
    /// A request that must be answered within [`REQUEST_TIMEOUT`].
    fn new(
        method: Method,
        path: &'a [&'a str],
        query: &'a [(&'a str, String)],
        body: Payload<'a>,
    ) -> Request<'a> {
        Request {
            method,
            path,
            query,
            body,
            timeout: REQUEST_TIMEOUT,
        }
    }
}

/// The body of a request.
#[derive(Clone, Copy)]
enum Payload<'a> {
    /// None.
    Empty,
    /// JSON.
    Json(&'a Value),
    /// Text of a given media type, sent as is.
    Text {
        content_type: &'static str,
        text: &'a str,
    },
    /// None, with a request to switch to this protocol.
    Upgrade(&'static str),
}

/// A streamed answer of one JSON value per line, such as a watch.
pub struct JsonLines {
    response: reqwest::Response,
    buffer: Vec<u8>,
    ended: bool,
}

impl JsonLines {
    /// The next value; `None` once the stream has ended, or its time ran
    /// out (a watch can then be resumed from the last resource version seen).
    pub async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(line) = take_line(&mut self.buffer, self.ended) {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .context("the server's stream holds a line that is not JSON");
            }
            if self.ended {
                return Ok(None);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => self.ended = true,
                Err(err) if err.is_timeout() => self.ended = true,
                Err(err) => {
                    return Err(anyhow!("reading the server's stream: {}", root_cause(&err)));
                }
            }
        }
    }
}

/// Removes and returns the first line of `buffer` (without its newline);
/// at the end of the stream, a last line without one.
fn take_line(buffer: &mut Vec<u8>, ended: bool) -> Option<Vec<u8>> {
    match buffer.iter().position(|&b| b == b'\n') {
        Some(at) => {
            let mut line: Vec<u8> = buffer.drain(..=at).collect();
            line.pop();
            Some(line)
        }
        None if ended && !buffer.is_empty() => Some(std::mem::take(buffer)),
        None => None,
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
pub struct ApiRefusal {
    /// HTTP status.
    pub status: StatusCode,
    /// The server's `error.code`, e.g. `DENIED`; empty if the body had none.
    pub code: String,
    /// The server's `error.message`, or the body text.
    pub message: String,
}

impl ApiRefusal {
    /// Reads the error body of `response`.
    async fn read(response: reqwest::Response) -> ApiRefusal {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        ApiRefusal::from_body(status, &text)
    }

    fn from_body(status: StatusCode, body: &str) -> ApiRefusal {
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
            Ok(Envelope { error }) => ApiRefusal {
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
                ApiRefusal {
                    status,
                    code: String::new(),
                    message,
                }
            }
        }
    }
}

impl fmt::Display for ApiRefusal {
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

impl std::error::Error for ApiRefusal {}

/// The JSON body of a successful answer (`null` when empty), or the error.
async fn decode(response: reqwest::Response) -> Result<Value> {
    if !response.status().is_success() {
        return Err(ApiRefusal::read(response).await.into());
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
    fn lines_are_split_at_newlines_and_the_end() {
        let mut buffer = b"{\"a\":1}\n{\"b\"".to_vec();
        assert_eq!(take_line(&mut buffer, false).unwrap(), b"{\"a\":1}");
        assert_eq!(take_line(&mut buffer, false), None, "a partial line waits");
        buffer.extend_from_slice(b":2}");
        assert_eq!(take_line(&mut buffer, true).unwrap(), b"{\"b\":2}");
        assert_eq!(take_line(&mut buffer, true), None);
    }

    #[test]
    fn error_bodies() {
        let err = ApiRefusal::from_body(
            StatusCode::FORBIDDEN,
            r#"{"error":{"code":"DENIED","message":"access denied: system administrators only"}}"#,
        );
        assert_eq!(err.code, "DENIED");
        assert_eq!(err.to_string(), "access denied: system administrators only");
        let err = ApiRefusal::from_body(StatusCode::BAD_GATEWAY, "");
        assert_eq!(
            err.to_string(),
            "the server failed (502 Bad Gateway): bad gateway; its log may say more"
        );
    }
}
