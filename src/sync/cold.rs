//! The cooler: keeps chunks in the tier their versions need.
//!
//! A chunk belongs in the cold tier when a cold version uses it and no hot
//! version does. Cold versions: current versions of files below a `cold`
//! rule, and (with `cold_after_days`) versions no longer current and older
//! than that. Hot versions: every other live version (current files of
//! this node and of the remote tree, conflict copies, versions waiting for
//! upload). So a chunk a hot file shares stays hot, and one that a hot
//! file starts using (a restore, a copy) goes back.
//!
//! Which chunks this node moved cold is kept in the database (text
//! `cold:chunks`, JSON name → plaintext size), so a pass only talks to the
//! cloud about changes. A copy below a cold rule is evicted only once every
//! chunk of its version is confirmed where it belongs (`Vfs::set_cold_ready`).
//! Another node learns that a chunk is cold when its read of it fails
//! (`Frozen`, `ColdOffline`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use super::engine::Engine;
use super::history::cold_versions;
use super::volume::{Volume, VolumeError, VolumeHandle};
use crate::cloud::{CloudError, CloudErrorKind, Tier};
use crate::home::Retention;
use crate::locks::{Mutex, lock};
use crate::meta::{Meta, MetaError, Record};
use crate::vfs::{EvictReport, Vfs};

/// Where the chunks this node moved cold are remembered.
const COLD_CHUNKS: &str = "cold:chunks";

/// How long reads of a chunk being restored fail at once (`EAGAIN`)
/// before one asks the cloud again.
pub(super) const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Chunks this node asked a restore of. A read of one fails fast with
/// `EAGAIN` rather than asking the cloud again (a restore takes minutes
/// to hours; the kernel also retries a failed readahead at once): the
/// cloud is asked again after `RECHECK`, or at once when `thaw` finds the
/// chunk readable.
#[derive(Debug, Default)]
pub struct ThawMarks(Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl ThawMarks {
    pub fn mark(&self, names: impl IntoIterator<Item = String>) {
        let now = std::time::Instant::now();
        let mut m = lock(&self.0);
        for n in names {
            m.insert(n, now);
        }
    }

    /// Whether a restore of `name` was asked for lately.
    pub fn waiting(&self, name: &str) -> bool {
        let mut m = lock(&self.0);
        match m.get(name) {
            Some(at) if at.elapsed() < RECHECK => true,
            Some(_) => {
                m.remove(name);
                false
            }
            None => false,
        }
    }

    pub fn clear(&self, name: &str) {
        lock(&self.0).remove(name);
    }
}

#[derive(Debug, Error)]
pub enum ColdError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(
        "this volume has no cold tier: a dir: cloud needs a cold folder (latus set cold-dir PATH, then mount again)"
    )]
    NoTier,
    #[error("{path}: {source}")]
    Path {
        path: String,
        source: crate::vfs::VfsError,
    },
}

impl ColdError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ColdError::Cloud(e) => {
                e.is_retryable()
                    || matches!(e.kind, CloudErrorKind::Frozen | CloudErrorKind::ColdOffline)
            }
            ColdError::Volume(VolumeError::Cloud(e)) => e.is_retryable(),
            _ => false,
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CoolReport {
    /// Chunks moved to the cold tier.
    pub chunks_cooled: u64,
    /// Chunks moved back to the hot tier (a hot version uses them).
    pub chunks_warmed: u64,
    /// Chunks a hot version uses that are being restored before they can
    /// move back.
    pub chunks_thawing: u64,
    /// Local copies freed below cold rules.
    pub files_freed: u64,
    pub bytes_freed: u64,
    /// Roughly how long a restore takes, when one was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_in: Option<&'static str>,
}

/// Bytes per tier of the chunks this node knows of (plaintext sizes).
#[derive(Debug, Default, Clone, Serialize)]
pub struct TierBytes {
    pub hot_bytes: u64,
    pub cold_bytes: u64,
    pub cold_chunks: u64,
    /// The cold tier: an S3 storage class, or the cold folder.
    pub cold_tier: String,
}

/// What a thaw request found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ThawReport {
    pub files: u64,
    pub chunks: u64,
    /// Readable now (hot, an instant class, or restored).
    pub ready: u64,
    /// Being restored.
    pub thawing: u64,
    /// In a cold folder that is not connected.
    pub offline: u64,
    /// Roughly how long a restore takes.
    pub ready_in: &'static str,
}

/// Where each chunk belongs.
#[derive(Debug, Default)]
struct TierPlan {
    /// Chunks only cold versions use, with their sizes.
    want_cold: BTreeMap<String, u64>,
    /// Chunks some hot version uses.
    hot: HashSet<String>,
    /// Every chunk of every version, with its size.
    known: BTreeMap<String, u64>,
}

