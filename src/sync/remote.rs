//! The remote tree: the volume as the event log says it is. Every node
//! folds the same log with the same rules (`fold`), so every node holds the
//! same remote tree; a node's own tree differs from it only where it has
//! changes the log has not yet confirmed. Moving a folder rewrites one row.

use std::collections::{BTreeMap, HashMap};

use super::names::conflict_name;
use crate::event::{Event, EventType};
use crate::meta::{Kind, Record, RemoteRow};

pub const REMOTE_ROOT: u64 = 1;

/// The mode bits the log may set: permissions only. Set-user-id,
/// set-group-id and sticky bits from another node (any key holder) are
/// never applied here.
pub const PERMISSIONS: u32 = 0o777;

/// The deepest a folder may be nested: a move that would nest deeper (only
/// repeated remote moves can) is not applied, so walks of the tree stay
/// within their stack.
pub const MAX_DEPTH: usize = 1024;

pub struct RNode {
    pub row: RemoteRow,
    pub children: BTreeMap<String, u64>,
}

pub struct RemoteTree {
    pub nodes: HashMap<u64, RNode>,
    next_rid: u64,
    /// Concurrent changes settled by keeping both (counted as folded).
    pub conflicts: u64,
}

/// Who made a change, and when: what the fold records on the rows it
/// writes, and what decides between concurrent changes.
struct Maker<'a> {
    time: i64,
    origin: uuid::Uuid,
    node: &'a str,
}

fn root_row() -> RemoteRow {
    RemoteRow {
        rid: REMOTE_ROOT,
        parent: REMOTE_ROOT,
        name: String::new(),
        kind: Kind::Dir,
        mode: 0o755,
        size: 0,
        mtime: 0,
        hash: None,
        object: None,
        target: None,
        mivui: 0,
        time: 0,
        origin: uuid::Uuid::nil(),
        node: String::new(),
    }
}

impl RemoteTree {
    pub fn from_rows(rows: Vec<RemoteRow>) -> Self {
        let mut t = RemoteTree {
            nodes: HashMap::new(),
            next_rid: REMOTE_ROOT + 1,
            conflicts: 0,
        };
        t.nodes.insert(
            REMOTE_ROOT,
            RNode {
                row: root_row(),
                children: BTreeMap::new(),
            },
        );
        for row in rows {
            t.next_rid = t.next_rid.max(row.rid + 1);
            t.nodes.insert(
                row.rid,
                RNode {
                    row,
                    children: BTreeMap::new(),
                },
            );
        }
        let links: Vec<(u64, String, u64)> = t
            .nodes
            .values()
            .filter(|n| n.row.rid != REMOTE_ROOT)
            .map(|n| (n.row.parent, n.row.name.clone(), n.row.rid))
            .collect();
        for (parent, name, rid) in links {
            if let Some(p) = t.nodes.get_mut(&parent) {
                p.children.insert(name, rid);
            }
        }
        t
    }

    pub fn get(&self, rid: u64) -> Option<&RNode> {
        self.nodes.get(&rid)
    }

