//! The in-memory tree: committed rows plus what only lives while mounted
//! (open counts, the staging version being written). Records are applied
//! here after they are journaled, so memory never runs ahead of the journal.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::Arc;

use crate::ignore::IgnoreRules;
use crate::locks::RwLock;
use crate::meta::{Ino, InodeRow, Kind, Nanos, Placement, ROOT_INO, Record};
use crate::store::ObjectId;

/// A version being written: a private object, never named by a committed row.
pub struct Staging {
    pub object: ObjectId,
    pub file: Arc<File>,
    pub size: u64,
    pub mtime: Nanos,
    pub ctime: Nanos,
    /// Made empty by an `O_TRUNC` open and not written since: a close of a
    /// duplicate descriptor (a shell's `>` redirect closes one before it
    /// writes) commits nothing; a later close or the release does.
    pub truncated_only: bool,
    /// Held shared by writes while their bytes go in (outside the core's
    /// lock), alone by the commit that makes this the file's version.
    pub writes: Arc<RwLock<()>>,
}

pub struct Node {
    pub row: InodeRow,
    pub children: BTreeMap<String, Ino>,
    pub subdirs: u32,
    /// False once unlinked while still open (an orphan kept for its readers).
    pub linked: bool,
    pub open: u32,
    pub writers: u32,
    /// The committed object, opened on first read.
    pub content: Option<Arc<File>>,
    pub staging: Option<Staging>,
    /// A write into the version being written was refused (its errno):
    /// that version is dropped at the next commit, never published
    /// as if complete.
    pub write_failed: Option<i32>,
}

impl Node {
    pub fn new(row: InodeRow) -> Self {
        Self {
            row,
            children: BTreeMap::new(),
            subdirs: 0,
            linked: true,
            open: 0,
            writers: 0,
            content: None,
            staging: None,
            write_failed: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.row.kind == Kind::Dir
    }

    pub fn size(&self) -> u64 {
        self.staging.as_ref().map_or(self.row.size, |s| s.size)
    }
}

#[derive(Default)]
pub struct Tree {
    pub nodes: HashMap<Ino, Node>,
    pub next_ino: Ino,
    /// Which inodes name each content object (a restore or a conflict copy
    /// can share one).
    by_object: HashMap<String, Vec<Ino>>,
}

impl Tree {
    pub fn from_rows(rows: Vec<InodeRow>) -> Self {
        let mut tree = Tree::default();
        let max = rows.iter().map(|r| r.ino).max().unwrap_or(ROOT_INO);
        for row in rows {
            if let Some(o) = &row.object {
                tree.by_object.entry(o.clone()).or_default().push(row.ino);
            }
            tree.nodes.insert(row.ino, Node::new(row));
        }
        let links: Vec<(Ino, Ino, String, bool)> = tree
            .nodes
            .values()
            .filter(|n| n.row.ino != ROOT_INO)
            .flat_map(|n| {
                let extra = n
                    .row
                    .links
                    .iter()
                    .map(|(p, name)| (*p, n.row.ino, name.clone(), false));
                std::iter::once((n.row.parent, n.row.ino, n.row.name.clone(), n.is_dir()))
                    .chain(extra)
            })
            .collect();
        for (parent, ino, name, is_dir) in links {
            match tree.nodes.get_mut(&parent) {
                Some(p) => {
                    p.children.insert(name, ino);
                    if is_dir {
                        p.subdirs += 1;
                    }
                }
                None => tracing::error!(ino, parent, "inode with a missing parent is hidden"),
            }
        }
        tree.next_ino = max + 1;
        tree
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The inodes whose committed content is `object`.
    pub fn owners(&self, object: &str) -> &[Ino] {
        self.by_object.get(object).map_or(&[], Vec::as_slice)
    }

    fn index(&mut self, ino: Ino, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        if let Some(o) = old
            && let Some(v) = self.by_object.get_mut(o)
        {
            v.retain(|&i| i != ino);
            if v.is_empty() {
                self.by_object.remove(o);
            }
        }
        if let Some(n) = new {
            let v = self.by_object.entry(n.to_string()).or_default();
            if !v.contains(&ino) {
                v.push(ino);
            }
        }
    }

    /// Drops an inode from memory (an orphan at its last release).
    pub fn forget(&mut self, ino: Ino) -> Option<Node> {
        let n = self.nodes.remove(&ino)?;
        self.index(ino, n.row.object.as_deref(), None);
        Some(n)
    }

    pub fn alloc_ino(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// Path relative to the folder, `None` for orphans.
    pub fn path(&self, ino: Ino) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = self.nodes.get(&cur)?;
            if !n.linked {
                return None;
            }
            parts.push(n.row.name.as_str());
            cur = n.row.parent;
            if parts.len() > 4096 {
                return None; // a cycle would be a bug; never loop forever
            }
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    /// The path, if events should be emitted for it: linked, and no
    /// component matches an ignore rule.
    pub fn visible_path(&self, ino: Ino, ignore: &IgnoreRules) -> Option<String> {
        if self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.row.kind.is_special())
            || self.rule_at(ino).0 == Some(Placement::LocalOnly)
        {
            return None;
        }
        let p = self.path(ino)?;
        if p.split('/').any(|c| ignore.name_is_ignored(c)) {
            return None;
        }
        Some(p)
    }

    /// Whether a new child named `name` under `parent` would be visible.
    pub fn child_visible(&self, parent: Ino, name: &str, ignore: &IgnoreRules) -> Option<String> {
        if ignore.name_is_ignored(name) {
            return None;
        }
        let base = self.visible_path(parent, ignore)?;
        Some(if base.is_empty() {
            name.to_string()
        } else {
            format!("{base}/{name}")
        })
    }

    /// The placement rule in force at `ino` and the inode that sets it.
    pub fn rule_at(&self, mut ino: Ino) -> (Option<Placement>, Option<Ino>) {
        for _ in 0..4096 {
            let Some(n) = self.nodes.get(&ino) else {
                break;
            };
            if let Some(r) = n.row.placement {
                return (Some(r), Some(ino));
            }
            if ino == ROOT_INO {
                break;
            }
            ino = n.row.parent;
        }
        (None, None)
    }

    pub fn is_ancestor(&self, maybe_ancestor: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == maybe_ancestor {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) => ino = n.row.parent,
                None => return false,
            }
        }
    }

