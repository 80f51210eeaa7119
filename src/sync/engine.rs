//! The sync engine: folds the volume's log into the remote tree and makes
//! the local tree follow it, through the planner and the core's actions.
//!
//! Three views (as in Dropbox's Nucleus): the remote tree (the log folded
//! with the same rules on every node, see `remote`), the local tree (the
//! core's), and, per path, whether this node has changes the log has not
//! yet confirmed (touched: paths of its own events not yet read back, kept
//! by the core beside its journal).
//!
//! - A path nobody touched here follows the remote tree (`planner`).
//! - A touched path keeps the local version: this node's pending events
//!   come later in the log, and the fold settles any conflict when they
//!   come (the newest change keeps the name, the other becomes a copy).
//! - When this node reads its own event back, the path is untouched again
//!   and planned again: wherever the log's rules decided otherwise (a
//!   delete that lost to another node's modification, a version that lost
//!   its name), the log wins.
//! - A file open for writing is never replaced under its writer: the path
//!   waits until it is closed.
//!
//! Locks: the engine's own (the remote tree, the waiting paths) is taken
//! first, the core's only to plan and carry out one path's actions, so a
//! program's requests interleave with a long apply.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use super::names::{refuge_path, safe_path};
use super::planner::{self, Plan};
use super::remote::{REMOTE_ROOT, RemoteTree};
use crate::event::{ChunkRef, Event, EventType};
use crate::locks::{Mutex, lock};
use crate::meta::{LOG_SEEN, LogEntry, Meta, OWN_SEEN, Record};
use crate::vfs::{Result, Vfs};

/// One record of the log, opened and checked by the uploader.
#[derive(Debug, Clone)]
pub struct RemoteRecord {
    pub mivui: u64,
    pub originator: Uuid,
    pub node_name: String,
    /// The originator's local event id.
    pub local_id: u64,
    pub event: Event,
    /// The version's chunks (content events); `None` if the writer lost
    /// its content before upload.
    pub chunks: Option<Vec<ChunkRef>>,
    /// For this node's own records: the local object of the version.
    pub own_object: Option<String>,
    /// For this node's own records: the journal holds the event (a home
    /// restored from an old copy, or a rebuilt database, does not hold the
    /// later ones: those are applied like another node's).
    pub own_known: bool,
    /// For `prune` records: versions every node drops from its history.
    pub pruned: Vec<u64>,
    /// The log guard's state after this record, journaled with it.
    pub guard: Vec<Record>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ApplyReport {
    pub applied: u64,
    pub conflicts: u64,
    pub refused: u64,
}

struct EngineState {
    /// The volume as the log says it is.
    remote: RemoteTree,
    /// Paths whose remote changes wait for local ones (or a writer).
    deferred: BTreeSet<String>,
}

pub struct Engine {
    vfs: Arc<Vfs>,
    meta: Arc<Meta>,
    node_id: Uuid,
    state: Mutex<EngineState>,
}

impl Engine {
    /// The engine over the remote tree the database holds. Everything is
    /// checked against it once, at the first apply.
    pub fn new(vfs: Arc<Vfs>, meta: Arc<Meta>) -> Arc<Self> {
        let remote = vfs.take_remote_rows();
        Arc::new(Self {
            node_id: vfs.node_id(),
            vfs,
            meta,
            state: Mutex::new(EngineState {
                remote: RemoteTree::from_rows(remote),
                deferred: BTreeSet::from([String::new()]),
            }),
        })
    }

    /// Objects the remote tree names (with the core's own live objects,
    /// what garbage collection and prune must keep).
    pub fn live_objects(&self) -> HashSet<String> {
        let st = lock(&self.state);
        let mut live = self.vfs.live_objects();
        live.extend(
            st.remote
                .nodes
                .values()
                .filter_map(|n| n.row.object.clone()),
        );
        live
    }

    /// The remote tree's rows as the log stands at this node's cursor
    /// (the uploader's thread, which alone applies the log, calls this
    /// between pages).
    pub fn remote_rows(&self) -> Vec<crate::meta::RemoteRow> {
        let st = lock(&self.state);
        st.remote.nodes.values().map(|n| n.row.clone()).collect()
    }

