//! The platform-neutral filesystem core: inodes, handles, POSIX semantics,
//! and the events every visible change produces. The FUSE adapter only
//! translates to and from these calls; tests drive them without a mount.
//!
//! Invariants:
//! - Every change is journaled (`Meta::append`) before memory reflects it.
//! - A committed version is immutable: writes go to a staging object that
//!   becomes the committed version at close (flush), fsync, or when a
//!   truncate without a writer handle completes. A crash discards staging,
//!   so a half-written version is never visible.
//! - An inode is `announced` iff an event made it known at its current path;
//!   ignored names and files not yet closed produce no events.

mod apply;
mod cold;
mod error;
mod hasher;
mod overview;
mod placement;
mod restore;
mod tree;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use uuid::Uuid;

use crate::clock::Clock;
use crate::event::{Detection, Event, EventType};
use crate::ignore::IgnoreRules;
use crate::locks::{Mutex, exclude, lock, share};
use crate::meta::{
    Ino, InodeRow, Kind, Loaded, Meta, Nanos, Placement, ROOT_INO, Record, Recovery, RemoteRow,
};
use crate::store::ContentStore;

pub use apply::Invalidation;
pub use cold::{ColdFile, ColdSplit};
pub use error::{FetchError, Result, VfsError};
use hasher::{HashDone, HashJob};
pub use hasher::{sha512_empty, sha512_of};
pub use overview::{FolderEntry, NamedFile, Waiting};
pub use placement::{CacheStatus, DiskStatus, EvictReport, HydrateItem, PlacementInfo};
pub use restore::{RestoreReport, RestoreTarget, VersionInfo};
use tree::{Node, Staging, Tree};

/// Versions up to this size are hashed inline at commit.
const INLINE_HASH_LIMIT: u64 = 1 << 20;
const MAX_NAME: usize = 255;
const MAX_XATTR_VALUE: usize = 64 << 10;
/// Copies of committed versions at least this large are made without
/// holding the tree lock.
const LARGE_COPY: u64 = 8 << 20;
/// Modification-time changes smaller than this are the kernel's own
/// bookkeeping (see `setattr`), journaled without an event.
const MTIME_NOISE: Nanos = 2_000_000_000;
/// Read-only: `local`, `pending`, `cloud` or `local-only`.
const XATTR_STATE: &str = "user.latus.state";
/// The placement rule in force; setting it sets a rule on this path.
const XATTR_PLACEMENT: &str = "user.latus.placement";

#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub atime: Nanos,
    pub mtime: Nanos,
    pub ctime: Nanos,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// 512-byte blocks on this disk (`st_blocks`): none for content only
    /// in the cloud (also while a partial copy is being fetched), so `du`
    /// and `ls -s` tell local from cloud.
    pub blocks: u64,
    /// The device number of a device node.
    pub rdev: u32,
}

#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(Nanos),
}

#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: u64,
    /// The kernel may keep its page cache for this file.
    pub keep_cache: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// What an open asks of the core (the adapter translates its platform's
/// flags). Appending is not among them: the caller (the kernel) resolves
/// append offsets, as it owns the file size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    /// Empty the file (inside the new version: a crash before close
    /// still shows the last closed one).
    pub truncate: bool,
}

impl OpenMode {
    pub const READ: Self = Self {
        write: false,
        truncate: false,
    };
    pub const WRITE: Self = Self {
        write: true,
        truncate: false,
    };
    pub const TRUNCATE: Self = Self {
        write: true,
        truncate: true,
    };
}

/// How `rename` may treat an existing target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail if the target exists.
    pub no_replace: bool,
    /// Swap source and target (or any other mode latus cannot sync):
    /// refused.
    pub exchange: bool,
}

/// Whether `setxattr` may make or replace the attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XattrSet {
    #[default]
    Any,
    /// Only if it does not exist yet.
    Create,
    /// Only if it exists.
    Replace,
}

/// Set-group-id on a folder: new entries take its group (POSIX).
const SETGID: u32 = 0o2000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Counts {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes: they work here and are never synced.
    pub special_files: u64,
    pub open_files: u64,
    pub events: u64,
    pub hashing: u64,
    pub journal_backlog: usize,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PathStatus {
    pub path: String,
    pub kind: Kind,
    /// `local` / `pending` / `cloud` / `local-only`.
    pub state: &'static str,
    pub size: u64,
    pub mtime: Nanos,
    pub mode: u32,
    pub file_hash: Option<String>,
    pub last_event: Option<Event>,
    /// The placement rule in force and the path that sets it.
    pub placement: PlacementInfo,
}

/// What mounting found and repaired after an unclean stop.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RecoveryReport {
    pub replayed_records: usize,
    pub torn_journal_bytes: u64,
    /// Unfinished versions (written but never closed) that were discarded.
    pub discarded_unclosed_versions: usize,
    /// Files created but never closed before the crash, now journaled.
    pub announced_files: usize,
    pub rehashed: usize,
    /// The database was damaged and rebuilt.
    pub database_rebuilt: Option<crate::meta::Rebuilt>,
    /// Content objects no rebuilt row names (their paths went with the
    /// damaged database), kept in `unplaced_folder`.
    pub unplaced_objects: usize,
    pub unplaced_folder: Option<String>,
}

impl RecoveryReport {
    pub fn is_clean(&self) -> bool {
        self.replayed_records == 0
            && self.torn_journal_bytes == 0
            && self.discarded_unclosed_versions == 0
            && self.announced_files == 0
            && self.database_rebuilt.is_none()
    }
}

enum HandleKind {
    File(OpenMode),
    Dir(Arc<Vec<DirEntry>>),
}

struct Handle {
    ino: Ino,
    kind: HandleKind,
    /// The thread that opened it: its process's closes commit.
    opener: u32,
}

struct State {
    tree: Tree,
    /// Objects named by events not yet in the cloud, with how many such
    /// events name each: they are kept until published.
    pinned: HashMap<String, u32>,
    /// Pinned objects no longer current: removed once unpinned.
    retired: HashSet<String>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    next_event: u64,
    event_count: u64,
    hashing: u64,
    /// Paths of this node's events not yet read back from the log, with the
    /// newest such event's id: these keep their local version (the sync
    /// engine's planner asks).
    touched: BTreeMap<String, u64>,
    /// Kernel cache entries to drop once the lock is released.
    invalidations: Vec<Invalidation>,
}

pub struct Vfs {
    state: Mutex<State>,
    meta: Arc<Meta>,
    store: Arc<ContentStore>,
    node_id: Uuid,
    ignore: IgnoreRules,
    hasher: Mutex<Option<Sender<HashJob>>>,
    hasher_thread: Mutex<Option<JoinHandle<()>>>,
    /// Called after events are journaled (the uploader's doorbell).
    event_listener: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Where committed content comes back from when the local copy is gone.
    content_source: Mutex<Option<Arc<dyn ContentSource>>>,
    /// Whether large versions are hashed by the hasher thread; off while an
    /// uploader runs, which hashes them as it reads them anyway.
    background_hashing: std::sync::atomic::AtomicBool,
    /// The hydration policy (with per-program counts); none: every reader
    /// may download.
    hydration: Mutex<Option<Arc<crate::hydration::Gate>>>,
    /// Tells the kernel about changes it did not make (remote apply).
    invalidator: Mutex<Option<Invalidator>>,
    /// The kernel keeps write times (writeback caching) and sends them.
    kernel_times: std::sync::atomic::AtomicBool,
    /// The local cache's cap in bytes (0: none).
    cache_cap: std::sync::atomic::AtomicU64,
    /// The cache is over its cap with content that may not be evicted.
    over_cap: std::sync::atomic::AtomicBool,
    /// Content writes refused for a full disk, and when that was last logged.
    disk: placement::DiskGuard,
    /// Something may need an eager download (a pin, files the log brought).
    pin_dirty: std::sync::atomic::AtomicBool,
    /// Versions whose chunks are confirmed in the cold tier (or kept hot
    /// for a hot file that shares them): their copies below a cold rule may
    /// go. Kept by `sync::cold`.
    cold_ready: Mutex<HashSet<String>>,
    /// A placement changed: the cooler has work (`sync::cold`).
    cold_dirty: std::sync::atomic::AtomicBool,
    /// Event times and file times come from here.
    clock: Arc<dyn Clock>,
    /// This node's changes yield to concurrent ones earlier in the log
    /// (`conflict_policy: first`).
    conflict_first: std::sync::atomic::AtomicBool,
    /// The remote tree as the database holds it, until the sync engine
    /// takes it (`take_remote_rows`); their objects are live meanwhile.
    remote_rows: Mutex<Vec<RemoteRow>>,
}

type Invalidator = Arc<dyn Fn(Invalidation) + Send + Sync>;

/// Brings back a committed version's content into the local store.
pub trait ContentSource: Send + Sync {
    /// Writes object `object` (`size` bytes, SHA-512 `hash` when known) into
    /// the store, complete and verified, or fails saying why.
    fn fetch(
        &self,
        object: &str,
        size: u64,
        hash: Option<&str>,
    ) -> std::result::Result<(), FetchError>;

    /// Bytes `offset..offset + len` of the version, fetching only the
    /// chunks that cover them (each verified before any byte is returned).
    /// Readahead never fetches chunks starting at or beyond `limit`.
    fn read_range(
        &self,
        object: &str,
        size: u64,
        hash: Option<&str>,
        offset: u64,
        len: usize,
        limit: Option<u64>,
    ) -> std::result::Result<Vec<u8>, FetchError>;

    /// Drops the partial copy of `object`, if one is there and nothing is
    /// being fetched into it. Returns the disk it took.
    fn drop_partial(&self, object: &str) -> u64;

