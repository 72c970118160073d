//! Blobs as pieces: the piece size a blob gets, the manifest of piece
//! digests every piece is checked against, and the bitmap of pieces a peer
//! holds.

use std::io::Read;
use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wharf_oci::{Digest, DigestAlgorithm, StreamHasher};

use crate::P2pError;

const MIB: u64 = 1 << 20;

/// The piece size for a blob of `size` bytes: 4 MiB up to 256 MiB, 8 MiB up
/// to 1 GiB, 16 MiB beyond. Small pieces start children sooner (a child
/// can fetch a piece once its parent has it whole); big ones keep the
/// manifest and the per-piece requests few for big blobs.
///
/// ```
/// use wharf_p2p::piece_size_for;
/// assert_eq!(piece_size_for(10 << 20), 4 << 20);
/// assert_eq!(piece_size_for(512 << 20), 8 << 20);
/// assert_eq!(piece_size_for(4 << 30), 16 << 20);
/// ```
pub fn piece_size_for(size: u64) -> u64 {
    match size {
        s if s <= 256 * MIB => 4 * MIB,
        s if s <= 1024 * MIB => 8 * MIB,
        _ => 16 * MIB,
    }
}

/// The digests of a blob's pieces, computed once from a verified copy of
/// the blob (the server computes it from its own blob store) and checked
/// against for every piece any peer sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PieceManifest {
    /// The whole blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Bytes per piece; the last piece may be shorter.
    pub piece_size: u64,
    /// The SHA-256 of each piece, in order.
    pub pieces: Vec<Digest>,
}

impl PieceManifest {
    /// Reads the blob from `reader`, hashing each piece and the whole, and
    /// fails unless the whole matches `digest` and `size`. Blocking: run it
    /// off the async workers.
    pub fn compute(
        digest: &Digest,
        size: u64,
        mut reader: impl Read,
    ) -> Result<PieceManifest, P2pError> {
        let piece_size = piece_size_for(size);
        let mut whole = StreamHasher::new(digest.algorithm());
        let mut pieces = Vec::with_capacity(piece_count(size, piece_size) as usize);
        let mut buffer = vec![0u8; piece_size as usize];
        let mut total = 0u64;
        loop {
            let filled = read_full(&mut reader, &mut buffer).map_err(|source| P2pError::Io {
                what: format!("blob {digest}"),
                source,
            })?;
            if filled == 0 {
                break;
            }
            let piece = &buffer[..filled];
            whole.update(piece);
            pieces.push(Digest::of(DigestAlgorithm::Sha256, piece));
            total += filled as u64;
            if filled < buffer.len() {
                break;
            }
        }
        let invalid = |reason: String| P2pError::InvalidManifest {
            digest: digest.to_string(),
            reason,
        };
        if total != size {
            return Err(invalid(format!("read {total} bytes, expected {size}")));
        }
        let actual = whole.finish();
        if &actual != digest {
            return Err(invalid(format!("the blob's content hashes to {actual}")));
        }
        Ok(PieceManifest {
            digest: digest.clone(),
            size,
            piece_size,
            pieces,
        })
    }

    /// Checks that the manifest is shaped as [`PieceManifest::compute`]
    /// makes them: the piece size for its blob size and one digest per piece.
    pub fn validate(&self) -> Result<(), P2pError> {
        let invalid = |reason: String| P2pError::InvalidManifest {
            digest: self.digest.to_string(),
            reason,
        };
        if self.piece_size != piece_size_for(self.size) {
            return Err(invalid(format!(
                "piece size {} is not {} for a blob of {} bytes",
                self.piece_size,
                piece_size_for(self.size),
                self.size
            )));
        }
        let expected = piece_count(self.size, self.piece_size);
        if self.pieces.len() as u64 != expected {
            return Err(invalid(format!(
                "{} piece digests for {expected} pieces",
                self.pieces.len()
            )));
        }
        Ok(())
    }

    /// How many pieces the blob has.
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// The byte range of piece `index` within the blob.
    pub fn piece_range(&self, index: u32) -> Result<Range<u64>, P2pError> {
        if index >= self.piece_count() {
            return Err(P2pError::PieceOutOfRange {
                index,
                count: self.piece_count(),
            });
        }
        let start = u64::from(index) * self.piece_size;
        Ok(start..(start + self.piece_size).min(self.size))
    }

    /// Whether `bytes` is piece `index` exactly.
    pub fn piece_matches(&self, index: u32, bytes: &[u8]) -> bool {
        match (self.piece_range(index), self.pieces.get(index as usize)) {
            (Ok(range), Some(expected)) => {
                bytes.len() as u64 == range.end - range.start
                    && &Digest::of(DigestAlgorithm::Sha256, bytes) == expected
            }
            _ => false,
        }
    }
}

fn piece_count(size: u64, piece_size: u64) -> u64 {
    size.div_ceil(piece_size)
}

/// Reads until `buffer` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Which pieces of a blob a peer holds, one bit per piece. On the wire:
/// `{"len": N, "bits": "<base64 of the bytes, piece 0 in the lowest bit>"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitmap {
    len: u32,
    bits: Vec<u8>,
}

impl Bitmap {
    /// No piece of `len` held.
    pub fn new(len: u32) -> Bitmap {
        Bitmap {
            len,
            bits: vec![0; (len as usize).div_ceil(8)],
        }
    }

    /// Every piece of `len` held.
    pub fn full(len: u32) -> Bitmap {
        let mut bitmap = Bitmap::new(len);
        (0..len).for_each(|i| bitmap.set(i));
        bitmap
    }

