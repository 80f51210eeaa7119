//! Runs a scenario and checks it against the one reference model of what
//! users are promised:
//! - a program reading a file gets a version some program closed (or, with
//!   the file open for writing on that node, exactly what was written:
//!   POSIX shares one file between descriptors);
//! - a closed version is what the path shows right after the close;
//! - no event is published twice (no two records of one originator with
//!   one local id), and a folder rename is one event;
//! - at quiescence (faults healed, every node up, sync rounds until nothing
//!   changes) every node shows the same tree, nothing waits to be
//!   published, and every version any program closed is a current file, a
//!   conflict copy, or in the log.
//!
//! The model never decides which of two concurrent versions wins.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;

use latus::cloud::{CallKind, CloudErrorKind, Fault};
use latus::meta::{Ino, Kind, PUBLISHED_THROUGH};
use latus::vfs::{OpenMode, RenameFlags, SetAttr, Vfs};
use uuid::Uuid;

use super::ops::{At, Op, Scenario, Trouble, bytes, path};
use super::rng::Rng;
use super::world::{Held, ME, World, parent_of, read_all, resolve, sha512_hex, snapshot};

/// Content of a file open for writing on a node, as its writers made it.
#[derive(Debug, Clone)]
struct Live {
    data: Vec<u8>,
    /// Written since the last close.
    dirty: bool,
    handles: usize,
}

/// A broken promise: what happened, at which step.
#[derive(Debug)]
pub struct Failure {
    pub step: usize,
    pub message: String,
    pub trace: Vec<String>,
}

/// What a run did, for determinism checks and throughput figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub steps: usize,
    pub records: usize,
    /// A digest of the trace and the final tree.
    pub digest: String,
    pub trace: Vec<String>,
}

pub struct Sim {
    world: World,
    /// Hashes of every version a program closed (on any node).
    closed: HashSet<String>,
    /// Per node, files open for writing there.
    live: Vec<HashMap<Ino, Live>>,
    /// Log records checked so far, and what they published.
    checked: u64,
    published: HashSet<(Uuid, u64)>,
    published_hashes: HashSet<String>,
    trace: Vec<String>,
    step: usize,
    rng: Rng,
    /// Per node, the step at which it starts again after a crash.
    restart_at: Vec<Option<usize>>,
    /// Per node, the step at which its timed fault ends.
    heal_at: Vec<Option<usize>>,
}

type Check = Result<(), String>;

impl Sim {
    pub fn new(s: &Scenario, seed: u64) -> Self {
        let world = World::new(&s.skew_ms);
        let mut closed = HashSet::new();
        closed.insert(sha512_hex(b""));
        Self {
            live: vec![HashMap::new(); s.nodes],
            world,
            closed,
            checked: 0,
            published: HashSet::new(),
            published_hashes: HashSet::new(),
            trace: Vec::new(),
            step: 0,
            rng: Rng::new(seed ^ 0x0051_4d51_4d51_4d51),
            restart_at: vec![None; s.nodes],
            heal_at: vec![None; s.nodes],
        }
    }

    fn fail(&self, message: String) -> Failure {
        Failure {
            step: self.step,
            message,
            trace: self.trace.clone(),
        }
    }

    pub fn run(mut self, s: &Scenario) -> Result<Outcome, Failure> {
        for (i, op) in s.ops.iter().enumerate() {
            self.step = i;
            self.due();
            let result = self.apply(op);
            match result {
                Ok(note) => self.trace.push(format!("{i}: {op:?} -> {note}")),
                Err(e) => {
                    self.trace.push(format!("{i}: {op:?} -> BROKEN"));
                    return Err(self.fail(e));
                }
            }
        }
        self.step = s.ops.len();
        let tree = self.quiesce().map_err(|e| self.fail(e))?;
        self.trace.push(format!("quiescent: {tree}"));
        let digest = self.trace.join("\n");
        Ok(Outcome {
            steps: s.ops.len(),
            records: self.checked as usize,
            digest: sha512_hex(digest.as_bytes()),
            trace: self.trace,
        })
    }

    fn node(&self, node: u8) -> usize {
        node as usize % self.world.nodes.len()
    }

