//! Version history and restore. History is the log as this node read it;
//! a restore writes an old version back as a new event (detection
//! `restore`), so every node gets it and nothing newer is lost: the version
//! it replaces stays in history too.

use std::ffi::OsStr;

use serde::Serialize;

use super::{Caller, Vfs, VfsError};
use crate::event::{Detection, EventType};
use crate::meta::{Ino, Kind, LogEntry, ROOT_INO, Record, RemoteRow};
use crate::sync::{REMOTE_ROOT, RemoteTree};

/// One version of a path, from the log.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    pub mivui: u64,
    pub node: String,
    pub node_id: uuid::Uuid,
    /// When it was written (ns since the epoch, the writer's clock).
    pub time: i64,
    pub event_type: EventType,
    pub size: u64,
    pub hash: Option<String>,
    pub mtime: i64,
}

#[derive(Debug, Clone, Copy)]
pub enum RestoreTarget {
    /// The newest version in history.
    Latest,
    Version(u64),
    /// As the path was at this time (ns since the epoch).
    At(i64),
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RestoreReport {
    pub path: String,
    pub files_restored: u64,
    pub folders_made: u64,
    pub removed: u64,
    pub unchanged: u64,
    /// Nothing was changed: the report says what a restore would do.
    pub dry_run: bool,
    /// What changes, path by path (at most `MAX_CHANGES`).
    pub changes: Vec<RestoreChange>,
    /// More changes than listed.
    pub changes_truncated: bool,
}

/// One change a restore makes (or would make).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreChange {
    /// `create`, `replace` (an older version over the current one),
    /// `mkdir` or `remove` (it came later; it stays in history).
    pub action: &'static str,
    pub path: String,
    pub size: u64,
}

const MAX_CHANGES: usize = 1000;

impl RestoreReport {
    fn note(&mut self, action: &'static str, path: &str, size: u64) {
        if self.changes.len() < MAX_CHANGES {
            self.changes.push(RestoreChange {
                action,
                path: path.to_string(),
                size,
            });
        } else {
            self.changes_truncated = true;
        }
    }
}

fn bad(msg: String) -> VfsError {
    VfsError::Restore(msg)
}

impl Vfs {
    fn history(&self) -> super::Result<Vec<LogEntry>> {
        self.meta.commit_pending()?;
        Ok(self.meta.whole_log()?)
    }

    /// Every version of `path` in the log, oldest first.
    pub fn versions(&self, path: &str) -> super::Result<Vec<VersionInfo>> {
        let path = path.trim_matches('/');
        Ok(self
            .history()?
            .into_iter()
            .filter(|e| {
                e.event.file_path == path
                    && matches!(
                        e.event.event_type,
                        EventType::Create
                            | EventType::Modify
                            | EventType::Symlink
                            | EventType::Move
                            | EventType::Delete
                    )
            })
            .map(|e| VersionInfo {
                mivui: e.mivui,
                node: crate::sync::names::display_node_name(&e.node_name),
                node_id: e.originator,
                time: e.event.time,
                event_type: e.event.event_type,
                size: e.event.size,
                hash: e.event.file_hash.clone(),
                mtime: e.event.mtime,
            })
            .collect())
    }

    /// Brings back an old version of a file, or a folder as it was at a
    /// time, at `to` (default: where it was).
    pub fn restore(
        &self,
        path: &str,
        target: RestoreTarget,
        to: Option<&str>,
    ) -> super::Result<RestoreReport> {
        self.restore_plan(path, target, to, false)
    }

