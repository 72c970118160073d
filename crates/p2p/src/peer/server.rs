//! The piece server: `GET /v1/p2p/blobs/{digest}/pieces/{index}` on a
//! node's endpoint, answering other nodes that hold a grant for the blob.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wharf_oci::Digest;

use super::{PieceStore, TokenBucket, TrackerClient};
use crate::wire::{PIECE_WAIT, PIECES_HEADER};
use crate::{GrantVerifier, P2pError, grant_key_id};

/// The route, in axum's syntax.
pub const PIECE_ROUTE: &str = "/v1/p2p/blobs/{digest}/pieces/{index}";

/// Bytes sent per body chunk: the upload bucket is charged chunk by chunk,
/// so a piece flows at the node's rate instead of in bursts.
const BODY_CHUNK: usize = 64 << 10;

/// The shortest time between two key fetches caused by grants naming an
/// unknown key: forged grants must not make the node hammer the tracker.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// How long a client is told to wait when every upload slot is taken.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Serves verified pieces of the node's piece store to peers.
pub struct PieceServer {
    store: Arc<PieceStore>,
    tracker: Arc<dyn TrackerClient>,
    key: tokio::sync::Mutex<KeyCache>,
    slots: Arc<Semaphore>,
    slot_count: u32,
    upload: Arc<TokenBucket>,
}

#[derive(Default)]
struct KeyCache {
    current: Option<(String, GrantVerifier)>,
    fetched: Option<Instant>,
}

impl PieceServer {
    /// A server over `store`, checking grants with the key `tracker`
    /// hands out, with `upload_slots` pieces sent at once at most and
    /// `upload_rate` bytes per second over all of them (0 = unlimited).
    pub fn new(
        store: Arc<PieceStore>,
        tracker: Arc<dyn TrackerClient>,
        upload_slots: u32,
        upload_rate: u64,
    ) -> PieceServer {
        let slot_count = upload_slots.max(1);
        PieceServer {
            store,
            tracker,
            key: tokio::sync::Mutex::default(),
            slots: Arc::new(Semaphore::new(slot_count as usize)),
            slot_count,
            upload: Arc::new(TokenBucket::new(upload_rate)),
        }
    }

    /// Upload slots free now (reported to the tracker).
    pub fn free_slots(&self) -> u32 {
        (self.slots.available_permits() as u32).min(self.slot_count)
    }

    /// The route, to merge into the node endpoint's router.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(PIECE_ROUTE, get(serve_piece))
            .with_state(self)
    }

    /// Checks `token` for `blob`, fetching the server's key the first time
    /// and again when a grant names another key.
    async fn authorize(&self, token: &str, blob: &Digest) -> Result<(), P2pError> {
        let kid = grant_key_id(token).ok_or_else(|| P2pError::Grant("not a JWS".into()))?;
        let mut cache = self.key.lock().await;
        let stale = cache.current.as_ref().is_none_or(|(id, _)| id != &kid);
        let may_fetch = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= KEY_REFETCH_INTERVAL)
            || cache.current.is_none();
        if stale && may_fetch {
            cache.fetched = Some(Instant::now());
            let key = self.tracker.key().await?;
            let public: [u8; 32] = STANDARD
                .decode(&key.public_key)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| {
                    P2pError::Tracker("the server key is not 32 bytes of base64".into())
                })?;
            cache.current = Some((key.key_id, GrantVerifier::new(&public)?));
        }
        let (_, verifier) = cache
            .current
            .as_ref()
            .ok_or_else(|| P2pError::Grant("no server key".into()))?;
        verifier.verify(token, blob, unix_now()).map(drop)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

async fn serve_piece(
    State(server): State<Arc<PieceServer>>,
    Path((digest, index)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Response {
    let Ok(digest) = digest.parse::<Digest>() else {
        return plain(StatusCode::NOT_FOUND, format!("no blob {digest}"));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return plain(StatusCode::FORBIDDEN, "a peer grant is required");
    };
    if let Err(e) = server.authorize(token, &digest).await {
        tracing::debug!(blob = %digest, error = %e, "piece request refused");
        return match e {
            P2pError::Grant(_) => plain(StatusCode::FORBIDDEN, e.to_string()),
            // The key could not be fetched: not the asker's fault.
            _ => plain(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
    }
    server
        .store
        .wait_for_piece(&digest, index, PIECE_WAIT)
        .await;
    let mut response = piece_response(&server, &digest, index).await;
    // Whatever the answer, the asker learns what it can ask for next.
    if let Some(held) = server.store.held(&digest).await
        && let Ok(json) = serde_json::to_string(&held)
        && let Ok(value) = HeaderValue::from_str(&json)
    {
        response.headers_mut().insert(PIECES_HEADER, value);
    }
    response
}

async fn piece_response(server: &PieceServer, digest: &Digest, index: u32) -> Response {
    let Ok(permit) = server.slots.clone().try_acquire_owned() else {
        let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "no upload slot free");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return response;
    };
    if !server.store.claim_upload(digest, index) {
        // The header that goes with it holds the piece: the asker tells
        // this from "not yet" and fetches it from another peer.
        return plain(
            StatusCode::NOT_FOUND,
            format!("piece {index} of {digest} went to other peers first: fetch it from them"),
        );
    }
    match server.store.read_piece(digest, index).await {
        Ok(Some(piece)) => {
            let length = piece.len();
            let body = Body::from_stream(paced(piece, server.upload.clone(), permit));
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Ok(None) => plain(
            StatusCode::NOT_FOUND,
            format!("piece {index} of {digest} is not held here"),
        ),
        Err(e) => {
            tracing::warn!(blob = %digest, index, error = %e, "reading a piece failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the piece failed",
            )
        }
    }
}

/// The piece in chunks, each let through the upload bucket; the slot is
/// held until the last chunk is sent (or the client goes away).
fn paced(
    piece: Bytes,
    bucket: Arc<TokenBucket>,
    permit: OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(
        (piece, bucket, permit),
        |(mut rest, bucket, permit)| async move {
            if rest.is_empty() {
                return None;
            }
            let chunk = rest.split_to(rest.len().min(BODY_CHUNK));
            bucket.take(chunk.len() as u64).await;
            Some((Ok(chunk), (rest, bucket, permit)))
        },
    )
}