    /// Runs one step; `Ok` carries a note for the trace.
    fn apply(&mut self, op: &Op) -> Result<String, String> {
        match *op {
            Op::Sync { node } => {
                let i = self.node(node);
                let Some(r) = &self.world.nodes[i].running else {
                    return Ok("down".into());
                };
                let out = match r.uploader.step() {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("failed: {e}"),
                };
                self.check_log()?;
                Ok(out)
            }
            Op::Checkpoint { node } => {
                let i = self.node(node);
                let Some(r) = &self.world.nodes[i].running else {
                    return Ok("down".into());
                };
                let out = match r.uploader.checkpoint() {
                    Ok(made) => format!("at {} ({} rows)", made.mivui, made.rows),
                    Err(e) => format!("failed: {e}"),
                };
                self.check_log()?;
                Ok(out)
            }
            Op::Advance { ms } => {
                self.world.clock.advance(ms as i64 * 1_000_000);
                Ok(String::new())
            }
            Op::Crash { node, down } => {
                let i = self.node(node);
                if self.world.nodes[i].running.is_none() {
                    return Ok("down already".into());
                }
                self.world.crash(i);
                // Unclosed writes die with the process.
                self.live[i].clear();
                self.restart_at[i] = Some(self.step + 1 + down as usize);
                Ok(String::new())
            }
            Op::Fault { node, trouble } => {
                let i = self.node(node);
                self.trouble(i, trouble);
                Ok(String::new())
            }
            _ => self.local(op),
        }
    }

    /// Timed events due at this step: restarts, faults that end.
    fn due(&mut self) {
        for i in 0..self.world.nodes.len() {
            if self.restart_at[i].is_some_and(|s| s <= self.step) {
                self.restart_at[i] = None;
                self.world.start(i);
                self.trace.push(format!("{}: n{i} starts again", self.step));
            }
            if self.heal_at[i].is_some_and(|s| s <= self.step) {
                self.heal_at[i] = None;
                self.world.nodes[i].control.heal();
                self.trace
                    .push(format!("{}: n{i}'s cloud is back", self.step));
            }
        }
    }

    fn trouble(&mut self, i: usize, t: Trouble) {
        let c = &self.world.nodes[i].control;
        if let Trouble::StoreDown(steps) | Trouble::Offline(steps) = t {
            self.heal_at[i] = Some(self.step + 1 + steps as usize);
        }
        match t {
            Trouble::FailAppend => {
                c.inject_on(CallKind::Append, Fault::Next(1, CloudErrorKind::Server))
            }
            Trouble::LoseAppend => c.inject_on(CallKind::Append, Fault::LostReplies(1)),
            Trouble::HangAppend => c.inject_on(CallKind::Append, Fault::Hang(1)),
            Trouble::FailRead => {
                c.inject_on(CallKind::Read, Fault::Next(1, CloudErrorKind::Throttled))
            }
            Trouble::StoreDown(_) => {
                // Every object call, whatever its name: the chunk workers
                // run in parallel, so per-call faults would not replay.
                for k in [CallKind::Put, CallKind::Get, CallKind::Size] {
                    c.inject_on(k, Fault::Down(CloudErrorKind::Unreachable));
                }
            }
            Trouble::Offline(_) => c.inject(Fault::Down(CloudErrorKind::Unreachable)),
            Trouble::Heal => c.heal(),
            Trouble::Land => c.release_held(0),
            Trouble::Forget => c.drop_held(),
        }
    }

    /// A filesystem operation on a running node.
    fn local(&mut self, op: &Op) -> Result<String, String> {
        let node = match *op {
            Op::Write { node, .. }
            | Op::Hold { node, .. }
            | Op::WriteHeld { node, .. }
            | Op::Close { node, .. }
            | Op::Truncate { node, .. }
            | Op::Rename { node, .. }
            | Op::Unlink { node, .. }
            | Op::Mkdir { node, .. }
            | Op::Rmdir { node, .. }
            | Op::Symlink { node, .. }
            | Op::Chmod { node, .. }
            | Op::Read { node, .. } => node,
            _ => unreachable!("not a local operation"),
        };
        let i = self.node(node);
        let Some(vfs) = self.world.nodes[i].running.as_ref().map(|r| r.vfs.clone()) else {
            return Ok("down".into());
        };
        match self.local_on(i, &vfs, op) {
            Ok(note) => Ok(note),
            Err(Broken::Soft(e)) => Ok(format!("error: {e}")),
            Err(Broken::Promise(e)) => Err(e),
        }
    }