    /// Returns once a complete copy of `object` that is being checked and
    /// put in place is there (or failed), so it can be evicted as a whole.
    fn settle(&self, object: &str);
}

/// One line per failed read of content only in the cloud; a cold file
/// says why and what to do.
fn cold_read_failed(path: &str, e: &FetchError) {
    match e {
        FetchError::Frozen(why) => {
            tracing::warn!(path = %path, "{path} is being restored from cold storage: {why}")
        }
        FetchError::Thawing(why) => tracing::debug!(path = %path, "{path}: {why}"),
        FetchError::ColdOffline(why) => tracing::warn!(
            path = %path,
            "{path} is in cold storage and cannot be read now (ENOMEDIUM): {why}"
        ),
        e => {
            tracing::error!(path = %path, error = %e, "a read of content only in the cloud failed")
        }
    }
}

/// The system clock (what the daemon's core uses unless told otherwise).
pub fn now_nanos() -> Nanos {
    crate::clock::SystemClock.now()
}

fn check_name(name: &OsStr) -> Result<&str> {
    let s = name.to_str().ok_or(VfsError::NameNotUtf8)?;
    if s.len() > MAX_NAME {
        return Err(VfsError::NameTooLong);
    }
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(VfsError::Invalid("bad file name"));
    }
    Ok(s)
}

fn attr_of(n: &Node) -> Attr {
    let (mtime, ctime) = n
        .staging
        .as_ref()
        .map_or((n.row.mtime, n.row.ctime), |s| (s.mtime, s.ctime));
    Attr {
        ino: n.row.ino,
        kind: n.row.kind,
        size: n.size(),
        atime: n.row.atime,
        mtime,
        ctime,
        perm: (n.row.mode & 0o7777) as u16,
        nlink: match (n.row.kind, n.linked) {
            (Kind::Dir, _) => 2 + n.subdirs,
            (_, true) => 1 + n.row.links.len() as u32,
            (_, false) => 0,
        },
        uid: n.row.uid,
        gid: n.row.gid,
        blocks: n.size().div_ceil(512),
        rdev: n.row.rdev,
    }
}

impl Vfs {
    /// Builds the core over an opened database, collects garbage objects and
    /// repairs what an unclean stop left behind.
    pub fn new(
        meta: Arc<Meta>,
        store: Arc<ContentStore>,
        loaded: Loaded,
        node_id: Uuid,
        ignore: IgnoreRules,
        owner: (u32, u32),
    ) -> Result<(Arc<Self>, RecoveryReport)> {
        Self::with_clock(
            meta,
            store,
            loaded,
            node_id,
            ignore,
            owner,
            crate::clock::system(),
        )
    }

    /// `new` with its times from `clock` (the simulation's manual clock).
    pub fn with_clock(
        meta: Arc<Meta>,
        store: Arc<ContentStore>,
        loaded: Loaded,
        node_id: Uuid,
        ignore: IgnoreRules,
        owner: (u32, u32),
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Self>, RecoveryReport)> {
        let Loaded {
            inodes,
            remote,
            max_event_id,
            event_count,
            recovery:
                Recovery {
                    replayed_records,
                    torn_bytes,
                    rebuilt,
                    keep_unnamed,
                    ..
                },
        } = loaded;
        let tree = Tree::from_rows(inodes);
        let event_floor = meta.state(crate::meta::EVENT_FLOOR)?;
        let vfs = Arc::new(Self {
            state: Mutex::new(State {
                tree,
                pinned: HashMap::new(),
                retired: HashSet::new(),
                handles: HashMap::new(),
                next_fh: 1,
                next_event: max_event_id.max(event_floor) + 1,
                event_count,
                hashing: 0,
                touched: BTreeMap::new(),
                invalidations: Vec::new(),
            }),
            meta,
            store,
            node_id,
            ignore,
            hasher: Mutex::new(None),
            hasher_thread: Mutex::new(None),
            event_listener: Mutex::new(None),
            content_source: Mutex::new(None),
            background_hashing: std::sync::atomic::AtomicBool::new(true),
            invalidator: Mutex::new(None),
            hydration: Mutex::new(None),
            kernel_times: std::sync::atomic::AtomicBool::new(false),
            cache_cap: std::sync::atomic::AtomicU64::new(0),
            over_cap: std::sync::atomic::AtomicBool::new(false),
            disk: Default::default(),
            pin_dirty: std::sync::atomic::AtomicBool::new(true),
            cold_ready: Mutex::new(HashSet::new()),
            cold_dirty: std::sync::atomic::AtomicBool::new(true),
            clock,
            conflict_first: std::sync::atomic::AtomicBool::new(false),
            remote_rows: Mutex::new(remote),
        });
        let weak: Weak<Vfs> = Arc::downgrade(&vfs);
        let (tx, thread) = hasher::spawn(move |done| {
            if let Some(vfs) = weak.upgrade() {
                vfs.finish_hash(done);
            }
        });
        *lock(&vfs.hasher) = Some(tx);
        *lock(&vfs.hasher_thread) = Some(thread);

        let mut report = RecoveryReport {
            replayed_records,
            torn_journal_bytes: torn_bytes,
            ..Default::default()
        };
        vfs.ensure_root(owner)?;
        vfs.pin_unpublished()?;
        vfs.upgrade_remote_tree()?;
        vfs.load_touched()?;
        if keep_unnamed
            || rebuilt
                .as_ref()
                .is_some_and(|r| !r.journal_complete || r.by_repair)
        {
            // Content whose rows went with the database (or that a home
            // restored from an old copy does not know): kept, not collected.
            let aside = vfs
                .store
                .dir()
                .with_file_name(format!("unplaced-{}", vfs.now().div_euclid(1_000_000_000)));
            report.unplaced_objects = vfs.store.set_aside_garbage(&vfs.live_objects(), &aside)?;
            if report.unplaced_objects > 0 {
                report.unplaced_folder = Some(aside.display().to_string());
            }
        } else {
            report.discarded_unclosed_versions = vfs.collect_garbage()?;
        }
        report.database_rebuilt = rebuilt;
        report.announced_files = vfs.announce_unclosed()?;
        report.rehashed = vfs.requeue_hashes()?;
        Ok((vfs, report))
    }

    fn ensure_root(&self, (uid, gid): (u32, u32)) -> Result<()> {
        let mut st = lock(&self.state);
        if st.tree.get(ROOT_INO).is_some() {
            return Ok(());
        }
        let now = self.now();
        let root = InodeRow {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            kind: Kind::Dir,
            mode: 0o755,
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
        };
        self.journal(&mut st, vec![Record::PutInode(root)])
    }

    /// Objects of events still waiting for the cloud stay until published,
    /// even when their file has changed or gone since.
    fn pin_unpublished(&self) -> Result<()> {
        let after = self.meta.state(crate::meta::PUBLISHED_THROUGH)?;
        let events = self.meta.unpublished_events(after, usize::MAX)?;
        let mut st = lock(&self.state);
        for o in events.into_iter().filter_map(|e| e.object) {
            *st.pinned.entry(o).or_default() += 1;
        }
        let current: HashSet<String> = st
            .tree
            .nodes
            .values()
            .filter_map(|n| n.row.object.clone())
            .collect();
        let retired: Vec<String> = st
            .pinned
            .keys()
            .filter(|o| !current.contains(*o))
            .cloned()
            .collect();
        st.retired.extend(retired);
        Ok(())
    }

    /// A database from before the remote tree existed reads the log again
    /// from the start to build it; until then nothing is reconciled.
    fn upgrade_remote_tree(&self) -> Result<()> {
        use crate::meta::{LOG_SEEN, OWN_SEEN, REMOTE_FORMAT};
        if self.meta.state(REMOTE_FORMAT)? != 0 {
            return Ok(());
        }
        let mut records = Vec::new();
        if self.meta.state(LOG_SEEN)? > 0 {
            tracing::info!("building the remote tree: reading the volume's log from the start");
            for key in [LOG_SEEN, OWN_SEEN] {
                records.push(Record::SetState {
                    key: key.to_string(),
                    value: 0,
                });
            }
        }
        records.push(Record::SetState {
            key: REMOTE_FORMAT.to_string(),
            value: 1,
        });
        let mut st = lock(&self.state);
        self.journal(&mut st, records)?;
        drop(st);
        // `state` reads the database: the counters must be there first.
        self.meta.commit_pending()?;
        Ok(())
    }

    /// Paths of events the log has not yet given back.
    fn load_touched(&self) -> Result<()> {
        let own_seen = self.meta.state(crate::meta::OWN_SEEN)?;
        let mut st = lock(&self.state);
        let mut since = own_seen;
        loop {
            let page = self.meta.events_since(since, 4096)?;
            let Some(last) = page.last().map(|e| e.id) else {
                break;
            };
            for e in page {
                mark_touched(&mut st.touched, &e);
            }
            since = last;
        }
        Ok(())
    }

    fn collect_garbage(&self) -> Result<usize> {
        Ok(self.store.collect_garbage(&self.live_objects())?)
    }

