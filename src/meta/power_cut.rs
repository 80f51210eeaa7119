//! Power cuts, simulated: the database and the journal live on a disk that
//! keeps, for each file, what the last sync made durable and the writes
//! since. A cut keeps a random subset of those writes (a disk may write
//! back any of its cached pages, in any order) and the node opens again
//! from only that. Checked after each cut:
//!
//! - every batch journaled before the last `sync_journal` or commit that
//!   returned is there (the `fsync` promise);
//! - what is there is exactly the batches up to some point, in order, with
//!   nothing half-applied (the state is consistent).
//!
//! The journal is emptied every few KiB here (every 16 MiB in use), so
//! cuts also fall around its emptying.
//!
//! A kill -9 (the process dies, the disk keeps every write) must keep every
//! batch journaled. Seeded and replayable: set `LATUS_POWER_CUT_SEED` to run
//! one seed; a failure names its seed.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex as StdMutex};

use super::wal::JournalFile;
use super::{InodeRow, Kind, Meta, Record};
use crate::store::ContentStore;

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Write {
    At(u64, Vec<u8>),
    Len(u64),
}

/// One file of the simulated disk.
#[derive(Default)]
struct SimFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<Write>,
    syncs: u64,
}

impl SimFile {
    fn apply(image: &mut Vec<u8>, w: &Write) {
        match w {
            Write::At(off, data) => {
                let off = *off as usize;
                if image.len() < off + data.len() {
                    image.resize(off + data.len(), 0);
                }
                image[off..off + data.len()].copy_from_slice(data);
            }
            Write::Len(len) => image.resize(*len as usize, 0),
        }
    }

    fn write(&mut self, w: Write) {
        Self::apply(&mut self.live, &w);
        self.unsynced.push(w);
    }

    fn sync(&mut self) {
        self.durable = self.live.clone();
        self.unsynced.clear();
        self.syncs += 1;
    }

    /// What the platter holds after a power cut now.
    fn after_cut(&self, rng: &mut Rng) -> SimFile {
        let mut image = self.durable.clone();
        for w in &self.unsynced {
            if rng.below(2) == 0 {
                Self::apply(&mut image, w);
            }
        }
        SimFile {
            live: image.clone(),
            durable: image,
            ..Default::default()
        }
    }

    /// What survives kill -9: every write (the kernel has them).
    fn after_kill(&self) -> SimFile {
        SimFile {
            live: self.live.clone(),
            durable: self.durable.clone(),
            unsynced: self
                .unsynced
                .iter()
                .map(|w| match w {
                    Write::At(o, d) => Write::At(*o, d.clone()),
                    Write::Len(l) => Write::Len(*l),
                })
                .collect(),
            syncs: 0,
        }
    }
}

type Shared = Arc<StdMutex<SimFile>>;

#[derive(Clone, Debug)]
struct SimDb(Shared);

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimFile({} bytes)", self.live.len())
    }
}

impl redb::StorageBackend for SimDb {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.0.lock().unwrap().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let f = self.0.lock().unwrap();
        let start = offset as usize;
        let Some(bytes) = f.live.get(start..start + out.len()) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.lock().unwrap().write(Write::Len(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.lock().unwrap().sync();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0
            .lock()
            .unwrap()
            .write(Write::At(offset, data.to_vec()));
        Ok(())
    }
}

struct SimJournal(Shared);

impl JournalFile for SimJournal {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.0.lock().unwrap().live.clone())
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut f = self.0.lock().unwrap();
        let end = f.live.len() as u64;
        f.write(Write::At(end, buf.to_vec()));
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.lock().unwrap().write(Write::Len(len));
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.0.lock().unwrap().sync();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().live.len() as u64)
    }
}

const FILES: u64 = 11;

/// Batch `i`'s change: a file row written (or, every fifth, removed) and
/// the batch counter, in one journal write.
fn batch(i: u64) -> Vec<Record> {
    let ino = 2 + (i * 7) % FILES;
    let change = if i.is_multiple_of(5) {
        Record::DelInode(ino)
    } else {
        Record::PutInode(InodeRow {
            ino,
            parent: super::ROOT_INO,
            name: format!("f{i}"),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: i,
            atime: 0,
            mtime: i as i64,
            ctime: i as i64,
            object: None,
            hash: None,
            target: None,
            xattrs: Default::default(),
            announced: true,
            placement: None,
            rdev: 0,
            links: Vec::new(),
        })
    };
    vec![
        change,
        Record::SetState {
            key: "batch".into(),
            value: i,
        },
    ]
}

