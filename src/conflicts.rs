//! Conflict copies: the versions that lost their name in a conflict
//! (`name (conflict from NODE YYYY-MM-DD HHMMSS).ext`, made by the log's
//! fold the same on every node), listed and resolved. Resolving is an
//! ordinary change through the core (a delete or a rename over the name),
//! so it syncs like any other and every version stays in history.

use std::ffi::OsStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::vfs::{RenameFlags, Vfs, VfsError};

const MARK: &str = " (conflict from ";

#[derive(Debug, Error)]
pub enum ConflictError {
    #[error("{0} is not a conflict copy (see `latus conflicts` for the list)")]
    NotACopy(String),
    #[error("{0}: no such file")]
    Missing(String),
    #[error(
        "{0:?} is not a choice: --keep mine (this node's version), theirs (the other node's) or both (keep both files)"
    )]
    BadChoice(String),
    #[error("{path}: {source}")]
    Vfs { path: String, source: VfsError },
}

/// Which version stays under the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// This node's version.
    Mine,
    /// The other node's version.
    Theirs,
    /// Both: the copy gets a plain name of its own.
    Both,
}

impl std::str::FromStr for Keep {
    type Err = ConflictError;
    fn from_str(s: &str) -> Result<Self, ConflictError> {
        match s {
            "mine" => Ok(Keep::Mine),
            "theirs" => Ok(Keep::Theirs),
            "both" => Ok(Keep::Both),
            _ => Err(ConflictError::BadChoice(s.to_string())),
        }
    }
}

/// A conflict copy's name, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyName {
    /// The name the copy lost (`report.txt`).
    pub original: String,
    /// The node that made the copy's version.
    pub node: String,
    /// When, as the name says (`2026-12-02 140509`, UTC).
    pub when: String,
}

/// Parses `stem (conflict from NODE YYYY-MM-DD HHMMSS)ext`.
pub fn parse_copy_name(name: &str) -> Option<CopyName> {
    let at = name.rfind(MARK)?;
    let stem = &name[..at];
    let rest = &name[at + MARK.len()..];
    let close = rest.rfind(')')?;
    let (inner, ext) = (&rest[..close], &rest[close + 1..]);
    // NODE DATE TIME: the node's name may hold spaces, the date and time do not.
    let (head, time) = inner.rsplit_once(' ')?;
    let (node, date) = head.rsplit_once(' ')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let d: Vec<&str> = date.split('-').collect();
    if !(d.len() == 3 && digits(d[0], 4) && digits(d[1], 2) && digits(d[2], 2) && digits(time, 6))
        || node.is_empty()
        || ext.contains(['(', ')'])
    {
        return None;
    }
    Some(CopyName {
        original: format!("{stem}{ext}"),
        node: node.to_string(),
        when: format!("{date} {time}"),
    })
}

/// One conflict copy in the tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conflict {
    /// The copy's path.
    pub path: String,
    /// The path whose name it lost (it may be gone since).
    pub original: String,
    pub original_exists: bool,
    /// The node that made the copy's version, and when (UTC, from the name).
    pub node: String,
    pub when: String,
    /// The copy holds this node's version (it was made here).
    pub mine: bool,
    pub size: u64,
}

/// Every conflict copy in the tree, by path.
pub fn list(vfs: &Vfs, this_node_name: &str) -> Vec<Conflict> {
    let me = crate::sync::names::display_node_name(this_node_name);
    vfs.files_named(|n| parse_copy_name(n).is_some())
        .into_iter()
        .filter_map(|f| {
            let (dir, name) = split(&f.path);
            let c = parse_copy_name(name)?;
            let original = join(dir, &c.original);
            Some(Conflict {
                original_exists: vfs.resolve(&original).is_ok(),
                original,
                mine: c.node == me,
                node: c.node,
                when: c.when,
                path: f.path,
                size: f.size,
            })
        })
        .collect()
}

/// What a resolution did, in words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    pub path: String,
    pub kept: String,
    /// Where the other version went (`None`: it was removed; it stays in
    /// history, `latus versions`).
    pub moved_to: Option<String>,
    pub removed: Option<String>,
}