    /// How many pieces the blob has.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the blob has no pieces at all (an empty blob).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks piece `index` held; indexes past the end are ignored.
    pub fn set(&mut self, index: u32) {
        if index < self.len {
            self.bits[(index / 8) as usize] |= 1 << (index % 8);
        }
    }

    /// Whether piece `index` is held.
    pub fn has(&self, index: u32) -> bool {
        index < self.len && self.bits[(index / 8) as usize] & (1 << (index % 8)) != 0
    }

    /// How many pieces are held.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every piece is held.
    pub fn is_complete(&self) -> bool {
        self.count() == self.len
    }

    /// The held pieces' indexes, in order.
    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.has(i))
    }

    /// Adds the pieces `other` holds (a fresher view of the same peer: a
    /// peer only gains pieces while it fetches). A bitmap of another length
    /// is for another blob and changes nothing.
    pub fn merge(&mut self, other: &Bitmap) {
        if other.len == self.len {
            self.bits
                .iter_mut()
                .zip(&other.bits)
                .for_each(|(mine, theirs)| *mine |= theirs);
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireBitmap {
    len: u32,
    bits: String,
}

impl Serialize for Bitmap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireBitmap {
            len: self.len,
            bits: STANDARD.encode(&self.bits),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Bitmap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = WireBitmap::deserialize(deserializer)?;
        let bits = STANDARD
            .decode(&wire.bits)
            .map_err(|e| D::Error::custom(format!("bitmap bits: {e}")))?;
        if bits.len() != (wire.len as usize).div_ceil(8) {
            return Err(D::Error::custom(format!(
                "bitmap of {} pieces has {} bytes",
                wire.len,
                bits.len()
            )));
        }
        let mut bitmap = Bitmap {
            len: wire.len,
            bits,
        };
        // Bits past `len` would make `count` lie.
        if let Some(last) = bitmap.bits.last_mut()
            && wire.len % 8 != 0
        {
            *last &= (1u8 << (wire.len % 8)) - 1;
        }
        Ok(bitmap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(size: usize) -> (Vec<u8>, Digest) {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
        (bytes, digest)
    }

    #[test]
    fn a_manifest_covers_the_blob_piece_by_piece() {
        let (bytes, digest) = blob(9 * MIB as usize + 5);
        let manifest = PieceManifest::compute(&digest, bytes.len() as u64, &bytes[..]).unwrap();
        manifest.validate().unwrap();
        assert_eq!(manifest.piece_count(), 3);
        assert_eq!(manifest.piece_range(2).unwrap(), 8 * MIB..9 * MIB + 5);
        for i in 0..3 {
            let range = manifest.piece_range(i).unwrap();
            let piece = &bytes[range.start as usize..range.end as usize];
            assert!(manifest.piece_matches(i, piece));
        }
        let mut bad = bytes[..4 * MIB as usize].to_vec();
        bad[7] ^= 1;
        assert!(!manifest.piece_matches(0, &bad));
        assert!(!manifest.piece_matches(0, &bytes[..10]));
        assert!(manifest.piece_range(3).is_err());
    }

    #[test]
    fn a_blob_that_is_not_its_digest_gets_no_manifest() {
        let (bytes, _) = blob(1000);
        let (_, other) = blob(999);
        let err = PieceManifest::compute(&other, 1000, &bytes[..]).unwrap_err();
        assert!(err.to_string().contains("hashes to"), "{err}");
        let (_, digest) = blob(1000);
        let err = PieceManifest::compute(&digest, 2000, &bytes[..]).unwrap_err();
        assert!(err.to_string().contains("expected 2000"), "{err}");
    }

    #[test]
    fn an_empty_blob_has_no_pieces() {
        let (bytes, digest) = blob(0);
        let manifest = PieceManifest::compute(&digest, 0, &bytes[..]).unwrap();
        assert_eq!(manifest.piece_count(), 0);
        manifest.validate().unwrap();
    }

    #[test]
    fn a_manifest_of_the_wrong_shape_is_refused() {
        let (bytes, digest) = blob(5 * MIB as usize);
        let mut manifest = PieceManifest::compute(&digest, bytes.len() as u64, &bytes[..]).unwrap();
        manifest.pieces.pop();
        assert!(manifest.validate().is_err());
    }

    #[test]
    fn a_merge_adds_pieces_and_ignores_another_blobs_bitmap() {
        let mut fresh = Bitmap::new(11);
        fresh.set(0);
        fresh.set(10);
        let mut known = Bitmap::new(11);
        known.set(1);
        known.merge(&fresh);
        assert_eq!(known.held().collect::<Vec<_>>(), vec![0, 1, 10]);
        known.merge(&Bitmap::full(12));
        assert_eq!(known.count(), 3);
    }

    #[test]
    fn bitmaps_round_trip_and_ignore_stray_bits() {
        let mut bitmap = Bitmap::new(11);
        bitmap.set(0);
        bitmap.set(10);
        bitmap.set(11);
        assert_eq!(bitmap.count(), 2);
        assert_eq!(bitmap.held().collect::<Vec<_>>(), vec![0, 10]);
        let json = serde_json::to_string(&bitmap).unwrap();
        assert_eq!(serde_json::from_str::<Bitmap>(&json).unwrap(), bitmap);
        let stray: Bitmap = serde_json::from_str(r#"{"len":3,"bits":"/w=="}"#).unwrap();
        assert_eq!(stray.count(), 3);
        assert!(stray.is_complete());
        assert!(serde_json::from_str::<Bitmap>(r#"{"len":30,"bits":"/w=="}"#).is_err());
    }
}