    pub fn resolve(&self, path: &str) -> Option<u64> {
        let mut rid = REMOTE_ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            rid = *self.nodes.get(&rid)?.children.get(part)?;
        }
        Some(rid)
    }

    pub fn path(&self, rid: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = rid;
        while cur != REMOTE_ROOT {
            let Some(n) = self.nodes.get(&cur) else { break };
            parts.push(n.row.name.as_str());
            cur = n.row.parent;
            if parts.len() > 4096 {
                break;
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// Applies a journaled record to memory.
    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::PutRemote(row) => {
                if let Some(old) = self.nodes.get(&row.rid) {
                    let (p, n) = (old.row.parent, old.row.name.clone());
                    if let Some(pn) = self.nodes.get_mut(&p)
                        && pn.children.get(&n) == Some(&row.rid)
                    {
                        pn.children.remove(&n);
                    }
                }
                self.next_rid = self.next_rid.max(row.rid + 1);
                if let Some(p) = self.nodes.get_mut(&row.parent) {
                    p.children.insert(row.name.clone(), row.rid);
                }
                let children = self
                    .nodes
                    .remove(&row.rid)
                    .map(|n| n.children)
                    .unwrap_or_default();
                self.nodes.insert(
                    row.rid,
                    RNode {
                        row: row.clone(),
                        children,
                    },
                );
            }
            Record::DelRemote(rid) => {
                if let Some(old) = self.nodes.remove(rid)
                    && let Some(p) = self.nodes.get_mut(&old.row.parent)
                    && p.children.get(&old.row.name) == Some(rid)
                {
                    p.children.remove(&old.row.name);
                }
            }
            _ => {}
        }
    }

    /// Records removing `rid` and everything below it (children first).
    fn remove_subtree(&self, rid: u64, out: &mut Vec<Record>) {
        let mut order = Vec::new();
        let mut stack = vec![rid];
        while let Some(r) = stack.pop() {
            order.push(r);
            if let Some(n) = self.nodes.get(&r) {
                stack.extend(n.children.values().copied());
            }
        }
        for r in order.into_iter().rev() {
            out.push(Record::DelRemote(r));
        }
    }

    fn alloc(&mut self) -> u64 {
        let r = self.next_rid;
        self.next_rid += 1;
        r
    }

    /// The folder that holds `path`, made (as folders, replacing files in
    /// the way) when missing. Records go to `out`; `self` is updated too, so
    /// later steps of the same fold see them.
    fn ensure_parent(
        &mut self,
        path: &str,
        mivui: u64,
        by: &Maker,
        aside: &dyn Fn(&str) -> String,
        out: &mut Vec<Record>,
    ) -> (u64, String) {
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or_default().to_string();
        let mut cur = REMOTE_ROOT;
        for part in parts {
            let existing = self.nodes[&cur].children.get(part).copied();
            cur = match existing {
                Some(r) if self.nodes[&r].row.kind == Kind::Dir => r,
                other => {
                    if let Some(r) = other {
                        // A file where a folder must be: kept beside it.
                        let name = aside(&self.nodes[&r].row.name);
                        self.move_aside(r, name, out);
                    }
                    let rid = self.alloc();
                    let row = RemoteRow {
                        rid,
                        parent: cur,
                        name: part.to_string(),
                        kind: Kind::Dir,
                        mode: 0o755,
                        size: 0,
                        mtime: 0,
                        hash: None,
                        object: None,
                        target: None,
                        mivui,
                        time: by.time,
                        origin: by.origin,
                        node: by.node.to_string(),
                    };
                    self.emit(Record::PutRemote(row), out);
                    rid
                }
            };
        }
        (cur, name)
    }

    /// Renames `rid` to `new`, a conflict name (replacing whatever has
    /// that name: the same node's version from the same second).
    fn move_aside(&mut self, rid: u64, new: String, out: &mut Vec<Record>) {
        let mut row = self.nodes[&rid].row.clone();
        if let Some(t) = self.nodes[&row.parent].children.get(&new).copied()
            && t != rid
        {
            self.emit_remove(t, out);
        }
        row.name = new;
        self.emit(Record::PutRemote(row), out);
    }

    fn emit(&mut self, rec: Record, out: &mut Vec<Record>) {
        self.apply(&rec);
        out.push(rec);
    }

    fn emit_remove(&mut self, rid: u64, out: &mut Vec<Record>) {
        let mut recs = Vec::new();
        self.remove_subtree(rid, &mut recs);
        for r in recs {
            self.emit(r, out);
        }
    }

    /// Folds one log event into the tree (the same rules on every node) and
    /// returns the records that did it. `object` is the version's chunk-list
    /// id for content events.
    ///
    /// - create/modify/symlink: the version takes the path (folders on the
    ///   way are made) if it builds on the version there (its `base_hash`
    ///   is the head's hash) or has the same content. A concurrent change
    ///   of a file is a conflict: the newest change (by the `time` it was
    ///   made on its node; ties by node id) keeps the name, or, if the
    ///   event's node asked for `first_wins`, the head keeps it; the other
    ///   is kept beside it as `name (conflict from NODE DATE)`, named after
    ///   the node that made it and when.
    /// - delete: only if the path still holds the version the deleter saw
    ///   (`base_hash`); otherwise a newer modification survives.
    /// - mkdir: made if missing. rmdir: only if empty (a file written into a
    ///   folder that another node deleted is kept).
    /// - move: the subtree moves, replacing what is at the destination; a
    ///   source that is gone by then moves nothing.
    /// - setattr: mode and mtime, if the path exists.
    ///
    /// A file and a folder at one path both survive: the one in the way is
    /// renamed to `name (conflict from NODE DATE)` after the event's node
    /// and time (the same on every node).
    pub fn fold(
        &mut self,
        ev: &Event,
        mivui: u64,
        object: Option<String>,
        node_name: &str,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        let p = ev.file_path.as_str();
        let at = self.resolve(p);
        let when = if ev.time != 0 { ev.time } else { ev.mtime };
        let by = Maker {
            time: when,
            origin: ev.originator,
            node: node_name,
        };
        let aside = |name: &str| conflict_name(name, node_name, when);
        let aside: &dyn Fn(&str) -> String = &aside;
        match ev.event_type {
            EventType::Create | EventType::Modify | EventType::Symlink => {
                let (parent, mut name) = self.ensure_parent(p, mivui, &by, aside, &mut out);
                let kind = if ev.event_type == EventType::Symlink {
                    Kind::Symlink
                } else {
                    Kind::File
                };
                let mut existing = self.nodes[&parent].children.get(&name).copied();
                if let Some(r) = existing
                    && self.nodes[&r].row.kind == Kind::Dir
                {
                    // A folder holds the name: the version goes beside it.
                    name = aside(&name);
                    existing = self.nodes[&parent].children.get(&name).copied();
                }
                if kind == Kind::File
                    && let Some(h) = existing
                    && self.nodes[&h].row.kind == Kind::File
                    && concurrent(ev, &self.nodes[&h].row)
                {
                    self.conflicts += 1;
                    let head = &self.nodes[&h].row;
                    if takes_the_name(ev, when, head) {
                        let copy = conflict_name(&head.name, &head.node, head.time);
                        self.move_aside(h, copy, &mut out);
                        existing = None;
                    } else {
                        name = aside(&name);
                        existing = self.nodes[&parent].children.get(&name).copied();
                        if let Some(c) = existing
                            && self.nodes[&c].row.hash == ev.file_hash
                        {
                            return out; // this version is kept there already
                        }
                    }
                }
                let rid = match existing {
                    Some(r) if self.nodes[&r].row.kind == kind => r,
                    Some(r) => {
                        self.emit_remove(r, &mut out);
                        self.alloc()
                    }
                    None => self.alloc(),
                };
                let row = RemoteRow {
                    rid,
                    parent,
                    name,
                    kind,
                    mode: ev.mode & PERMISSIONS,
                    size: ev.size,
                    mtime: ev.mtime,
                    hash: ev.file_hash.clone(),
                    object,
                    target: ev.link_target.clone(),
                    mivui,
                    time: by.time,
                    origin: by.origin,
                    node: by.node.to_string(),
                };
                self.emit(Record::PutRemote(row), &mut out);
            }
            EventType::Delete => {
                if let Some(r) = at {
                    let n = &self.nodes[&r].row;
                    let same = ev.base_hash.is_none() || n.hash == ev.base_hash;
                    if n.kind != Kind::Dir && same {
                        self.emit_remove(r, &mut out);
                    }
                }
            }
            EventType::Mkdir => {
                if at.is_none() {
                    let (parent, name) = self.ensure_parent(p, mivui, &by, aside, &mut out);
                    let rid = self.alloc();
                    let row = RemoteRow {
                        rid,
                        parent,
                        name,
                        kind: Kind::Dir,
                        mode: ev.mode & PERMISSIONS,
                        size: 0,
                        mtime: ev.mtime,
                        hash: None,
                        object: None,
                        target: None,
                        mivui,
                        time: by.time,
                        origin: by.origin,
                        node: by.node.to_string(),
                    };
                    self.emit(Record::PutRemote(row), &mut out);
                }
            }
            EventType::Rmdir => {
                if let Some(r) = at
                    && r != REMOTE_ROOT
                    && self.nodes[&r].row.kind == Kind::Dir
                    && self.nodes[&r].children.is_empty()
                {
                    self.emit_remove(r, &mut out);
                }
            }
            EventType::Move => {
                let Some(src) = ev.src_path.as_deref().and_then(|s| self.resolve(s)) else {
                    return out;
                };
                if src == REMOTE_ROOT || self.is_ancestor_path(ev.src_path.as_deref(), p) {
                    return out;
                }
                if self.depth_of(p) + self.height(src) > MAX_DEPTH {
                    tracing::error!(
                        mivui,
                        "a move would nest folders deeper than {MAX_DEPTH}; not applied"
                    );
                    return out;
                }
                let (parent, name) = self.ensure_parent(p, mivui, &by, aside, &mut out);
                if !self.nodes.contains_key(&src) {
                    return out;
                }
                if let Some(t) = self.nodes[&parent].children.get(&name).copied()
                    && t != src
                {
                    // rename(2) replaces a non-folder with a non-folder, or
                    // an empty folder with a folder; anything else means
                    // another node changed the target meanwhile: both stay.
                    let t_dir = self.nodes[&t].row.kind == Kind::Dir;
                    let s_dir = self.nodes[&src].row.kind == Kind::Dir;
                    if t_dir != s_dir || !self.nodes[&t].children.is_empty() {
                        // rename(2) could not have replaced it here: some
                        // node wrote into it meanwhile. Both stay.
                        let copy = aside(&self.nodes[&t].row.name);
                        self.move_aside(t, copy, &mut out);
                    } else {
                        self.emit_remove(t, &mut out);
                    }
                }
                let mut row = self.nodes[&src].row.clone();
                row.parent = parent;
                row.name = name;
                row.mivui = mivui;
                self.emit(Record::PutRemote(row), &mut out);
            }
            EventType::Setattr => {
                if let Some(r) = at
                    && r != REMOTE_ROOT
                {
                    let mut row = self.nodes[&r].row.clone();
                    row.mode = ev.mode & PERMISSIONS;
                    row.mtime = ev.mtime;
                    self.emit(Record::PutRemote(row), &mut out);
                }
            }
            EventType::Node | EventType::ForgetNode | EventType::Prune => {}
        }
        out
    }

    fn depth_of(&self, path: &str) -> usize {
        path.split('/').filter(|c| !c.is_empty()).count()
    }

    /// Levels below and including `rid` (walked without recursion).
    fn height(&self, rid: u64) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(rid, 1usize)];
        while let Some((r, d)) = stack.pop() {
            deepest = deepest.max(d);
            if let Some(n) = self.nodes.get(&r) {
                stack.extend(n.children.values().map(|&c| (c, d + 1)));
            }
        }
        deepest
    }

    fn is_ancestor_path(&self, src: Option<&str>, dst: &str) -> bool {
        src.is_some_and(|s| dst.starts_with(s) && dst.as_bytes().get(s.len()) == Some(&b'/'))
    }
}

