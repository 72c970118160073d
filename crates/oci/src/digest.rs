use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::Error;

/// Hash algorithms the registry verifies content with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// SHA-256, the canonical algorithm.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The algorithm's name as it appears in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }
}

/// A content digest `algorithm:hex`, validated and normalised.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: DigestAlgorithm,
    // The whole `algorithm:hex` text, kept so that formatting is free on hot paths.
    text: String,
}

impl Digest {
    /// Digest of `bytes` under `algorithm`.
    pub fn of(algorithm: DigestAlgorithm, bytes: &[u8]) -> Digest {
        let mut hasher = StreamHasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// The full `algorithm:hex` text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

// Grammar from the OCI image spec: algorithm-component ([+._-] algorithm-component)*.
fn is_valid_algorithm(algorithm: &str) -> bool {
    !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || Error::InvalidDigest(s.to_string());
        let (algorithm, encoded) = s.split_once(':').ok_or_else(invalid)?;
        if !is_valid_algorithm(algorithm)
            || encoded.is_empty()
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        {
            return Err(invalid());
        }
        let algorithm = match algorithm {
            "sha256" => DigestAlgorithm::Sha256,
            "sha512" => DigestAlgorithm::Sha512,
            other => return Err(Error::UnsupportedAlgorithm(other.to_string())),
        };
        let is_lower_hex = encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if encoded.len() != algorithm.hex_len() || !is_lower_hex {
            return Err(invalid());
        }
        Ok(Digest {
            algorithm,
            text: s.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental hashing of streamed content.
#[derive(Clone)]
pub enum StreamHasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl StreamHasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: DigestAlgorithm) -> StreamHasher {
        match algorithm {
            DigestAlgorithm::Sha256 => StreamHasher::Sha256(sha2::Sha256::new()),
            DigestAlgorithm::Sha512 => StreamHasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            StreamHasher::Sha256(_) => DigestAlgorithm::Sha256,
            StreamHasher::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    /// Feeds more content.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            StreamHasher::Sha256(h) => h.update(bytes),
            StreamHasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self {
            StreamHasher::Sha256(h) => hex::encode(h.finalize()),
            StreamHasher::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_known_sha256() {
        let d = Digest::of(DigestAlgorithm::Sha256, b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.hex().len(), 64);
    }

    #[test]
    fn computes_sha512_and_round_trips() {
        let d = Digest::of(DigestAlgorithm::Sha512, b"abc");
        assert!(d.as_str().starts_with("sha512:ddaf35a193617aba"));
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut h = StreamHasher::new(DigestAlgorithm::Sha256);
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), Digest::of(DigestAlgorithm::Sha256, b"hello"));
    }

    #[test]
    fn rejects_malformed_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:xyz",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/..",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(Error::InvalidDigest(_))),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn unknown_algorithm_is_unsupported_not_invalid() {
        assert_eq!(
            "blake3:abcd".parse::<Digest>(),
            Err(Error::UnsupportedAlgorithm("blake3".into()))
        );
    }
}
