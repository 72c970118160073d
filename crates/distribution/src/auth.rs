//! Docker token authentication: credentials, `WWW-Authenticate` challenges
//! and the token cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::response::{error_message, read_limited};

/// Largest token response read.
const MAX_TOKEN_BODY: usize = 64 << 10;

/// Basic credentials for a registry's token server, e.g. a robot account
/// `robot$shop+puller` and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The account name.
    pub username: String,
    /// The password or robot secret.
    pub password: String,
}

impl RegistryCredentials {
    /// Credentials for `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> RegistryCredentials {
        RegistryCredentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

// Secrets never reach logs, even through a stray `{:?}`.
impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` for `service` and `scope`.
    Bearer {
        /// The token service's URL.
        realm: String,
        /// The registry's service name.
        service: Option<String>,
        /// The access asked for.
        scope: Option<String>,
        /// Why the token presented was refused (`insufficient_scope`).
        error: Option<String>,
    },
    /// Send Basic credentials with each request.
    Basic,
}

impl Challenge {
    /// Parses one header value: `Scheme key="value",key=value,...`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
            error: get("error"),
        })
    }

    /// The first challenge in `response`'s `WWW-Authenticate` headers that parses.
    pub fn of(response: &reqwest::Response) -> Option<Challenge> {
        Challenge::all(response).next()
    }

    fn all(response: &reqwest::Response) -> impl Iterator<Item = Challenge> + '_ {
        response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
    }

    fn is_insufficient_scope(&self) -> bool {
        matches!(self, Challenge::Bearer { error: Some(e), .. } if e == "insufficient_scope")
    }
}

/// Whether a fresh token may help: a 401, or a 403 whose challenge says the
/// token's scope is insufficient (the token predates a permission, such as
/// a project created since, or was asked for less than this request needs).
pub fn needs_new_token(response: &reqwest::Response) -> bool {
    match response.status() {
        reqwest::StatusCode::UNAUTHORIZED => true,
        reqwest::StatusCode::FORBIDDEN => {
            Challenge::all(response).any(|c| c.is_insufficient_scope())
        }
        _ => false,
    }
}

/// `key=value` pairs separated by commas; values may be quoted, and quoted
/// values may contain commas (`scope="repository:a:pull,push"`) and escapes.
fn parse_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(params);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next()?; // '='
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
            value
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect()
        };
        params.push((key.trim().to_string(), value.trim().to_string()));
    }
}

/// Why a token server gave no token.
#[derive(Debug)]
pub enum TokenFailure {
    /// The realm is not an http(s) URL.
    UnusableRealm,
    /// 401 or 403: the credentials (or anonymous access) were refused; the
    /// server's message.
    Refused(String),
    /// Another error status, and the server's message.
    Status(u16, String),
    /// The answer held no token.
    NoToken(String),
    /// The request failed on the way.
    Transport(reqwest::Error),
}

impl fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFailure::UnusableRealm => write!(f, "is not an http(s) URL"),
            TokenFailure::Refused(detail) => write!(f, "refused the credentials: {detail}"),
            TokenFailure::Status(status, message) => write!(f, "answered {status}: {message}"),
            TokenFailure::NoToken(why) => write!(f, "sent no token: {why}"),
            TokenFailure::Transport(e) => write!(f, "could not be reached: {e}"),
        }
    }
}

/// Asks the token server at `realm` for `scope` (space-separated scopes
/// become one `scope` parameter each), with Basic `credentials` when there
/// are any (anonymously otherwise). Returns the token and its `expires_in`.
pub async fn request_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    credentials: Option<&RegistryCredentials>,
) -> Result<(String, Option<u64>), TokenFailure> {
    let mut url = reqwest::Url::parse(realm)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or(TokenFailure::UnusableRealm)?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        for part in scope.split(' ').filter(|p| !p.is_empty()) {
            query.append_pair("scope", part);
        }
    }
    let mut request = http.get(url);
    if let Some(c) = credentials {
        request = request.basic_auth(&c.username, Some(&c.password));
    }
    let response = request.send().await.map_err(TokenFailure::Transport)?;
    let status = response.status();
    if matches!(
        status,
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
    ) {
        return Err(TokenFailure::Refused(error_message(response).await));
    }
    if !status.is_success() {
        return Err(TokenFailure::Status(
            status.as_u16(),
            error_message(response).await,
        ));
    }
    let body = read_limited(response, MAX_TOKEN_BODY)
        .await
        .map_err(TokenFailure::Transport)?
        .ok_or_else(|| TokenFailure::NoToken("the answer is too large".into()))?;
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|e| TokenFailure::NoToken(e.to_string()))?;
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenFailure::NoToken("no token in the answer".into()))?;
    Ok((token, parsed.expires_in))
}

/// Key of a cached token: registry, the scope it is used for and the
/// account asking, so that different credentials never share a token.
pub type TokenKey = (String, String, String);

/// Bearer tokens by [`TokenKey`], each until shortly before it expires.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

/// Tokens without `expires_in` live 60 seconds (distribution token spec).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Upper bound on the safety margin before expiry.
const MAX_MARGIN: Duration = Duration::from_secs(30);

impl TokenCache {
    /// The token under `key`, unless it is about to expire.
    pub fn get(&self, key: &TokenKey) -> Option<String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(key) {
            Some((token, until)) if Instant::now() < *until => Some(token.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `token` until a tenth of its lifetime (at most 30 s) before it
    /// expires, so that a request never leaves with a token about to lapse.
    pub fn put(&self, key: TokenKey, token: String, expires_in: Option<u64>) {
        let lifetime = expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let margin = (lifetime / 10).min(MAX_MARGIN);
        let until = Instant::now() + lifetime.saturating_sub(margin);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(key, (token, until));
    }

    /// Drops the token under `key` (the registry refused it).
    pub fn forget(&self, key: &TokenKey) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_scope() {
        let header = r#"Bearer realm="http://127.0.0.1:7700/service/token",service="wharf",scope="repository:shop/web:pull,push",error="insufficient_scope""#;
        assert_eq!(
            Challenge::parse(header),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:7700/service/token".into(),
                service: Some("wharf".into()),
                scope: Some("repository:shop/web:pull,push".into()),
                error: Some("insufficient_scope".into()),
            })
        );
    }

    #[test]
    fn parses_unquoted_values_escapes_and_basic() {
        let header = r#"bearer realm=http://r/t, service="a\"b""#;
        let Some(Challenge::Bearer { realm, service, .. }) = Challenge::parse(header) else {
            panic!("not parsed");
        };
        assert_eq!(realm, "http://r/t");
        assert_eq!(service.as_deref(), Some("a\"b"));
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=\"x\""), None);
        assert_eq!(Challenge::parse("Bearer realm=\"unterminated"), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn tokens_expire_before_their_lifetime() {
        let cache = TokenCache::default();
        let key = ("r".to_string(), "a".to_string(), "u".to_string());
        cache.put(key.clone(), "t".into(), Some(100));
        assert_eq!(cache.get(&key).as_deref(), Some("t"));
        cache.put(key.clone(), "t".into(), Some(0));
        assert_eq!(cache.get(&key), None);
        cache.put(key.clone(), "t".into(), None);
        cache.forget(&key);
        assert_eq!(cache.get(&key), None);
    }

    #[test]
    fn debug_hides_the_password() {
        let debug = format!("{:?}", RegistryCredentials::new("robot$p+x", "s3cret"));
        assert!(!debug.contains("s3cret") && debug.contains("robot$p+x"));
    }
}
