//! Per-node signing keys (Ed25519). Every record a node publishes is
//! signed with its own key, whose public half travels in the record; the
//! first key a node is seen with is its key from then on (`sync::chain`),
//! so a holder of the volume key cannot publish as another node.
//!
//! The secret key is `node.sign` in the home (32 bytes, hex, 0600), made
//! when the node first publishes; it is never sent anywhere.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::{CryptoError, decode_hex, hex};

/// What a signature covers besides the message: the purpose, so a
/// signature made for one use is never valid for another.
const CONTEXT: &[u8] = b"latus record signature v1\0";

#[derive(Clone)]
pub struct NodeSigner {
    key: SigningKey,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeSigner({})", self.public_hex())
    }
}

impl NodeSigner {
    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| CryptoError::KeyFile(format!("no random source: {e}")))?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The key as stored in `node.sign` (hex of the 32 secret bytes).
    pub fn to_text(&self) -> String {
        hex(self.key.as_bytes())
    }

    pub fn from_text(text: &str) -> Result<Self, CryptoError> {
        let secret: [u8; 32] = decode_hex(text.trim())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CryptoError::KeyFile("node.sign is not 64 hex digits".into()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The public key, as records carry it.
    pub fn public_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// Signs `parts` (joined, after the context).
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        hex(&self.key.sign(&message(parts)).to_bytes())
    }
}

/// Whether `sig` (hex) is the signature of `parts` by `public` (hex).
pub fn verify_signature(public: &str, parts: &[&[u8]], sig: &str) -> bool {
    let Some(public) = decode_hex(public)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let Some(sig) = decode_hex(sig).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    public
        .verify_strict(&message(parts), &Signature::from_bytes(&sig))
        .is_ok()
}

/// The signed bytes: the context, then each part with its length first
/// (so parts cannot be shifted into each other).
fn message(parts: &[&[u8]]) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    for p in parts {
        m.extend_from_slice(&(p.len() as u64).to_le_bytes());
        m.extend_from_slice(p);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let a = NodeSigner::generate().unwrap();
        let b = NodeSigner::generate().unwrap();
        let sig = a.sign(&[b"aad", b"body"]);
        assert!(verify_signature(&a.public_hex(), &[b"aad", b"body"], &sig));
        assert!(!verify_signature(&b.public_hex(), &[b"aad", b"body"], &sig));
        assert!(!verify_signature(&a.public_hex(), &[b"aad", b"bodY"], &sig));
        assert!(!verify_signature(&a.public_hex(), &[b"aadb", b"ody"], &sig));
        assert!(!verify_signature("zz", &[b"aad", b"body"], &sig));
        let again = NodeSigner::from_text(&a.to_text()).unwrap();
        assert_eq!(again.public_hex(), a.public_hex());
        assert!(NodeSigner::from_text("abc").is_err());
    }
}
