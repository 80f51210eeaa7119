//! Ignore rules: names that work normally in the mount but never produce an
//! event and never leave the node (editor swap files, OS litter).

use glob::{MatchOptions, Pattern};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const DEFAULT_PATTERNS: &[&str] = &[
    "*.swp",
    "*.swx",
    "*.swo",
    "*~",
    ".#*",
    "#*#",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "*.tmp",
    ".~lock.*#",
    "~$*",
];

#[derive(Debug, Error)]
#[error("bad ignore pattern {pattern:?}: {source}")]
pub struct PatternError {
    pattern: String,
    source: glob::PatternError,
}

/// Patterns are matched against each name component of a path: a path is
/// ignored when any of its components matches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

impl IgnoreRules {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Pattern::new(p.as_ref()).map_err(|source| PatternError {
                    pattern: p.as_ref().to_string(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    pub fn defaults() -> Self {
        Self::new(DEFAULT_PATTERNS).expect("default patterns are valid")
    }

    pub fn name_is_ignored(&self, name: &str) -> bool {
        let opts = MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.patterns.iter().any(|p| p.matches_with(name, opts))
    }
}

impl TryFrom<Vec<String>> for IgnoreRules {
    type Error = PatternError;
    fn try_from(v: Vec<String>) -> Result<Self, Self::Error> {
        Self::new(&v)
    }
}

impl From<IgnoreRules> for Vec<String> {
    fn from(r: IgnoreRules) -> Self {
        r.patterns.iter().map(|p| p.as_str().to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_editor_and_os_litter() {
        let r = IgnoreRules::defaults();
        for n in [
            ".a.txt.swp",
            "a.txt~",
            ".#a.txt",
            ".DS_Store",
            "Thumbs.db",
            "x.tmp",
        ] {
            assert!(r.name_is_ignored(n), "{n}");
        }
        for n in ["a.txt", "swp", "notes.md", "tmp"] {
            assert!(!r.name_is_ignored(n), "{n}");
        }
    }

    #[test]
    fn bad_pattern_is_a_clear_error() {
        let e = IgnoreRules::new(&["[unclosed"]).unwrap_err();
        assert!(e.to_string().contains("[unclosed"));
    }
}
