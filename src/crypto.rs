//! Keys, sealing and naming: the only code that sees both plaintext and
//! what goes to the cloud.
//!
//! - The volume key: 32 random bytes (`node.key` in the home, 0600), shared
//!   by the nodes of a volume through an exported key file, never sent over
//!   the network.
//! - Subkeys by HKDF-SHA256 (salt `latus v1`): `content` and `events`
//!   (XChaCha20-Poly1305 keys), `names` (HMAC-SHA256 key for object names),
//!   `fingerprint` (8 bytes shown to people to compare keys).
//! - Sealed framing, version 1: `"LTS1" | nonce (24 bytes, random) |
//!   ciphertext | tag (16 bytes)`, where the plaintext sealed is
//!   `length (u64 LE) | data | zeros` padded to a multiple of 4 KiB for
//!   chunks and 512 bytes for events, so the cloud sees size classes, never
//!   exact sizes. Associated data binds a sealed object to its name (chunks)
//!   or to its volume and originator (events), so a swapped, truncated or
//!   altered object fails to open.
//!
//! Version changes: 1 — first format.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

pub const KEY_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"LTS1";
/// Version of the sealed framing (the digit in `MAGIC`).
pub const SEALED_FORMAT: u32 = 1;
/// Version of the exported key file.
pub const KEY_FILE_FORMAT: u32 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The smallest sealed object: framing of an empty plaintext.
pub const SEAL_OVERHEAD: usize = MAGIC.len() + NONCE_LEN + TAG_LEN;
const CHUNK_PAD: usize = 4096;
const EVENT_PAD: usize = 512;
const LEN_PREFIX: usize = 8;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed object is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("not a latus sealed object (bad magic)")]
    BadMagic,
    #[error("authentication failed: the object was altered, swapped, or sealed with another key")]
    Tampered,
    #[error("key file: {0}")]
    KeyFile(String),
}

type HmacSha256 = Hmac<Sha256>;

/// The subkeys of one volume key.
pub struct Keys {
    content: XChaCha20Poly1305,
    events: XChaCha20Poly1305,
    names: [u8; 32],
    /// The log's hash chain (`log_head`).
    heads: [u8; 32],
    /// Node pseudonyms in the log's clear fields (`pseudonym`).
    nodes: [u8; 32],
    /// The content-defined chunker's gear table (`chunker_seed`).
    chunking: [u8; 32],
    fingerprint: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(fingerprint {})", self.fingerprint)
    }
}

fn derive(hk: &Hkdf<Sha256>, info: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hk.expand(info.as_bytes(), &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

impl Keys {
    pub fn derive(master: &[u8; KEY_LEN]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"latus v1"), master);
        let fp = derive(&hk, "fingerprint");
        Self {
            content: XChaCha20Poly1305::new(&derive(&hk, "content").into()),
            events: XChaCha20Poly1305::new(&derive(&hk, "events").into()),
            names: derive(&hk, "names"),
            heads: derive(&hk, "log heads"),
            nodes: derive(&hk, "node pseudonyms"),
            chunking: derive(&hk, "chunking"),
            fingerprint: fingerprint_text(&fp[..8]),
        }
    }

    /// Shown to people to compare keys; reveals nothing about the key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// An object's name: keyed hash of its plaintext, so equal content is
    /// stored once and nobody without the key can test a guess.
    pub fn chunk_name(&self, plaintext: &[u8]) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.names).expect("HMAC takes any key length");
        mac.update(plaintext);
        hex(&mac.finalize().into_bytes())
    }

    /// The log's head after record `mivui` (originator as the log shows
    /// it, sealed payload `payload`), given the head before it: every node
    /// that read the same records computes the same heads, so two nodes
    /// compare what they saw by one value.
    pub fn log_head(
        &self,
        before: &[u8; 32],
        mivui: u64,
        originator: &[u8; 16],
        payload: &[u8],
    ) -> [u8; 32] {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.heads).expect("HMAC takes any key length");
        mac.update(before);
        mac.update(&mivui.to_be_bytes());
        mac.update(originator);
        mac.update(&(payload.len() as u64).to_be_bytes());
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// The name a node goes by in the log's clear fields: a keyed hash of
    /// its id, so the provider cannot link it to the node's id elsewhere.
    pub fn pseudonym(&self, node: &[u8; 16]) -> [u8; 16] {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.nodes).expect("HMAC takes any key length");
        mac.update(node);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The seed of the content-defined chunker: chunk boundaries depend on
    /// the key, so the provider cannot predict a known file's chunk sizes.
    pub fn chunker_seed(&self) -> u64 {
        u64::from_le_bytes(self.chunking[..8].try_into().expect("8 bytes"))
    }

    pub fn seal_chunk(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        seal(
            &self.content,
            name.as_bytes(),
            &padded(plaintext, CHUNK_PAD),
        )
    }

    pub fn open_chunk(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        unpadded(open(&self.content, name.as_bytes(), sealed)?)
    }

    pub fn seal_event(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.events, aad, &padded(plaintext, EVENT_PAD))
    }

    pub fn open_event(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        unpadded(open(&self.events, aad, sealed)?)
    }
}

/// `length | data | zeros`, a multiple of `pad` bytes long.
fn padded(data: &[u8], pad: usize) -> Vec<u8> {
    let len = (LEN_PREFIX + data.len()).div_ceil(pad) * pad;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(len, 0);
    out
}

