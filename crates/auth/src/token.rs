//! Signed, short-lived tokens: JWTs (RFC 7519) signed with Ed25519 (`EdDSA`).
//!
//! Wharf only verifies tokens it issued itself, so this is the small subset of
//! JOSE it needs rather than a general library: one algorithm, one key, a
//! fixed header. Anything else (another `alg`, `none`, a foreign key id, a
//! bad signature, trailing data) is refused, which also rules out algorithm
//! confusion. The signing key is 32 random bytes generated on first start and
//! kept in the data directory with mode 0600.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Registry access (`/v2/`), per the Docker token scheme.
    Registry,
    /// The admin and cluster API (`/api/v1/`).
    Api,
    /// Exchanged for new access tokens; never accepted as one.
    Refresh,
}

/// One grant in a registry token (`access` claim of the Docker token spec).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

/// The claims Wharf puts in its tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user or robot name; empty for anonymous.
    pub sub: String,
    /// Audience: the registry service name, or the API's.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Not before, unix seconds.
    pub nbf: u64,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// Registry grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<AccessEntry>,
    /// Token purpose.
    pub kind: TokenKind,
    /// The subject's credential epoch at issue; a later epoch revokes it.
    #[serde(default)]
    pub epoch: u64,
    /// The subject account's uid: the token is valid only for that account,
    /// not for another one later created under the same name. Absent in
    /// anonymous tokens and in tokens issued before uids existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// The server's token signing key.
pub struct TokenKeys {
    signing: SigningKey,
    verifying: VerifyingKey,
    key_id: String,
}

impl TokenKeys {
    /// Loads the key from `path`, creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<TokenKeys, AuthError> {
        let io =
            |e: std::io::Error| AuthError::Internal(format!("token key {}: {e}", path.display()));
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                write_private(path, &secret).map_err(io)?;
                secret.to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let secret: [u8; 32] = bytes.try_into().map_err(|_| {
            AuthError::Internal(format!("token key {} is not 32 bytes", path.display()))
        })?;
        Ok(TokenKeys::from_secret(secret))
    }

    /// A key from raw secret bytes.
    pub fn from_secret(secret: [u8; 32]) -> TokenKeys {
        let signing = SigningKey::from_bytes(&secret);
        let verifying = signing.verifying_key();
        let key_id = URL_SAFE_NO_PAD.encode(&verifying.as_bytes()[..9]);
        TokenKeys {
            signing,
            verifying,
            key_id,
        }
    }

    /// The key's id, as tokens' headers name it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The Ed25519 public key (32 bytes), with which anyone can check what
    /// this server signed: P2P peers check peer grants with it.
    pub fn public_key(&self) -> [u8; 32] {
        self.verifying.to_bytes()
    }

    /// The Ed25519 signature of `message`, for other compact JWS formats
    /// signed with this key (P2P peer grants). Only for messages the server
    /// composed itself, with an audience of their own: no token of this
    /// module can be made from them, as they lack its claims (`kind`, `jti`).
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Encodes and signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: "JWT".into(),
            kid: self.key_id.clone(),
        };
        let mut token = String::new();
        token.push_str(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serializes")),
        );
        token.push('.');
        token.push_str(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize")),
        );
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        token
    }

    /// Checks the signature and header and returns the claims. Expiry and
    /// audience are the caller's to check.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let bad = |why: &str| AuthError::Unauthenticated(format!("invalid token: {why}"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(bad("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a JWT"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| bad("malformed header"))?;
        if header.alg != "EdDSA" || header.kid != self.key_id {
            return Err(bad("not signed by this server"));
        }
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("malformed signature"))?;
        let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
        self.verifying
            .verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| bad("signature mismatch"))?;
        URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| bad("malformed claims"))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    wharf_fs::AtomicWrite::new(path)
        .mode(0o600)
        .create_parents()
        .write(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "wharf".into(),
            sub: "alice".into(),
            aud: "wharf-registry".into(),
            exp: 2_000_000_000,
            nbf: 1,
            iat: 1,
            jti: "x".into(),
            access: vec![AccessEntry {
                kind: "repository".into(),
                name: "p/app".into(),
                actions: vec!["pull".into()],
            }],
            kind: TokenKind::Registry,
            epoch: 0,
            uid: "0123".into(),
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let keys = TokenKeys::from_secret([7; 32]);
        let token = keys.sign(&claims());
        assert_eq!(keys.verify(&token).unwrap(), claims());

        // Change one claim, keep the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut forged = claims();
        forged.access[0].actions.push("push".into());
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(keys.verify(&parts.join(".")).is_err());

        // Another server's key.
        let other = TokenKeys::from_secret([8; 32]);
        assert!(keys.verify(&other.sign(&claims())).is_err());

        // alg=none and friends.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":""}"#);
        assert!(
            keys.verify(&format!("{none_header}.{}.", parts[1]))
                .is_err()
        );
        for junk in ["", "a.b", "a.b.c.d", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(keys.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn raw_signatures_check_with_the_public_key_and_make_no_token() {
        let keys = TokenKeys::from_secret([7; 32]);
        let public = VerifyingKey::from_bytes(&keys.public_key()).unwrap();
        let signed = keys.sign(&claims());
        assert!(signed.starts_with(&URL_SAFE_NO_PAD.encode(
            format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, keys.key_id()).as_bytes()
        )));
        let message = b"header.claims";
        let signature = Signature::from_bytes(&keys.sign_raw(message));
        assert!(public.verify_strict(message, &signature).is_ok());
        assert!(public.verify_strict(b"other", &signature).is_err());

        // A grant-shaped JWS with this key's header and signature is not
        // one of this module's tokens: its claims lack `kind` and `jti`.
        let header = URL_SAFE_NO_PAD.encode(
            format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, keys.key_id()).as_bytes(),
        );
        let grant = URL_SAFE_NO_PAD.encode(
            br#"{"aud":"wharf-p2p","sub":"n1","blob":"sha256:00","iat":1,"exp":9999999999}"#,
        );
        let signed = format!("{header}.{grant}");
        let token = format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(keys.sign_raw(signed.as_bytes()))
        );
        let err = keys.verify(&token).unwrap_err();
        assert!(err.to_string().contains("malformed claims"), "{err}");
    }

    #[test]
    fn key_is_created_once_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let first = TokenKeys::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = TokenKeys::load_or_create(&path).unwrap();
        assert!(second.verify(&first.sign(&claims())).is_ok());
    }
}