    /// Rings `listener` whenever events are journaled (the uploader's
    /// doorbell). The uploader hashes large versions as it chunks them, so
    /// the hasher thread stops doing it twice.
    pub fn set_event_listener(&self, listener: impl Fn() + Send + Sync + 'static) {
        *lock(&self.event_listener) = Some(Box::new(listener));
        self.background_hashing
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The uploader published event `id` as `mivui`: journal it, and free
    /// its object if nothing else needs it.
    pub fn published(
        &self,
        id: u64,
        mivui: u64,
        object: Option<String>,
        chunks: Vec<crate::event::ChunkRef>,
        hash: Option<String>,
    ) -> Result<()> {
        let mut st = lock(&self.state);
        let mut records = Vec::new();
        if let Some(hash) = hash {
            // The current row too, if this is still its version.
            let owners = object.as_deref().map_or(&[][..], |o| st.tree.owners(o));
            let current = owners
                .iter()
                .filter_map(|i| st.tree.get(*i))
                .find(|n| n.linked && n.row.hash.is_none());
            if let Some(n) = current {
                let mut row = n.row.clone();
                row.hash = Some(hash.clone());
                records.push(Record::PutInode(row));
            }
            records.push(Record::SetEventHash { id, hash });
        }
        records.push(Record::Published {
            id,
            mivui,
            object: object.clone(),
            chunks,
        });
        records.push(Record::SetState {
            key: crate::meta::PUBLISHED_THROUGH.to_string(),
            value: id,
        });
        self.journal(&mut st, records)?;
        if let Some(o) = object {
            self.unpin(&mut st, &o);
            let owners = st.tree.owners(&o).to_vec();
            for i in owners {
                self.evict_if_online_only(&st, i);
            }
        }
        Ok(())
    }

    fn unpin(&self, st: &mut State, object: &str) {
        let Some(n) = st.pinned.get_mut(object) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            st.pinned.remove(object);
            if st.retired.remove(object) {
                self.meta.unlink_when_durable(object.to_string());
            }
        }
    }

    /// An object stops being the current version of a file (another file,
    /// a conflict copy sharing the version, may still hold it).
    fn retire(&self, st: &mut State, object: String) {
        if !st.tree.owners(&object).is_empty() {
            return;
        }
        if let Some(source) = lock(&self.content_source).as_ref() {
            source.drop_partial(&object);
        }
        if st.pinned.contains_key(&object) {
            st.retired.insert(object);
        } else {
            self.meta.unlink_when_durable(object);
        }
    }

    /// Files created before a crash but never closed have no event yet.
    fn announce_unclosed(&self) -> Result<usize> {
        let mut st = lock(&self.state);
        let todo: Vec<Ino> = st
            .tree
            .nodes
            .values()
            .filter(|n| n.row.kind == Kind::File && !n.row.announced)
            .map(|n| n.row.ino)
            .collect();
        let mut announced = 0;
        for ino in todo {
            if st.tree.visible_path(ino, &self.ignore).is_some() {
                self.commit(&mut st, ino)?;
                announced += 1;
            }
        }
        Ok(announced)
    }

    fn requeue_hashes(&self) -> Result<usize> {
        let missing = self.meta.events_missing_hash()?;
        let mut jobs = Vec::new();
        {
            let st = lock(&self.state);
            for ev in missing {
                let Some(object) = ev.object.clone() else {
                    continue;
                };
                let Ok(file) = self.store.open_object(&object) else {
                    continue; // superseded and removed: the hash is unknowable now
                };
                let ino = st
                    .tree
                    .nodes
                    .values()
                    .find(|n| n.row.object.as_deref() == Some(&object))
                    .map_or(0, |n| n.row.ino);
                jobs.push(HashJob {
                    ino,
                    object,
                    file: Arc::new(file),
                    size: ev.size,
                    event: Some(ev.id),
                });
            }
        }
        let n = jobs.len();
        for j in jobs {
            self.send_hash_job(j);
        }
        Ok(n)
    }

    fn send_hash_job(&self, job: HashJob) {
        // The sender is cloned so `hasher` is never held while `state` is
        // taken (commit takes them in the other order).
        let tx = lock(&self.hasher).clone();
        if let Some(tx) = tx {
            lock(&self.state).hashing += 1;
            if tx.send(job).is_err() {
                lock(&self.state).hashing -= 1;
            }
        }
    }

