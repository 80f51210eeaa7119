//! The simulated world: one in-memory cloud, N nodes each with its own home
//! on disk, its own faulty connection to the cloud and its own (skewed)
//! view of one manual clock. Nothing here runs by itself: the scheduler
//! calls every operation, uploader pass and fault.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;

use latus::clock::{Clock, ManualClock};
use latus::cloud::{
    Cloud, EventLog, FaultControl, FaultyEventLog, FaultyObjectStore, MemEventLog, MemObjectStore,
};
use latus::home::{Config, Home};
use latus::meta::{Ino, Kind, Meta, Nanos, ROOT_INO};
use latus::store::ContentStore;
use latus::sync::{Engine, Fetcher, PublishedEvent, Uploader, Volume, VolumeHandle};
use latus::vfs::{Caller, OpenMode, Vfs, VfsError};
use uuid::Uuid;

pub const KEY: [u8; 32] = [0x5a; 32];
/// 2026-03-01 00:00:00 UTC.
const START: Nanos = 1_772_323_200_000_000_000;

pub const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

/// A node's clock: the shared one, offset.
struct Skewed {
    base: Arc<ManualClock>,
    offset: Nanos,
}

impl Clock for Skewed {
    fn now(&self) -> Nanos {
        self.base.now() + self.offset
    }
}

/// A running node process.
pub struct Running {
    pub vfs: Arc<Vfs>,
    pub meta: Arc<Meta>,
    pub uploader: Uploader,
}

/// A descriptor a program keeps open across steps.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub ino: Ino,
    pub fh: u64,
}

pub struct Node {
    pub home: Home,
    pub config: Config,
    pub control: Arc<FaultControl>,
    cloud: Cloud,
    clock: Arc<dyn Clock>,
    /// `None` while crashed.
    pub running: Option<Running>,
    pub held: Vec<Held>,
}

pub struct World {
    _dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub log: Arc<MemEventLog>,
    raw: Cloud,
    /// The volume as the test sees it (to open log records).
    pub volume: Volume,
    pub nodes: Vec<Node>,
}

pub fn node_id(i: usize) -> Uuid {
    Uuid::from_u128(0x5157_0000_0000_4000_8000_0000_0000_0001 + i as u128)
}

/// Node `i`'s home, made with `init`, and its faulty connection to the
/// cloud `raw`.
fn make_node(
    dir: &std::path::Path,
    i: usize,
    skew: i64,
    raw: &Cloud,
    clock: &Arc<ManualClock>,
) -> Node {
    let home = Home::new(dir.join(format!("n{i}")));
    let mut config = home
        .init(Some(format!("n{i}")), Some("mem:".into()), None)
        .expect("init");
    // Tie-breaks compare node ids: they must not change per run.
    config.node_id = node_id(i);
    home.save_config(&config).expect("config");
    let control = FaultControl::new();
    let cloud = Cloud {
        objects: Arc::new(FaultyObjectStore::with_control(
            raw.objects.clone(),
            control.clone(),
        )),
        log: Arc::new(FaultyEventLog::with_control(
            raw.log.clone(),
            control.clone(),
        )),
    };
    let clock: Arc<dyn Clock> = Arc::new(Skewed {
        base: clock.clone(),
        offset: skew * 1_000_000,
    });
    Node {
        home,
        config,
        control,
        cloud,
        clock,
        running: None,
        held: Vec::new(),
    }
}

impl World {
    pub fn new(skew_ms: &[i64]) -> Self {
        // Homes in memory when we can: a crash here is a process's, not a
        // power cut's, so syncs to disk buy nothing but time.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new().prefix("latus-sim").tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let clock = ManualClock::new(START);
        let objects = Arc::new(MemObjectStore::new());
        let log = Arc::new(MemEventLog::new());
        let raw = Cloud {
            objects: objects.clone(),
            log: log.clone(),
        };
        let volume = Volume::attach(raw.clone(), &KEY, true).expect("volume");
        let nodes = skew_ms
            .iter()
            .enumerate()
            .map(|(i, &skew)| make_node(dir.path(), i, skew, &raw, &clock))
            .collect();
        let mut w = Self {
            _dir: dir,
            clock,
            log,
            raw,
            volume,
            nodes,
        };
        for i in 0..w.nodes.len() {
            w.start(i);
        }
        w
    }

    /// A new node joins the volume (a fresh home with the key) and starts;
    /// returns its index.
    pub fn join(&mut self) -> usize {
        let i = self.nodes.len();
        let node = make_node(self._dir.path(), i, 0, &self.raw, &self.clock);
        self.nodes.push(node);
        self.start(i);
        i
    }

