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
//!   `length (u64 LE) | data | zeros` padded to a size bucket (`bucket`):
//!   at least 4 KiB for chunks and 512 bytes for events, then eight
//!   buckets per doubling (at most 12.5% larger), so the cloud sees a few
//!   size classes, never exact sizes. Associated data binds a sealed object
//!   to its name (chunks) or to its volume and originator (events), so a
//!   swapped, truncated or altered object fails to open.
//!
//! Version changes: 1 — first format. Padding to buckets (was: multiples of
//! 4 KiB / 512 bytes) needs no format change: readers take the length
//! prefix and ignore the zeros.

mod signing;

pub use signing::{NodeSigner, verify_signature, wrap_epoch};

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
/// The smallest padded plaintext of a chunk and of an event.
const CHUNK_PAD: usize = 4096;
const EVENT_PAD: usize = 512;
/// Buckets per doubling of size, as a power of two (2^3 = 8).
const BUCKET_BITS: u32 = 3;
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
    #[error("written by a newer latus (format {0}); upgrade latus to read it")]
    NewerFormat(u32),
}

type HmacSha256 = Hmac<Sha256>;

/// The keys of one key epoch. Epoch 0 comes from the volume key; each
/// `latus nodes remove` starts the next one from 32 random bytes, wrapped
/// for the remaining nodes only (`NodeSigner::unwrap_epoch`), so a removed
/// node cannot read what is sealed afterwards.
struct EpochKeys {
    number: u64,
    master: [u8; KEY_LEN],
    content: XChaCha20Poly1305,
    events: XChaCha20Poly1305,
    names: [u8; 32],
}

impl EpochKeys {
    fn derive(number: u64, master: &[u8; KEY_LEN]) -> Self {
        // Epoch 0 keeps the subkeys volumes always had.
        let salt: &[u8] = if number == 0 {
            b"latus v1"
        } else {
            b"latus epoch v1"
        };
        let hk = Hkdf::<Sha256>::new(Some(salt), master);
        Self {
            number,
            master: *master,
            content: XChaCha20Poly1305::new(&derive(&hk, "content").into()),
            events: XChaCha20Poly1305::new(&derive(&hk, "events").into()),
            names: derive(&hk, "names"),
        }
    }

    fn chunk_name(&self, plaintext: &[u8]) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.names).expect("HMAC takes any key length");
        mac.update(plaintext);
        hex(&mac.finalize().into_bytes())
    }
}

/// The subkeys of one volume key, and of its later key epochs. Content and
/// events are sealed with the newest epoch and opened with any; the log's
/// heads, node pseudonyms and the chunker stay those of the volume key.
pub struct Keys {
    /// Oldest first; never empty (epoch 0 first).
    epochs: crate::locks::Mutex<Vec<std::sync::Arc<EpochKeys>>>,
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
            epochs: crate::locks::Mutex::new(vec![std::sync::Arc::new(EpochKeys::derive(
                0, master,
            ))]),
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

    /// Adds key epoch `number` (from its 32 random bytes); false if it
    /// was known.
    pub fn add_epoch(&self, number: u64, master: &[u8; KEY_LEN]) -> bool {
        let mut epochs = crate::locks::lock(&self.epochs);
        if number == 0 || epochs.iter().any(|e| e.number == number) {
            return false;
        }
        epochs.push(std::sync::Arc::new(EpochKeys::derive(number, master)));
        epochs.sort_by_key(|e| e.number);
        true
    }

    /// The newest key epoch (0: the volume key's own).
    pub fn epoch(&self) -> u64 {
        self.current().number
    }

    /// Every later epoch's number and key (for key files and the home).
    pub fn epoch_keys(&self) -> Vec<(u64, [u8; KEY_LEN])> {
        crate::locks::lock(&self.epochs)
            .iter()
            .filter(|e| e.number > 0)
            .map(|e| (e.number, e.master))
            .collect()
    }

    fn current(&self) -> std::sync::Arc<EpochKeys> {
        crate::locks::lock(&self.epochs)
            .last()
            .expect("epoch 0")
            .clone()
    }

