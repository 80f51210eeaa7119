//! Everything that must survive a crash: the tree, file attributes and the
//! event journal, in one redb database per node, fronted by a write-ahead
//! journal (`wal`).
//!
//! Tables (keys → values; values are JSON of the `record` types):
//! - `inodes`: ino (u64) → `InodeRow`
//! - `events`: local event id (u64) → `Event`
//! - `state`:  name (&str) → u64; `wal_applied` is the last journal sequence
//!   whose effect is in the database; `published_through`, `log_seen` are
//!   the uploader's and the log reader's cursors; `db_format` is the
//!   database's format (`DB_FORMAT`).
//! - `versions`: local object id (&str) → JSON `[ChunkRef]`, the chunks of
//!   a published version, to fetch it back from the cloud.
//! - `remote`: remote id (u64) → `RemoteRow`, the tree as the log says it is.
//! - `log`: mivui (u64) → `LogEntry`, every record of the log read so far
//!   (version history).
//! - `text`: name (&str) → &str, the log guard's state (`sync::chain`):
//!   `head:<mivui>` (the log's hash chain as this node read it) and
//!   `seq:<node id>` (the last sequence number read of each node);
//!   `cold:chunks`, JSON chunk name → plaintext size, the chunks this node
//!   moved to the cold tier (`sync::cold`).
//!
//! Durability: `append` puts records in the journal with one `write` (they
//! survive kill -9 of the process at once); the committer applies them to
//! redb with durable commits every `COMMIT_INTERVAL` (then they survive a
//! power cut too); `sync_journal` makes them power-cut durable at once.
//! Object files a committed change made garbage are unlinked only after that
//! change is durable in redb, so a power cut never leaves a row naming a
//! removed object.
//!
//! Format: `DB_FORMAT`, in `state`. A new database is marked at its first
//! open; an older one by the home's upgrade (`home::upgrade`), after a
//! backup; a newer one is refused before anything is written to it.
//!
//! Version changes: 1 — first format; 2 — `state` row `db_format` (a
//! database without it is format 1); 3 — inode rows may be FIFOs, sockets
//! and device nodes (`rdev`), have hard links (`links`) or the `cold`
//! placement, and `state` may hold `cold:chunks`: nothing to convert, the
//! mark only.

#[cfg(test)]
mod power_cut;
mod record;
mod wal;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use thiserror::Error;

use crate::event::Event;
use crate::locks::{Condvar, Mutex, lock};
use crate::store::{ContentStore, ObjectId};

pub use record::{Ino, InodeRow, Kind, LogEntry, Nanos, Placement, ROOT_INO, Record, RemoteRow};
use wal::{Wal, WalEntry};

const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
const REMOTE: TableDefinition<u64, &[u8]> = TableDefinition::new("remote");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const TEXT: TableDefinition<&str, &str> = TableDefinition::new("text");
/// Every event with an id up to this is in the cloud's log.
pub const PUBLISHED_THROUGH: &str = "published_through";
/// The highest `mivui` this node has read from the log.
pub const LOG_SEEN: &str = "log_seen";
/// The `mivui` of the checkpoint this node started from (0: it read the
/// whole log): its history holds nothing older than that.
pub const HISTORY_FROM: &str = "history_from";
/// The newest checkpoint of the log this node knows of (made or read).
pub const CHECKPOINT_SEEN: &str = "checkpoint_seen";
/// The highest local event id this node has read back from the log.
pub const OWN_SEEN: &str = "own_seen";
/// This node's event ids stay above this: the highest local id its records
/// in the log carry (a home restored from an old copy knows fewer events
/// than its log shows, and must not reuse their ids).
pub const EVENT_FLOOR: &str = "event_floor";
/// 1 once the remote tree is built from the log (databases from before it
/// existed read the log again from the start).
pub const REMOTE_FORMAT: &str = "remote_format";
const WAL_APPLIED: &str = "wal_applied";
const DB_FORMAT_KEY: &str = "db_format";

/// The database format this latus writes (and the newest it reads).
pub const DB_FORMAT: u32 = 3;
/// The journal's frame format (`wal`).
pub const JOURNAL_FORMAT: u32 = wal::FORMAT;

pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Up to this many new content objects in a batch are synced one by one;
/// beyond it one `syncfs` is cheaper.
const PER_OBJECT_SYNC_LIMIT: usize = 64;
/// The journal is emptied once everything in it is committed and it is
/// larger than this.
const WAL_CLEAR_THRESHOLD: u64 = 16 << 20;

