//! Another registry over the OCI Distribution API, with Docker token (or
//! Basic) authentication: Wharf peers and any other registry. The wire
//! (token auth, endpoints) is `wharf-distribution`'s; this module says what
//! the answers mean for a copy: absent, done, or an error that is worth a
//! retry or not.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use wharf_distribution::{
    Client, MAX_MANIFEST_BYTES, RegistryCredentials, SendError, TokenFailure, content_digest,
    error_message, header_str, location, media_type, next_link, pull_scope, range_end,
    read_limited,
};
use wharf_oci::wire::{INSTANCE_HEADER, ORIGIN_HEADER, TAG_HEADER, delete_outcome, tag_outcome};
use wharf_oci::{Digest, DigestAlgorithm, RepositoryName, Tag};
use wharf_registry::{Origin, Tombstone};

use crate::ReplicationError;
use crate::access::{ByteStream, Manifest, RegistryAccess, TagDelete, TagState, TagWrite};
use crate::model::EndpointKind;

const PAGE: usize = 1000;

/// Timeouts of the HTTP client.
#[derive(Clone, Copy, Debug)]
pub struct RemoteOptions {
    /// To establish a connection.
    pub connect_timeout: Duration,
    /// Between two reads; a cut link fails a copy after this long.
    pub read_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// A registry reached over HTTP.
pub struct RemoteRegistry {
    name: String,
    kind: EndpointKind,
    registry: Client,
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Vec<String>,
}

#[derive(Deserialize)]
struct TombstoneList {
    #[serde(default)]
    tombstones: Vec<ListedTombstone>,
}

/// One entry of `/v2/_tombstones`; the origin in `Wharf-Origin` form.
#[derive(Deserialize)]
struct ListedTombstone {
    repository: String,
    tag: String,
    origin: String,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl RemoteRegistry {
    /// A client for the registry at `url` (`http://host:port`).
    pub fn new(
        name: &str,
        kind: EndpointKind,
        url: &str,
        credentials: Option<RegistryCredentials>,
        options: RemoteOptions,
    ) -> Result<RemoteRegistry, ReplicationError> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ReplicationError::Invalid(format!(
                    "endpoint {name}: url {url:?} is not http(s)://host[:port]"
                ))
            })?;
        if base.scheme() == "https" {
            // reqwest is built without TLS (no certificate store is configured yet).
            return Err(ReplicationError::Invalid(format!(
                "endpoint {name}: https is not supported yet; use http:// (inside the IDC network or behind a TLS-terminating proxy)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("wharf-replication/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ReplicationError::Internal(format!("http client: {e}")))?;
        // Tokens are asked for the scope they are cached and used for
        // (pull,push for a copy), not a challenge's narrower one.
        let registry = Client::new(name, base, http).with_credentials(credentials);
        Ok(RemoteRegistry {
            name: name.to_string(),
            kind,
            registry,
        })
    }

    /// Asks `/v2/` with the endpoint's credentials, whatever its kind: an
    /// error if it does not answer or refuses them; a Wharf's instance id.
    pub async fn ping(&self) -> Result<Option<String>, ReplicationError> {
        let response = self
            .registry
            .ping()
            .await
            .map_err(|e| self.send_error("ping", e))?;
        if !response.status().is_success() {
            return Err(self.failure("ping", response).await);
        }
        Ok(header_str(&response, INSTANCE_HEADER))
    }

    /// A session handle (`Location`) as an absolute URL on this registry.
    fn session_url(&self, session: &str) -> Result<Url, ReplicationError> {
        self.registry
            .location(session)
            .map_err(|e| self.permanent(e.to_string()))
    }

    fn retryable(&self, message: String) -> ReplicationError {
        ReplicationError::Remote {
            endpoint: self.name.clone(),
            message,
            permanent: false,
        }
    }

    fn permanent(&self, message: String) -> ReplicationError {
        ReplicationError::Remote {
            endpoint: self.name.clone(),
            message,
            permanent: true,
        }
    }

    fn transport(&self, what: &str, e: reqwest::Error) -> ReplicationError {
        // The source error chain says why (refused, timed out, reset).
        let mut message = format!("{what}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            message.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        self.retryable(message)
    }

    /// A request that got no answer worth reading, as a replication error.
    fn send_error(&self, what: &str, error: SendError) -> ReplicationError {
        match error {
            SendError::Transport { source, .. } => self.transport(what, source),
            SendError::Token { realm, failure } => self.token_error(&realm, failure),
            SendError::BasicWithoutCredentials => {
                self.permanent("asks for credentials and the endpoint has none".into())
            }
            SendError::NoChallenge(response) => {
                self.permanent(format!("{} without a usable challenge", response.status()))
            }
            SendError::TokenExpired => {
                self.retryable(format!("{what}: token expired during the transfer"))
            }
            location @ (SendError::UnusableLocation(_) | SendError::ForeignLocation(_)) => {
                self.permanent(location.to_string())
            }
        }
    }

    fn token_error(&self, realm: &str, failure: TokenFailure) -> ReplicationError {
        match failure {
            TokenFailure::UnusableRealm => {
                self.permanent(format!("unusable token realm {realm:?}"))
            }
            TokenFailure::Refused(detail) => {
                let who = self
                    .registry
                    .credentials()
                    .map_or("anonymous access".into(), |c| c.username.clone());
                self.permanent(format!("token server refused {who}: {detail}"))
            }
            TokenFailure::Status(status, _) => {
                self.retryable(format!("token server answered {status}"))
            }
            TokenFailure::NoToken(why) => {
                self.permanent(format!("token server sent no token: {why}"))
            }
            TokenFailure::Transport(e) => self.transport("token", e),
        }
    }

    /// Turns an unexpected answer into an error: client errors are
    /// permanent except 408/429, server errors retryable.
    async fn failure(&self, what: &str, response: Response) -> ReplicationError {
        let status = response.status();
        let text = error_message(response).await;
        let message = format!("{what}: {status}: {text}");
        if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            self.permanent(message)
        } else {
            self.retryable(message)
        }
    }

    /// Follows `Link: <...>; rel="next"` pages of a listing.
    async fn paged<T: for<'de> Deserialize<'de>>(
        &self,
        scope: &str,
        first: Url,
        what: &str,
    ) -> Result<Option<Vec<T>>, ReplicationError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let response = self
                .registry
                .send(scope, |http| http.get(url.clone()))
                .await
                .map_err(|e| self.send_error(what, e))?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !response.status().is_success() {
                return Err(self.failure(what, response).await);
            }
            next = next_link(&response).and_then(|link| self.session_url(&link).ok());
            let body = read_limited(response, 16 << 20)
                .await
                .map_err(|e| self.transport(what, e))?
                .ok_or_else(|| self.permanent(format!("{what}: listing too large")))?;
            out.push(
                serde_json::from_slice(&body)
                    .map_err(|e| self.permanent(format!("{what}: {e}")))?,
            );
        }
        Ok(Some(out))
    }

