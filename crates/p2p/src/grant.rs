//! Peer grants: the server's signed word that a node may fetch one blob
//! from other nodes for a few minutes. The tracker signs one for a node
//! only after checking that the node may pull a repository holding the
//! blob; a peer serves pieces only against a grant naming that blob, so a
//! node can never read through P2P what it could not pull from the
//! registry.
//!
//! The format is a compact JWS (`header.claims.signature`, base64url) with
//! Ed25519, signed by the server's token key; peers verify it with the
//! server's public key alone.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use wharf_oci::Digest;

use crate::P2pError;

/// The audience of every peer grant; tokens for other audiences (registry
/// or API tokens signed by the same key) are refused.
pub const GRANT_AUDIENCE: &str = "wharf-p2p";

/// Longest grant a peer accepts: anything longer was not signed by Wharf's
/// tracker, whatever the signature says.
const MAX_GRANT_BYTES: usize = 4096;

/// What a peer grant says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerGrant {
    /// Always [`GRANT_AUDIENCE`].
    pub aud: String,
    /// The node the grant was issued to.
    pub sub: String,
    /// The one blob it lets the node fetch.
    pub blob: Digest,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Encodes `grant` and signs it with `sign` (the server's Ed25519 key,
/// identified by `key_id`).
pub fn encode_grant(
    grant: &PeerGrant,
    key_id: &str,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        typ: "JWT".into(),
        kid: key_id.to_owned(),
    };
    let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serializes"));
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).expect("grant serializes")));
    let signature = sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

/// The key id a grant's header names (which server key signed it), read
/// without verifying anything: a peer uses it only to notice that the
/// server's key changed. `None` for anything that is not a JWS.
pub fn grant_key_id(token: &str) -> Option<String> {
    if token.len() > MAX_GRANT_BYTES {
        return None;
    }
    let header = token.split('.').next()?;
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    Some(header.kid)
}

/// Checks grants against the server's public key.
#[derive(Clone, Debug)]
pub struct GrantVerifier {
    key: VerifyingKey,
}

impl GrantVerifier {
    /// A verifier for the server key whose public half is `public_key`.
    pub fn new(public_key: &[u8; 32]) -> Result<GrantVerifier, P2pError> {
        let key = VerifyingKey::from_bytes(public_key)
            .map_err(|e| P2pError::Grant(format!("server public key: {e}")))?;
        Ok(GrantVerifier { key })
    }

    /// The grant in `token` if it is signed by the server, for peers, for
    /// `blob`, and not expired at `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, blob: &Digest, now: u64) -> Result<PeerGrant, P2pError> {
        let bad = |why: &str| P2pError::Grant(why.to_owned());
        if token.len() > MAX_GRANT_BYTES {
            return Err(bad("too long"));
        }
        let (signed, signature) = token.rsplit_once('.').ok_or_else(|| bad("not a JWS"))?;
        let (header, claims) = signed.split_once('.').ok_or_else(|| bad("not a JWS"))?;
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("malformed signature"))?;
        self.key
            .verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| bad("bad signature"))?;
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| bad("malformed header"))?;
        if header.alg != "EdDSA" {
            return Err(bad("not EdDSA"));
        }
        let grant: PeerGrant = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or_else(|| bad("malformed claims"))?;
        if grant.aud != GRANT_AUDIENCE {
            return Err(bad("not a peer grant"));
        }
        if &grant.blob != blob {
            return Err(P2pError::Grant(format!(
                "the grant is for {}, not {blob}",
                grant.blob
            )));
        }
        if grant.exp <= now {
            return Err(bad("expired"));
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use wharf_oci::DigestAlgorithm;

    use super::*;

    fn grant(blob: &Digest) -> PeerGrant {
        PeerGrant {
            aud: GRANT_AUDIENCE.into(),
            sub: "n1".into(),
            blob: blob.clone(),
            iat: 100,
            exp: 400,
        }
    }

    #[test]
    fn only_a_fresh_grant_for_the_blob_signed_by_the_server_passes() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let verifier = GrantVerifier::new(key.verifying_key().as_bytes()).unwrap();
        let blob = Digest::of(DigestAlgorithm::Sha256, b"layer");
        let other = Digest::of(DigestAlgorithm::Sha256, b"other");
        let token = encode_grant(&grant(&blob), "k", |m| key.sign(m).to_bytes());

        assert_eq!(verifier.verify(&token, &blob, 200).unwrap().sub, "n1");
        assert!(verifier.verify(&token, &blob, 400).is_err(), "expired");
        assert!(verifier.verify(&token, &other, 200).is_err(), "other blob");

        let forger = SigningKey::from_bytes(&[8; 32]);
        let forged = encode_grant(&grant(&blob), "k", |m| forger.sign(m).to_bytes());
        assert!(verifier.verify(&forged, &blob, 200).is_err(), "other key");

        let mut wrong_audience = grant(&blob);
        wrong_audience.aud = "registry".into();
        let token = encode_grant(&wrong_audience, "k", |m| key.sign(m).to_bytes());
        assert!(verifier.verify(&token, &blob, 200).is_err(), "audience");

        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut claims = grant(&blob);
        claims.exp = u64::MAX;
        let (header, _) = signed.split_once('.').unwrap();
        let tampered = format!(
            "{header}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(verifier.verify(&tampered, &blob, 200).is_err(), "tampered");
        assert!(verifier.verify("a.b", &blob, 200).is_err());
        assert_eq!(grant_key_id(&token).as_deref(), Some("k"));
        assert_eq!(grant_key_id("not a token"), None);
    }
}
