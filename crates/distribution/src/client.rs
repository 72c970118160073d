//! One registry: its base URL, credentials and token cache; requests that
//! answer Docker token (or Basic) challenges on the way.

use std::sync::Arc;

use reqwest::{RequestBuilder, Response, Url};

use crate::auth::{
    Challenge, RegistryCredentials, TokenCache, TokenFailure, TokenKey, needs_new_token,
    request_token,
};

/// Which scope a token is asked for when a challenge calls for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// The challenge's scope, else the request's (as docker asks).
    Challenged,
    /// The request's scope, else the challenge's. The token is cached under
    /// the request's scope and used for everything that scope covers, while
    /// a challenge names only what one request needs (pull, for an upload's
    /// status): asking for that would leave a pull-only token cached for the
    /// pushes that follow.
    Requested,
}

/// Why a request got no answer worth reading.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request failed on the way (refused, timed out, reset).
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL requested.
        url: Url,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The token server gave no token.
    #[error("token server {realm} {failure}")]
    Token {
        /// The token server's URL, as the challenge named it.
        realm: String,
        /// Why.
        failure: TokenFailure,
    },
    /// The registry asks for Basic credentials and there are none.
    #[error("the registry asks for Basic credentials and none were given")]
    BasicWithoutCredentials,
    /// A 401 (or a 403 for an insufficient scope) with no challenge that
    /// parses; the answer, for its status and body.
    #[error("{} without a usable challenge", .0.status())]
    NoChallenge(Box<Response>),
    /// A request whose body could not be sent again met a 401: the cached
    /// token expired during the transfer (and is forgotten).
    #[error("token expired during the transfer")]
    TokenExpired,
    /// A `Location` that is no URL.
    #[error("unusable upload location {0:?}")]
    UnusableLocation(String),
    /// A `Location` on another origin than the registry's.
    #[error("upload location {0:?} leaves the registry")]
    ForeignLocation(String),
}

/// Marks a cached "token" that means: send Basic credentials.
const BASIC: &str = "\u{0}basic";

/// How long the choice of Basic is remembered.
const BASIC_LIFETIME_SECS: u64 = 3600;

/// A client for one registry.
///
/// ```
/// # async fn demo() -> Result<(), wharf_distribution::SendError> {
/// use wharf_distribution::{Client, RegistryCredentials};
/// let url = "http://127.0.0.1:7700".parse().unwrap();
/// let registry = Client::new("local", url, reqwest::Client::new())
///     .with_credentials(Some(RegistryCredentials::new("admin", "secret")));
/// let answer = registry.manifest(reqwest::Method::HEAD, "shop/web", "1.0").await?;
/// println!("{}", answer.status());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    name: String,
    base: Url,
    http: reqwest::Client,
    credentials: Option<RegistryCredentials>,
    tokens: Arc<TokenCache>,
    token_scope: TokenScope,
}

impl Client {
    /// A client for the registry at `base` (`http://host:port`), named
    /// `name` in its token cache keys, anonymous, with its own token cache,
    /// asking tokens for the requests' scopes.
    pub fn new(name: impl Into<String>, base: Url, http: reqwest::Client) -> Client {
        Client {
            name: name.into(),
            base,
            http,
            credentials: None,
            tokens: Arc::default(),
            token_scope: TokenScope::Requested,
        }
    }

    /// Authenticates with `credentials` (Basic to the token server).
    pub fn with_credentials(mut self, credentials: Option<RegistryCredentials>) -> Client {
        self.credentials = credentials;
        self
    }

    /// Shares `tokens` with other clients (keys name the registry).
    pub fn with_tokens(mut self, tokens: Arc<TokenCache>) -> Client {
        self.tokens = tokens;
        self
    }

    /// Asks tokens for the scope `token_scope` says.
    pub fn asking(mut self, token_scope: TokenScope) -> Client {
        self.token_scope = token_scope;
        self
    }

    /// The registry's name in token cache keys.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The HTTP client, for requests outside the distribution API.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The credentials, if any.
    pub fn credentials(&self) -> Option<&RegistryCredentials> {
        self.credentials.as_ref()
    }

    /// `path` on the registry.
    pub fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry paths are valid URL paths")
    }

    /// An upload session's `Location` as an absolute URL on this registry:
    /// a registry must not point our credentials at another host.
    pub fn location(&self, location: &str) -> Result<Url, SendError> {
        let url = self
            .base
            .join(location)
            .map_err(|_| SendError::UnusableLocation(location.to_string()))?;
        if url.origin() != self.base.origin() {
            return Err(SendError::ForeignLocation(location.to_string()));
        }
        Ok(url)
    }

    /// Sends a request that can be repeated, answering one challenge: a
    /// cached token (or Basic) first, then at most one fresh token.
    pub async fn send(
        &self,
        scope: &str,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, SendError> {
        let response = self.execute(scope, make(&self.http)).await?;
        if !needs_new_token(&response) {
            return Ok(response);
        }
        self.tokens.forget(&self.token_key(scope));
        self.answer(response, scope).await?;
        self.execute(scope, make(&self.http)).await
    }

    /// Sends a request whose body is a stream (it cannot be repeated): the
    /// token must already be cached; a 401 forgets it.
    pub async fn send_once(
        &self,
        scope: &str,
        request: RequestBuilder,
    ) -> Result<Response, SendError> {
        let response = self.execute(scope, request).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.tokens.forget(&self.token_key(scope));
            return Err(SendError::TokenExpired);
        }
        Ok(response)
    }

    async fn execute(&self, scope: &str, request: RequestBuilder) -> Result<Response, SendError> {
        let request = self.authorize(request, scope);
        let (http, request) = request.build_split();
        let request = request.map_err(|source| SendError::Transport {
            url: self.base.clone(),
            source,
        })?;
        let url = request.url().clone();
        http.execute(request)
            .await
            .map_err(|source| SendError::Transport { url, source })
    }

    /// Tokens are cached per registry, scope and account.
    fn token_key(&self, scope: &str) -> TokenKey {
        let user = self.credentials.as_ref().map(|c| c.username.clone());
        (
            self.name.clone(),
            scope.to_string(),
            user.unwrap_or_default(),
        )
    }

    fn authorize(&self, request: RequestBuilder, scope: &str) -> RequestBuilder {
        match (self.tokens.get(&self.token_key(scope)), &self.credentials) {
            (Some(token), _) if token != BASIC => request.bearer_auth(token),
            (Some(_), Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
            _ => request,
        }
    }

    /// Answers the challenge in `response`: fetches a token (or chooses
    /// Basic) and caches it under the request's scope.
    async fn answer(&self, response: Response, scope: &str) -> Result<(), SendError> {
        let Some(challenge) = Challenge::of(&response) else {
            return Err(SendError::NoChallenge(Box::new(response)));
        };
        let (token, expires_in) = match challenge {
            Challenge::Basic if self.credentials.is_none() => {
                return Err(SendError::BasicWithoutCredentials);
            }
            Challenge::Basic => (BASIC.to_string(), Some(BASIC_LIFETIME_SECS)),
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
                ..
            } => {
                let wanted = match (self.token_scope, asked.as_deref()) {
                    (TokenScope::Challenged, Some(asked)) => asked,
                    (TokenScope::Requested, Some(asked)) if scope.is_empty() => asked,
                    _ => scope,
                };
                request_token(
                    &self.http,
                    &realm,
                    service.as_deref(),
                    wanted,
                    self.credentials.as_ref(),
                )
                .await
                .map_err(|failure| SendError::Token { realm, failure })?
            }
        };
        self.tokens.put(self.token_key(scope), token, expires_in);
        Ok(())
    }
}
