//! What the node has to tell about itself: the files waiting for the
//! cloud, counted with the same rule `status PATH` uses for one path (so
//! the counters and the per-path states agree), and the conflict copies in
//! the tree.

use std::collections::HashSet;

use serde::Serialize;

use super::{Vfs, lock};
use crate::meta::{Ino, Kind, ROOT_INO};

/// Files whose state is `pending`: being written, not yet journaled, or
/// changed here and not yet back from the volume's log.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Waiting {
    pub files: u64,
    pub bytes: u64,
    /// Of those, files open with a version still being written.
    pub being_written: u64,
}

/// A file in the tree, by path (for listings that are not lookups).
#[derive(Debug, Clone, Serialize)]
pub struct NamedFile {
    pub path: String,
    pub size: u64,
    pub mtime: i64,
}

impl Vfs {
    pub fn waiting(&self) -> Waiting {
        let st = lock(&self.state);
        let mut found: HashSet<Ino> = HashSet::new();
        for (&ino, n) in &st.tree.nodes {
            if !n.linked || n.row.kind != Kind::File {
                continue;
            }
            let unsent = n.staging.is_some()
                || !n.row.announced
                || n.row
                    .object
                    .as_ref()
                    .is_some_and(|o| st.pinned.contains_key(o));
            if unsent && st.tree.visible_path(ino, &self.ignore).is_some() {
                found.insert(ino);
            }
        }
        for path in st.touched.keys() {
            let mut ino = ROOT_INO;
            let mut ok = true;
            for part in path.split('/').filter(|p| !p.is_empty()) {
                match st.tree.get(ino).and_then(|n| n.children.get(part)) {
                    Some(&c) => ino = c,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok
                && st
                    .tree
                    .get(ino)
                    .is_some_and(|n| n.linked && n.row.kind == Kind::File)
            {
                found.insert(ino);
            }
        }
        let mut w = Waiting::default();
        for ino in found {
            if let Some(n) = st.tree.get(ino) {
                w.files += 1;
                w.bytes += n.size();
                w.being_written += u64::from(n.staging.is_some());
            }
        }
        w
    }

    /// Files whose name satisfies `pick`, with their paths (visible ones only).
    pub fn files_named(&self, pick: impl Fn(&str) -> bool) -> Vec<NamedFile> {
        let st = lock(&self.state);
        let mut out: Vec<NamedFile> = st
            .tree
            .nodes
            .iter()
            .filter(|(_, n)| n.linked && n.row.kind == Kind::File && pick(&n.row.name))
            .filter_map(|(&ino, n)| {
                Some(NamedFile {
                    path: st.tree.visible_path(ino, &self.ignore)?,
                    size: n.size(),
                    mtime: n.row.mtime,
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

impl Vfs {
    /// Tells the kernel that the entry at `path` changed: for changes a
    /// command makes through the core rather than through the mount.
    pub fn forget_entry(&self, path: &str) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if let Ok(parent) = self.resolve(dir) {
            self.invalidate(vec![super::Invalidation::Entry {
                parent,
                name: name.to_string(),
            }]);
        }
    }
}

/// One entry of a folder, for browsing (the web app's file list).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FolderEntry {
    pub name: String,
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub mtime: i64,
    /// `local` / `pending` / `cloud` / `local-only` (as `status PATH`).
    pub state: String,
    /// The placement rule in force here.
    pub placement: String,
    /// Where the rule is set (`None` for auto).
    pub placement_from: Option<String>,
}

impl Vfs {
    /// The entries of the folder at `path`, folders first, by name.
    pub fn list_dir(&self, path: &str) -> super::Result<Vec<FolderEntry>> {
        let dir = self.resolve(path)?;
        let st = lock(&self.state);
        let n = st.tree.get(dir).ok_or(super::VfsError::NotFound)?;
        if !n.is_dir() {
            return Err(super::VfsError::NotDir);
        }
        let base = path.trim_matches('/');
        let mut out: Vec<FolderEntry> = n
            .children
            .iter()
            .filter_map(|(name, &ino)| {
                let c = st.tree.get(ino)?;
                let info = self.placement_info(&st, ino);
                Some(FolderEntry {
                    name: name.clone(),
                    path: if base.is_empty() {
                        name.clone()
                    } else {
                        format!("{base}/{name}")
                    },
                    kind: c.row.kind,
                    size: c.size(),
                    mtime: c.row.mtime,
                    state: self.state_of(&st, ino).to_string(),
                    placement: info.rule.to_string(),
                    placement_from: info.from,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (b.kind == Kind::Dir)
                .cmp(&(a.kind == Kind::Dir))
                .then(a.name.cmp(&b.name))
        });
        Ok(out)
    }
}
