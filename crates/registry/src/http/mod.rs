//! The `/v2/` routes of the OCI Distribution Spec v1.1.

mod access;
mod errors;
mod path;
mod range;

use std::ops::Range;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use wharf_oci::manifest::referrers_index;
use wharf_oci::wire::{INSTANCE_HEADER, TAG_HEADER};
use wharf_oci::{Digest, Reference, RepositoryName};

pub use access::{
    Authorizer, Caller, EventKind, EventSink, Gate, Need, NoEvents, NoPullThrough, OpenAccess,
    PullThrough, Refusal, RegistryEvent,
};
pub use errors::error_body;
use path::Endpoint;
use range::ByteRange;

use crate::{BlobInfo, DeleteOutcome, Origin, Registry, RegistryError, TagOutcome, UploadStatus};

const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;
const API_VERSION: &str = "Docker-Distribution-Api-Version";
const CONTENT_DIGEST: &str = "Docker-Content-Digest";
const UPLOAD_UUID: &str = "Docker-Upload-UUID";

type HandlerResult = Result<Response, RegistryError>;

/// The registry's routes, to be merged into the server's router.
pub fn router(registry: Arc<Registry>, gate: Gate) -> Router {
    Router::new()
        .route("/v2/", any(ping))
        .route("/v2/{*path}", any(dispatch))
        .with_state(Arc::new(Shared { registry, gate }))
}

struct Shared {
    registry: Arc<Registry>,
    gate: Gate,
}

fn source_of(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

async fn ping(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return method_not_allowed();
    }
    let admitted = shared
        .gate
        .authorizer
        .admit(request.headers(), source_of(&request), &Need::Login)
        .await;
    let response = match admitted {
        Ok(_) => {
            let mut response = axum::Json(json!({})).into_response();
            // Replication peers learn whom they talk to, to keep writes
            // from travelling back to where they came from.
            if let Ok(instance) = HeaderValue::from_str(&shared.registry.config().instance) {
                response.headers_mut().insert(INSTANCE_HEADER, instance);
            }
            response
        }
        Err(err) => err.into_response(),
    };
    with_api_version(response)
}

