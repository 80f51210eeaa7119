//! Sealed checkpoints of the remote tree: a node joining a volume whose
//! log holds millions of records starts from the newest checkpoint and
//! reads only the records after it.
//!
//! A checkpoint at `mivui` M holds what folding the log up to M gave: the
//! remote tree's rows, the chunks of their versions, each node's newest
//! log entry and its removal (for `nodes`; the entries of the current
//! versions are made again from their rows by the reader), and the log
//! guard's state at M (each node's sequence number and keys, removals, and
//! the heads of the last `RECENT_HEADS` records), so the chain checks of
//! `chain` go on from M as if the node had read everything before.
//!
//! In the cloud:
//! - parts: JSON, sealed and named like chunks (keyed hash of the
//!   plaintext), so a part cannot be altered or swapped without failing to
//!   open;
//! - the pointer object `checkpoint`: the manifest (M, the head at M, the
//!   parts, who made it), sealed with the events key bound to the volume
//!   and signed by the node that made it.
//!
//! The cloud can at most hide the newest checkpoint or show an older one:
//! the node then reads more of the log, and everything after the
//! checkpoint is checked as always. A checkpoint that does not open or
//! does not agree with itself is refused (logged) and the node reads the
//! whole log instead. Any node makes one from time to time
//! (`checkpoint_every` records after the last, or `latus log checkpoint`);
//! the parts of the one before the previous are deleted then.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::volume::Volume;
use crate::cloud::CloudError;
use crate::crypto::{NodeSigner, verify_signature};
use crate::event::{ChunkRef, Detection, Event, EventType};
use crate::meta::{Kind, LogEntry, MetaError, RemoteRow};

/// The pointer object's name.
pub const POINTER: &str = "checkpoint";
/// Version of the manifest and parts.
pub const FORMAT: u32 = 1;
/// A checkpoint after this many records since the newest one (default).
pub const DEFAULT_EVERY: u64 = 50_000;
/// Rows per part (a part is a few MB of JSON).
const ROWS_PER_PART: usize = 10_000;
/// Heads before M kept in a checkpoint: records after M whose authors had
/// read up to one of them are checked against it (as `chain` keeps them).
pub const RECENT_HEADS: u64 = 4096;
const AAD: &[u8] = b"latus checkpoint";

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The checkpoint is not one a node of this volume made as it says.
    #[error("the volume's checkpoint is refused: {0}")]
    Refused(String),
}

impl CheckpointError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Cloud(e) if e.is_retryable())
    }
}

/// What the folded log up to `mivui` is: everything a checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub mivui: u64,
    /// The log's head at `mivui` (hex).
    pub head: String,
    pub rows: Vec<RemoteRow>,
    /// The chunks of the rows' versions (what `read` gives; `write` looks
    /// them up itself).
    pub versions: Vec<(String, Vec<ChunkRef>)>,
    pub entries: Vec<LogEntry>,
    /// The log guard's `text` state (`seq:`, `sign:`, `box:`, `removed:`,
    /// `head:` of recent records).
    pub texts: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    volume: Uuid,
    mivui: u64,
    head: String,
    rows: u64,
    parts: Vec<String>,
    /// The previous checkpoint's parts (kept until the next one, for nodes
    /// reading it meanwhile).
    #[serde(default)]
    older: Vec<String>,
    made_by: Uuid,
    made_at: i64,
    signer: String,
    signature: String,
}

impl Manifest {
    fn signed_parts(&self) -> Vec<Vec<u8>> {
        vec![
            AAD.to_vec(),
            self.format.to_be_bytes().to_vec(),
            self.volume.as_bytes().to_vec(),
            self.mivui.to_be_bytes().to_vec(),
            self.head.as_bytes().to_vec(),
            self.rows.to_be_bytes().to_vec(),
            self.parts.join(",").into_bytes(),
            self.made_by.as_bytes().to_vec(),
            self.made_at.to_be_bytes().to_vec(),
        ]
    }
}

/// A remote row in a part: a tuple (no field names), its maker by index
/// into the part's `makers`.
type PackedRow = (
    u64,            // rid
    u64,            // parent
    String,         // name
    Kind,           // kind
    u32,            // mode
    u64,            // size
    i64,            // mtime
    Option<String>, // hash
    Option<String>, // object
    Option<String>, // target
    u64,            // mivui
    i64,            // time
    u32,            // maker
);