    /// Every page of the listing at `path`; none when it answers 404.
    async fn listing<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        scope: &str,
        what: &str,
    ) -> Result<Vec<T>, ReplicationError> {
        let mut url = self.registry.url(path);
        url.query_pairs_mut().append_pair("n", &PAGE.to_string());
        Ok(self.paged(scope, url, what).await?.unwrap_or_default())
    }

    /// `HEAD` or `GET` of a manifest; `None` when the registry has none.
    async fn manifest_response(
        &self,
        method: Method,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<Option<Response>, ReplicationError> {
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .registry
            .manifest(method, repo.as_str(), reference)
            .await
            .map_err(|e| self.send_error(&what, e))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.failure(&what, response).await);
        }
        Ok(Some(response))
    }

    async fn head_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<Option<TagState>, ReplicationError> {
        let what = format!("manifest {repo}:{reference}");
        let Some(response) = self
            .manifest_response(Method::HEAD, repo, reference)
            .await?
        else {
            return Ok(None);
        };
        let digest = content_digest(&response)
            .ok_or_else(|| self.permanent(format!("{what}: no Docker-Content-Digest")))?;
        let origin =
            header_str(&response, ORIGIN_HEADER).and_then(|o| Origin::parse_header(&o).ok());
        Ok(Some(TagState { digest, origin }))
    }

    /// The origin header to send with a write: only Wharfs keep origins.
    fn origin_header(&self, origin: Option<&Origin>) -> Option<String> {
        origin
            .filter(|_| self.kind == EndpointKind::Wharf)
            .map(Origin::to_header)
    }
}