/// The rows after batches `1..=n`: ino → name.
fn expected(n: u64) -> BTreeMap<u64, String> {
    let mut rows = BTreeMap::new();
    for i in 1..=n {
        let ino = 2 + (i * 7) % FILES;
        if i.is_multiple_of(5) {
            rows.remove(&ino);
        } else {
            rows.insert(ino, format!("f{i}"));
        }
    }
    rows
}

struct Node {
    db: Shared,
    journal: Shared,
    meta: Meta,
}

fn open(
    db: SimFile,
    journal: SimFile,
    store: &Arc<ContentStore>,
) -> (Node, u64, BTreeMap<u64, String>) {
    let (db, journal) = (
        Arc::new(StdMutex::new(db)),
        Arc::new(StdMutex::new(journal)),
    );
    let (mut meta, loaded) = Meta::open_on(
        SimDb(db.clone()),
        Box::new(SimJournal(journal.clone())),
        store.clone(),
    )
    .expect("the node opens after the cut");
    // Emptied every few commits, not every 16 MiB.
    meta.clear_threshold = 4096;
    let n = meta.state("batch").expect("state reads");
    let rows = loaded.inodes.into_iter().map(|r| (r.ino, r.name)).collect();
    (Node { db, journal, meta }, n, rows)
}

/// Runs one seeded history; panics naming the seed on a broken promise.
fn run(seed: u64, steps: u32, store: &Arc<ContentStore>) -> (u32, u32) {
    let mut rng = Rng(seed);
    let (mut node, _, _) = open(SimFile::default(), SimFile::default(), store);
    // Batches journaled, and those a returned sync or commit made durable.
    let (mut journaled, mut durable) = (0u64, 0u64);
    let (mut cuts, mut kills) = (0, 0);
    let trace = std::env::var("LATUS_POWER_CUT_TRACE").is_ok();
    for step in 0..steps {
        let op = rng.below(100);
        if trace {
            let (j, d) = (node.journal.lock().unwrap(), node.db.lock().unwrap());
            eprintln!(
                "step {step} op {op} journaled {journaled} durable {durable}: journal {} bytes, {} unsynced writes; db {} unsynced writes",
                j.live.len(),
                j.unsynced.len(),
                d.unsynced.len()
            );
        }
        match op {
            0..=64 => {
                journaled += 1;
                node.meta.append(&batch(journaled)).expect("append");
            }
            65..=74 => {
                node.meta.sync_journal().expect("sync_journal");
                durable = journaled;
            }
            75..=84 => {
                node.meta.commit_pending().expect("commit");
                durable = journaled;
            }
            85..=94 => {
                cuts += 1;
                let db = node.db.lock().unwrap().after_cut(&mut rng);
                let journal = node.journal.lock().unwrap().after_cut(&mut rng);
                // The old process is gone: nothing it does now reaches the disk.
                drop(node);
                let (again, n, rows) = open(db, journal, store);
                assert!(
                    n >= durable && n <= journaled,
                    "seed {seed} step {step}: after a power cut the node holds batches 1..={n}; \
                     synced were 1..={durable}, journaled 1..={journaled}"
                );
                assert_eq!(
                    rows,
                    expected(n),
                    "seed {seed} step {step}: the rows are not those of batches 1..={n}"
                );
                (node, journaled, durable) = (again, n, n);
            }
            _ => {
                kills += 1;
                let db = node.db.lock().unwrap().after_kill();
                let journal = node.journal.lock().unwrap().after_kill();
                drop(node);
                let (again, n, rows) = open(db, journal, store);
                assert_eq!(
                    n, journaled,
                    "seed {seed} step {step}: kill -9 lost journaled batches"
                );
                assert_eq!(
                    rows,
                    expected(n),
                    "seed {seed} step {step}: rows after kill -9"
                );
                // Opening committed what the journal held.
                (node, durable) = (again, n);
            }
        }
    }
    (cuts, kills)
}

#[test]
fn every_synced_version_survives_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ContentStore::open(dir.path().join("objects")).unwrap());
    let seeds: Vec<u64> = match std::env::var("LATUS_POWER_CUT_SEED") {
        Ok(s) => vec![s.parse().expect("LATUS_POWER_CUT_SEED is a number")],
        Err(_) => (1..=40).collect(),
    };
    let (mut cuts, mut kills) = (0, 0);
    for seed in seeds {
        eprintln!("power-cut seed {seed} (replay: LATUS_POWER_CUT_SEED={seed})");
        let (c, k) = run(seed, 300, &store);
        cuts += c;
        kills += k;
    }
    eprintln!("{cuts} power cuts, {kills} kills, every promise held");
}