    fn local_on(&mut self, i: usize, vfs: &Vfs, op: &Op) -> Result<String, Broken> {
        match *op {
            Op::Write {
                path: p,
                at,
                fill,
                len,
                ..
            } => self.write(i, vfs, path(p), at, &bytes(fill, len), false),
            Op::Hold {
                path: p, fill, len, ..
            } => {
                if self.world.nodes[i].held.len() >= 3 {
                    return Ok("enough held".into());
                }
                self.write(i, vfs, path(p), At::Append, &bytes(fill, len), true)
            }
            Op::WriteHeld {
                handle,
                at,
                fill,
                len,
                ..
            } => self.write_held(i, vfs, handle, at, &bytes(fill, len)),
            Op::Close { handle, .. } => {
                let held = &mut self.world.nodes[i].held;
                if held.is_empty() {
                    return Ok("none held".into());
                }
                let h = held.remove(handle as usize % held.len());
                self.close(i, vfs, h).map(|()| "closed".into())
            }
            Op::Truncate { path: p, len, .. } => self.truncate(i, vfs, path(p), len as u64),
            Op::Rename { from, to, .. } => self.rename(vfs, path(from), path(to)),
            Op::Unlink { path: p, .. } => {
                let (d, name) = parent_of(vfs, path(p)).map_err(soft)?;
                vfs.unlink(d, OsStr::new(name)).map_err(soft)?;
                Ok("unlinked".into())
            }
            Op::Mkdir { path: p, .. } => {
                let (d, name) = parent_of(vfs, path(p)).map_err(soft)?;
                vfs.mkdir(d, OsStr::new(name), 0o755, ME).map_err(soft)?;
                Ok("made".into())
            }
            Op::Rmdir { path: p, .. } => {
                let (d, name) = parent_of(vfs, path(p)).map_err(soft)?;
                vfs.rmdir(d, OsStr::new(name)).map_err(soft)?;
                Ok("removed".into())
            }
            Op::Symlink {
                path: p, target, ..
            } => {
                let (d, name) = parent_of(vfs, path(p)).map_err(soft)?;
                let target = format!("target-{target}");
                vfs.symlink(d, OsStr::new(name), target.as_bytes(), ME)
                    .map_err(soft)?;
                Ok("linked".into())
            }
            Op::Chmod { path: p, mode, .. } => {
                let a = resolve(vfs, path(p)).map_err(soft)?;
                if a.kind == Kind::Symlink {
                    return Ok("a link".into());
                }
                let set = SetAttr {
                    mode: Some(mode as u32),
                    ..Default::default()
                };
                vfs.setattr(a.ino, set, None).map_err(soft)?;
                Ok(format!("{mode:o}"))
            }
            Op::Read { path: p, .. } => self.read(i, vfs, path(p)),
            _ => unreachable!(),
        }
    }

    /// The bytes a program read must be a version someone closed, or what
    /// this node's writers hold.
    fn check_read(&self, i: usize, ino: Ino, data: &[u8], what: &str) -> Result<(), Broken> {
        if let Some(l) = self.live[i].get(&ino) {
            if l.data != data {
                return Err(Broken::Promise(format!(
                    "{what}: read {} bytes that differ from the {} its writers wrote",
                    data.len(),
                    l.data.len()
                )));
            }
            return Ok(());
        }
        if !self.closed.contains(&sha512_hex(data)) {
            return Err(Broken::Promise(format!(
                "{what}: read {} bytes ({:?}...) that are no version any program closed",
                data.len(),
                &data[..data.len().min(8)]
            )));
        }
        Ok(())
    }