/// The tiers chunks belong in, from the versions (`all`) and which of them
/// are cold and hot: cold only when no hot version uses the chunk.
fn plan_tiers<'a>(
    all: impl Iterator<Item = &'a String>,
    cold: &HashSet<String>,
    hot: &HashSet<&String>,
    chunks_of: &dyn Fn(&str) -> Option<Vec<crate::event::ChunkRef>>,
) -> TierPlan {
    let mut plan = TierPlan::default();
    for o in hot {
        plan.hot
            .extend(chunks_of(o).unwrap_or_default().into_iter().map(|c| c.name));
    }
    for o in all {
        for c in chunks_of(o).unwrap_or_default() {
            if cold.contains(o) && !plan.hot.contains(&c.name) {
                plan.want_cold.insert(c.name.clone(), c.size);
            }
            plan.known.insert(c.name, c.size);
        }
    }
    plan
}

pub struct Cooler {
    vfs: Arc<Vfs>,
    engine: Arc<Engine>,
    meta: Arc<Meta>,
    volume: Arc<VolumeHandle>,
    retention: Retention,
    /// Chunks this node moved cold, with their plaintext sizes.
    cold: Mutex<BTreeMap<String, u64>>,
    /// One pass at a time (the uploader's thread and a `cold` command).
    running: Mutex<()>,
    /// The log's last record at the last pass: new versions since?
    seen: std::sync::atomic::AtomicU64,
    bytes: Mutex<TierBytes>,
}

impl Cooler {
    pub fn new(
        vfs: Arc<Vfs>,
        engine: Arc<Engine>,
        meta: Arc<Meta>,
        volume: Arc<VolumeHandle>,
        retention: Retention,
    ) -> Self {
        let cold = meta
            .text(COLD_CHUNKS)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let cold_tier = match (&volume.cold().cold_dir, volume.url()) {
            (Some(d), url) if url.starts_with("dir:") => format!("cold folder {}", d.display()),
            (None, url) if url.starts_with("dir:") => "none (set cold-dir)".to_string(),
            _ => volume.cold().class().as_str().to_string(),
        };
        Self {
            vfs,
            engine,
            meta,
            volume,
            retention,
            cold: Mutex::new(cold),
            running: Mutex::new(()),
            seen: std::sync::atomic::AtomicU64::new(u64::MAX),
            bytes: Mutex::new(TierBytes {
                cold_tier,
                ..Default::default()
            }),
        }
    }

    /// Whether a pass has work: a placement changed or the log moved, and
    /// cold rules, cold history or chunks this node moved cold exist (a
    /// volume that uses no cold tier never pays for a pass).
    pub fn due(&self) -> bool {
        let dirty = self.vfs.take_cold_dirty();
        let last = super::chain::log_head(&self.meta).map_or(0, |h| h.mivui);
        let moved = self.seen.swap(last, std::sync::atomic::Ordering::AcqRel) != last;
        (dirty || moved)
            && (self.retention.cold_after_days.is_some()
                || !lock(&self.cold).is_empty()
                || !self.vfs.cold_split().cold.is_empty())
    }

    /// Refuses a cold rule where the volume has no cold tier (a `dir:`
    /// cloud without `cold_dir`).
    pub fn check_tier(&self) -> Result<(), ColdError> {
        if self.volume.url().starts_with("dir:") && self.volume.cold().cold_dir.is_none() {
            return Err(ColdError::NoTier);
        }
        Ok(())
    }

    /// Bytes per tier as of the last pass.
    pub fn tier_bytes(&self) -> TierBytes {
        lock(&self.bytes).clone()
    }

    /// Moves chunks to the tier their versions need, then frees the
    /// copies below cold rules whose chunks are confirmed cold.
    pub fn pass(&self) -> Result<CoolReport, ColdError> {
        let _one = lock(&self.running);
        self.pass_locked()
    }

    /// Runs `change` (a restore, a placement) and then a pass, with no
    /// other pass in between: the report says what the change caused.
    pub fn after<T>(&self, change: impl FnOnce() -> T) -> (T, Result<CoolReport, ColdError>) {
        let _one = lock(&self.running);
        let out = change();
        (out, self.pass_locked())
    }

