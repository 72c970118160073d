//! The registry side of a pull: OCI Distribution requests for one
//! repository, answering Docker token (and Basic) challenges on the way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Response, StatusCode, header};
use wharf_oci::Digest;
use wharf_oci::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

use crate::auth::{
    Challenge, TokenCache, TokenFailure, TokenKey, error_message, read_limited, request_token,
};
use crate::reference::split_port;
use crate::{ImageError, ImageRef, RegistryCredentials};

/// Largest manifest accepted (the distribution registry's limit too).
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// HTTP client, token cache and transport policy shared by all pulls.
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    tokens: TokenCache,
    plain_http: Vec<String>,
}

impl RegistryClient {
    pub(crate) fn new(
        plain_http: Vec<String>,
        connect_timeout: Duration,
    ) -> Result<RegistryClient, ImageError> {
        // A stalled transfer must fail rather than hang a pod's pull forever;
        // no total timeout, since layers may be large.
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("wharf-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ImageError::Internal(format!("cannot build the http client: {e}")))?;
        Ok(RegistryClient {
            http,
            tokens: TokenCache::default(),
            plain_http,
        })
    }

    /// Loopback registries and those configured so speak plain HTTP (as
    /// docker treats them); others HTTPS, which needs a TLS-enabled reqwest.
    fn scheme(&self, registry: &str) -> &'static str {
        let (host, _) = split_port(registry);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let listed = self
            .plain_http
            .iter()
            .any(|entry| entry == registry || entry == host);
        if loopback || listed { "http" } else { "https" }
    }
}

/// Requests for one image's repository with one set of credentials.
pub(crate) struct Session {
    client: Arc<RegistryClient>,
    image: ImageRef,
    base: String,
    credentials: Option<RegistryCredentials>,
}

enum Auth {
    Anonymous,
    Bearer(String),
    Basic,
}

impl Session {
    pub(crate) fn new(
        client: Arc<RegistryClient>,
        image: &ImageRef,
        credentials: Option<&RegistryCredentials>,
    ) -> Session {
        let base = format!(
            "{}://{}/v2/{}",
            client.scheme(image.registry()),
            image.registry(),
            image.repository()
        );
        Session {
            client,
            image: image.clone(),
            base,
            credentials: credentials.cloned(),
        }
    }

    /// The image this session pulls, for messages.
    pub(crate) fn image(&self) -> String {
        self.image.to_string()
    }

    /// `GET /v2/<repo>/manifests/<reference>`: the content type and body.
    pub(crate) async fn manifest(
        &self,
        reference: &str,
    ) -> Result<(Option<String>, Bytes), ImageError> {
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let what = format!("manifest {reference}");
        let url = format!("{}/manifests/{reference}", self.base);
        let response = self.get(&url, Some(&accept), &what).await?;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match read_limited(response, MAX_MANIFEST_BYTES).await {
            Ok(Some(body)) => Ok((content_type, body)),
            Ok(None) => Err(ImageError::InvalidManifest {
                image: self.image(),
                reason: format!("{what} is larger than {MAX_MANIFEST_BYTES} bytes"),
            }),
            Err(source) => Err(self.http_error(&url, source)),
        }
    }

