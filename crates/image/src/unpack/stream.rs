//! The uncompressed tar stream as the archive reader sees it: hashed for the
//! layer's `diff_id`, and bounded so that a small compressed layer cannot
//! make us read (or hold in memory) without end.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

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
        }
    }
}

impl std::error::Error for StreamLimit {}

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
}

impl<R: Read> GuardedStream<R> {
    pub(crate) fn new(
        inner: R,
        algorithm: DigestAlgorithm,
        state: Rc<StreamState>,
        max_total: u64,
        max_metadata: u64,
    ) -> GuardedStream<R> {
        GuardedStream {
            inner,
            hasher: StreamHasher::new(algorithm),
            state,
            max_total,
            max_metadata,
        }
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
        let mut stream =
            GuardedStream::new(&b"hello"[..], DigestAlgorithm::Sha256, state.clone(), 5, 1);
        let mut first = [0u8; 2];
        stream.read_exact(&mut first).unwrap();
        let digest = stream.finish().unwrap();
        assert_eq!(digest, Digest::of(DigestAlgorithm::Sha256, b"hello"));
        assert_eq!(state.total(), 5);

        let state = Rc::new(StreamState::default());
        let mut stream =
            GuardedStream::new(&b"hello!"[..], DigestAlgorithm::Sha256, state.clone(), 5, 1);
        io::copy(&mut stream, &mut io::sink()).unwrap_err();
        assert_eq!(state.tripped(), Some(StreamLimit::TotalBytes(5)));
    }

    #[test]
    fn bounds_bytes_read_while_the_metadata_window_is_open() {
        let state = Rc::new(StreamState::default());
        let data = [0u8; 100];
        let mut stream =
            GuardedStream::new(&data[..], DigestAlgorithm::Sha256, state.clone(), 1000, 10);
        let mut buf = [0u8; 50];
        stream.read_exact(&mut buf).unwrap();
        state.open_metadata_window();
        stream.read_exact(&mut buf).unwrap_err();
        assert_eq!(state.tripped(), Some(StreamLimit::EntryMetadata(10)));
    }
}
