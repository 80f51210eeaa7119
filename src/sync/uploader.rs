//! The uploader: publishes journaled events to the volume, oldest first.
//!
//! Each batch goes in two phases: (1) the chunks of every version in the
//! batch are chunked, named, sealed and stored, in parallel with bounded
//! memory, skipping chunks the store already holds; (2) the sealed events
//! are appended to the log in journal order. No event is appended before
//! its chunks are stored; the next batch's chunks are stored while a
//! batch's events are appended.
//!
//! Crash safety: chunks are content-addressed (a re-run finds them with
//! `exists` and skips them); an event appended just before a crash is found
//! again when the uploader reads its own records back from the log at start
//! (the payload carries the local id), so it is never appended twice.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use super::chain::{Breach, Guard};
use super::checkpoint::{self, CheckpointError, Snapshot};
use super::chunker::for_each_chunk;
use super::engine::{Engine, RemoteRecord};
use super::history::plan_prune;
use super::payload::{EpochGrant, INLINE_CHUNKS, PublishedEvent};
use super::volume::{Volume, VolumeError, VolumeHandle};
use crate::cloud::CloudError;
use crate::crypto::{Keys, NodeSigner};
use crate::event::{ChunkRef, Event, EventType};
use crate::home::{Config, Retention};
use crate::locks::{Condvar, Mutex, MutexGuard, lock};
use crate::log_budget::LogBudget;
use crate::meta::{
    CHECKPOINT_SEEN, HISTORY_FROM, LOG_SEEN, Meta, MetaError, PUBLISHED_THROUGH, Record,
};
use crate::store::ContentStore;
use crate::vfs::{Vfs, VfsError};

const BATCH_EVENTS: usize = 256;
/// Requests in flight at once: many small chunks are bound by round
/// trips, not bytes.
const UPLOAD_WORKERS: usize = 16;
/// Chunks waiting between the chunker and the upload workers.
const CHUNK_QUEUE: usize = 8;
/// Plaintext bytes chunked and not yet stored (bounds memory when chunks
/// are large: about sixteen average chunks).
const IN_FLIGHT_BYTES: usize = 16 << 20;
const LOG_PAGE: usize = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long new work waits for more before a pass starts.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often an idle node says in the log that it is there (a `node`
/// record), so `nodes` shows when each node was last in contact.
pub const HEARTBEAT: Duration = Duration::from_secs(600);

struct Bell {
    rung: bool,
    urgent: bool,
    stop: bool,
}

#[derive(Debug, Error)]
pub enum UploadError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Vfs(#[from] VfsError),
    #[error("reading local content of {path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    /// The pass that was waited for failed (its error, as status shows it).
    #[error("{0}")]
    PassFailed(String),
    #[error(
        "timed out after {secs}s with {pending} events still to publish{}",
        last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    TimedOut {
        secs: u64,
        pending: u64,
        last_error: Option<String>,
    },
    #[error("stopped after a failed delete: {0}")]
    PruneStopped(CloudError),
    /// The log is not what the nodes wrote (see `chain`): nothing more is
    /// applied or published until it is.
    #[error("the volume's log cannot be trusted: {0}")]
    Breach(Breach),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "this node joined from a checkpoint at record {0} and does not know the history before it, which may share content with what prune would remove: prune on a node that read the whole log"
    )]
    HistoryFromCheckpoint(u64),
    #[error(
        "this node's own place in the log is not known yet (its last append went unanswered); try again after the next sync pass"
    )]
    OwnSeqUnknown,
    #[error("cold storage: {0}")]
    Cold(#[from] super::ColdError),
}

impl From<std::io::Error> for UploadError {
    fn from(source: std::io::Error) -> Self {
        UploadError::Local {
            path: "?".into(),
            source,
        }
    }
}

