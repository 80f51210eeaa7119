//! The plain folder: the directory under the mountpoint, exposed whenever
//! latus is not mounted (after a crash, before the first mount, after an
//! unmount). Whatever programs write there would be hidden by the next
//! mount, so it is kept unwritable (mode 0) while latus is not mounted and,
//! at mount, whatever it holds is adopted into the volume as local changes
//! and removed from it.
//!
//! The folder is read through a descriptor opened before the mount:
//! `/proc/self/fd/N/...` resolves to the covered directory, so adoption runs
//! after the mount is up and nothing can land in the plain folder behind it.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::meta::{Ino, Kind, ROOT_INO};
use crate::vfs::{Caller, OpenMode, SetAttr, TimeSet, Vfs, VfsError};

/// The mode the plain folder has while latus is not mounted.
const PROTECTED_MODE: u32 = 0o000;
/// What it needs while mounting: `fusermount3` wants its user to be able
/// to write the mountpoint, and adoption reads it.
const MOUNTING_MODE: u32 = 0o700;

/// What adoption did, for the `recovered:` report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Adoption {
    /// Files, folders and symlinks moved into the volume.
    pub adopted: usize,
    /// Of those, entries kept under a new name because the volume has
    /// something of another kind at their path.
    pub renamed: usize,
    /// Entries left in the plain folder (what could not be moved).
    pub left: usize,
}

pub struct PlainFolder {
    dir: File,
    shown: String,
}

impl PlainFolder {
    /// Opens the directory under `mountpoint` (call before mounting).
    pub fn open(mountpoint: &Path) -> std::io::Result<Self> {
        // Ours to read again; not ours (another user's folder): try anyway.
        if let Err(e) = fs::set_permissions(mountpoint, fs::Permissions::from_mode(MOUNTING_MODE)) {
            tracing::debug!(error = %e, "could not open up the plain folder for the mount");
        }
        Ok(Self {
            dir: File::open(mountpoint)?,
            shown: mountpoint.display().to_string(),
        })
    }

