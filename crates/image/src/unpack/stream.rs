//! The uncompressed tar stream as the archive reader sees it: hashed for the
//! layer's `diff_id`, and bounded so that a small compressed layer cannot
//! make us read (or hold in memory) without end.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wharf_oci::{Digest, DigestAlgorithm, StreamHasher};

/// Why the stream refused to go on; travels inside an `io::Error` through
/// the tar and decompression readers and is recognised on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamLimit {
    /// The uncompressed stream is longer than allowed.
    TotalBytes(u64),
    /// Headers and extensions of one entry (long names, PAX records) are
    /// larger than allowed; the tar reader would hold them in memory.
    EntryMetadata(u64),
    /// Nobody needs the layer any more.
    Cancelled,
    /// The disk under the layer has `available` bytes left, below the
    /// `reserve` the node keeps.
    DiskReserve {
        /// Bytes still free.
        available: u64,
        /// Bytes the node keeps free.
        reserve: u64,
    },
}

impl fmt::Display for StreamLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamLimit::TotalBytes(limit) => {
                write!(f, "uncompressed size limit of {limit} bytes")
            }
            StreamLimit::EntryMetadata(limit) => {
                write!(
                    f,
                    "tar header and extension limit of {limit} bytes per entry"
                )
            }
            StreamLimit::Cancelled => write!(f, "cancelled"),
            StreamLimit::DiskReserve { available, reserve } => write!(
                f,
                "{available} bytes free, below the reserve of {reserve} bytes"
            ),
        }
    }
}

impl std::error::Error for StreamLimit {}

/// How much of the stream passes between two looks at the free disk space
/// (a `statvfs`; files written in between are at most this much).
const DISK_CHECK_EVERY: u64 = 32 << 20;

/// Space the node keeps free on the disk a layer is unpacked to.
#[derive(Clone, Debug)]
pub struct DiskReserve {
    /// A path on that disk.
    pub path: PathBuf,
    /// Bytes to keep free.
    pub bytes: u64,
}

impl DiskReserve {
    /// Bytes available to unprivileged writers there (root could use the
    /// filesystem's own reserve too, but that is for recovery), or `None`
    /// if the filesystem cannot say.
    pub fn available(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.path).ok()?;
        Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
    }
}

/// Watches an unpack from another thread: bytes so far, and a way to stop
/// it. One per layer being unpacked, shared by everyone waiting for it.
#[derive(Debug, Default)]
pub struct UnpackWatch {
    written: AtomicU64,
    cancelled: AtomicBool,
    /// Checked while unpacking: the unpack stops when free space falls
    /// below it.
    pub reserve: Option<DiskReserve>,
}

impl UnpackWatch {
    /// A watch that also keeps `reserve` free.
    pub fn with_reserve(reserve: Option<DiskReserve>) -> UnpackWatch {
        UnpackWatch {
            reserve,
            ..UnpackWatch::default()
        }
    }

    /// Bytes of the uncompressed stream read so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Asks the unpack to stop (it fails with [`crate::ImageError::Cancelled`]
    /// and removes what it wrote).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Counters shared between the stream (owned by the tar reader) and the
/// unpacking loop, which opens and closes the metadata window per entry.
#[derive(Default)]
pub(crate) struct StreamState {
    total: Cell<u64>,
    /// Bytes read since the window opened; `None` while entry data is read.
    metadata: Cell<Option<u64>>,
    /// The limit hit, if any. Kept here as well as in the error because the
    /// tar reader may wrap errors beyond recognition.
    tripped: Cell<Option<StreamLimit>>,
}

impl StreamState {
    /// Starts counting bytes as header/extension bytes (before asking the
    /// tar reader for its next entry).
    pub(crate) fn open_metadata_window(&self) {
        self.metadata.set(Some(0));
    }

    /// Stops counting (entry data follows, bounded by the total limit).
    pub(crate) fn close_metadata_window(&self) {
        self.metadata.set(None);
    }

    /// Bytes of the uncompressed stream read so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.get()
    }

    /// The limit the stream stopped at, if it did.
    pub(crate) fn tripped(&self) -> Option<StreamLimit> {
        self.tripped.get()
    }

