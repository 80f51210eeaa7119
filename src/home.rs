//! The node's state folder: its identity, key, database, journal and local
//! content. Two homes on one machine are two independent nodes.
//!
//! Layout (all paths relative to the home):
//! - `config.json`  node id and name, cloud URL, ignore patterns
//! - `node.key`     32 random bytes, mode 0600, never sent anywhere
//! - `node.sign`    this node's signing key (hex), mode 0600, made at the
//!   first start; never sent anywhere
//! - `node.epochs`  the volume's later key epochs (after `nodes remove`),
//!   mode 0600
//! - `latus.redb`   metadata database (see `meta`)
//! - `journal.wal`  write-ahead journal in front of the database
//! - `store/objects/` local content, one file per version
//! - `cloud/`       the embedded `dir:` cloud, unless `--cloud` names another
//! - `daemon.pid`, `daemon.log`, `daemon.sock`, `daemon.lock` while mounted
//! - `latus.redb.format-N.backup`, `journal.wal.format-N.backup`: the
//!   database and journal as they were before the home was upgraded from
//!   format N (kept; delete them by hand once the upgrade has proved itself)
//!
//! Home format (`config.json` `format_version`; the database records its
//! own, `meta::DB_FORMAT`): a latus opens homes of its own format and older
//! ones, upgrading an older home in place once, after a backup of its
//! database (`upgrade`); it refuses a newer home and changes nothing.
//!
//! Version changes: 1 — first format; 2 — the database records its format
//! (`state` row `db_format`), `config.json` names the latus that wrote the
//! format (`written_by`), and a newer home is refused; 3 — the database
//! may hold rows an older latus cannot read (database format 3), so an older
//! latus refuses the home by its format instead.

mod upgrade;

pub use upgrade::{Upgraded, backup_path};

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::ignore::IgnoreRules;

pub use crate::crypto::KEY_LEN;

#[derive(Debug, Error)]
pub enum HomeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a latus home (no config.json); run `latus init` first")]
    NotInitialised { path: PathBuf },
    #[error("{path} is already initialised as node {node_id}")]
    AlreadyInitialised { path: PathBuf, node_id: Uuid },
    #[error(
        "{path} exists: this home holds a node already (a damaged config.json is repaired by hand, never replaced); use another --home"
    )]
    NotEmpty { path: PathBuf },
    #[error("config {path} is unreadable: {source}")]
    BadConfig {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("key file {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("could not read random bytes from the OS: {0}")]
    Random(String),
    #[error(
        "{path} was written by a newer latus (home format {found}{}); this latus {} reads home formats up to {FORMAT}: {}",
        written_by_clause(written_by), env!("CARGO_PKG_VERSION"), install_hint(written_by)
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        written_by: String,
    },
    #[error(
        "upgrading {path} from home format {from} to {FORMAT} failed at {step}: {reason} (the home is left at format {from}; run the command again, or restore the backup beside the database)"
    )]
    Upgrade {
        path: PathBuf,
        from: u32,
        step: &'static str,
        reason: String,
    },
}

/// The home format this latus writes.
pub const FORMAT: u32 = 3;
/// The oldest home format this latus opens (and upgrades).
pub const OLDEST_FORMAT: u32 = 1;

fn written_by_clause(written_by: &str) -> String {
    if written_by.is_empty() {
        String::new()
    } else {
        format!(", by {written_by}")
    }
}

fn install_hint(written_by: &str) -> String {
    match written_by.strip_prefix("latus ") {
        Some(v) if !v.is_empty() => format!("install latus ≥ {v}"),
        _ => "install a newer latus".to_string(),
    }
}

