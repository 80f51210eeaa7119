//! The one error type at the filesystem boundary, and the only place where
//! errnos are chosen.

use thiserror::Error;

use crate::meta::MetaError;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum VfsError {
    #[error("no such file or folder")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("not a folder")]
    NotDir,
    #[error("is a folder")]
    IsDir,
    #[error("folder is not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("names must be valid UTF-8 (they are synced to other platforms)")]
    NameNotUtf8,
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    #[error("no such extended attribute")]
    NoAttr,
    #[error("extended attribute buffer too small")]
    BufferTooSmall,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("content i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {source}")]
    Fetch { path: String, source: FetchError },
    #[error("restore: {0}")]
    Restore(String),
    #[error("the hydration policy refuses downloads for program {0}")]
    Refused(String),
}

pub type Result<T, E = VfsError> = std::result::Result<T, E>;

/// Why content that is only in the cloud could not be brought back.
#[derive(Debug, Clone, Error)]
pub enum FetchError {
    /// The cloud does not answer (offline, down, timing out): the same
    /// read can work later. Programs see `ENETUNREACH`.
    #[error("the cloud cannot be reached: {0}")]
    Unreachable(String),
    /// An object failed authentication, does not hold what its name
    /// promises, or the whole does not match the version's hash: never
    /// served. Programs see `EIO`.
    #[error("{0}")]
    Corrupt(String),
    /// The version cannot come back: never published, its chunk list is
    /// unusable, or an object is missing in the cloud. `EIO`.
    #[error("{0}")]
    Unavailable(String),
    /// The content is in a cold tier that restores before a read: a
    /// restore was requested. Programs see `EAGAIN` until it is done.
    #[error("{0}")]
    Frozen(String),
    /// A restore of it was requested lately and is not known to be done:
    /// `EAGAIN` without asking the cloud (not logged again).
    #[error("{0}")]
    Thawing(String),
    /// The content is in a cold folder that is not connected. Programs
    /// see `ENOMEDIUM` until it is.
    #[error("{0}")]
    ColdOffline(String),
    /// This node failed to write the copy (its own errno: `ENOSPC`...).
    #[error("the local copy: {message}")]
    Local { message: String, errno: Option<i32> },
}

impl FetchError {
    pub fn errno(&self) -> i32 {
        match self {
            FetchError::Unreachable(_) => libc::ENETUNREACH,
            FetchError::Corrupt(_) | FetchError::Unavailable(_) => libc::EIO,
            FetchError::Frozen(_) | FetchError::Thawing(_) => libc::EAGAIN,
            FetchError::ColdOffline(_) => libc::ENOMEDIUM,
            FetchError::Local { errno, .. } => errno.unwrap_or(libc::EIO),
        }
    }

    pub fn local(e: &impl std::fmt::Display, errno: Option<i32>) -> Self {
        FetchError::Local {
            message: e.to_string(),
            errno,
        }
    }
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        FetchError::local(&e, e.raw_os_error())
    }
}

impl From<crate::cloud::CloudError> for FetchError {
    fn from(e: crate::cloud::CloudError) -> Self {
        use crate::cloud::CloudErrorKind;
        if e.kind == CloudErrorKind::Frozen {
            FetchError::Frozen(e.to_string())
        } else if e.kind == CloudErrorKind::ColdOffline {
            FetchError::ColdOffline(e.to_string())
        } else if e.is_retryable() {
            FetchError::Unreachable(e.to_string())
        } else if e.is_not_found() {
            FetchError::Unavailable(format!("cloud object {} is missing", e.what))
        } else {
            FetchError::Unavailable(e.to_string())
        }
    }
}

impl VfsError {
    /// The errno a program sees. Local disk errors keep their own errno
    /// (ENOSPC, EDQUOT, EIO...) so a full disk reads as a full disk.
    pub fn errno(&self) -> i32 {
        match self {
            VfsError::NotFound => libc::ENOENT,
            VfsError::Exists => libc::EEXIST,
            VfsError::NotDir => libc::ENOTDIR,
            VfsError::IsDir => libc::EISDIR,
            VfsError::NotEmpty => libc::ENOTEMPTY,
            VfsError::Invalid(_) => libc::EINVAL,
            VfsError::NameNotUtf8 => libc::EILSEQ,
            VfsError::NameTooLong => libc::ENAMETOOLONG,
            VfsError::NotPermitted(_) => libc::EPERM,
            VfsError::BadHandle(_) => libc::EBADF,
            VfsError::NoAttr => libc::ENODATA,
            VfsError::BufferTooSmall => libc::ERANGE,
            VfsError::Unsupported(_) => libc::EOPNOTSUPP,
            VfsError::Meta(e) => e.raw_os_error().unwrap_or(libc::EIO),
            // Below the reserve the disk is full for content, though the
            // journal still has room: the writer is told so.
            VfsError::Store(StoreError::Full { .. }) => libc::ENOSPC,
            VfsError::Store(e) => e.raw_os_error().unwrap_or(libc::EIO),
            VfsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            // Never wrong bytes: a version that cannot be fetched and
            // verified fails the read.
            VfsError::Fetch { source, .. } => source.errno(),
            VfsError::Restore(_) => libc::EINVAL,
            VfsError::Refused(_) => libc::EACCES,
        }
    }

    /// Errors a program causes (and gets told about) need no log line;
    /// the rest are this node's trouble and are logged at the boundary.
    /// A full disk is logged by the core, at most every few seconds.
    pub fn is_expected(&self) -> bool {
        matches!(self.errno(), libc::ENOSPC | libc::EDQUOT)
            || !matches!(
                self,
                VfsError::Meta(_) | VfsError::Store(_) | VfsError::Io(_)
            )
    }
}
