//! A snapshot to a layer blob in one streaming pass: the tar is read from
//! the snapshot's headers and staged contents, its bytes hashed (the
//! `diff_id`) on their way into the compressor, and the compressed bytes
//! hashed (the digest) on their way to the file. No uncompressed tar is
//! ever written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wharf_oci::{Digest, DigestAlgorithm, StreamHasher};

use super::snapshot::{Snapshot, remove_temp};
use crate::error::io_err;
use crate::{Compression, ImageError};

/// Gzip level 1 (zlib's "fast"): on this workload it is several times
/// faster than the default level 6 for a few percent more bytes, and a
/// commit's pushed size matters less than its time.
const GZIP_LEVEL: u32 = 1;
/// Zstandard level 3, zstd's own default: faster than gzip level 1 and
/// smaller than gzip's best.
const ZSTD_LEVEL: i32 = 3;
const READ_CHUNK: usize = 1 << 20;

/// A layer blob made by [`crate::ImageStore::compress_snapshot`], in the
/// cache's `tmp/`; the file is removed when this is dropped.
#[derive(Debug)]
pub struct NewLayer {
    /// The compressed blob.
    pub path: PathBuf,
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// The OCI media type (`application/vnd.oci.image.layer.v1.tar+gzip`,
    /// `…+zstd`, or `…tar`); a push to a Docker manifest uses Docker's.
    pub media_type: String,
    /// How it is compressed.
    pub compression: Compression,
}

impl Drop for NewLayer {
    fn drop(&mut self) {
        remove_temp(&self.path);
    }
}

/// The OCI layer media type of `compression`.
pub(crate) fn oci_layer_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// Compresses the tar `snapshot` reads as into the new file `out`,
/// counting uncompressed bytes read into `done`. On error `out` is
/// removed. Blocking.
pub(crate) fn compress_tar(
    snapshot: &Snapshot,
    out: PathBuf,
    compression: Compression,
    done: &AtomicU64,
) -> Result<NewLayer, ImageError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(io_err("create", &out))?;
    let result = compress_into(snapshot, &out, file, compression, done);
    match result {
        Ok((diff_id, digest, size)) => Ok(NewLayer {
            path: out,
            digest,
            diff_id,
            size,
            media_type: oci_layer_type(compression).to_string(),
            compression,
        }),
        Err(e) => {
            remove_temp(&out);
            Err(e)
        }
    }
}

fn compress_into(
    snapshot: &Snapshot,
    out_path: &Path,
    out: File,
    compression: Compression,
    done: &AtomicU64,
) -> Result<(Digest, Digest, u64), ImageError> {
    let mut input = snapshot.tar_reader();
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(READ_CHUNK, out),
        hasher: StreamHasher::new(DigestAlgorithm::Sha256),
        size: 0,
    };
    let write_err = io_err("write", out_path);
    let mut encoder: Box<dyn Encoder> = match compression {
        Compression::None => Box::new(sink),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            sink,
            flate2::Compression::new(GZIP_LEVEL),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)
                .map_err(|e| ImageError::io("start compressing", out_path, e))?,
        ),
    };
    let mut diff = StreamHasher::new(DigestAlgorithm::Sha256);
    let mut buffer = vec![0u8; READ_CHUNK];
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::io(
                    "read the snapshot in",
                    snapshot.staging_dir(),
                    e,
                ));
            }
        };
        diff.update(&buffer[..n]);
        encoder
            .write_all(&buffer[..n])
            .map_err(io_err("write", out_path))?;
        done.fetch_add(n as u64, Ordering::Relaxed);
    }
    let mut sink = encoder.finish().map_err(write_err)?;
    sink.inner.flush().map_err(io_err("write", out_path))?;
    let file = sink
        .inner
        .into_inner()
        .map_err(|e| ImageError::io("write", out_path, e.into_error()))?;
    drop(file);
    let size = fs::metadata(out_path)
        .map_err(io_err("inspect", out_path))?
        .len();
    if size != sink.size {
        return Err(ImageError::Internal(format!(
            "{}: wrote {} bytes but the file has {size}",
            out_path.display(),
            sink.size
        )));
    }
    Ok((diff.finish(), sink.hasher.finish(), sink.size))
}

/// The compressed stream's destination: hashed and counted on the way.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: StreamHasher,
    size: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An encoder over a [`HashingWriter`] that can be finished through a box.
trait Encoder: Write {
    fn finish(self: Box<Self>) -> io::Result<HashingWriter>;
}

impl Encoder for HashingWriter {
    fn finish(self: Box<Self>) -> io::Result<HashingWriter> {
        Ok(*self)
    }
}

impl Encoder for flate2::write::GzEncoder<HashingWriter> {
    fn finish(self: Box<Self>) -> io::Result<HashingWriter> {
        flate2::write::GzEncoder::finish(*self)
    }
}

impl Encoder for zstd::stream::write::Encoder<'static, HashingWriter> {
    fn finish(self: Box<Self>) -> io::Result<HashingWriter> {
        zstd::stream::write::Encoder::finish(*self)
    }
}
