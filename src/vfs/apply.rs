//! The core's side of sync: a view of the local tree for the sync
//! engine's planner, and the local actions it decides, carried out under
//! the core's lock (one path's plan at a time) and journaled like any
//! change, but without events: the log already has them.

use std::collections::BTreeMap;

use super::tree::Node;
use super::{State, Vfs};
use crate::meta::{Ino, InodeRow, Kind, ROOT_INO, Record, RemoteRow};
use crate::sync::names::{split_parent, touched_related};
use crate::sync::planner::{Action, LocalEntry, LocalView, Plan};

/// A kernel cache entry to drop after the tree changed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Entry { parent: Ino, name: String },
    Inode(Ino),
}

fn busy(n: &Node) -> bool {
    n.writers > 0 || n.staging.is_some()
}

/// The local tree and this node's unconfirmed paths, as the planner sees
/// them.
struct View<'a>(&'a State);

impl LocalView for View<'_> {
    fn entry(&self, ino: Ino) -> Option<LocalEntry<'_>> {
        let n = self.0.tree.get(ino)?;
        Some(LocalEntry {
            kind: n.row.kind,
            busy: busy(n),
            announced: n.row.announced,
            mode: n.row.mode,
            mtime: n.row.mtime,
            object: n.row.object.as_deref(),
            hash: n.row.hash.as_deref(),
            target: n.row.target.as_deref(),
            children: &n.children,
            local_names: &n.row.links,
        })
    }

    fn touched_related(&self, path: &str) -> bool {
        touched_related(&self.0.touched, path)
    }
}

impl Vfs {
    /// Plans with `plan` against the local tree and carries the actions
    /// out, under one hold of the core's lock (planning again while the
    /// plan asks). Returns false if the path must wait.
    pub fn carry_out(&self, mut plan: impl FnMut(&dyn LocalView) -> Plan) -> super::Result<bool> {
        let mut st = lock_state(self);
        let result = (|| {
            for _ in 0..8 {
                let p = plan(&View(&st));
                for a in p.actions {
                    self.carry_out_one(&mut st, a)?;
                }
                if !p.again {
                    return Ok(!p.waits);
                }
            }
            Ok(false)
        })();
        let inval = std::mem::take(&mut st.invalidations);
        drop(st);
        self.invalidate(inval);
        result
    }

    /// The log holds a record of this node with local id `local_id`: new
    /// events are numbered above it. Returns the record that keeps that
    /// (journaled with the record's apply), if the floor rose.
    pub fn reserve_event_ids(&self, local_id: u64) -> Option<Record> {
        let mut st = lock_state(self);
        if st.next_event > local_id {
            return None;
        }
        st.next_event = local_id + 1;
        Some(Record::SetState {
            key: crate::meta::EVENT_FLOOR.to_string(),
            value: local_id,
        })
    }

    /// This node's own event `local_id` came back from the log: the paths
    /// it touched follow the log again (unless newer local events touch
    /// them).
    pub fn confirm_own(&self, paths: &[String], local_id: u64) {
        let mut st = lock_state(self);
        for p in paths {
            if st.touched.get(p).is_some_and(|&id| id <= local_id) {
                st.touched.remove(p);
            }
        }
    }

    /// This node has changes at, above or below `path` the log has not
    /// given back yet.
    pub fn touched_related(&self, path: &str) -> bool {
        touched_related(&lock_state(self).touched, path)
    }

    /// A file at `path` is open for writing or being written.
    pub fn busy_at(&self, path: &str) -> bool {
        let st = lock_state(self);
        View(&st)
            .resolve(path)
            .and_then(|i| st.tree.get(i))
            .is_some_and(busy)
    }

