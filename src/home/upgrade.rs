//! Upgrades an older home to this latus's format, in place and once. The
//! database and the journal are copied aside first (the copies stay beside
//! them), every step can run twice, and `config.json` takes the new format
//! last: a crash during an upgrade leaves an older home that the next open
//! upgrades again, from the same backup.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{Config, FORMAT, Home, HomeError, OLDEST_FORMAT, this_latus};

/// What an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    pub from: u32,
    pub to: u32,
    /// The copies of the database and journal as they were before.
    pub backups: Vec<PathBuf>,
}

impl Home {
    /// The node's config, after upgrading an older home to `FORMAT`; a
    /// newer home is refused untouched. The caller holds the home's lock:
    /// nothing else has the database open.
    pub fn load_config_upgraded(&self) -> Result<(Config, Option<Upgraded>), HomeError> {
        let mut config = self.load_config()?;
        let from = config.format_version;
        if from >= FORMAT {
            return Ok((config, None));
        }
        let fail = |step: &'static str, reason: String| HomeError::Upgrade {
            path: self.root.clone(),
            from,
            step,
            reason,
        };
        if from < OLDEST_FORMAT {
            return Err(fail(
                "its format",
                format!("no latus wrote home format {from}"),
            ));
        }
        let mut backups = Vec::new();
        for path in [self.db_path(), self.wal_path()] {
            if let Some(b) = backup(&path, from).map_err(|e| fail("the backup", e.to_string()))? {
                backups.push(b);
            }
        }
        // 1 → 2: the database records its format; 2 → 3: the new mark only.
        if self.db_path().exists() {
            crate::meta::mark_db_format(&self.db_path())
                .map_err(|e| fail("the database's format mark", e.to_string()))?;
        }
        config.format_version = FORMAT;
        config.written_by = this_latus();
        self.save_config(&config)?;
        tracing::warn!(
            home = %self.root.display(),
            from,
            to = FORMAT,
            backups = ?backups,
            "upgraded the home's format in place (the backups are kept beside the database)"
        );
        Ok((
            config,
            Some(Upgraded {
                from,
                to: FORMAT,
                backups,
            }),
        ))
    }
}

/// `PATH.format-N.backup`: where `path` is kept before an upgrade from
/// home format N.
pub fn backup_path(path: &Path, from: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".format-{from}.backup"));
    PathBuf::from(name)
}

/// Copies `path` to its backup, which is either whole or absent (copied
/// under another name, synced, renamed). A backup already there is kept:
/// it is the state before the first attempt of this upgrade.
fn backup(path: &Path, from: u32) -> io::Result<Option<PathBuf>> {
    let dest = backup_path(path, from);
    if dest.exists() {
        return Ok(Some(dest));
    }
    if !path.exists() {
        return Ok(None);
    }
    let mut tmp = dest.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::copy(path, &tmp)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &dest)?;
    if let Some(dir) = dest.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(Some(dest))
}