    /// `restore`, or with `dry_run` only the report of what it would change.
    pub fn restore_plan(
        &self,
        path: &str,
        target: RestoreTarget,
        to: Option<&str>,
        dry_run: bool,
    ) -> super::Result<RestoreReport> {
        let path = path.trim_matches('/').to_string();
        let dest = to
            .map(|t| t.trim_matches('/').to_string())
            .unwrap_or(path.clone());
        if !crate::sync::safe_path(&dest) {
            return Err(bad(format!(
                "{dest:?} is not a path inside the latus folder"
            )));
        }
        let log = self.history()?;
        let mut report = RestoreReport {
            path: dest.clone(),
            dry_run,
            ..Default::default()
        };
        match target {
            RestoreTarget::Version(m) => {
                let e = log
                    .iter()
                    .find(|e| e.mivui == m)
                    .ok_or_else(|| bad(format!("no version {m} in history")))?;
                if e.event.file_path != path {
                    return Err(bad(format!(
                        "version {m} is of {:?}, not {path:?}",
                        e.event.file_path
                    )));
                }
                let at = replay(&log, |x| x.mivui <= m);
                let rid = at
                    .resolve(&path)
                    .filter(|&r| at.get(r).is_some_and(|n| n.row.kind != Kind::Dir))
                    .ok_or_else(|| bad(format!("version {m} of {path:?} holds no content")))?;
                self.put_version(&dest, &at.get(rid).expect("resolved").row, &mut report)?;
            }
            RestoreTarget::Latest => {
                let e = log
                    .iter()
                    .rev()
                    .find(|e| e.event.file_path == path && e.event.event_type.carries_content())
                    .ok_or_else(|| bad(format!("{path:?} has no version in history")))?;
                let m = e.mivui;
                return self.restore_plan(&path, RestoreTarget::Version(m), to, dry_run);
            }
            RestoreTarget::At(t) => {
                let at = replay(&log, |x| x.event.time <= t);
                let rid = at
                    .resolve(&path)
                    .ok_or_else(|| bad(format!("{path:?} did not exist at that time")))?;
                let row = at.get(rid).expect("resolved").row.clone();
                if row.kind == Kind::Dir {
                    self.put_tree(&dest, &at, rid, &mut report)?;
                } else {
                    self.put_version(&dest, &row, &mut report)?;
                }
            }
        }
        Ok(report)
    }

    fn owner(&self) -> Caller {
        let st = crate::locks::lock(&self.state);
        let (uid, gid) = st
            .tree
            .get(ROOT_INO)
            .map_or((0, 0), |r| (r.row.uid, r.row.gid));
        Caller { uid, gid, pid: 0 }
    }

    /// The folder at `p`, made with events where missing (`None`: a dry
    /// run, and it is missing).
    fn make_dirs(&self, p: &str, report: &mut RestoreReport) -> super::Result<Option<Ino>> {
        let mut ino = ROOT_INO;
        let mut sofar = String::new();
        for part in p.split('/').filter(|c| !c.is_empty()) {
            if !sofar.is_empty() {
                sofar.push('/');
            }
            sofar.push_str(part);
            ino = match self.lookup(ino, OsStr::new(part)) {
                Ok(a) if a.kind == Kind::Dir => a.ino,
                Ok(_) => return Err(bad(format!("{part:?} in {p:?} is not a folder"))),
                Err(VfsError::NotFound) => {
                    report.folders_made += 1;
                    report.note("mkdir", &sofar, 0);
                    if report.dry_run {
                        return Ok(None);
                    }
                    self.mkdir(ino, OsStr::new(part), 0o755, self.owner())?.ino
                }
                Err(e) => return Err(e),
            };
        }
        Ok(Some(ino))
    }

    /// Writes one version at `dest` as a new event.
    fn put_version(
        &self,
        dest: &str,
        v: &RemoteRow,
        report: &mut RestoreReport,
    ) -> super::Result<()> {
        let (parent_path, name) = match dest.rfind('/') {
            Some(i) => (&dest[..i], &dest[i + 1..]),
            None => ("", dest),
        };
        let Some(parent) = self.make_dirs(parent_path, report)? else {
            // A dry run below a folder it would make.
            report.files_restored += 1;
            report.note("create", dest, v.size);
            return Ok(());
        };
        let mut st = crate::locks::lock(&self.state);
        let existing = st
            .tree
            .get(parent)
            .and_then(|p| p.children.get(name))
            .copied();
        let (mut row, ty, base) = match existing {
            Some(ino) => {
                let n = st.tree.get(ino).expect("child exists");
                if n.is_dir() || n.row.kind != v.kind {
                    return Err(bad(format!(
                        "{dest:?} is a {:?} now; restore it --to another path",
                        n.row.kind
                    )));
                }
                if n.writers > 0 || n.staging.is_some() {
                    return Err(bad(format!("{dest:?} is open for writing")));
                }
                let same = match v.kind {
                    Kind::File => n.row.hash.is_some() && n.row.hash == v.hash,
                    _ => n.row.target.as_deref() == v.target.as_deref().map(str::as_bytes),
                };
                if same {
                    report.unchanged += 1;
                    return Ok(());
                }
                if report.dry_run {
                    report.files_restored += 1;
                    report.note("replace", dest, v.size);
                    return Ok(());
                }
                let ty = if v.kind == Kind::Symlink {
                    EventType::Symlink
                } else {
                    EventType::Modify
                };
                (n.row.clone(), ty, n.row.hash.clone())
            }
            None if report.dry_run => {
                report.files_restored += 1;
                report.note("create", dest, v.size);
                return Ok(());
            }
            None => {
                let row = self.remote_row(&mut st, parent, name, v.kind);
                let ty = if v.kind == Kind::Symlink {
                    EventType::Symlink
                } else {
                    EventType::Create
                };
                (row, ty, None)
            }
        };
        row.mode = v.mode;
        row.size = if v.kind == Kind::File { v.size } else { 0 };
        row.mtime = v.mtime;
        row.ctime = self.now();
        row.object = v.object.clone();
        row.hash = v.hash.clone();
        row.target = v.target.as_ref().map(|t| t.as_bytes().to_vec());
        row.announced = true;
        let mut ev = self.new_event(&mut st, ty, dest.to_string(), &row, None);
        ev.detection = Detection::Restore;
        ev.base_hash = base;
        if existing.is_some() {
            // A new inode, so the kernel shows the new size (see replace_inode).
            self.replace_inode(&mut st, row, vec![Record::PutEvent(ev)])?;
        } else {
            st.invalidations.push(super::Invalidation::Entry {
                parent,
                name: name.to_string(),
            });
            self.journal(&mut st, vec![Record::PutInode(row), Record::PutEvent(ev)])?;
        }
        let inval = std::mem::take(&mut st.invalidations);
        drop(st);
        self.invalidate(inval);
        report.files_restored += 1;
        report.note(
            if existing.is_some() {
                "replace"
            } else {
                "create"
            },
            dest,
            v.size,
        );
        Ok(())
    }

