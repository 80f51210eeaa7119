//! The sealed payload of a published event: every field of the local event
//! that another node needs, plus the chunk list of its version. Only the
//! sealed bytes reach the cloud; the log's clear fields are the volume id,
//! the `mivui` and the originator node id.
//!
//! Version changes: 1 — first format; 2 — `node_name`, and the event's
//! `base_hash` and `time`.

use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoError, Keys};
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
}

/// Chunk lists longer than this (about 90 KB of JSON, a 1 GiB file at the
/// average chunk size) are stored apart from the event.
pub const INLINE_CHUNKS: usize = 1000;

impl PublishedEvent {
    pub fn new(mut event: Event, node_name: &str, chunks: Option<Vec<ChunkRef>>) -> Self {
        event.object = None; // local detail
        event.mivui = None;
        Self {
            format_version: 2,
            local_id: event.id,
            event,
            node_name: node_name.to_string(),
            chunks,
            chunk_list: None,
            pruned: Vec::new(),
        }
    }

    pub fn seal(&self, keys: &Keys, aad: &[u8]) -> Vec<u8> {
        keys.seal_event(aad, &serde_json::to_vec(self).expect("events serialise"))
    }

    pub fn open(keys: &Keys, aad: &[u8], sealed: &[u8]) -> Result<Self, CryptoError> {
        let plain = keys.open_event(aad, sealed)?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Tampered)
    }
}