    fn trip(&self, limit: StreamLimit) -> io::Error {
        self.tripped.set(Some(limit));
        io::Error::other(limit)
    }
}

/// A reader that hashes, counts and bounds what passes through it.
pub(crate) struct GuardedStream<R> {
    inner: R,
    hasher: StreamHasher,
    state: Rc<StreamState>,
    max_total: u64,
    max_metadata: u64,
    watch: Option<Arc<UnpackWatch>>,
    /// Stream position at which free disk space is looked at next.
    next_disk_check: u64,
}

impl<R: Read> GuardedStream<R> {
    pub(crate) fn new(
        inner: R,
        algorithm: DigestAlgorithm,
        state: Rc<StreamState>,
        max_total: u64,
        max_metadata: u64,
        watch: Option<Arc<UnpackWatch>>,
    ) -> GuardedStream<R> {
        GuardedStream {
            inner,
            hasher: StreamHasher::new(algorithm),
            state,
            max_total,
            max_metadata,
            watch,
            next_disk_check: 0,
        }
    }

    /// Reports progress to the watcher, and stops when it cancels or the
    /// disk runs into the reserve.
    fn watched(&mut self, total: u64) -> io::Result<()> {
        let Some(watch) = &self.watch else {
            return Ok(());
        };
        watch.written.store(total, Ordering::Relaxed);
        if watch.is_cancelled() {
            return Err(self.state.trip(StreamLimit::Cancelled));
        }
        if total >= self.next_disk_check {
            self.next_disk_check = total + DISK_CHECK_EVERY;
            if let Some(reserve) = &watch.reserve
                && let Some(available) = reserve.available()
                && available < reserve.bytes
            {
                return Err(self.state.trip(StreamLimit::DiskReserve {
                    available,
                    reserve: reserve.bytes,
                }));
            }
        }
        Ok(())
    }

    /// Reads what is left (padding after the end-of-archive blocks counts
    /// towards the `diff_id`) and returns the digest of the whole stream.
    pub(crate) fn finish(mut self) -> io::Result<Digest> {
        self.state.close_metadata_window();
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for GuardedStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.state.total.get() + n as u64;
        self.state.total.set(total);
        if total > self.max_total {
            return Err(self.state.trip(StreamLimit::TotalBytes(self.max_total)));
        }
        self.watched(total)?;
        if let Some(metadata) = self.state.metadata.get() {
            let metadata = metadata + n as u64;
            self.state.metadata.set(Some(metadata));
            if metadata > self.max_metadata {
                return Err(self
                    .state
                    .trip(StreamLimit::EntryMetadata(self.max_metadata)));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_everything_and_enforces_the_total() {
        let state = Rc::new(StreamState::default());
        let mut stream = GuardedStream::new(
            &b"hello"[..],
            DigestAlgorithm::Sha256,
            state.clone(),
            5,
            1,
            None,
        );
        let mut first = [0u8; 2];
        stream.read_exact(&mut first).unwrap();
        let digest = stream.finish().unwrap();
        assert_eq!(digest, Digest::of(DigestAlgorithm::Sha256, b"hello"));
        assert_eq!(state.total(), 5);

        let state = Rc::new(StreamState::default());
        let mut stream = GuardedStream::new(
            &b"hello!"[..],
            DigestAlgorithm::Sha256,
            state.clone(),
            5,
            1,
            None,
        );
        io::copy(&mut stream, &mut io::sink()).unwrap_err();
        assert_eq!(state.tripped(), Some(StreamLimit::TotalBytes(5)));
    }

    #[test]
    fn bounds_bytes_read_while_the_metadata_window_is_open() {
        let state = Rc::new(StreamState::default());
        let data = [0u8; 100];
        let mut stream = GuardedStream::new(
            &data[..],
            DigestAlgorithm::Sha256,
            state.clone(),
            1000,
            10,
            None,
        );
        let mut buf = [0u8; 50];
        stream.read_exact(&mut buf).unwrap();
        state.open_metadata_window();
        stream.read_exact(&mut buf).unwrap_err();
        assert_eq!(state.tripped(), Some(StreamLimit::EntryMetadata(10)));
    }
}
