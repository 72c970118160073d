//! Unpacking a layer archive into a directory usable as an overlayfs
//! lower directory.
//!
//! OCI whiteouts become overlayfs ones: `.wh.<name>` a 0/0 character device
//! `<name>`, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its
//! directory. Both need root. Nothing is ever written outside the target
//! directory: see `writer.rs` for how.

mod paths;
mod stream;
mod writer;

use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use wharf_oci::{Digest, DigestAlgorithm};

use crate::ImageError;
use crate::error::io_err;
pub use stream::{DiskReserve, UnpackWatch};
use stream::{GuardedStream, StreamLimit, StreamState};
use writer::LayerWriter;

/// Largest header plus extensions (long names, PAX records) of one entry;
/// the tar reader holds them in memory.
const MAX_ENTRY_METADATA: u64 = 1 << 20;

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// Gzip (`…tar+gzip`, Docker's `…rootfs.diff.tar.gzip`).
    Gzip,
    /// Zstandard (`…tar+zstd`).
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, or `None` if it is not a
    /// layer type this store can unpack.
    ///
    /// ```
    /// use wharf_image::Compression;
    /// let gzip = Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+gzip");
    /// assert_eq!(gzip, Some(Compression::Gzip));
    /// assert_eq!(Compression::of_media_type("application/vnd.cncf.helm.chart.content.v1.tar+gzip"), None);
    /// ```
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        let is_layer = media_type.starts_with("application/vnd.oci.image.layer.")
            || media_type.starts_with("application/vnd.docker.image.rootfs.");
        if !is_layer {
            return None;
        }
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// Bounds that stop tar bombs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most bytes in the uncompressed stream, and most bytes written to
    /// files (sparse files count at their full size).
    pub max_bytes: u64,
    /// Most entries in one layer.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 64 GiB and ten million entries.
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 64 << 30,
            max_entries: 10_000_000,
        }
    }
}

/// What an unpacked layer held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries read.
    pub entries: u64,
    /// Bytes written to regular files.
    pub file_bytes: u64,
    /// Bytes of the uncompressed stream.
    pub stream_bytes: u64,
    /// Digest of the uncompressed stream (the layer's `diff_id`).
    pub diff_id: Option<Digest>,
    /// Entries or attributes skipped for lack of privileges or filesystem
    /// support (device nodes and `trusted.*` xattrs without root).
    pub skipped: u64,
}

/// How to unpack one layer.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Names the layer in errors, e.g. its digest.
    pub label: String,
    /// How the blob is compressed.
    pub compression: Compression,
    /// The `diff_id` the uncompressed stream must hash to, if known.
    pub diff_id: Option<Digest>,
    /// Size and entry bounds.
    pub limits: UnpackLimits,
    /// Progress, cancellation and the disk reserve, watched from elsewhere.
    pub watch: Option<Arc<UnpackWatch>>,
}

/// Unpacks the layer `blob` into `dest`, which must not exist yet; blocking.
///
/// On any error `dest` is removed again, so a failed layer leaves nothing
/// behind. Callers that need atomic publication unpack into a temporary
/// directory and rename it.
pub fn unpack_layer(
    blob: impl Read,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<UnpackStats, ImageError> {
    fs::create_dir(dest).map_err(io_err("create layer directory", dest))?;
    // Explicitly, so that the process umask does not decide; a `./` entry may
    // change it later.
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .map_err(io_err("set mode of", dest))?;
    let result = unpack_into(blob, dest, options);
    if result.is_err()
        && let Err(e) = crate::fsutil::remove_tree(dest)
    {
        tracing::warn!(path = %dest.display(), error = %e, "could not remove a failed layer");
    }
    result
}

fn unpack_into(
    blob: impl Read,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<UnpackStats, ImageError> {
    let label = options.label.as_str();
    let malformed = |source: io::Error| ImageError::MalformedLayer {
        layer: label.to_string(),
        source: Arc::new(source),
    };
    let decoder: Box<dyn Read> = match options.compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(blob))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob).map_err(malformed)?),
    };
    let algorithm = options
        .diff_id
        .as_ref()
        .map_or(DigestAlgorithm::Sha256, Digest::algorithm);
    let state = Rc::new(StreamState::default());
    let stream = GuardedStream::new(
        decoder,
        algorithm,
        state.clone(),
        options.limits.max_bytes,
        MAX_ENTRY_METADATA,
        options.watch.clone(),
    );
    let mut archive = tar::Archive::new(stream);
    let mut writer = LayerWriter::new(dest, label, options.limits);
    let outcome = write_entries(&mut archive, &mut writer, &state)
        .map_err(&malformed)
        .and_then(|inner| inner);
    let digest = outcome.and_then(|()| archive.into_inner().finish().map_err(&malformed));
    // A tripped limit explains whatever error the readers made of it.
    let digest = match (digest, state.tripped()) {
        (Err(_), Some(StreamLimit::Cancelled)) => {
            return Err(ImageError::Cancelled {
                layer: label.to_string(),
            });
        }
        (Err(_), Some(StreamLimit::DiskReserve { available, reserve })) => {
            return Err(ImageError::DiskReserve {
                path: dest.to_path_buf(),
                available,
                reserve,
            });
        }
        (Err(_), Some(limit)) => {
            return Err(ImageError::LayerTooLarge {
                layer: label.to_string(),
                limit: limit.to_string(),
            });
        }
        (digest, _) => digest?,
    };
    if let Some(expected) = &options.diff_id
        && *expected != digest
    {
        return Err(ImageError::DigestMismatch {
            what: format!("uncompressed content of layer {label}"),
            expected: expected.clone(),
            actual: digest,
        });
    }
    let mut stats = writer.finish()?;
    stats.stream_bytes = state.total();
    stats.diff_id = Some(digest);
    Ok(stats)
}

/// Feeds every entry to the writer. The outer error is the archive's (a
/// read failure); the inner one the writer's.
fn write_entries<R: Read>(
    archive: &mut tar::Archive<GuardedStream<R>>,
    writer: &mut LayerWriter<'_>,
    state: &StreamState,
) -> io::Result<Result<(), ImageError>> {
    let mut entries = archive.entries()?;
    loop {
        state.open_metadata_window();
        let Some(entry) = entries.next() else {
            return Ok(Ok(()));
        };
        let mut entry = entry?;
        state.close_metadata_window();
        if let Err(e) = writer.entry(&mut entry) {
            return Ok(Err(e));
        }
        // Unread data (of links, directories, whiteouts) still belongs to the stream.
        io::copy(&mut entry, &mut io::sink())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_layer_media_types() {
        for (media_type, expected) in [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/octet-stream", None),
        ] {
            assert_eq!(
                Compression::of_media_type(media_type),
                expected,
                "{media_type}"
            );
        }
    }
}