    fn pass_locked(&self) -> Result<CoolReport, ColdError> {
        let volume = self.volume.get()?;
        self.meta.commit_pending()?;
        let split = self.vfs.cold_split();
        let live = self.engine.live_objects();
        let log = self.meta.whole_log()?;
        let mut cold_objects = split.cold.clone();
        if let Some(days) = self.retention.cold_after_days {
            cold_objects.extend(cold_versions(&log, &live, days, self.vfs.now()));
        }
        // What is live and not cold is hot, whatever this node's rules.
        let hot_objects: HashSet<&String> = live
            .iter()
            .filter(|o| !split.cold.contains(*o))
            .chain(split.hot.iter())
            .collect();
        let chunks_of = |o: &str| self.meta.version_chunks(o).ok().flatten();
        let all = log
            .iter()
            .filter_map(|e| e.event.object.as_ref())
            .chain(&live);
        let TierPlan {
            want_cold,
            hot: hot_chunks,
            known,
        } = plan_tiers(all, &cold_objects, &hot_objects, &chunks_of);
        let mut report = CoolReport::default();
        let result = self.move_chunks(&volume, &want_cold, &hot_chunks, &known, &mut report);
        // Versions whose chunks are all where they belong may go.
        let ready: HashSet<String> = {
            let cold = lock(&self.cold);
            split
                .cold
                .iter()
                .filter(|o| {
                    chunks_of(o).is_some_and(|cs| {
                        cs.iter()
                            .all(|c| cold.contains_key(&c.name) || hot_chunks.contains(&c.name))
                    })
                })
                .cloned()
                .collect()
        };
        let freed: EvictReport = self.vfs.set_cold_ready(ready);
        report.files_freed = freed.files;
        report.bytes_freed = freed.bytes;
        self.count_bytes(&known);
        result.map(|()| report)
    }

    fn move_chunks(
        &self,
        volume: &Volume,
        want_cold: &BTreeMap<String, u64>,
        hot_chunks: &HashSet<String>,
        known: &BTreeMap<String, u64>,
        report: &mut CoolReport,
    ) -> Result<(), ColdError> {
        let objects = &volume.cloud.objects;
        let mut changed = false;
        let result = (|| {
            for (name, size) in want_cold {
                if lock(&self.cold).contains_key(name) {
                    continue;
                }
                match objects.to_cold(name) {
                    Ok(()) => {}
                    // Pruned meanwhile: nothing to move.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(ColdError::from(e)),
                }
                lock(&self.cold).insert(name.clone(), *size);
                report.chunks_cooled += 1;
                changed = true;
            }
            let warm: Vec<String> = lock(&self.cold)
                .keys()
                .filter(|n| hot_chunks.contains(*n))
                .cloned()
                .collect();
            for name in warm {
                match objects.to_hot(&name) {
                    Ok(()) => {
                        lock(&self.cold).remove(&name);
                        report.chunks_warmed += 1;
                        changed = true;
                    }
                    Err(e) if e.kind == CloudErrorKind::Frozen => {
                        report.chunks_thawing += 1;
                        report.ready_in = Some(objects.thaw_wait());
                    }
                    Err(e) if e.is_not_found() => {
                        lock(&self.cold).remove(&name);
                        changed = true;
                    }
                    Err(e) => return Err(ColdError::from(e)),
                }
            }
            Ok(())
        })();
        // Pruned chunks are no longer anywhere.
        {
            let mut cold = lock(&self.cold);
            let before = cold.len();
            cold.retain(|n, _| known.contains_key(n));
            changed |= cold.len() != before;
        }
        if changed {
            self.save()?;
        }
        result
    }

    fn save(&self) -> Result<(), ColdError> {
        let value = serde_json::to_string(&*lock(&self.cold)).expect("names serialise");
        self.meta.append(&[Record::SetText {
            key: COLD_CHUNKS.into(),
            value,
        }])?;
        Ok(())
    }

    fn count_bytes(&self, known: &BTreeMap<String, u64>) {
        let cold = lock(&self.cold);
        let mut b = lock(&self.bytes);
        b.cold_bytes = cold.values().sum();
        b.cold_chunks = cold.len() as u64;
        b.hot_bytes = known
            .iter()
            .filter(|(n, _)| !cold.contains_key(*n))
            .map(|(_, s)| s)
            .sum();
    }

    /// The chunks of the current versions at and below `path`.
    fn chunks_below(&self, path: &str) -> Result<(u64, BTreeMap<String, u64>), ColdError> {
        self.meta.commit_pending()?;
        let files = self
            .vfs
            .files_below(Some(path), false)
            .map_err(|source| ColdError::Path {
                path: path.to_string(),
                source,
            })?;
        let mut chunks = BTreeMap::new();
        for f in &files {
            for c in self.meta.version_chunks(&f.object)?.unwrap_or_default() {
                chunks.insert(c.name, c.size);
            }
        }
        Ok((files.len() as u64, chunks))
    }

