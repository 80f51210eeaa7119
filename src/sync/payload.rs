//! The sealed payload of a published event: every field of the local event
//! that another node needs, plus the chunk list of its version and its
//! place in the log (`sync::chain`). Only the sealed bytes reach the cloud;
//! the log's clear fields are the volume id, the `mivui` and the
//! originator's pseudonym (`Keys::pseudonym`; its real id is inside).
//!
//! Signed records (format 4): the sealed plaintext is
//! `{"signed": PAYLOAD, "sig": HEX}`, where PAYLOAD is the payload's JSON
//! exactly as signed, carrying the node's public key (`sign_key`), and the
//! signature (`crypto::NodeSigner`) covers the record's associated data
//! and those bytes. Which key is a node's own is the log guard's business
//! (`sync::chain`).
//!
//! Version changes: 1 — first format; 2 — `node_name`, and the event's
//! `base_hash` and `time`; 3 — `seq`, `seen`, `head` (the chains), and
//! the originator in clear is a keyed pseudonym of the node id; 4 — signed
//! (`sign_key`, and the envelope above).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::crypto::{CryptoError, Keys, NodeSigner, verify_signature};
use crate::event::EventType;
use uuid::Uuid;

use crate::event::{ChunkRef, Event};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEvent {
    pub format_version: u32,
    /// The originator's local journal id (makes publishing idempotent).
    pub local_id: u64,
    pub event: Event,
    /// The originator's friendly name (shown in `latus nodes` and conflict
    /// copy names).
    #[serde(default)]
    pub node_name: String,
    /// The version's content, in order; `None` for events without content,
    /// and for a version whose local copy was lost before upload.
    pub chunks: Option<Vec<ChunkRef>>,
    /// For versions with more than `INLINE_CHUNKS` chunks: the name of a
    /// chunk-like object (sealed JSON of the list, named by its keyed hash)
    /// holding the list, which would not fit in one log record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_list: Option<String>,
    /// For `prune` records: the `mivui`s of the versions removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<u64>,
    /// The node's sequence number of this record (1, 2, ...; 0 before
    /// format 3).
    #[serde(default)]
    pub seq: u64,
    /// The `mivui` up to which the node had read the log when it sealed
    /// this, and the log's head there (hex).
    #[serde(default)]
    pub seen: u64,
    #[serde(default)]
    pub head: String,
    /// The originator's public signing key (hex; format 4).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sign_key: String,
    /// The originator's public box key (hex): where new epoch keys are
    /// wrapped for it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub box_key: String,
    /// A new key epoch (on the `forget_node` record that starts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<EpochGrant>,
    /// Whether the record opened with a valid signature by `sign_key`
    /// (known once opened; never serialised).
    #[serde(skip)]
    pub signed: bool,
}

/// A new key epoch's key, wrapped for each node that keeps the volume
/// (`crypto::wrap_epoch`), by node id. The epoch is numbered by the
/// `mivui` of the record that carries it: two removals at once make two
/// epochs, and every node orders them alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochGrant {
    pub wraps: std::collections::BTreeMap<Uuid, String>,
}

/// The sealed plaintext of a signed record.
#[derive(Serialize)]
struct SignedOut<'a> {
    signed: &'a RawValue,
    sig: &'a str,
}

#[derive(Deserialize)]
struct SignedIn<'a> {
    #[serde(borrow)]
    signed: &'a RawValue,
    sig: String,
}

/// Chunk lists longer than this (about 90 KB of JSON, a 1 GiB file at the
/// average chunk size) are stored apart from the event.
pub const INLINE_CHUNKS: usize = 1000;

pub const FORMAT: u32 = 4;

impl PublishedEvent {
    pub fn new(mut event: Event, node_name: &str, chunks: Option<Vec<ChunkRef>>) -> Self {
        event.object = None; // local detail
        event.mivui = None;
        Self {
            format_version: FORMAT,
            local_id: event.id,
            event,
            node_name: node_name.to_string(),
            chunks,
            chunk_list: None,
            pruned: Vec::new(),
            seq: 0,
            seen: 0,
            head: String::new(),
            sign_key: String::new(),
            box_key: String::new(),
            grant: None,
            signed: false,
        }
    }

    /// Places the record in its node's chain and in the log as read.
    pub fn linked(mut self, seq: u64, seen: u64, head: String) -> Self {
        self.seq = seq;
        self.seen = seen;
        self.head = head;
        self
    }

    /// The real node and this record's place in the log, for the guard.
    pub fn link(&self) -> (Uuid, super::chain::Link<'_>) {
        let forgets = (self.event.event_type == EventType::ForgetNode)
            .then(|| self.event.file_path.parse().ok())
            .flatten();
        let link = super::chain::Link {
            seq: self.seq,
            seen: self.seen,
            head: self.head.as_str(),
            signer: self.signed.then_some(self.sign_key.as_str()),
            box_key: (self.signed && !self.box_key.is_empty()).then_some(self.box_key.as_str()),
            forgets,
        };
        (self.event.originator, link)
    }

    /// The originator as the log shows it in clear.
    pub fn clear_originator(keys: &Keys, node: Uuid) -> Uuid {
        Uuid::from_bytes(keys.pseudonym(node.as_bytes()))
    }