    /// Newest first.
    fn all(&self) -> Vec<std::sync::Arc<EpochKeys>> {
        crate::locks::lock(&self.epochs)
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    /// An object's name: keyed hash of its plaintext (under the newest
    /// epoch), so equal content is stored once and nobody without the key
    /// can test a guess.
    pub fn chunk_name(&self, plaintext: &[u8]) -> String {
        self.current().chunk_name(plaintext)
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

    /// Whether `stored` bytes can be the sealed chunk of `plain_len`
    /// bytes, as this version pads it or as earlier versions did (4 KiB
    /// multiples): a presence check that also confirms the length.
    pub fn is_sealed_chunk_len(plain_len: usize, stored: u64) -> bool {
        let framed = LEN_PREFIX + plain_len;
        [
            bucket(framed, CHUNK_PAD),
            framed.div_ceil(CHUNK_PAD) * CHUNK_PAD,
        ]
        .iter()
        .any(|&padded| (SEAL_OVERHEAD + padded) as u64 == stored)
    }

    pub fn seal_chunk(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        seal(
            &self.current().content,
            name.as_bytes(),
            &padded(plaintext, CHUNK_PAD),
        )
    }

    /// Opens a chunk sealed in any epoch, and checks that its plaintext is
    /// what the name says (named in any epoch: an upload may straddle the
    /// start of one).
    pub fn open_chunk(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let all = self.all();
        let mut first = None;
        for e in &all {
            match open(&e.content, name.as_bytes(), sealed) {
                Ok(framed) => {
                    let plain = unpadded(framed)?;
                    if !all.iter().any(|k| k.chunk_name(&plain) == name) {
                        return Err(CryptoError::Tampered);
                    }
                    return Ok(plain);
                }
                // The error the volume key's own attempt gave.
                Err(err) => {
                    first.get_or_insert(err);
                }
            }
        }
        Err(first.unwrap_or(CryptoError::Tampered))
    }

    pub fn seal_event(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.current().events, aad, &padded(plaintext, EVENT_PAD))
    }

    /// Opens an event sealed in any epoch.
    pub fn open_event(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut first = None;
        for e in self.all() {
            match open(&e.events, aad, sealed) {
                Ok(framed) => return unpadded(framed),
                Err(err) => {
                    first.get_or_insert(err);
                }
            }
        }
        Err(first.expect("epoch 0"))
    }
}

/// The padded length of `len` bytes: a multiple of `min`, and above
/// `min << BUCKET_BITS` one of `2^BUCKET_BITS` equal steps per doubling.
/// A provider then learns a size to within 12.5%, not to `min` bytes (for
/// chunks of 256 KiB–4 MiB: 32 classes instead of 960).
pub fn bucket(len: usize, min: usize) -> usize {
    let top = usize::BITS - 1 - len.max(1).leading_zeros();
    let step = (1usize << top.saturating_sub(BUCKET_BITS)).max(min);
    len.div_ceil(step).max(1) * step
}

/// `length | data | zeros`, padded to a size bucket (`bucket`).
fn padded(data: &[u8], pad: usize) -> Vec<u8> {
    let len = bucket(LEN_PREFIX + data.len(), pad);
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
    /// The volume's later key epochs (after `latus nodes remove`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epochs: Vec<EpochKey>,
}

/// A key epoch's number and key (hex), as key files and the home keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochKey {
    pub epoch: u64,
    pub key: String,
}

impl EpochKey {
    pub fn new(epoch: u64, key: &[u8; KEY_LEN]) -> Self {
        Self {
            epoch,
            key: hex(key),
        }
    }

    pub fn master(&self) -> Result<[u8; KEY_LEN], CryptoError> {
        decode_hex(&self.key)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                CryptoError::KeyFile(format!("epoch {}: not 32 bytes of hex", self.epoch))
            })
    }
}

impl KeyFile {
    pub fn new(key: &[u8; KEY_LEN], created: i64) -> Self {
        Self {
            format_version: KEY_FILE_FORMAT,
            key: hex(key),
            fingerprint: Keys::derive(key).fingerprint().to_string(),
            created,
            epochs: Vec::new(),
        }
    }