#[derive(Debug, Error)]
pub enum MetaError {
    #[error("database {path}: {source}")]
    Database {
        path: String,
        source: Box<redb::Error>,
    },
    #[error("journal {path}: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("database row {table}/{key} is unreadable: {source}")]
    Corrupt {
        table: &'static str,
        key: u64,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the metadata committer stopped after an error: {0}")]
    CommitterFailed(String),
    #[error(
        "database {path} was written by a newer latus (database format {found}); this latus reads database formats up to {DB_FORMAT}: install a newer latus"
    )]
    TooNew { path: String, found: u64 },
}

impl MetaError {
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            MetaError::Journal { source, .. } => source.raw_os_error(),
            MetaError::Store(e) => e.raw_os_error(),
            MetaError::Database { source, .. } => match &**source {
                redb::Error::Io(e) => e.raw_os_error(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What `Meta::open` found and repaired.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// Journal records that were not yet in the database (the previous run
    /// ended without a final commit: a crash or kill -9).
    pub replayed_records: usize,
    /// Bytes of a torn journal tail that were dropped (power cut).
    pub torn_bytes: u64,
    /// The journal starts at its first record (nothing was ever emptied).
    pub journal_complete: bool,
    /// The database could not be opened and was started again.
    pub rebuilt: Option<Rebuilt>,
    /// Content no row names is set aside, not collected (`latus repair`).
    pub keep_unnamed: bool,
}

/// A database that could not be opened (or that `latus repair` set
/// aside), started again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebuilt {
    /// Where the old file is kept (empty: there was none, it was lost).
    pub damaged_file: String,
    pub error: String,
    /// The journal held every change since the node began, so this node's
    /// own state (unpublished changes included) came back from it.
    pub journal_complete: bool,
    /// Asked for by `latus repair` (the old database may have been sound).
    #[serde(default)]
    pub by_repair: bool,
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Moves the database at `path` to `path.SUFFIX-TIME`; returns where.
pub fn set_aside(path: &Path, suffix: &str) -> std::io::Result<String> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{suffix}-{}", unix_secs()));
    std::fs::rename(path, &aside)?;
    Ok(std::path::PathBuf::from(aside).display().to_string())
}

/// Whether the journal at `path` still starts at its first record (so it
/// alone rebuilds this node's database).
pub fn journal_complete(path: &Path) -> Result<bool, MetaError> {
    let err = |source| MetaError::Journal {
        path: path.display().to_string(),
        source,
    };
    let contents = Wal::open(path)
        .and_then(|mut w| w.read_all())
        .map_err(err)?;
    Ok(contents.entries.first().is_some_and(|e| e.seq == 1))
}

/// redb's page cache. Its default (1 GiB) kept every page a mount's full
/// read of the tables touched: hundreds of MB resident for a large volume.
/// The interior pages of the B-trees are what repeated lookups need.
const DB_CACHE: usize = 64 << 20;

fn create_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(DB_CACHE).create(path)
}

/// Opens the database; one redb cannot repair (overwritten blocks, a
/// truncated file) is moved aside and a fresh one made, to be filled from
/// the journal and the volume's log. A lost one (no file, but a journal
/// that has records) is rebuilt the same way.
fn open_or_set_aside(
    path: &Path,
    wal_path: &Path,
) -> Result<(Database, Option<Rebuilt>), redb::Error> {
    let lost = !path.exists() && std::fs::metadata(wal_path).is_ok_and(|m| m.len() > 0);
    let err = match create_db(path) {
        Ok(db) if lost => {
            tracing::error!(
                "the database is missing; rebuilding it from the journal and the volume's log"
            );
            return Ok((
                db,
                Some(Rebuilt {
                    damaged_file: String::new(),
                    error: "the database file was missing".into(),
                    journal_complete: false,
                    by_repair: false,
                }),
            ));
        }
        Ok(db) => return Ok((db, None)),
        Err(e) => redb::Error::from(e),
    };
    let damaged = match &err {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    };
    if !damaged {
        return Err(err);
    }
    let aside = set_aside(path, "damaged")?;
    tracing::error!(error = %err, damaged_file = %aside, "the database is damaged; set it aside, rebuilding from the journal and the volume's log");
    let db = create_db(path)?;
    Ok((
        db,
        Some(Rebuilt {
            damaged_file: aside,
            error: err.to_string(),
            journal_complete: false,
            by_repair: false,
        }),
    ))
}