    /// Starts this node's remote tree from a checkpoint (a node that has
    /// read nothing of the log): its rows, versions and log entries, the
    /// guard's state and the cursor at the checkpoint. Written in pages; the
    /// cursor last, so a crash midway starts over (rows are written whole
    /// again, by their numbers).
    pub fn install_checkpoint(&self, snap: super::checkpoint::Snapshot) -> Result<()> {
        const PAGE: usize = 10_000;
        let mut st = lock(&self.state);
        let stale: Vec<Record> = st
            .remote
            .nodes
            .keys()
            .filter(|&&rid| rid != REMOTE_ROOT)
            .map(|&rid| Record::DelRemote(rid))
            .collect();
        for page in stale.chunks(PAGE) {
            self.meta.append(page)?;
        }
        let super::checkpoint::Snapshot {
            mivui,
            rows,
            versions,
            entries,
            texts,
            ..
        } = snap;
        let mut records: Vec<Record> = Vec::with_capacity(PAGE);
        let flush = |records: &mut Vec<Record>, force: bool| -> Result<()> {
            if force || records.len() >= PAGE {
                self.meta.append(records)?;
                records.clear();
            }
            Ok(())
        };
        for (object, chunks) in versions {
            records.push(Record::PutVersion { object, chunks });
            flush(&mut records, false)?;
        }
        for e in entries {
            records.push(Record::PutLog(e));
            flush(&mut records, false)?;
        }
        for row in &rows {
            records.push(Record::PutRemote(row.clone()));
            flush(&mut records, false)?;
        }
        records.extend(
            texts
                .into_iter()
                .map(|(key, value)| Record::SetText { key, value }),
        );
        for key in [
            crate::meta::HISTORY_FROM,
            crate::meta::CHECKPOINT_SEEN,
            LOG_SEEN,
        ] {
            records.push(Record::SetState {
                key: key.to_string(),
                value: mivui,
            });
        }
        flush(&mut records, true)?;
        st.remote = RemoteTree::from_rows(rows);
        // The whole tree is planned at the next apply.
        st.deferred.insert(String::new());
        Ok(())
    }

    /// Applies a page of the log, in order, recording it in version
    /// history and advancing the cursor with each record; then plans the
    /// paths that waited and may be due now.
    pub fn apply_log(&self, page: Vec<RemoteRecord>) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        for rec in page {
            let mut st = lock(&self.state);
            self.apply_one(&mut st, rec, &mut report)?;
        }
        let mut st = lock(&self.state);
        let ready: Vec<String> = st
            .deferred
            .iter()
            .filter(|q| !self.vfs.touched_related(q))
            .cloned()
            .collect();
        for q in ready {
            st.deferred.remove(&q);
            if q.is_empty() {
                // The whole tree (checked once at start): a top-level entry
                // at a time, so the core's lock is never held for all of it.
                let mut top: BTreeSet<String> = st
                    .remote
                    .get(REMOTE_ROOT)
                    .map(|r| r.children.keys().cloned().collect())
                    .unwrap_or_default();
                top.extend(self.vfs.top_level_names());
                for name in top {
                    self.settle(&mut st, name)?;
                }
            } else {
                self.settle(&mut st, q)?;
            }
        }
        Ok(report)
    }

    /// Plans `q` and has the core carry it out; a path that must wait is
    /// kept for later.
    fn settle(&self, st: &mut EngineState, q: String) -> Result<()> {
        let remote = &st.remote;
        let settled = self
            .vfs
            .carry_out(|local| planner::plan(local, remote, &q))?;
        if !settled {
            st.deferred.insert(q);
        }
        Ok(())
    }