    /// The key file's later key epochs (empty for most volumes).
    pub fn parse_epochs(bytes: &[u8]) -> Result<Vec<EpochKey>, CryptoError> {
        Self::parse(bytes)?;
        let kf: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| CryptoError::KeyFile(format!("not a latus key file: {e}")))?;
        for e in &kf.epochs {
            e.master()?;
        }
        Ok(kf.epochs)
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
        let n3000 = k.chunk_name(&[1; 3000]);
        assert_eq!(
            k.open_chunk(&n3000, &k.seal_chunk(&n3000, &[1; 3000]))
                .unwrap(),
            vec![1; 3000]
        );
        // Sealed right but named for other content: refused.
        assert_eq!(
            k.open_chunk("n", &k.seal_chunk("n", &[1; 3000])),
            Err(CryptoError::Tampered)
        );
        let big = vec![7; (1 << 20) + 1];
        let big_name = k.chunk_name(&big);
        let sealed = k.seal_chunk(&big_name, &big);
        assert!(Keys::is_sealed_chunk_len(big.len(), sealed.len() as u64));
        assert!(!Keys::is_sealed_chunk_len(
            big.len(),
            sealed.len() as u64 - 1
        ));
        assert!(Keys::is_sealed_chunk_len(
            big.len(),
            (SEAL_OVERHEAD + (1 << 20) + 4096) as u64
        ));
        assert_eq!(sealed.len(), SEAL_OVERHEAD + (1 << 20) + (1 << 17));
        assert_eq!(k.open_chunk(&big_name, &sealed).unwrap(), big);
    }

    #[test]
    fn a_later_epoch_seals_what_the_volume_key_alone_cannot_open() {
        let (k, old) = (keys(6), keys(6));
        let aad = b"aad";
        let before = k.seal_event(aad, b"before");
        let old_chunk = k.chunk_name(b"old");
        let old_sealed = k.seal_chunk(&old_chunk, b"old");
        assert!(k.add_epoch(40, &[8; 32]) && !k.add_epoch(40, &[9; 32]));
        assert_eq!(k.epoch(), 40);
        let after = k.seal_event(aad, b"after");
        let name = k.chunk_name(b"new");
        assert_ne!(name, old.chunk_name(b"new"), "names are keyed by epoch");
        let sealed = k.seal_chunk(&name, b"new");
        // The newer keys open both epochs; the volume key alone, only the old.
        assert_eq!(k.open_event(aad, &before).unwrap(), b"before");
        assert_eq!(k.open_event(aad, &after).unwrap(), b"after");
        assert_eq!(k.open_chunk(&old_chunk, &old_sealed).unwrap(), b"old");
        assert_eq!(k.open_chunk(&name, &sealed).unwrap(), b"new");
        assert!(old.open_event(aad, &after).is_err());
        assert!(old.open_chunk(&name, &sealed).is_err());
        assert_eq!(k.epoch_keys(), [(40, [8; 32])]);
        // Heads and pseudonyms stay the volume key's: every node agrees.
        assert_eq!(k.pseudonym(&[1; 16]), old.pseudonym(&[1; 16]));
    }

    #[test]
    fn buckets_cost_at_most_an_eighth_and_are_few() {
        let mut classes = std::collections::BTreeSet::new();
        for len in (256 << 10..=4 << 20).step_by(997) {
            let b = bucket(len, CHUNK_PAD);
            assert!(b >= len && b.is_multiple_of(CHUNK_PAD), "{len} -> {b}");
            assert!((b - len) * 8 <= len, "{len} -> {b}: over 12.5%");
            classes.insert(b);
        }
        assert!(classes.len() <= 33, "{} classes", classes.len());
        assert_eq!(bucket(1, 512), 512);
        assert_eq!(bucket(4096, 512), 4096);
        assert_eq!(bucket(4097, 512), 4608);
        assert_eq!(bucket(0, 4096), 4096);
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
