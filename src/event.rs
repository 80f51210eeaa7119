//! The event record: one immutable change, journaled locally and (later)
//! published to the volume's event log.
//!
//! Field names are a contract (`latus log --json` prints them as they are).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a change was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detection {
    /// A call through the mounted filesystem.
    Filesystem,
    /// Import of content that existed before the node joined.
    InitialImport,
    /// Replay of another node's event.
    RemoteApply,
    /// A restore of an old version.
    Restore,
    /// A conflict copy: a version that lost its name to a newer one.
    Conflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Create,
    Modify,
    Delete,
    Move,
    Mkdir,
    Rmdir,
    Symlink,
    Setattr,
    /// Log-only: a node announcing itself (name, time); never journaled.
    Node,
    /// Log-only: a node forgotten by `latus nodes remove` (`file_path` is its id).
    ForgetNode,
    /// Log-only: versions removed by `latus prune` (listed in the payload).
    Prune,
}

/// One change. `mivui` stays `None` until the cloud assigns the sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Local journal sequence (this node only; the cloud order is `mivui`).
    pub id: u64,
    pub originator: Uuid,
    pub mivui: Option<u64>,
    pub detection: Detection,
    pub event_type: EventType,
    /// SHA-512 hex of the content; `None` while it is still being hashed,
    /// and for events that carry no content.
    pub file_hash: Option<String>,
    /// Relative to the latus folder, `/`-separated.
    pub file_path: String,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub size: u64,
    pub src_path: Option<String>,
    pub mode: u32,
    /// Symlink target, for `symlink` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// SHA-512 of the version this change replaced (modify, delete, move),
    /// as the writer had it: the base of conflict detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_hash: Option<String>,
    /// When the change was recorded (nanoseconds since the epoch, the
    /// writer's clock): what `restore --at` and version history show.
    #[serde(default)]
    pub time: i64,
    /// The node that made this change wants the version first in the log
    /// to keep a name it changed concurrently (`conflict_policy: first`);
    /// otherwise the newest change keeps it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_wins: bool,
    /// Local content object holding this version (not part of the cloud record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

impl Event {
    /// A log-only record about a node (`Node`: hello; `ForgetNode`: `path`
    /// is the forgotten node's id). Local id 0: never journaled.
    pub fn node_record(originator: Uuid, event_type: EventType, path: String, time: i64) -> Self {
        Event {
            id: 0,
            originator,
            mivui: None,
            detection: Detection::Filesystem,
            event_type,
            file_hash: None,
            file_path: path,
            mtime: time,
            size: 0,
            src_path: None,
            mode: 0,
            link_target: None,
            base_hash: None,
            time,
            first_wins: false,
            object: None,
        }
    }
}

impl EventType {
    pub fn carries_content(self) -> bool {
        matches!(self, EventType::Create | EventType::Modify)
    }

    /// Records about nodes, not about the tree.
    pub fn is_node_record(self) -> bool {
        matches!(
            self,
            EventType::Node | EventType::ForgetNode | EventType::Prune
        )
    }
}

/// One chunk of a published version: its object name (keyed hash of the
/// plaintext) and plaintext size. The list, in order, is the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub name: String,
    pub size: u64,
}
