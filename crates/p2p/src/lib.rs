//! P2P distribution of blobs between nodes, as Dragonfly and Kraken do it:
//! a blob is split into pieces ([`pieces`]), a tracker in the server hands
//! each downloading node a few parents that hold pieces ([`wire`] is the
//! tracker's and the peers' protocol), and a peer serves a piece only to a
//! node holding a grant the server signed for that blob ([`grant`]).
//!
//! [`peer`] is a node's side: the piece store, the piece server other
//! nodes fetch from, and the downloader that fetches a blob from parents
//! and the registry.
//!
//! Architecture invariant: this crate does no IO of its own in `pieces`,
//! `grant`, `wire` and `tracker` (the clock is passed in; only `peer` touches
//! files and the network); its hot state (who holds which piece) lives in
//! memory and never in the `Store`.

pub mod error;
pub mod grant;
pub mod peer;
pub mod pieces;
pub mod tracker;
pub mod wire;

pub use error::P2pError;
pub use grant::{GRANT_AUDIENCE, GrantVerifier, PeerGrant, encode_grant, grant_key_id};
pub use pieces::{Bitmap, PieceManifest, piece_size_for};
pub use tracker::{Assignment, PeerInfo, PeerUpdate, Tracker, TrackerConfig};
