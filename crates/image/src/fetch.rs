//! How a layer blob gets onto the node before it is unpacked: a
//! [`BlobFetcher`], by default [`DirectFetcher`] (straight from the
//! registry, as always); the agent plugs in P2P distribution. The registry
//! stays reachable to any fetcher through [`RegistryBlob`], for whole or
//! ranged reads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::StatusCode;
use tokio::sync::mpsc;
use wharf_oci::{Digest, DigestAlgorithm, StreamHasher};

use crate::ImageError;
use crate::client::Session;
use crate::error::io_err;

/// Chunks buffered between the network and the file writer.
const CHUNK_QUEUE: usize = 32;

/// Where a pull's bytes came from: the registry, other nodes, or the
/// node's own cache (layers already unpacked, blobs already held).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullBytes {
    /// Bytes fetched from the registry (layers and the config).
    pub registry: u64,
    /// Bytes fetched from other nodes (P2P).
    pub peers: u64,
    /// Bytes found on the node.
    pub cache: u64,
}

impl std::ops::AddAssign for PullBytes {
    fn add_assign(&mut self, other: PullBytes) {
        self.registry += other.registry;
        self.peers += other.peers;
        self.cache += other.cache;
    }
}

/// One layer blob a pull needs.
pub struct BlobRequest<'a> {
    /// The blob in its registry: digest, size, repository, and reads.
    pub blob: RegistryBlob,
    /// The layer's media type.
    pub media_type: &'a str,
    /// A fresh path the fetcher may write the blob to; the store removes
    /// it after unpacking.
    pub dest: &'a Path,
    /// Reports the blob's bytes received so far.
    pub progress: &'a (dyn Fn(u64) + Send + Sync),
}

/// Where the fetched blob is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobLocation {
    /// At the request's `dest`; the store removes it after unpacking.
    Written,
    /// In the fetcher's own keeping (a blob cache); left in place.
    Kept(PathBuf),
}

/// A fetched blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedBlob {
    /// Where it is.
    pub location: BlobLocation,
    /// Where its bytes came from.
    pub bytes: PullBytes,
}

/// Gets a layer blob onto the node. An implementation must deliver exactly
/// the blob asked for: the store unpacks what it returns without hashing
/// the compressed bytes again (the uncompressed content is still checked
/// against the config's `diff_id`).
#[async_trait]
pub trait BlobFetcher: Send + Sync {
    /// Fetches `request.blob`, verified against its digest and size.
    async fn fetch(&self, request: BlobRequest<'_>) -> Result<FetchedBlob, ImageError>;
}

/// Today's way: the blob from the registry to `dest`, hashed as it
/// streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectFetcher;

#[async_trait]
impl BlobFetcher for DirectFetcher {
    async fn fetch(&self, request: BlobRequest<'_>) -> Result<FetchedBlob, ImageError> {
        let received = request
            .blob
            .download_to(request.dest, request.progress)
            .await?;
        Ok(FetchedBlob {
            location: BlobLocation::Written,
            bytes: PullBytes {
                registry: received,
                ..PullBytes::default()
            },
        })
    }
}

/// A blob of one image's repository, readable from the registry with the
/// pull's credentials.
#[derive(Clone)]
pub struct RegistryBlob {
    session: Arc<Session>,
    digest: Digest,
    size: u64,
}

/// A stream of a blob's bytes from the registry.
pub type RegistryStream = BoxStream<'static, Result<Bytes, ImageError>>;

impl RegistryBlob {
    pub(crate) fn new(session: Arc<Session>, digest: Digest, size: u64) -> RegistryBlob {
        RegistryBlob {
            session,
            digest,
            size,
        }
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Its size, as the image manifest gives it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The repository within its registry (`project/name`).
    pub fn repository(&self) -> &str {
        self.session.repository()
    }

    /// The registry's `host[:port]`.
    pub fn registry(&self) -> &str {
        self.session.registry_host()
    }

    /// The bytes `range` of the blob, in order; at most `range`'s length
    /// (a registry that ignores `Range` is read past the start and cut).
    pub async fn range(&self, range: Range<u64>) -> Result<RegistryStream, ImageError> {
        let wanted = range.end.saturating_sub(range.start);
        if wanted == 0 {
            return Ok(futures_util::stream::empty().boxed());
        }
        let (response, url) = if range.start == 0 && range.end == self.size {
            self.session.blob(&self.digest).await?
        } else {
            self.session.blob_range(&self.digest, range.clone()).await?
        };
        let skip = match response.status() {
            StatusCode::PARTIAL_CONTENT => 0,
            _ => range.start,
        };
        let session = self.session.clone();
        let chunks = response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|e| session.http_error(&url, e)));
        Ok(cut(chunks.boxed(), skip, wanted))
    }

