//! The OCI Distribution endpoints, each with the scope it needs. Answers
//! come back as they are: what a status means is the caller's to say.

use bytes::Bytes;
use reqwest::{Method, Response, Url, header};
use wharf_oci::Digest;
use wharf_oci::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use wharf_oci::wire::ORIGIN_HEADER;

use crate::{Client, SendError};

/// Largest manifest accepted (the distribution registry's limit too).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The `Accept` header of manifest requests: OCI and Docker manifests and
/// indexes.
pub fn manifest_accept() -> String {
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .join(", ")
}

/// The scope to read `repo`.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The scope to write `repo` (and read it: uploads are checked by reading).
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Client {
    /// `/v2/<repo>/manifests/<reference>`.
    pub fn manifest_url(&self, repo: &str, reference: &str) -> Url {
        self.url(&format!("/v2/{repo}/manifests/{reference}"))
    }

    /// `/v2/<repo>/blobs/<digest>`.
    pub fn blob_url(&self, repo: &str, digest: &Digest) -> Url {
        self.url(&format!("/v2/{repo}/blobs/{digest}"))
    }

    /// `/v2/` with the registry's credentials: whether it answers and
    /// accepts them. The scope is empty: a token, if needed, is asked for
    /// the challenge's.
    pub async fn ping(&self) -> Result<Response, SendError> {
        let url = self.url("/v2/");
        self.send("", |http| http.get(url.clone())).await
    }

    /// `HEAD` or `GET` of a manifest, accepting every manifest kind.
    pub async fn manifest(
        &self,
        method: Method,
        repo: &str,
        reference: &str,
    ) -> Result<Response, SendError> {
        let url = self.manifest_url(repo, reference);
        self.send(&pull_scope(repo), |http| {
            http.request(method.clone(), url.clone())
                .header(header::ACCEPT, manifest_accept())
        })
        .await
    }

    /// `HEAD` or `GET` of a blob, from byte `offset` on; a `GET` answer's
    /// body is ready to stream.
    pub async fn blob(
        &self,
        method: Method,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Response, SendError> {
        let url = self.blob_url(repo, digest);
        self.send(&pull_scope(repo), |http| {
            let request = http.request(method.clone(), url.clone());
            if offset > 0 {
                request.header(header::RANGE, format!("bytes={offset}-"))
            } else {
                request
            }
        })
        .await
    }

    /// `GET /v2/<repo>/blobs/<digest>` of the bytes `range` only
    /// (`Range: bytes=start-(end-1)`); the registry answers 206. An empty
    /// range is not a valid HTTP range: callers do not ask for one.
    pub async fn blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        range: std::ops::Range<u64>,
    ) -> Result<Response, SendError> {
        let url = self.blob_url(repo, digest);
        let value = format!("bytes={}-{}", range.start, range.end.saturating_sub(1));
        self.send(&pull_scope(repo), |http| {
            http.get(url.clone()).header(header::RANGE, value.clone())
        })
        .await
    }

    /// `POST /v2/<repo>/blobs/uploads/`: opens an upload session.
    pub async fn start_upload(&self, repo: &str) -> Result<Response, SendError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        self.send(&push_scope(repo), |http| http.post(url.clone()))
            .await
    }

    /// `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`: 201 if
    /// mounted; else the registry may have opened a session instead.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Response, SendError> {
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let scope = format!("{} {}", push_scope(repo), pull_scope(from));
        self.send(&scope, |http| http.post(url.clone())).await
    }

    /// `GET` of an upload session: how much it holds (`Range`).
    pub async fn upload_status(&self, repo: &str, session: &Url) -> Result<Response, SendError> {
        self.send(&push_scope(repo), |http| http.get(session.clone()))
            .await
    }

    /// `DELETE` of an upload session.
    pub async fn cancel_upload(&self, repo: &str, session: &Url) -> Result<Response, SendError> {
        self.send(&push_scope(repo), |http| http.delete(session.clone()))
            .await
    }

    /// `PATCH` of `len` bytes at `offset` to an upload session, streamed
    /// (sent once: the push token must be cached, see [`Client::send_once`]).
    pub async fn append_upload(
        &self,
        repo: &str,
        session: Url,
        offset: u64,
        len: u64,
        body: reqwest::Body,
    ) -> Result<Response, SendError> {
        let request = self
            .http()
            .patch(session)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .header(
                header::CONTENT_RANGE,
                format!("{offset}-{}", offset + len - 1),
            )
            .body(body);
        self.send_once(&push_scope(repo), request).await
    }

    /// `PUT <session>?digest=<digest>`: closes an upload session, with the
    /// last (or only) bytes if any.
    pub async fn finish_upload(
        &self,
        repo: &str,
        session: &Url,
        digest: &Digest,
        last: Option<Bytes>,
    ) -> Result<Response, SendError> {
        let mut url = session.clone();
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        self.send(&push_scope(repo), |http| {
            let request = http.put(url.clone());
            match &last {
                Some(bytes) => request
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone()),
                None => request.header(header::CONTENT_LENGTH, 0),
            }
        })
        .await
    }

    /// `PUT /v2/<repo>/manifests/<reference>`, with the write's origin
    /// (`Wharf-Origin`) when replicating to a Wharf.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
        origin: Option<String>,
    ) -> Result<Response, SendError> {
        let url = self.manifest_url(repo, reference);
        self.send(&push_scope(repo), |http| {
            let request = http
                .put(url.clone())
                .header(header::CONTENT_TYPE, media_type)
                .body(bytes.clone());
            match &origin {
                Some(origin) => request.header(ORIGIN_HEADER, origin),
                None => request,
            }
        })
        .await
    }

    /// `DELETE /v2/<repo>/manifests/<reference>` (a tag or a digest), with
    /// the delete's origin when replicating to a Wharf.
    pub async fn delete_manifest(
        &self,
        repo: &str,
        reference: &str,
        origin: Option<String>,
    ) -> Result<Response, SendError> {
        let url = self.manifest_url(repo, reference);
        let scope = format!("repository:{repo}:delete");
        self.send(&scope, |http| {
            let request = http.delete(url.clone());
            match &origin {
                Some(origin) => request.header(ORIGIN_HEADER, origin),
                None => request,
            }
        })
        .await
    }
}