    /// `GET /v2/<repo>/blobs/<digest>`, the response ready to stream.
    pub(crate) async fn blob(&self, digest: &Digest) -> Result<(Response, String), ImageError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let response = self.get(&url, None, &format!("blob {digest}")).await?;
        Ok((response, url))
    }

    /// A small blob (the config) read whole, at most `limit` bytes.
    pub(crate) async fn small_blob(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Bytes, ImageError> {
        let (response, url) = self.blob(digest).await?;
        match read_limited(response, limit).await {
            Ok(Some(body)) => Ok(body),
            Ok(None) => Err(ImageError::SizeMismatch {
                what: format!("blob {digest} of {}", self.image),
                expected: limit as u64,
                actual: limit as u64 + 1,
            }),
            Err(source) => Err(self.http_error(&url, source)),
        }
    }

    pub(crate) fn http_error(&self, url: &str, source: reqwest::Error) -> ImageError {
        ImageError::Http {
            image: self.image(),
            url: url.to_string(),
            source: Arc::new(source),
        }
    }

    fn token_key(&self) -> TokenKey {
        let user = self
            .credentials
            .as_ref()
            .map_or(String::new(), |c| c.username.clone());
        (
            self.image.registry().to_string(),
            self.image.repository().to_string(),
            user,
        )
    }

    /// A successful response to `GET url`, authenticating as challenged: a
    /// cached token first, then at most one fresh token (or Basic) retry.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, ImageError> {
        let key = self.token_key();
        let mut auth = self
            .client
            .tokens
            .get(&key)
            .map_or(Auth::Anonymous, Auth::Bearer);
        let mut answered = false;
        loop {
            let response = self.send(url, accept, &auth).await?;
            if response.status().is_success() {
                return Ok(response);
            }
            match challenge_of(&response) {
                Some(challenge) if !answered => {
                    self.client.tokens.forget(&key);
                    auth = self.answer(challenge, &key).await?;
                    answered = true;
                }
                _ => return Err(self.status_error(response, url, what).await),
            }
        }
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: &Auth,
    ) -> Result<Response, ImageError> {
        let mut request = self.client.http.get(url);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        request = match (auth, &self.credentials) {
            (Auth::Bearer(token), _) => request.bearer_auth(token),
            (Auth::Basic, Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
            _ => request,
        };
        request
            .send()
            .await
            .map_err(|source| self.http_error(url, source))
    }

    async fn answer(&self, challenge: Challenge, key: &TokenKey) -> Result<Auth, ImageError> {
        match challenge {
            Challenge::Basic if self.credentials.is_some() => Ok(Auth::Basic),
            Challenge::Basic => Err(ImageError::Unauthorized {
                image: self.image(),
                message: "the registry asks for Basic credentials and none were given".into(),
            }),
            Challenge::Bearer {
                realm,
                service,
                scope,
                ..
            } => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:pull", self.image.repository()));
                let (token, expires_in) = self.token(&realm, service.as_deref(), &scope).await?;
                self.client
                    .tokens
                    .put(key.clone(), token.clone(), expires_in);
                Ok(Auth::Bearer(token))
            }
        }
    }

    /// Asks the token server at `realm` for `scope`, with Basic credentials
    /// when there are any (anonymously otherwise, for public projects).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Option<u64>), ImageError> {
        let unauthorized = |message: String| ImageError::Unauthorized {
            image: self.image(),
            message,
        };
        let failure = match request_token(
            &self.client.http,
            realm,
            service,
            scope,
            self.credentials.as_ref(),
        )
        .await
        {
            Ok(token) => return Ok(token),
            Err(failure) => failure,
        };
        Err(match failure {
            TokenFailure::UnusableRealm => unauthorized(format!("unusable token realm {realm:?}")),
            TokenFailure::Refused(detail) => {
                let who = self
                    .credentials
                    .as_ref()
                    .map_or("anonymous access".to_string(), |c| {
                        format!("the credentials of {}", c.username)
                    });
                unauthorized(format!("token server {realm} refused {who}: {detail}"))
            }
            TokenFailure::Status(status, message) => ImageError::Registry {
                image: self.image(),
                url: realm.to_string(),
                status,
                message,
            },
            TokenFailure::NoToken(why) => {
                unauthorized(format!("token server {realm} sent no token: {why}"))
            }
            TokenFailure::Transport(source) => self.http_error(realm, source),
        })
    }

    async fn status_error(&self, response: Response, url: &str, what: &str) -> ImageError {
        let status = response.status();
        let message = error_message(response).await;
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ImageError::Unauthorized {
                image: self.image(),
                message: format!("{url} answered {status}: {message}"),
            },
            StatusCode::NOT_FOUND => ImageError::NotFound {
                image: self.image(),
                what: what.to_string(),
            },
            _ => ImageError::Registry {
                image: self.image(),
                url: url.to_string(),
                status: status.as_u16(),
                message,
            },
        }
    }
}

/// The challenge to answer: any on a 401; on a 403 only a Bearer challenge
/// saying the token's scope is insufficient (a token for more may help).
fn challenge_of(response: &Response) -> Option<Challenge> {
    let status = response.status();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return None;
    }
    let challenge = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(Challenge::parse)
        .next()?;
    let insufficient_scope =
        matches!(&challenge, Challenge::Bearer { error: Some(e), .. } if e == "insufficient_scope");
    (status == StatusCode::UNAUTHORIZED || insufficient_scope).then_some(challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let client = RegistryClient::new(
            vec!["registry.lan:5000".into(), "10.0.0.7".into()],
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(client.scheme("127.0.0.1:7700"), "http");
        assert_eq!(client.scheme("localhost:1"), "http");
        assert_eq!(client.scheme("[::1]:80"), "http");
        assert_eq!(client.scheme("registry.lan:5000"), "http");
        assert_eq!(client.scheme("10.0.0.7:9000"), "http");
        assert_eq!(client.scheme("registry.lan"), "https");
        assert_eq!(client.scheme("example.com"), "https");
    }
}
