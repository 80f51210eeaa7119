//! The sync engine's decisions: a pure function of (local tree view,
//! remote tree, touched paths) → the local actions that make a path of the
//! local tree what the log says, which the filesystem core carries out.
//!
//! Rules (the same as the three-tree design in `engine`):
//! - A path with local changes the log has not seen yet (touched: itself,
//!   an ancestor or a descendant) waits: its own events come later in the
//!   log, and the fold settles any conflict then.
//! - What is being written (open for writing, or unfinished) and what the
//!   log never saw (ignored names, files never closed) is never touched;
//!   the path waits for a writer.
//! - A local file where the log has a folder on the way down is settled
//!   first; then the path is planned again.
//! - Anything else follows the remote tree: made, updated (a file whose
//!   content or mtime changes gets a new inode), or removed, children first.

use std::collections::BTreeMap;

use super::names::{join, split_parent};
use super::remote::{PERMISSIONS, RemoteTree};
use crate::meta::{Ino, Kind, Nanos, ROOT_INO, RemoteRow};

/// What the planner may know of one local entry.
#[derive(Debug, Clone, Copy)]
pub struct LocalEntry<'a> {
    pub kind: Kind,
    /// Open for writing, or holding an unfinished version.
    pub busy: bool,
    /// Made known to the log at its path (false: ignored, never closed).
    pub announced: bool,
    pub mode: u32,
    pub mtime: Nanos,
    pub object: Option<&'a str>,
    pub hash: Option<&'a str>,
    pub target: Option<&'a [u8]>,
    pub children: &'a BTreeMap<String, Ino>,
    /// Hard links: other names (folder, name) of this file that stay on
    /// this node; the planner leaves them alone.
    pub local_names: &'a [(Ino, String)],
}

/// The local tree as the planner sees it (the core implements it over its
/// own tree, under its lock; tests over a model).
pub trait LocalView {
    fn entry(&self, ino: Ino) -> Option<LocalEntry<'_>>;
    /// This node has changes at, above or below `path` the log has not
    /// given back yet.
    fn touched_related(&self, path: &str) -> bool;

    /// The local entry at a visible path.
    fn resolve(&self, path: &str) -> Option<Ino> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|c| !c.is_empty()) {
            ino = *self.entry(ino)?.children.get(part)?;
        }
        Some(ino)
    }

    /// The first local non-folder on the way down `path`, as a path.
    fn non_dir_on(&self, path: &str) -> Option<String> {
        let mut ino = ROOT_INO;
        let mut at = String::new();
        for part in path.split('/').filter(|c| !c.is_empty()) {
            at = join(&at, part);
            ino = *self.entry(ino)?.children.get(part)?;
            if self.entry(ino)?.kind != Kind::Dir {
                return Some(at);
            }
        }
        None
    }
}

/// One local change for the core to carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Removes one local entry (a folder's children go by earlier actions).
    Remove { ino: Ino },
    /// Makes the folders on the way to `path` that are missing (no events:
    /// the log has them), with the log's mode and mtime where it has them.
    MakeDirs {
        path: String,
        rows: Vec<Option<RemoteRow>>,
    },
    /// Makes the remote subtree `rows` (its top first, each with its path
    /// below `path`, `""` for the top) at `path`, whose folder exists.
    Create {
        path: String,
        rows: Vec<(String, RemoteRow)>,
    },
    /// Gives a local entry the log's version and attributes; a new inode
    /// if its content or mtime changes (the kernel keeps its own of a
    /// cached inode).
    Update {
        ino: Ino,
        row: RemoteRow,
        new_inode: bool,
    },
    /// Moves a local entry to `path` (a remote rename: one local rename,
    /// whatever it holds); its folder exists.
    Rename { ino: Ino, path: String },
}

/// The plan for one path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Something had to wait (a writer, unconfirmed local changes): the
    /// path is planned again later.
    pub waits: bool,
    /// Plan the path again once these actions are carried out (a local
    /// file in the way of the log's folder was settled first).
    pub again: bool,
}

/// What makes the local subtree at `q` what the remote tree says.
pub fn plan(local: &dyn LocalView, remote: &RemoteTree, q: &str) -> Plan {
    let mut p = Plan::default();
    if local.touched_related(q) {
        p.waits = true;
        return p;
    }
    match (remote.resolve(q), local.resolve(q)) {
        (None, None) => {}
        (None, Some(l)) => p.waits = !remove(local, l, &mut p.actions),
        (Some(r), None) => {
            let (parent, _) = split_parent(q);
            if let Some(blocker) = local.non_dir_on(parent) {
                let first = plan(local, remote, &blocker);
                // Nothing to do there (a name the log never saw): it stays
                // in the way, and the path waits.
                p.again = !first.waits && !first.actions.is_empty();
                p.waits = !p.again;
                p.actions = first.actions;
                return p;
            }
            p.actions.push(make_dirs(remote, parent));
            p.actions.push(create(remote, q, r));
        }
        (Some(r), Some(l)) => p.waits = !sync(local, remote, l, r, q, &mut p.actions),
    }
    p
}