impl UploadError {
    pub fn is_retryable(&self) -> bool {
        match self {
            UploadError::Cloud(e) => e.is_retryable(),
            UploadError::Volume(VolumeError::Cloud(e)) => e.is_retryable(),
            UploadError::Checkpoint(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Opens a page of log records on every core (checking signatures is
/// most of what applying costs); the log guard then takes them in order.
fn open_page(
    volume: &Volume,
    page: &[crate::cloud::LogRecord],
) -> Vec<Result<PublishedEvent, crate::crypto::CryptoError>> {
    let open = |rec: &crate::cloud::LogRecord| {
        let aad = volume.event_aad(rec.originator);
        PublishedEvent::open_record(&volume.keys, &aad, rec.originator, &rec.payload)
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if workers < 2 || page.len() < 64 {
        return page.iter().map(open).collect();
    }
    let per = page.len().div_ceil(workers);
    std::thread::scope(|s| {
        let parts: Vec<_> = page
            .chunks(per)
            .map(|c| s.spawn(move || c.iter().map(open).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// What `latus status` shows of the upload queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UploaderStatus {
    pub pending_events: u64,
    pub pending_files: u64,
    pub pending_bytes: u64,
    pub published_events: u64,
    pub uploaded_chunks: u64,
    pub uploaded_bytes: u64,
    pub deduplicated_chunks: u64,
    pub log_seen: u64,
    /// The newest checkpoint of the log this node knows of (made or read;
    /// 0: none), and the one it started from (0: it read the whole log,
    /// and its history goes back to the start).
    pub checkpoint: u64,
    pub history_from: u64,
    /// Other nodes' events applied here, conflicts kept as copies, and log
    /// records refused (unsafe paths, records that do not open).
    pub remote_applied: u64,
    pub conflicts: u64,
    pub refused_events: u64,
    /// Why the log cannot be trusted, if a check failed (`chain`): the
    /// node stops applying and publishing, and keeps serving its files.
    pub log_breach: Option<String>,
    /// What the last `latus check` found missing or damaged in the cloud
    /// (kept until a check finds none): content is then not safely there.
    pub cloud_damage: Option<String>,
    pub cloud_reachable: Option<bool>,
    /// Since when (Unix seconds) the cloud has not answered, while it does
    /// not: with `last_error`, what `status` and `sync --wait` say.
    pub unreachable_since: Option<i64>,
    pub last_error: Option<String>,
    /// Started and completed passes (a pass publishes everything pending,
    /// or fails); passes run one at a time.
    #[serde(skip)]
    started: u64,
    #[serde(skip)]
    passes: u64,
    #[serde(skip)]
    last_pass_failed: bool,
}

/// Where what `latus check` found wrong stays (empty: nothing).
const CLOUD_DAMAGE: &str = "check:cloud_damage";

/// Lines about records refused or not opening (a flood stays a few lines).
static REFUSED_RECORDS: LogBudget = LogBudget::new("refused log records", 20);

/// This node's last sequence number in the log (`chain`). Unknown from
/// start, and after an append whose answer was lost, until a pass has read
/// the log: a number is never used twice.
#[derive(Debug, Clone, Copy)]
enum OwnSeq {
    Known(u64),
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Own {
    seq: OwnSeq,
    /// Appends attempted so far: a read of the log that overlapped one
    /// cannot tell whether it landed.
    appends: u64,
}

struct Inner {
    vfs: Arc<Vfs>,
    engine: Arc<Engine>,
    /// The log as this node read it (loaded again when the cursor moved
    /// without it, after a failed apply).
    guard: Mutex<Option<Guard>>,
    /// Held across sealing and appending, so this node's records are
    /// numbered in the order they land.
    own: Mutex<Own>,
    meta: Arc<Meta>,
    store: Arc<ContentStore>,
    config: Config,
    /// Signs this node's records (`home::node_signer`).
    signer: NodeSigner,
    volume: Arc<VolumeHandle>,
    /// Chunk names known to be in the store (this run).
    known: Mutex<HashSet<String>>,
    /// When this run last announced the node in the log (`Vfs::now`, 0:
    /// not yet): again every `HEARTBEAT`, so other nodes see it is there.
    greeted: std::sync::atomic::AtomicI64,
    status: Mutex<UploaderStatus>,
    progress: Condvar,
    bell: Mutex<Bell>,
    ring: Condvar,
    /// Held by a pass and by `checkpoint`: a checkpoint sees the remote
    /// tree and the cursor of one moment, between pages of the log.
    passing: Mutex<()>,
    /// A checkpoint that was refused is not tried again this run.
    checkpoint_refused: std::sync::atomic::AtomicBool,
    /// Keeps chunks in the tier their versions need (after each pass).
    cooler: Arc<super::Cooler>,
    /// The cooler's last failure, logged once until it changes.
    cold_error: Mutex<Option<String>>,
}

pub struct Uploader {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Uploader {
    /// Starts publishing in a background thread.
    pub fn start(
        vfs: Arc<Vfs>,
        engine: Arc<Engine>,
        meta: Arc<Meta>,
        store: Arc<ContentStore>,
        config: Config,
        signer: NodeSigner,
        volume: Arc<VolumeHandle>,
    ) -> Self {
        let uploader = Self::manual(vfs, engine, meta, store, config, signer, volume);
        let runner = uploader.inner.clone();
        let thread = std::thread::Builder::new()
            .name("latus-uploader".into())
            .spawn(move || runner.run())
            .expect("spawn uploader thread");
        *lock(&uploader.thread) = Some(thread);
        uploader
    }

    /// An uploader without its thread: passes run only when `step` is
    /// called (the deterministic simulation drives it).
    pub fn manual(
        vfs: Arc<Vfs>,
        engine: Arc<Engine>,
        meta: Arc<Meta>,
        store: Arc<ContentStore>,
        config: Config,
        signer: NodeSigner,
        volume: Arc<VolumeHandle>,
    ) -> Self {
        let cloud_damage = meta
            .text(CLOUD_DAMAGE)
            .ok()
            .flatten()
            .filter(|s| !s.is_empty());
        let cooler = Arc::new(super::Cooler::new(
            vfs.clone(),
            engine.clone(),
            meta.clone(),
            volume.clone(),
            config.retention.clone(),
        ));
        let checkpoint = meta.state(CHECKPOINT_SEEN).unwrap_or(0);
        let history_from = meta.state(HISTORY_FROM).unwrap_or(0);
        let inner = Arc::new(Inner {
            passing: Mutex::new(()),
            checkpoint_refused: std::sync::atomic::AtomicBool::new(false),
            cooler,
            cold_error: Mutex::new(None),
            vfs: vfs.clone(),
            engine,
            guard: Mutex::new(None),
            own: Mutex::new(Own {
                seq: OwnSeq::Unknown,
                appends: 0,
            }),
            meta,
            store,
            config,
            signer,
            volume,
            known: Mutex::new(HashSet::new()),
            greeted: std::sync::atomic::AtomicI64::new(0),
            status: Mutex::new(UploaderStatus {
                cloud_damage,
                checkpoint,
                history_from,
                ..Default::default()
            }),
            progress: Condvar::new(),
            bell: Mutex::new(Bell {
                rung: true,
                urgent: true,
                stop: false,
            }),
            ring: Condvar::new(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        vfs.set_event_listener(move || {
            if let Some(i) = weak.upgrade() {
                i.ring_bell(false);
            }
        });
        Self {
            inner,
            thread: Mutex::new(None),
        }
    }

    /// Runs one pass in the calling thread (pull, push, pull), with its
    /// outcome in the status as the background thread records it.
    pub fn step(&self) -> Result<(), UploadError> {
        self.inner.recorded_pass()
    }

    /// Reads the log to its end and applies it, publishing nothing (`latus
    /// repair` catching a rebuilt or restored database up).
    pub fn catch_up(&self) -> Result<UploaderStatus, UploadError> {
        let inner = &self.inner;
        inner.meta.commit_pending()?;
        let volume = inner.volume()?;
        inner.read_log(&volume)?;
        inner.meta.commit_pending()?;
        Ok(self.status())
    }

    /// The cooler (`latus cold`, `thaw`, tiers in `status`).
    pub fn cooler(&self) -> &Arc<super::Cooler> {
        &self.inner.cooler
    }

    pub fn status(&self) -> UploaderStatus {
        lock(&self.inner.status).clone()
    }

    /// Returns once everything journaled before the call is in the cloud
    /// and the log has been read to its end; fails with the reason when
    /// the cloud cannot be reached.
    pub fn wait_idle(&self, timeout: Duration) -> Result<UploaderStatus, UploadError> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.status);
        // Only a pass that starts after this call has seen everything
        // journaled before it.
        let mut target = st.started + 1;
        drop(st);
        self.inner.ring_bell(true);
        st = lock(&self.inner.status);
        loop {
            if st.passes >= target {
                if st.last_pass_failed {
                    return Err(UploadError::PassFailed(
                        st.last_error
                            .clone()
                            .unwrap_or_else(|| "upload failed".into()),
                    ));
                }
                if st.pending_events == 0 {
                    return Ok(st.clone());
                }
                target = st.started + 1;
                drop(st);
                self.inner.ring_bell(true);
                st = lock(&self.inner.status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(UploadError::TimedOut {
                    secs: timeout.as_secs(),
                    pending: st.pending_events,
                    last_error: st.last_error.clone(),
                });
            }
            st = self
                .inner
                .progress
                .wait_timeout(st, deadline - now)
                .expect("lock poisoned")
                .0;
        }
    }

    /// Removes node `id` (its files stay): one record that revokes it and
    /// starts a new key epoch, whose key is wrapped for every other node
    /// whose box key the log holds. Returns the record's number and the
    /// nodes that could not be given the new key (they never published
    /// since signatures: they need a new key file).
    pub fn forget_node(&self, id: uuid::Uuid) -> Result<(u64, Vec<uuid::Uuid>), UploadError> {
        let i = &self.inner;
        let volume = i.volume()?;
        i.meta.commit_pending()?;
        let me = i.config.node_id;
        let mut master = [0u8; crate::crypto::KEY_LEN];
        getrandom::fill(&mut master).map_err(|e| UploadError::Local {
            path: "a new key epoch".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut wraps = std::collections::BTreeMap::new();
        let mut left_out = Vec::new();
        for n in super::nodes(&i.meta.whole_log()?, me) {
            if n.id == id {
                continue;
            }
            let box_key = if n.id == me {
                Some(i.signer.box_public_hex())
            } else {
                super::chain::box_key(&i.meta, n.id)
            };
            match box_key.map(|b| crate::crypto::wrap_epoch(&master, &b)) {
                Some(Ok(wrapped)) => {
                    wraps.insert(n.id, wrapped);
                }
                _ => left_out.push(n.id),
            }
        }
        wraps.entry(me).or_insert(
            crate::crypto::wrap_epoch(&master, &i.signer.box_public_hex()).map_err(|e| {
                UploadError::Local {
                    path: "a new key epoch".into(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?,
        );
        let m = i.append_node_record(
            &volume,
            EventType::ForgetNode,
            id.to_string(),
            Vec::new(),
            Some(EpochGrant { wraps }),
        )?;
        self.wait_log_seen(m);
        Ok((m, left_out))
    }

    /// Waits (a little) until the log is read up to `mivui`, so a command
    /// sees its own record's effect.
    fn wait_log_seen(&self, mivui: u64) {
        self.inner.ring_bell(true);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut st = lock(&self.inner.status);
        while st.log_seen < mivui {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .inner
                .progress
                .wait_timeout(st, deadline - now)
                .expect("lock poisoned")
                .0;
        }
    }

    /// Removes the versions `rule` no longer keeps, and the cloud objects
    /// only they use.
    pub fn prune(&self, rule: &Retention, dry_run: bool) -> Result<PruneReport, UploadError> {
        let i = &self.inner;
        let volume = i.volume()?;
        i.meta.commit_pending()?;
        // Its history starts at a checkpoint: versions from before it that
        // other files still keep may share chunks it would delete.
        let from = i.meta.state(HISTORY_FROM)?;
        if from > 0 {
            return Err(UploadError::HistoryFromCheckpoint(from));
        }
        let log = i.meta.whole_log()?;
        let live = i.engine.live_objects();
        let chunks_of = |o: &str| i.meta.version_chunks(o).ok().flatten();
        let plan = plan_prune(&log, &chunks_of, &live, rule, self.inner.vfs.now());
        let mut report = PruneReport {
            versions: plan.versions.len() as u64,
            objects: plan.chunks.len() as u64,
            bytes: plan.bytes,
            dry_run,
            cold: None,
        };
        if dry_run {
            return Ok(report);
        }
        for name in &plan.chunks {
            lock(&i.known).remove(name);
            volume
                .cloud
                .objects
                .delete(name)
                .map_err(UploadError::PruneStopped)?;
        }
        // Every node drops the versions from its history when it reads this.
        let m = i.append_node_record(
            &volume,
            EventType::Prune,
            String::new(),
            plan.versions.clone(),
            None,
        )?;
        self.wait_log_seen(m);
        report.dry_run = false;
        if rule.cold_after_days.is_some() {
            report.cold = Some(i.cooler.pass()?);
        }
        Ok(report)
    }

    /// Makes a checkpoint of the log as this node has read it, now
    /// (`latus log checkpoint`), after reading the log to its end.
    pub fn checkpoint(&self) -> Result<checkpoint::Made, UploadError> {
        let i = &self.inner;
        let volume = i.volume()?;
        let _passing = lock(&i.passing);
        // (The cursor as journaled, not only as committed.)
        i.meta.commit_pending()?;
        i.read_log(&volume)?;
        if let Some(b) = lock(&i.status).log_breach.clone() {
            return Err(UploadError::PassFailed(b));
        }
        i.write_checkpoint(&volume)
    }

    /// The volume against its log (`latus check`).
    /// Checks the volume (`sync::check`); what it finds missing or
    /// damaged stays in `status` (across restarts) until a check finds
    /// the cloud whole again.
    pub fn check(&self, read_data: bool) -> Result<super::CheckReport, UploadError> {
        let volume = self.inner.volume()?;
        self.inner.meta.commit_pending()?;
        let report = super::check(&self.inner.meta, &volume, read_data).map_err(|e| match e {
            super::CheckError::Cloud(e) => UploadError::Cloud(e),
            super::CheckError::Meta(e) => UploadError::Meta(e),
        })?;
        let damage = (report.chunks_missing + report.chunks_damaged > 0).then(|| {
            format!(
                "latus check at {} found {} chunks missing and {} damaged in the cloud: \
                 the versions that need them are not safely there",
                crate::sync::names::utc_text(crate::home::unix_now_secs()),
                report.chunks_missing,
                report.chunks_damaged
            )
        });
        self.inner.meta.append(&[Record::SetText {
            key: CLOUD_DAMAGE.into(),
            value: damage.clone().unwrap_or_default(),
        }])?;
        lock(&self.inner.status).cloud_damage = damage;
        Ok(report)
    }

    pub fn stop(&self) {
        {
            let mut b = lock(&self.inner.bell);
            b.stop = true;
        }
        self.inner.ring.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    /// A stop was asked for: finish the event at hand, start nothing new.
    fn stopping(&self) -> bool {
        lock(&self.bell).stop
    }

    /// New work. Not urgent: wait `DEBOUNCE` for more, so a burst of
    /// closes becomes one batch and one durable commit.
    fn ring_bell(&self, urgent: bool) {
        let mut b = lock(&self.bell);
        b.rung = true;
        b.urgent |= urgent;
        drop(b);
        self.ring.notify_all();
    }

    fn run(&self) {
        let mut backoff = Duration::from_secs(1);
        let mut wait = Duration::ZERO;
        loop {
            {
                let mut b = lock(&self.bell);
                if !b.rung && !b.stop {
                    b = self.ring.wait_timeout(b, wait).expect("lock poisoned").0;
                }
                let until = Instant::now() + DEBOUNCE;
                while b.rung && !b.urgent && !b.stop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    b = self
                        .ring
                        .wait_timeout(b, until - now)
                        .expect("lock poisoned")
                        .0;
                }
                if b.stop {
                    return;
                }
                b.rung = false;
                b.urgent = false;
            }
            match self.recorded_pass() {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    wait = Duration::from_millis(self.config.poll_ms.max(50));
                    self.cool();
                }
                Err(e) => {
                    if e.is_retryable() {
                        tracing::warn!(error = %e, retry_in = ?backoff, "upload paused: the cloud is not answering");
                    } else {
                        tracing::error!(error = %e, "upload failed; retrying later");
                    }
                    wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// New versions below cold rules, and history past `cold_after_days`,
    /// go cold; chunks hot files use come back.
    fn cool(&self) {
        if !self.cooler.due() {
            return;
        }
        match self.cooler.pass() {
            Ok(r) => {
                *lock(&self.cold_error) = None;
                if r.chunks_cooled + r.chunks_warmed + r.files_freed > 0 {
                    tracing::info!(
                        chunks_cooled = r.chunks_cooled,
                        chunks_warmed = r.chunks_warmed,
                        files_freed = r.files_freed,
                        "cold storage: chunks moved between tiers"
                    );
                }
            }
            Err(e) => {
                // Tried again after the next pass (or, when waiting cannot
                // help, after the next change); said once per reason.
                if e.is_retryable() {
                    self.vfs.mark_cold_dirty();
                }
                let said = e.to_string();
                let mut last = lock(&self.cold_error);
                if last.as_deref() != Some(said.as_str()) {
                    tracing::warn!(error = %said, "cold storage: chunks could not be moved now");
                    *last = Some(said);
                }
            }
        }
    }

    /// One pass, counted and with its outcome in the status.
    fn recorded_pass(&self) -> Result<(), UploadError> {
        lock(&self.status).started += 1;
        let result = self.pass();
        let mut st = lock(&self.status);
        st.passes += 1;
        match &result {
            Ok(()) => {
                st.last_pass_failed = false;
                st.last_error = None;
                st.cloud_reachable = Some(true);
                st.unreachable_since = None;
            }
            Err(e) => {
                if e.is_retryable() {
                    st.cloud_reachable = Some(false);
                    st.unreachable_since
                        .get_or_insert(self.vfs.now().div_euclid(1_000_000_000));
                }
                st.last_pass_failed = true;
                st.last_error = Some(e.to_string());
            }
        }
        drop(st);
        self.progress.notify_all();
        result
    }

    fn volume(&self) -> Result<Arc<Volume>, UploadError> {
        Ok(self.volume.get()?)
    }

    /// Publishes everything pending, then reads the log to its end.
    fn pass(&self) -> Result<(), UploadError> {
        let _passing = lock(&self.passing);
        self.meta.commit_pending()?;
        // Counted before the cloud is reached, so status shows the queue
        // of a node that is offline.
        self.refresh_pending(self.meta.state(PUBLISHED_THROUGH)?)?;
        let volume = self.volume()?;
        // Another node may have pruned chunks since: check again.
        lock(&self.known).clear();
        // Pull first: conflicts are settled before this node's changes go.
        self.read_log(&volume)?;
        self.meta.commit_pending()?;
        let now = self.vfs.now();
        let last = self.greeted.load(Ordering::Acquire);
        if last == 0 || now.saturating_sub(last) >= HEARTBEAT.as_nanos() as i64 {
            self.say_hello(&volume)?;
            self.greeted.store(now.max(1), Ordering::Release);
        }
        // Batches overlap: the next batch's chunks are stored while this
        // one's events are appended (chunks first holds per batch).
        let mut pushed = false;
        let (mut batch, mut contents) =
            self.stored_batch(&volume, self.meta.state(PUBLISHED_THROUGH)?)?;
        while !batch.is_empty() && !self.stopping() {
            let started = Instant::now();
            let events = batch.len();
            let last = batch.last().map_or(0, |e| e.id);
            let (appended, next) = std::thread::scope(|s| {
                let appending = s.spawn(|| {
                    self.append_in_order(&volume, batch, contents)?;
                    self.meta.commit_pending()?;
                    Ok::<_, UploadError>(started.elapsed())
                });
                let next = self.stored_batch(&volume, last);
                let appended = appending
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (appended, next)
            });
            let appended = appended?;
            tracing::debug!(
                events,
                append_ms = appended.as_millis() as u64,
                "batch published"
            );
            pushed = true;
            (batch, contents) = next?;
        }
        if pushed {
            // Reading its own records back confirms them (see `engine`).
            self.read_log(&volume)?;
        }
        self.checkpoint_if_due(&volume)?;
        Ok(())
    }

    /// The next batch of unpublished events after event `after`, with its
    /// chunks in the store (empty when there is none or the node stops).
    fn stored_batch(
        &self,
        volume: &Volume,
        after: u64,
    ) -> Result<(Vec<Event>, Vec<Option<Content>>), UploadError> {
        let batch = self.meta.unpublished_events(after, BATCH_EVENTS)?;
        if batch.is_empty() || self.stopping() {
            return Ok((Vec::new(), Vec::new()));
        }
        let contents = self.upload_contents(volume, &batch)?;
        Ok((batch, contents))
    }

    fn refresh_pending(&self, after: u64) -> Result<(), UploadError> {
        let pending = self.meta.unpublished_events(after, usize::MAX)?;
        let mut st = lock(&self.status);
        st.pending_events = pending.len() as u64;
        let files = pending.iter().filter(|e| e.event_type.carries_content());
        st.pending_files = files.clone().count() as u64;
        st.pending_bytes = files.map(|e| e.size).sum();
        Ok(())
    }

    /// Phase 1: every chunk of every version in the batch is in the store.
    /// One thread reads, chunks and hashes versions in order; the workers
    /// name, seal and store chunks. Returns, per event, its chunk list and
    /// content hash (`None` for events without content).
    fn upload_contents(
        &self,
        volume: &Volume,
        batch: &[Event],
    ) -> Result<Vec<Option<Content>>, UploadError> {
        let (tx, rx) = sync_channel::<ChunkJob>(CHUNK_QUEUE);
        let rx = Mutex::new(rx);
        let in_flight = InFlight::new();
        let failure: Mutex<Option<CloudError>> = Mutex::new(None);
        let names: Mutex<Vec<Vec<Option<ChunkRef>>>> = Mutex::new(vec![Vec::new(); batch.len()]);
        let scanned = std::thread::scope(|s| {
            for _ in 0..UPLOAD_WORKERS {
                s.spawn(|| {
                    loop {
                        let job = lock(&rx).recv();
                        let Ok(job) = job else { return };
                        if lock(&failure).is_some() {
                            in_flight.give_back(job.data.len());
                            continue; // drain
                        }
                        let name = volume.keys.chunk_name(&job.data);
                        {
                            let mut n = lock(&names);
                            let slots = &mut n[job.event];
                            if slots.len() <= job.index {
                                slots.resize(job.index + 1, None);
                            }
                            slots[job.index] = Some(ChunkRef {
                                name: name.clone(),
                                size: job.data.len() as u64,
                            });
                        }
                        if let Err(e) = self.store_chunk(volume, &name, &job.data) {
                            lock(&failure).get_or_insert(e);
                        }
                        in_flight.give_back(job.data.len());
                    }
                });
            }
            let mut out = Vec::with_capacity(batch.len());
            let mut result = Ok(());
            for (e, ev) in batch.iter().enumerate() {
                if result.is_err() || lock(&failure).is_some() || self.stopping() {
                    break;
                }
                match self.chunk_event(e, ev, volume.keys.chunker_seed(), &tx, &in_flight) {
                    Ok(c) => out.push(c),
                    Err(err) => result = Err(err),
                }
            }
            drop(tx);
            result.map(|()| out)
        })?;
        if let Some(e) = failure.into_inner().expect("lock poisoned") {
            return Err(e.into());
        }
        let mut names = names.into_inner().expect("lock poisoned");
        Ok(scanned
            .into_iter()
            .enumerate()
            .map(|(e, scan)| {
                scan.map(|s| Content {
                    chunks: s.premade.or_else(|| {
                        s.complete.then(|| {
                            std::mem::take(&mut names[e])
                                .into_iter()
                                .map(|c| c.expect("every chunk named"))
                                .collect()
                        })
                    }),
                    hash: s.hash,
                })
            })
            .collect())
    }

    /// Reads one version and hands its chunks to the workers.
    fn chunk_event(
        &self,
        index: usize,
        ev: &Event,
        seed: u64,
        tx: &std::sync::mpsc::SyncSender<ChunkJob>,
        in_flight: &InFlight,
    ) -> Result<Option<Scan>, UploadError> {
        if !ev.event_type.carries_content() {
            return Ok(None);
        }
        let Some(object) = &ev.object else {
            return Ok(Some(Scan {
                complete: true,
                hash: None,
                premade: None,
            }));
        };
        let file = match self.store.open_object(object) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => {
                // A version brought by the log (a conflict copy, a restore):
                // its chunks are in the cloud already.
                self.meta.commit_pending()?;
                if let Some(chunks) = self.meta.version_chunks(object)? {
                    return Ok(Some(Scan {
                        complete: true,
                        hash: ev.file_hash.clone(),
                        premade: Some(chunks),
                    }));
                }
                tracing::error!(path = %ev.file_path, event = ev.id, error = %e, "local content of a version is gone before upload; publishing the event without it");
                return Ok(Some(Scan {
                    complete: false,
                    hash: None,
                    premade: None,
                }));
            }
            Err(e) => {
                tracing::error!(path = %ev.file_path, event = ev.id, error = %e, "local content of a version is gone before upload; publishing the event without it");
                return Ok(Some(Scan {
                    complete: false,
                    hash: None,
                    premade: None,
                }));
            }
        };
        let mut chunk = 0;
        let hash = for_each_chunk::<UploadError>(&file, ev.size, seed, |_, data| {
            // A closed channel means a worker failed; the failure is reported.
            in_flight.take(data.len());
            let len = data.len();
            if tx
                .send(ChunkJob {
                    event: index,
                    index: chunk,
                    data,
                })
                .is_err()
            {
                in_flight.give_back(len);
            }
            chunk += 1;
            Ok(())
        })
        .map_err(|e| match e {
            UploadError::Local { source, .. } => UploadError::Local {
                path: ev.file_path.clone(),
                source,
            },
            other => other,
        })?;
        Ok(Some(Scan {
            complete: true,
            hash: Some(hash),
            premade: None,
        }))
    }

    fn store_chunk(&self, volume: &Volume, name: &str, data: &[u8]) -> Result<(), CloudError> {
        if !lock(&self.known).insert(name.to_string()) {
            lock(&self.status).deduplicated_chunks += 1;
            return Ok(());
        }
        let result = (|| {
            // Taken as there only with the length it must have: a local
            // copy may later be evicted on the strength of it. A chunk in a
            // cold tier that cannot be read now is stored hot again (a new
            // version must read at once; the cooler moves it back if only
            // cold versions use it).
            match volume.cloud.objects.stat(name)? {
                Some(s) if Keys::is_sealed_chunk_len(data.len(), s.size) && s.tier.readable() => {
                    lock(&self.status).deduplicated_chunks += 1;
                    return Ok(());
                }
                Some(s) if !s.tier.readable() => {}
                Some(crate::cloud::ObjectStat { size: n, .. }) => tracing::warn!(
                    object = name,
                    stored = n,
                    "the cloud holds this chunk with a wrong length: uploading it again"
                ),
                None => {}
            }
            let sealed = volume.keys.seal_chunk(name, data);
            volume.cloud.objects.put(name, &sealed)?;
            let mut st = lock(&self.status);
            st.uploaded_chunks += 1;
            st.uploaded_bytes += sealed.len() as u64;
            Ok(())
        })();
        if result.is_err() {
            lock(&self.known).remove(name);
        }
        result
    }

    /// Phase 2: the events, sealed, appended in journal order in one batch
    /// (atomic per backend transaction). After a failure the next pass
    /// first reads this node's records back, so nothing is appended twice.
    fn append_in_order(
        &self,
        volume: &Volume,
        batch: Vec<Event>,
        contents: Vec<Option<Content>>,
    ) -> Result<(), UploadError> {
        let mut payloads = Vec::with_capacity(contents.len());
        let mut ready = Vec::with_capacity(contents.len());
        for (mut ev, content) in batch.into_iter().zip(contents) {
            let (chunks, computed) = match content {
                Some(c) => (c.chunks, c.hash),
                None => (None, None),
            };
            let fill_hash = if ev.file_hash.is_none() {
                computed
            } else {
                None
            };
            if let Some(h) = &fill_hash {
                ev.file_hash = Some(h.clone());
            }
            let mut published =
                PublishedEvent::new(ev.clone(), &self.config.node_name, chunks.clone());
            if let Some(list) = chunks.as_ref().filter(|c| c.len() > INLINE_CHUNKS) {
                let json = serde_json::to_vec(list).expect("chunk lists serialise");
                let name = volume.keys.chunk_name(&json);
                self.store_chunk(volume, &name, &json)?;
                published.chunks = None;
                published.chunk_list = Some(name);
            }
            payloads.push(published);
            ready.push((ev, chunks, fill_hash));
        }
        let mivuis = self.append_own(volume, payloads)?;
        for ((ev, chunks, fill_hash), mivui) in ready.into_iter().zip(mivuis) {
            if let Err(e) = self.vfs.published(
                ev.id,
                mivui,
                ev.object.clone(),
                chunks.unwrap_or_default(),
                fill_hash,
            ) {
                // In the log but not marked here: read it back first next time.
                return Err(e.into());
            }
            let mut st = lock(&self.status);
            st.published_events += 1;
            st.pending_events = st.pending_events.saturating_sub(1);
            if ev.event_type.carries_content() {
                st.pending_files = st.pending_files.saturating_sub(1);
                st.pending_bytes = st.pending_bytes.saturating_sub(ev.size);
            }
        }
        Ok(())
    }

    /// Reads the log past `log_seen` and applies it (see `engine`).
    /// Records of this node that the journal does not know as published
    /// (appended just before a crash) are marked published now, so they are
    /// never appended twice. A record that does not open (tampered, or
    /// sealed with another key) is logged and skipped.
    fn read_log(&self, volume: &Volume) -> Result<(), UploadError> {
        let mut seen = self.meta.state(LOG_SEEN)?;
        if seen == 0 {
            seen = self.start_from_checkpoint(volume)?;
        }
        let appends_before = lock(&self.own).appends;
        loop {
            let page = volume.cloud.log.read_after(seen, LOG_PAGE)?;
            if page.is_empty() {
                // Nothing new: changes that waited for a writer or for
                // this node's own events may be due now.
                self.engine.apply_log(Vec::new())?;
                break;
            }
            let full = page.len() >= LOG_PAGE;
            // The journal's own view, once per page (not per record).
            self.meta.commit_pending()?;
            let mut guard = self.guard_at(seen)?;
            let g = guard.as_mut().expect("loaded");
            let mut records = Vec::with_capacity(page.len());
            let mut skipped = Vec::new();
            let mut breach = None;
            let mut admitted = seen;
            let mut pre_opened = open_page(volume, &page).into_iter();
            let mut new_epoch = false;
            for rec in &page {
                let mut opened = pre_opened.next().expect("one per record");
                if opened.is_err() && new_epoch {
                    // Sealed with a key epoch this page brought.
                    let aad = volume.event_aad(rec.originator);
                    opened = PublishedEvent::open_record(
                        &volume.keys,
                        &aad,
                        rec.originator,
                        &rec.payload,
                    );
                }
                let link = opened.as_ref().ok().map(PublishedEvent::link);
                let admitted_rec = match g.admit(
                    &self.meta,
                    &volume.keys,
                    rec.mivui,
                    &rec.originator,
                    &rec.payload,
                    link,
                ) {
                    Ok(state) => state,
                    Err(b) => {
                        breach = Some(b);
                        break;
                    }
                };
                admitted = rec.mivui;
                let state = admitted_rec.state;
                if let Some(refusal) = admitted_rec.refused {
                    lock(&self.status).refused_events += 1;
                    if REFUSED_RECORDS.allow() {
                        tracing::error!("{refusal}; skipped");
                    }
                    skipped.extend(state);
                    continue;
                }
                let p = match opened {
                    Ok(p) => p,
                    Err(e) => {
                        if REFUSED_RECORDS.allow() {
                            tracing::error!(mivui = rec.mivui, node = %rec.originator, error = %e,
                                "a log record does not open (tampered, or sealed with another key); skipped");
                        }
                        lock(&self.status).refused_events += 1;
                        skipped.extend(state);
                        continue;
                    }
                };
                if let Some(grant) = &p.grant {
                    self.take_epoch(grant, rec.mivui)?;
                    new_epoch = true;
                }
                let originator = p.event.originator;
                let chunks = match (&p.chunks, &p.chunk_list) {
                    (Some(c), _) => Some(c.clone()),
                    (None, Some(list)) => match self.fetch_chunk_list(list) {
                        Ok(c) => Some(c),
                        Err(UploadError::Cloud(e)) if e.is_retryable() => return Err(e.into()),
                        Err(e) => {
                            tracing::error!(mivui = rec.mivui, error = %e, "the chunk list of a version is unusable; its content cannot be fetched");
                            None
                        }
                    },
                    (None, None) => None,
                };
                let (own_known, own_object) = if originator == self.config.node_id {
                    self.absorb_own(&p, rec.mivui, chunks.clone())?
                } else {
                    (false, None)
                };
                records.push(RemoteRecord {
                    pruned: p.pruned,
                    mivui: rec.mivui,
                    originator,
                    node_name: p.node_name,
                    local_id: p.local_id,
                    event: p.event,
                    chunks,
                    own_object,
                    own_known,
                    guard: state,
                });
            }
            drop(guard);
            // Heads of records that did not open (keyed by number: writing
            // one again after a crash changes nothing).
            self.meta.append(&skipped)?;
            let report = self.engine.apply_log(records)?;
            seen = admitted;
            self.meta.append(&[Record::SetState {
                key: LOG_SEEN.to_string(),
                value: seen,
            }])?;
            {
                let mut st = lock(&self.status);
                st.remote_applied += report.applied;
                st.conflicts += report.conflicts;
                st.refused_events += report.refused;
                st.log_seen = seen;
            }
            if let Some(b) = breach {
                return Err(self.breach(b));
            }
            if !full {
                break;
            }
        }
        lock(&self.status).log_seen = seen;
        // Everything this node appended is read back by now.
        let last = self
            .guard_at(seen)?
            .as_mut()
            .expect("loaded")
            .last_seq(&self.meta, self.config.node_id);
        // (The guard's lock is released: `append_own` takes it after `own`.)
        let mut own = lock(&self.own);
        let last = last.unwrap_or(0);
        own.seq = match own.seq {
            OwnSeq::Known(n) => OwnSeq::Known(n.max(last)),
            OwnSeq::Unknown if own.appends == appends_before => OwnSeq::Known(last),
            unknown => unknown,
        };
        Ok(())
    }

    /// The log guard at cursor `seen`.
    fn guard_at(&self, seen: u64) -> Result<MutexGuard<'_, Option<Guard>>, UploadError> {
        let mut g = lock(&self.guard);
        if g.as_ref().is_none_or(|g| g.cursor() != seen) {
            self.meta.commit_pending()?;
            let loaded = match Guard::load(&self.meta, seen)? {
                Some(loaded) => loaded,
                None => self.rebuild_head(seen)?,
            };
            *g = Some(loaded.for_node(self.config.node_id));
        }
        Ok(g)
    }

    /// The head at `seen` for a database that read the log before heads
    /// were kept: the log's records up to `seen` hashed again (read only;
    /// nothing is applied twice).
    fn rebuild_head(&self, seen: u64) -> Result<Guard, UploadError> {
        tracing::info!(
            up_to = seen,
            "computing the log's head from its records (once, after an upgrade)"
        );
        let volume = self.volume()?;
        let mut head = [0u8; 32];
        let mut after = 0;
        while after < seen {
            let want = usize::try_from(seen - after)
                .unwrap_or(usize::MAX)
                .min(LOG_PAGE);
            let page = volume.cloud.log.read_after(after, want)?;
            let Some(last) = page.last().map(|r| r.mivui) else {
                break;
            };
            for rec in page.iter().filter(|r| r.mivui <= seen) {
                head =
                    volume
                        .keys
                        .log_head(&head, rec.mivui, rec.originator.as_bytes(), &rec.payload);
            }
            after = last;
        }
        self.meta.append(&[Guard::head_record(seen, &head)])?;
        Ok(Guard::at(seen, head))
    }

    /// A node that has read nothing of the log starts from the volume's
    /// newest checkpoint, if it has one; returns the cursor to read after.
    /// A checkpoint that is refused is said once and the whole log read.
    /// Only a node whose journal holds no event of its own does: records it
    /// may have appended are found again by reading them back (`absorb_own`),
    /// which a checkpoint would skip.
    fn start_from_checkpoint(&self, volume: &Volume) -> Result<u64, UploadError> {
        if self.checkpoint_refused.load(Ordering::Acquire) {
            return Ok(0);
        }
        self.meta.commit_pending()?;
        if !self.meta.events_since(0, 1)?.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let snap = match checkpoint::read(volume) {
            Ok(Some(snap)) => snap,
            Ok(None) => return Ok(0),
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, "the volume's checkpoint is refused; reading the whole log instead");
                self.checkpoint_refused.store(true, Ordering::Release);
                return Ok(0);
            }
        };
        let (mivui, rows) = (snap.mivui, snap.rows.len());
        self.engine.install_checkpoint(snap)?;
        self.meta.commit_pending()?;
        *lock(&self.guard) = None;
        {
            let mut st = lock(&self.status);
            st.checkpoint = mivui;
            st.history_from = mivui;
            st.log_seen = mivui;
        }
        tracing::info!(
            mivui,
            rows,
            ms = started.elapsed().as_millis() as u64,
            "started from the volume's checkpoint; reading the log after it"
        );
        Ok(mivui)
    }

    /// Makes a checkpoint when the log has grown by `checkpoint_every`
    /// records since the newest one this node knows of (asking the cloud
    /// first, as another node may have made one). Failing to make one
    /// does not fail the pass.
    fn checkpoint_if_due(&self, volume: &Volume) -> Result<(), UploadError> {
        let every = self.config.checkpoint_every;
        let seen = self.meta.state(LOG_SEEN)?;
        let known = self.meta.state(CHECKPOINT_SEEN)?;
        if every == 0
            || seen < known.saturating_add(every)
            || lock(&self.status).log_breach.is_some()
        {
            return Ok(());
        }
        let newest = match checkpoint::newest(volume) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the volume's checkpoint");
                return Ok(());
            }
        };
        if newest > known {
            self.meta.append(&[Record::SetState {
                key: CHECKPOINT_SEEN.to_string(),
                value: newest,
            }])?;
            lock(&self.status).checkpoint = newest;
            if seen < newest.saturating_add(every) {
                return Ok(());
            }
        }
        match self.write_checkpoint(volume) {
            Ok(made) => tracing::info!(
                mivui = made.mivui,
                rows = made.rows,
                bytes = made.bytes,
                "made a checkpoint of the log"
            ),
            Err(e) => tracing::warn!(error = %e, "could not make a checkpoint of the log"),
        }
        Ok(())
    }

    /// The remote tree and the log guard's state at the cursor.
    fn snapshot(&self) -> Result<Snapshot, UploadError> {
        self.meta.commit_pending()?;
        let mivui = self.meta.state(LOG_SEEN)?;
        let head = super::chain::log_head(&self.meta)?.head;
        let rows = self.engine.remote_rows();
        let mut wanted = std::collections::BTreeSet::new();
        let mut texts = Vec::new();
        for prefix in ["seq:", "sign:", "box:", "removed:", "last:"] {
            texts.extend(self.meta.texts_with_prefix(prefix)?);
        }
        // Each node's newest record and every removal, for `nodes`.
        for (k, v) in &texts {
            if (k.starts_with("last:") || k.starts_with("removed:"))
                && let Ok(m) = v.parse::<u64>()
            {
                wanted.insert(m);
            }
        }
        let first = mivui.saturating_sub(checkpoint::RECENT_HEADS - 1).max(1);
        for m in first..=mivui {
            let key = format!("head:{m}");
            if let Some(h) = self.meta.text(&key)? {
                texts.push((key, h));
            }
        }
        let mut entries = Vec::new();
        for m in wanted {
            if let Some(e) = self.meta.log_entry(m)? {
                entries.push(e);
            }
        }
        Ok(Snapshot {
            mivui,
            head,
            rows,
            versions: Vec::new(),
            entries,
            texts,
        })
    }

    fn write_checkpoint(&self, volume: &Volume) -> Result<checkpoint::Made, UploadError> {
        let snap = self.snapshot()?;
        if snap.mivui == 0 {
            return Ok(checkpoint::Made::default());
        }
        let made = checkpoint::write(
            volume,
            &self.signer,
            self.config.node_id,
            self.vfs.now(),
            &snap,
            &|o| self.meta.version_chunks(o),
        )?;
        self.meta.append(&[Record::SetState {
            key: CHECKPOINT_SEEN.to_string(),
            value: made.mivui,
        }])?;
        lock(&self.status).checkpoint = made.mivui;
        Ok(made)
    }

    /// Says (once per kind of breach) that the log cannot be trusted.
    fn breach(&self, b: Breach) -> UploadError {
        let msg = b.to_string();
        let mut st = lock(&self.status);
        if st.log_breach.as_deref() != Some(msg.as_str()) {
            tracing::error!(breach = %msg,
                "the volume's log cannot be trusted: sync stopped (local files keep working, changes queue)");
            st.log_breach = Some(msg);
        }
        UploadError::Breach(b)
    }

    /// Seals `payloads` as this node's next records and appends them in
    /// order; returns their numbers.
    fn append_own(
        &self,
        volume: &Volume,
        payloads: Vec<PublishedEvent>,
    ) -> Result<Vec<u64>, UploadError> {
        let mut own = lock(&self.own);
        let mut seq = match own.seq {
            OwnSeq::Known(n) => n,
            OwnSeq::Unknown => return Err(UploadError::OwnSeqUnknown),
        };
        let seen = self.meta.state(LOG_SEEN)?;
        let (cursor, head) = {
            let g = self.guard_at(seen)?;
            let g = g.as_ref().expect("loaded");
            (g.cursor(), g.head())
        };
        let clear = PublishedEvent::clear_originator(&volume.keys, self.config.node_id);
        let aad = volume.event_aad(clear);
        let sealed: Vec<Vec<u8>> = payloads
            .into_iter()
            .map(|p| {
                seq += 1;
                p.linked(seq, cursor, head.clone())
                    .seal(&volume.keys, &aad, &self.signer)
            })
            .collect();
        own.seq = OwnSeq::Unknown;
        own.appends += 1;
        let mivuis = volume.cloud.log.append_batch(clear, &sealed)?;
        own.seq = OwnSeq::Known(seq);
        drop(own);
        if let Some(&m) = mivuis.iter().min()
            && m <= cursor
        {
            return Err(self.breach(Breach::RolledBack { mivui: m, cursor }));
        }
        Ok(mivuis)
    }

    /// A new key epoch (numbered by its record): its key, if wrapped for
    /// this node, is kept (durably, before the cursor passes the record)
    /// and seals everything from now on.
    fn take_epoch(&self, grant: &EpochGrant, mivui: u64) -> Result<(), UploadError> {
        let me = self.config.node_id;
        let Some(wrapped) = grant.wraps.get(&me) else {
            tracing::error!(
                epoch = mivui,
                "the volume has a new key this node was not given (it has not published since \
                 signatures came); records sealed with it will not open here: join again with \
                 a key file exported by another node"
            );
            return Ok(());
        };
        match self.signer.unwrap_epoch(wrapped) {
            Ok(master) => Ok(self.volume.add_epoch(mivui, &master)?),
            Err(e) => {
                tracing::error!(epoch = mivui, error = %e, "the new key wrapped for this node does not open; records sealed with it will not open here");
                Ok(())
            }
        }
    }

    /// This node's own record read back: marks it published if the journal
    /// does not know yet. Returns whether the journal holds the event, and
    /// the version's local object. An event with the same id but another
    /// change is not it (a home restored from an old copy numbers new
    /// events again until it has read its later records).
    fn absorb_own(
        &self,
        p: &PublishedEvent,
        mivui: u64,
        chunks: Option<Vec<ChunkRef>>,
    ) -> Result<(bool, Option<String>), UploadError> {
        if p.local_id == 0 {
            return Ok((false, None)); // a node record
        }
        let Some(local) = self
            .meta
            .events_since(p.local_id.saturating_sub(1), 1)?
            .pop()
        else {
            return Ok((false, None));
        };
        let same = local.id == p.local_id
            && local.event_type == p.event.event_type
            && local.file_path == p.event.file_path
            && local.src_path == p.event.src_path
            // Payloads before format 2 carry no time.
            && (p.event.time == 0 || local.time == p.event.time);
        if !same {
            return Ok((false, None));
        }
        if local.mivui.is_none() {
            tracing::info!(
                event = local.id,
                mivui,
                "found an event published just before a stop; not publishing it again"
            );
            // The record carries the hash the journal may not have yet.
            let hash = local
                .file_hash
                .is_none()
                .then(|| p.event.file_hash.clone())
                .flatten();
            self.vfs.published(
                local.id,
                mivui,
                local.object.clone(),
                chunks.unwrap_or_default(),
                hash,
            )?;
        }
        Ok((true, local.object))
    }

    /// Announces this node (name, time) in the log, once per run.
    fn say_hello(&self, volume: &Volume) -> Result<(), UploadError> {
        self.append_node_record(volume, EventType::Node, String::new(), Vec::new(), None)
            .map(|_| ())
    }

    fn append_node_record(
        &self,
        volume: &Volume,
        ty: EventType,
        path: String,
        pruned: Vec<u64>,
        grant: Option<EpochGrant>,
    ) -> Result<u64, UploadError> {
        let ev = Event::node_record(self.config.node_id, ty, path, self.vfs.now());
        let mut p = PublishedEvent::new(ev, &self.config.node_name, None);
        p.pruned = pruned;
        p.grant = grant;
        // Another thread's command (prune, nodes remove) waits for the pass
        // that learns this node's place in the log.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.append_own(volume, vec![p.clone()]) {
                Err(UploadError::OwnSeqUnknown) if Instant::now() < deadline => {
                    self.ring_bell(true);
                    let st = lock(&self.status);
                    let _ = self
                        .progress
                        .wait_timeout(st, Duration::from_millis(200))
                        .expect("lock poisoned");
                }
                r => return r.map(|m| m[0]),
            }
        }
    }

    /// A long chunk list stored apart from its event, fetched and verified.
    fn fetch_chunk_list(&self, name: &str) -> Result<Vec<ChunkRef>, UploadError> {
        let volume = self.volume()?;
        let sealed = volume.cloud.objects.get(name)?;
        let bad = |why: String| UploadError::Local {
            path: format!("chunk list {name}"),
            source: std::io::Error::other(why),
        };
        let plain = volume
            .keys
            .open_chunk(name, &sealed)
            .map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub versions: u64,
    pub objects: u64,
    /// Plaintext bytes of the removed objects.
    pub bytes: u64,
    pub dry_run: bool,
    /// With `cold_after_days`: what moved between tiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold: Option<super::CoolReport>,
}

struct Content {
    chunks: Option<Vec<ChunkRef>>,
    hash: Option<String>,
}

/// What reading one version found: whether its content was there, and its hash.
struct Scan {
    complete: bool,
    hash: Option<String>,
    /// The chunk list of a version already in the cloud.
    premade: Option<Vec<ChunkRef>>,
}

struct ChunkJob {
    event: usize,
    index: usize,
    data: Vec<u8>,
}

/// Bytes of chunks handed out and not yet stored: the chunker waits
/// before going over `IN_FLIGHT_BYTES` (one chunk always goes).
struct InFlight {
    bytes: Mutex<usize>,
    freed: Condvar,
}

impl InFlight {
    fn new() -> Self {
        Self {
            bytes: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn take(&self, n: usize) {
        let mut bytes = lock(&self.bytes);
        while *bytes > 0 && *bytes + n > IN_FLIGHT_BYTES {
            bytes = self.freed.wait(bytes).expect("lock poisoned");
        }
        *bytes += n;
    }

    fn give_back(&self, n: usize) {
        *lock(&self.bytes) -= n;
        self.freed.notify_all();
    }
}