/// Resolves the conflict of copy `path` (or of a path whose copy is the
/// only one): keeps `keep` under the original name.
pub fn resolve(
    vfs: &Vfs,
    this_node_name: &str,
    path: &str,
    keep: Keep,
) -> Result<Resolved, ConflictError> {
    let all = list(vfs, this_node_name);
    let c = match all.iter().find(|c| c.path == path) {
        Some(c) => c.clone(),
        None => {
            let mut of: Vec<&Conflict> = all.iter().filter(|c| c.original == path).collect();
            match (of.pop(), of.is_empty()) {
                (Some(c), true) => c.clone(),
                (Some(_), false) => {
                    return Err(ConflictError::NotACopy(format!(
                        "{path} has several conflict copies; name the copy to resolve"
                    )));
                }
                (None, _) if vfs.resolve(path).is_err() => {
                    return Err(ConflictError::Missing(path.to_string()));
                }
                (None, _) => return Err(ConflictError::NotACopy(path.to_string())),
            }
        }
    };
    let vfs_err = |p: &str| {
        let p = p.to_string();
        move |source| ConflictError::Vfs { path: p, source }
    };
    // The copy wins when it holds the version asked for.
    let copy_wins = match keep {
        Keep::Both => {
            let target = free_name(vfs, &both_name(&c.original, &c.node));
            rename(vfs, &c.path, &target).map_err(vfs_err(&c.path))?;
            return Ok(Resolved {
                path: c.original,
                kept: "both".into(),
                moved_to: Some(target),
                removed: None,
            });
        }
        Keep::Mine => c.mine,
        Keep::Theirs => !c.mine,
    };
    if copy_wins || !c.original_exists {
        // Over the name: the version there stays in history.
        rename(vfs, &c.path, &c.original).map_err(vfs_err(&c.path))?;
        Ok(Resolved {
            path: c.original.clone(),
            kept: if c.mine { "mine" } else { "theirs" }.into(),
            moved_to: None,
            removed: c.original_exists.then_some(c.original),
        })
    } else {
        unlink(vfs, &c.path).map_err(vfs_err(&c.path))?;
        Ok(Resolved {
            path: c.original,
            kept: if c.mine { "theirs" } else { "mine" }.into(),
            moved_to: None,
            removed: Some(c.path),
        })
    }
}

/// `report (from laptop).txt` for the copy kept beside the original.
fn both_name(original: &str, node: &str) -> String {
    let (dir, name) = split(original);
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    join(dir, &format!("{stem} (from {node}){ext}"))
}

fn free_name(vfs: &Vfs, want: &str) -> String {
    if vfs.resolve(want).is_err() {
        return want.to_string();
    }
    let (dir, name) = split(want);
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (2..)
        .map(|n| join(dir, &format!("{stem} {n}{ext}")))
        .find(|p| vfs.resolve(p).is_err())
        .expect("a free name exists")
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent_of(vfs: &Vfs, path: &str) -> Result<u64, VfsError> {
    vfs.resolve(split(path).0)
}

// Not through the mount: the kernel's caches are told.
fn rename(vfs: &Vfs, from: &str, to: &str) -> Result<(), VfsError> {
    vfs.rename(
        parent_of(vfs, from)?,
        OsStr::new(split(from).1),
        parent_of(vfs, to)?,
        OsStr::new(split(to).1),
        RenameFlags::default(),
    )?;
    vfs.forget_entry(from);
    vfs.forget_entry(to);
    Ok(())
}

fn unlink(vfs: &Vfs, path: &str) -> Result<(), VfsError> {
    vfs.unlink(parent_of(vfs, path)?, OsStr::new(split(path).1))?;
    vfs.forget_entry(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_round_trip() {
        let t = 1_764_684_309_000_000_000; // 2025-12-02 14:05:09 UTC
        for (name, node) in [
            ("report.txt", "laptop"),
            ("Makefile", "my desk (old)"),
            ("a.tar.gz", "vm"),
            ("notes (draft).md", "n"),
        ] {
            let copy = crate::sync::conflict_name(name, node, t);
            let parsed = parse_copy_name(&copy).unwrap_or_else(|| panic!("{copy}"));
            assert_eq!(parsed.original, name, "{copy}");
            assert_eq!(parsed.node, node);
            assert_eq!(parsed.when, "2025-12-02 140509");
        }
        assert_eq!(parse_copy_name("report.txt"), None);
        assert_eq!(parse_copy_name("x (conflict from vm yesterday).txt"), None);
    }

    #[test]
    fn keep_choices_parse() {
        assert_eq!("theirs".parse::<Keep>().unwrap(), Keep::Theirs);
        assert!(matches!(
            "copy".parse::<Keep>(),
            Err(ConflictError::BadChoice(_))
        ));
        assert_eq!(both_name("d/r.txt", "laptop"), "d/r (from laptop).txt");
    }
}
