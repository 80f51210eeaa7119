//! `latus check`: the volume against its log, as restic checks a
//! repository. Reads the whole log again from its start with a fresh guard
//! (every chain and the head verify, and the head matches this node's own
//! reading), and checks that every chunk a version in history needs is in
//! the cloud; with `read_data`, also that each one opens and holds what
//! its name promises. Objects nothing needs are listed as orphans.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::chain::Guard;
use super::payload::PublishedEvent;
use super::volume::Volume;
use crate::cloud::CloudError;
use crate::meta::{Meta, MetaError};

/// How many names of each kind of problem the report lists.
const LISTED: usize = 20;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub records: u64,
    /// Records that did not open (tampered, another key, malformed).
    pub unreadable_records: u64,
    /// Records refused (signed with another key than their node's,
    /// unsigned once it signs, or from a removed node): never applied.
    #[serde(default)]
    pub refused_records: u64,
    /// The first record that breaks the log's chains, if one does.
    pub log_breach: Option<String>,
    /// The log's head now differs from this node's reading of it.
    pub head_differs: bool,
    pub versions: u64,
    pub chunks_needed: u64,
    pub chunks_missing: u64,
    pub chunks_damaged: u64,
    /// With `read_data`: chunks read and verified, and their bytes.
    pub chunks_read: u64,
    pub bytes_read: u64,
    pub orphans: u64,
    /// Chunks in a cold tier that cannot be read now (must be restored,
    /// or in a cold folder not connected): neither missing nor checked.
    #[serde(default)]
    pub chunks_cold_unread: u64,
    /// Some names of missing, damaged and orphan objects.
    pub missing: Vec<String>,
    pub damaged: Vec<String>,
    pub orphan_names: Vec<String>,
    pub read_data: bool,
}

impl CheckReport {
    /// Nothing found wrong (orphans are waste, not damage).
    pub fn ok(&self) -> bool {
        self.log_breach.is_none()
            && !self.head_differs
            && self.unreadable_records == 0
            && self.chunks_missing == 0
            && self.chunks_damaged == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

pub fn check(meta: &Meta, volume: &Volume, read_data: bool) -> Result<CheckReport, CheckError> {
    let mut report = CheckReport {
        read_data,
        ..Default::default()
    };
    let mut needed: HashSet<String> = HashSet::new();
    let mut guard = Guard::fresh();
    let mut after = 0;
    loop {
        let page = volume.cloud.log.read_after(after, 1000)?;
        let Some(last) = page.last().map(|r| r.mivui) else {
            break;
        };
        for rec in &page {
            report.records += 1;
            let aad = volume.event_aad(rec.originator);
            let opened =
                PublishedEvent::open_record(&volume.keys, &aad, rec.originator, &rec.payload);
            let link = opened.as_ref().ok().map(PublishedEvent::link);
            if report.log_breach.is_none() {
                match guard.admit(
                    meta,
                    &volume.keys,
                    rec.mivui,
                    &rec.originator,
                    &rec.payload,
                    link,
                ) {
                    Ok(admitted) if admitted.refused.is_some() => {
                        report.refused_records += 1;
                        continue;
                    }
                    Ok(_) => {}
                    Err(b) => report.log_breach = Some(format!("record {}: {b}", rec.mivui)),
                }
            }
            match opened {
                Ok(p) => {
                    if p.event.event_type.carries_content() {
                        report.versions += 1;
                    }
                    needed.extend(p.chunks.iter().flatten().map(|c| c.name.clone()));
                    needed.extend(p.chunk_list.clone());
                }
                Err(_) => report.unreadable_records += 1,
            }
        }
        after = last;
    }
    // Chunks of long lists are in the versions this node resolved.
    for entry in meta.whole_log()? {
        if let Some(o) = &entry.event.object
            && let Some(chunks) = meta.version_chunks(o)?
        {
            needed.extend(chunks.into_iter().map(|c| c.name));
        }
    }
    if report.log_breach.is_none() {
        let ours = super::chain::log_head(meta)?;
        // Heads from before chains were kept are not compared.
        report.head_differs = ours.mivui > 0
            && !ours.head.is_empty()
            && guard.head_after(ours.mivui).is_none_or(|h| h != ours.head);
    }
    report.chunks_needed = needed.len() as u64;
    let present: HashSet<String> = volume.cloud.objects.list()?.into_iter().collect();
    let mut missing: Vec<&String> = needed.iter().filter(|n| !present.contains(*n)).collect();
    // A cold folder that is not connected is not listed: ask for each.
    let mut cold_offline = HashSet::new();
    for name in &missing {
        if let Ok(Some(s)) = volume.cloud.objects.stat(name)
            && s.tier == crate::cloud::Tier::Offline
        {
            cold_offline.insert((*name).clone());
        }
    }
    missing.retain(|n| !cold_offline.contains(*n));
    report.chunks_cold_unread = cold_offline.len() as u64;
    missing.sort();
    report.chunks_missing = missing.len() as u64;
    report.missing = missing.iter().take(LISTED).map(|s| s.to_string()).collect();
    // The volume marker and the checkpoints' objects are not content.
    let checkpoints = super::checkpoint::objects(volume)?;
    let mut orphans: Vec<&String> = present
        .iter()
        .filter(|n| !needed.contains(*n) && n.as_str() != "volume" && !checkpoints.contains(*n))
        .collect();
    orphans.sort();
    report.orphans = orphans.len() as u64;
    report.orphan_names = orphans.iter().take(LISTED).map(|s| s.to_string()).collect();
    if read_data {
        let mut names: Vec<&String> = needed.iter().filter(|n| present.contains(*n)).collect();
        names.sort();
        for name in names {
            let good = match volume.cloud.objects.get(name) {
                Ok(sealed) => match volume.keys.open_chunk(name, &sealed) {
                    // (Opened means it holds what its name says.)
                    Ok(plain) => {
                        report.bytes_read += plain.len() as u64;
                        true
                    }
                    Err(_) => false,
                },
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e)
                    if matches!(
                        e.kind,
                        crate::cloud::CloudErrorKind::Frozen
                            | crate::cloud::CloudErrorKind::ColdOffline
                    ) =>
                {
                    report.chunks_cold_unread += 1;
                    continue;
                }
                Err(_) => false,
            };
            report.chunks_read += 1;
            if !good {
                report.chunks_damaged += 1;
                if report.damaged.len() < LISTED {
                    report.damaged.push(name.clone());
                }
            }
        }
    }
    Ok(report)
}