    /// Opens node `i` from its home, as a daemon start does.
    pub fn start(&mut self, i: usize) {
        let raw = self.raw.clone();
        let n = &mut self.nodes[i];
        if n.running.is_some() {
            return;
        }
        let store = Arc::new(ContentStore::open(n.home.objects_dir()).expect("store"));
        let (meta, loaded) =
            Meta::open(&n.home.db_path(), &n.home.wal_path(), store.clone()).expect("meta");
        let meta = Arc::new(meta);
        let (vfs, _report) = Vfs::with_clock(
            meta.clone(),
            store.clone(),
            loaded,
            n.config.node_id,
            n.config.ignore.clone(),
            (0, 0),
            n.clock.clone(),
        )
        .expect("vfs");
        // The marker is read once, as at mount; every later call goes
        // through this node's faulty connection.
        let mut volume = Volume::attach(raw, &KEY, false).expect("attach");
        volume.cloud = n.cloud.clone();
        let handle = Arc::new(VolumeHandle::new(
            String::new(),
            KEY,
            Some(Arc::new(volume)),
            Some(n.home.epochs_path()),
        ));
        vfs.set_content_source(Fetcher::new(meta.clone(), store.clone(), handle.clone()));
        let engine = Engine::new(vfs.clone(), meta.clone());
        let uploader = Uploader::manual(
            vfs.clone(),
            engine,
            meta.clone(),
            store,
            n.config.clone(),
            latus::home::node_signer(&n.home).expect("signing key"),
            handle,
        );
        n.running = Some(Running {
            vfs,
            meta,
            uploader,
        });
    }

    /// kill -9 of node `i`: its memory is gone, only its home stays.
    pub fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.held.clear();
        let Some(Running {
            vfs,
            meta,
            uploader,
        }) = n.running.take()
        else {
            return;
        };
        drop(uploader);
        drop(vfs);
        // Background threads (hasher, fetch completion) may still hold the
        // database for a moment; it must be closed before it reopens.
        let mut meta = meta;
        for _ in 0..10_000 {
            match Arc::try_unwrap(meta) {
                Ok(m) => {
                    drop(m);
                    return;
                }
                Err(m) => {
                    meta = m;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        panic!("node {i}'s database is still held after its crash");
    }

    /// Every record in the log, opened: (mivui, originator, payload).
    pub fn records(&self, after: u64) -> Vec<(u64, Uuid, PublishedEvent)> {
        self.log
            .read_after(after, usize::MAX)
            .expect("mem log")
            .into_iter()
            .map(|r| {
                let aad = self.volume.event_aad(r.originator);
                let p = PublishedEvent::open(&self.volume.keys, &aad, &r.payload)
                    .expect("every record opens");
                (r.mivui, r.originator, p)
            })
            .collect()
    }
}

/// The inode at `path`.
pub fn resolve(vfs: &Vfs, path: &str) -> Result<latus::vfs::Attr, VfsError> {
    let mut attr = vfs.getattr(ROOT_INO)?;
    for part in path.split('/').filter(|c| !c.is_empty()) {
        attr = vfs.lookup(attr.ino, OsStr::new(part))?;
    }
    Ok(attr)
}

/// The folder holding `path`, and the last name.
pub fn parent_of<'a>(vfs: &Vfs, path: &'a str) -> Result<(Ino, &'a str), VfsError> {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let d = resolve(vfs, dir)?;
    if d.kind != Kind::Dir {
        return Err(VfsError::NotFound);
    }
    Ok((d.ino, name))
}

/// What a path holds, as compared across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { perm: u16 },
    File { perm: u16, hash: String, size: u64 },
    Link { target: Vec<u8> },
}

/// The whole tree of a node, by path; reads every file (fetching what is
/// only in the cloud).
pub fn snapshot(vfs: &Vfs) -> Result<BTreeMap<String, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(ROOT_INO, String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        let fh = vfs
            .opendir(dir)
            .map_err(|e| format!("opendir {prefix}: {e}"))?;
        let mut entries = Vec::new();
        vfs.readdir(fh, 0, |e, _| {
            entries.push(e.clone());
            false
        })
        .map_err(|e| e.to_string())?;
        vfs.releasedir(fh).map_err(|e| e.to_string())?;
        for e in entries {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let path = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            let attr = vfs.getattr(e.ino).map_err(|x| format!("{path}: {x}"))?;
            let entry = match attr.kind {
                Kind::Dir => {
                    todo.push((e.ino, path.clone()));
                    Entry::Dir { perm: attr.perm }
                }
                Kind::Symlink => Entry::Link {
                    target: vfs.readlink(e.ino).map_err(|x| format!("{path}: {x}"))?,
                },
                Kind::File => {
                    let data = read_all(vfs, e.ino).map_err(|x| format!("read {path}: {x}"))?;
                    Entry::File {
                        perm: attr.perm,
                        hash: sha512_hex(&data),
                        size: data.len() as u64,
                    }
                }
                k => return Err(format!("{path}: the simulation makes no {k:?}")),
            };
            out.insert(path, entry);
        }
    }
    Ok(out)
}

pub fn read_all(vfs: &Vfs, ino: Ino) -> Result<Vec<u8>, VfsError> {
    let o = vfs.open(ino, OpenMode::READ, ME)?;
    let r = vfs.read(ino, o.fh, 0, u32::MAX);
    vfs.release(ino, o.fh)?;
    r
}

pub fn sha512_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha512::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