    fn finish_hash(&self, done: HashDone) {
        let HashDone { job, hash } = done;
        let mut st = lock(&self.state);
        st.hashing -= 1;
        let hash = match hash {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(object = %job.object, error = %e, "could not hash a committed version");
                return;
            }
        };
        let mut records = Vec::new();
        if let Some(n) = st.tree.get(job.ino)
            && n.row.object.as_deref() == Some(&job.object)
            && n.row.hash.is_none()
        {
            let mut row = n.row.clone();
            row.hash = Some(hash.clone());
            records.push(Record::PutInode(row));
        }
        if let Some(id) = job.event {
            records.push(Record::SetEventHash { id, hash });
        }
        if let Err(e) = self.journal(&mut st, records) {
            tracing::error!(error = %e, "could not journal a content hash");
        }
    }

    /// Stops background work and commits everything to the database.
    pub fn shutdown(&self) -> Result<()> {
        let committed: Vec<Ino> = {
            let st = lock(&self.state);
            st.tree
                .nodes
                .values()
                .filter(|n| n.staging.is_some())
                .map(|n| n.row.ino)
                .collect()
        };
        {
            let mut st = lock(&self.state);
            for ino in committed {
                self.commit(&mut st, ino)?;
            }
        }
        lock(&self.hasher).take();
        if let Some(t) = lock(&self.hasher_thread).take() {
            let _ = t.join();
        }
        self.meta.commit_pending()?;
        Ok(())
    }

    /// Objects a current file, an unpublished event or (until the sync
    /// engine takes it) the remote tree names: never garbage. The engine
    /// adds the remote tree's (`Engine::live_objects`).
    pub fn live_objects(&self) -> HashSet<String> {
        let st = lock(&self.state);
        let remote = lock(&self.remote_rows);
        st.tree
            .nodes
            .values()
            .filter_map(|n| n.row.object.clone())
            .chain(st.pinned.keys().cloned())
            .chain(remote.iter().filter_map(|r| r.object.clone()))
            .collect()
    }

    /// Hands the remote tree the database held to the sync engine.
    pub fn take_remote_rows(&self) -> Vec<RemoteRow> {
        std::mem::take(&mut *lock(&self.remote_rows))
    }

    /// Which change keeps a name this node changes concurrently with
    /// another node (recorded in each event, so every node folds alike).
    pub fn set_conflict_policy(&self, policy: crate::home::ConflictPolicy) {
        self.conflict_first.store(
            policy == crate::home::ConflictPolicy::First,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The time as this node's clock tells it.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }

    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    fn journal(&self, st: &mut State, records: Vec<Record>) -> Result<()> {
        // Rows of orphans (deleted, still open) stay out of the journal: a
        // deleted file never comes back after a remount.
        let orphan = |r: &Record| matches!(r, Record::PutInode(row) if st.tree.get(row.ino).is_some_and(|n| !n.linked));
        if records.iter().any(orphan) {
            let durable: Vec<Record> = records.iter().filter(|r| !orphan(r)).cloned().collect();
            self.meta.append(&durable)?;
        } else {
            self.meta.append(&records)?;
        }
        let mut events = false;
        for r in &records {
            st.tree.apply(r);
            if let Record::PutEvent(ev) = r {
                events = true;
                mark_touched(&mut st.touched, ev);
                if let Some(o) = &ev.object {
                    *st.pinned.entry(o.clone()).or_default() += 1;
                }
            }
        }
        if events && let Some(ring) = lock(&self.event_listener).as_ref() {
            ring();
        }
        Ok(())
    }

    fn new_event(
        &self,
        st: &mut State,
        event_type: EventType,
        file_path: String,
        row: &InodeRow,
        src_path: Option<String>,
    ) -> Event {
        let id = st.next_event;
        st.next_event += 1;
        st.event_count += 1;
        let content = event_type.carries_content() || event_type == EventType::Move;
        Event {
            id,
            originator: self.node_id,
            mivui: None,
            detection: Detection::Filesystem,
            event_type,
            file_hash: if content { row.hash.clone() } else { None },
            file_path,
            mtime: row.mtime,
            size: match event_type {
                EventType::Delete | EventType::Rmdir | EventType::Mkdir => 0,
                _ => row.size,
            },
            src_path,
            mode: row.mode,
            link_target: row
                .target
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned()),
            base_hash: match event_type {
                EventType::Delete | EventType::Move => row.hash.clone(),
                _ => None,
            },
            time: self.now(),
            first_wins: self
                .conflict_first
                .load(std::sync::atomic::Ordering::Relaxed),
            object: if event_type.carries_content() {
                row.object.clone()
            } else {
                None
            },
        }
    }

    // ----- lookups and attributes -----

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        let name = check_name(name)?;
        let st = lock(&self.state);
        let p = st.tree.get(parent).ok_or(VfsError::NotFound)?;
        if !p.is_dir() {
            return Err(VfsError::NotDir);
        }
        let ino = *p.children.get(name).ok_or(VfsError::NotFound)?;
        Ok(self.attr_on_disk(st.tree.get(ino).ok_or(VfsError::NotFound)?))
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let st = lock(&self.state);
        Ok(self.attr_on_disk(st.tree.get(ino).ok_or(VfsError::NotFound)?))
    }

    /// `attr_of`, with the blocks a committed version takes here.
    fn attr_on_disk(&self, n: &Node) -> Attr {
        let mut a = attr_of(n);
        if n.row.kind == Kind::File
            && n.staging.is_none()
            && let Some(o) = &n.row.object
        {
            a.blocks = self.store.local_bytes(o).div_ceil(512);
        }
        a
    }

    pub fn setattr(&self, ino: Ino, set: SetAttr, fh: Option<u64>) -> Result<Attr> {
        if let Some(size) = set.size {
            if size > 0 {
                self.ensure_local(ino)?;
            }
            self.stage_large_copy(ino, Some(size))?;
        }
        let mut st = lock(&self.state);
        let now = self.now();
        let resolve = |t: TimeSet| match t {
            TimeSet::Now => now,
            TimeSet::At(v) => v,
        };
        let in_writer = fh
            .and_then(|fh| st.handles.get(&fh))
            .is_some_and(|h| matches!(h.kind, HandleKind::File(m) if m.write));
        let node = st.tree.get_mut(ino).ok_or(VfsError::NotFound)?;
        if let Some(size) = set.size {
            if node.is_dir() {
                return Err(VfsError::IsDir);
            }
            if node.row.kind != Kind::File {
                return Err(VfsError::Invalid("truncate of a non-file"));
            }
            ensure_staging(&self.store, node, Some(size))?;
            let s = node.staging.as_mut().expect("staging ensured");
            s.file.set_len(size)?;
            s.size = size;
            s.truncated_only = false;
            s.mtime = now;
            s.ctime = now;
        }
        let mut row = node.row.clone();
        let mut changed_meta = false;
        if let Some(m) = set.mode {
            row.mode = m & 0o7777;
            changed_meta |= row.mode != node.row.mode;
        }
        if let Some(u) = set.uid {
            row.uid = u;
            changed_meta |= row.uid != node.row.uid;
        }
        if let Some(g) = set.gid {
            row.gid = g;
            changed_meta |= row.gid != node.row.gid;
        }
        if let Some(t) = set.atime {
            row.atime = resolve(t);
        }
        if let Some(t) = set.mtime {
            let v = resolve(t);
            match node.staging.as_mut() {
                Some(s) => s.mtime = v,
                None => {
                    // With writeback caching the kernel keeps its own write
                    // times and flushes them later: a nudge of less than
                    // MTIME_NOISE is that, not a user's change worth an event.
                    changed_meta |= (v - row.mtime).abs() >= MTIME_NOISE;
                    row.mtime = v;
                }
            }
        }
        if changed_meta || set.mode.is_some() || set.uid.is_some() || set.gid.is_some() {
            row.ctime = now;
        }
        let dirty = node.staging.is_some();
        if row != node.row {
            let mut records = Vec::new();
            // The folder's own mode is each node's (it is the mountpoint).
            if changed_meta
                && row.announced
                && !dirty
                && ino != ROOT_INO
                && let Some(path) = st.tree.visible_path(ino, &self.ignore)
            {
                let ev = self.new_event(&mut st, EventType::Setattr, path, &row, None);
                records.push(Record::PutEvent(ev));
            }
            records.insert(0, Record::PutInode(row));
            self.journal(&mut st, records)?;
        }
        if set.size.is_some() && !in_writer {
            self.commit(&mut st, ino)?;
        }
        Ok(attr_of(st.tree.get(ino).ok_or(VfsError::NotFound)?))
    }

    // ----- creating and removing -----

    fn new_row(
        &self,
        st: &mut State,
        parent: Ino,
        name: &str,
        kind: Kind,
        mode: u32,
        caller: Caller,
    ) -> Result<InodeRow> {
        let p = st.tree.get(parent).ok_or(VfsError::NotFound)?;
        if !p.is_dir() {
            return Err(VfsError::NotDir);
        }
        if !p.linked {
            return Err(VfsError::NotFound);
        }
        if p.children.contains_key(name) {
            return Err(VfsError::Exists);
        }
        // BSD group semantics when the folder is setgid.
        let setgid_parent = p.row.mode & SETGID != 0;
        let gid = if setgid_parent { p.row.gid } else { caller.gid };
        let mut mode = mode & 0o7777;
        if kind == Kind::Dir && setgid_parent {
            mode |= SETGID;
        }
        let now = self.now();
        let ino = st.tree.alloc_ino();
        Ok(InodeRow {
            ino,
            parent,
            name: name.to_string(),
            kind,
            mode,
            uid: caller.uid,
            gid,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            object: None,
            hash: None,
            target: None,
            xattrs: Default::default(),
            announced: false,
            placement: None,
            rdev: 0,
            links: Vec::new(),
        })
    }

    fn touch_dir(&self, st: &mut State, dir: Ino, records: &mut Vec<Record>) {
        if let Some(p) = st.tree.get(dir) {
            let mut row = p.row.clone();
            let now = self.now();
            row.mtime = now;
            row.ctime = now;
            records.push(Record::PutInode(row));
        }
    }

    /// Creates and opens a regular file. Its `create` event comes at close.
    pub fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        open: OpenMode,
        caller: Caller,
    ) -> Result<(Attr, Opened)> {
        let name = check_name(name)?;
        let mut st = lock(&self.state);
        let row = self.new_row(&mut st, parent, name, Kind::File, mode, caller)?;
        let ino = row.ino;
        let mut records = vec![Record::PutInode(row)];
        self.touch_dir(&mut st, parent, &mut records);
        self.journal(&mut st, records)?;
        let opened = Self::open_handle(&mut st, ino, open, caller.pid)?;
        Ok((attr_of(st.tree.get(ino).expect("just created")), opened))
    }

    /// mknod: a regular file, or (`kind` special) a FIFO, socket or device
    /// node, which lives on this node only: never announced, never synced.
    pub fn mknod(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        kind: Kind,
        rdev: u32,
        caller: Caller,
    ) -> Result<Attr> {
        let name = check_name(name)?;
        let mut st = lock(&self.state);
        let mut row = self.new_row(&mut st, parent, name, kind, mode, caller)?;
        row.rdev = rdev;
        let ino = row.ino;
        let mut records = vec![Record::PutInode(row)];
        self.touch_dir(&mut st, parent, &mut records);
        self.journal(&mut st, records)?;
        if kind == Kind::File {
            self.commit(&mut st, ino)?;
        }
        Ok(attr_of(st.tree.get(ino).expect("just created")))
    }

    pub fn mkdir(&self, parent: Ino, name: &OsStr, mode: u32, caller: Caller) -> Result<Attr> {
        let name = check_name(name)?;
        let mut st = lock(&self.state);
        let mut row = self.new_row(&mut st, parent, name, Kind::Dir, mode, caller)?;
        let visible = st.tree.child_visible(parent, name, &self.ignore);
        row.announced = visible.is_some();
        let ino = row.ino;
        let mut records = vec![Record::PutInode(row.clone())];
        if let Some(path) = visible {
            let ev = self.new_event(&mut st, EventType::Mkdir, path, &row, None);
            records.push(Record::PutEvent(ev));
        }
        self.touch_dir(&mut st, parent, &mut records);
        self.journal(&mut st, records)?;
        Ok(attr_of(st.tree.get(ino).expect("just created")))
    }

    pub fn symlink(
        &self,
        parent: Ino,
        name: &OsStr,
        target: &[u8],
        caller: Caller,
    ) -> Result<Attr> {
        let name = check_name(name)?;
        if target.is_empty() || target.len() > 4096 {
            return Err(VfsError::Invalid("symlink target length"));
        }
        let mut st = lock(&self.state);
        let mut row = self.new_row(&mut st, parent, name, Kind::Symlink, 0o777, caller)?;
        row.target = Some(target.to_vec());
        row.size = target.len() as u64;
        let visible = st.tree.child_visible(parent, name, &self.ignore);
        row.announced = visible.is_some();
        let ino = row.ino;
        let mut records = vec![Record::PutInode(row.clone())];
        if let Some(path) = visible {
            let ev = self.new_event(&mut st, EventType::Symlink, path, &row, None);
            records.push(Record::PutEvent(ev));
        }
        self.touch_dir(&mut st, parent, &mut records);
        self.journal(&mut st, records)?;
        Ok(attr_of(st.tree.get(ino).expect("just created")))
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        n.row
            .target
            .clone()
            .ok_or(VfsError::Invalid("not a symlink"))
    }

    /// A hard link: `newname` becomes another name of `ino` on this node.
    /// The first name is the one that syncs; other nodes do not see this
    /// one (see README).
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &OsStr) -> Result<Attr> {
        let newname = check_name(newname)?;
        let mut st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        if n.is_dir() {
            return Err(VfsError::NotPermitted(
                "hard links to folders are not allowed",
            ));
        }
        if !n.linked {
            return Err(VfsError::NotFound);
        }
        let mut row = n.row.clone();
        let p = st.tree.get(newparent).ok_or(VfsError::NotFound)?;
        if !p.is_dir() {
            return Err(VfsError::NotDir);
        }
        if !p.linked {
            return Err(VfsError::NotFound);
        }
        if p.children.contains_key(newname) {
            return Err(VfsError::Exists);
        }
        row.links.push((newparent, newname.to_string()));
        row.ctime = self.now();
        let mut records = vec![Record::PutInode(row)];
        self.touch_dir(&mut st, newparent, &mut records);
        self.journal(&mut st, records)?;
        Ok(attr_of(st.tree.get(ino).expect("linked")))
    }

    /// Removes one name of a file that has several (hard links). When the
    /// name that syncs goes, the next name takes its place: other nodes see
    /// a delete there (`announce_delete`: not when the delete came from
    /// them) and a create at the new name.
    fn drop_name(
        &self,
        st: &mut State,
        parent: Ino,
        name: &str,
        ino: Ino,
        announce_delete: bool,
    ) -> Result<()> {
        let old = st.tree.get(ino).ok_or(VfsError::NotFound)?.row.clone();
        let mut row = old.clone();
        row.ctime = self.now();
        let mut records = Vec::new();
        let promoted = match row
            .links
            .iter()
            .position(|(p, l)| *p == parent && l == name)
        {
            Some(i) => {
                row.links.remove(i);
                false
            }
            None => {
                if announce_delete
                    && old.announced
                    && let Some(path) = st.tree.visible_path(ino, &self.ignore)
                {
                    let ev = self.new_event(st, EventType::Delete, path, &old, None);
                    records.push(Record::PutEvent(ev));
                }
                let (p, l) = row.links.remove(0);
                row.parent = p;
                row.name = l;
                row.announced = false;
                true
            }
        };
        records.push(Record::PutInode(row));
        self.touch_dir(st, parent, &mut records);
        self.journal(st, records)?;
        if promoted {
            self.publish_subtree(st, ino)?;
        }
        Ok(())
    }

    pub fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: Ino, name: &OsStr, dir: bool) -> Result<()> {
        let name = check_name(name)?;
        let mut st = lock(&self.state);
        let p = st.tree.get(parent).ok_or(VfsError::NotFound)?;
        if !p.is_dir() {
            return Err(VfsError::NotDir);
        }
        let ino = *p.children.get(name).ok_or(VfsError::NotFound)?;
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        match (dir, n.is_dir()) {
            (true, false) => return Err(VfsError::NotDir),
            (false, true) => return Err(VfsError::IsDir),
            (true, true) if !n.children.is_empty() => return Err(VfsError::NotEmpty),
            _ => {}
        }
        if !n.row.links.is_empty() {
            return self.drop_name(&mut st, parent, name, ino, true);
        }
        let mut records = vec![Record::DelInode(ino)];
        if n.row.announced
            && let Some(path) = st.tree.visible_path(ino, &self.ignore)
        {
            let row = n.row.clone();
            let ty = if dir {
                EventType::Rmdir
            } else {
                EventType::Delete
            };
            let ev = self.new_event(&mut st, ty, path, &row, None);
            records.push(Record::PutEvent(ev));
        }
        self.touch_dir(&mut st, parent, &mut records);
        self.drop_inode(&mut st, ino, records)
    }

    /// Journals `records` (which delete `ino`) and frees its content unless
    /// it is still open; then the last release frees it.
    fn drop_inode(&self, st: &mut State, ino: Ino, records: Vec<Record>) -> Result<()> {
        let (open, object, staging) = {
            let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
            (
                n.open > 0,
                n.row.object.clone(),
                n.staging.as_ref().map(|s| s.object.clone()),
            )
        };
        self.journal(st, records)?;
        if !open {
            self.free_content(st, object, staging);
        }
        Ok(())
    }

    fn free_content(&self, st: &mut State, committed: Option<String>, staging: Option<String>) {
        if let Some(o) = committed {
            self.retire(st, o);
        }
        if let Some(s) = staging
            && let Err(e) = self.store.remove(&s)
        {
            tracing::warn!(error = %e, "could not remove an unfinished version");
        }
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        let name = check_name(name)?;
        let newname = check_name(newname)?;
        if flags.exchange {
            return Err(VfsError::Invalid(
                "RENAME_EXCHANGE and RENAME_WHITEOUT are not supported",
            ));
        }
        let mut st = lock(&self.state);
        let src_dir = st.tree.get(parent).ok_or(VfsError::NotFound)?;
        let ino = *src_dir.children.get(name).ok_or(VfsError::NotFound)?;
        let dst_dir = st.tree.get(newparent).ok_or(VfsError::NotFound)?;
        if !dst_dir.is_dir() {
            return Err(VfsError::NotDir);
        }
        let mut target = dst_dir.children.get(newname).copied();
        if target == Some(ino) {
            return Ok(());
        }
        let moving = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        let linked_target = target
            .and_then(|t| st.tree.get(t))
            .is_some_and(|t| !t.row.links.is_empty());
        let moving_dir = moving.is_dir();
        if moving_dir && st.tree.is_ancestor(ino, newparent) {
            return Err(VfsError::Invalid("cannot move a folder into itself"));
        }
        if let Some(t) = target {
            if flags.no_replace {
                return Err(VfsError::Exists);
            }
            let t = st.tree.get(t).ok_or(VfsError::NotFound)?;
            match (moving_dir, t.is_dir()) {
                (true, false) => return Err(VfsError::NotDir),
                (false, true) => return Err(VfsError::IsDir),
                (true, true) if !t.children.is_empty() => return Err(VfsError::NotEmpty),
                _ => {}
            }
        }
        if linked_target {
            // Only this name of the file replaced goes.
            let t = target.take().expect("checked");
            self.drop_name(&mut st, newparent, newname, t, true)?;
        }
        let moving = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        if moving.row.parent != parent || moving.row.name != name {
            return self.rename_link_name(
                &mut st,
                ino,
                (parent, name),
                (newparent, newname),
                target,
            );
        }

        let src_path = st.tree.visible_path(ino, &self.ignore);
        let was_announced = moving.row.announced;
        let dirty = moving.staging.is_some();
        let dst_path = if moving.row.kind.is_special() {
            None
        } else {
            st.tree.child_visible(newparent, newname, &self.ignore)
        };
        let target_announced = target
            .and_then(|t| st.tree.get(t))
            .is_some_and(|t| t.row.announced);

        let mut records = Vec::new();
        if let Some(t) = target {
            records.push(Record::DelInode(t));
        }
        let mut row = moving.row.clone();
        row.parent = newparent;
        row.name = newname.to_string();
        row.ctime = self.now();
        let mut events = Vec::new();
        let file_ready = row.kind != Kind::File || !dirty;
        match (was_announced.then_some(src_path).flatten(), &dst_path) {
            (Some(src), Some(dst)) => {
                events.push((EventType::Move, dst.clone(), Some(src), ino));
            }
            (Some(src), None) => {
                // Moved out of sight (to an ignored name): gone for other nodes.
                row.announced = false;
                let mut gone = st.tree.descendants(ino);
                gone.reverse();
                let base_len = st.tree.path(ino).map_or(0, |p| p.len());
                for d in gone {
                    let dn = st.tree.get(d).expect("descendant exists");
                    if dn.row.announced {
                        let rel = st.tree.path(d).unwrap_or_default();
                        let p = format!("{src}{}", &rel[base_len.min(rel.len())..]);
                        let ty = if dn.is_dir() {
                            EventType::Rmdir
                        } else {
                            EventType::Delete
                        };
                        let mut r = dn.row.clone();
                        events.push((ty, p, None, d));
                        r.announced = false;
                        records.push(Record::PutInode(r));
                    }
                }
                let ty = if moving_dir {
                    EventType::Rmdir
                } else {
                    EventType::Delete
                };
                events.push((ty, src, None, ino));
            }
            (None, Some(dst)) => {
                if file_ready {
                    row.announced = true;
                    let ty = match row.kind {
                        Kind::Dir => EventType::Mkdir,
                        Kind::Symlink => EventType::Symlink,
                        Kind::File if target_announced => EventType::Modify,
                        Kind::File => EventType::Create,
                        _ => unreachable!("special files are never visible"),
                    };
                    events.push((ty, dst.clone(), None, ino));
                    for d in st.tree.descendants(ino) {
                        let dn = st.tree.get(d).expect("descendant exists");
                        if dn.row.kind == Kind::File && dn.staging.is_some() {
                            continue; // announced when closed
                        }
                        let rel = st.tree.path(d).unwrap_or_default();
                        let base = st.tree.path(ino).unwrap_or_default();
                        let below = &rel[base.len().min(rel.len())..];
                        if below
                            .split('/')
                            .any(|c| !c.is_empty() && self.ignore.name_is_ignored(c))
                        {
                            continue; // ignored names stay unannounced wherever they move
                        }
                        let p = format!("{dst}{below}");
                        let ty = match dn.row.kind {
                            Kind::Dir => EventType::Mkdir,
                            Kind::Symlink => EventType::Symlink,
                            Kind::File => EventType::Create,
                            _ => continue, // FIFOs, sockets, devices: never synced
                        };
                        let mut r = dn.row.clone();
                        r.announced = true;
                        records.push(Record::PutInode(r));
                        events.push((ty, p, None, d));
                    }
                } else if target_announced {
                    let t = target.expect("target exists");
                    let trow = st.tree.get(t).expect("target exists").row.clone();
                    let ev = self.new_event(&mut st, EventType::Delete, dst.clone(), &trow, None);
                    records.push(Record::PutEvent(ev));
                }
            }
            (None, None) => {}
        }
        records.push(Record::PutInode(row.clone()));
        for (ty, path, src, which) in events {
            let r = if which == ino {
                row.clone()
            } else {
                st.tree.get(which).expect("exists").row.clone()
            };
            let ev = self.new_event(&mut st, ty, path, &r, src);
            records.push(Record::PutEvent(ev));
        }
        self.touch_dir(&mut st, parent, &mut records);
        if newparent != parent {
            self.touch_dir(&mut st, newparent, &mut records);
            // It may have moved under a pinned folder.
            self.pin_dirty
                .store(true, std::sync::atomic::Ordering::Release);
        }
        match target {
            Some(t) => self.drop_inode(&mut st, t, records),
            None => self.journal(&mut st, records),
        }
    }

    /// Renames a hard link's local name (one that does not sync) over
    /// `target`, a file with one name, if any.
    fn rename_link_name(
        &self,
        st: &mut State,
        ino: Ino,
        (parent, name): (Ino, &str),
        (newparent, newname): (Ino, &str),
        target: Option<Ino>,
    ) -> Result<()> {
        let mut records = Vec::new();
        if let Some(t) = target {
            records.push(Record::DelInode(t));
            let trow = st.tree.get(t).ok_or(VfsError::NotFound)?.row.clone();
            if trow.announced
                && let Some(path) = st.tree.visible_path(t, &self.ignore)
            {
                let ev = self.new_event(st, EventType::Delete, path, &trow, None);
                records.push(Record::PutEvent(ev));
            }
        }
        let mut row = st.tree.get(ino).ok_or(VfsError::NotFound)?.row.clone();
        let Some(i) = row
            .links
            .iter()
            .position(|(p, l)| *p == parent && l == name)
        else {
            return Err(VfsError::NotFound);
        };
        row.links[i] = (newparent, newname.to_string());
        row.ctime = self.now();
        records.push(Record::PutInode(row));
        self.touch_dir(st, parent, &mut records);
        if newparent != parent {
            self.touch_dir(st, newparent, &mut records);
        }
        match target {
            Some(t) => self.drop_inode(st, t, records),
            None => self.journal(st, records),
        }
    }

    // ----- file handles and content -----

    fn open_handle(st: &mut State, ino: Ino, mode: OpenMode, opener: u32) -> Result<Opened> {
        let n = st.tree.get_mut(ino).ok_or(VfsError::NotFound)?;
        n.open += 1;
        if mode.write {
            n.writers += 1;
        }
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(
            fh,
            Handle {
                ino,
                kind: HandleKind::File(mode),
                opener,
            },
        );
        Ok(Opened {
            fh,
            keep_cache: true,
        })
    }

    /// Opens a file. `truncate` empties it inside this handle's pending
    /// version, so a crash before close still shows the last closed one.
    pub fn open(&self, ino: Ino, mode: OpenMode, caller: Caller) -> Result<Opened> {
        let mut st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        match n.row.kind {
            Kind::Dir => return Err(VfsError::IsDir),
            Kind::Symlink => return Err(VfsError::Invalid("open of a symlink")),
            Kind::File => {}
            // The kernel opens FIFOs, sockets and devices itself.
            _ => return Err(VfsError::Invalid("open of a special file")),
        }
        if mode.write && mode.truncate {
            let n = st.tree.get_mut(ino).expect("checked");
            let fresh = n.staging.is_none();
            ensure_staging(&self.store, n, Some(0))?;
            let s = n.staging.as_mut().expect("staging ensured");
            s.truncated_only = fresh;
            if s.size != 0 {
                s.file.set_len(0)?;
                s.size = 0;
            }
            let now = self.now();
            s.mtime = now;
            s.ctime = now;
        }
        if let Some(o) = &st.tree.get(ino).expect("checked").row.object {
            self.store.touch(o);
        }
        Self::open_handle(&mut st, ino, mode, caller.pid)
    }

    fn file_mode(st: &State, fh: u64, ino: Ino) -> Result<OpenMode> {
        match st.handles.get(&fh) {
            Some(Handle {
                ino: i,
                kind: HandleKind::File(m),
                ..
            }) if *i == ino => Ok(*m),
            _ => Err(VfsError::BadHandle(fh)),
        }
    }

    pub fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.read_as(ino, fh, offset, size, 0)
    }

    /// A read by process `pid` (0: unknown), which the hydration policy
    /// may refuse for content only in the cloud.
    pub fn read_as(&self, ino: Ino, fh: u64, offset: u64, size: u32, pid: u32) -> Result<Vec<u8>> {
        let (file, len) = match self.file_for_read(ino, fh) {
            Err(VfsError::Store(e)) if e.is_not_found() => {
                // Only in the cloud: fetch the chunks this read covers
                // (outside the lock).
                let mut limit = None;
                if pid != 0
                    && let Some(gate) = lock(&self.hydration).as_ref()
                {
                    let program = gate.program(pid);
                    match gate.allow(&program, offset, size as u64) {
                        crate::hydration::Verdict::Refuse => {
                            return Err(VfsError::Refused(program));
                        }
                        crate::hydration::Verdict::Upto(n) => limit = n,
                    }
                }
                return self.read_remote(ino, offset, size, limit);
            }
            other => other?,
        };
        if offset >= len {
            return Ok(Vec::new());
        }
        let want = (size as u64).min(len - offset) as usize;
        let mut buf = vec![0u8; want];
        let Some(file) = file else {
            return Ok(buf);
        };
        let mut done = 0;
        while done < want {
            let n = file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break; // a hole at the end reads as zeros
            }
            done += n;
        }
        Ok(buf)
    }

    fn file_for_read(&self, ino: Ino, fh: u64) -> Result<(Option<Arc<File>>, u64)> {
        let mut st = lock(&self.state);
        Self::file_mode(&st, fh, ino)?;
        let n = st.tree.get_mut(ino).ok_or(VfsError::NotFound)?;
        let len = n.size();
        Ok((current_file(&self.store, n)?, len))
    }

    fn read_remote(&self, ino: Ino, offset: u64, size: u32, limit: Option<u64>) -> Result<Vec<u8>> {
        let (object, len, hash, path) = {
            let st = lock(&self.state);
            let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
            let object = n.row.object.clone().ok_or(VfsError::NotFound)?;
            (
                object,
                n.row.size,
                n.row.hash.clone(),
                st.tree.path(ino).unwrap_or_default(),
            )
        };
        if offset >= len {
            return Ok(Vec::new());
        }
        let want = (size as u64).min(len - offset) as usize;
        let source = lock(&self.content_source)
            .clone()
            .ok_or_else(|| VfsError::Fetch {
                path: path.clone(),
                source: FetchError::Unreachable(
                    "its content is only in the cloud and no cloud is connected".into(),
                ),
            })?;
        let data = source
            .read_range(&object, len, hash.as_deref(), offset, want, limit)
            .map_err(|e| {
                cold_read_failed(&path, &e);
                VfsError::Fetch { path, source: e }
            })?;
        self.store.touch(&object);
        self.enforce_cache_cap();
        Ok(data)
    }

    /// Rebuilds a committed version whose local copy is missing from the
    /// cloud. Every chunk is authenticated and the whole checked against
    /// the version's hash before any byte is served.
    fn fetch_missing(&self, ino: Ino) -> Result<()> {
        let (object, size, hash, path) = {
            let st = lock(&self.state);
            let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
            let object = n.row.object.clone().ok_or(VfsError::NotFound)?;
            (
                object,
                n.row.size,
                n.row.hash.clone(),
                st.tree.path(ino).unwrap_or_default(),
            )
        };
        let source = lock(&self.content_source).clone();
        let Some(source) = source else {
            return Err(VfsError::Fetch {
                path,
                source: FetchError::Unreachable(
                    "the local copy of its content is missing and no cloud is connected".into(),
                ),
            });
        };
        source
            .fetch(&object, size, hash.as_deref())
            .map_err(|e| VfsError::Fetch { path, source: e })
    }

    /// The copy-on-write copy of a large committed version is made outside
    /// the tree lock, so copying a big file does not stall every other
    /// operation; the copy is used only if nothing changed meanwhile.
    fn stage_large_copy(&self, ino: Ino, truncate_to: Option<u64>) -> Result<()> {
        let (src, object, keep) = {
            let mut st = lock(&self.state);
            let Some(n) = st.tree.get_mut(ino) else {
                return Ok(());
            };
            let keep = truncate_to.unwrap_or(n.row.size).min(n.row.size);
            if n.staging.is_some() || n.row.object.is_none() || keep < LARGE_COPY {
                return Ok(());
            }
            let object = n.row.object.clone();
            match current_file(&self.store, n) {
                Ok(Some(f)) => (f, object, keep),
                _ => return Ok(()), // the locked path reports it
            }
        };
        let (id, file) = self.store.create_copy(&src, keep)?;
        let mut st = lock(&self.state);
        match st.tree.get_mut(ino) {
            Some(n) if n.staging.is_none() && n.row.object == object && n.row.size >= keep => {
                n.staging = Some(Staging {
                    object: id,
                    file: Arc::new(file),
                    size: keep,
                    mtime: n.row.mtime,
                    ctime: n.row.ctime,
                    truncated_only: false,
                    writes: Default::default(),
                });
            }
            _ => {
                drop(st);
                self.store.remove(&id)?;
            }
        }
        Ok(())
    }

    /// A version only in the cloud is fetched before it is modified.
    fn ensure_local(&self, ino: Ino) -> Result<()> {
        let missing = {
            let st = lock(&self.state);
            st.tree.get(ino).is_some_and(|n| self.is_cloud_only(n))
        };
        if missing {
            self.fetch_missing(ino)?;
        }
        Ok(())
    }

    /// Whether a file's committed content is only in the cloud.
    fn is_cloud_only(&self, n: &Node) -> bool {
        n.staging.is_none()
            && n.content.is_none()
            && n.row.size > 0
            && n.row
                .object
                .as_ref()
                .is_some_and(|o| !self.store.path(o).exists())
    }

    /// Writeback caching is on: writes leave the times to the kernel.
    pub fn set_kernel_keeps_times(&self, on: bool) {
        self.kernel_times
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_hydration_policy(&self, gate: Arc<crate::hydration::Gate>) {
        *lock(&self.hydration) = Some(gate);
    }

    pub fn hydration_counts(
        &self,
    ) -> std::collections::BTreeMap<String, crate::hydration::ProgramCount> {
        lock(&self.hydration)
            .as_ref()
            .map(|g| g.counts())
            .unwrap_or_default()
    }

    pub fn set_content_source(&self, source: Arc<dyn ContentSource>) {
        *lock(&self.content_source) = Some(source);
    }

    pub fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let result = self.write_staged(ino, fh, offset, data);
        if let Err(e) = &result
            && matches!(e.errno(), libc::ENOSPC | libc::EDQUOT)
            && let Some(n) = lock(&self.state).tree.get_mut(ino)
            && n.writers > 0
        {
            n.write_failed = Some(e.errno());
        }
        result
    }

    fn write_staged(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.ensure_room()?;
        self.ensure_local(ino)?;
        self.stage_large_copy(ino, None)?;
        // The bytes go in outside the core's lock, so writers of different
        // files do not wait for each other. A commit of this version waits
        // for them (`Staging::writes`, taken before the core's lock is let
        // go); a write that finds another version staged afterwards is done
        // again into that one.
        let writes;
        let (file, object, guard) = {
            let mut st = lock(&self.state);
            let mode = Self::file_mode(&st, fh, ino)?;
            if !mode.write {
                return Err(VfsError::BadHandle(fh));
            }
            let n = st.tree.get_mut(ino).ok_or(VfsError::NotFound)?;
            ensure_staging(&self.store, n, None)?;
            let s = n.staging.as_ref().expect("staging ensured");
            writes = s.writes.clone();
            (s.file.clone(), s.object.clone(), share(&writes))
        };
        let written = file.write_all_at(data, offset);
        drop(guard);
        written?;
        let mut st = lock(&self.state);
        let n = st.tree.get_mut(ino).ok_or(VfsError::NotFound)?;
        if n.staging.as_ref().is_none_or(|s| s.object != object) {
            ensure_staging(&self.store, n, None)?;
            let s = n.staging.as_ref().expect("staging ensured");
            s.file.write_all_at(data, offset)?;
        }
        let s = n.staging.as_mut().expect("staging ensured");
        s.size = s.size.max(offset + data.len() as u64);
        s.truncated_only = false;
        // With writeback caching the kernel keeps the write times and sends
        // them (SETATTR) before the close: its time is the one the writer
        // sees, so it is the one published.
        if !self.kernel_times.load(std::sync::atomic::Ordering::Relaxed) {
            let now = self.now();
            s.mtime = now;
            s.ctime = now;
        }
        Ok(data.len() as u32)
    }

    /// close(2) by `pid`: the opening process's close commits what was
    /// written. Closes of inherited copies (a forked child closing its
    /// descriptors) and closes with nothing written commit nothing; the
    /// final release does, so a file gets one event per real close.
    pub fn flush(&self, ino: Ino, fh: u64, pid: u32) -> Result<()> {
        let mut st = lock(&self.state);
        let mode = Self::file_mode(&st, fh, ino)?;
        let opener = st.handles.get(&fh).map_or(pid, |h| h.opener);
        let staged = st
            .tree
            .get(ino)
            .and_then(|n| n.staging.as_ref())
            .is_some_and(|s| !s.truncated_only);
        if mode.write && staged && crate::platform::same_process(pid, opener) {
            self.commit(&mut st, ino)?;
        }
        Ok(())
    }

    pub fn fsync(&self, ino: Ino, fh: u64) -> Result<()> {
        let (file, object) = {
            let mut st = lock(&self.state);
            // A reader's fsync syncs what is committed; only a writer's
            // fsync makes its unfinished version the committed one.
            if Self::file_mode(&st, fh, ino)?.write {
                self.commit(&mut st, ino)?;
            }
            let n = st.tree.get_mut(ino).ok_or(VfsError::NotFound)?;
            (current_file(&self.store, n)?, n.row.object.clone())
        };
        if let Some(f) = file {
            f.sync_data()?;
        }
        if let Some(o) = object {
            self.store.sync_dir_of(&o)?;
        }
        self.meta.sync_journal()?;
        Ok(())
    }

    pub fn release(&self, ino: Ino, fh: u64) -> Result<()> {
        let mut st = lock(&self.state);
        let mode = Self::file_mode(&st, fh, ino)?;
        st.handles.remove(&fh);
        let n = st.tree.get_mut(ino).ok_or(VfsError::NotFound)?;
        n.open -= 1;
        if mode.write {
            n.writers -= 1;
        }
        let (linked, open, writers) = (n.linked, n.open, n.writers);
        if !linked {
            if open == 0 {
                let n = st.tree.forget(ino).expect("orphan exists");
                self.free_content(&mut st, n.row.object, n.staging.map(|s| s.object));
            }
            return Ok(());
        }
        if mode.write && writers == 0 {
            self.commit(&mut st, ino)?;
        }
        if open == 0
            && let Some(n) = st.tree.get_mut(ino)
        {
            n.content = None; // no descriptor per closed file
            self.evict_if_online_only(&st, ino);
        }
        Ok(())
    }

    /// A version some of whose writes were refused (a full disk) is
    /// dropped, not published as if complete: the file keeps its last
    /// committed version, and the close or fsync gets the write's error.
    /// The kernel's cached size and pages of it go too (from another
    /// thread: the request that brought us here may hold the inode).
    fn drop_failed_version(&self, st: &mut State, ino: Ino) -> Result<()> {
        let n = st.tree.get_mut(ino).expect("checked");
        let errno = n.write_failed.take().unwrap_or(libc::EIO);
        let staged = n.staging.take().map(|s| s.object);
        n.content = None;
        tracing::warn!(
            ino,
            errno,
            "a write into this version was refused; the version is dropped and the file keeps its last closed version"
        );
        self.free_content(st, None, staged);
        self.invalidate_later(vec![Invalidation::Inode(ino)]);
        Err(VfsError::Io(std::io::Error::from_raw_os_error(errno)))
    }

    /// Makes the staged version (if any) the committed one and emits its
    /// event; announces a clean file that has none yet.
    fn commit(&self, st: &mut State, ino: Ino) -> Result<()> {
        let Some(n) = st.tree.get(ino) else {
            return Ok(());
        };
        if !n.linked || n.row.kind != Kind::File || (n.staging.is_none() && n.row.announced) {
            return Ok(());
        }
        if n.write_failed.is_some() {
            return self.drop_failed_version(st, ino);
        }
        let visible = st.tree.visible_path(ino, &self.ignore);
        if n.staging.is_none() && visible.is_none() {
            return Ok(());
        }
        let n = st.tree.get_mut(ino).expect("checked");
        // Writes still putting bytes into this version finish first.
        let writes = n.staging.as_ref().map(|s| s.writes.clone());
        let _no_writes = writes.as_deref().map(exclude);
        let mut row = n.row.clone();
        let mut old_object = None;
        let mut new_file = None;
        if let Some(s) = &n.staging {
            old_object = row.object.replace(s.object.clone());
            row.size = s.size;
            row.mtime = s.mtime;
            row.ctime = s.ctime;
            row.hash = None;
            new_file = Some(s.file.clone());
        }
        let mut hash_job = None;
        if row.hash.is_none() {
            if row.object.is_none() || row.size == 0 {
                row.hash = Some(sha512_empty());
            } else {
                let file = match &new_file {
                    Some(f) => f.clone(),
                    None => current_file(&self.store, n)?.expect("object exists"),
                };
                if row.size <= INLINE_HASH_LIMIT {
                    row.hash = Some(sha512_of(&file, row.size)?);
                } else if self
                    .background_hashing
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    hash_job = Some(file);
                }
                // Else the uploader hashes it while chunking it for the cloud.
            }
        }
        let was_announced = row.announced;
        let base_hash = if was_announced {
            n.row.hash.clone()
        } else {
            None
        };
        row.announced = visible.is_some();
        let mut records = vec![Record::PutInode(row.clone())];
        let mut event = None;
        if let Some(path) = visible {
            let ty = if was_announced {
                EventType::Modify
            } else {
                EventType::Create
            };
            let mut ev = self.new_event(st, ty, path, &row, None);
            ev.base_hash = base_hash;
            event = Some(ev.clone());
            records.push(Record::PutEvent(ev));
        }
        self.journal(st, records)?;
        if new_file.is_some()
            && let Some(o) = &row.object
        {
            self.store.note_usage(o);
        }
        let n = st.tree.get_mut(ino).expect("exists");
        if let Some(f) = new_file {
            n.staging = None;
            // Descriptors are held only while the file is open.
            n.content = (n.open > 0).then_some(f);
        }
        if let Some(old) = old_object {
            self.retire(st, old);
        }
        if let Some(file) = hash_job {
            let job = HashJob {
                ino,
                object: row.object.clone().expect("has content"),
                file,
                size: row.size,
                event: event.map(|e| e.id),
            };
            st.hashing += 1;
            if let Some(tx) = lock(&self.hasher).as_ref()
                && tx.send(job).is_err()
            {
                st.hashing -= 1;
            }
        }
        Ok(())
    }

    // ----- folders -----

    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        let mut st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        if !n.is_dir() {
            return Err(VfsError::NotDir);
        }
        let mut entries = Vec::with_capacity(n.children.len() + 2);
        entries.push(DirEntry {
            ino,
            kind: Kind::Dir,
            name: ".".into(),
        });
        entries.push(DirEntry {
            ino: n.row.parent,
            kind: Kind::Dir,
            name: "..".into(),
        });
        for (name, &child) in &n.children {
            if let Some(c) = st.tree.get(child) {
                entries.push(DirEntry {
                    ino: child,
                    kind: c.row.kind,
                    name: name.clone(),
                });
            }
        }
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(
            fh,
            Handle {
                ino,
                kind: HandleKind::Dir(Arc::new(entries)),
                opener: 0,
            },
        );
        Ok(fh)
    }

    /// Entries from `offset` on (the snapshot taken at opendir); `add`
    /// returns true when the reply buffer is full. Offsets are index + 1.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> Result<()> {
        let entries = {
            let st = lock(&self.state);
            match st.handles.get(&fh) {
                Some(Handle {
                    kind: HandleKind::Dir(e),
                    ..
                }) => e.clone(),
                _ => return Err(VfsError::BadHandle(fh)),
            }
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if add(e, i as u64 + 1) {
                break;
            }
        }
        Ok(())
    }

    /// `readdir` with each entry's attributes (READDIRPLUS: the kernel
    /// then needs no LOOKUP per entry, as `ls -l` would send). An entry
    /// gone since opendir is left out.
    pub fn readdir_plus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, &Attr, u64) -> bool,
    ) -> Result<()> {
        let (dir, entries) = {
            let st = lock(&self.state);
            match st.handles.get(&fh) {
                Some(Handle {
                    ino,
                    kind: HandleKind::Dir(e),
                    ..
                }) => (*ino, e.clone()),
                _ => return Err(VfsError::BadHandle(fh)),
            }
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let attr = {
                let st = lock(&self.state);
                let dot = e.name == "." || e.name == "..";
                st.tree
                    .get(e.ino)
                    .or_else(|| st.tree.get(dir).filter(|_| dot))
                    .map(|n| self.attr_on_disk(n))
            };
            let Some(attr) = attr else { continue };
            if add(e, &attr, i as u64 + 1) {
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) -> Result<()> {
        lock(&self.state).handles.remove(&fh);
        Ok(())
    }

    // ----- extended attributes (user.* only) -----

    pub fn setxattr(&self, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> Result<()> {
        let name = name.to_str().ok_or(VfsError::NameNotUtf8)?;
        if name == XATTR_PLACEMENT {
            let v = std::str::from_utf8(value).map_err(|_| VfsError::Invalid("placement"))?;
            let rule = crate::meta::Placement::parse(v.trim_end_matches('\0')).map_err(|_| {
                VfsError::Invalid("placement: auto, pinned, online-only, local-only or cold")
            })?;
            return self.set_placement_ino(ino, rule).map(|_| ());
        }
        if name == XATTR_STATE {
            return Err(VfsError::NotPermitted("user.latus.state is read-only"));
        }
        if !name.starts_with("user.") {
            return Err(VfsError::Unsupported("only user.* extended attributes"));
        }
        if value.len() > MAX_XATTR_VALUE {
            return Err(VfsError::Invalid("extended attribute value too large"));
        }
        let mut st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        let exists = n.row.xattrs.contains_key(name);
        if how == XattrSet::Create && exists {
            return Err(VfsError::Exists);
        }
        if how == XattrSet::Replace && !exists {
            return Err(VfsError::NoAttr);
        }
        let mut row = n.row.clone();
        row.xattrs.insert(name.to_string(), value.to_vec());
        row.ctime = self.now();
        self.journal(&mut st, vec![Record::PutInode(row)])
    }

    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        let name = name.to_str().ok_or(VfsError::NoAttr)?;
        let st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        match name {
            XATTR_STATE => Ok(self.state_of(&st, ino).as_bytes().to_vec()),
            XATTR_PLACEMENT => Ok(crate::meta::Placement::name(st.tree.rule_at(ino).0)
                .as_bytes()
                .to_vec()),
            _ => n.row.xattrs.get(name).cloned().ok_or(VfsError::NoAttr),
        }
    }

    /// NUL-terminated names, as listxattr(2) returns them.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        // latus's own first, so `getfattr -d -m -` shows them.
        let mut out = Vec::new();
        for k in [XATTR_STATE, XATTR_PLACEMENT] {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
        }
        for k in n.row.xattrs.keys() {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: Ino, name: &OsStr) -> Result<()> {
        let name = name.to_str().ok_or(VfsError::NoAttr)?;
        if name == XATTR_PLACEMENT {
            return self.set_placement_ino(ino, None).map(|_| ());
        }
        let mut st = lock(&self.state);
        let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
        if !n.row.xattrs.contains_key(name) {
            return Err(VfsError::NoAttr);
        }
        let mut row = n.row.clone();
        row.xattrs.remove(name);
        row.ctime = self.now();
        self.journal(&mut st, vec![Record::PutInode(row)])
    }

    /// Space is that of the disk holding the content store.
    pub fn statfs(&self) -> Result<StatFs> {
        let d = crate::platform::disk_space(self.store.dir())?;
        let files = lock(&self.state).tree.nodes.len() as u64;
        Ok(StatFs {
            blocks: d.total / 4096,
            bfree: d.free / 4096,
            bavail: d.available / 4096,
            files: files + d.files_free,
            ffree: d.files_free,
            bsize: 4096,
            namelen: MAX_NAME as u32,
        })
    }

    // ----- status -----

    pub fn counts(&self) -> Counts {
        let st = lock(&self.state);
        let (mut files, mut dirs, mut links, mut specials, mut open) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        for n in st.tree.nodes.values() {
            if n.open > 0 {
                open += 1;
            }
            if !n.linked {
                continue;
            }
            match n.row.kind {
                Kind::File => files += 1,
                Kind::Dir => dirs += 1,
                Kind::Symlink => links += 1,
                _ => specials += 1,
            }
        }
        let (journal_backlog, last_error) = self.meta.backlog();
        Counts {
            files,
            directories: dirs.saturating_sub(1), // the root is not a folder of the user's
            symlinks: links,
            special_files: specials,
            open_files: open,
            events: st.event_count,
            hashing: st.hashing,
            journal_backlog,
            last_error,
        }
    }

    pub fn resolve(&self, path: &str) -> Result<Ino> {
        let st = lock(&self.state);
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
            ino = *n.children.get(part).ok_or(VfsError::NotFound)?;
        }
        Ok(ino)
    }

    pub fn path_status(&self, path: &str) -> Result<PathStatus> {
        let ino = self.resolve(path)?;
        let (status_path, row, size, visible, unsent, cloud_only, placement) = {
            let st = lock(&self.state);
            let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
            let p = st.tree.path(ino).unwrap_or_default();
            let visible = st.tree.visible_path(ino, &self.ignore).is_some();
            let cloud_only = self
                .is_cloud_only(n)
                .then_some(st.tree.rule_at(ino).0 == Some(Placement::Cold));
            let unsent = n.staging.is_some()
                || !n.row.announced
                || n.row
                    .object
                    .as_ref()
                    .is_some_and(|o| st.pinned.contains_key(o));
            let placement = self.placement_info(&st, ino);
            (
                p,
                n.row.clone(),
                n.size(),
                visible,
                unsent,
                cloud_only,
                placement,
            )
        };
        self.meta.commit_pending()?;
        let last_event = self.meta.last_event_for(&status_path)?;
        let published = last_event.as_ref().is_none_or(|e| e.mivui.is_some());
        Ok(PathStatus {
            state: match (visible, unsent || !published) {
                (false, _) => "local-only",
                (true, true) => "pending",
                (true, false) if cloud_only == Some(true) => "cold",
                (true, false) if cloud_only.is_some() => "cloud",
                (true, false) => "local",
            },
            path: status_path,
            kind: row.kind,
            size,
            mtime: row.mtime,
            mode: row.mode,
            file_hash: row.hash,
            last_event,
            placement,
        })
    }
}

