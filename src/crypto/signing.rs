//! Per-node signing keys (Ed25519). Every record a node publishes is
//! signed with its own key, whose public half travels in the record; the
//! first key a node is seen with is its key from then on (`sync::chain`),
//! so a holder of the volume key cannot publish as another node.
//!
//! The same secret gives the node's box key (X25519, through HKDF): a new
//! key epoch's key is wrapped for each remaining node's box key
//! (`wrap_epoch`), an ephemeral X25519 exchange sealed with
//! XChaCha20-Poly1305, so only those nodes can open it.
//!
//! The secret key is `node.sign` in the home (32 bytes, hex, 0600), made
//! when the node first starts; it is never sent anywhere.

use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use super::{CryptoError, KEY_LEN, decode_hex, hex};

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

    /// The node's box key (X25519), for receiving wrapped epoch keys.
    fn box_secret(&self) -> StaticSecret {
        let hk = Hkdf::<Sha256>::new(Some(b"latus node box key v1"), self.key.as_bytes());
        let mut secret = [0u8; 32];
        hk.expand(b"x25519", &mut secret)
            .expect("32 bytes is a valid HKDF output");
        StaticSecret::from(secret)
    }

    /// The public box key, as records carry it.
    pub fn box_public_hex(&self) -> String {
        hex(PublicKey::from(&self.box_secret()).as_bytes())
    }

    /// Opens an epoch key wrapped for this node (`wrap_epoch`).
    pub fn unwrap_epoch(&self, wrapped: &str) -> Result<[u8; KEY_LEN], CryptoError> {
        let bytes = decode_hex(wrapped).ok_or(CryptoError::Tampered)?;
        if bytes.len() < 32 {
            return Err(CryptoError::Truncated(bytes.len()));
        }
        let (ephemeral, sealed) = bytes.split_at(32);
        let ephemeral = PublicKey::from(<[u8; 32]>::try_from(ephemeral).expect("32 bytes"));
        let secret = self.box_secret();
        let mine = PublicKey::from(&secret);
        let cipher = wrap_cipher(
            &secret.diffie_hellman(&ephemeral).to_bytes(),
            &ephemeral,
            &mine,
        );
        super::open(&cipher, b"latus epoch key", sealed)?
            .try_into()
            .map_err(|_| CryptoError::Tampered)
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

/// Wraps an epoch key for the node whose public box key is `recipient`
/// (hex): `ephemeral public key (32 bytes) | sealed key`, hex.
pub fn wrap_epoch(master: &[u8; KEY_LEN], recipient: &str) -> Result<String, CryptoError> {
    let recipient: [u8; 32] = decode_hex(recipient)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| CryptoError::KeyFile("a node's box key is not 32 bytes of hex".into()))?;
    let recipient = PublicKey::from(recipient);
    let mut eph = [0u8; 32];
    getrandom::fill(&mut eph)
        .map_err(|e| CryptoError::KeyFile(format!("no random source: {e}")))?;
    let eph = StaticSecret::from(eph);
    let eph_public = PublicKey::from(&eph);
    let cipher = wrap_cipher(
        &eph.diffie_hellman(&recipient).to_bytes(),
        &eph_public,
        &recipient,
    );
    let mut out = eph_public.as_bytes().to_vec();
    out.extend(super::seal(&cipher, b"latus epoch key", master));
    Ok(hex(&out))
}

fn wrap_cipher(
    shared: &[u8; 32],
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> XChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(b"latus epoch wrap v1"), shared);
    let mut info = ephemeral.as_bytes().to_vec();
    info.extend_from_slice(recipient.as_bytes());
    let mut key = [0u8; 32];
    hk.expand(&info, &mut key)
        .expect("32 bytes is a valid HKDF output");
    XChaCha20Poly1305::new(&key.into())
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

    #[test]
    fn an_epoch_key_opens_only_for_the_node_it_was_wrapped_for() {
        let (a, b) = (
            NodeSigner::generate().unwrap(),
            NodeSigner::generate().unwrap(),
        );
        let master = [9u8; 32];
        let wrapped = wrap_epoch(&master, &a.box_public_hex()).unwrap();
        assert_eq!(a.unwrap_epoch(&wrapped).unwrap(), master);
        assert!(b.unwrap_epoch(&wrapped).is_err());
        let mut bad = wrapped.into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert!(a.unwrap_epoch(std::str::from_utf8(&bad).unwrap()).is_err());
    }
}