    /// Every inode below `ino`, parents before children.
    pub fn descendants(&self, ino: Ino) -> Vec<Ino> {
        let mut out = Vec::new();
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            if let Some(n) = self.nodes.get(&i) {
                for &c in n.children.values() {
                    // A hard link's other names are listed once, at its
                    // name that syncs.
                    if self.nodes.get(&c).is_some_and(|cn| cn.row.parent != i) {
                        continue;
                    }
                    out.push(c);
                    stack.push(c);
                }
            }
        }
        out
    }

    /// Applies a journaled record to memory.
    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::PutInode(row) => self.put(row.clone()),
            Record::DelInode(ino) => self.detach(*ino),
            Record::PutEvent(_)
            | Record::SetEventHash { .. }
            | Record::Published { .. }
            | Record::SetState { .. }
            | Record::PutRemote(_)
            | Record::DelRemote(_)
            | Record::PutVersion { .. }
            | Record::PutLog(_)
            | Record::SetText { .. }
            | Record::DelLog(_) => {}
        }
    }

    fn put(&mut self, row: InodeRow) {
        let ino = row.ino;
        // A deleted inode still open (an orphan) never comes back: its
        // attributes change in memory only, until its last release.
        let old_object = self.nodes.get(&ino).and_then(|n| n.row.object.clone());
        self.index(ino, old_object.as_deref(), row.object.as_deref());
        if let Some(n) = self.nodes.get_mut(&ino)
            && !n.linked
        {
            n.row = row;
            return;
        }
        let moved = match self.nodes.get(&ino) {
            Some(n) => n.linked && (n.row.parent != row.parent || n.row.name != row.name),
            None => true,
        };
        if moved && self.nodes.contains_key(&ino) {
            self.unlink_primary(ino);
        }
        self.relink(ino, &row.links);
        let is_dir = row.kind == Kind::Dir;
        let (parent, name) = (row.parent, row.name.clone());
        match self.nodes.get_mut(&ino) {
            Some(n) => {
                n.row = row;
                n.linked = true;
            }
            None => {
                self.nodes.insert(ino, Node::new(row));
            }
        }
        if moved
            && ino != ROOT_INO
            && let Some(p) = self.nodes.get_mut(&parent)
        {
            p.children.insert(name, ino);
            if is_dir {
                p.subdirs += 1;
            }
        }
    }

    /// Makes the folders list exactly `links` as `ino`'s other names.
    fn relink(&mut self, ino: Ino, links: &[(Ino, String)]) {
        let old = match self.nodes.get(&ino) {
            Some(n) if n.linked => n.row.links.clone(),
            Some(_) => return,
            None => Vec::new(),
        };
        for (p, name) in old.iter().filter(|l| !links.contains(l)) {
            if let Some(p) = self.nodes.get_mut(p)
                && p.children.get(name) == Some(&ino)
            {
                p.children.remove(name);
            }
        }
        for (p, name) in links.iter().filter(|l| !old.contains(l)) {
            if let Some(p) = self.nodes.get_mut(p) {
                p.children.insert(name.clone(), ino);
            }
        }
    }

    /// Removes every name of `ino` from its folders (the row keeps its
    /// links).
    fn unlink_from_parent(&mut self, ino: Ino) {
        self.unlink_primary(ino);
        self.relink(ino, &[]);
    }

    /// Removes the name that syncs from its folder.
    fn unlink_primary(&mut self, ino: Ino) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        if !n.linked || ino == ROOT_INO {
            return;
        }
        let (parent, name, is_dir) = (n.row.parent, n.row.name.clone(), n.is_dir());
        if let Some(p) = self.nodes.get_mut(&parent)
            && p.children.get(&name) == Some(&ino)
        {
            p.children.remove(&name);
            if is_dir {
                p.subdirs -= 1;
            }
        }
    }

    /// Removes an inode from its folder. An open one stays as an orphan for
    /// its readers; the caller drops it at the last release.
    fn detach(&mut self, ino: Ino) {
        self.unlink_from_parent(ino);
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if n.open > 0 {
            n.linked = false;
        } else {
            self.forget(ino);
        }
    }
}
