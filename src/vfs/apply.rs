//! Applying the volume's log to this node's tree.
//!
//! Three views (as in Dropbox's Nucleus): the remote tree (the log folded
//! with the same rules on every node, see `remote`), the local tree, and,
//! per path, whether this node has changes the log has not yet confirmed
//! (`touched`: paths of its own events not yet read back from the log).
//!
//! - A path nobody touched here follows the remote tree (`reconcile`).
//! - A touched path keeps the local version: this node's pending events
//!   come later in the log, so the remote tree will agree once they are
//!   read back. A remote version that loses this way is kept beside it as a
//!   conflict copy, itself a local event, so every node ends with it.
//! - When this node reads its own event back, the path is untouched again
//!   and reconciled: wherever the log's rules decided otherwise (a delete
//!   that lost to another node's modification), the log wins.
//! - A file open for writing is never replaced under its writer: the
//!   remote version becomes a conflict copy and the path waits.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::remote::REMOTE_ROOT;
use super::tree::Node;
use super::{State, Vfs};
use crate::event::{ChunkRef, Event, EventType};
use crate::meta::{Ino, InodeRow, Kind, LOG_SEEN, LogEntry, OWN_SEEN, ROOT_INO, Record};

/// One record of the log, opened and checked by the sync engine.
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
    /// For `prune` records: versions every node drops from its history.
    pub pruned: Vec<u64>,
}

/// A kernel cache entry to drop after the tree changed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Entry { parent: Ino, name: String },
    Inode(Ino),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ApplyReport {
    pub applied: u64,
    pub conflicts: u64,
    pub refused: u64,
}

/// Whether a path from the log is one this platform can hold inside the
/// folder: relative, no `.`/`..`/empty components, no NUL, names of at most
/// 255 bytes.
pub fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 4096
        && !p.starts_with('/')
        && !p.contains('\0')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255)
}

/// Where a content event with an unusable path is kept instead (the same
/// on every node).
fn refuge_path(p: &str, mivui: u64) -> String {
    let mut name: String = p
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    while name.len() > 200 {
        name.pop();
    }
    let name = name.trim_start_matches('.');
    format!("latus-refused/{mivui} {name}")
}

/// `name (conflict from NODE YYYY-MM-DD HHMMSS).ext`
pub fn conflict_name(name: &str, node: &str, time_ns: i64) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let node: String = node
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    let (y, mo, d, h, mi, s) = utc_fields(time_ns.div_euclid(1_000_000_000));
    let suffix = format!(" (conflict from {node} {y:04}-{mo:02}-{d:02} {h:02}{mi:02}{s:02})");
    let mut stem = stem.to_string();
    while stem.len() + suffix.len() + ext.len() > 255 && !stem.is_empty() {
        stem.pop();
    }
    format!("{stem}{suffix}{ext}")
}