#[derive(Default, Serialize, Deserialize)]
struct Part {
    /// (origin, node name) pairs the rows refer to.
    #[serde(default)]
    makers: Vec<(Uuid, String)>,
    #[serde(default)]
    rows: Vec<PackedRow>,
    /// Each version's chunks as (name, size).
    #[serde(default)]
    versions: Vec<(String, Vec<(String, u64)>)>,
    #[serde(default)]
    entries: Vec<LogEntry>,
    #[serde(default)]
    texts: Vec<(String, String)>,
}

impl Part {
    fn pack(&mut self, r: &RemoteRow) {
        let maker = match self
            .makers
            .iter()
            .position(|(o, n)| *o == r.origin && *n == r.node)
        {
            Some(i) => i,
            None => {
                self.makers.push((r.origin, r.node.clone()));
                self.makers.len() - 1
            }
        } as u32;
        self.rows.push((
            r.rid,
            r.parent,
            r.name.clone(),
            r.kind,
            r.mode,
            r.size,
            r.mtime,
            r.hash.clone(),
            r.object.clone(),
            r.target.clone(),
            r.mivui,
            r.time,
            maker,
        ));
    }

    fn unpack(self, snap: &mut Snapshot) -> Result<(), String> {
        for (
            rid,
            parent,
            name,
            kind,
            mode,
            size,
            mtime,
            hash,
            object,
            target,
            mivui,
            time,
            maker,
        ) in self.rows
        {
            let (origin, node) =
                self.makers.get(maker as usize).cloned().ok_or_else(|| {
                    format!("row {rid} names maker {maker}, which it does not list")
                })?;
            snap.rows.push(RemoteRow {
                rid,
                parent,
                name,
                kind,
                mode,
                size,
                mtime,
                hash,
                object,
                target,
                mivui,
                time,
                origin,
                node,
            });
        }
        snap.versions
            .extend(self.versions.into_iter().map(|(object, chunks)| {
                let chunks = chunks
                    .into_iter()
                    .map(|(name, size)| ChunkRef { name, size })
                    .collect();
                (object, chunks)
            }));
        snap.entries.extend(self.entries);
        snap.texts.extend(self.texts);
        Ok(())
    }
}

/// The log entries of the current versions, made from their rows (what
/// version history shows of a file unchanged since the checkpoint).
fn entries_of_rows(snap: &Snapshot) -> Vec<LogEntry> {
    let parents: HashMap<u64, (u64, &str)> = snap
        .rows
        .iter()
        .map(|r| (r.rid, (r.parent, r.name.as_str())))
        .collect();
    let path = |rid: u64| -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = rid;
        while cur != super::REMOTE_ROOT {
            let (parent, name) = parents.get(&cur)?;
            parts.push(*name);
            cur = *parent;
            if parts.len() > super::remote::MAX_DEPTH {
                return None;
            }
        }
        parts.reverse();
        Some(parts.join("/"))
    };
    let known: HashSet<u64> = snap.entries.iter().map(|e| e.mivui).collect();
    let mut seen = HashSet::new();
    snap.rows
        .iter()
        .filter(|r| r.kind == Kind::File && r.mivui > 0 && !known.contains(&r.mivui))
        .filter(|r| seen.insert(r.mivui))
        .filter_map(|r| {
            Some(LogEntry {
                mivui: r.mivui,
                originator: r.origin,
                node_name: r.node.clone(),
                event: Event {
                    id: 0,
                    originator: r.origin,
                    mivui: Some(r.mivui),
                    detection: Detection::RemoteApply,
                    event_type: EventType::Create,
                    file_hash: r.hash.clone(),
                    file_path: path(r.rid)?,
                    mtime: r.mtime,
                    size: r.size,
                    src_path: None,
                    mode: r.mode,
                    link_target: None,
                    base_hash: None,
                    time: r.time,
                    first_wins: false,
                    object: r.object.clone(),
                },
            })
        })
        .collect()
}

/// What making a checkpoint did (`latus log checkpoint`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Made {
    pub mivui: u64,
    pub rows: u64,
    pub parts: u64,
    /// Sealed bytes stored.
    pub bytes: u64,
    /// Parts of the checkpoint before the previous one, deleted.
    pub deleted: u64,
}

fn aad(volume: &Volume) -> Vec<u8> {
    let mut a = AAD.to_vec();
    a.extend_from_slice(volume.id.as_bytes());
    a
}