    /// Streams the whole blob to `dest` (created), hashing on a blocking
    /// thread as it arrives; checks size and digest. Returns the bytes
    /// received.
    pub async fn download_to(
        &self,
        dest: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, ImageError> {
        let what = format!("layer {} of {}", self.digest, self.session.image());
        let size_mismatch = |actual| ImageError::SizeMismatch {
            what: what.clone(),
            expected: self.size,
            actual,
        };
        let (mut response, url) = self.session.blob(&self.digest).await?;
        if let Some(length) = response.content_length()
            && length != self.size
        {
            return Err(size_mismatch(length));
        }
        let (chunks, queue) = mpsc::channel::<Bytes>(CHUNK_QUEUE);
        let writer = {
            let (dest, algorithm) = (dest.to_path_buf(), self.digest.algorithm());
            tokio::task::spawn_blocking(move || write_hashed(queue, &dest, algorithm))
        };
        let streamed = async {
            let mut received = 0u64;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.session.http_error(&url, e))?
            {
                received += chunk.len() as u64;
                if received > self.size {
                    return Err(size_mismatch(received));
                }
                progress(received);
                if chunks.send(chunk).await.is_err() {
                    break; // The writer failed; its error is reported below.
                }
            }
            Ok(())
        }
        .await;
        drop(chunks);
        let written = writer
            .await
            .map_err(|e| ImageError::Internal(format!("blob writer failed: {e}")))?;
        streamed?;
        let (actual, size) = written?;
        if size != self.size {
            return Err(size_mismatch(size));
        }
        if actual != self.digest {
            return Err(ImageError::DigestMismatch {
                what,
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(size)
    }
}

/// `stream` without its first `skip` bytes, ending after `take` more.
fn cut(stream: RegistryStream, skip: u64, take: u64) -> RegistryStream {
    futures_util::stream::unfold(
        (stream, skip, take),
        |(mut stream, mut skip, mut take)| async move {
            loop {
                if take == 0 {
                    return None;
                }
                let mut chunk = match stream.next().await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(e), (stream, 0, 0))),
                };
                if skip >= chunk.len() as u64 {
                    skip -= chunk.len() as u64;
                    continue;
                }
                let _ = chunk.split_to(skip as usize);
                skip = 0;
                if chunk.len() as u64 > take {
                    chunk.truncate(take as usize);
                }
                take -= chunk.len() as u64;
                return Some((Ok(chunk), (stream, skip, take)));
            }
        },
    )
    .boxed()
}

fn write_hashed(
    mut queue: mpsc::Receiver<Bytes>,
    dest: &Path,
    algorithm: DigestAlgorithm,
) -> Result<(Digest, u64), ImageError> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(io_err("create", dest))?;
    let mut file = BufWriter::with_capacity(256 << 10, file);
    let mut hasher = StreamHasher::new(algorithm);
    let mut size = 0u64;
    while let Some(chunk) = queue.blocking_recv() {
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io_err("write", dest))?;
        size += chunk.len() as u64;
    }
    file.flush().map_err(io_err("write", dest))?;
    Ok((hasher.finish(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> RegistryStream {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    async fn collect(stream: RegistryStream) -> Vec<u8> {
        stream
            .map(|c| c.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .concat()
    }

    #[tokio::test]
    async fn a_cut_stream_skips_and_takes_across_chunks() {
        let parts: &[&'static [u8]] = &[b"abc", b"defg", b"hij"];
        assert_eq!(collect(cut(chunks(parts), 0, 10)).await, b"abcdefghij");
        assert_eq!(collect(cut(chunks(parts), 2, 5)).await, b"cdefg");
        assert_eq!(collect(cut(chunks(parts), 3, 4)).await, b"defg");
        assert_eq!(collect(cut(chunks(parts), 9, 5)).await, b"j");
    }
}
