//! `latus repair`: rebuilds the node's database while latus is not mounted,
//! the way a mount rebuilds a damaged one, then reads the volume's log to
//! its end, publishing nothing.
//!
//! - The database is set aside (`latus.redb.before-repair-TIME`) and
//!   rebuilt from the journal when the journal still starts at record 1,
//!   else from the volume's log alone (the journal is copied aside first).
//! - A sound database whose journal no longer starts at record 1 is kept
//!   (a rebuild would know less than it does), copied aside, and caught up.
//! - Content no rebuilt row names is moved to `store/unplaced-TIME/`, never
//!   deleted.
//! - A home restored from an old copy catches up the same way: this node's
//!   later records in the log are applied like another node's (their ids
//!   are reserved so new events never reuse them), its chain continues
//!   from the log's, and its old unpublished events the log already holds
//!   are marked published, not published again.

use std::path::Path;
use std::sync::Arc;

use redb::Database;

use super::{DaemonError, io, lock_home, open_node_with, open_volume};
use crate::home::Home;
use crate::meta::{self, PUBLISHED_THROUGH, Rebuilt};
use crate::sync::{Uploader, UploaderStatus, VolumeHandle};
use crate::vfs::RecoveryReport;

/// What `latus repair` did.
#[derive(Debug, serde::Serialize)]
pub struct RepairReport {
    /// The database was rebuilt (else it was sound and kept).
    pub rebuilt: bool,
    /// Why the old database could not be kept, if it could not.
    pub damage: Option<String>,
    /// Where the old database (or a copy of the kept one) is.
    pub old_database: Option<String>,
    /// A copy of a journal that did not start at record 1.
    pub old_journal: Option<String>,
    pub recovery: RecoveryReport,
    /// The log as read after the repair (`None`: the cloud did not answer).
    pub log: Option<UploaderStatus>,
    pub cloud_error: Option<String>,
    /// This node's changes still to publish (at the next mount).
    pub unpublished: usize,
}

impl RepairReport {
    /// What happened, in lines for a person.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let r = &self.recovery;
        let complete = r
            .database_rebuilt
            .as_ref()
            .is_some_and(|b| b.journal_complete);
        if self.rebuilt {
            out.push(format!(
                "rebuilt the database from {}{}",
                if complete {
                    "the journal (every change of this node, unpublished ones included)"
                } else {
                    "the volume's log (the journal no longer starts at its first record)"
                },
                match &self.damage {
                    Some(d) => format!("; the old one was damaged ({d})"),
                    None => String::new(),
                }
            ));
        } else {
            out.push(
                "kept the database: it is sound, and the journal no longer holds every change, so a rebuild would know less".into(),
            );
        }
        if let Some(p) = &self.old_database {
            out.push(format!("the old database is kept as {p}"));
        }
        if let Some(p) = &self.old_journal {
            out.push(format!("the old journal is kept as {p}"));
        }
        match (&self.log, &self.cloud_error) {
            (Some(s), _) => {
                out.push(format!(
                    "read the volume's log up to record {}: {} changes applied, {} conflicts kept as copies",
                    s.log_seen, s.remote_applied, s.conflicts
                ));
                if let Some(b) = &s.log_breach {
                    out.push(format!("the log cannot be trusted: {b}"));
                }
            }
            (None, Some(e)) => out.push(format!(
                "the cloud did not answer ({e}); the volume's log is read at the next mount"
            )),
            (None, None) => {}
        }
        if r.unplaced_objects > 0 {
            out.push(format!(
                "{} local contents could not be put back at a path (unpublished versions that could not be recovered, or copies of published ones); they are kept in {}",
                r.unplaced_objects,
                r.unplaced_folder.as_deref().unwrap_or("?")
            ));
        } else {
            out.push("nothing unpublished was lost".into());
        }
        if self.unpublished > 0 {
            out.push(format!(
                "{} changes of this node are still to publish (at the next mount)",
                self.unpublished
            ));
        }
        out
    }
}

/// A database redb opens and whose checksums verify, or why not.
fn soundness(path: &Path) -> Result<(), String> {
    let mut db = Database::open(path).map_err(|e| e.to_string())?;
    match db.check_integrity() {
        Ok(true) => Ok(()),
        Ok(false) => Err("redb repaired it on open".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn copy_aside(path: &Path, suffix: &str) -> Result<String, DaemonError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{suffix}-{secs}"));
    std::fs::copy(path, &aside).map_err(io(format!("copy {}", path.display())))?;
    Ok(Path::new(&aside).display().to_string())
}

/// Rebuilds (or keeps and catches up) the database of the node at `home`,
/// which must not be mounted.
pub fn repair(home: &Home) -> Result<RepairReport, DaemonError> {
    let _lock = lock_home(home)?;
    let db = home.db_path();
    let wal = home.wal_path();
    let complete = meta::journal_complete(&wal)?;
    let exists = db.exists();
    let damage = if exists { soundness(&db).err() } else { None };
    let keep = exists && damage.is_none() && !complete;
    let mut report = RepairReport {
        rebuilt: !keep,
        damage: if exists {
            damage.clone()
        } else {
            Some("the database file was missing".into())
        },
        old_database: None,
        old_journal: None,
        recovery: RecoveryReport::default(),
        log: None,
        cloud_error: None,
        unpublished: 0,
    };
    let prior = if keep {
        report.old_database = Some(copy_aside(&db, "before-repair")?);
        None
    } else {
        if !complete && wal.exists() {
            // The rebuild starts the journal again.
            report.old_journal = Some(copy_aside(&wal, "before-repair")?);
        }
        let aside = if exists {
            let p = meta::set_aside(&db, "before-repair")
                .map_err(io(format!("set {} aside", db.display())))?;
            report.old_database = Some(p.clone());
            p
        } else {
            String::new()
        };
        Some(Rebuilt {
            damaged_file: aside,
            error: report
                .damage
                .clone()
                .unwrap_or_else(|| "set aside by latus repair".into()),
            journal_complete: false,
            by_repair: true,
        })
    };
    tracing::info!(keep, complete, ?damage, "repairing the database");
    let node = open_node_with(home, prior, true)?;
    report.recovery = node.recovery.clone();
    let result = (|| -> Result<(), DaemonError> {
        match open_volume(&node)? {
            Some(volume) => {
                let handle = Arc::new(VolumeHandle::new(
                    node.config.cloud.clone(),
                    node.key,
                    Some(volume),
                    Some(node.epochs_file.clone()),
                ));
                let uploader = Uploader::manual(
                    node.vfs.clone(),
                    node.engine.clone(),
                    node.meta.clone(),
                    node.store.clone(),
                    node.config.clone(),
                    node.signer.clone(),
                    handle,
                );
                match uploader.catch_up() {
                    Ok(status) => report.log = Some(status),
                    Err(e) => {
                        let mut status = uploader.status();
                        if status.log_breach.is_some() {
                            report.log = Some(status);
                        } else {
                            status.last_error = Some(e.to_string());
                            report.cloud_error = Some(e.to_string());
                        }
                    }
                }
            }
            None => report.cloud_error = Some("not reachable".into()),
        }
        node.meta.commit_pending()?;
        let after = node.meta.state(PUBLISHED_THROUGH)?;
        report.unpublished = node.meta.unpublished_events(after, usize::MAX)?.len();
        Ok(())
    })();
    node.vfs.shutdown()?;
    result?;
    Ok(report)
}