    fn read(&mut self, i: usize, vfs: &Vfs, p: &str) -> Result<String, Broken> {
        let a = resolve(vfs, p).map_err(soft)?;
        if a.kind != Kind::File {
            return Ok("not a file".into());
        }
        let data = read_all(vfs, a.ino).map_err(soft)?;
        self.check_read(i, a.ino, &data, &format!("n{i} {p}"))?;
        Ok(format!("{} bytes", data.len()))
    }

    /// Opens (or creates) `p` for writing; the model's live content of it.
    fn open_for_write(
        &mut self,
        i: usize,
        vfs: &Vfs,
        p: &str,
        truncate: bool,
    ) -> Result<Held, Broken> {
        let (d, name) = parent_of(vfs, p).map_err(soft)?;
        let (h, fresh) = match vfs.lookup(d, OsStr::new(name)) {
            Ok(a) if a.kind == Kind::File => {
                let flags = if truncate {
                    OpenMode::TRUNCATE
                } else {
                    OpenMode::WRITE
                };
                let o = vfs.open(a.ino, flags, ME).map_err(soft)?;
                (
                    Held {
                        ino: a.ino,
                        fh: o.fh,
                    },
                    false,
                )
            }
            Ok(_) => return Err(soft("not a file")),
            Err(_) => {
                let (a, o) = vfs
                    .create(d, OsStr::new(name), 0o644, OpenMode::WRITE, ME)
                    .map_err(soft)?;
                (
                    Held {
                        ino: a.ino,
                        fh: o.fh,
                    },
                    true,
                )
            }
        };
        if !self.live[i].contains_key(&h.ino) {
            let data = if fresh || truncate {
                Vec::new()
            } else {
                match vfs.read(h.ino, h.fh, 0, u32::MAX) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = vfs.release(h.ino, h.fh);
                        return Err(soft(e));
                    }
                }
            };
            if !fresh && !truncate {
                self.check_read(i, h.ino, &data, &format!("n{i} {p} at open"))?;
            }
            self.live[i].insert(
                h.ino,
                Live {
                    data,
                    dirty: fresh || truncate,
                    handles: 0,
                },
            );
        } else if truncate {
            let l = self.live[i].get_mut(&h.ino).expect("present");
            l.data.clear();
            l.dirty = true;
        }
        self.live[i].get_mut(&h.ino).expect("present").handles += 1;
        Ok(h)
    }

    fn put(&mut self, i: usize, vfs: &Vfs, h: Held, at: At, data: &[u8]) -> Result<(), Broken> {
        let l = self.live[i].get(&h.ino).expect("open files are live");
        let off = match at {
            At::Replace => 0,
            At::Append => l.data.len(),
            At::Offset(o) => (o as usize).min(l.data.len()),
        };
        vfs.write(h.ino, h.fh, off as u64, data).map_err(soft)?;
        let l = self.live[i].get_mut(&h.ino).expect("present");
        if l.data.len() < off + data.len() {
            l.data.resize(off + data.len(), 0);
        }
        l.data[off..off + data.len()].copy_from_slice(data);
        l.dirty = true;
        Ok(())
    }

    fn write(
        &mut self,
        i: usize,
        vfs: &Vfs,
        p: &str,
        at: At,
        data: &[u8],
        hold: bool,
    ) -> Result<String, Broken> {
        let h = self.open_for_write(i, vfs, p, at == At::Replace)?;
        if let Err(e) = self.put(i, vfs, h, at, data) {
            self.close(i, vfs, h)?;
            return Err(e);
        }
        if hold {
            self.world.nodes[i].held.push(h);
            return Ok(format!("held ino {}", h.ino));
        }
        let want = self.live[i][&h.ino].data.clone();
        let others = self.live[i][&h.ino].handles > 1;
        self.close(i, vfs, h)?;
        // Close-to-open: the path shows the version just closed.
        if !others {
            let a = resolve(vfs, p).map_err(|e| {
                Broken::Promise(format!("n{i} {p}: gone right after its close: {e}"))
            })?;
            let got = read_all(vfs, a.ino).map_err(soft)?;
            if got != want {
                return Err(Broken::Promise(format!(
                    "n{i} {p}: shows {} bytes right after a close of {}",
                    got.len(),
                    want.len()
                )));
            }
        }
        Ok(format!("{} bytes", want.len()))
    }

    fn write_held(
        &mut self,
        i: usize,
        vfs: &Vfs,
        handle: u8,
        at: At,
        data: &[u8],
    ) -> Result<String, Broken> {
        let held = &self.world.nodes[i].held;
        if held.is_empty() {
            return Ok("none held".into());
        }
        let h = held[handle as usize % held.len()];
        self.put(i, vfs, h, at, data)?;
        Ok(format!("ino {}", h.ino))
    }

    /// flush + release; a close after writes is a closed version, unless
    /// the file was deleted meanwhile (nobody can see it then).
    fn close(&mut self, i: usize, vfs: &Vfs, h: Held) -> Result<(), Broken> {
        let linked = vfs.getattr(h.ino).is_ok_and(|a| a.nlink > 0);
        let flushed = vfs.flush(h.ino, h.fh, ME.pid);
        let released = vfs.release(h.ino, h.fh);
        let l = self.live[i].get_mut(&h.ino).expect("open files are live");
        if l.dirty && linked && flushed.is_ok() {
            self.closed.insert(sha512_hex(&l.data));
            l.dirty = false;
        }
        l.handles -= 1;
        if l.handles == 0 {
            self.live[i].remove(&h.ino);
        }
        flushed.map_err(soft)?;
        released.map_err(soft)
    }

    /// truncate(2) by path: a complete change, committed at once with
    /// whatever this node's writers have written (as `setattr` does).
    fn truncate(&mut self, i: usize, vfs: &Vfs, p: &str, len: u64) -> Result<String, Broken> {
        let a = resolve(vfs, p).map_err(soft)?;
        if a.kind != Kind::File {
            return Ok("not a file".into());
        }
        let mut data = match self.live[i].get(&a.ino) {
            Some(l) => l.data.clone(),
            None => {
                let d = read_all(vfs, a.ino).map_err(soft)?;
                self.check_read(i, a.ino, &d, &format!("n{i} {p} before truncate"))?;
                d
            }
        };
        let set = SetAttr {
            size: Some(len),
            ..Default::default()
        };
        vfs.setattr(a.ino, set, None).map_err(soft)?;
        data.resize(len as usize, 0);
        self.closed.insert(sha512_hex(&data));
        if let Some(l) = self.live[i].get_mut(&a.ino) {
            l.data = data;
            l.dirty = false;
        }
        Ok(format!("to {len}"))
    }

    fn rename(&mut self, vfs: &Vfs, from: &str, to: &str) -> Result<String, Broken> {
        let (fd, fname) = parent_of(vfs, from).map_err(soft)?;
        let (td, tname) = parent_of(vfs, to).map_err(soft)?;
        let src = vfs.lookup(fd, OsStr::new(fname)).map_err(soft)?;
        let dst_free = vfs.lookup(td, OsStr::new(tname)).is_err();
        let before = vfs.counts().events;
        vfs.rename(
            fd,
            OsStr::new(fname),
            td,
            OsStr::new(tname),
            RenameFlags::default(),
        )
        .map_err(soft)?;
        let made = vfs.counts().events - before;
        if src.kind == Kind::Dir && dst_free && from != to && made != 1 {
            return Err(Broken::Promise(format!(
                "renaming folder {from} to {to} made {made} events, not one"
            )));
        }
        Ok(format!("{made} events"))
    }

    /// New log records: none publishes an event twice.
    fn check_log(&mut self) -> Check {
        for (mivui, origin, p) in self.world.records(self.checked) {
            self.checked = mivui;
            if let Some(h) = &p.event.file_hash {
                self.published_hashes.insert(h.clone());
            }
            if p.local_id != 0 && !self.published.insert((origin, p.local_id)) {
                return Err(format!(
                    "event {} of {origin} published twice (again at mivui {mivui}: {:?} {})",
                    p.local_id, p.event.event_type, p.event.file_path
                ));
            }
        }
        Ok(())
    }

    /// Heals everything, brings every node up, syncs until nothing changes,
    /// and checks the end state. Returns the common tree.
    fn quiesce(&mut self) -> Result<String, String> {
        let n = self.world.nodes.len();
        let land = self.rng.chance(50);
        for i in 0..n {
            let c = self.world.nodes[i].control.clone();
            c.heal();
            if land {
                while !c.held().is_empty() {
                    c.release_held(0);
                }
            } else {
                c.drop_held();
            }
            self.world.start(i);
        }
        for i in 0..n {
            let vfs = self.world.nodes[i]
                .running
                .as_ref()
                .expect("up")
                .vfs
                .clone();
            for h in std::mem::take(&mut self.world.nodes[i].held) {
                self.close(i, &vfs, h).map_err(|e| match e {
                    Broken::Soft(e) | Broken::Promise(e) => format!("final close: {e}"),
                })?;
            }
        }
        let mut rounds = 0;
        loop {
            rounds += 1;
            let before = self.checked;
            for i in 0..n {
                let r = self.world.nodes[i].running.as_ref().expect("up");
                r.uploader
                    .step()
                    .map_err(|e| format!("n{i}: a pass failed with the cloud healed: {e}"))?;
                self.check_log()?;
            }
            let pending = (0..n).any(|i| {
                let meta = &self.world.nodes[i].running.as_ref().expect("up").meta;
                let after = meta.state(PUBLISHED_THROUGH).expect("state");
                !meta
                    .unpublished_events(after, 1)
                    .expect("events")
                    .is_empty()
            });
            if self.checked == before && !pending {
                break;
            }
            if rounds > 12 {
                return Err(format!(
                    "no quiescence after {rounds} sync rounds (log at {}, pending: {pending})",
                    self.checked
                ));
            }
        }
        let trees: Vec<_> = (0..n)
            .map(|i| {
                let vfs = &self.world.nodes[i].running.as_ref().expect("up").vfs;
                snapshot(vfs).map_err(|e| format!("n{i} at quiescence: {e}"))
            })
            .collect::<Result<_, _>>()?;
        for (i, t) in trees.iter().enumerate().skip(1) {
            if *t != trees[0] {
                return Err(format!(
                    "trees differ at quiescence after {rounds} rounds:\n{}",
                    diff(&trees[0], t, i)
                ));
            }
        }
        // A node joining now (from the newest checkpoint, if any) shows
        // the same tree.
        let j = self.world.join();
        let joined = self.world.nodes[j].running.as_ref().expect("up");
        for _ in 0..3 {
            joined
                .uploader
                .step()
                .map_err(|e| format!("the joining node's pass failed: {e}"))?;
        }
        let from = joined.uploader.status().history_from;
        let t = snapshot(&joined.vfs).map_err(|e| format!("joining node: {e}"))?;
        if t != trees[0] {
            return Err(format!(
                "a node joining from checkpoint {from} shows another tree:\n{}",
                diff(&trees[0], &t, j)
            ));
        }
        self.check_log()?;
        self.trace.push(format!("joined from checkpoint {from}"));
        let current: HashSet<&String> = trees[0]
            .values()
            .filter_map(|e| match e {
                super::world::Entry::File { hash, .. } => Some(hash),
                _ => None,
            })
            .collect();
        let empty = sha512_hex(b"");
        let lost: BTreeSet<&String> = self
            .closed
            .iter()
            .filter(|h| **h != empty && !current.contains(h) && !self.published_hashes.contains(*h))
            .collect();
        if let Some(h) = lost.iter().next() {
            return Err(format!(
                "{} closed versions are neither a current file nor in the log (e.g. {}…)",
                lost.len(),
                &h[..16]
            ));
        }
        Ok(format!("{:?}", trees[0]))
    }
}

fn diff(
    a: &BTreeMap<String, super::world::Entry>,
    b: &BTreeMap<String, super::world::Entry>,
    i: usize,
) -> String {
    let mut out = String::new();
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if a.get(k) != b.get(k) {
            out.push_str(&format!("  {k}: n0 {:?} / n{i} {:?}\n", a.get(k), b.get(k)));
        }
    }
    out
}

/// Why a local operation did not complete.
enum Broken {
    /// An error a program may get (the file is gone, the cloud is down).
    Soft(String),
    /// A promise broken.
    Promise(String),
}

fn soft(e: impl std::fmt::Display) -> Broken {
    Broken::Soft(e.to_string())
}