    /// Makes the folder at `dest` hold exactly what `rid` held.
    fn put_tree(
        &self,
        dest: &str,
        at: &RemoteTree,
        rid: u64,
        report: &mut RestoreReport,
    ) -> super::Result<()> {
        let dir = self.make_dirs(dest, report)?;
        let node = at.get(rid).expect("exists");
        for (name, &child) in &node.children {
            let c = &at.get(child).expect("child exists").row;
            let p = format!("{dest}/{name}");
            if c.kind == Kind::Dir {
                self.put_tree(&p, at, child, report)?;
            } else {
                self.put_version(&p, c, report)?;
            }
        }
        let Some(dir) = dir else {
            return Ok(()); // a dry run: the folder would be new
        };
        // What came after the time goes (it stays in history).
        let now: Vec<(String, Kind)> = self
            .readdir_names(dir)?
            .into_iter()
            .filter(|(n, _)| !node.children.contains_key(n))
            .collect();
        for (name, kind) in now {
            self.remove_tree(dir, &format!("{dest}/{name}"), &name, kind, report)?;
        }
        Ok(())
    }

    fn readdir_names(&self, dir: Ino) -> super::Result<Vec<(String, Kind)>> {
        let st = crate::locks::lock(&self.state);
        let n = st.tree.get(dir).ok_or(VfsError::NotFound)?;
        Ok(n.children
            .iter()
            .filter_map(|(k, &i)| {
                let c = st.tree.get(i)?;
                // Ignored names never went to the log: a restore keeps them.
                c.row.announced.then(|| (k.clone(), c.row.kind))
            })
            .collect())
    }

    fn remove_tree(
        &self,
        dir: Ino,
        path: &str,
        name: &str,
        kind: Kind,
        report: &mut RestoreReport,
    ) -> super::Result<()> {
        report.note("remove", path, 0);
        if report.dry_run {
            report.removed += 1;
            return Ok(());
        }
        if kind == Kind::Dir {
            let ino = self.lookup(dir, OsStr::new(name))?.ino;
            for (n, k) in self.readdir_names(ino)? {
                self.remove_tree(ino, &format!("{path}/{n}"), &n, k, report)?;
            }
            match self.rmdir(dir, OsStr::new(name)) {
                Ok(()) | Err(VfsError::NotEmpty) => {}
                Err(e) => return Err(e),
            }
        } else {
            self.unlink(dir, OsStr::new(name))?;
        }
        // Not through the mount: the kernel's cached entry goes too.
        self.invalidate(vec![super::Invalidation::Entry {
            parent: dir,
            name: name.to_string(),
        }]);
        report.removed += 1;
        Ok(())
    }
}

/// The remote tree as the log made it, keeping entries `keep` accepts.
fn replay(log: &[LogEntry], keep: impl Fn(&LogEntry) -> bool) -> RemoteTree {
    let mut t = RemoteTree::from_rows(Vec::new());
    for e in log.iter().filter(|e| keep(e)) {
        if !e.event.event_type.is_node_record() {
            t.fold(&e.event, e.mivui, e.event.object.clone(), &e.node_name);
        }
    }
    debug_assert!(t.get(REMOTE_ROOT).is_some());
    t
}