    /// The covered directory, reachable while the mount is on top of it.
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }

    /// Keeps programs out while latus is not mounted (they get `EACCES`
    /// rather than writing where nobody looks). Root ignores modes: what it
    /// writes there is adopted at the next mount.
    pub fn protect(&self) {
        if let Err(e) = self
            .dir
            .set_permissions(fs::Permissions::from_mode(PROTECTED_MODE))
        {
            tracing::warn!(folder = %self.shown, error = %e, "could not make the plain folder unwritable");
        }
    }

    /// Moves everything in the plain folder into the volume through the
    /// core, as local changes: a file becomes a new version of the file at
    /// its path (it was written after anything the volume has there).
    pub fn adopt(&self, vfs: &Vfs) -> Adoption {
        let mut report = Adoption::default();
        self.adopt_dir(vfs, &self.root(), ROOT_INO, &mut report);
        if report.adopted > 0 || report.left > 0 {
            tracing::warn!(
                folder = %self.shown,
                adopted = report.adopted,
                renamed = report.renamed,
                left = report.left,
                "recovered: adopted what was written into the plain folder while latus was not mounted"
            );
        }
        report
    }

    /// Adopts every entry of `dir` below `parent`; true when `dir` is empty after.
    fn adopt_dir(&self, vfs: &Vfs, dir: &Path, parent: Ino, report: &mut Adoption) -> bool {
        let entries = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %e, "could not list a folder to adopt");
                report.left += 1;
                return false;
            }
        };
        let mut emptied = true;
        for entry in entries {
            let done = match entry {
                Ok(entry) => {
                    let path = entry.path();
                    match self.adopt_entry(vfs, &path, &entry.file_name(), parent, report) {
                        Ok(true) => {
                            report.adopted += 1;
                            true
                        }
                        Ok(false) => false,
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "could not adopt an entry of the plain folder; it stays there");
                            report.left += 1;
                            false
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(folder = %dir.display(), error = %e, "could not list a folder to adopt");
                    report.left += 1;
                    false
                }
            };
            emptied &= done;
        }
        emptied
    }

    /// Ok(true) once the entry is in the volume and gone from the plain folder.
    fn adopt_entry(
        &self,
        vfs: &Vfs,
        path: &Path,
        name: &OsStr,
        parent: Ino,
        report: &mut Adoption,
    ) -> Result<bool, AdoptError> {
        let md = fs::symlink_metadata(path)?;
        let caller = Caller {
            uid: md.uid(),
            gid: md.gid(),
            pid: std::process::id(),
        };
        let kind = if md.is_dir() {
            Kind::Dir
        } else if md.is_file() {
            Kind::File
        } else if md.is_symlink() {
            Kind::Symlink
        } else {
            use std::os::unix::fs::FileTypeExt;
            let ft = md.file_type();
            if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_socket() {
                Kind::Socket
            } else if ft.is_char_device() {
                Kind::CharDevice
            } else {
                Kind::BlockDevice
            }
        };
        let existing = match vfs.lookup(parent, name) {
            Ok(a) => Some(a),
            Err(VfsError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let name = match &existing {
            Some(a) if a.kind != kind => {
                report.renamed += 1;
                free_name(vfs, parent, name)
            }
            _ => name.to_os_string(),
        };
        let existing = existing.filter(|a| a.kind == kind).map(|a| a.ino);
        let mode = md.mode() & 0o7777;
        match kind {
            Kind::Dir => {
                let ino = match existing {
                    Some(ino) => ino,
                    None => vfs.mkdir(parent, &name, mode, caller)?.ino,
                };
                if !self.adopt_dir(vfs, path, ino, report) {
                    return Ok(false);
                }
                fs::remove_dir(path)?;
            }
            Kind::File => {
                adopt_file(vfs, path, &md, parent, &name, existing, caller)?;
                fs::remove_file(path)?;
            }
            // Local entries in the mount too: never synced.
            Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice => {
                if existing.is_none() {
                    vfs.mknod(parent, &name, mode, kind, md.rdev() as u32, caller)?;
                }
                fs::remove_file(path)?;
            }
            Kind::Symlink => {
                let target = fs::read_link(path)?;
                let target = target.as_os_str().as_bytes();
                let same = existing.is_some_and(|ino| vfs.readlink(ino).is_ok_and(|t| t == target));
                if !same {
                    if existing.is_some() {
                        vfs.unlink(parent, &name)?;
                    }
                    vfs.symlink(parent, &name, target, caller)?;
                }
                fs::remove_file(path)?;
            }
        }
        Ok(true)
    }
}

/// Writes the plain file as a new version at `parent/name` and closes it.
fn adopt_file(
    vfs: &Vfs,
    path: &Path,
    md: &fs::Metadata,
    parent: Ino,
    name: &OsStr,
    existing: Option<Ino>,
    caller: Caller,
) -> Result<(), AdoptError> {
    let mut src = File::open(path)?;
    let mode = md.mode() & 0o7777;
    let (ino, fh) = match existing {
        Some(ino) => (ino, vfs.open(ino, OpenMode::TRUNCATE, caller)?.fh),
        None => {
            let (attr, opened) = vfs.create(parent, name, mode, OpenMode::TRUNCATE, caller)?;
            (attr.ino, opened.fh)
        }
    };
    let copied = (|| -> Result<(), AdoptError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            vfs.write(ino, fh, offset, &buf[..n])?;
            offset += n as u64;
        }
        let set = SetAttr {
            mode: existing.map(|_| mode),
            mtime: Some(TimeSet::At(md.mtime() * 1_000_000_000 + md.mtime_nsec())),
            ..Default::default()
        };
        vfs.setattr(ino, set, Some(fh))?;
        Ok(())
    })();
    // Released either way; a failed copy leaves the plain file for the next mount.
    let released = vfs.release(ino, fh);
    copied?;
    Ok(released?)
}

/// `name (adopted)`, `name (adopted 2)`, ...: the first one free in `parent`.
fn free_name(vfs: &Vfs, parent: Ino, name: &OsStr) -> OsString {
    let base = name.to_string_lossy();
    (1..)
        .map(|i| match i {
            1 => format!("{base} (adopted)"),
            i => format!("{base} (adopted {i})"),
        })
        .map(OsString::from)
        .find(|n| matches!(vfs.lookup(parent, n), Err(VfsError::NotFound)))
        .expect("some name is free")
}

#[derive(Debug, thiserror::Error)]
enum AdoptError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Vfs(#[from] VfsError),
}
