//! The version of every format latus keeps on disk or in the cloud, in one
//! place for `latus --version` (and README "Formats"). Each format's layout
//! and its "Version changes" list live beside its code, named here.

use std::sync::LazyLock;

/// One format: the version this latus writes and the oldest it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub name: &'static str,
    pub writes: u32,
    pub reads_from: u32,
}

/// Every format, home first.
pub const ALL: [Format; 8] = [
    // `home`: layout and config.json; older homes are upgraded in place.
    Format {
        name: "home",
        writes: crate::home::FORMAT,
        reads_from: crate::home::OLDEST_FORMAT,
    },
    // `meta`: redb tables and keys.
    Format {
        name: "database",
        writes: crate::meta::DB_FORMAT,
        reads_from: 1,
    },
    // `meta::wal`: journal frames.
    Format {
        name: "journal",
        writes: crate::meta::JOURNAL_FORMAT,
        reads_from: 1,
    },
    // `crypto::KeyFile`.
    Format {
        name: "key file",
        writes: crate::crypto::KEY_FILE_FORMAT,
        reads_from: crate::crypto::KEY_FILE_FORMAT,
    },
    // `crypto`: sealed object framing.
    Format {
        name: "sealed object",
        writes: crate::crypto::SEALED_FORMAT,
        reads_from: crate::crypto::SEALED_FORMAT,
    },
    // `sync::payload`: the sealed event of a log record.
    Format {
        name: "event payload",
        writes: crate::sync::EVENT_PAYLOAD_FORMAT,
        reads_from: 1,
    },
    // `sync::volume`: the volume's marker object.
    Format {
        name: "volume",
        writes: crate::sync::VOLUME_FORMAT,
        reads_from: crate::sync::VOLUME_FORMAT,
    },
    // `sync::checkpoint`: sealed checkpoints of the log.
    Format {
        name: "checkpoint",
        writes: crate::sync::checkpoint::FORMAT,
        reads_from: crate::sync::checkpoint::FORMAT,
    },
];

/// The commit this binary was built from (`build.rs`; "unknown" outside a
/// git checkout).
pub const COMMIT: &str = env!("LATUS_GIT_COMMIT");

/// `latus --version`: version, commit, and each format written and read.
pub fn long_version() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        let mut s = format!("{} (commit {COMMIT})\nformats:", env!("CARGO_PKG_VERSION"));
        for f in ALL {
            s.push_str(&format!("\n  {:<14} {}", f.name, f.writes));
            if f.reads_from < f.writes {
                s.push_str(&format!(" (reads {}-{})", f.reads_from, f.writes));
            }
        }
        s
    });
    &TEXT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_reads_what_it_writes() {
        for f in ALL {
            assert!(f.reads_from >= 1 && f.reads_from <= f.writes, "{f:?}");
        }
        let text = long_version();
        assert!(text.starts_with(env!("CARGO_PKG_VERSION")), "{text}");
        for f in ALL {
            assert!(text.contains(f.name), "{text}");
        }
    }
}