    fn apply_one(
        &self,
        st: &mut EngineState,
        rec: RemoteRecord,
        report: &mut ApplyReport,
    ) -> Result<()> {
        let RemoteRecord {
            mivui,
            originator,
            node_name,
            local_id,
            mut event,
            chunks,
            own_object,
            own_known,
            pruned,
            guard,
        } = rec;
        let ours = originator == self.node_id;
        let own = ours && own_known;
        event.mivui = Some(mivui);
        event.originator = originator;
        let ty = event.event_type;
        let mut usable = ty.is_node_record()
            || (safe_path(&event.file_path) && event.src_path.as_deref().is_none_or(safe_path));
        if !usable {
            report.refused += 1;
            tracing::error!(mivui, node = %originator, path = ?event.file_path, src = ?event.src_path,
                "refused an event whose path would leave the latus folder or that this platform cannot hold");
            if matches!(ty, EventType::Create | EventType::Modify) {
                event.file_path = refuge_path(&event.file_path, mivui);
                event.src_path = None;
                usable = safe_path(&event.file_path);
                tracing::warn!(mivui, path = %event.file_path, "kept its content under a safe name");
            }
        }
        let mut records = Vec::new();
        let mut moved_aside = Vec::new();
        if ty.carries_content() && usable {
            let object = match own_object {
                Some(o) if own => o,
                _ => crate::store::new_object_id(),
            };
            if let Some(c) = chunks {
                records.push(Record::PutVersion {
                    object: object.clone(),
                    chunks: c,
                });
            }
            event.object = (event.size > 0).then_some(object);
        } else {
            event.object = None;
        }
        if usable && !ty.is_node_record() {
            let before = st.remote.conflicts;
            let folded = st
                .remote
                .fold(&event, mivui, event.object.clone(), &node_name);
            // Entries the fold put beside the event's path (conflict copies,
            // file/folder conflicts) are planned at their paths too.
            for r in &folded {
                if let Record::PutRemote(row) = r {
                    let p = st.remote.path(row.rid);
                    if p != event.file_path && Some(&p) != event.src_path.as_ref() {
                        moved_aside.push(p);
                    }
                }
            }
            if st.remote.conflicts > before {
                report.conflicts += 1;
                tracing::warn!(path = %event.file_path, copies = ?moved_aside, node = %node_name,
                    "conflict: concurrent changes, both versions kept");
            }
            records.extend(folded);
        }
        records.extend(pruned.iter().map(|&m| Record::DelLog(m)));
        records.push(Record::PutLog(LogEntry {
            mivui,
            originator,
            node_name: node_name.clone(),
            event: event.clone(),
        }));
        records.push(Record::SetState {
            key: LOG_SEEN.to_string(),
            value: mivui,
        });
        // Each node's newest record (what a checkpoint keeps for `nodes`).
        records.push(Record::SetText {
            key: format!("last:{originator}"),
            value: mivui.to_string(),
        });
        if own && local_id > 0 {
            records.push(Record::SetState {
                key: OWN_SEEN.to_string(),
                value: local_id,
            });
        }
        if ours {
            records.extend(self.vfs.reserve_event_ids(local_id));
        }
        records.extend(guard);
        // The fold, the history and the cursor in one journal write: a
        // crash never applies a record twice or skips one.
        self.meta.append(&records)?;
        if !usable || ty.is_node_record() {
            return Ok(());
        }
        report.applied += 1;
        // Copies first: a version that lost its name may share its local
        // content with the file it is replaced in.
        let mut paths = moved_aside;
        paths.push(event.file_path.clone());
        if let Some(s) = &event.src_path {
            paths.push(s.clone());
        }
        if own {
            self.vfs.confirm_own(&paths, local_id);
        } else {
            // Another node's change: a path with local changes the log has
            // not yet seen, or a file open for writing, waits.
            let waits = paths.iter().any(|q| self.vfs.touched_related(q))
                || self.vfs.busy_at(&event.file_path);
            if waits {
                st.deferred.extend(paths);
                return Ok(());
            }
            if ty == EventType::Move
                && let Some(src) = &event.src_path
            {
                let remote = &st.remote;
                let dst = &event.file_path;
                self.vfs.carry_out(|local| Plan {
                    actions: planner::plan_move(local, remote, src, dst),
                    ..Plan::default()
                })?;
            }
        }
        for p in paths {
            self.settle(st, p)?;
        }
        Ok(())
    }
}