fn with_api_version(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

fn method_not_allowed() -> Response {
    let body = error_body(
        "UNSUPPORTED",
        "the operation is unsupported",
        serde_json::Value::Null,
    );
    with_api_version((StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    digest: Option<String>,
    mount: Option<String>,
    from: Option<String>,
    n: Option<String>,
    last: Option<String>,
    artifact_type: Option<String>,
}

/// A recognised registry operation.
enum Op {
    Catalog,
    Tombstones,
    Tags(RepositoryName),
    GetManifest(RepositoryName, Reference, bool),
    PutManifest(RepositoryName, Reference),
    DeleteManifest(RepositoryName, Reference),
    HeadBlob(RepositoryName, Digest),
    GetBlob(RepositoryName, Digest),
    DeleteBlob(RepositoryName, Digest),
    StartUpload(RepositoryName),
    UploadStatus(RepositoryName, String),
    PatchUpload(RepositoryName, String),
    PutUpload(RepositoryName, String),
    CancelUpload(RepositoryName, String),
    Referrers(RepositoryName, Digest),
}

impl Op {
    fn classify(method: &Method, endpoint: Endpoint) -> Option<Op> {
        use Endpoint as E;
        Some(match (method.clone(), endpoint) {
            (Method::GET, E::Catalog) => Op::Catalog,
            (Method::GET, E::Tombstones) => Op::Tombstones,
            (Method::GET, E::Tags(repo)) => Op::Tags(repo),
            (Method::GET, E::Manifest(repo, r)) => Op::GetManifest(repo, r, false),
            (Method::HEAD, E::Manifest(repo, r)) => Op::GetManifest(repo, r, true),
            (Method::PUT, E::Manifest(repo, r)) => Op::PutManifest(repo, r),
            (Method::DELETE, E::Manifest(repo, r)) => Op::DeleteManifest(repo, r),
            (Method::HEAD, E::Blob(repo, d)) => Op::HeadBlob(repo, d),
            (Method::GET, E::Blob(repo, d)) => Op::GetBlob(repo, d),
            (Method::DELETE, E::Blob(repo, d)) => Op::DeleteBlob(repo, d),
            (Method::POST, E::Uploads(repo)) => Op::StartUpload(repo),
            (Method::GET, E::Upload(repo, id)) => Op::UploadStatus(repo, id),
            (Method::PATCH, E::Upload(repo, id)) => Op::PatchUpload(repo, id),
            (Method::PUT, E::Upload(repo, id)) => Op::PutUpload(repo, id),
            (Method::DELETE, E::Upload(repo, id)) => Op::CancelUpload(repo, id),
            (Method::GET, E::Referrers(repo, d)) => Op::Referrers(repo, d),
            _ => return None,
        })
    }

    fn need(&self) -> Need {
        match self {
            Op::Catalog | Op::Tombstones => Need::Catalog,
            Op::Tags(repo)
            | Op::GetManifest(repo, ..)
            | Op::HeadBlob(repo, _)
            | Op::GetBlob(repo, _)
            | Op::Referrers(repo, _) => Need::Pull(repo.clone()),
            // Reading where an upload stands changes nothing, and only its
            // creator knows the session's random id; clients (the OCI
            // conformance suite among them) ask with the pull token they hold.
            Op::UploadStatus(repo, _) => Need::Pull(repo.clone()),
            Op::PutManifest(repo, _)
            | Op::StartUpload(repo)
            | Op::PatchUpload(repo, _)
            | Op::PutUpload(repo, _)
            | Op::CancelUpload(repo, _) => Need::Push(repo.clone()),
            Op::DeleteManifest(repo, _) | Op::DeleteBlob(repo, _) => Need::Delete(repo.clone()),
        }
    }

    /// The write this operation attempts, as an audited refusal names it:
    /// the action and the resource.
    fn attempt(&self, params: &Params) -> Option<(&'static str, String)> {
        let blob = |repo: &RepositoryName, digest: Option<&String>| match digest {
            Some(digest) => format!("{repo}@{digest}"),
            None => repo.to_string(),
        };
        match self {
            Op::PutManifest(repo, Reference::Tag(tag)) => {
                Some(("artifact.push", format!("{repo}:{tag}")))
            }
            Op::PutManifest(repo, Reference::Digest(digest)) => {
                Some(("artifact.push", format!("{repo}@{digest}")))
            }
            Op::StartUpload(repo) if params.mount.is_some() => {
                Some(("blob.mount", blob(repo, params.mount.as_ref())))
            }
            Op::StartUpload(repo) | Op::PatchUpload(repo, _) | Op::PutUpload(repo, _) => {
                Some(("blob.upload", blob(repo, params.digest.as_ref())))
            }
            _ => None,
        }
    }

    /// The event a success of this operation is reported as.
    fn event(&self) -> Option<(EventKind, &RepositoryName, String)> {
        match self {
            Op::GetManifest(repo, reference, false) => {
                Some((EventKind::Pull, repo, reference.to_string()))
            }
            Op::PutManifest(repo, reference) => {
                Some((EventKind::Push, repo, reference.to_string()))
            }
            Op::DeleteManifest(repo, reference) => {
                Some((EventKind::Delete, repo, reference.to_string()))
            }
            Op::DeleteBlob(repo, digest) => Some((EventKind::Delete, repo, digest.to_string())),
            _ => None,
        }
    }
}

async fn dispatch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let endpoint = match path::parse(request.uri().path()) {
        Some(Ok(endpoint)) => endpoint,
        Some(Err(err)) => return with_api_version(err.into_response()),
        None => return with_api_version(StatusCode::NOT_FOUND.into_response()),
    };
    let Some(op) = Op::classify(request.method(), endpoint) else {
        return method_not_allowed();
    };
    let source = source_of(&request);
    // Refusals are the authorizer's to audit: it knows who was refused.
    let caller = match shared
        .gate
        .authorizer
        .admit(request.headers(), source, &op.need())
        .await
    {
        Ok(caller) => caller,
        Err(err) => return with_api_version(err.into_response()),
    };
    let handlers = Handlers {
        registry: &shared.registry,
        gate: &shared.gate,
        caller: &caller,
    };
    let event = op
        .event()
        .map(|(kind, repo, reference)| (kind, repo.clone(), reference));
    let mut result = handlers.handle(op, request).await;
    if let (Ok(response), Some((kind, repository, reference))) = (&mut result, event) {
        let digest = header_str(response.headers(), CONTENT_DIGEST).and_then(|d| d.parse().ok());
        let note = response.extensions_mut().remove::<WriteNote>();
        let (origin, conflict, tag_moved) = match note {
            Some(note) => (Some(note.origin), note.conflict, note.tag_moved),
            None => (None, None, false),
        };
        shared.gate.events.record(RegistryEvent {
            kind,
            repository,
            reference,
            digest,
            actor: caller.name.clone(),
            source: caller.source,
            origin,
            conflict,
            tag_moved,
        });
    }
    with_api_version(result.unwrap_or_else(IntoResponse::into_response))
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// What a manifest write did, handed from its handler to the event it is
/// reported as (in the response's extensions, never on the wire).
#[derive(Clone)]
struct WriteNote {
    origin: Origin,
    conflict: Option<String>,
    tag_moved: bool,
}

/// The `Wharf-Origin` header of a replicated write, if any.
fn request_origin(headers: &HeaderMap) -> Result<Option<Origin>, RegistryError> {
    let mut values = headers.get_all(Origin::HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(RegistryError::OriginInvalid(
            "header given more than once".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| RegistryError::OriginInvalid("header value is not visible ascii".into()))?;
    Origin::parse_header(value).map(Some)
}

/// The sentence an event carries when a replicated push met a tag set by
/// another write: it lost (tag kept) or won (tag replaced).
fn push_conflict(
    repo: &RepositoryName,
    reference: &Reference,
    digest: &Digest,
    incoming: Option<&Origin>,
    outcome: &TagOutcome,
) -> Option<String> {
    let (Reference::Tag(tag), Some(incoming)) = (reference, incoming) else {
        return None;
    };
    match outcome {
        TagOutcome::Kept {
            current,
            current_origin,
        } => Some(format!(
            "tag {repo}:{tag} kept {current} (origin {current_origin}); \
             incoming {digest} from {incoming} lost"
        )),
        TagOutcome::Replaced {
            previous,
            previous_origin,
        } => Some(format!(
            "tag {repo}:{tag} replaced {previous} (origin {previous_origin}); \
             incoming {digest} from {incoming} won"
        )),
        TagOutcome::KeptDeleted { deleted_origin } => Some(format!(
            "tag {repo}:{tag} stays deleted (delete from {deleted_origin}); \
             incoming {digest} from {incoming} lost"
        )),
        _ => None,
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

fn parse_digest(value: Option<&str>) -> Result<Digest, RegistryError> {
    let value = value
        .ok_or_else(|| RegistryError::DigestInvalid("the digest parameter is required".into()))?;
    Ok(value.parse()?)
}

fn upload_location(repo: &RepositoryName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn blob_created(repo: &RepositoryName, info: &BlobInfo) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{repo}/blobs/{}", info.digest),
        )
        .header(CONTENT_DIGEST, info.digest.as_str())
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn upload_progress(repo: &RepositoryName, status: &UploadStatus, code: StatusCode) -> Response {
    // The spec's inclusive range; an empty session reports 0-0 as distribution does.
    let end = status.size.saturating_sub(1);
    Response::builder()
        .status(code)
        .header(header::LOCATION, upload_location(repo, &status.id))
        .header(header::RANGE, format!("0-{end}"))
        .header(UPLOAD_UUID, &status.id)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

/// The offset a chunk starts at, after checking its `Content-Range` against
/// its `Content-Length`.
fn chunk_offset(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    let Some(value) = header_str(headers, header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = range::parse_content_range(value).ok_or_else(|| {
        RegistryError::BlobUploadInvalid(format!("malformed Content-Range {value:?}"))
    })?;
    if let Some(length) = content_length(headers)
        && length != end - start + 1
    {
        return Err(RegistryError::SizeInvalid(format!(
            "Content-Range {start}-{end} does not match Content-Length {length}"
        )));
    }
    Ok(Some(start))
}

fn page_params(params: &Params) -> Result<(usize, Option<&str>), RegistryError> {
    let n = match &params.n {
        None => DEFAULT_PAGE,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| RegistryError::PaginationInvalid(format!("n={n:?} is not a number")))?
            .min(MAX_PAGE),
    };
    Ok((n, params.last.as_deref()))
}

fn next_link(path: &str, n: usize, last: Option<&String>) -> Option<HeaderValue> {
    let last = last?;
    let encoded = percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC);
    HeaderValue::from_str(&format!("<{path}?n={n}&last={encoded}>; rel=\"next\"")).ok()
}

/// The listings across repositories, filtered by what the caller may pull.
#[derive(Clone, Copy)]
enum Listing {
    /// `/v2/_catalog`: repositories.
    Catalog,
    /// `/v2/_tombstones`: deleted tags.
    Tombstones,
}

/// One item of a [`Listing`].
struct Listed {
    /// Where the listing continues after it.
    cursor: String,
    /// The repository it belongs to (`None`: shown to nobody).
    repository: Option<RepositoryName>,
    /// What the response shows of it.
    json: serde_json::Value,
}

struct Handlers<'a> {
    registry: &'a Registry,
    gate: &'a Gate,
    caller: &'a Caller,
}

impl Handlers<'_> {
    /// Runs `op`; writes refused by policy (a quota, a size limit) reach
    /// the event sink as refusals, naming the caller.
    async fn handle(&self, op: Op, request: Request) -> HandlerResult {
        let params = Query::<Params>::try_from_uri(request.uri())
            .map(|q| q.0)
            .unwrap_or_default();
        let attempt = op.attempt(&params);
        let result = match self.pull_through(&op).await {
            Ok(()) => self.run(op, &params, request).await,
            Err(err) => Err(err),
        };
        if let (Err(err), Some((action, resource))) = (&result, attempt)
            && matches!(
                err,
                RegistryError::QuotaExceeded { .. }
                    | RegistryError::TooLarge { .. }
                    | RegistryError::Denied(_)
            )
        {
            self.refused(action, resource, err.to_string());
        }
        result
    }

    /// What a proxy cache does before `op` runs: refuses client writes to
    /// a cache, fetches or revalidates what a read needs.
    async fn pull_through(&self, op: &Op) -> Result<(), RegistryError> {
        let hook = &self.gate.pull_through;
        match op {
            Op::GetManifest(repo, reference, _) => {
                hook.manifest(self.caller, repo, reference).await
            }
            Op::HeadBlob(repo, digest) | Op::GetBlob(repo, digest) => {
                hook.blob(self.caller, repo, digest).await
            }
            _ => match op.need() {
                Need::Push(repo) | Need::Delete(repo) => hook.check_write(&repo).await,
                _ => Ok(()),
            },
        }
    }

    fn refused(&self, action: &'static str, resource: String, reason: String) {
        self.gate.events.refused(Refusal {
            action,
            resource,
            actor: self.caller.name.clone(),
            source: self.caller.source,
            reason,
        });
    }

    async fn run(&self, op: Op, params: &Params, request: Request) -> HandlerResult {
        let registry = self.registry;
        match op {
            Op::Catalog => self.listing(Listing::Catalog, params).await,
            Op::Tombstones => self.listing(Listing::Tombstones, params).await,
            Op::Tags(repo) => self.tags(&repo, params).await,
            Op::GetManifest(repo, reference, head) => {
                self.get_manifest(&repo, &reference, head).await
            }
            Op::PutManifest(repo, reference) => self.put_manifest(&repo, &reference, request).await,
            Op::DeleteManifest(repo, reference) => {
                self.delete_manifest(&repo, &reference, request.headers())
                    .await
            }
            Op::HeadBlob(repo, digest) => self.head_blob(&repo, &digest).await,
            Op::GetBlob(repo, digest) => self.get_blob(&repo, &digest, request.headers()).await,
            Op::DeleteBlob(repo, digest) => registry
                .delete_blob(&repo, &digest)
                .await
                .map(|()| accepted()),
            Op::StartUpload(repo) => self.post_upload(&repo, params, request).await,
            Op::UploadStatus(repo, id) => self.upload_status(&repo, &id).await,
            Op::PatchUpload(repo, id) => self.patch_upload(&repo, &id, request).await,
            Op::PutUpload(repo, id) => self.put_upload(&repo, &id, params, request).await,
            Op::CancelUpload(repo, id) => registry
                .cancel_upload(&repo, &id)
                .await
                .map(|()| StatusCode::NO_CONTENT.into_response()),
            Op::Referrers(repo, digest) => self.referrers(&repo, &digest, params).await,
        }
    }

    /// Items of `listing` in repositories the caller may pull, `n` at a
    /// time after `last`: `{"repositories": [...]}` for the catalog,
    /// `{"tombstones": [{"repository", "tag", "origin"}]}` (the origin in
    /// `Wharf-Origin` form) for deleted tags, whose cursor is
    /// `<repository>:<tag>`.
    async fn listing(&self, listing: Listing, params: &Params) -> HandlerResult {
        let (n, last) = page_params(params)?;
        let mut visible: Vec<Listed> = Vec::new();
        let mut cursor = last.map(str::to_string);
        let mut more = false;
        'pages: loop {
            if n == 0 {
                break;
            }
            let (items, page_more) = self.read_listing(listing, n, cursor.as_deref()).await?;
            for item in items {
                if visible.len() == n {
                    more = true;
                    break 'pages;
                }
                cursor = Some(item.cursor.clone());
                if let Some(repo) = &item.repository
                    && self.gate.authorizer.may_pull(self.caller, repo).await
                {
                    visible.push(item);
                }
            }
            if !page_more {
                break;
            }
        }
        let last_cursor = visible.last().map(|item| item.cursor.clone());
        let items: Vec<serde_json::Value> = visible.into_iter().map(|item| item.json).collect();
        let (path, field) = match listing {
            Listing::Catalog => ("/v2/_catalog", "repositories"),
            Listing::Tombstones => ("/v2/_tombstones", "tombstones"),
        };
        let mut response = axum::Json(json!({ field: items })).into_response();
        if more && let Some(link) = next_link(path, n, last_cursor.as_ref()) {
            response.headers_mut().insert(header::LINK, link);
        }
        Ok(response)
    }

    /// One page of a listing, unfiltered, and whether more follow.
    async fn read_listing(
        &self,
        listing: Listing,
        n: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Listed>, bool), RegistryError> {
        Ok(match listing {
            Listing::Catalog => {
                let page = self.registry.catalog(n, cursor).await?;
                let items = page.items.into_iter().map(|name| Listed {
                    repository: name.parse().ok(),
                    json: json!(name),
                    cursor: name,
                });
                (items.collect(), page.more)
            }
            Listing::Tombstones => {
                let page = self.registry.tombstones(n, cursor).await?;
                let items = page.items.into_iter().map(|t| Listed {
                    cursor: t.cursor(),
                    json: json!({
                        "repository": t.repository,
                        "tag": t.tag.as_str(),
                        "origin": t.origin.to_header(),
                    }),
                    repository: Some(t.repository),
                });
                (items.collect(), page.more)
            }
        })
    }

    /// The repository to mount `digest` into `repo` from: `from` if the
    /// caller may read it, or without `from` any readable repository holding
    /// the blob. A `from` the caller may not read is a refusal: the client
    /// gets an upload session, as the spec says, and the audit log a record.
    async fn mount_source(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: Option<RepositoryName>,
    ) -> Result<Option<RepositoryName>, RegistryError> {
        if let Some(from) = from {
            if self.gate.authorizer.may_pull(self.caller, &from).await {
                return Ok(Some(from));
            }
            self.refused(
                "blob.mount",
                format!("{from}@{digest}"),
                format!(
                    "{} may not pull {from}; started an upload to {repo} instead of mounting",
                    self.caller.name
                ),
            );
            return Ok(None);
        }
        for candidate in self.registry.repositories_holding(digest, 100).await? {
            if self.gate.authorizer.may_pull(self.caller, &candidate).await {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    async fn tags(&self, repo: &RepositoryName, params: &Params) -> HandlerResult {
        let (n, last) = page_params(params)?;
        let page = self.registry.list_tags(repo, n, last).await?;
        let mut response = axum::Json(json!({ "name": repo, "tags": page.items })).into_response();
        if page.more
            && let Some(link) = next_link(&format!("/v2/{repo}/tags/list"), n, page.items.last())
        {
            response.headers_mut().insert(header::LINK, link);
        }
        Ok(response)
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        head: bool,
    ) -> HandlerResult {
        let manifest = self.registry.get_manifest(repo, reference, !head).await?;
        let body = manifest.bytes.map(Body::from).unwrap_or_else(Body::empty);
        let mut response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, &manifest.media_type)
            .header(header::CONTENT_LENGTH, manifest.size)
            .header(CONTENT_DIGEST, manifest.digest.as_str())
            .header(header::ETAG, format!("\"{}\"", manifest.digest));
        // By tag: who set it, so a peer can compare origins with a HEAD.
        if let Some(origin) = &manifest.origin
            && let Ok(value) = HeaderValue::from_str(&origin.to_header())
        {
            response = response.header(Origin::HEADER, value);
        }
        Ok(response.body(body).expect("valid response"))
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        request: Request,
    ) -> HandlerResult {
        let limit = self.registry.config().max_manifest_bytes;
        if content_length(request.headers()).is_some_and(|len| len > limit) {
            return Err(RegistryError::TooLarge { limit });
        }
        let origin = request_origin(request.headers())?;
        let content_type = header_str(request.headers(), header::CONTENT_TYPE).map(str::to_string);
        let body = axum::body::to_bytes(request.into_body(), limit as usize)
            .await
            .map_err(|_| RegistryError::TooLarge { limit })?;
        let pushed = self
            .registry
            .put_manifest_from(
                repo,
                reference,
                content_type.as_deref(),
                body,
                origin.as_ref(),
            )
            .await?;
        let mut response = Response::builder()
            .status(StatusCode::CREATED)
            .header(
                header::LOCATION,
                format!("/v2/{repo}/manifests/{}", pushed.digest),
            )
            .header(CONTENT_DIGEST, pushed.digest.as_str())
            .header(TAG_HEADER, pushed.tag.as_str())
            .header(header::CONTENT_LENGTH, 0);
        if let Some(subject) = &pushed.subject {
            response = response.header("OCI-Subject", subject.as_str());
        }
        let note = WriteNote {
            conflict: push_conflict(
                repo,
                reference,
                &pushed.digest,
                origin.as_ref(),
                &pushed.tag,
            ),
            tag_moved: pushed.tag.moved(),
            origin: pushed.origin,
        };
        Ok(response
            .extension(note)
            .body(Body::empty())
            .expect("valid response"))
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        headers: &HeaderMap,
    ) -> HandlerResult {
        let incoming = request_origin(headers)?;
        let (outcome, origin) = self
            .registry
            .delete_with_origin(repo, reference, incoming.as_ref())
            .await?;
        let mut response = Response::builder().status(StatusCode::ACCEPTED);
        let mut note = WriteNote {
            origin,
            conflict: None,
            tag_moved: false,
        };
        if let Reference::Tag(tag) = reference {
            // Kept is still 202: the request was valid, the rule kept the tag.
            response = response.header(TAG_HEADER, outcome.as_str());
            match &outcome {
                DeleteOutcome::Deleted => note.tag_moved = true,
                DeleteOutcome::Absent => {}
                DeleteOutcome::Kept {
                    current,
                    current_origin,
                } => {
                    note.conflict = Some(format!(
                        "tag {repo}:{tag} kept {current} (origin {current_origin}); \
                         incoming delete from {} lost",
                        note.origin
                    ));
                }
            }
        }
        Ok(response
            .extension(note)
            .body(Body::empty())
            .expect("valid response"))
    }

    async fn head_blob(&self, repo: &RepositoryName, digest: &Digest) -> HandlerResult {
        let info = self.registry.stat_blob(repo, digest).await?;
        Ok(blob_headers(StatusCode::OK, &info, info.size)
            .body(Body::empty())
            .expect("valid response"))
    }

    async fn get_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        headers: &HeaderMap,
    ) -> HandlerResult {
        let range_header = header_str(headers, header::RANGE);
        let choose = |size: u64| -> Result<Option<Range<u64>>, RegistryError> {
            match range::parse_range(range_header, size) {
                ByteRange::Whole => Ok(None),
                ByteRange::Part(range) => Ok(Some(range)),
                ByteRange::Unsatisfiable => Err(RegistryError::RangeNotSatisfiable { size }),
            }
        };
        let (info, range, body) = self.registry.get_blob(repo, digest, choose).await?;
        let response = match &range {
            None => blob_headers(StatusCode::OK, &info, info.size),
            Some(range) => {
                blob_headers(StatusCode::PARTIAL_CONTENT, &info, range.end - range.start).header(
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{}", range.start, range.end - 1, info.size),
                )
            }
        };
        Ok(response
            .body(Body::from_stream(body))
            .expect("valid response"))
    }

    async fn post_upload(
        &self,
        repo: &RepositoryName,
        params: &Params,
        request: Request,
    ) -> HandlerResult {
        if let Some(mount) = &params.mount {
            let digest = parse_digest(Some(mount))?;
            let from = params
                .from
                .as_deref()
                .map(str::parse::<RepositoryName>)
                .transpose()?;
            if let Some(source) = self.mount_source(repo, &digest, from).await?
                && let Some(info) = self.registry.mount_blob(repo, &digest, &source).await?
            {
                return Ok(blob_created(repo, &info));
            }
        } else if params.digest.is_some() {
            let digest = parse_digest(params.digest.as_deref())?;
            self.check_blob_length(request.headers())?;
            let body = request.into_body().into_data_stream();
            let info = self.registry.push_blob(repo, &digest, body).await?;
            return Ok(blob_created(repo, &info));
        }
        let status = self.registry.start_upload(repo).await?;
        Ok(upload_progress(repo, &status, StatusCode::ACCEPTED))
    }

    fn check_blob_length(&self, headers: &HeaderMap) -> Result<(), RegistryError> {
        let limit = self.registry.config().max_blob_bytes;
        match content_length(headers) {
            Some(len) if len > limit => Err(RegistryError::TooLarge { limit }),
            _ => Ok(()),
        }
    }

    async fn upload_status(&self, repo: &RepositoryName, id: &str) -> HandlerResult {
        let status = self.registry.upload_status(repo, id).await?;
        Ok(upload_progress(repo, &status, StatusCode::NO_CONTENT))
    }

    async fn patch_upload(
        &self,
        repo: &RepositoryName,
        id: &str,
        request: Request,
    ) -> HandlerResult {
        let offset = chunk_offset(request.headers())?;
        self.check_blob_length(request.headers())?;
        let body = request.into_body().into_data_stream();
        let status = self.registry.append_upload(repo, id, body, offset).await?;
        Ok(upload_progress(repo, &status, StatusCode::ACCEPTED))
    }

    async fn put_upload(
        &self,
        repo: &RepositoryName,
        id: &str,
        params: &Params,
        request: Request,
    ) -> HandlerResult {
        let digest = parse_digest(params.digest.as_deref())?;
        let offset = chunk_offset(request.headers())?;
        self.check_blob_length(request.headers())?;
        let body = request.into_body().into_data_stream();
        let info = self
            .registry
            .complete_upload(repo, id, &digest, body, offset)
            .await?;
        Ok(blob_created(repo, &info))
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        params: &Params,
    ) -> HandlerResult {
        let filter = params.artifact_type.as_deref();
        let manifests = self.registry.referrers(repo, subject, filter).await?;
        let mut response = axum::Json(referrers_index(manifests)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(wharf_oci::manifest::OCI_INDEX),
        );
        if filter.is_some() {
            headers.insert(
                "OCI-Filters-Applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        Ok(response)
    }
}

fn blob_headers(status: StatusCode, info: &BlobInfo, length: u64) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(CONTENT_DIGEST, info.digest.as_str())
        .header(header::ETAG, format!("\"{}\"", info.digest))
}
