//! Endpoint credentials encrypted at rest: XChaCha20-Poly1305 under a key
//! kept in a 0600 file next to the token key, bound to the endpoint's name
//! so a sealed password cannot be moved to another endpoint.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::ReplicationError;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Seals and opens endpoint secrets.
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
    pub fn load_or_create(path: &Path) -> Result<SecretBox, ReplicationError> {
        let io = |e: std::io::Error| {
            ReplicationError::Internal(format!("replication key {}: {e}", path.display()))
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                    ReplicationError::Internal(format!(
                        "replication key {} is not {KEY_LEN} bytes",
                        path.display()
                    ))
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

    /// Encrypts `secret` for the endpoint `name`.
    pub fn seal(&self, name: &str, secret: &str) -> String {
        let nonce = XNonce::generate();
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD_NO_PAD.encode(out)
    }

    /// Decrypts what [`seal`](SecretBox::seal) made for `name`.
    pub fn open(&self, name: &str, sealed: &str) -> Result<String, ReplicationError> {
        let unusable = || {
            ReplicationError::Internal(format!(
                "the stored password of endpoint {name} cannot be decrypted with this server's replication key"
            ))
        };
        let bytes = STANDARD_NO_PAD.decode(sealed).map_err(|_| unusable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unusable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| unusable())?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| unusable())?;
        String::from_utf8(plain).map_err(|_| unusable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replication.key");
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
}
