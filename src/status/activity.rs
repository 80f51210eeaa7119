//! The volume's activity: the newest records of its log (every node's
//! changes, as this node read them), then this node's changes not yet in
//! the cloud. What `latus log` and the web app's feed show.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventType};
use crate::meta::{LOG_SEEN, MetaError, PUBLISHED_THROUGH};
use crate::vfs::Vfs;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Activity {
    /// The record's number in the volume's log; `None`: not yet there.
    pub mivui: Option<u64>,
    /// When the change was made (ns since the epoch, its node's clock).
    pub time: i64,
    pub node: String,
    pub node_id: uuid::Uuid,
    pub this_node: bool,
    pub event_type: EventType,
    pub path: String,
    pub src_path: Option<String>,
    pub size: u64,
    pub file_hash: Option<String>,
}

impl Activity {
    fn new(ev: &Event, mivui: Option<u64>, node: &str, this_node: bool) -> Self {
        Self {
            mivui,
            time: if ev.time != 0 { ev.time } else { ev.mtime },
            node: crate::sync::names::display_node_name(node),
            node_id: ev.originator,
            this_node,
            event_type: ev.event_type,
            path: ev.file_path.clone(),
            src_path: ev.src_path.clone(),
            size: ev.size,
            file_hash: ev.file_hash.clone(),
        }
    }
}

/// The newest `limit` log records (node announcements left out), oldest
/// first, then at most `limit` changes of this node waiting to upload.
pub fn activity(vfs: &Vfs, node_name: &str, limit: usize) -> Result<Vec<Activity>, MetaError> {
    let meta = vfs.meta();
    meta.commit_pending()?;
    let me = vfs.node_id();
    let seen = meta.state(LOG_SEEN)?;
    // Log numbers have no holes, so the newest records start here (a pruned
    // record leaves a gap in this node's copy: fewer are shown).
    let from = seen.saturating_sub(limit as u64 * 2);
    let mut out: Vec<Activity> = meta
        .log_since(from, limit * 2)?
        .iter()
        .filter(|e| !e.event.event_type.is_node_record())
        .map(|e| Activity::new(&e.event, Some(e.mivui), &e.node_name, e.originator == me))
        .collect();
    let drop = out.len().saturating_sub(limit);
    out.drain(..drop);
    let after = meta.state(PUBLISHED_THROUGH)?;
    out.extend(
        meta.unpublished_events(after, limit)?
            .iter()
            .map(|e| Activity::new(e, None, node_name, true)),
    );
    Ok(out)
}

/// A path whose last change in the log is a delete, and that is not back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub path: String,
    /// When it was deleted, and by which node.
    pub time: i64,
    pub node: String,
    /// Its last version's size.
    pub size: u64,
}

/// Deleted files that can be restored (newest deletions first).
pub fn deleted(vfs: &Vfs, limit: usize) -> Result<Vec<Deleted>, MetaError> {
    vfs.meta().commit_pending()?;
    let log = vfs.meta().whole_log()?;
    let mut last: std::collections::HashMap<&str, (&crate::meta::LogEntry, u64)> =
        std::collections::HashMap::new();
    for e in &log {
        let ev = &e.event;
        if ev.event_type.is_node_record() {
            continue;
        }
        let size = if ev.event_type.carries_content() {
            ev.size
        } else {
            last.get(ev.file_path.as_str()).map_or(0, |(_, s)| *s)
        };
        last.insert(ev.file_path.as_str(), (e, size));
    }
    let mut out: Vec<Deleted> = last
        .into_iter()
        .filter(|(p, (e, _))| e.event.event_type == EventType::Delete && vfs.resolve(p).is_err())
        .map(|(p, (e, size))| Deleted {
            path: p.to_string(),
            time: if e.event.time != 0 {
                e.event.time
            } else {
                e.event.mtime
            },
            node: crate::sync::names::display_node_name(&e.node_name),
            size,
        })
        .collect();
    out.sort_by(|a, b| b.time.cmp(&a.time).then(a.path.cmp(&b.path)));
    out.truncate(limit);
    Ok(out)
}