    /// Requests restores of every cold chunk below `path` that needs one,
    /// and says how many are readable now.
    pub fn thaw(&self, path: &str) -> Result<ThawReport, ColdError> {
        let volume = self.volume.get()?;
        let (files, chunks) = self.chunks_below(path)?;
        let objects = &volume.cloud.objects;
        let mut report = ThawReport {
            files,
            chunks: chunks.len() as u64,
            ready_in: objects.thaw_wait(),
            ..Default::default()
        };
        for name in chunks.keys() {
            let tier = match objects.stat(name)?.map(|s| s.tier) {
                Some(Tier::Frozen) => objects.thaw(name)?,
                Some(t) => t,
                None => continue, // not published yet: nothing to thaw
            };
            match tier {
                Tier::Thawing | Tier::Frozen => {
                    self.volume.thawing().mark([name.clone()]);
                    report.thawing += 1
                }
                Tier::Offline => report.offline += 1,
                _ => {
                    // Readers may ask the cloud again now.
                    self.volume.thawing().clear(name);
                    report.ready += 1
                }
            }
        }
        Ok(report)
    }

    /// The tier of a file's content: `hot`, `cold`, `thawing`, `ready` or
    /// `cold (not connected)`; `None` for a folder, unpublished content, or
    /// content this node has no reason to think cold.
    /// A large file is judged by a sample of its chunks (they move
    /// together; only chunks shared with other files differ).
    pub fn tier_of(&self, path: &str) -> Result<Option<&'static str>, ColdError> {
        const SAMPLE: usize = 16;
        let file = match self.vfs.files_below(Some(path), false) {
            Ok(files) => match files.as_slice() {
                [f] if f.path == path.trim_matches('/') => f.clone(),
                _ => return Ok(None),
            },
            Err(_) => return Ok(None),
        };
        self.meta.commit_pending()?;
        let chunks = self.meta.version_chunks(&file.object)?.unwrap_or_default();
        // Only content that may be cold costs a question to the cloud
        // (`status PATH` stays quick, also offline).
        let maybe_cold = self.vfs.under_cold_rule(file.ino) || {
            let cold = lock(&self.cold);
            chunks
                .iter()
                .any(|c| cold.contains_key(&c.name) || self.volume.thawing().waiting(&c.name))
        };
        if chunks.is_empty() || !maybe_cold {
            return Ok(None);
        }
        let volume = self.volume.get()?;
        let step = chunks.len().div_ceil(SAMPLE);
        let mut tiers = Vec::new();
        for c in chunks.iter().step_by(step) {
            if let Some(s) = volume.cloud.objects.stat(&c.name)? {
                tiers.push(s.tier);
            }
        }
        // The slowest chunk says when the file reads.
        let worst = [
            Tier::Offline,
            Tier::Frozen,
            Tier::Thawing,
            Tier::Ready,
            Tier::Cold,
        ]
        .into_iter()
        .find(|t| tiers.contains(t));
        Ok(Some(worst.unwrap_or(Tier::Hot).name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ChunkRef;

    #[test]
    fn a_chunk_a_hot_version_shares_stays_hot() {
        let chunks = |o: &str| -> Option<Vec<ChunkRef>> {
            let c = |n: &str| ChunkRef {
                name: n.to_string(),
                size: 10,
            };
            Some(match o {
                "archive" => vec![c("shared"), c("only-cold")],
                "work" => vec![c("shared"), c("only-hot")],
                "old" => vec![c("only-old")],
                _ => return None,
            })
        };
        let names = ["archive", "work", "old", "unpublished"].map(String::from);
        let cold: HashSet<String> = ["archive", "old"].map(String::from).into();
        let work = String::from("work");
        let hot: HashSet<&String> = [&work].into();
        let plan = plan_tiers(names.iter(), &cold, &hot, &chunks);
        let want: Vec<&str> = plan.want_cold.keys().map(String::as_str).collect();
        assert_eq!(want, vec!["only-cold", "only-old"]);
        assert!(plan.hot.contains("shared") && plan.hot.contains("only-hot"));
        assert_eq!(plan.known.len(), 4);
        // Nothing hot: everything a cold version uses goes cold.
        let plan = plan_tiers(names.iter(), &cold, &HashSet::new(), &chunks);
        assert_eq!(plan.want_cold.len(), 3);
    }

    #[test]
    fn reads_of_a_chunk_being_restored_wait_until_thawed_or_a_while() {
        let marks = ThawMarks::default();
        assert!(!marks.waiting("c"));
        marks.mark(["c".to_string()]);
        assert!(marks.waiting("c"));
        marks.clear("c");
        assert!(!marks.waiting("c"));
    }
}
