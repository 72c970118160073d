//! Secrets sealed at rest: XChaCha20-Poly1305 under a 32-byte key kept in a
//! 0600 file in the server's data directory. Each sealed value is bound to
//! a name (its associated data) so that a sealed value copied to another
//! item does not open there. Replication seals endpoint passwords with it,
//! the control plane the data of Secret objects.
//!
//! ```
//! let secrets = wharf_seal::SecretBox::from_key([7; 32]);
//! let sealed = secrets.seal("idc-b", "s3cret");
//! assert_eq!(secrets.open("idc-b", &sealed).unwrap(), "s3cret");
//! assert!(secrets.open("idc-c", &sealed).is_err());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Why a key could not be loaded or a value opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or created.
    #[error("key {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("key {} is not {KEY_LEN} bytes", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
    },
    /// The sealed value is damaged, was sealed for another name, or under
    /// another key.
    #[error("the value sealed for {name} cannot be opened with this server's key")]
    Unopenable {
        /// The name the value was to be bound to.
        name: String,
    },
}

/// Seals and opens secrets under one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

// The key never reaches logs.
impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

impl SecretBox {
    /// A box with the given key.
    pub fn from_key(key: [u8; KEY_LEN]) -> SecretBox {
        SecretBox {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Reads the key at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, SealError> {
        let io = |source: std::io::Error| SealError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_LEN] =
                    bytes.as_slice().try_into().map_err(|_| SealError::BadKey {
                        path: path.to_path_buf(),
                    })?;
                Ok(SecretBox::from_key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; KEY_LEN] = rand::random();
                // Another server starting at once may win; both then read its key.
                wharf_fs::AtomicWrite::new(path)
                    .mode(0o600)
                    .no_replace()
                    .write(&key)
                    .or_else(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => Ok(()),
                        _ => Err(io(e)),
                    })?;
                SecretBox::load_or_create(path)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Encrypts the text `secret` bound to `name`.
    pub fn seal(&self, name: &str, secret: &str) -> String {
        self.seal_bytes(name, secret.as_bytes())
    }

    /// Decrypts text that [`seal`](SecretBox::seal) made for `name`.
    pub fn open(&self, name: &str, sealed: &str) -> Result<String, SealError> {
        String::from_utf8(self.open_bytes(name, sealed)?).map_err(|_| SealError::Unopenable {
            name: name.to_string(),
        })
    }

    /// Encrypts `secret` bound to `name`: base64 of the nonce and the
    /// ciphertext with its tag.
    pub fn seal_bytes(&self, name: &str, secret: &[u8]) -> String {
        let nonce = XNonce::generate();
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: name.as_bytes(),
                },
            )
            .expect("encryption in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD_NO_PAD.encode(out)
    }

    /// Decrypts what [`seal_bytes`](SecretBox::seal_bytes) made for `name`.
    pub fn open_bytes(&self, name: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let unopenable = || SealError::Unopenable {
            name: name.to_string(),
        };
        let bytes = STANDARD_NO_PAD.decode(sealed).map_err(|_| unopenable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unopenable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| unopenable())?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| unopenable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let secrets = SecretBox::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let sealed = secrets.seal("idc-b", "s3cret");
        assert!(!sealed.contains("s3cret"));
        assert_ne!(sealed, secrets.seal("idc-b", "s3cret"), "nonces differ");
        assert_eq!(secrets.open("idc-b", &sealed).unwrap(), "s3cret");
        assert!(secrets.open("idc-c", &sealed).is_err());
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.open("idc-b", &sealed).unwrap(), "s3cret");
        let other = SecretBox::from_key([7; 32]);
        assert!(other.open("idc-b", &sealed).is_err());
        assert!(secrets.open("idc-b", "!!").is_err());
    }

    #[test]
    fn bytes_round_trip_and_a_short_key_file_is_refused() {
        let secrets = SecretBox::from_key([1; 32]);
        let blob = [0u8, 255, 10, 13];
        let sealed = secrets.seal_bytes("p/s", &blob);
        assert_eq!(secrets.open_bytes("p/s", &sealed).unwrap(), blob);
        let err = secrets.open_bytes("p/t", &sealed).unwrap_err().to_string();
        assert!(err.contains("p/t"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.key");
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            SecretBox::load_or_create(&path),
            Err(SealError::BadKey { .. })
        ));
    }
}
