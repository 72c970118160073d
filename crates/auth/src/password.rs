//! Password and secret hashing with argon2id.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::AuthError;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;
/// Longest password accepted; longer ones are refused before any hashing.
pub const MAX_PASSWORD: usize = 1024;

/// Checks length limits.
pub fn check_password(password: &str) -> Result<(), AuthError> {
    if password.len() < MIN_PASSWORD {
        return Err(AuthError::Invalid(format!(
            "password too short: use at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > MAX_PASSWORD {
        return Err(AuthError::Invalid(format!(
            "password too long: at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// Hashes `password` with a fresh random salt (PHC string). CPU-heavy: call
/// from a blocking thread.
pub(crate) fn hash(password: &str) -> Result<String, AuthError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing password: {e}")))
}

/// Whether `password` matches `hash`. CPU-heavy: call from a blocking thread.
pub(crate) fn verify(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A valid hash of a random password: verified against when a user does not
/// exist, so that unknown and known names take the same time to refuse.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| hash(&format!("{:032x}", rand::random::<u128>())).expect("hashing a decoy"))
}

/// [`hash`] on a blocking thread, off the async workers.
pub(crate) async fn hash_blocking(secret: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || hash(&secret))
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
}

/// [`verify`] on a blocking thread, off the async workers.
pub(crate) async fn verify_blocking(secret: String, hash: String) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || verify(&secret, &hash))
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("correct horse", &a));
        assert!(!verify("wrong horse", &a));
        assert!(!verify("x", "not a hash"));
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
    }
}
