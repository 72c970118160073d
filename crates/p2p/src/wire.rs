//! The protocols of P2P distribution, as JSON on the wire.
//!
//! Tracker (the server; callers authenticate as their node):
//!
//! ```text
//! GET  /api/v1/p2p/key       -> ServerKey: the key grants are checked with
//! POST /api/v1/p2p/tasks     TaskRequest -> TaskAssignment
//! POST /api/v1/p2p/reports   PeerReport  -> TaskAssignment (fresh parents)
//!     400 a field does not fit the blob (the message names it)
//!     403 not a node credential, or the node may not pull the repository
//!     404 the blob is not in the repository, or the node is not registered
//!     503 this server does not track (a follower; the message names the
//!         leader): fetch the blob from the registry
//! ```
//!
//! An assignment with no parents and `back_to_source` false means "wait":
//! the IDC's seed has no piece yet; report again after the interval.
//!
//! Peers (each agent's endpoint, `Authorization: Bearer <grant>`):
//!
//! ```text
//! GET /v1/p2p/blobs/{digest}/pieces/{index}
//!     200 the piece's bytes (Content-Length = the piece's length)
//!     403 the grant is missing, forged, expired or for another blob
//!     404 the peer does not hold that piece (yet); or, when its
//!         x-wharf-pieces header holds the piece, the peer is its IDC's
//!         seed and sent that piece to others already: fetch it from them
//!     429 no upload slot free now (Retry-After in seconds)
//! ```

use serde::{Deserialize, Serialize};
use wharf_oci::Digest;

use crate::{Bitmap, PieceManifest};

/// The tracker's routes.
pub const TRACKER_KEY_PATH: &str = "/api/v1/p2p/key";
/// See [`TaskRequest`].
pub const TRACKER_TASKS_PATH: &str = "/api/v1/p2p/tasks";
/// See [`PeerReport`].
pub const TRACKER_REPORTS_PATH: &str = "/api/v1/p2p/reports";

/// The path, on a peer's endpoint, of piece `index` of `digest`.
///
/// ```
/// let digest = wharf_oci::Digest::of(wharf_oci::DigestAlgorithm::Sha256, b"");
/// assert!(wharf_p2p::wire::piece_path(&digest, 3).ends_with("/pieces/3"));
/// ```
pub fn piece_path(digest: &Digest, index: u32) -> String {
    format!("/v1/p2p/blobs/{digest}/pieces/{index}")
}

/// A peer's answer to a piece request (the piece, "not yet" or "busy")
/// carries the pieces it holds now, as JSON ([`Bitmap`]'s wire form): the
/// asker learns what it can fetch next without waiting for the tracker's
/// view, which is a report interval old.
pub const PIECES_HEADER: &str = "x-wharf-pieces";

/// How long a peer holds a request for a piece it is still fetching before
/// it answers "not yet": the piece is sent the moment it is verified,
/// instead of when the asker happens to ask again. Below the asker's
/// stall timeout, so a held request never counts as a slow parent.
pub const PIECE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The server's grant-signing public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerKey {
    /// The key's id, as grants' headers name it.
    pub key_id: String,
    /// The Ed25519 public key, 32 bytes, standard base64.
    pub public_key: String,
}

/// A node starting to fetch a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRequest {
    /// The blob.
    pub digest: Digest,
    /// Its size, as the image's manifest gives it.
    pub size: u64,
    /// The repository the node pulls it from (`project/name`), which it
    /// must be allowed to pull and which must hold the blob.
    pub repository: String,
}

/// Where a node gets a blob's pieces from, and the grant to ask with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssignment {
    /// The grant to present to parents (see [`crate::grant`]).
    pub grant: String,
    /// Seconds until the grant expires; ask again (a report) before.
    pub grant_expires_in: u64,
    /// The piece digests every piece is checked against.
    pub manifest: PieceManifest,
    /// Peers to fetch pieces from, best first. Empty with
    /// `back_to_source`.
    pub parents: Vec<Parent>,
    /// Peers holding pieces this node lacks, outside its parents and
    /// whichever way the parent graph runs between them: asked only for
    /// pieces they hold, never to hold a request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<Parent>,
    /// Whether this node fetches from the registry: it is the first in its
    /// IDC (the seed for this blob there), or no peer can serve it.
    pub back_to_source: bool,
    /// How often to report progress, in milliseconds.
    pub report_interval_ms: u64,
}

/// A peer holding pieces of the blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parent {
    /// Its node name.
    pub node: String,
    /// Its endpoint's base URL (`http://host:port`).
    pub url: String,
    /// Its IDC (`wharf.io/idc`), if labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idc: Option<String>,
    /// Its pool (`wharf.io/pool`), if labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The pieces it held at its last report.
    pub pieces: Bitmap,
    /// Whether it is its IDC's seed for the blob (fetching from the
    /// registry): the one uplink every new piece crosses first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seed: bool,
}

/// Where a node's fetch of a blob stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PeerState {
    /// Still fetching; the bitmap says what it holds.
    Downloading,
    /// Holds the whole blob, verified, and serves it.
    Done,
    /// Gave up (cancelled or failed); holds nothing it will serve.
    Failed,
    /// Removed the blob from its cache.
    Left,
}

/// A node's progress on a blob, sent every `report_interval_ms` and when
/// its state changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// The blob.
    pub digest: Digest,
    /// The repository, as in the [`TaskRequest`] (a report may be the
    /// first the tracker hears of the node, after the tracker restarted).
    pub repository: String,
    /// The blob's size.
    pub size: u64,
    /// Where it stands.
    pub state: PeerState,
    /// The pieces it holds, verified.
    pub pieces: Bitmap,
    /// Upload slots free on the node now.
    pub free_upload_slots: u32,
    /// Parents that sent a bad piece or none in time, for this blob.
    #[serde(default)]
    pub bad_parents: Vec<BadParent>,
    /// Measured throughput from each parent used since the last report.
    #[serde(default)]
    pub throughput: Vec<ParentThroughput>,
    /// Bytes fetched from the registry for this blob so far.
    pub source_bytes: u64,
    /// Bytes fetched from peers for this blob so far.
    pub peer_bytes: u64,
}

/// A parent not to be handed out to this node for this blob again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadParent {
    /// The parent's node name.
    pub node: String,
    /// What it did: a piece that does not match the manifest, a stall, a
    /// refused connection.
    pub reason: String,
}

/// How fast a parent delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentThroughput {
    /// The parent's node name.
    pub node: String,
    /// Bytes per second over the pieces it delivered.
    pub bytes_per_second: f64,
}
