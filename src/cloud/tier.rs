//! The cold tier: where an object is kept, and the per-volume settings that
//! say what "cold" is on each backend.
//!
//! - `aws`: the chunk object copied onto itself with a colder storage class
//!   (`cold_class`). `GLACIER_IR` reads at once; `GLACIER` and
//!   `DEEP_ARCHIVE` must be restored first (`RestoreObject` with
//!   `restore_tier`), after which the restored copy reads like any other
//!   for `restore_days` and then the object is cold again.
//! - `dir`: the object moved to a second folder (`cold_dir`), a disk or NAS
//!   that is usually not connected: it reads at once when it is there and
//!   fails with `ColdOffline` when it is not.
//!
//! A cold tier never holds the only copy of a chunk that a hot file uses:
//! the chunk stays (or goes back) hot (see `sync::cold`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where an object is, as its store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// The ordinary tier.
    Hot,
    /// Cold, and readable at once (Glacier Instant Retrieval, a connected
    /// cold folder).
    Cold,
    /// Cold, and must be restored before it can be read.
    Frozen,
    /// Cold, a restore is under way.
    Thawing,
    /// Cold, restored: readable until the restore expires.
    Ready,
    /// In a cold folder that is not connected now.
    Offline,
}

impl Tier {
    /// Whether a `get` can return the object now.
    pub fn readable(self) -> bool {
        matches!(self, Tier::Hot | Tier::Cold | Tier::Ready)
    }

    pub fn is_cold(self) -> bool {
        self != Tier::Hot
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Cold => "cold",
            Tier::Frozen => "cold",
            Tier::Thawing => "thawing",
            Tier::Ready => "ready",
            Tier::Offline => "cold (not connected)",
        }
    }
}

/// An object's stored length and tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    pub size: u64,
    pub tier: Tier,
}

/// The S3 storage class of the cold tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColdClass {
    /// Glacier Instant Retrieval: read at once, about $0.004 per GB-month.
    #[default]
    #[serde(rename = "GLACIER_IR")]
    GlacierIr,
    /// Glacier Flexible Retrieval: restored first (minutes to hours),
    /// about $0.0036 per GB-month.
    #[serde(rename = "GLACIER")]
    Glacier,
    /// Glacier Deep Archive: restored first (12 to 48 hours), about
    /// $0.00099 per GB-month.
    #[serde(rename = "DEEP_ARCHIVE")]
    DeepArchive,
}

impl ColdClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ColdClass::GlacierIr => "GLACIER_IR",
            ColdClass::Glacier => "GLACIER",
            ColdClass::DeepArchive => "DEEP_ARCHIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "GLACIER_IR" => Some(ColdClass::GlacierIr),
            "GLACIER" => Some(ColdClass::Glacier),
            "DEEP_ARCHIVE" => Some(ColdClass::DeepArchive),
            _ => None,
        }
    }

    /// Whether objects of this class must be restored before a read.
    pub fn restore_first(self) -> bool {
        self != ColdClass::GlacierIr
    }
}

/// How fast (and how dear) a restore is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreTier {
    #[serde(rename = "Expedited")]
    Expedited,
    #[default]
    #[serde(rename = "Standard")]
    Standard,
    #[serde(rename = "Bulk")]
    Bulk,
}

impl RestoreTier {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreTier::Expedited => "Expedited",
            RestoreTier::Standard => "Standard",
            RestoreTier::Bulk => "Bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "expedited" => Some(RestoreTier::Expedited),
            "standard" => Some(RestoreTier::Standard),
            "bulk" => Some(RestoreTier::Bulk),
            _ => None,
        }
    }

    /// Roughly how long a restore of `class` takes at this tier (AWS's
    /// published ranges), for the line that says when a file is ready.
    pub fn typical_wait(self, class: ColdClass) -> &'static str {
        match (class, self) {
            (ColdClass::GlacierIr, _) => "at once",
            (ColdClass::Glacier, RestoreTier::Expedited) => "1 to 5 minutes",
            (ColdClass::Glacier, RestoreTier::Standard) => "3 to 5 hours",
            (ColdClass::Glacier, RestoreTier::Bulk) => "5 to 12 hours",
            // Deep Archive has no expedited retrieval: S3 refuses it.
            (ColdClass::DeepArchive, RestoreTier::Bulk) => "up to 48 hours",
            (ColdClass::DeepArchive, _) => "up to 12 hours",
        }
    }
}

/// The volume's cold tier, from the home's `config.json` (`cold_class`,
/// `restore_tier`, `restore_days`, `cold_dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdSettings {
    /// `aws`: the storage class cold chunks get (default `GLACIER_IR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_class: Option<ColdClass>,
    /// `aws`: the retrieval tier of restores (default `Standard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_tier: Option<RestoreTier>,
    /// `aws`: how long a restored copy stays readable (default 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_days: Option<u32>,
    /// `dir`: the cold folder (no cold tier when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_dir: Option<PathBuf>,
}

impl ColdSettings {
    pub fn class(&self) -> ColdClass {
        self.cold_class.unwrap_or_default()
    }

    pub fn tier(&self) -> RestoreTier {
        self.restore_tier.unwrap_or_default()
    }

    pub fn days(&self) -> u32 {
        self.restore_days.unwrap_or(7).max(1)
    }
}