    /// The names in the top folder.
    pub fn top_level_names(&self) -> Vec<String> {
        let st = lock_state(self);
        st.tree
            .get(ROOT_INO)
            .map(|r| r.children.keys().cloned().collect())
            .unwrap_or_default()
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

    /// `invalidate` from a thread of its own, for callers inside a
    /// request on the inode (the kernel may wait for that request).
    pub(super) fn invalidate_later(&self, list: Vec<Invalidation>) {
        let Some(f) = crate::locks::lock(&self.invalidator).clone() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("latus-invalidate".into())
            .spawn(move || {
                for i in list {
                    f(i);
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "could not start a kernel cache invalidation");
        }
    }

    /// Where the kernel's caches are told about remote changes.
    pub fn set_invalidator(&self, f: impl Fn(Invalidation) + Send + Sync + 'static) {
        *crate::locks::lock(&self.invalidator) = Some(std::sync::Arc::new(f));
    }

    fn carry_out_one(&self, st: &mut State, a: Action) -> super::Result<()> {
        match a {
            Action::Remove { ino } => self.remove_one(st, ino),
            Action::MakeDirs { path, rows } => self.make_log_dirs(st, &path, &rows).map(|_| ()),
            Action::Create { path, rows } => self.create_from(st, &path, rows),
            Action::Update {
                ino,
                row,
                new_inode,
            } => self.update_from(st, ino, &row, new_inode),
            Action::Rename { ino, path } => self.rename_to(st, ino, &path),
        }
    }

    /// Removes one entry the log no longer has (its children went first).
    fn remove_one(&self, st: &mut State, ino: Ino) -> super::Result<()> {
        let Some(n) = st.tree.get(ino) else {
            return Ok(());
        };
        if ino == ROOT_INO || !n.row.announced || busy(n) || !n.children.is_empty() {
            return Ok(());
        }
        let (parent, name) = (n.row.parent, n.row.name.clone());
        let hard_linked = !n.row.links.is_empty();
        st.invalidations.push(Invalidation::Entry {
            parent,
            name: name.clone(),
        });
        st.invalidations.push(Invalidation::Inode(ino));
        if hard_linked {
            // Its other names stay here; the next one syncs from now on.
            return self.drop_name(st, parent, &name, ino, false);
        }
        self.drop_inode(st, ino, vec![Record::DelInode(ino)])
    }

    /// The local folder at `path`, made where missing (no events: the log
    /// has them), with the log's mode and mtime. `None` if a file is in
    /// the way.
    fn make_log_dirs(
        &self,
        st: &mut State,
        path: &str,
        rows: &[Option<RemoteRow>],
    ) -> super::Result<Option<Ino>> {
        let mut ino = ROOT_INO;
        for (i, part) in path.split('/').filter(|c| !c.is_empty()).enumerate() {
            let next = st.tree.get(ino).and_then(|n| n.children.get(part)).copied();
            ino = match next {
                Some(d) if st.tree.get(d).is_some_and(|n| n.is_dir()) => d,
                Some(_) => return Ok(None),
                None => {
                    let mut row = self.remote_row(st, ino, part, Kind::Dir);
                    if let Some(Some(r)) = rows.get(i) {
                        row.mode = r.mode;
                        row.mtime = r.mtime;
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

    /// Makes a subtree the log brought at `path` (its folder exists).
    fn create_from(
        &self,
        st: &mut State,
        path: &str,
        rows: Vec<(String, RemoteRow)>,
    ) -> super::Result<()> {
        let (parent_path, name) = split_parent(path);
        let Some(parent) = View(st).resolve(parent_path) else {
            return Ok(());
        };
        if st
            .tree
            .get(parent)
            .is_none_or(|p| !p.is_dir() || p.children.contains_key(name))
        {
            return Ok(()); // the planner saw otherwise: planned again later
        }
        let mut made: BTreeMap<String, Ino> = BTreeMap::new();
        for (rel, r) in rows {
            let (at, name) = if rel.is_empty() {
                (parent, name)
            } else {
                let (p, n) = split_parent(&rel);
                match made.get(p) {
                    Some(&i) => (i, n),
                    None => continue,
                }
            };
            let mut row = self.remote_row(st, at, name, r.kind);
            fill_from_remote(&mut row, &r);
            let ino = row.ino;
            st.invalidations.push(Invalidation::Entry {
                parent: at,
                name: name.to_string(),
            });
            self.journal(st, vec![Record::PutInode(row)])?;
            made.insert(rel.clone(), ino);
        }
        self.pin_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Gives a local entry the log's version and attributes.
    fn update_from(
        &self,
        st: &mut State,
        ino: Ino,
        r: &RemoteRow,
        new_inode: bool,
    ) -> super::Result<()> {
        let Some(n) = st.tree.get(ino) else {
            return Ok(());
        };
        if busy(n) || !n.row.announced || n.row.kind != r.kind {
            return Ok(());
        }
        let mut row = n.row.clone();
        fill_from_remote(&mut row, r);
        row.ctime = self.now();
        // With writeback caching the kernel keeps its own size and times
        // of a cached file: a file whose content or mtime changes gets a
        // new inode; mode changes and folders are invalidated.
        if new_inode && r.kind != Kind::Dir && ino != ROOT_INO {
            self.replace_inode(st, row, Vec::new())?;
        } else {
            st.invalidations.push(Invalidation::Inode(ino));
            self.journal(st, vec![Record::PutInode(row)])?;
        }
        Ok(())
    }

    /// A remote rename: one local rename, whatever it holds.
    fn rename_to(&self, st: &mut State, ino: Ino, path: &str) -> super::Result<()> {
        let (parent_path, name) = split_parent(path);
        let Some(parent) = View(st).resolve(parent_path) else {
            return Ok(());
        };
        let movable = st.tree.get(ino).is_some_and(|n| !busy(n) && n.linked);
        let free = st
            .tree
            .get(parent)
            .is_some_and(|p| p.is_dir() && !p.children.contains_key(name));
        if ino == ROOT_INO || !movable || !free || st.tree.is_ancestor(ino, parent) {
            return Ok(());
        }
        let mut row = st.tree.get(ino).expect("checked").row.clone();
        // The new name's cached miss goes before the old name's entry: a
        // reader between the two sees the folder under both names, never
        // under neither.
        st.invalidations.push(Invalidation::Entry {
            parent,
            name: name.to_string(),
        });
        st.invalidations.push(Invalidation::Entry {
            parent: row.parent,
            name: row.name.clone(),
        });
        row.parent = parent;
        row.name = name.to_string();
        row.ctime = self.now();
        self.pin_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        self.journal(st, vec![Record::PutInode(row)])
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
            rdev: 0,
            links: Vec::new(),
        }
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
        for (parent, name) in &row.links {
            st.invalidations.push(Invalidation::Entry {
                parent: *parent,
                name: name.clone(),
            });
        }
        let mut records = vec![Record::DelInode(old), Record::PutInode(row)];
        records.extend(more);
        self.drop_inode(st, old, records)?;
        Ok(new)
    }
}

fn fill_from_remote(row: &mut InodeRow, r: &RemoteRow) {
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
