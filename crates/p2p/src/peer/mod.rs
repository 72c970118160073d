//! A node's side of P2P distribution:
//!
//! - [`PieceStore`]: partial blobs written piece by piece, complete blobs
//!   in the node's blob cache; only verified pieces are ever readable.
//! - [`PieceServer`]: the piece route other nodes fetch from, checking
//!   their grants, with upload slots and an upload rate limit.
//! - [`Downloader`]: fetches one blob from parents the tracker names and
//!   from the registry ([`Source`]), reporting to the tracker
//!   ([`TrackerClient`]) as it goes.
//! - [`TokenBucket`]: the per-node rate limits of both directions.

mod downloader;
mod rate;
mod server;
mod store;
mod tracker;

pub use downloader::{BlobTask, Downloaded, Downloader, DownloaderOptions};
pub use rate::TokenBucket;
pub use server::{PIECE_ROUTE, PieceServer};
pub use store::{PartialBlob, PieceStore};
pub use tracker::{ByteStream, Source, TrackerClient};
