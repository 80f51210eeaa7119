//! The core's side of the cold placement: which versions files need hot
//! or cold, and letting copies below a cold rule go once the cooler
//! (`sync::cold`) has confirmed their chunks in the cold tier.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::{Vfs, lock};
use crate::meta::{Ino, Kind, Placement};

/// Current versions of this node's files, by what their placement needs.
#[derive(Debug, Default, Clone)]
pub struct ColdSplit {
    /// Versions of files below a cold rule.
    pub cold: HashSet<String>,
    /// Versions of every other file (and versions waiting for upload).
    pub hot: HashSet<String>,
}

/// A file below a cold rule.
#[derive(Debug, Clone)]
pub struct ColdFile {
    pub ino: Ino,
    pub path: String,
    pub object: String,
    pub size: u64,
}

impl Vfs {
    /// Current versions by placement: cold below a cold rule, hot elsewhere.
    pub fn cold_split(&self) -> ColdSplit {
        let st = lock(&self.state);
        let mut split = ColdSplit::default();
        for n in st.tree.nodes.values() {
            let Some(o) = &n.row.object else { continue };
            if n.linked
                && n.row.kind == Kind::File
                && st.tree.rule_at(n.row.ino).0 == Some(Placement::Cold)
            {
                split.cold.insert(o.clone());
            } else {
                split.hot.insert(o.clone());
            }
        }
        split.hot.extend(st.pinned.keys().cloned());
        split
    }

    /// Files at and below `path` (all files when `None`) with their
    /// current versions; only those below a cold rule with `cold_only`.
    pub fn files_below(&self, path: Option<&str>, cold_only: bool) -> super::Result<Vec<ColdFile>> {
        let ino = match path {
            Some(p) => self.resolve(p)?,
            None => crate::meta::ROOT_INO,
        };
        let st = lock(&self.state);
        let mut all = vec![ino];
        all.extend(st.tree.descendants(ino));
        Ok(all
            .into_iter()
            .filter_map(|i| {
                let n = st.tree.get(i)?;
                if n.row.kind != Kind::File
                    || (cold_only && st.tree.rule_at(i).0 != Some(Placement::Cold))
                {
                    return None;
                }
                Some(ColdFile {
                    ino: i,
                    path: st.tree.path(i).unwrap_or_default(),
                    object: n.row.object.clone()?,
                    size: n.row.size,
                })
            })
            .collect())
    }

    /// The versions whose chunks are confirmed where a cold rule wants them;
    /// copies of those newly confirmed are evicted now below cold rules
    /// (a copy read back later stays cached like any other).
    pub fn set_cold_ready(&self, ready: HashSet<String>) -> super::EvictReport {
        let fresh: HashSet<String> = {
            let mut known = lock(&self.cold_ready);
            let fresh = ready.difference(&known).cloned().collect();
            *known = ready;
            fresh
        };
        if fresh.is_empty() {
            return super::EvictReport::default();
        }
        self.evict_where(crate::meta::ROOT_INO, &|o| fresh.contains(o))
            .unwrap_or_default()
    }

    pub(super) fn is_cold_ready(&self, object: &str) -> bool {
        lock(&self.cold_ready).contains(object)
    }

    /// Whether `ino` is below a cold rule.
    pub fn under_cold_rule(&self, ino: Ino) -> bool {
        lock(&self.state).tree.rule_at(ino).0 == Some(Placement::Cold)
    }

    /// Whether a placement changed since the last call.
    pub fn take_cold_dirty(&self) -> bool {
        self.cold_dirty.swap(false, Ordering::AcqRel)
    }

    /// Asks for another cooler pass (the last one could not finish).
    pub fn mark_cold_dirty(&self) {
        self.cold_dirty.store(true, Ordering::Release);
    }
}