/// The newest checkpoint's `mivui`, or 0 if there is none (one GET).
/// A pointer that does not open counts as none.
pub fn newest(volume: &Volume) -> Result<u64, CheckpointError> {
    match manifest(volume) {
        Ok(m) => Ok(m.map_or(0, |m| m.mivui)),
        Err(CheckpointError::Refused(_)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Every object the checkpoints use (what `check` must not call orphans).
/// A pointer that does not open names none.
pub fn objects(volume: &Volume) -> Result<HashSet<String>, CloudError> {
    let mut out = HashSet::from([POINTER.to_string()]);
    match manifest(volume) {
        Ok(Some(m)) => {
            out.extend(m.parts);
            out.extend(m.older);
        }
        Err(CheckpointError::Cloud(e)) if e.is_retryable() => return Err(e),
        _ => {}
    }
    Ok(out)
}

/// Not there: a store with a cold folder that is not connected answers a
/// missing object so (it looks there after the hot folder).
fn absent(e: &CloudError) -> bool {
    e.is_not_found() || e.kind == crate::cloud::CloudErrorKind::ColdOffline
}

fn manifest(volume: &Volume) -> Result<Option<Manifest>, CheckpointError> {
    let sealed = match volume.cloud.objects.get(POINTER) {
        Ok(s) => s,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let refused = |why: String| CheckpointError::Refused(why);
    let plain = volume
        .keys
        .open_event(&aad(volume), &sealed)
        .map_err(|e| refused(format!("its pointer does not open ({e})")))?;
    let m: Manifest = serde_json::from_slice(&plain)
        .map_err(|e| refused(format!("its pointer is malformed ({e})")))?;
    if m.format != FORMAT {
        return Err(refused(format!(
            "format {} (this version reads {FORMAT})",
            m.format
        )));
    }
    if m.volume != volume.id {
        return Err(refused("it belongs to another volume".into()));
    }
    let parts: Vec<Vec<u8>> = m.signed_parts();
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    if !verify_signature(&m.signer, &parts, &m.signature) {
        return Err(refused("its signature does not verify".into()));
    }
    Ok(Some(m))
}

/// The chunks of a version, by object (looked up part by part as the
/// checkpoint is written, so they are never all in memory).
pub type ChunksOf<'a> = &'a dyn Fn(&str) -> Result<Option<Vec<ChunkRef>>, MetaError>;

/// Stores `snap` (its rows; versions come from `chunks_of`) as the
/// volume's newest checkpoint, made by `node` at `now`, and deletes the
/// parts of the checkpoint before the previous.
pub fn write(
    volume: &Volume,
    signer: &NodeSigner,
    node: Uuid,
    now: i64,
    snap: &Snapshot,
    chunks_of: ChunksOf,
) -> Result<Made, CheckpointError> {
    let previous = match manifest(volume) {
        Ok(m) => m,
        Err(CheckpointError::Refused(why)) => {
            tracing::warn!(%why, "replacing a checkpoint pointer that does not open");
            None
        }
        Err(e) => return Err(e),
    };
    let mut made = Made {
        mivui: snap.mivui,
        rows: snap.rows.len() as u64,
        ..Made::default()
    };
    let mut names = Vec::new();
    let mut placed = HashSet::new();
    let mut store = |part: &Part| -> Result<(), CheckpointError> {
        let plain = serde_json::to_vec(part).expect("checkpoint parts serialise");
        let name = volume.keys.chunk_name(&plain);
        let sealed = volume.keys.seal_chunk(&name, &plain);
        volume.cloud.objects.put(&name, &sealed)?;
        made.bytes += sealed.len() as u64;
        names.push(name);
        Ok(())
    };
    // The guard's state first, then rows with what they name.
    store(&Part {
        texts: snap.texts.clone(),
        ..Part::default()
    })?;
    for rows in snap.rows.chunks(ROWS_PER_PART) {
        let mut part = Part::default();
        for r in rows {
            part.pack(r);
            if let Some(o) = &r.object
                && !placed.contains(o)
                && let Some(c) = chunks_of(o)?
            {
                placed.insert(o.clone());
                let chunks = c.iter().map(|c| (c.name.clone(), c.size)).collect();
                part.versions.push((o.clone(), chunks));
            }
        }
        store(&part)?;
    }
    // Each node's newest record and removals (the current versions'
    // entries are made again from the rows by the reader).
    if !snap.entries.is_empty() {
        store(&Part {
            entries: snap.entries.clone(),
            ..Part::default()
        })?;
    }
    made.parts = names.len() as u64;
    let mut m = Manifest {
        format: FORMAT,
        volume: volume.id,
        mivui: snap.mivui,
        head: snap.head.clone(),
        rows: snap.rows.len() as u64,
        parts: names,
        older: previous
            .as_ref()
            .map(|p| p.parts.clone())
            .unwrap_or_default(),
        made_by: node,
        made_at: now,
        signer: signer.public_hex(),
        signature: String::new(),
    };
    let parts = m.signed_parts();
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    m.signature = signer.sign(&parts);
    let plain = serde_json::to_vec(&m).expect("manifests serialise");
    volume
        .cloud
        .objects
        .put(POINTER, &volume.keys.seal_event(&aad(volume), &plain))?;
    // The checkpoint before the previous one: no node starts from it now.
    if let Some(p) = previous {
        let keep: HashSet<&String> = m.parts.iter().chain(&m.older).collect();
        for name in p.older.iter().filter(|n| !keep.contains(n)) {
            volume.cloud.objects.delete(name)?;
            made.deleted += 1;
        }
    }
    Ok(made)
}

/// The newest checkpoint, opened and checked, if the volume has one.
pub fn read(volume: &Volume) -> Result<Option<Snapshot>, CheckpointError> {
    let Some(m) = manifest(volume)? else {
        return Ok(None);
    };
    let refused = |why: String| CheckpointError::Refused(why);
    let mut snap = Snapshot {
        mivui: m.mivui,
        head: m.head.clone(),
        ..Snapshot::default()
    };
    for name in &m.parts {
        let sealed = volume.cloud.objects.get(name).map_err(|e| {
            if absent(&e) {
                refused(format!("its part {name} is missing"))
            } else {
                e.into()
            }
        })?;
        let plain = volume
            .keys
            .open_chunk(name, &sealed)
            .map_err(|e| refused(format!("its part {name} does not open ({e})")))?;
        let part: Part = serde_json::from_slice(&plain)
            .map_err(|e| refused(format!("its part {name} is malformed ({e})")))?;
        part.unpack(&mut snap)
            .map_err(|e| refused(format!("its part {name}: {e}")))?;
    }
    if snap.rows.len() as u64 != m.rows {
        return Err(refused(format!(
            "it holds {} rows, its manifest says {}",
            snap.rows.len(),
            m.rows
        )));
    }
    let text = |key: &str| snap.texts.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    if text(&format!("head:{}", m.mivui)) != Some(&m.head) {
        return Err(refused("its head does not match its manifest".into()));
    }
    // The maker's key as the log had it: a holder of the volume key cannot
    // sign as another node.
    if let Some(known) = text(&format!("sign:{}", m.made_by))
        && *known != m.signer
    {
        return Err(refused(format!(
            "it is signed with another key than its maker's ({})",
            m.made_by
        )));
    }
    if snap.entries.iter().any(|e| e.mivui > m.mivui) || snap.rows.iter().any(|r| r.mivui > m.mivui)
    {
        return Err(refused("it holds records after its own number".into()));
    }
    let made = entries_of_rows(&snap);
    snap.entries.extend(made);
    Ok(Some(snap))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cloud::{Cloud, MemEventLog, MemObjectStore, ObjectStore};

    const KEY: [u8; 32] = [7; 32];

    fn volume() -> (Volume, Arc<MemObjectStore>) {
        let objects = Arc::new(MemObjectStore::new());
        let cloud = Cloud {
            objects: objects.clone(),
            log: Arc::new(MemEventLog::new()),
        };
        (Volume::attach(cloud, &KEY, true).unwrap(), objects)
    }

    fn row(rid: u64, name: &str, mivui: u64) -> RemoteRow {
        RemoteRow {
            rid,
            parent: 1,
            name: name.into(),
            kind: Kind::File,
            mode: 0o644,
            size: 3,
            mtime: 5,
            hash: Some("ab".into()),
            object: Some(format!("obj{rid}")),
            target: None,
            mivui,
            time: 9,
            origin: Uuid::nil(),
            node: "n".into(),
        }
    }

    /// `write` with the snapshot's own versions.
    fn write(
        v: &Volume,
        signer: &NodeSigner,
        maker: Uuid,
        now: i64,
        snap: &Snapshot,
    ) -> Result<Made, CheckpointError> {
        let chunks_of = |o: &str| {
            Ok(snap
                .versions
                .iter()
                .find(|(object, _)| object == o)
                .map(|(_, c)| c.clone()))
        };
        super::write(v, signer, maker, now, snap, &chunks_of)
    }

    fn snapshot(mivui: u64, rows: u64, signer: &NodeSigner, maker: Uuid) -> Snapshot {
        let rows: Vec<RemoteRow> = (2..rows + 2).map(|r| row(r, &format!("f{r}"), r)).collect();
        Snapshot {
            mivui,
            head: "11".repeat(32),
            versions: rows
                .iter()
                .map(|r| {
                    let chunks = vec![ChunkRef {
                        name: format!("c{}", r.rid),
                        size: 3,
                    }];
                    (r.object.clone().unwrap(), chunks)
                })
                .collect(),
            rows,
            entries: Vec::new(),
            texts: vec![
                (format!("head:{mivui}"), "11".repeat(32)),
                (format!("sign:{maker}"), signer.public_hex()),
            ],
        }
    }

    #[test]
    fn a_checkpoint_reads_back_as_written_across_parts() {
        let (v, _) = volume();
        let signer = NodeSigner::generate().unwrap();
        let maker = Uuid::new_v4();
        assert!(read(&v).unwrap().is_none(), "no checkpoint yet");
        let snap = snapshot(30_000, 25_000, &signer, maker);
        let made = write(&v, &signer, maker, 1, &snap).unwrap();
        assert_eq!((made.mivui, made.rows, made.parts), (30_000, 25_000, 4));
        let back = read(&v).unwrap().unwrap();
        assert_eq!(back.rows, snap.rows);
        assert_eq!(back.versions, snap.versions);
        assert_eq!(back.texts, snap.texts);
        assert_eq!(newest(&v).unwrap(), 30_000);
    }

    #[test]
    fn a_tampered_part_or_pointer_is_refused() {
        let (v, objects) = volume();
        let signer = NodeSigner::generate().unwrap();
        let maker = Uuid::new_v4();
        write(&v, &signer, maker, 1, &snapshot(10, 3, &signer, maker)).unwrap();
        let parts: Vec<String> = objects
            .list()
            .unwrap()
            .into_iter()
            .filter(|n| n != POINTER && n != "volume")
            .collect();
        let mut sealed = objects.get(&parts[0]).unwrap();
        sealed[30] ^= 1;
        objects.put(&parts[0], &sealed).unwrap();
        let err = read(&v).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Refused(ref w) if w.contains("does not open")),
            "{err}"
        );
        objects.delete(&parts[0]).unwrap();
        assert!(matches!(read(&v), Err(CheckpointError::Refused(w)) if w.contains("missing")));
        let mut pointer = objects.get(POINTER).unwrap();
        pointer[40] ^= 1;
        objects.put(POINTER, &pointer).unwrap();
        assert!(matches!(read(&v), Err(CheckpointError::Refused(w)) if w.contains("pointer")));
        assert_eq!(
            newest(&v).unwrap(),
            0,
            "a pointer that does not open is none"
        );
    }

    #[test]
    fn a_checkpoint_signed_with_another_key_than_its_makers_is_refused() {
        let (v, _) = volume();
        let real = NodeSigner::generate().unwrap();
        let forger = NodeSigner::generate().unwrap();
        let maker = Uuid::new_v4();
        // The log knows the maker by `real`; the checkpoint is signed by
        // another holder of the volume key claiming to be it.
        write(&v, &forger, maker, 1, &snapshot(10, 3, &real, maker)).unwrap();
        assert!(matches!(read(&v), Err(CheckpointError::Refused(w)) if w.contains("another key")));
    }

    #[test]
    fn a_new_checkpoint_deletes_the_parts_of_the_one_before_the_previous() {
        let (v, objects) = volume();
        let signer = NodeSigner::generate().unwrap();
        let maker = Uuid::new_v4();
        let count = || objects.list().unwrap().len();
        let base = count();
        write(&v, &signer, maker, 1, &snapshot(10, 3, &signer, maker)).unwrap();
        let one = count() - base;
        write(&v, &signer, maker, 2, &snapshot(20, 4, &signer, maker)).unwrap();
        let two = count() - base;
        let made = write(&v, &signer, maker, 3, &snapshot(30, 5, &signer, maker)).unwrap();
        // The pointer, the newest and the previous checkpoint's parts stay.
        assert_eq!(made.deleted, one as u64 - 1);
        assert_eq!(count() - base, two + made.parts as usize - (one - 1));
        assert_eq!(read(&v).unwrap().unwrap().mivui, 30);
    }
}