/// Calendar fields of a Unix time in UTC (civil-from-days).
pub fn utc_fields(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `q` itself, one of its ancestors, or one of its descendants is touched.
pub(super) fn touched_related(touched: &BTreeMap<String, u64>, q: &str) -> bool {
    if q.is_empty() {
        return !touched.is_empty();
    }
    if touched.contains_key(q) {
        return true;
    }
    let mut end = q.len();
    while let Some(i) = q[..end].rfind('/') {
        if touched.contains_key(&q[..i]) {
            return true;
        }
        end = i;
    }
    let prefix = format!("{q}/");
    touched
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

fn split_parent(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

fn busy(n: &Node) -> bool {
    n.writers > 0 || n.staging.is_some()
}

impl Vfs {
    /// Applies a page of the log, in order, recording it in version
    /// history and advancing the cursor with each record. The core's lock
    /// is taken per record (and per waiting path), never for the page, so
    /// requests of programs interleave with a long apply.
    pub fn apply_log(&self, page: Vec<RemoteRecord>) -> super::Result<ApplyReport> {
        let mut report = ApplyReport::default();
        for rec in page {
            self.locked(|st| self.apply_one(st, rec, &mut report))?;
        }
        let ready: Vec<String> = self.locked(|st| {
            Ok(st
                .deferred
                .iter()
                .filter(|q| !touched_related(&st.touched, q))
                .cloned()
                .collect())
        })?;
        for q in ready {
            if q.is_empty() {
                // The whole tree (checked once at start): a top-level entry
                // at a time, so the lock is never held for all of it.
                let top = self.locked(|st| {
                    st.deferred.remove("");
                    let mut names: BTreeSet<String> = st
                        .remote
                        .get(REMOTE_ROOT)
                        .map(|r| r.children.keys().cloned().collect())
                        .unwrap_or_default();
                    if let Some(root) = st.tree.get(ROOT_INO) {
                        names.extend(root.children.keys().cloned());
                    }
                    Ok(names)
                })?;
                for name in top {
                    self.locked(|st| self.reconcile_or_defer(st, name))?;
                }
                continue;
            }
            self.locked(|st| {
                if !touched_related(&st.touched, &q) && self.reconcile(st, &q)? {
                    st.deferred.remove(&q);
                }
                Ok(())
            })?;
        }
        Ok(report)
    }

    /// Runs `f` under the core's lock, then tells the kernel what changed.
    fn locked<T>(&self, f: impl FnOnce(&mut State) -> super::Result<T>) -> super::Result<T> {
        let mut st = lock_state(self);
        let result = f(&mut st);
        let inval = std::mem::take(&mut st.invalidations);
        drop(st);
        self.invalidate(inval);
        result
    }

    pub(super) fn invalidate(&self, list: Vec<Invalidation>) {
        if list.is_empty() {
            return;
        }
        if let Some(f) = crate::locks::lock(&self.invalidator).as_ref() {
            for i in list {
                f(i);
            }
        }
    }

    /// Where the kernel's caches are told about remote changes.
    pub fn set_invalidator(&self, f: impl Fn(Invalidation) + Send + Sync + 'static) {
        *crate::locks::lock(&self.invalidator) = Some(Box::new(f));
    }

    fn apply_one(
        &self,
        st: &mut State,
        rec: RemoteRecord,
        report: &mut ApplyReport,
    ) -> super::Result<()> {
        let RemoteRecord {
            mivui,
            originator,
            node_name,
            local_id,
            mut event,
            chunks,
            own_object,
            pruned,
        } = rec;
        let own = originator == self.node_id;
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
            // file/folder conflicts) are reconciled at their paths too.
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
        if own && local_id > 0 {
            records.push(Record::SetState {
                key: OWN_SEEN.to_string(),
                value: local_id,
            });
        }
        self.journal(st, records)?;
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
            for p in &paths {
                if st.touched.get(p).is_some_and(|&id| id <= local_id) {
                    st.touched.remove(p);
                }
            }
            for p in paths {
                self.reconcile_or_defer(st, p)?;
            }
            return Ok(());
        }
        // Another node's change: a path with local changes the log has not
        // yet seen, or a file open for writing, waits; the fold settles any
        // conflict once this node's change is in the log.
        let local_busy = self
            .resolve_local(st, &event.file_path)
            .and_then(|i| st.tree.get(i))
            .is_some_and(busy);
        let related = paths.iter().any(|q| touched_related(&st.touched, q)) || local_busy;
        if related {
            st.deferred.extend(paths);
            return Ok(());
        }
        if ty == EventType::Move {
            self.move_locally(st, &event)?;
        }
        for q in paths {
            self.reconcile_or_defer(st, q)?;
        }
        Ok(())
    }

    fn reconcile_or_defer(&self, st: &mut State, q: String) -> super::Result<()> {
        if touched_related(&st.touched, &q) || !self.reconcile(st, &q)? {
            st.deferred.insert(q);
        }
        Ok(())
    }

    /// The local inode at a visible path.
    pub(super) fn resolve_local(&self, st: &State, p: &str) -> Option<Ino> {
        let mut ino = ROOT_INO;
        for part in p.split('/').filter(|c| !c.is_empty()) {
            ino = *st.tree.get(ino)?.children.get(part)?;
        }
        Some(ino)
    }

    /// A fresh local row for something the log brought.
    pub(super) fn remote_row(
        &self,
        st: &mut State,
        parent: Ino,
        name: &str,
        kind: Kind,
    ) -> InodeRow {
        let (uid, gid) = st
            .tree
            .get(ROOT_INO)
            .map_or((0, 0), |r| (r.row.uid, r.row.gid));
        let now = self.now();
        InodeRow {
            ino: st.tree.alloc_ino(),
            parent,
            name: name.to_string(),
            kind,
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            uid,
            gid,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            object: None,
            hash: None,
            target: None,
            xattrs: Default::default(),
            announced: true,
            placement: None,
        }
    }

    /// A remote folder rename is one local rename, whatever it holds.
    fn move_locally(&self, st: &mut State, ev: &Event) -> super::Result<()> {
        let Some(src) = ev.src_path.as_deref() else {
            return Ok(());
        };
        let Some(ino) = self.resolve_local(st, src) else {
            return Ok(());
        };
        if ino == ROOT_INO || st.tree.get(ino).is_none_or(busy) {
            return Ok(());
        }
        let (parent_path, name) = split_parent(&ev.file_path);
        let Some(parent) = self.ensure_local_dirs(st, parent_path)? else {
            return Ok(());
        };
        if st.tree.is_ancestor(ino, parent) {
            return Ok(());
        }
        if let Some(&t) = st.tree.get(parent).and_then(|p| p.children.get(name)) {
            if t == ino {
                return Ok(());
            }
            if !self.remove_local(st, t)? {
                return Ok(()); // something there cannot go; reconcile decides
            }
        }
        let n = st.tree.get(ino).expect("checked");
        let mut row = n.row.clone();
        st.invalidations.push(Invalidation::Entry {
            parent: row.parent,
            name: row.name.clone(),
        });
        row.parent = parent;
        row.name = name.to_string();
        row.ctime = self.now();
        st.invalidations.push(Invalidation::Entry {
            parent,
            name: name.to_string(),
        });
        self.pin_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        self.journal(st, vec![Record::PutInode(row)])
    }

    /// The local folder at `p`, made (without events: the log has them)
    /// where missing. `None` if a file is in the way.
    fn ensure_local_dirs(&self, st: &mut State, p: &str) -> super::Result<Option<Ino>> {
        let mut ino = ROOT_INO;
        let mut path = String::new();
        for part in p.split('/').filter(|c| !c.is_empty()) {
            path = join(&path, part);
            let next = st.tree.get(ino).and_then(|n| n.children.get(part)).copied();
            ino = match next {
                Some(i) if st.tree.get(i).is_some_and(|n| n.is_dir()) => i,
                Some(_) => return Ok(None),
                None => {
                    let mut row = self.remote_row(st, ino, part, Kind::Dir);
                    if let Some(r) = st.remote.resolve(&path).and_then(|r| st.remote.get(r)) {
                        row.mode = r.row.mode;
                        row.mtime = r.row.mtime;
                    }
                    let new = row.ino;
                    st.invalidations.push(Invalidation::Entry {
                        parent: ino,
                        name: part.to_string(),
                    });
                    self.journal(st, vec![Record::PutInode(row)])?;
                    new
                }
            };
        }
        Ok(Some(ino))
    }

    /// The first local non-folder on the way down `p`, as a path.
    fn local_non_dir_on(&self, st: &State, p: &str) -> Option<String> {
        let mut ino = ROOT_INO;
        let mut path = String::new();
        for part in p.split('/').filter(|c| !c.is_empty()) {
            path = join(&path, part);
            ino = *st.tree.get(ino)?.children.get(part)?;
            if !st.tree.get(ino)?.is_dir() {
                return Some(path);
            }
        }
        None
    }

    /// Makes the local subtree at `q` what the remote tree says. Never
    /// touches what is being written or what never went to the cloud
    /// (ignored names, files not yet closed). Returns false if something
    /// had to wait (a writer).
    pub(super) fn reconcile(&self, st: &mut State, q: &str) -> super::Result<bool> {
        let r = st.remote.resolve(q);
        let l = self.resolve_local(st, q);
        match (r, l) {
            (None, None) => Ok(true),
            (None, Some(l)) => self.remove_local(st, l),
            (Some(r), None) => {
                let (parent_path, name) = split_parent(q);
                if let Some(blocker) = self.local_non_dir_on(st, parent_path) {
                    // A local file where the log has a folder: settle it first.
                    if !self.reconcile(st, &blocker)? {
                        return Ok(false);
                    }
                }
                match self.ensure_local_dirs(st, parent_path)? {
                    Some(parent) => {
                        self.create_local(st, parent, name, r)?;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            (Some(r), Some(l)) => self.sync_local(st, l, r),
        }
    }

    fn create_local(&self, st: &mut State, parent: Ino, name: &str, rid: u64) -> super::Result<()> {
        let Some(rn) = st.remote.get(rid) else {
            return Ok(());
        };
        let r = rn.row.clone();
        let kids: Vec<(String, u64)> = rn.children.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut row = self.remote_row(st, parent, name, r.kind);
        fill_from_remote(&mut row, &r);
        let ino = row.ino;
        self.pin_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        st.invalidations.push(Invalidation::Entry {
            parent,
            name: name.to_string(),
        });
        self.journal(st, vec![Record::PutInode(row)])?;
        for (k, v) in kids {
            self.create_local(st, ino, &k, v)?;
        }
        Ok(())
    }

    fn sync_local(&self, st: &mut State, l: Ino, r: u64) -> super::Result<bool> {
        let Some(n) = st.tree.get(l) else {
            return Ok(true);
        };
        let Some(rn) = st.remote.get(r) else {
            return Ok(true);
        };
        if busy(n) {
            return Ok(false);
        }
        if !n.row.announced {
            return Ok(true); // a local name the log never saw (ignored)
        }
        let rr = rn.row.clone();
        if n.row.kind != rr.kind {
            if l == ROOT_INO {
                return Ok(true);
            }
            let (parent, name) = (n.row.parent, n.row.name.clone());
            if !self.remove_local(st, l)? {
                return Ok(false);
            }
            self.create_local(st, parent, &name, r)?;
            return Ok(true);
        }
        let mut row = n.row.clone();
        let same_content = match rr.kind {
            Kind::File => row.object == rr.object || (row.hash.is_some() && row.hash == rr.hash),
            Kind::Symlink => row.target.as_deref() == rr.target.as_deref().map(str::as_bytes),
            Kind::Dir => true,
        };
        // Folder mtimes are each node's own (adding a child is no event).
        let same_attrs = l == ROOT_INO
            || (row.mode & 0o7777 == rr.mode && (rr.kind == Kind::Dir || row.mtime == rr.mtime));
        if !same_content || !same_attrs {
            let n_mtime = row.mtime;
            fill_from_remote(&mut row, &rr);
            row.ctime = self.now();
            // With writeback caching the kernel keeps its own size and
            // times of a cached file: a file whose content or mtime changes
            // gets a new inode; mode changes and folders are invalidated.
            let new_times = rr.kind == Kind::File && n_mtime != rr.mtime;
            if same_content && !new_times {
                st.invalidations.push(Invalidation::Inode(l));
                self.journal(st, vec![Record::PutInode(row)])?;
            } else {
                self.replace_inode(st, row, Vec::new())?;
            }
        }
        if rr.kind != Kind::Dir {
            return Ok(true);
        }
        let mut done = true;
        let rkids = st
            .remote
            .get(r)
            .map(|n| n.children.clone())
            .unwrap_or_default();
        let lkids = st
            .tree
            .get(l)
            .map(|n| n.children.clone())
            .unwrap_or_default();
        for (name, &rc) in &rkids {
            match lkids.get(name) {
                Some(&lc) => done &= self.sync_local(st, lc, rc)?,
                None => self.create_local(st, l, name, rc)?,
            }
        }
        for (name, &lc) in &lkids {
            if !rkids.contains_key(name) {
                done &= self.remove_local(st, lc)?;
            }
        }
        Ok(done)
    }

    /// Puts a new version of a file or symlink in place under a new inode
    /// number, like a rename over it: with writeback caching the kernel
    /// trusts its own size and times of a cached inode, so only a new inode
    /// shows the new ones; open descriptors keep reading the version they
    /// opened. Returns the new inode.
    /// `more` is journaled with it (the restore's event).
    pub(super) fn replace_inode(
        &self,
        st: &mut State,
        mut row: InodeRow,
        more: Vec<Record>,
    ) -> super::Result<Ino> {
        let old = row.ino;
        row.ino = st.tree.alloc_ino();
        let new = row.ino;
        self.pin_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        st.invalidations.push(Invalidation::Entry {
            parent: row.parent,
            name: row.name.clone(),
        });
        st.invalidations.push(Invalidation::Inode(old));
        let mut records = vec![Record::DelInode(old), Record::PutInode(row)];
        records.extend(more);
        self.drop_inode(st, old, records)?;
        Ok(new)
    }

    /// Removes a local subtree the log no longer has, keeping what is being
    /// written and what the log never saw. Returns false if anything stayed.
    fn remove_local(&self, st: &mut State, ino: Ino) -> super::Result<bool> {
        let Some(n) = st.tree.get(ino) else {
            return Ok(true);
        };
        if ino == ROOT_INO || !n.row.announced {
            return Ok(false);
        }
        if busy(n) {
            return Ok(false);
        }
        let mut all = true;
        if n.is_dir() {
            let kids: Vec<Ino> = n.children.values().copied().collect();
            for k in kids {
                all &= self.remove_local(st, k)?;
            }
        }
        if !all {
            return Ok(false);
        }
        let n = st.tree.get(ino).expect("exists");
        let (parent, name) = (n.row.parent, n.row.name.clone());
        st.invalidations.push(Invalidation::Entry { parent, name });
        st.invalidations.push(Invalidation::Inode(ino));
        self.drop_inode(st, ino, vec![Record::DelInode(ino)])?;
        Ok(true)
    }
}

fn fill_from_remote(row: &mut InodeRow, r: &crate::meta::RemoteRow) {
    row.kind = r.kind;
    row.mode = r.mode;
    row.mtime = r.mtime;
    row.size = if r.kind == Kind::File { r.size } else { 0 };
    row.object = if r.kind == Kind::File {
        r.object.clone()
    } else {
        None
    };
    row.hash = r.hash.clone();
    row.target = r.target.as_ref().map(|t| t.as_bytes().to_vec());
    row.announced = true;
}

fn lock_state(vfs: &Vfs) -> crate::locks::MutexGuard<'_, State> {
    crate::locks::lock(&vfs.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\0b",
            "a/",
        ] {
            assert!(!safe_path(bad), "{bad:?}");
        }
        assert!(!safe_path(&"x".repeat(256)));
        for good in ["a", "a/b c/d.txt", "..a", "a..", ".hidden/x"] {
            assert!(safe_path(good), "{good:?}");
        }
        let r = refuge_path("../../etc/passwd", 7);
        assert!(safe_path(&r), "{r}");
        assert!(r.starts_with("latus-refused/7 "));
    }

    #[test]
    fn conflict_names_follow_the_pattern() {
        // 2026-11-26 14:05:09 UTC
        let t = 1_795_701_909i64 * 1_000_000_000;
        assert_eq!(utc_fields(1_795_701_909), (2026, 11, 26, 14, 5, 9));
        assert_eq!(
            conflict_name("report.txt", "laptop", t),
            "report (conflict from laptop 2026-11-26 140509).txt"
        );
        assert_eq!(
            conflict_name(".bashrc", "pc", t),
            ".bashrc (conflict from pc 2026-11-26 140509)"
        );
        assert_eq!(utc_fields(0), (1970, 1, 1, 0, 0, 0));
        assert!(conflict_name(&"x".repeat(255), "n", t).len() <= 255);
    }

    #[test]
    fn touched_covers_ancestors_and_descendants() {
        let mut t = BTreeMap::new();
        t.insert("a/b".to_string(), 1);
        assert!(touched_related(&t, "a/b"));
        assert!(touched_related(&t, "a"));
        assert!(touched_related(&t, "a/b/c"));
        assert!(touched_related(&t, ""));
        assert!(!touched_related(&t, "a/bc"));
        assert!(!touched_related(&t, "ab"));
        assert!(!touched_related(&BTreeMap::new(), ""));
    }
}
