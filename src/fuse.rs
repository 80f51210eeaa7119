//! The FUSE adapter: fuser types in, one call into `vfs`, the reply out.
//! Errors become errnos only through `VfsError::errno`. This is the only
//! file that knows fuser's reply types.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::meta::{Kind, Nanos};
use crate::vfs::{
    Attr, Caller, OpenMode, RenameFlags as CoreRenameFlags, SetAttr, TimeSet, Vfs, VfsError,
    XattrSet,
};

/// How long the kernel may cache attributes and names, found or missing.
/// Every change goes through this mount, so the kernel's view cannot go
/// stale; changes that arrive from elsewhere (sync) must invalidate it
/// explicitly through the session's notifier.
const TTL: Duration = Duration::from_secs(60);
const MAX_WRITE: u32 = 1 << 20;

pub struct FuseAdapter {
    vfs: Arc<Vfs>,
}

impl FuseAdapter {
    pub fn new(vfs: Arc<Vfs>) -> Self {
        Self { vfs }
    }
}

fn to_system_time(n: Nanos) -> SystemTime {
    if n >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(n.unsigned_abs())
    }
}

fn to_nanos(t: SystemTime) -> Nanos {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(to_nanos(t)),
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: to_system_time(a.atime),
        mtime: to_system_time(a.mtime),
        ctime: to_system_time(a.ctime),
        crtime: to_system_time(a.ctime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn negative_entry() -> FileAttr {
    let mut a = file_attr(&Attr {
        ino: 0,
        kind: Kind::File,
        size: 0,
        atime: 0,
        mtime: 0,
        ctime: 0,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        blocks: 0,
        rdev: 0,
    });
    a.ino = INodeNo(0);
    a
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// The one place a core error becomes an errno; node-side trouble is logged.
fn errno(op: &'static str, ino: u64, e: VfsError) -> Errno {
    if e.is_expected() {
        tracing::debug!(op, ino, error = %e, "request refused");
    } else {
        tracing::error!(op, ino, error = %e, "request failed");
    }
    Errno::from_i32(e.errno())
}

fn open_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

macro_rules! span {
    ($op:literal, $req:expr, $ino:expr) => {
        tracing::debug_span!(
            "fuse",
            op = $op,
            req = u64::from($req.unique()),
            ino = $ino,
            pid = $req.pid()
        )
        .entered()
    };
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_max_background(64);
        // Writeback caching: the kernel gathers small writes into large
        // ones and resolves O_APPEND offsets; everything reaches the daemon
        // before FLUSH, so close still commits complete versions.
        // READDIRPLUS (the kernel choosing when: after a listing is
        // followed by lookups, as `ls -l` does) saves a LOOKUP per entry.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_WRITEBACK_CACHE;
        let granted = wanted & config.capabilities();
        let _ = config.add_capabilities(granted);
        self.vfs
            .set_kernel_keeps_times(granted.contains(InitFlags::FUSE_WRITEBACK_CACHE));
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = span!("lookup", req, parent.0);
        match self.vfs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            // A reply with inode 0 lets the kernel cache the miss.
            Err(VfsError::NotFound) => reply.entry(&TTL, &negative_entry(), Generation(0)),
            Err(e) => reply.error(errno("lookup", parent.0, e)),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _s = span!("getattr", req, ino.0);
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno("getattr", ino.0, e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _s = span!("setattr", req, ino.0);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        match self.vfs.setattr(ino.0, set, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno("setattr", ino.0, e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _s = span!("readlink", req, ino.0);
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno("readlink", ino.0, e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _s = span!("mknod", req, parent.0);
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            _ => return reply.error(Errno::EINVAL),
        };
        match self
            .vfs
            .mknod(parent.0, name, mode, kind, rdev, caller(req))
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mknod", parent.0, e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _s = span!("mkdir", req, parent.0);
        match self.vfs.mkdir(parent.0, name, mode, caller(req)) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mkdir", parent.0, e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = span!("unlink", req, parent.0);
        match self.vfs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", parent.0, e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = span!("rmdir", req, parent.0);
        match self.vfs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", parent.0, e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _s = span!("symlink", req, parent.0);
        match self.vfs.symlink(
            parent.0,
            link_name,
            target.as_os_str().as_encoded_bytes(),
            caller(req),
        ) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("symlink", parent.0, e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _s = span!("rename", req, parent.0);
        match self.vfs.rename(
            parent.0,
            name,
            newparent.0,
            newname,
            rename_flags(flags.bits()),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", parent.0, e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _s = span!("link", req, ino.0);
        match self.vfs.link(ino.0, newparent.0, newname) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("link", ino.0, e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _s = span!("open", req, ino.0);
        match self.vfs.open(ino.0, open_mode(flags.0), caller(req)) {
            Ok(o) => reply.opened(FileHandle(o.fh), open_flags(o.keep_cache)),
            Err(e) => reply.error(errno("open", ino.0, e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _s = span!("read", req, ino.0);
        match self.vfs.read_as(ino.0, fh.0, offset, size, req.pid()) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno("read", ino.0, e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _s = span!("write", req, ino.0);
        match self.vfs.write(ino.0, fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", ino.0, e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _s = span!("flush", req, ino.0);
        match self.vfs.flush(ino.0, fh.0, req.pid()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("flush", ino.0, e)),
        }
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _s = span!("release", req, ino.0);
        match self.vfs.release(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("release", ino.0, e)),
        }
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _s = span!("fsync", req, ino.0);
        match self.vfs.fsync(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", ino.0, e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _s = span!("opendir", req, ino.0);
        match self.vfs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", ino.0, e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _s = span!("readdir", req, ino.0);
        let r = self.vfs.readdir(fh.0, offset, |e, next| {
            reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", ino.0, e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _s = span!("readdirplus", req, ino.0);
        let r = self.vfs.readdir_plus(fh.0, offset, |e, a, next| {
            reply.add(
                INodeNo(e.ino),
                next,
                &e.name,
                &TTL,
                &file_attr(a),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdirplus", ino.0, e)),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _s = span!("releasedir", req, ino.0);
        match self.vfs.releasedir(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("releasedir", ino.0, e)),
        }
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _s = span!("fsyncdir", req, ino.0);
        match self.vfs.meta().sync_journal() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsyncdir", ino.0, e.into())),
        }
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _s = span!("statfs", req, ino.0);
        match self.vfs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno("statfs", ino.0, e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _s = span!("setxattr", req, ino.0);
        match self.vfs.setxattr(ino.0, name, value, xattr_set(flags)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("setxattr", ino.0, e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _s = span!("getxattr", req, ino.0);
        reply_xattr(self.vfs.getxattr(ino.0, name), size, reply, ino.0);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _s = span!("listxattr", req, ino.0);
        reply_xattr(self.vfs.listxattr(ino.0), size, reply, ino.0);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = span!("removexattr", req, ino.0);
        match self.vfs.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("removexattr", ino.0, e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks mode bits.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _s = span!("create", req, parent.0);
        match self
            .vfs
            .create(parent.0, name, mode, open_mode(flags), caller(req))
        {
            Ok((a, o)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(o.fh),
                open_flags(o.keep_cache),
            ),
            Err(e) => reply.error(errno("create", parent.0, e)),
        }
    }
}

fn reply_xattr(r: Result<Vec<u8>, VfsError>, size: u32, reply: ReplyXattr, ino: u64) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => {
            reply.error(errno("xattr", ino, VfsError::BufferTooSmall))
        }
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno("xattr", ino, e)),
    }
}

/// The core's view of open(2) flags.
fn open_mode(flags: i32) -> OpenMode {
    let acc = flags & libc::O_ACCMODE;
    let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
    OpenMode {
        write,
        truncate: write && flags & libc::O_TRUNC != 0,
    }
}

fn rename_flags(bits: u32) -> CoreRenameFlags {
    CoreRenameFlags {
        no_replace: bits & libc::RENAME_NOREPLACE != 0,
        exchange: bits & (libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) != 0,
    }
}

fn xattr_set(flags: i32) -> XattrSet {
    if flags & libc::XATTR_CREATE != 0 {
        XattrSet::Create
    } else if flags & libc::XATTR_REPLACE != 0 {
        XattrSet::Replace
    } else {
        XattrSet::Any
    }
}