fn mark_touched(touched: &mut BTreeMap<String, u64>, ev: &Event) {
    for p in std::iter::once(&ev.file_path).chain(ev.src_path.as_ref()) {
        let e = touched.entry(p.clone()).or_default();
        *e = (*e).max(ev.id);
    }
}

impl Vfs {
    /// A path's state from memory (for the xattr): `local-only` outside
    /// the cloud, `pending` while this node's changes to it are not yet
    /// back from the log, `cloud` when its content is only there.
    fn state_of(&self, st: &State, ino: Ino) -> &'static str {
        let Some(path) = st.tree.visible_path(ino, &self.ignore) else {
            return "local-only";
        };
        let Some(n) = st.tree.get(ino) else {
            return "local-only";
        };
        let unsent = n.staging.is_some()
            || !n.row.announced
            || n.row
                .object
                .as_ref()
                .is_some_and(|o| st.pinned.contains_key(o));
        if unsent || st.touched.contains_key(&path) {
            "pending"
        } else if self.is_cloud_only(n) && st.tree.rule_at(ino).0 == Some(Placement::Cold) {
            "cold"
        } else if self.is_cloud_only(n) {
            "cloud"
        } else {
            "local"
        }
    }
}

/// The file a reader sees now: the staging version if one is being written,
/// else the committed object (opened on first use), else none (empty).
fn current_file(store: &ContentStore, n: &mut Node) -> Result<Option<Arc<File>>> {
    if let Some(s) = &n.staging {
        return Ok(Some(s.file.clone()));
    }
    if n.content.is_none()
        && let Some(o) = &n.row.object
    {
        let file = Arc::new(store.open_object(o)?);
        if n.open == 0 {
            return Ok(Some(file)); // kept only while the file is open
        }
        n.content = Some(file);
    }
    Ok(n.content.clone())
}

/// Copy-on-write: the first modification of a committed version works on a
/// private copy (only the first `truncate_to` bytes when truncating).
fn ensure_staging(store: &ContentStore, n: &mut Node, truncate_to: Option<u64>) -> Result<()> {
    if n.staging.is_some() {
        return Ok(());
    }
    let keep = truncate_to.unwrap_or(n.row.size).min(n.row.size);
    let (object, file) = match (&n.row.object, keep) {
        (Some(_), k) if k > 0 => {
            let src = current_file(store, n)?.expect("object exists");
            store.create_copy(&src, keep)?
        }
        _ => store.create()?,
    };
    n.staging = Some(Staging {
        object,
        file: Arc::new(file),
        size: keep,
        mtime: n.row.mtime,
        ctime: n.row.ctime,
        truncated_only: false,
        writes: Default::default(),
    });
    Ok(())
}

#[cfg(test)]
mod tests;