    /// Opens a record whose clear originator is `clear`, and checks that
    /// the node inside is the one it names (a payload copied under another
    /// node's name does not open).
    pub fn open_record(
        keys: &Keys,
        aad: &[u8],
        clear: Uuid,
        sealed: &[u8],
    ) -> Result<Self, CryptoError> {
        let p = Self::open(keys, aad, sealed)?;
        let node = p.event.originator;
        let bound = if p.format_version >= 3 {
            Self::clear_originator(keys, node) == clear
        } else {
            node == clear
        };
        if !bound {
            return Err(CryptoError::Tampered);
        }
        Ok(p)
    }

    /// Seals the record, signed by `signer` (whose public key it then
    /// carries).
    pub fn seal(&self, keys: &Keys, aad: &[u8], signer: &NodeSigner) -> Vec<u8> {
        let mut p = self.clone();
        p.format_version = FORMAT;
        p.sign_key = signer.public_hex();
        p.box_key = signer.box_public_hex();
        let body = serde_json::to_string(&p).expect("events serialise");
        let sig = signer.sign(&[aad, body.as_bytes()]);
        let signed = RawValue::from_string(body).expect("a serialised event is JSON");
        let envelope = SignedOut {
            signed: &signed,
            sig: &sig,
        };
        keys.seal_event(
            aad,
            &serde_json::to_vec(&envelope).expect("envelopes serialise"),
        )
    }

    /// Opens a record: signed (format 4; the signature must verify with
    /// the key it carries) or from before signatures.
    pub fn open(keys: &Keys, aad: &[u8], sealed: &[u8]) -> Result<Self, CryptoError> {
        let plain = keys.open_event(aad, sealed)?;
        if let Ok(envelope) = serde_json::from_slice::<SignedIn>(&plain) {
            let body = envelope.signed.get();
            let mut p: Self = serde_json::from_str(body).map_err(|_| CryptoError::Tampered)?;
            if p.format_version > FORMAT {
                return Err(CryptoError::NewerFormat(p.format_version));
            }
            if !verify_signature(&p.sign_key, &[aad, body.as_bytes()], &envelope.sig) {
                return Err(CryptoError::Tampered);
            }
            p.signed = true;
            return Ok(p);
        }
        let mut p: Self = serde_json::from_slice(&plain).map_err(|_| CryptoError::Tampered)?;
        // An unsigned record names no key.
        p.sign_key.clear();
        p.box_key.clear();
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn record() -> PublishedEvent {
        let ev = Event::node_record(Uuid::from_bytes([1; 16]), EventType::Node, String::new(), 5);
        PublishedEvent::new(ev, "alpha", None).linked(1, 0, String::new())
    }

    #[test]
    fn a_signed_record_opens_with_its_signer_and_not_altered() {
        let keys = Keys::derive(&[3; 32]);
        let signer = NodeSigner::generate().unwrap();
        let sealed = record().seal(&keys, b"aad", &signer);
        let p = PublishedEvent::open(&keys, b"aad", &sealed).unwrap();
        assert!(p.signed);
        assert_eq!(p.sign_key, signer.public_hex());
        assert_eq!(p.format_version, 4);
        // Re-sealed with the signature of another body, it does not open.
        let plain = keys.open_event(b"aad", &sealed).unwrap();
        let text = String::from_utf8(plain).unwrap().replace("alpha", "mallo");
        let resealed = keys.seal_event(b"aad", text.as_bytes());
        assert!(PublishedEvent::open(&keys, b"aad", &resealed).is_err());
        // A signature made for other associated data does not verify.
        let moved = keys.seal_event(b"other", &keys.open_event(b"aad", &sealed).unwrap());
        assert!(PublishedEvent::open(&keys, b"other", &moved).is_err());
    }

    #[test]
    fn a_record_of_a_newer_format_is_refused_by_name() {
        let keys = Keys::derive(&[3; 32]);
        let signer = NodeSigner::generate().unwrap();
        let mut p = record();
        p.format_version = FORMAT + 1;
        // (`seal` writes this build's format: sign a newer one by hand.)
        let body = serde_json::to_string(&p).unwrap();
        let sig = signer.sign(&[b"aad", body.as_bytes()]);
        let signed = RawValue::from_string(body).unwrap();
        let plain = serde_json::to_vec(&SignedOut {
            signed: &signed,
            sig: &sig,
        })
        .unwrap();
        let sealed = keys.seal_event(b"aad", &plain);
        assert_eq!(
            PublishedEvent::open(&keys, b"aad", &sealed),
            Err(CryptoError::NewerFormat(FORMAT + 1))
        );
    }

    #[test]
    fn an_unsigned_record_opens_unsigned_whatever_key_it_names() {
        let keys = Keys::derive(&[3; 32]);
        let mut p = record();
        p.sign_key = NodeSigner::generate().unwrap().public_hex();
        let sealed = keys.seal_event(b"aad", &serde_json::to_vec(&p).unwrap());
        let opened = PublishedEvent::open(&keys, b"aad", &sealed).unwrap();
        assert!(!opened.signed && opened.sign_key.is_empty());
    }
}