/// Whether a content event changes a file without having seen the version
/// the log holds there (its base is not the head). Equal contents are no
/// conflict. A modify whose base was still being hashed when it was made
/// (none recorded) builds on its own node's head.
fn concurrent(ev: &Event, head: &RemoteRow) -> bool {
    if ev.file_hash.is_some() && ev.file_hash == head.hash {
        return false;
    }
    match &ev.base_hash {
        Some(base) => head.hash.as_ref() != Some(base),
        None => !(ev.event_type == EventType::Modify && head.origin == ev.originator),
    }
}

/// Whether a concurrent change made at `when` takes the name from `head`.
fn takes_the_name(ev: &Event, when: i64, head: &RemoteRow) -> bool {
    !ev.first_wins && (when, ev.originator) > (head.time, head.origin)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::event::Detection;

    fn node(i: u8) -> (Uuid, String) {
        (Uuid::from_bytes([i; 16]), format!("n{i}"))
    }

    fn content(
        ty: EventType,
        path: &str,
        hash: &str,
        base: Option<&str>,
        time: i64,
        by: u8,
    ) -> Event {
        Event {
            id: 1,
            originator: node(by).0,
            mivui: None,
            detection: Detection::Filesystem,
            event_type: ty,
            file_hash: Some(hash.to_string()),
            file_path: path.to_string(),
            mtime: time,
            size: 1,
            src_path: None,
            mode: 0o644,
            link_target: None,
            base_hash: base.map(str::to_string),
            time,
            first_wins: false,
            object: None,
        }
    }

    /// Folds `events` in order; the files of the tree, path → hash.
    fn fold_all(events: &[Event]) -> BTreeMap<String, String> {
        let mut t = RemoteTree::from_rows(Vec::new());
        for (i, e) in events.iter().enumerate() {
            let name = node(e.originator.as_bytes()[0]).1;
            t.fold(e, i as u64 + 1, None, &name);
        }
        let mut out = BTreeMap::new();
        for (&rid, n) in &t.nodes {
            if n.row.kind == Kind::File {
                out.insert(t.path(rid), n.row.hash.clone().unwrap_or_default());
            }
        }
        out
    }

    const T: i64 = 1_795_701_909_000_000_000;

    #[test]
    fn an_edit_on_the_head_replaces_it_without_a_copy() {
        let got = fold_all(&[
            content(EventType::Create, "f", "v0", None, T, 1),
            content(EventType::Modify, "f", "v1", Some("v0"), T + 1, 2),
            content(EventType::Modify, "f", "v2", Some("v1"), T - 5, 1),
        ]);
        assert_eq!(got, BTreeMap::from([("f".into(), "v2".into())]));
    }

    #[test]
    fn an_old_edit_arriving_late_goes_beside_the_newer_one() {
        let got = fold_all(&[
            content(EventType::Create, "d/f.txt", "v0", None, T, 1),
            content(
                EventType::Modify,
                "d/f.txt",
                "newer",
                Some("v0"),
                T + 10_000_000_000,
                2,
            ),
            content(
                EventType::Modify,
                "d/f.txt",
                "older",
                Some("v0"),
                T + 1_000_000_000,
                1,
            ),
        ]);
        let copy = format!("d/{}", conflict_name("f.txt", "n1", T + 1_000_000_000));
        assert_eq!(
            got,
            BTreeMap::from([("d/f.txt".into(), "newer".into()), (copy, "older".into())])
        );
    }

    #[test]
    fn a_newer_edit_arriving_late_takes_the_name() {
        let got = fold_all(&[
            content(EventType::Create, "f", "v0", None, T, 1),
            content(
                EventType::Modify,
                "f",
                "older",
                Some("v0"),
                T + 1_000_000_000,
                2,
            ),
            content(
                EventType::Modify,
                "f",
                "newer",
                Some("v0"),
                T + 9_000_000_000,
                1,
            ),
        ]);
        let copy = conflict_name("f", "n2", T + 1_000_000_000);
        assert_eq!(
            got,
            BTreeMap::from([("f".into(), "newer".into()), (copy, "older".into())])
        );
    }

    #[test]
    fn first_wins_keeps_the_head_and_equal_contents_are_no_conflict() {
        let mut late = content(EventType::Modify, "f", "newer", Some("v0"), T + 9, 1);
        late.first_wins = true;
        let got = fold_all(&[
            content(EventType::Create, "f", "v0", None, T, 1),
            content(EventType::Modify, "f", "older", Some("v0"), T + 1, 2),
            late,
            content(EventType::Create, "g", "same", None, T + 1, 1),
            content(EventType::Create, "g", "same", None, T + 2, 2),
        ]);
        let copy = conflict_name("f", "n1", T + 9);
        assert_eq!(
            got,
            BTreeMap::from([
                ("f".into(), "older".into()),
                (copy, "newer".into()),
                ("g".into(), "same".into())
            ])
        );
    }

    proptest! {
        /// Concurrent changes of one file (creates of a new name, or edits
        /// of one base) end with the same tree whatever their order in the
        /// log: the newest keeps the name, every other version is kept.
        #[test]
        fn concurrent_changes_settle_the_same_in_any_log_order(
            changes in proptest::collection::vec((0u8..5, 0i64..4), 2..5),
            order in any::<proptest::sample::Index>(),
            edit in any::<bool>(),
        ) {
            // One change per node, at whole seconds: copy names differ.
            let changes: BTreeMap<u8, i64> = changes.into_iter().collect();
            let setup = content(EventType::Create, "f", "base", None, T, 9);
            let evs: Vec<Event> = changes
                .iter()
                .map(|(&by, &s)| {
                    let (ty, base) = if edit {
                        (EventType::Modify, Some("base"))
                    } else {
                        (EventType::Create, None)
                    };
                    content(ty, "f", &format!("v{by}"), base, T + s * 1_000_000_000, by)
                })
                .collect();
            let mut perms = vec![evs.clone()];
            let mut rotated = evs.clone();
            rotated.rotate_left(order.index(evs.len()));
            perms.push(rotated);
            let mut reversed = evs.clone();
            reversed.reverse();
            perms.push(reversed);
            let results: Vec<_> = perms
                .into_iter()
                .map(|p| {
                    let mut all = if edit { vec![setup.clone()] } else { Vec::new() };
                    all.extend(p);
                    fold_all(&all)
                })
                .collect();
            prop_assert!(results.iter().all(|r| r == &results[0]), "{results:#?}");
            let newest = changes.iter().max_by_key(|&(&by, &s)| (s, node(by).0)).unwrap();
            prop_assert_eq!(results[0].get("f"), Some(&format!("v{}", newest.0)));
            for by in changes.keys() {
                let v = format!("v{by}");
                prop_assert!(results[0].values().any(|h| h == &v), "{v} lost: {:#?}", results[0]);
            }
        }
    }
}
