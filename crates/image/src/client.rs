//! The registry side of a pull: the distribution client for one image's
//! repository, and what its answers mean for a pull.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Response, StatusCode, Url};
use wharf_distribution::{
    Client, MAX_MANIFEST_BYTES, SendError, TokenCache, TokenFailure, TokenScope, error_message,
    header_str, read_limited,
};
use wharf_oci::Digest;

use crate::reference::split_port;
use crate::{ImageError, ImageRef, RegistryCredentials};

/// HTTP client, token cache and transport policy shared by all pulls.
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
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
            tokens: Arc::default(),
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
    registry: Client,
    image: ImageRef,
}

impl Session {
    pub(crate) fn new(
        client: &RegistryClient,
        image: &ImageRef,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<Session, ImageError> {
        // Tokens are asked for the scope the registry names, as docker does.
        Session::asking(client, image, credentials, TokenScope::Challenged)
    }

    /// A session that pushes to `image`'s repository: tokens are asked for
    /// each request's scope (pull,push), so that the token cached by
    /// opening an upload serves the streamed upload that follows.
    pub(crate) fn for_push(
        client: &RegistryClient,
        image: &ImageRef,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<Session, ImageError> {
        Session::asking(client, image, credentials, TokenScope::Requested)
    }

    fn asking(
        client: &RegistryClient,
        image: &ImageRef,
        credentials: Option<&RegistryCredentials>,
        token_scope: TokenScope,
    ) -> Result<Session, ImageError> {
        let base = format!(
            "{}://{}/",
            client.scheme(image.registry()),
            image.registry()
        );
        let base = Url::parse(&base).map_err(|e| ImageError::InvalidReference {
            reference: image.to_string(),
            reason: format!("registry {}: {e}", image.registry()),
        })?;
        let registry = Client::new(image.registry(), base, client.http.clone())
            .with_credentials(credentials.cloned())
            .with_tokens(client.tokens.clone())
            .asking(token_scope);
        Ok(Session {
            registry,
            image: image.clone(),
        })
    }

    /// The image this session pulls, for messages.
    pub(crate) fn image(&self) -> String {
        self.image.to_string()
    }

    /// The distribution client, for the calls a commit's push makes.
    pub(crate) fn registry(&self) -> &Client {
        &self.registry
    }

    pub(crate) fn repository(&self) -> &str {
        self.image.repository().as_str()
    }

    /// `GET /v2/<repo>/manifests/<reference>`: the content type and body.
    pub(crate) async fn manifest(
        &self,
        reference: &str,
    ) -> Result<(Option<String>, Bytes), ImageError> {
        let what = format!("manifest {reference}");
        let url = self.registry.manifest_url(self.repository(), reference);
        let response = self
            .registry
            .manifest(Method::GET, self.repository(), reference)
            .await;
        let response = self.success(response, &url, &what).await?;
        let content_type = header_str(&response, "content-type");
        match read_limited(response, MAX_MANIFEST_BYTES).await {
            Ok(Some(body)) => Ok((content_type, body)),
            Ok(None) => Err(ImageError::InvalidManifest {
                image: self.image(),
                reason: format!("{what} is larger than {MAX_MANIFEST_BYTES} bytes"),
            }),
            Err(source) => Err(self.http_error(url.as_str(), source)),
        }
    }

    /// `GET /v2/<repo>/blobs/<digest>`, the response ready to stream.
    pub(crate) async fn blob(&self, digest: &Digest) -> Result<(Response, String), ImageError> {
        let url = self.registry.blob_url(self.repository(), digest);
        let response = self
            .registry
            .blob(Method::GET, self.repository(), digest, 0)
            .await;
        let response = self
            .success(response, &url, &format!("blob {digest}"))
            .await?;
        Ok((response, url.to_string()))
    }

    /// `GET /v2/<repo>/blobs/<digest>` of the bytes `range`, ready to stream.
    pub(crate) async fn blob_range(
        &self,
        digest: &Digest,
        range: std::ops::Range<u64>,
    ) -> Result<(Response, String), ImageError> {
        let url = self.registry.blob_url(self.repository(), digest);
        let response = self
            .registry
            .blob_range(self.repository(), digest, range)
            .await;
        let response = self
            .success(response, &url, &format!("blob {digest}"))
            .await?;
        Ok((response, url.to_string()))
    }

    /// The registry's `host[:port]`.
    pub(crate) fn registry_host(&self) -> &str {
        self.image.registry()
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

    /// A successful answer, or what went wrong as an [`ImageError`].
    pub(crate) async fn success(
        &self,
        sent: Result<Response, SendError>,
        url: &Url,
        what: &str,
    ) -> Result<Response, ImageError> {
        match sent {
            Ok(response) if response.status().is_success() => Ok(response),
            Ok(response) => Err(self.status_error(response, url.as_str(), what).await),
            Err(SendError::NoChallenge(response)) => {
                Err(self.status_error(*response, url.as_str(), what).await)
            }
            Err(error) => Err(self.send_error(error)),
        }
    }

    pub(crate) fn send_error(&self, error: SendError) -> ImageError {
        let unauthorized = |message: String| ImageError::Unauthorized {
            image: self.image(),
            message,
        };
        match error {
            SendError::Transport { url, source } => self.http_error(url.as_str(), source),
            SendError::Token { realm, failure } => self.token_error(&realm, failure),
            SendError::BasicWithoutCredentials => {
                unauthorized("the registry asks for Basic credentials and none were given".into())
            }
            other => unauthorized(other.to_string()),
        }
    }

    fn token_error(&self, realm: &str, failure: TokenFailure) -> ImageError {
        let unauthorized = |message: String| ImageError::Unauthorized {
            image: self.image(),
            message,
        };
        match failure {
            TokenFailure::UnusableRealm => unauthorized(format!("unusable token realm {realm:?}")),
            TokenFailure::Refused(detail) => {
                let who = self
                    .registry
                    .credentials()
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
        }
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
