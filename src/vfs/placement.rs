//! Placement rules (pinned, online-only, local-only, cold; `auto` is no
//! rule) and the local cache they steer: what is kept, what is fetched
//! eagerly, and what may be evicted to keep the cache under its cap. Cold
//! evicts like online-only, but only versions the cooler (`sync::cold`)
//! has confirmed in the cold tier. Content not yet in the cloud, pinned
//! content and local-only content is never evicted, and neither is a file
//! that is open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::tree::Node;
use super::{State, Vfs, VfsError, lock};
use crate::event::EventType;
use crate::meta::{Ino, Kind, Placement, ROOT_INO, Record};

#[derive(Debug, Clone, Serialize)]
pub struct PlacementInfo {
    /// The rule in force: auto, pinned, online-only, local-only or cold.
    pub rule: &'static str,
    /// The path that sets it (`None` for auto).
    pub from: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct EvictReport {
    pub files: u64,
    pub bytes: u64,
    /// Files kept because their content is not yet in the cloud, or open.
    pub kept: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HydrateItem {
    pub ino: Ino,
    pub path: String,
    pub size: u64,
}

/// How often a full disk is logged, and how often writes on a full disk
/// try evicting again.
const FULL_LOG_EVERY: Duration = Duration::from_secs(30);
const FULL_EVICT_EVERY: Duration = Duration::from_millis(500);

/// Writes refused for a full disk, rate-limited logging and eviction.
#[derive(Default)]
pub(super) struct DiskGuard {
    refused: AtomicU64,
    /// Refusals not yet in a log line.
    unlogged: AtomicU64,
    last_log: crate::locks::Mutex<Option<Instant>>,
    last_evict: crate::locks::Mutex<Option<Instant>>,
}

fn due(at: &crate::locks::Mutex<Option<Instant>>, every: Duration) -> bool {
    let mut last = lock(at);
    if last.is_some_and(|t| t.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// The disk holding the home, as content writes see it.
#[derive(Debug, Clone, Serialize)]
pub struct DiskStatus {
    /// Content writes are refused (`ENOSPC`) until space is freed.
    pub full: bool,
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// Kept free for the journal and the database.
    pub reserve_bytes: u64,
    /// Content writes refused since the mount.
    pub refused_writes: u64,
    /// Disk the content store takes.
    pub store_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    pub cap_bytes: u64,
    pub used_bytes: u64,
    /// What is over the cap is content that may not be evicted (not yet
    /// uploaded, pinned, local-only, or open).
    pub over_cap: bool,
}

impl Vfs {
    pub(super) fn placement_info(&self, st: &State, ino: Ino) -> PlacementInfo {
        let (rule, from) = st.tree.rule_at(ino);
        PlacementInfo {
            rule: Placement::name(rule),
            from: from.and_then(|i| st.tree.path(i)),
        }
    }

    /// Sets (or with `None` clears) the rule on `path`. Turning local-only
    /// on withdraws the subtree from the cloud (delete events: other nodes
    /// remove it); turning it off publishes it again. Online-only evicts
    /// what is safely in the cloud before it returns; pinned marks the
    /// subtree for eager download.
    pub fn set_placement(&self, path: &str, rule: Option<Placement>) -> super::Result<EvictReport> {
        let ino = self.resolve(path)?;
        self.set_placement_ino(ino, rule)
    }

    pub(super) fn set_placement_ino(
        &self,
        ino: Ino,
        rule: Option<Placement>,
    ) -> super::Result<EvictReport> {
        if matches!(rule, Some(Placement::OnlineOnly | Placement::Cold)) {
            self.settle_below(ino);
        }
        if rule == Some(Placement::LocalOnly) {
            // Withdrawn from the cloud, it must all be here first.
            let cloud_only: Vec<Ino> = {
                let st = lock(&self.state);
                let mut all = vec![ino];
                all.extend(st.tree.descendants(ino));
                all.into_iter()
                    .filter(|&i| st.tree.get(i).is_some_and(|n| self.is_cloud_only(n)))
                    .collect()
            };
            for i in cloud_only {
                self.fetch_missing(i).map_err(|e| match e {
                    VfsError::Fetch { path, source } => VfsError::Fetch {
                        path: format!(
                            "local-only needs every file below here, and one cannot be downloaded now: {path}"
                        ),
                        source,
                    },
                    e => e,
                })?;
            }
        }
        {
            let mut st = lock(&self.state);
            let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
            if ino == ROOT_INO && rule == Some(Placement::LocalOnly) {
                return Err(VfsError::Invalid("the whole folder cannot be local-only"));
            }
            let was_local = st.tree.rule_at(ino).0 == Some(Placement::LocalOnly);
            let mut row = n.row.clone();
            row.placement = rule;
            self.journal(&mut st, vec![Record::PutInode(row)])?;
            // What the subtree is to other nodes after the change.
            let now_local = st.tree.rule_at(ino).0 == Some(Placement::LocalOnly);
            if now_local && !was_local {
                self.withdraw(&mut st, ino)?;
            } else if was_local && !now_local {
                self.publish_subtree(&mut st, ino)?;
            }
        }
        self.mark_cold_dirty();
        match rule {
            // Cold: only what the cooler has confirmed cold (more goes as
            // it confirms the rest).
            Some(Placement::OnlineOnly | Placement::Cold) => self.evict_below_ino(ino),
            Some(Placement::Pinned) => {
                self.pin_dirty.store(true, Ordering::Release);
                Ok(EvictReport::default())
            }
            _ => Ok(EvictReport::default()),
        }
    }

    /// Delete events for everything announced below and at `ino`, children
    /// first; the local files stay, unannounced.
    fn withdraw(&self, st: &mut State, ino: Ino) -> super::Result<()> {
        let base = st.tree.path(ino).unwrap_or_default();
        let mut all = vec![ino];
        all.extend(st.tree.descendants(ino));
        all.reverse();
        let mut records = Vec::new();
        for i in all {
            let n = st.tree.get(i).expect("exists");
            if !n.row.announced {
                continue;
            }
            let p = st.tree.path(i).unwrap_or_else(|| base.clone());
            if p.split('/').any(|c| self.ignore.name_is_ignored(c)) {
                continue;
            }
            let mut row = n.row.clone();
            let ty = if row.kind == Kind::Dir {
                EventType::Rmdir
            } else {
                EventType::Delete
            };
            let ev = self.new_event(st, ty, p, &row, None);
            row.announced = false;
            records.push(Record::PutInode(row));
            records.push(Record::PutEvent(ev));
        }
        self.journal(st, records)
    }

    /// Create events for everything visible below and at `ino`, parents
    /// first (files being written are announced when closed).
    pub(super) fn publish_subtree(&self, st: &mut State, ino: Ino) -> super::Result<()> {
        let mut all = vec![ino];
        all.extend(st.tree.descendants(ino));
        let mut records = Vec::new();
        for i in all {
            let Some(p) = st.tree.visible_path(i, &self.ignore) else {
                continue;
            };
            let n = st.tree.get(i).expect("exists");
            if n.row.announced || (n.row.kind == Kind::File && n.staging.is_some()) {
                continue;
            }
            let mut row = n.row.clone();
            row.announced = true;
            let ty = match row.kind {
                Kind::Dir => EventType::Mkdir,
                Kind::Symlink => EventType::Symlink,
                Kind::File => EventType::Create,
                _ => continue, // never visible
            };
            let ev = self.new_event(st, ty, p, &row, None);
            // Memory first, so the children's paths see the parent announced.
            records.push(Record::PutInode(row));
            records.push(Record::PutEvent(ev));
        }
        self.journal(st, records)
    }

    /// Whether `object`'s local copy may go: named by no unpublished event
    /// (so the file's version is in the cloud), and no file naming it is
    /// open, being written, unannounced, pinned or local-only. An object no
    /// file names must have a known chunk list (a partial download has not).
    pub(super) fn can_evict(&self, st: &State, object: &str) -> bool {
        if st.pinned.contains_key(object) {
            return false;
        }
        let owners = st.tree.owners(object);
        if owners.is_empty() {
            return matches!(self.meta.version_chunks(object), Ok(Some(_)));
        }
        for &i in owners {
            let Some(n) = st.tree.get(i) else { continue };
            if n.open > 0 || n.staging.is_some() || !n.row.announced {
                return false;
            }
            if matches!(
                st.tree.rule_at(i).0,
                Some(Placement::Pinned | Placement::LocalOnly)
            ) {
                return false;
            }
        }
        true
    }

    /// Whether the rule at `ino` lets the local copy of `object` go: always
    /// online-only, and cold once the cooler confirmed it cold.
    fn rule_evicts(&self, st: &State, ino: Ino, object: &str) -> bool {
        match st.tree.rule_at(ino).0 {
            Some(Placement::OnlineOnly) => true,
            Some(Placement::Cold) => self.is_cold_ready(object),
            _ => false,
        }
    }

    fn has_local_copy(&self, n: &Node) -> bool {
        n.row
            .object
            .as_ref()
            .is_some_and(|o| self.store.path(o).exists())
    }

    /// Waits for copies below `ino` that are being put in place right now
    /// (a read just finished them), so they are evicted and counted like
    /// any other.
    fn settle_below(&self, ino: Ino) {
        let Some(source) = lock(&self.content_source).clone() else {
            return;
        };
        let objects: Vec<String> = {
            let st = lock(&self.state);
            let mut all = vec![ino];
            all.extend(st.tree.descendants(ino));
            all.iter()
                .filter_map(|&i| st.tree.get(i)?.row.object.clone())
                .collect()
        };
        for o in objects {
            source.settle(&o);
        }
    }

    pub(super) fn evict_below_ino(&self, ino: Ino) -> super::Result<EvictReport> {
        self.evict_where(ino, &|_| true)
    }

    /// Evicts below `ino` what the rules let go, of the versions `pick`
    /// selects.
    pub(super) fn evict_where(
        &self,
        ino: Ino,
        pick: &dyn Fn(&str) -> bool,
    ) -> super::Result<EvictReport> {
        let mut report = EvictReport::default();
        let mut changed = Vec::new();
        let st = lock(&self.state);
        let mut all = vec![ino];
        all.extend(st.tree.descendants(ino));
        let source = lock(&self.content_source).clone();
        for i in all {
            let Some(n) = st.tree.get(i) else { continue };
            if n.row.kind != Kind::File {
                continue;
            }
            if !self.has_local_copy(n) {
                if let (Some(o), Some(src)) = (&n.row.object, &source)
                    && pick(o)
                    && self.rule_evicts(&st, i, o)
                    && self.can_evict(&st, o)
                {
                    report.bytes += src.drop_partial(o);
                }
                continue;
            }
            let object = n.row.object.clone().expect("has a copy");
            // Pinned below an online-only folder stays; so does what is
            // not uploaded or open.
            let evictable =
                pick(&object) && self.rule_evicts(&st, i, &object) && self.can_evict(&st, &object);
            if !evictable {
                report.kept += 1;
                continue;
            }
            let bytes = n.row.size;
            self.store.remove(&object)?;
            changed.push(super::Invalidation::Inode(i));
            report.files += 1;
            report.bytes += bytes;
        }
        drop(st);
        // `st_blocks` changed: the kernel's cached attributes go.
        self.invalidate(changed);
        Ok(report)
    }

    /// Files below `path` whose content is only in the cloud.
    pub fn cloud_only_below(&self, path: &str) -> super::Result<Vec<HydrateItem>> {
        let ino = self.resolve(path)?;
        let st = lock(&self.state);
        let mut all = vec![ino];
        all.extend(st.tree.descendants(ino));
        Ok(all
            .into_iter()
            .filter_map(|i| {
                let n = st.tree.get(i)?;
                (n.row.kind == Kind::File && self.is_cloud_only(n)).then(|| HydrateItem {
                    ino: i,
                    path: st.tree.path(i).unwrap_or_default(),
                    size: n.row.size,
                })
            })
            .collect())
    }

    /// Brings a file's whole content here (no-op if it is here).
    pub fn hydrate(&self, ino: Ino) -> super::Result<()> {
        let missing = {
            let st = lock(&self.state);
            let n = st.tree.get(ino).ok_or(VfsError::NotFound)?;
            self.is_cloud_only(n)
        };
        if missing {
            self.fetch_missing(ino)?;
        }
        Ok(())
    }

    /// Cloud-only files under a pinned rule, when something changed since
    /// the last call (a pin, or files the log brought).
    pub fn pinned_to_fetch(&self) -> Vec<Ino> {
        if !self.pin_dirty.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        let st = lock(&self.state);
        // Only below pinned rules (most trees have none): asking the disk
        // about every file of a large tree under the core's lock would
        // stall every request meanwhile.
        let mut below: Vec<Ino> = st
            .tree
            .nodes
            .values()
            .filter(|n| n.row.placement == Some(Placement::Pinned))
            .map(|n| n.row.ino)
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        while let Some(ino) = below.pop() {
            let Some(n) = st.tree.get(ino) else { continue };
            if !seen.insert(ino) {
                continue;
            }
            if n.row.kind == Kind::File {
                if n.linked
                    && st.tree.rule_at(ino).0 == Some(Placement::Pinned)
                    && self.is_cloud_only(n)
                {
                    out.push(ino);
                }
            } else {
                below.extend(n.children.values().copied());
            }
        }
        out
    }

    /// A pinned download failed: try again on a later round.
    pub fn retry_pins(&self) {
        self.pin_dirty.store(true, Ordering::Release);
    }

    pub fn set_cache_cap(&self, bytes: u64) {
        self.cache_cap.store(bytes, Ordering::Release);
    }

    pub fn cache_status(&self) -> CacheStatus {
        CacheStatus {
            cap_bytes: self.cache_cap.load(Ordering::Acquire),
            used_bytes: self.store.used_bytes(),
            over_cap: self.over_cap.load(Ordering::Acquire),
        }
    }

    /// A content write may take more disk: below the reserve, first evict
    /// what is safely in the cloud, then refuse (`ENOSPC`; reads, deletes
    /// and renames keep working, so space can be freed through the mount).
    pub(super) fn ensure_room(&self) -> super::Result<()> {
        let Err(full) = self.store.check_room() else {
            return Ok(());
        };
        if due(&self.disk.last_evict, FULL_EVICT_EVERY) {
            let used = self.store.used_bytes();
            let want = match &full {
                crate::store::StoreError::Full { available, reserve } => {
                    (2 * reserve).saturating_sub(*available)
                }
                _ => 0,
            };
            if self.evict_lru(used.saturating_sub(want)) > 0 && self.store.check_room().is_ok() {
                return Ok(());
            }
        }
        self.disk.refused.fetch_add(1, Ordering::Relaxed);
        let unlogged = self.disk.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        if due(&self.disk.last_log, FULL_LOG_EVERY) {
            self.disk.unlogged.fetch_sub(unlogged, Ordering::Relaxed);
            tracing::warn!(
                refused_writes = unlogged,
                error = %full,
                "disk full: refusing content writes (ENOSPC); reads, deletes and renames work, and writes resume once space is freed"
            );
        }
        Err(full.into())
    }

    pub fn disk_status(&self) -> DiskStatus {
        let space = crate::platform::disk_space(self.store.dir()).ok();
        let total = space.as_ref().map_or(0, |d| d.total);
        DiskStatus {
            full: self.store.check_room().is_err(),
            total_bytes: total,
            available_bytes: space.map_or(0, |d| d.available),
            reserve_bytes: crate::store::reserve_for(total),
            refused_writes: self.disk.refused.load(Ordering::Relaxed),
            store_bytes: self.store.used_bytes(),
        }
    }

    /// Evicts least recently used content that may go until the cache is
    /// back under 95% of its cap. Returns the bytes freed.
    pub fn enforce_cache_cap(&self) -> u64 {
        let cap = self.cache_cap.load(Ordering::Acquire);
        if cap == 0 || self.store.used_bytes() <= cap {
            self.over_cap.store(false, Ordering::Release);
            return 0;
        }
        let freed = self.evict_lru(cap / 100 * 95);
        let used = self.store.used_bytes();
        let over = used > cap;
        if over && !self.over_cap.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                used,
                cap,
                "the cache is over its cap with content that may not be evicted (not yet uploaded, pinned, local-only or open)"
            );
        } else if !over {
            self.over_cap.store(false, Ordering::Release);
        }
        freed
    }

    /// Evicts least recently used content that may go until the store
    /// takes at most `target` bytes. Returns the bytes freed.
    fn evict_lru(&self, target: u64) -> u64 {
        let mut freed = 0;
        let source = lock(&self.content_source).clone();
        let st = lock(&self.state);
        // Under the lock: concurrent callers see each other's evictions.
        let mut used = self.store.used_bytes();
        for (id, bytes) in self.store.least_recent() {
            if used <= target {
                break;
            }
            let gone = match crate::store::ContentStore::partial_owner(&id) {
                // A partial copy goes with the rules of its version.
                Some(owner) => {
                    self.can_evict(&st, owner)
                        && source.as_ref().is_some_and(|s| s.drop_partial(owner) > 0)
                }
                None => self.can_evict(&st, &id) && self.store.remove(&id).is_ok(),
            };
            if gone {
                used = used.saturating_sub(bytes);
                freed += bytes;
            }
        }
        freed
    }

    /// An online-only file's copy goes once it is closed and in the cloud.
    /// A fetched copy of `object` was put in place: files below an
    /// online-only rule do not keep it (the rule may have come meanwhile).
    pub fn content_installed(&self, object: &str) {
        let st = lock(&self.state);
        let owners = st.tree.owners(object).to_vec();
        for &ino in &owners {
            self.evict_if_online_only(&st, ino);
        }
        drop(st);
        // Its blocks are on this disk now (`st_blocks`).
        self.invalidate(owners.into_iter().map(super::Invalidation::Inode).collect());
    }

    pub(super) fn evict_if_online_only(&self, st: &State, ino: Ino) {
        let Some(n) = st.tree.get(ino) else { return };
        // (A copy of a cold file read back stays cached, LRU-evicted like
        // any other: another read of it needs no second restore.)
        if n.row.kind != Kind::File || st.tree.rule_at(ino).0 != Some(Placement::OnlineOnly) {
            return;
        }
        if let Some(o) = n.row.object.clone()
            && self.has_local_copy(n)
            && self.can_evict(st, &o)
        {
            let _ = self.store.remove(&o);
        }
    }
}
