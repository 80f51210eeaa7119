//! The sealed payload of a published event: every field of the local event
//! that another node needs, plus the chunk list of its version and its
//! place in the log (`sync::chain`). Only the sealed bytes reach the cloud;
//! the log's clear fields are the volume id, the `mivui` and the
//! originator's pseudonym (`Keys::pseudonym`; its real id is inside).
//!
//! Version changes: 1 — first format; 2 — `node_name`, and the event's
//! `base_hash` and `time`; 3 — `seq`, `seen`, `head` (the chains), and
//! the originator in clear is a keyed pseudonym of the node id.

use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoError, Keys};
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
}

/// Chunk lists longer than this (about 90 KB of JSON, a 1 GiB file at the
/// average chunk size) are stored apart from the event.
pub const INLINE_CHUNKS: usize = 1000;

pub const FORMAT: u32 = 3;

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
        let link = super::chain::Link {
            seq: self.seq,
            seen: self.seen,
            head: self.head.as_str(),
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

    pub fn seal(&self, keys: &Keys, aad: &[u8]) -> Vec<u8> {
        keys.seal_event(aad, &serde_json::to_vec(self).expect("events serialise"))
    }

    pub fn open(keys: &Keys, aad: &[u8], sealed: &[u8]) -> Result<Self, CryptoError> {
        let plain = keys.open_event(aad, sealed)?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Tampered)
    }
}