/// What a remote move of `src` to `dst` does here: one local rename, if
/// the source is here and free and the destination can take it. `None`:
/// nothing to move (the paths are then planned like any other).
pub fn plan_move(local: &dyn LocalView, remote: &RemoteTree, src: &str, dst: &str) -> Vec<Action> {
    let mut out = Vec::new();
    let Some(ino) = local.resolve(src) else {
        return out;
    };
    if ino == ROOT_INO || local.entry(ino).is_none_or(|e| e.busy) {
        return out;
    }
    let (parent, _) = split_parent(dst);
    if local.non_dir_on(parent).is_some() {
        return out;
    }
    if dst.starts_with(src) && dst.as_bytes().get(src.len()) == Some(&b'/') {
        return out; // into itself
    }
    if let Some(t) = local.resolve(dst) {
        if t == ino {
            return out;
        }
        if !remove(local, t, &mut out) {
            return Vec::new(); // something there cannot go; the paths decide
        }
    }
    out.push(make_dirs(remote, parent));
    out.push(Action::Rename {
        ino,
        path: dst.to_string(),
    });
    out
}

fn make_dirs(remote: &RemoteTree, path: &str) -> Action {
    let mut rows = Vec::new();
    let mut at = String::new();
    for part in path.split('/').filter(|c| !c.is_empty()) {
        at = join(&at, part);
        rows.push(
            remote
                .resolve(&at)
                .and_then(|r| remote.get(r))
                .map(|n| n.row.clone()),
        );
    }
    Action::MakeDirs {
        path: path.to_string(),
        rows,
    }
}

fn create(remote: &RemoteTree, path: &str, rid: u64) -> Action {
    let mut rows = Vec::new();
    let mut stack = vec![(String::new(), rid)];
    while let Some((rel, r)) = stack.pop() {
        let Some(n) = remote.get(r) else { continue };
        rows.push((rel.clone(), n.row.clone()));
        for (name, &c) in n.children.iter().rev() {
            stack.push((join(&rel, name), c));
        }
    }
    Action::Create {
        path: path.to_string(),
        rows,
    }
}

/// Removes a local subtree the log no longer has, children first, keeping
/// what is being written and what the log never saw. False if anything
/// stays.
fn remove(local: &dyn LocalView, ino: Ino, out: &mut Vec<Action>) -> bool {
    let Some(e) = local.entry(ino) else {
        return true;
    };
    if ino == ROOT_INO || !e.announced || e.busy {
        return false;
    }
    let mut all = true;
    for &k in e.children.values() {
        all &= remove(local, k, out);
    }
    if all {
        out.push(Action::Remove { ino });
    }
    all
}

/// Brings the local entry `l` at `q` to remote entry `r`. False if
/// something had to wait.
fn sync(
    local: &dyn LocalView,
    remote: &RemoteTree,
    l: Ino,
    r: u64,
    q: &str,
    out: &mut Vec<Action>,
) -> bool {
    let (Some(n), Some(rn)) = (local.entry(l), remote.get(r)) else {
        return true;
    };
    if n.busy {
        return false;
    }
    if !n.announced {
        return true; // a local name the log never saw (ignored)
    }
    let rr = &rn.row;
    if n.kind != rr.kind {
        if l == ROOT_INO {
            return true;
        }
        if !remove(local, l, out) {
            return false;
        }
        out.push(create(remote, q, r));
        return true;
    }
    let same_content = match rr.kind {
        Kind::File => {
            n.object == rr.object.as_deref() || (n.hash.is_some() && n.hash == rr.hash.as_deref())
        }
        Kind::Symlink => n.target == rr.target.as_deref().map(str::as_bytes),
        Kind::Dir => true,
        _ => false, // the remote tree holds no special files
    };
    // Folder mtimes are each node's own (adding a child is no event).
    let same_attrs = l == ROOT_INO
        || (n.mode & PERMISSIONS == rr.mode & PERMISSIONS
            && (rr.kind == Kind::Dir || n.mtime == rr.mtime));
    if !same_content || !same_attrs {
        let new_times = rr.kind == Kind::File && n.mtime != rr.mtime;
        out.push(Action::Update {
            ino: l,
            row: rr.clone(),
            new_inode: !same_content || new_times,
        });
    }
    if rr.kind != Kind::Dir {
        return true;
    }
    let mut done = true;
    let local_name = |name: &String, lc: Ino| {
        local
            .entry(lc)
            .is_some_and(|e| e.local_names.iter().any(|(p, n)| *p == l && n == name))
    };
    for (name, &rc) in &rn.children {
        let at = join(q, name);
        match n.children.get(name) {
            // A local name holds the place: that entry is not applied here.
            Some(&lc) if local_name(name, lc) => {}
            Some(&lc) => done &= sync(local, remote, lc, rc, &at, out),
            None => out.push(create(remote, &at, rc)),
        }
    }
    for (name, &lc) in n.children {
        if !rn.children.contains_key(name) && !local_name(name, lc) {
            done &= remove(local, lc, out);
        }
    }
    done
}

#[cfg(test)]
mod tests;