/// What `written_by` says of this build.
pub fn this_latus() -> String {
    format!("latus {}", env!("CARGO_PKG_VERSION"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The home format (see the module's notes).
    pub format_version: u32,
    /// The latus that created this home or last upgraded its format
    /// (`latus 0.2.0`); named when an older latus refuses the home.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub written_by: String,
    pub node_id: Uuid,
    pub node_name: String,
    /// `dir:PATH` (embedded default) or `aws://BUCKET?table=...`.
    pub cloud: String,
    #[serde(default = "IgnoreRules::defaults")]
    pub ignore: IgnoreRules,
    /// Unix seconds.
    pub created: i64,
    /// How often the log is checked for other nodes' changes.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Version history kept by `latus prune` (all when both are unset).
    #[serde(default)]
    pub retention: Retention,
    /// A checkpoint of the log (`sync::checkpoint`) after this many
    /// records since the newest one; 0: this node makes none by itself.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// The local cache's cap in bytes (content beyond it that is safely in
    /// the cloud is evicted, least recently used first); unset: a tenth of
    /// the disk holding the home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_bytes: Option<u64>,
    /// What reading content that is only in the cloud does, per program.
    #[serde(default)]
    pub hydration: crate::hydration::Policy,
    /// Which of two concurrent changes to a file keeps its name: `newest`
    /// (default: the change made last, by its node's clock) or `first`
    /// (the change first in the log). The other becomes a conflict copy.
    #[serde(default, skip_serializing_if = "ConflictPolicy::is_default")]
    pub conflict_policy: ConflictPolicy,
    /// The volume's cold tier (`cold_class`, `restore_tier`,
    /// `restore_days`, `cold_dir`).
    #[serde(flatten)]
    pub cold: crate::cloud::ColdSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    #[default]
    Newest,
    First,
}

impl ConflictPolicy {
    fn is_default(&self) -> bool {
        *self == Self::Newest
    }
}

fn default_checkpoint_every() -> u64 {
    crate::sync::checkpoint::DEFAULT_EVERY
}

fn default_poll_ms() -> u64 {
    3000
}

/// Which old versions `latus prune` keeps; current versions are always kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Retention {
    /// Keep the newest N versions of each path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_versions: Option<u32>,
    /// Keep every version younger than D days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
    /// Versions no longer current and older than D days move to the cold
    /// tier instead of being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_after_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$XDG_DATA_HOME/latus`, else `~/.local/share/latus`.
    pub fn default_root() -> PathBuf {
        if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("latus");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".local/share/latus")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn key_path(&self) -> PathBuf {
        self.root.join("node.key")
    }
    pub fn sign_key_path(&self) -> PathBuf {
        self.root.join("node.sign")
    }
    /// The volume's later key epochs (`sync::VolumeHandle`).
    pub fn epochs_path(&self) -> PathBuf {
        self.root.join("node.epochs")
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join("latus.redb")
    }
    pub fn wal_path(&self) -> PathBuf {
        self.root.join("journal.wal")
    }
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("store").join("objects")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    pub fn log_path(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("daemon.sock")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    pub fn default_cloud(&self) -> String {
        format!("dir:{}", self.root.join("cloud").display())
    }

    pub fn is_initialised(&self) -> bool {
        self.config_path().exists()
    }

    /// Replaces config.json atomically (a crash leaves the old or the new).
    pub fn save_config(&self, config: &Config) -> Result<(), HomeError> {
        let json = serde_json::to_vec_pretty(config).expect("config serialises");
        let tmp = self.root.join("config.json.tmp");
        write_private(&tmp, &json)?;
        fs::rename(&tmp, self.config_path()).map_err(io_err(&tmp))
    }

    pub fn load_config(&self) -> Result<Config, HomeError> {
        let path = self.config_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HomeError::NotInitialised {
                    path: self.root.clone(),
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|source| HomeError::BadConfig { path, source })?;
        if config.format_version > FORMAT {
            return Err(HomeError::TooNew {
                path: self.root.clone(),
                found: config.format_version,
                written_by: config.written_by,
            });
        }
        Ok(config)
    }

    /// Creates the node: identity, key, folders. The database is created by
    /// the first `Meta::open`.
    pub fn init(
        &self,
        name: Option<String>,
        cloud: Option<String>,
        key_file: Option<&Path>,
    ) -> Result<Config, HomeError> {
        if let Ok(existing) = self.load_config() {
            return Err(HomeError::AlreadyInitialised {
                path: self.root.clone(),
                node_id: existing.node_id,
            });
        }
        // A damaged config or a lone key is a node to repair, never to
        // replace: overwriting node.key would lose the volume's key.
        for p in [self.config_path(), self.key_path(), self.db_path()] {
            if p.exists() {
                return Err(HomeError::NotEmpty { path: p });
            }
        }
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        restrict_to_owner(&self.root)?;
        let objects = self.objects_dir();
        fs::create_dir_all(&objects).map_err(io_err(&objects))?;

        let key = match key_file {
            Some(path) => read_key_file(path)?,
            None => random_key()?,
        };
        write_private(&self.key_path(), &key)?;
        if let Some(path) = key_file {
            let epochs = fs::read(path)
                .ok()
                .filter(|b| b.len() != KEY_LEN)
                .map(|b| crate::crypto::KeyFile::parse_epochs(&b))
                .transpose()
                .map_err(|e| HomeError::BadKey {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
                .unwrap_or_default();
            if !epochs.is_empty() {
                write_private(
                    &self.epochs_path(),
                    &serde_json::to_vec_pretty(&epochs).expect("epochs serialise"),
                )?;
            }
        }

        let cloud = cloud.unwrap_or_else(|| self.default_cloud());
        if let Some(dir) = cloud.strip_prefix("dir:") {
            fs::create_dir_all(dir).map_err(io_err(Path::new(dir)))?;
        }
        let config = Config {
            format_version: FORMAT,
            written_by: this_latus(),
            node_id: Uuid::new_v4(),
            node_name: name.unwrap_or_else(default_node_name),
            cloud,
            ignore: IgnoreRules::defaults(),
            created: unix_now_secs(),
            poll_ms: default_poll_ms(),
            checkpoint_every: default_checkpoint_every(),
            retention: Retention::default(),
            cache_bytes: None,
            hydration: Default::default(),
            conflict_policy: ConflictPolicy::default(),
            cold: Default::default(),
        };
        let json = serde_json::to_vec_pretty(&config).expect("config serialises");
        // Written last and atomically: a home with config.json is complete.
        let tmp = self.root.join("config.json.tmp");
        write_private(&tmp, &json)?;
        fs::rename(&tmp, self.config_path()).map_err(io_err(&tmp))?;
        Ok(config)
    }
}

fn restrict_to_owner(dir: &Path) -> Result<(), HomeError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn random_key() -> Result<Vec<u8>, HomeError> {
    let mut key = vec![0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| HomeError::Random(e.to_string()))?;
    Ok(key)
}

/// Accepts the exported key file (`latus key export`) or 32 raw bytes.
fn read_key_file(path: &Path) -> Result<Vec<u8>, HomeError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    if bytes.len() == KEY_LEN {
        return Ok(bytes);
    }
    crate::crypto::KeyFile::parse(&bytes)
        .map(|k| k.to_vec())
        .map_err(|e| HomeError::BadKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The node's volume key.
/// This node's signing key (`crypto::NodeSigner`), made on first use
/// (homes from before signatures have none yet). Written whole and
/// atomically: a node's key never changes once its records carry it.
pub fn node_signer(home: &Home) -> Result<crate::crypto::NodeSigner, HomeError> {
    use crate::crypto::NodeSigner;
    let path = home.sign_key_path();
    let bad = |reason: String| HomeError::BadKey {
        path: path.clone(),
        reason,
    };
    match fs::read_to_string(&path) {
        Ok(text) => NodeSigner::from_text(&text).map_err(|e| bad(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = NodeSigner::generate().map_err(|e| HomeError::Random(e.to_string()))?;
            let tmp = home.root.join("node.sign.tmp");
            write_private(&tmp, signer.to_text().as_bytes())?;
            // Never replaces a key another process made meanwhile.
            fs::hard_link(&tmp, &path).or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(HomeError::Io {
                    path: path.clone(),
                    source: e,
                }),
            })?;
            let _ = fs::remove_file(&tmp);
            let text = fs::read_to_string(&path).map_err(io_err(&path))?;
            NodeSigner::from_text(&text).map_err(|e| bad(e.to_string()))
        }
        Err(e) => Err(HomeError::Io { path, source: e }),
    }
}

pub fn load_key(home: &Home) -> Result<[u8; KEY_LEN], HomeError> {
    let path = home.key_path();
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    bytes.try_into().map_err(|_| HomeError::BadKey {
        path,
        reason: "not 32 bytes".into(),
    })
}

fn default_node_name() -> String {
    fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

pub fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_a_private_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        let cfg = home.init(Some("n1".into()), None, None).unwrap();
        assert_eq!(cfg.node_name, "n1");
        assert_eq!(fs::read(home.key_path()).unwrap().len(), KEY_LEN);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(home.key_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(home.load_config().unwrap().node_id, cfg.node_id);
        assert!(matches!(
            home.init(None, None, None),
            Err(HomeError::AlreadyInitialised { .. })
        ));
    }

    #[test]
    fn a_newer_home_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        let mut cfg = home.init(None, None, None).unwrap();
        cfg.format_version = FORMAT + 1;
        cfg.written_by = "latus 7.0.1".into();
        home.save_config(&cfg).unwrap();
        let before = fs::read(home.config_path()).unwrap();
        let e = home.load_config_upgraded().unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, HomeError::TooNew { .. }), "{msg}");
        assert!(
            msg.contains(&format!(
                "newer latus (home format {}, by latus 7.0.1)",
                FORMAT + 1
            )),
            "{msg}"
        );
        assert!(msg.contains("install latus ≥ 7.0.1"), "{msg}");
        assert_eq!(fs::read(home.config_path()).unwrap(), before);
        // Without `written_by`, the hint is still an install.
        cfg.written_by.clear();
        home.save_config(&cfg).unwrap();
        let msg = home.load_config().unwrap_err().to_string();
        assert!(msg.contains("install a newer latus"), "{msg}");
    }

    #[test]
    fn an_upgrade_run_again_keeps_the_first_backup() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        let mut cfg = home.init(None, None, None).unwrap();
        cfg.format_version = 1;
        cfg.written_by.clear();
        home.save_config(&cfg).unwrap();
        // A journal, and the backup an interrupted upgrade already took.
        fs::write(home.wal_path(), b"journal now").unwrap();
        let backup = backup_path(&home.wal_path(), 1);
        fs::write(&backup, b"journal before the first attempt").unwrap();
        let (cfg, upgraded) = home.load_config_upgraded().unwrap();
        let upgraded = upgraded.expect("upgraded");
        assert_eq!((upgraded.from, upgraded.to), (1, FORMAT));
        assert_eq!(upgraded.backups, vec![backup.clone()]);
        assert_eq!(
            fs::read(&backup).unwrap(),
            b"journal before the first attempt"
        );
        assert_eq!(cfg.format_version, FORMAT);
        assert_eq!(home.load_config().unwrap().written_by, this_latus());
        // Once: a home at this format is not upgraded again.
        assert!(home.load_config_upgraded().unwrap().1.is_none());
    }

    #[test]
    fn key_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let kf = dir.path().join("k.json");
        fs::write(
            &kf,
            r#"{"format_version":1,"key":"abcd","fingerprint":"x","created":0}"#,
        )
        .unwrap();
        let home = Home::new(dir.path().join("h"));
        let e = home.init(None, None, Some(&kf)).unwrap_err();
        assert!(e.to_string().contains("not 32 bytes"), "{e}");
        let good = crate::crypto::KeyFile::new(&[0xab; 32], 0);
        fs::write(&kf, serde_json::to_vec(&good).unwrap()).unwrap();
        home.init(None, None, Some(&kf)).unwrap();
        assert_eq!(fs::read(home.key_path()).unwrap(), vec![0xab; 32]);
    }
}