fn unpadded(mut framed: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
    let len = framed
        .get(..LEN_PREFIX)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(CryptoError::Tampered)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(LEN_PREFIX))
        .filter(|&e| e <= framed.len())
        .ok_or(CryptoError::Tampered)?;
    framed.truncate(end);
    framed.drain(..LEN_PREFIX);
    Ok(framed)
}

fn seal(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("OS random source");
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any length we use");
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    if &sealed[..4] != MAGIC {
        return Err(CryptoError::BadMagic);
    }
    let nonce = XNonce::from_slice(&sealed[4..4 + NONCE_LEN]);
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &sealed[4 + NONCE_LEN..],
                aad,
            },
        )
        .map_err(|_| CryptoError::Tampered)
}

fn fingerprint_text(bytes: &[u8]) -> String {
    hex(bytes)
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("hex is ASCII"))
        .collect::<Vec<_>>()
        .join("-")
}

pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The exported key file (`latus key export`), format version 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub format_version: u32,
    /// The 32-byte volume key, hex.
    pub key: String,
    pub fingerprint: String,
    /// Unix seconds when the key was created.
    pub created: i64,
}

impl KeyFile {
    pub fn new(key: &[u8; KEY_LEN], created: i64) -> Self {
        Self {
            format_version: KEY_FILE_FORMAT,
            key: hex(key),
            fingerprint: Keys::derive(key).fingerprint().to_string(),
            created,
        }
    }

    /// Parses and checks a key file: version, length, and that the
    /// fingerprint it states is the key's own (a typo is caught here).
    pub fn parse(bytes: &[u8]) -> Result<[u8; KEY_LEN], CryptoError> {
        let bad = |m: &str| CryptoError::KeyFile(m.to_string());
        let kf: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| bad(&format!("not a latus key file: {e}")))?;
        if kf.format_version != KEY_FILE_FORMAT {
            return Err(bad(&format!(
                "unsupported format_version {} (this latus reads key file format {KEY_FILE_FORMAT})",
                kf.format_version
            )));
        }
        let key: [u8; KEY_LEN] = decode_hex(&kf.key)
            .ok_or_else(|| bad("\"key\" is not hex"))?
            .try_into()
            .map_err(|_| bad("\"key\" is not 32 bytes"))?;
        let actual = Keys::derive(&key);
        if actual.fingerprint() != kf.fingerprint {
            return Err(bad(&format!(
                "the key does not match its stated fingerprint ({} vs {})",
                kf.fingerprint,
                actual.fingerprint()
            )));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(b: u8) -> Keys {
        Keys::derive(&[b; 32])
    }

    #[test]
    fn seal_round_trips_and_binds_the_name() {
        let k = keys(1);
        let name = k.chunk_name(b"hello");
        let sealed = k.seal_chunk(&name, b"hello");
        assert_eq!(k.open_chunk(&name, &sealed).unwrap(), b"hello");
        assert_eq!(k.open_chunk("other", &sealed), Err(CryptoError::Tampered));
        assert_eq!(
            keys(2).open_chunk(&name, &sealed),
            Err(CryptoError::Tampered)
        );
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn sealed_sizes_are_size_classes() {
        let k = keys(5);
        let a = k.seal_chunk("n", b"x").len();
        let b = k.seal_chunk("n", &[1; 3000]).len();
        assert_eq!(a, b, "a 1-byte and a 3000-byte chunk look alike");
        assert_eq!(a, SEAL_OVERHEAD + CHUNK_PAD);
        assert_eq!(
            k.seal_event(b"", b"{}").len(),
            k.seal_event(b"", &[b' '; 400]).len()
        );
        assert_eq!(
            k.open_chunk("n", &k.seal_chunk("n", &[1; 3000])).unwrap(),
            vec![1; 3000]
        );
    }

    #[test]
    fn names_are_keyed_and_deterministic() {
        assert_eq!(keys(1).chunk_name(b"x"), keys(1).chunk_name(b"x"));
        assert_ne!(keys(1).chunk_name(b"x"), keys(2).chunk_name(b"x"));
        assert_eq!(keys(1).chunk_name(b"x").len(), 64);
    }

    #[test]
    fn key_file_round_trip_and_checks() {
        let kf = KeyFile::new(&[7; 32], 1);
        let json = serde_json::to_vec(&kf).unwrap();
        assert_eq!(KeyFile::parse(&json).unwrap(), [7; 32]);
        let mut wrong = kf.clone();
        wrong.key = hex(&[8; 32]);
        let e = KeyFile::parse(&serde_json::to_vec(&wrong).unwrap()).unwrap_err();
        assert!(e.to_string().contains("fingerprint"), "{e}");
        assert!(KeyFile::parse(b"{}").is_err());
    }

    proptest! {
        /// Any alteration of a sealed object is detected, never opened.
        #[test]
        fn every_alteration_is_detected(data in proptest::collection::vec(any::<u8>(), 0..300), pos in any::<usize>(), flip in 1..=255u8, cut in any::<usize>()) {
            let k = keys(3);
            let sealed = k.seal_chunk("n", &data);
            let mut altered = sealed.clone();
            let p = pos % altered.len();
            altered[p] ^= flip;
            prop_assert!(k.open_chunk("n", &altered).is_err());
            let c = cut % sealed.len();
            prop_assert!(k.open_chunk("n", &sealed[..c]).is_err());
        }

        /// The decoders never panic on arbitrary input.
        #[test]
        fn decoders_survive_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = keys(4).open_event(b"a", &bytes);
            let _ = KeyFile::parse(&bytes);
        }
    }
}