#[async_trait]
impl RegistryAccess for RemoteRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    async fn instance(&self) -> Result<Option<String>, ReplicationError> {
        if self.kind != EndpointKind::Wharf {
            return Ok(None);
        }
        self.ping().await
    }

    async fn repositories(&self) -> Result<Vec<RepositoryName>, ReplicationError> {
        let pages: Vec<Catalog> = self
            .listing("/v2/_catalog", "registry:catalog:*", "catalog")
            .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.repositories)
            .filter_map(|r| r.parse().ok())
            .collect())
    }

    async fn tag_names(&self, repo: &RepositoryName) -> Result<Vec<Tag>, ReplicationError> {
        let path = format!("/v2/{repo}/tags/list");
        let pages: Vec<TagList> = self
            .listing(
                &path,
                &pull_scope(repo.as_str()),
                &format!("tags of {repo}"),
            )
            .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.tags.unwrap_or_default())
            .filter_map(|t| t.parse().ok())
            .collect())
    }

    async fn tags(&self, repo: &RepositoryName) -> Result<Vec<(Tag, TagState)>, ReplicationError> {
        let tags = self.tag_names(repo).await?;
        // One HEAD per tag, a few at a time.
        let states: Vec<_> = futures_util::stream::iter(tags)
            .map(|tag| async move {
                let state = self.head_manifest(repo, tag.as_str()).await?;
                Ok::<_, ReplicationError>(state.map(|s| (tag, s)))
            })
            .buffered(8)
            .try_collect()
            .await?;
        Ok(states.into_iter().flatten().collect())
    }

    async fn tombstones(&self) -> Result<Vec<Tombstone>, ReplicationError> {
        if self.kind != EndpointKind::Wharf {
            return Ok(Vec::new());
        }
        // A Wharf without tombstones (older) answers 404: nothing deleted to know of.
        let pages: Vec<TombstoneList> = self
            .listing("/v2/_tombstones", "registry:catalog:*", "tombstones")
            .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.tombstones)
            .filter_map(|t| {
                Some(Tombstone {
                    repository: t.repository.parse().ok()?,
                    tag: t.tag.parse().ok()?,
                    origin: Origin::parse_header(&t.origin).ok()?,
                })
            })
            .collect())
    }

    async fn tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<TagState>, ReplicationError> {
        self.head_manifest(repo, tag.as_str()).await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<Option<Manifest>, ReplicationError> {
        let what = format!("manifest {repo}:{reference}");
        let Some(response) = self.manifest_response(Method::GET, repo, reference).await? else {
            return Ok(None);
        };
        let media_type = media_type(&response).unwrap_or_default();
        // The digest asked for, else the one the registry claims; never trusted unchecked.
        let claimed = reference
            .parse::<Digest>()
            .ok()
            .or_else(|| content_digest(&response));
        let bytes = read_limited(response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| self.transport(&what, e))?
            .ok_or_else(|| {
                self.permanent(format!("{what} is larger than {MAX_MANIFEST_BYTES} bytes"))
            })?;
        let digest = match claimed {
            Some(claimed) if Digest::of(claimed.algorithm(), &bytes) != claimed => {
                return Err(self.permanent(format!("{what}: content does not match {claimed}")));
            }
            Some(claimed) => claimed,
            None => Digest::of(DigestAlgorithm::Sha256, &bytes),
        };
        Ok(Some(Manifest {
            digest,
            media_type,
            bytes,
        }))
    }

    async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, ReplicationError> {
        Ok(self.head_manifest(repo, digest.as_str()).await?.is_some())
    }

    async fn blob_size(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, ReplicationError> {
        let what = format!("blob {digest} in {repo}");
        let response = self
            .registry
            .blob(Method::HEAD, repo.as_str(), digest, 0)
            .await
            .map_err(|e| self.send_error(&what, e))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(response.content_length()),
            _ => Err(self.failure(&what, response).await),
        }
    }

    async fn read_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        offset: u64,
    ) -> Result<ByteStream, ReplicationError> {
        let what = format!("blob {digest} in {repo}");
        let response = self
            .registry
            .blob(Method::GET, repo.as_str(), digest, offset)
            .await
            .map_err(|e| self.send_error(&what, e))?;
        let expected = if offset > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if response.status() != expected {
            return Err(self.failure(&what, response).await);
        }
        let name = self.name.clone();
        Ok(response
            .bytes_stream()
            .map_err(move |e| ReplicationError::Remote {
                endpoint: name.clone(),
                message: format!("reading {what}: {e}"),
                permanent: false,
            })
            .boxed())
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, ReplicationError> {
        let what = format!("mount of {digest} into {repo}");
        let response = self
            .registry
            .mount_blob(repo.as_str(), digest, from.as_str())
            .await
            .map_err(|e| self.send_error(&what, e))?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // Not mounted: the registry opened a session we do not need.
                if let Some(location) = location(&response)
                    && let Ok(session) = self.session_url(&location)
                {
                    let _ = self.registry.cancel_upload(repo.as_str(), &session).await;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    async fn start_upload(&self, repo: &RepositoryName) -> Result<String, ReplicationError> {
        let what = format!("upload to {repo}");
        let response = self
            .registry
            .start_upload(repo.as_str())
            .await
            .map_err(|e| self.send_error(&what, e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.failure(&what, response).await);
        }
        location(&response).ok_or_else(|| self.permanent(format!("{what}: no Location")))
    }

    async fn upload_offset(
        &self,
        repo: &RepositoryName,
        session: &str,
    ) -> Result<Option<u64>, ReplicationError> {
        let url = self.session_url(session)?;
        let what = format!("upload status in {repo}");
        let response = self
            .registry
            .upload_status(repo.as_str(), &url)
            .await
            .map_err(|e| self.send_error(&what, e))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(Some(range_end(&response).unwrap_or(0))),
            _ => Err(self.failure(&what, response).await),
        }
    }

    async fn append_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        offset: u64,
        len: u64,
        body: ByteStream,
    ) -> Result<String, ReplicationError> {
        let url = self.session_url(session)?;
        let what = format!("upload of {len} bytes at {offset} to {repo}");
        let response = self
            .registry
            .append_upload(
                repo.as_str(),
                url,
                offset,
                len,
                reqwest::Body::wrap_stream(body),
            )
            .await
            .map_err(|e| self.send_error(&what, e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.failure(&what, response).await);
        }
        location(&response).ok_or_else(|| self.permanent(format!("{what}: no Location")))
    }

    async fn finish_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        digest: &Digest,
    ) -> Result<(), ReplicationError> {
        let url = self.session_url(session)?;
        let what = format!("blob {digest} in {repo}");
        let response = self
            .registry
            .finish_upload(repo.as_str(), &url, digest, None)
            .await
            .map_err(|e| self.send_error(&what, e))?;
        if response.status() != StatusCode::CREATED {
            return Err(self.failure(&what, response).await);
        }
        Ok(())
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
        manifest: &Manifest,
        origin: Option<&Origin>,
    ) -> Result<TagWrite, ReplicationError> {
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .registry
            .put_manifest(
                repo.as_str(),
                reference,
                &manifest.media_type,
                manifest.bytes.clone(),
                self.origin_header(origin),
            )
            .await
            .map_err(|e| self.send_error(&what, e))?;
        if response.status() != StatusCode::CREATED {
            return Err(self.failure(&what, response).await);
        }
        Ok(match header_str(&response, TAG_HEADER).as_deref() {
            Some(tag_outcome::KEPT) => TagWrite::Kept(format!(
                "{} kept its own newer artifact under {repo}:{reference}",
                self.name
            )),
            Some(tag_outcome::KEPT_DELETED) => TagWrite::Kept(format!(
                "{} keeps {repo}:{reference} deleted (its delete is newer)",
                self.name
            )),
            _ => TagWrite::Moved,
        })
    }

    async fn ensure_project(&self, project: &str) -> Result<(), ReplicationError> {
        let Some(credentials) = self
            .registry
            .credentials()
            .filter(|_| self.kind == EndpointKind::Wharf)
        else {
            return Ok(());
        };
        let http = self.registry.http();
        let login = http
            .post(self.registry.url("/api/v1/login"))
            .json(&serde_json::json!({"username": credentials.username, "password": credentials.password}))
            .send()
            .await
            .map_err(|e| self.transport("api login", e))?;
        if !login.status().is_success() {
            // Robots have no API session: the push will say if the project is missing.
            return Ok(());
        }
        let token: serde_json::Value = login
            .json()
            .await
            .map_err(|e| self.transport("api login", e))?;
        let Some(token) = token["access_token"].as_str() else {
            return Ok(());
        };
        let existing = http
            .get(self.registry.url(&format!("/api/v1/projects/{project}")))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| self.transport("project lookup", e))?;
        if existing.status() != StatusCode::NOT_FOUND {
            return Ok(());
        }
        let created = http
            .post(self.registry.url("/api/v1/projects"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": project, "public": false}))
            .send()
            .await
            .map_err(|e| self.transport("project creation", e))?;
        match created.status() {
            s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
            _ => Err(self
                .failure(&format!("creating project {project}"), created)
                .await),
        }
    }

    async fn delete(
        &self,
        repo: &RepositoryName,
        reference: &str,
        origin: Option<&Origin>,
    ) -> Result<TagDelete, ReplicationError> {
        let tag = reference;
        // The distribution registry deletes manifests by digest only (and
        // with them every tag pointing there); Wharf deletes single tags.
        let is_digest = reference.parse::<Digest>().is_ok();
        let reference = match self.kind {
            EndpointKind::Registry if !is_digest => {
                match self.head_manifest(repo, reference).await? {
                    Some(state) => state.digest.to_string(),
                    None => return Ok(TagDelete::Absent),
                }
            }
            _ => reference.to_string(),
        };
        let what = format!("delete of {repo}:{tag}");
        let response = self
            .registry
            .delete_manifest(repo.as_str(), &reference, self.origin_header(origin))
            .await
            .map_err(|e| self.send_error(&what, e))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(TagDelete::Absent),
            StatusCode::ACCEPTED | StatusCode::OK => {
                Ok(match header_str(&response, TAG_HEADER).as_deref() {
                    Some(delete_outcome::KEPT) => {
                        TagDelete::Kept(format!("{} kept its newer {repo}:{tag}", self.name))
                    }
                    Some(delete_outcome::ABSENT) => TagDelete::Absent,
                    _ => TagDelete::Deleted,
                })
            }
            _ => Err(self.failure(&what, response).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        let ok = RemoteRegistry::new(
            "b",
            EndpointKind::Wharf,
            "http://10.0.0.2:7700",
            None,
            RemoteOptions::default(),
        );
        assert!(ok.is_ok());
        for bad in [
            "ftp://x",
            "10.0.0.2:7700",
            "http://",
            "file:///etc",
            "https://r.example",
        ] {
            assert!(
                RemoteRegistry::new(
                    "b",
                    EndpointKind::Wharf,
                    bad,
                    None,
                    RemoteOptions::default()
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn upload_locations_stay_on_the_registry() {
        let remote = RemoteRegistry::new(
            "b",
            EndpointKind::Registry,
            "http://10.0.0.2:5000",
            None,
            RemoteOptions::default(),
        )
        .unwrap();
        assert!(
            remote
                .session_url("/v2/a/blobs/uploads/123?_state=x")
                .is_ok()
        );
        assert!(
            remote
                .session_url("http://10.0.0.2:5000/v2/a/blobs/uploads/1")
                .is_ok()
        );
        assert!(
            remote
                .session_url("http://evil.example/v2/a/blobs/uploads/1")
                .is_err()
        );
        assert!(remote.session_url("//evil.example/x").is_err());
    }
}