/// Refuses a database of a newer format; with `mark_new`, marks one
/// without tables (just made) with `DB_FORMAT`.
fn check_db_format(db: &Database, path: &str, mark_new: bool) -> Result<u64, MetaError> {
    let e = db_err(path);
    let rtx = db.begin_read().map_err(|x| e(x.into()))?;
    let found = match rtx.open_table(STATE) {
        Ok(t) => t
            .get(DB_FORMAT_KEY)
            .map_err(|x| e(x.into()))?
            .map_or(0, |v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(x) => return Err(e(x.into())),
    };
    if found > u64::from(DB_FORMAT) {
        return Err(MetaError::TooNew {
            path: path.to_string(),
            found,
        });
    }
    let empty = rtx.list_tables().map_err(|x| e(x.into()))?.next().is_none();
    drop(rtx);
    if found == 0 && mark_new && empty {
        write_db_format(db, path)?;
        return Ok(u64::from(DB_FORMAT));
    }
    Ok(found)
}

fn write_db_format(db: &Database, path: &str) -> Result<(), MetaError> {
    let e = db_err(path);
    let mut tx = db.begin_write().map_err(|x| e(x.into()))?;
    tx.set_durability(redb::Durability::Immediate)
        .map_err(|x| e(x.into()))?;
    tx.open_table(STATE)
        .map_err(|x| e(x.into()))?
        .insert(DB_FORMAT_KEY, u64::from(DB_FORMAT))
        .map_err(|x| e(x.into()))?;
    tx.commit().map_err(|x| e(x.into()))
}

/// Upgrades the database at `path` (closed: the caller holds the home's
/// lock) to `DB_FORMAT`. Format 1 → 2 only adds the mark.
pub fn mark_db_format(path: &Path) -> Result<(), MetaError> {
    let shown = path.display().to_string();
    let db = Database::create(path).map_err(|x| db_err(&shown)(x.into()))?;
    if check_db_format(&db, &shown, false)? < u64::from(DB_FORMAT) {
        write_db_format(&db, &shown)?;
    }
    Ok(())
}

/// The format recorded in the database at `path` (0: none, format 1).
pub fn db_format(path: &Path) -> Result<u64, MetaError> {
    let shown = path.display().to_string();
    let db = Database::open(path).map_err(|x| db_err(&shown)(x.into()))?;
    check_db_format(&db, &shown, false)
}

pub struct Loaded {
    pub inodes: Vec<InodeRow>,
    pub remote: Vec<RemoteRow>,
    pub max_event_id: u64,
    pub event_count: u64,
    pub recovery: Recovery,
}

#[derive(Default)]
struct Queue {
    entries: Vec<WalEntry>,
    /// Objects to unlink once the record with this sequence is durable.
    unlinks: Vec<(u64, ObjectId)>,
    next_seq: u64,
    committed_seq: u64,
    last_error: Option<String>,
}

/// The database, opened again after an I/O error: redb refuses every
/// transaction after one (a full disk) until it is closed and reopened.
struct Db {
    /// `None`: a simulated disk (tests), never reopened.
    path: Option<std::path::PathBuf>,
    inner: Mutex<Option<Arc<Database>>>,
    /// The last write failed on I/O: reopen before the next.
    broken: std::sync::atomic::AtomicBool,
}

impl Db {
    fn current(&self) -> Result<Arc<Database>, redb::TransactionError> {
        lock(&self.inner)
            .clone()
            .ok_or(redb::TransactionError::Storage(
                redb::StorageError::PreviousIo,
            ))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        self.current()?.begin_read()
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, redb::TransactionError> {
        self.current()?.begin_write()
    }

    /// Closes and opens the database if a write failed on I/O. Fails
    /// (to be tried again) while a transaction still holds the old one.
    fn reopen_if_broken(&self) -> Result<(), redb::Error> {
        use std::sync::atomic::Ordering;
        if !self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut inner = lock(&self.inner);
        drop(inner.take());
        *inner = Some(Arc::new(create_db(path)?));
        self.broken.store(false, Ordering::Release);
        tracing::info!("database reopened after an I/O error");
        Ok(())
    }

    fn note(&self, err: &MetaError) {
        if let MetaError::Database { source, .. } = err
            && matches!(**source, redb::Error::Io(_) | redb::Error::PreviousIo)
        {
            self.broken
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

pub struct Meta {
    db: Db,
    db_path: String,
    wal: Mutex<Wal>,
    queue: Mutex<Queue>,
    wake: Condvar,
    commit_lock: Mutex<()>,
    store: Arc<ContentStore>,
    /// `WAL_CLEAR_THRESHOLD` (smaller in tests, to empty it often).
    clear_threshold: u64,
}

fn db_err(path: &str) -> impl Fn(redb::Error) -> MetaError + '_ {
    move |e| MetaError::Database {
        path: path.to_string(),
        source: Box::new(e),
    }
}

impl Meta {
    /// Opens (creating if needed) the database and journal, replays what the
    /// journal holds beyond the database, and loads the tree.
    pub fn open(
        db_path: &Path,
        wal_path: &Path,
        store: Arc<ContentStore>,
    ) -> Result<(Self, Loaded), MetaError> {
        Self::open_rebuilding(db_path, wal_path, store, None, false)
    }

    /// `open`, for `latus repair`: `prior` when it set the database aside
    /// (the new one is rebuilt like a damaged one); `keep_unnamed` keeps
    /// content no row names aside instead of collecting it.
    pub fn open_rebuilding(
        db_path: &Path,
        wal_path: &Path,
        store: Arc<ContentStore>,
        prior: Option<Rebuilt>,
        keep_unnamed: bool,
    ) -> Result<(Self, Loaded), MetaError> {
        let path = db_path.display().to_string();
        let e = db_err(&path);
        let (database, rebuilt) = open_or_set_aside(db_path, wal_path).map_err(&e)?;
        check_db_format(&database, &path, true)?;
        let wal = Wal::open(wal_path).map_err(|source| MetaError::Journal {
            path: wal_path.display().to_string(),
            source,
        })?;
        Self::open_parts(
            database,
            Some(db_path.to_path_buf()),
            wal,
            store,
            prior.or(rebuilt),
        )
        .map(|(meta, mut loaded)| {
            loaded.recovery.keep_unnamed |= keep_unnamed;
            (meta, loaded)
        })
    }

    fn open_parts(
        database: Database,
        db_path: Option<std::path::PathBuf>,
        wal: Wal,
        store: Arc<ContentStore>,
        rebuilt: Option<Rebuilt>,
    ) -> Result<(Self, Loaded), MetaError> {
        let shown = db_path
            .as_ref()
            .map_or_else(|| "(simulated disk)".into(), |p| p.display().to_string());
        let db = Db {
            path: db_path,
            inner: Mutex::new(Some(Arc::new(database))),
            broken: Default::default(),
        };
        let mut meta = Self {
            db,
            db_path: shown,
            wal: Mutex::new(wal),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            commit_lock: Mutex::new(()),
            store,
            clear_threshold: WAL_CLEAR_THRESHOLD,
        };
        let mut recovery = meta.replay(rebuilt.is_some())?;
        if let Some(mut r) = rebuilt {
            r.journal_complete = recovery.replayed_records > 0 && recovery.journal_complete;
            recovery.rebuilt = Some(r);
        }
        let loaded = meta.load(recovery)?;
        Ok((meta, loaded))
    }

    /// Opens a database and journal kept on simulated storage (the
    /// power-cut tests).
    #[cfg(test)]
    pub(crate) fn open_on(
        backend: impl redb::StorageBackend,
        journal: Box<dyn wal::JournalFile>,
        store: Arc<ContentStore>,
    ) -> Result<(Self, Loaded), MetaError> {
        let database = Database::builder()
            .create_with_backend(backend)
            .map_err(|x| db_err("(simulated disk)")(x.into()))?;
        let wal = Wal::on(Path::new("(simulated journal)"), journal).map_err(|source| {
            MetaError::Journal {
                path: "(simulated journal)".into(),
                source,
            }
        })?;
        Self::open_parts(database, None, wal, store, None)
    }

    /// Applies what the journal holds beyond the database. The journal is
    /// kept (emptied only once large, see `clear_journal_if_committed`):
    /// while it starts at record 1, it alone rebuilds a lost database.
    fn replay(&mut self, fresh_db: bool) -> Result<Recovery, MetaError> {
        let wal = self.wal.get_mut().expect("fresh lock");
        let contents = wal.read_all().map_err(|source| MetaError::Journal {
            path: wal.path().display().to_string(),
            source,
        })?;
        let complete = contents.entries.first().is_some_and(|e| e.seq == 1);
        // A partial journal cannot rebuild a database on its own (rows
        // would name parents it does not hold): the cloud's log does.
        let contents = if fresh_db && !complete {
            wal::WalContents {
                entries: Vec::new(),
                torn_bytes: contents.torn_bytes,
            }
        } else {
            contents
        };
        let applied = self.state(WAL_APPLIED)?;
        let wal_last = contents.entries.last().map_or(0, |e| e.seq);
        let todo: Vec<WalEntry> = contents
            .entries
            .into_iter()
            .filter(|e| e.seq > applied)
            .collect();
        let recovery = Recovery {
            replayed_records: todo.len(),
            torn_bytes: contents.torn_bytes,
            journal_complete: complete,
            rebuilt: None,
            keep_unnamed: false,
        };
        let last = todo.last().map(|e| e.seq).unwrap_or(applied);
        if !todo.is_empty() {
            self.write_batch(&todo, last)?;
        }
        let wal = self.wal.get_mut().expect("fresh lock");
        // A torn tail goes (later appends must not sit behind it); a
        // journal that cannot serve a rebuild starts again. Durably: frames
        // past a hole that a second power cut brought back behind new
        // records (reusing their numbers) would be replayed as theirs.
        if contents.torn_bytes > 0 || (fresh_db && !complete) {
            wal.clear()
                .and_then(|()| wal.sync())
                .map_err(|source| MetaError::Journal {
                    path: wal.path().display().to_string(),
                    source,
                })?;
        }
        let last = last.max(wal_last);
        let q = self.queue.get_mut().expect("fresh lock");
        q.next_seq = last + 1;
        q.committed_seq = last;
        Ok(recovery)
    }

    fn load(&self, recovery: Recovery) -> Result<Loaded, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let mut inodes = Vec::new();
        match rtx.open_table(INODES) {
            Ok(t) => {
                for item in t.iter().map_err(|x| e(x.into()))? {
                    let (k, v) = item.map_err(|x| e(x.into()))?;
                    let row: InodeRow =
                        serde_json::from_slice(v.value()).map_err(|source| MetaError::Corrupt {
                            table: "inodes",
                            key: k.value(),
                            source,
                        })?;
                    inodes.push(row);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(x) => return Err(e(x.into())),
        }
        let mut remote = Vec::new();
        match rtx.open_table(REMOTE) {
            Ok(t) => {
                for item in t.iter().map_err(|x| e(x.into()))? {
                    let (k, v) = item.map_err(|x| e(x.into()))?;
                    let row: RemoteRow =
                        serde_json::from_slice(v.value()).map_err(|source| MetaError::Corrupt {
                            table: "remote",
                            key: k.value(),
                            source,
                        })?;
                    remote.push(row);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(x) => return Err(e(x.into())),
        }
        let (max_event_id, event_count) = match rtx.open_table(EVENTS) {
            Ok(t) => {
                let last = t.last().map_err(|x| e(x.into()))?.map(|(k, _)| k.value());
                (last.unwrap_or(0), t.len().map_err(|x| e(x.into()))?)
            }
            Err(redb::TableError::TableDoesNotExist(_)) => (0, 0),
            Err(x) => return Err(e(x.into())),
        };
        Ok(Loaded {
            inodes,
            remote,
            max_event_id,
            event_count,
            recovery,
        })
    }

    fn write_batch(&self, entries: &[WalEntry], last_seq: u64) -> Result<(), MetaError> {
        let e = db_err(&self.db_path);
        let mut tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(|x| e(x.into()))?;
        {
            let mut t = Tables {
                inodes: tx.open_table(INODES).map_err(|x| e(x.into()))?,
                events: tx.open_table(EVENTS).map_err(|x| e(x.into()))?,
                state: tx.open_table(STATE).map_err(|x| e(x.into()))?,
                versions: tx.open_table(VERSIONS).map_err(|x| e(x.into()))?,
                remote: tx.open_table(REMOTE).map_err(|x| e(x.into()))?,
                log: tx.open_table(LOG).map_err(|x| e(x.into()))?,
                text: tx.open_table(TEXT).map_err(|x| e(x.into()))?,
            };
            for entry in entries {
                t.apply(&entry.rec).map_err(|x| match x {
                    ApplyError::Db(x) => e(x),
                    ApplyError::Corrupt(c) => c,
                })?;
            }
            t.state
                .insert(WAL_APPLIED, last_seq)
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// Journals records; once this returns they survive kill -9.
    pub fn append(&self, records: &[Record]) -> Result<(), MetaError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut wal = lock(&self.wal);
        let mut q = lock(&self.queue);
        let first = q.next_seq;
        let entries: Vec<WalEntry> = records
            .iter()
            .enumerate()
            .map(|(i, rec)| WalEntry {
                seq: first + i as u64,
                rec: rec.clone(),
            })
            .collect();
        wal.append(&entries).map_err(|source| MetaError::Journal {
            path: wal.path().display().to_string(),
            source,
        })?;
        q.next_seq += entries.len() as u64;
        q.entries.extend(entries);
        Ok(())
    }

    /// Unlinks `object` once everything journaled so far is durable.
    pub fn unlink_when_durable(&self, object: ObjectId) {
        let mut q = lock(&self.queue);
        let seq = q.next_seq - 1;
        q.unlinks.push((seq, object));
    }

    /// Makes everything journaled so far survive a power cut.
    pub fn sync_journal(&self) -> Result<(), MetaError> {
        // Rows must never be durable before the content they name: sync
        // the objects of every row not yet committed, then the journal.
        let pending: Vec<String> = lock(&self.queue)
            .entries
            .iter()
            .filter_map(|e| match &e.rec {
                Record::PutInode(row) => row.object.clone(),
                _ => None,
            })
            .collect();
        self.sync_objects(pending.iter().map(String::as_str))?;
        let wal = lock(&self.wal);
        wal.sync().map_err(|source| MetaError::Journal {
            path: wal.path().display().to_string(),
            source,
        })
    }

    /// Moves journaled records into the database with one durable commit.
    pub fn commit_pending(&self) -> Result<(), MetaError> {
        let _one_committer = lock(&self.commit_lock);
        let batch = std::mem::take(&mut lock(&self.queue).entries);
        if let Some(last) = batch.last().map(|e| e.seq) {
            // Object contents must be on disk before rows that name them.
            let result = self
                .db
                .reopen_if_broken()
                .map_err(|x| db_err(&self.db_path)(x))
                .and_then(|()| self.sync_objects_named_in(&batch))
                .and_then(|()| self.write_batch(&batch, last));
            let mut q = lock(&self.queue);
            if let Err(err) = result {
                self.db.note(&err);
                q.last_error = Some(err.to_string());
                let newer = std::mem::take(&mut q.entries);
                q.entries = batch;
                q.entries.extend(newer);
                return Err(err);
            }
            q.committed_seq = last;
            q.last_error = None;
        }
        let due: Vec<ObjectId> = {
            let mut q = lock(&self.queue);
            let committed = q.committed_seq;
            let (due, later) = std::mem::take(&mut q.unlinks)
                .into_iter()
                .partition(|(seq, _)| *seq <= committed);
            q.unlinks = later;
            due.into_iter().map(|(_, id)| id).collect()
        };
        for id in due {
            if let Err(err) = self.store.remove(&id) {
                tracing::warn!(object = %id, error = %err, "could not remove a superseded object");
            }
        }
        self.clear_journal_if_committed();
        Ok(())
    }

    /// Object contents must reach the disk before rows that name them.
    fn sync_objects_named_in(&self, batch: &[WalEntry]) -> Result<(), MetaError> {
        self.sync_objects(batch.iter().filter_map(|e| match &e.rec {
            Record::PutInode(row) => row.object.as_deref(),
            _ => None,
        }))
    }

    fn sync_objects<'a>(&self, names: impl Iterator<Item = &'a str>) -> Result<(), MetaError> {
        let objects: HashSet<&str> = names.collect();
        if objects.len() > PER_OBJECT_SYNC_LIMIT {
            return Ok(self.store.sync_all()?);
        }
        for o in objects {
            self.store.sync_object(o)?;
        }
        Ok(())
    }

    fn clear_journal_if_committed(&self) {
        let mut wal = lock(&self.wal);
        let q = lock(&self.queue);
        if q.entries.is_empty()
            && wal.len() > self.clear_threshold
            && let Err(err) = wal.clear()
        {
            tracing::warn!(error = %err, "could not empty the journal");
        }
    }

    /// Runs until `stop` is set, committing every `COMMIT_INTERVAL`.
    pub fn run_committer(&self, stop: &std::sync::atomic::AtomicBool) {
        use std::sync::atomic::Ordering;
        while !stop.load(Ordering::Acquire) {
            {
                let q = lock(&self.queue);
                let _ = self
                    .wake
                    .wait_timeout(q, COMMIT_INTERVAL)
                    .expect("lock poisoned");
            }
            if let Err(err) = self.commit_pending() {
                tracing::error!(error = %err, "metadata commit failed; will retry (journal keeps every change)");
            }
        }
    }

    pub fn wake_committer(&self) {
        self.wake.notify_all();
    }

    /// Records journaled but not yet in the database, and the last commit error.
    pub fn backlog(&self) -> (usize, Option<String>) {
        let q = lock(&self.queue);
        (q.entries.len(), q.last_error.clone())
    }

    /// Content events whose hash was never filled in (the daemon stopped
    /// before its hasher got to them).
    pub fn events_missing_hash(&self) -> Result<Vec<Event>, MetaError> {
        let mut out = Vec::new();
        // Published events carry their hash (the uploader hashes what it
        // publishes): only the queue is read, not the whole journal.
        let mut since = self.state(PUBLISHED_THROUGH)?;
        loop {
            let page = self.events_since(since, 4096)?;
            let Some(last) = page.last() else { break };
            since = last.id;
            out.extend(
                page.into_iter()
                    .filter(|e| e.event_type.carries_content() && e.file_hash.is_none()),
            );
        }
        Ok(out)
    }

    /// The newest event for `path`, searching from the end.
    pub fn last_event_for(&self, path: &str) -> Result<Option<Event>, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = match rtx.open_table(EVENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(x) => return Err(e(x.into())),
        };
        for item in t.iter().map_err(|x| e(x.into()))?.rev() {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            let ev: Event =
                serde_json::from_slice(v.value()).map_err(|source| MetaError::Corrupt {
                    table: "events",
                    key: k.value(),
                    source,
                })?;
            if ev.file_path == path || ev.src_path.as_deref() == Some(path) {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    /// Events not yet in the cloud (no `mivui`) with `id > after`, oldest first.
    pub fn unpublished_events(&self, after: u64, limit: usize) -> Result<Vec<Event>, MetaError> {
        let mut out = Vec::new();
        let mut since = after;
        while out.len() < limit {
            let page = self.events_since(since, 4096)?;
            let Some(last) = page.last() else { break };
            since = last.id;
            out.extend(page.into_iter().filter(|e| e.mivui.is_none()));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// A named counter from the `state` table (0 when unset), as committed.
    pub fn state(&self, key: &str) -> Result<u64, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        match rtx.open_table(STATE) {
            Ok(t) => Ok(t
                .get(key)
                .map_err(|x| e(x.into()))?
                .map(|v| v.value())
                .unwrap_or(0)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(x) => Err(e(x.into())),
        }
    }

    /// A `text` value, if set (committed records only: call
    /// `commit_pending` first to see the journal's).
    pub fn text(&self, key: &str) -> Result<Option<String>, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        match rtx.open_table(TEXT) {
            Ok(t) => Ok(t
                .get(key)
                .map_err(|x| e(x.into()))?
                .map(|v| v.value().to_string())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(x) => Err(e(x.into())),
        }
    }

    /// Every `text` value whose key starts with `prefix` (committed
    /// records only), in key order.
    pub fn texts_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = match rtx.open_table(TEXT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(x) => return Err(e(x.into())),
        };
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// The log entry `mivui`, if this node keeps it (committed records).
    pub fn log_entry(&self, mivui: u64) -> Result<Option<LogEntry>, MetaError> {
        Ok(self
            .log_since(mivui.saturating_sub(1), 1)?
            .pop()
            .filter(|e| e.mivui == mivui))
    }

    /// The chunks of a published local version.
    pub fn version_chunks(
        &self,
        object: &str,
    ) -> Result<Option<Vec<crate::event::ChunkRef>>, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = match rtx.open_table(VERSIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(x) => return Err(e(x.into())),
        };
        let Some(v) = t.get(object).map_err(|x| e(x.into()))? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|source| MetaError::Corrupt {
                table: "versions",
                key: 0,
                source,
            })
    }

    /// Log entries with `mivui > after`, oldest first, as committed.
    pub fn log_since(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = match rtx.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(x) => return Err(e(x.into())),
        };
        let mut out = Vec::new();
        for item in t
            .range(after.saturating_add(1)..)
            .map_err(|x| e(x.into()))?
        {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.push(
                serde_json::from_slice(v.value()).map_err(|source| MetaError::Corrupt {
                    table: "log",
                    key: k.value(),
                    source,
                })?,
            );
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every log entry, oldest first (committed ones; see `log_since`).
    pub fn whole_log(&self) -> Result<Vec<LogEntry>, MetaError> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.log_since(after, 4096)?;
            let Some(last) = page.last() else { break };
            after = last.mivui;
            out.extend(page);
        }
        Ok(out)
    }

    /// Events with `id > since`, oldest first, as committed in the database.
    /// Call `commit_pending` first to include journaled ones.
    pub fn events_since(&self, since: u64, limit: usize) -> Result<Vec<Event>, MetaError> {
        let e = db_err(&self.db_path);
        let rtx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = match rtx.open_table(EVENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(x) => return Err(e(x.into())),
        };
        let mut out = Vec::new();
        for item in t
            .range(since.saturating_add(1)..)
            .map_err(|x| e(x.into()))?
        {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            let ev: Event =
                serde_json::from_slice(v.value()).map_err(|source| MetaError::Corrupt {
                    table: "events",
                    key: k.value(),
                    source,
                })?;
            out.push(ev);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

struct Tables<'t> {
    inodes: redb::Table<'t, u64, &'static [u8]>,
    events: redb::Table<'t, u64, &'static [u8]>,
    state: redb::Table<'t, &'static str, u64>,
    versions: redb::Table<'t, &'static str, &'static [u8]>,
    remote: redb::Table<'t, u64, &'static [u8]>,
    log: redb::Table<'t, u64, &'static [u8]>,
    text: redb::Table<'t, &'static str, &'static str>,
}

enum ApplyError {
    Db(redb::Error),
    Corrupt(MetaError),
}

impl<T: Into<redb::Error>> From<T> for ApplyError {
    fn from(e: T) -> Self {
        ApplyError::Db(e.into())
    }
}

impl Tables<'_> {
    fn apply(&mut self, rec: &Record) -> Result<(), ApplyError> {
        match rec {
            Record::PutInode(row) => {
                let v = serde_json::to_vec(row).expect("rows serialise");
                self.inodes.insert(row.ino, v.as_slice())?;
            }
            Record::DelInode(ino) => {
                self.inodes.remove(*ino)?;
            }
            Record::PutEvent(ev) => {
                let v = serde_json::to_vec(ev).expect("events serialise");
                self.events.insert(ev.id, v.as_slice())?;
            }
            Record::SetEventHash { id, hash } => {
                self.update_event(*id, |ev| ev.file_hash = Some(hash.clone()))?;
            }
            Record::Published {
                id,
                mivui,
                object,
                chunks,
            } => {
                self.update_event(*id, |ev| ev.mivui = Some(*mivui))?;
                if let Some(o) = object {
                    let v = serde_json::to_vec(chunks).expect("chunk lists serialise");
                    self.versions.insert(o.as_str(), v.as_slice())?;
                }
            }
            Record::SetState { key, value } => {
                self.state.insert(key.as_str(), *value)?;
            }
            Record::PutRemote(row) => {
                let v = serde_json::to_vec(row).expect("rows serialise");
                self.remote.insert(row.rid, v.as_slice())?;
            }
            Record::DelRemote(rid) => {
                self.remote.remove(*rid)?;
            }
            Record::PutVersion { object, chunks } => {
                let v = serde_json::to_vec(chunks).expect("chunk lists serialise");
                self.versions.insert(object.as_str(), v.as_slice())?;
            }
            Record::PutLog(entry) => {
                let v = serde_json::to_vec(entry).expect("log entries serialise");
                self.log.insert(entry.mivui, v.as_slice())?;
            }
            Record::DelLog(mivui) => {
                self.log.remove(*mivui)?;
            }
            Record::SetText { key, value } => {
                self.text.insert(key.as_str(), value.as_str())?;
            }
        }
        Ok(())
    }

    fn update_event(&mut self, id: u64, f: impl FnOnce(&mut Event)) -> Result<(), ApplyError> {
        let Some(bytes) = self.events.get(id)?.map(|v| v.value().to_vec()) else {
            return Ok(());
        };
        let mut ev: Event = serde_json::from_slice(&bytes).map_err(|source| {
            ApplyError::Corrupt(MetaError::Corrupt {
                table: "events",
                key: id,
                source,
            })
        })?;
        f(&mut ev);
        let v = serde_json::to_vec(&ev).expect("events serialise");
        self.events.insert(id, v.as_slice())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Result<Meta, MetaError> {
        let store = Arc::new(ContentStore::open(dir.join("objects")).unwrap());
        Meta::open(&dir.join("db"), &dir.join("wal"), store).map(|(m, _)| m)
    }

    fn set_mark(path: &Path, value: Option<u64>) {
        let db = Database::create(path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(STATE).unwrap();
            match value {
                Some(v) => t.insert(DB_FORMAT_KEY, v).map(drop).unwrap(),
                None => t.remove(DB_FORMAT_KEY).map(drop).unwrap(),
            }
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_new_database_is_marked_and_an_unmarked_one_is_format_1_until_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        let db = dir.path().join("db");
        assert_eq!(db_format(&db).unwrap(), u64::from(DB_FORMAT));
        set_mark(&db, None);
        drop(open(dir.path()).unwrap()); // format 1 still opens, unmarked
        assert_eq!(db_format(&db).unwrap(), 0);
        mark_db_format(&db).unwrap();
        assert_eq!(db_format(&db).unwrap(), u64::from(DB_FORMAT));
    }

    #[test]
    fn a_newer_database_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        let db = dir.path().join("db");
        set_mark(&db, Some(99));
        let wal_before = std::fs::read(dir.path().join("wal")).unwrap();
        let err = open(dir.path()).err().expect("a newer database opened");
        assert!(matches!(err, MetaError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer latus (database format 99)"));
        assert!(mark_db_format(&db).is_err());
        // The mark is as the newer latus left it, the journal untouched
        // (redb's own header may change on open: it is not latus data).
        let reopened = Database::create(&db).unwrap();
        let rtx = reopened.begin_read().unwrap();
        let mark = rtx.open_table(STATE).unwrap().get(DB_FORMAT_KEY).unwrap();
        assert_eq!(mark.map(|v| v.value()), Some(99));
        assert!(std::fs::read(dir.path().join("wal")).unwrap() == wal_before);
    }
}
