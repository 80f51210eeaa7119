//! Rows of the metadata database and the journal records that change them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{ChunkRef, Event};

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// FIFOs, Unix sockets and device nodes: they work on this node and are
    /// never synced (no event, no content), like ignored names.
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// A FIFO, socket or device node: local to this node, never synced.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice
        )
    }
}

/// Nanoseconds since the Unix epoch (negative before it).
pub type Nanos = i64;

/// One file, folder or symlink. Every inode has one parent and name that
/// syncs, so a path is a walk up the parents, and renaming a folder rewrites
/// one row whatever it holds; hard links add local names (`links`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeRow {
    pub ino: Ino,
    pub parent: Ino,
    pub name: String,
    pub kind: Kind,
    /// Permission bits only (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Nanos,
    pub mtime: Nanos,
    pub ctime: Nanos,
    /// The committed content object (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// SHA-512 hex of the committed content, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Symlink target bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// An event has made this inode known at its current path; changes to
    /// unannounced inodes (ignored names, files not yet closed) emit none.
    #[serde(default)]
    pub announced: bool,
    /// A placement rule set on this file or folder (inherited below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// The device number of a device node (0 for everything else).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u32,
    /// Hard links: the other names (folder, name) of this file on this
    /// node. `parent` and `name` are the name that syncs; these are local.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<(Ino, String)>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where content lives on this node (`auto`, the default, is no rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Always kept here; remote changes are downloaded eagerly.
    Pinned,
    /// Local copies go once safely in the cloud; fetched on open.
    OnlineOnly,
    /// Never leaves this node: no upload, no event.
    LocalOnly,
    /// Only in the volume's cold tier: like online-only, and the chunks
    /// move to the cold tier before the local copies go.
    Cold,
}

impl Placement {
    pub fn name(rule: Option<Placement>) -> &'static str {
        match rule {
            None => "auto",
            Some(Placement::Pinned) => "pinned",
            Some(Placement::OnlineOnly) => "online-only",
            Some(Placement::LocalOnly) => "local-only",
            Some(Placement::Cold) => "cold",
        }
    }

    /// `auto` (no rule), `pinned`, `online-only`, `local-only` or `cold`.
    pub fn parse(s: &str) -> Result<Option<Placement>, String> {
        match s.trim() {
            "auto" | "" => Ok(None),
            "pinned" => Ok(Some(Placement::Pinned)),
            "online-only" => Ok(Some(Placement::OnlineOnly)),
            "local-only" => Ok(Some(Placement::LocalOnly)),
            "cold" => Ok(Some(Placement::Cold)),
            other => Err(format!(
                "{other:?} is not a placement (auto, pinned, online-only, local-only, cold)"
            )),
        }
    }
}

/// One entry of the remote tree: the volume as the event log says it is
/// (every node folds the log with the same rules, so every node holds the
/// same remote tree). Shaped like `InodeRow` so that moving a folder
/// rewrites one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRow {
    pub rid: u64,
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub mtime: Nanos,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The version's object id (its chunks are in `versions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The `mivui` of the event that wrote this version.
    pub mivui: u64,
    /// When that change was made, on its node's clock (conflicts between
    /// concurrent changes go to the newest), and which node made it (ties,
    /// and the name of a conflict copy). Zero / nil / empty in rows written
    /// before these existed: such a head loses to any concurrent change.
    #[serde(default)]
    pub time: Nanos,
    #[serde(default)]
    pub origin: uuid::Uuid,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// One record of the volume's log as this node read it: version history,
/// and the source `restore --at` replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub mivui: u64,
    pub originator: uuid::Uuid,
    #[serde(default)]
    pub node_name: String,
    /// The event; `object` names the version's chunk list in `versions`.
    pub event: Event,
}

/// One journal record. Applying a record twice has the same effect as once,
/// so replay after a crash needs no bookkeeping beyond the applied sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    PutInode(InodeRow),
    DelInode(Ino),
    PutEvent(Event),
    /// The content hash of an event's version, computed after the event.
    SetEventHash {
        id: u64,
        hash: String,
    },
    /// The event is in the cloud's log as `mivui`; its version's content is
    /// the chunks (also kept by object, to fetch it back).
    Published {
        id: u64,
        mivui: u64,
        object: Option<String>,
        chunks: Vec<ChunkRef>,
    },
    /// A named counter in the `state` table (cursors of the sync engine).
    SetState {
        key: String,
        value: u64,
    },
    PutRemote(RemoteRow),
    DelRemote(u64),
    /// The chunks of a version known from the log (`versions` table).
    PutVersion {
        object: String,
        chunks: Vec<ChunkRef>,
    },
    PutLog(LogEntry),
    /// Forgets log entries (pruned versions).
    DelLog(u64),
    /// Sets a `text` value (the log guard's state).
    SetText {
        key: String,
        value: String,
    },
}
