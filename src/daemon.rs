//! The daemon: owns the node's database, serves the mount and the control
//! socket, and stops cleanly on unmount, SIGTERM or SIGINT.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use thiserror::Error;

use crate::control::{self, Request, Response};
use crate::fuse::FuseAdapter;
use crate::home::{Config, Home, HomeError};
use crate::locks::{Mutex, lock};
use crate::meta::{Meta, MetaError};
use crate::store::{ContentStore, StoreError};
use crate::sync::{Engine, Fetcher, Uploader, Volume, VolumeError, VolumeHandle};
use crate::vfs::{Invalidation, RecoveryReport, Vfs, VfsError};

mod plain;
mod repair;
mod report;

pub use repair::{RepairReport, repair};

pub use plain::Adoption;
pub use report::mountpoint_file;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vfs(#[from] VfsError),
    #[error(
        "the home {path} is open to other users (mode {mode:o}): it holds the volume key; make it private with: chmod 700 {path}"
    )]
    HomeOpen { path: String, mode: u32 },
    #[error("mountpoint {0} does not exist (create it first: mkdir -p {0})")]
    MountpointMissing(String),
    #[error("mountpoint {0} is not a folder")]
    MountpointNotDir(String),
    #[error("{0} is already mounted")]
    AlreadyMounted(String),
    #[error(
        "/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or run where FUSE is available"
    )]
    NoFuseDevice,
    #[error(
        "fusermount3 is missing: install FUSE 3 tools (Debian/Ubuntu: sudo apt-get install fuse3; Fedora: sudo dnf install fuse3)"
    )]
    NoFusermount,
    #[error("another latus daemon already runs for home {home}{pid}")]
    HomeBusy { home: String, pid: String },
    #[error("could not clean the stale mount at {path}: {reason}")]
    StaleMount { path: String, reason: String },
    #[error("mount of {path} failed: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// A node's state, opened: used by the daemon, and by the CLI when no
/// daemon runs.
pub struct OpenNode {
    pub config: Config,
    pub key: [u8; 32],
    /// Signs this node's records.
    pub signer: crate::crypto::NodeSigner,
    /// The volume's later key epochs (`Home::epochs_path`).
    pub epochs_file: std::path::PathBuf,
    pub store: Arc<ContentStore>,
    pub meta: Arc<Meta>,
    pub vfs: Arc<Vfs>,
    /// Makes the local tree follow the volume's log.
    pub engine: Arc<Engine>,
    pub recovery: RecoveryReport,
}

pub fn open_node(home: &Home) -> Result<OpenNode, DaemonError> {
    open_node_with(home, None, false)
}

/// `open_node` for `latus repair` (see `Meta::open_rebuilding`).
fn open_node_with(
    home: &Home,
    prior: Option<crate::meta::Rebuilt>,
    keep_unnamed: bool,
) -> Result<OpenNode, DaemonError> {
    let (config, _upgraded) = home.load_config_upgraded()?;
    let key = crate::home::load_key(home)?;
    let signer = crate::home::node_signer(home)?;
    let store = Arc::new(ContentStore::open(home.objects_dir())?);
    let (meta, loaded) = Meta::open_rebuilding(
        &home.db_path(),
        &home.wal_path(),
        store.clone(),
        prior,
        keep_unnamed,
    )?;
    let meta = Arc::new(meta);
    // SAFETY: getuid/getgid cannot fail.
    let owner = unsafe { (libc::getuid(), libc::getgid()) };
    let (vfs, recovery) = Vfs::new(
        meta.clone(),
        store.clone(),
        loaded,
        config.node_id,
        config.ignore.clone(),
        owner,
    )?;
    vfs.set_cache_cap(cache_cap(&config, home));
    vfs.set_conflict_policy(config.conflict_policy);
    vfs.set_hydration_policy(Arc::new(crate::hydration::Gate::new(
        config.hydration.clone(),
    )));
    let engine = Engine::new(vfs.clone(), meta.clone());
    Ok(OpenNode {
        config,
        key,
        signer,
        epochs_file: home.epochs_path(),
        store,
        meta,
        engine,
        vfs,
        recovery,
    })
}

/// The configured cache cap, else a tenth of the disk holding the home.
pub fn cache_cap(config: &Config, home: &Home) -> u64 {
    if let Some(b) = config.cache_bytes {
        return b;
    }
    crate::platform::disk_space(home.root()).map_or(0, |d| d.total / 10)
}

/// Downloads what pinned rules keep here (after a pin, or when the log
/// brings files below one) and keeps the cache under its cap.
fn run_pinner(vfs: Arc<Vfs>, poll: std::time::Duration, stop: Arc<AtomicBool>) {
    // Logged once per file until it succeeds.
    let mut failing = std::collections::HashSet::new();
    while !stop.load(Ordering::Acquire) {
        for ino in vfs.pinned_to_fetch() {
            if stop.load(Ordering::Acquire) {
                return;
            }
            match vfs.hydrate(ino) {
                Ok(()) => {
                    failing.remove(&ino);
                }
                Err(e) => {
                    if failing.insert(ino) {
                        tracing::warn!(ino, error = %e, "could not download a pinned file; retrying");
                    }
                    vfs.retry_pins();
                }
            }
        }
        vfs.enforce_cache_cap();
        // Woken early by the stop.
        std::thread::park_timeout(poll);
    }
}

/// Opens the node's volume to check its key. A cloud that does not answer
/// is no reason to refuse: the node works offline and publishes later. A
/// key that does not match is.
///
/// Nothing is created here (`init` made the volume): a `dir:` cloud whose
/// folder is missing (a NAS not mounted yet) is unreachable, never a place
/// to start a new volume that would fork the node away from the others.
pub fn open_volume(node: &OpenNode) -> Result<Option<Arc<Volume>>, DaemonError> {
    match Volume::open_cold(&node.config.cloud, &node.key, false, &node.config.cold) {
        Ok((v, created)) => {
            for line in created {
                tracing::info!("{line}");
            }
            Ok(Some(Arc::new(v)))
        }
        Err(VolumeError::Cloud(e)) if e.is_retryable() => {
            tracing::warn!(error = %e, "the cloud is not answering; working offline, publishing when it is back");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Connects the node to its volume: the uploader publishes, the fetcher
/// brings back content whose local copy is gone.
pub fn start_uploader(node: &OpenNode, volume: Option<Arc<Volume>>) -> Uploader {
    let handle = Arc::new(
        VolumeHandle::new(
            node.config.cloud.clone(),
            node.key,
            volume,
            Some(node.epochs_file.clone()),
        )
        .with_cold(node.config.cold.clone()),
    );
    let fetcher = Fetcher::new(node.meta.clone(), node.store.clone(), handle.clone());
    let vfs = Arc::downgrade(&node.vfs);
    fetcher.on_installed(move |object| {
        if let Some(vfs) = vfs.upgrade() {
            vfs.content_installed(object);
        }
    });
    node.vfs.set_content_source(fetcher);
    Uploader::start(
        node.vfs.clone(),
        node.engine.clone(),
        node.meta.clone(),
        node.store.clone(),
        node.config.clone(),
        node.signer.clone(),
        handle,
    )
}

/// Opens the node from a one-shot command (no daemon): holds the home's
/// lock while open, so a daemon starting meanwhile waits its turn instead
/// of finding the database taken.
pub fn open_node_locked(home: &Home) -> Result<(HomeLock, OpenNode), DaemonError> {
    let lock = lock_home(home)?;
    Ok((lock, open_node(home)?))
}

/// What is at the mountpoint now.
#[derive(Debug, PartialEq, Eq)]
pub enum MountpointState {
    Ready,
    /// A dead daemon's mount ("Transport endpoint is not connected").
    Stale,
}

pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mountpoint.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn check_mountpoint(mountpoint: &Path) -> Result<MountpointState, DaemonError> {
    let shown = mountpoint.display().to_string();
    if is_mounted(mountpoint) {
        return match fs::metadata(mountpoint) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(MountpointState::Stale),
            _ => Err(DaemonError::AlreadyMounted(shown)),
        };
    }
    let md = match fs::metadata(mountpoint) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DaemonError::MountpointMissing(shown));
        }
        Err(e) => return Err(io(format!("mountpoint {shown}"))(e)),
    };
    if !md.is_dir() {
        return Err(DaemonError::MountpointNotDir(shown));
    }
    // Not necessarily empty: what the plain folder holds is adopted at mount.
    Ok(MountpointState::Ready)
}

pub fn check_fuse_available() -> Result<(), DaemonError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(DaemonError::NoFuseDevice);
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && find_in_path("fusermount3").is_none() {
        return Err(DaemonError::NoFusermount);
    }
    Ok(())
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// Unmounts the folder this daemon serves. fuser forgets its mount after
/// one attempt, even one the kernel refused (busy: files still open), and
/// later calls then did nothing; so those unmount the mountpoint here.
fn unmount_now(
    unmounter: &Mutex<fuser::SessionUnmounter>,
    mountpoint: &Path,
) -> std::io::Result<()> {
    lock(unmounter).unmount()?;
    if !is_mounted(mountpoint) {
        return Ok(());
    }
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    // Not root: the setuid helper unmounts for the mount's owner.
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Detaches a dead daemon's mount.
pub fn clean_stale_mount(mountpoint: &Path) -> Result<(), DaemonError> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).map_err(|_| {
        DaemonError::StaleMount {
            path: mountpoint.display().to_string(),
            reason: "path holds a NUL".into(),
        }
    })?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(DaemonError::StaleMount {
            path: mountpoint.display().to_string(),
            reason: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }),
        Err(e) => Err(DaemonError::StaleMount {
            path: mountpoint.display().to_string(),
            reason: format!("fusermount3: {e}"),
        }),
    }
}

/// Holds the home's daemon lock for the daemon's lifetime.
pub struct HomeLock {
    _file: File,
}

pub fn lock_home(home: &Home) -> Result<HomeLock, DaemonError> {
    let path = home.lock_path();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(path.display().to_string()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = fs::read_to_string(home.pid_path())
            .map(|p| format!(" (pid {})", p.trim()))
            .unwrap_or_default();
        return Err(DaemonError::HomeBusy {
            home: home.root().display().to_string(),
            pid,
        });
    }
    Ok(HomeLock { _file: file })
}

/// True when no daemon holds the home (its lock can be taken).
pub fn home_lock_free(home: &Home) -> bool {
    match lock_home(home) {
        Ok(lock) => {
            drop(lock);
            true
        }
        Err(_) => false,
    }
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Many files open through the mount means as many descriptors here:
/// take the hard limit rather than the (often 1024) soft one.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(4)
}

/// Mounts and serves until unmounted. Blocks.
/// The home holds the volume key: others must not reach it.
fn check_home_private(home: &Home) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let path = home.root();
    let mode = fs::metadata(path)
        .map_err(io(path.display().to_string()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(DaemonError::HomeOpen {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// How `latus mount` mounts the folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountFlags {
    /// Do not contact the cloud.
    pub offline: bool,
    /// Programs in the folder cannot be executed.
    pub noexec: bool,
    /// Other users may enter the folder (the kernel checks mode bits).
    pub allow_other: bool,
}

pub fn run_foreground(
    home: &Home,
    mountpoint: &Path,
    flags: MountFlags,
) -> Result<(), DaemonError> {
    let MountFlags {
        offline,
        noexec,
        allow_other,
    } = flags;
    // Held until the process is gone (the kernel drops it when the last
    // thread exits): free home lock means the database is closed too.
    std::mem::forget(lock_home(home)?);
    // Before any thread starts (threads inherit the mask): a stop signal
    // that reaches a thread not blocking it kills the process unflushed
    // and leaves a dead mount. One sent during startup waits for the
    // signal thread, which then unmounts cleanly.
    let signals = block_stop_signals();
    check_home_private(home)?;
    check_fuse_available()?;
    if check_mountpoint(mountpoint)? == MountpointState::Stale {
        clean_stale_mount(mountpoint)?;
        tracing::warn!(mountpoint = %mountpoint.display(), "recovered: cleaned a stale mount left by a stopped daemon");
        check_mountpoint(mountpoint)?;
    }
    let started = Instant::now();
    raise_open_file_limit();
    let plain = plain::PlainFolder::open(mountpoint).map_err(io(format!(
        "the folder under the mountpoint {}",
        mountpoint.display()
    )))?;
    let node = open_node(home)?;
    let volume = if offline {
        tracing::info!("mounted offline: changes are queued and published by a later mount");
        None
    } else {
        open_volume(&node)?
    };
    node.store.start_spare_maker();
    if !node.recovery.is_clean() {
        tracing::warn!(report = ?node.recovery, "recovered after an unclean stop");
    }
    fs::write(home.pid_path(), format!("{}\n", std::process::id()))
        .map_err(io(home.pid_path().display().to_string()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let committer = {
        let meta = node.meta.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("latus-committer".into())
            .spawn(move || meta.run_committer(&stop))
            .map_err(io("spawn committer"))?
    };

    let mut options = fuser::Config::default();
    options.mount_options = vec![
        fuser::MountOption::FSName("latus".into()),
        fuser::MountOption::Subtype("latus".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        // Set-id programs and device files from the folder (which other
        // nodes write) never take effect here.
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    if noexec {
        options.mount_options.push(fuser::MountOption::NoExec);
    }
    if allow_other {
        // With default_permissions above, the kernel checks each caller
        // against the mode bits, as on a local disk.
        options.acl = fuser::SessionACL::All;
    }
    options.n_threads = Some(worker_threads());
    options.clone_fd = true;
    let mut session = fuser::Session::new(FuseAdapter::new(node.vfs.clone()), mountpoint, &options)
        .map_err(|source| DaemonError::Mount {
            path: mountpoint.display().to_string(),
            source,
        })?;
    let unmounter = Arc::new(Mutex::new(session.unmount_callable()));
    // Mounted, not yet serving: programs wait for the adoption, and nothing
    // new can land in the plain folder.
    let adoption = plain.adopt(&node.vfs);
    plain.protect();
    drop(plain);
    {
        // Remote changes reach the kernel's caches (their TTLs assume that
        // only the kernel changes the tree).
        let notifier = session.notifier();
        node.vfs.set_invalidator(move |inval| {
            let result = match &inval {
                Invalidation::Entry { parent, name } => {
                    notifier.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name))
                }
                Invalidation::Inode(ino) => notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
            };
            // ENOENT: the kernel had nothing cached for it.
            if let Err(e) = result
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                tracing::debug!(?inval, error = %e, "kernel cache invalidation failed");
            }
        });
    }

    let socket = home.socket_path();
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(io(socket.display().to_string()))?;
    // The owner only, whatever the umask (the peer is checked too).
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
            .map_err(io(socket.display().to_string()))?;
    }
    let uploader = (!offline).then(|| Arc::new(start_uploader(&node, volume)));
    let pinner_stop = Arc::new(AtomicBool::new(false));
    let pinner = if offline {
        None
    } else {
        let (vfs, stop) = (node.vfs.clone(), pinner_stop.clone());
        let poll = std::time::Duration::from_millis(node.config.poll_ms.max(100));
        Some(
            std::thread::Builder::new()
                .name("latus-pinner".into())
                .spawn(move || run_pinner(vfs, poll, stop))
                .map_err(io("spawn pinner"))?,
        )
    };
    let ctx = Arc::new(StatusContext {
        uploader: uploader.clone(),
        vfs: node.vfs.clone(),
        config: node.config.clone(),
        mountpoint: mountpoint.to_path_buf(),
        home_files: [home.db_path(), home.wal_path(), home.log_path()],
        started,
        recovery: Recovered {
            report: node.recovery.clone(),
            plain_folder: adoption,
        },
        rate: Default::default(),
        web_url: std::sync::OnceLock::new(),
    });
    report::start_rate_sampler(&ctx);
    report::start_notices(&ctx);
    report::remember_mountpoint(home, mountpoint);
    report::start_web(home, &ctx, &unmounter);
    {
        let unmounter = unmounter.clone();
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name("latus-control".into())
            .spawn(move || control::serve(listener, move |req| handle(&ctx, &unmounter, req)))
            .map_err(io("spawn control"))?;
    }
    {
        let unmounter = unmounter.clone();
        let mountpoint = mountpoint.to_path_buf();
        std::thread::Builder::new()
            .name("latus-signals".into())
            .spawn(move || {
                let mut sig = 0;
                // SAFETY: waits on the set blocked above; sig is a live local.
                unsafe { libc::sigwait(&signals, &mut sig) };
                tracing::info!(signal = sig, "stop signal: unmounting");
                if let Err(e) = unmount_now(&unmounter, &mountpoint) {
                    tracing::error!(error = %e, "unmount on signal failed");
                }
            })
            .map_err(io("spawn signal thread"))?;
    }
    tracing::info!(mountpoint = %mountpoint.display(), node = %node.config.node_id, pid = std::process::id(), "mounted");
    let served = session.run();
    tracing::info!("filesystem session ended; flushing");
    // A caller whose request ended the session (unmount) gets its answer
    // before the process can exit.
    control::wait_answered(std::time::Duration::from_secs(5));
    let _ = fs::remove_file(&socket);
    pinner_stop.store(true, Ordering::Release);
    if let Some(p) = pinner {
        p.thread().unpark();
        let _ = p.join();
    }
    if let Some(u) = &uploader {
        u.stop();
    }
    let shutdown = node.vfs.shutdown();
    stop.store(true, Ordering::Release);
    node.meta.wake_committer();
    let _ = committer.join();
    node.meta.commit_pending()?;
    let _ = fs::remove_file(home.pid_path());
    served.map_err(|source| DaemonError::Mount {
        path: mountpoint.display().to_string(),
        source,
    })?;
    shutdown?;
    tracing::info!("unmounted cleanly");
    Ok(())
}

struct StatusContext {
    /// None when mounted `--offline`.
    uploader: Option<Arc<Uploader>>,
    vfs: Arc<Vfs>,
    config: Config,
    mountpoint: PathBuf,
    /// The database, the journal and the log, for `disk`.
    home_files: [PathBuf; 3],
    started: Instant,
    recovery: Recovered,
    /// Upload rate, for the ETA.
    rate: Mutex<crate::status::RateMeter>,
    /// The web app's address with its session token (`latus ui`).
    web_url: std::sync::OnceLock<String>,
}

/// What mounting recovered: the node's own state, and the plain folder.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recovered {
    #[serde(flatten)]
    pub report: RecoveryReport,
    pub plain_folder: Adoption,
}

#[derive(serde::Serialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub mountpoint: String,
    pub node_id: String,
    pub node_name: String,
    pub cloud: String,
    #[serde(flatten)]
    pub counts: crate::vfs::Counts,
    pub uptime_secs: u64,
    pub recovered: Recovered,
    pub queue: crate::sync::UploaderStatus,
    pub offline: bool,
    pub cache: crate::vfs::CacheStatus,
    pub disk: DiskReport,
    /// Per program: reads of content only in the cloud, bytes, refusals.
    pub hydration: std::collections::BTreeMap<String, crate::hydration::ProgramCount>,
    /// Files whose state is `pending` (what `queue.pending_files` counts).
    pub waiting: crate::vfs::Waiting,
    /// Bytes per second uploaded lately, and the time left at that rate.
    pub upload_rate: Option<u64>,
    pub eta_secs: Option<u64>,
    /// Conflict copies in the tree (`latus conflicts`).
    pub conflict_copies: Vec<crate::conflicts::Conflict>,
    /// Requests sent to S3 and DynamoDB since the daemon started, by
    /// operation (none on a `dir:` cloud).
    pub cloud_requests: std::collections::BTreeMap<String, crate::cloud::requests::OperationCount>,
    /// Bytes per tier (hot, cold) of the chunks this node knows of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<crate::sync::TierBytes>,
}

/// The disk holding the home: full or not, and what latus itself takes.
#[derive(serde::Serialize)]
pub struct DiskReport {
    #[serde(flatten)]
    pub space: crate::vfs::DiskStatus,
    pub database_bytes: u64,
    pub journal_bytes: u64,
    pub log_bytes: u64,
    /// The store, the database, the journal and the log together.
    pub latus_bytes: u64,
}

fn disk_report(ctx: &StatusContext) -> DiskReport {
    use std::os::unix::fs::MetadataExt;
    let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.blocks() * 512);
    let [db, wal, log] = &ctx.home_files;
    let space = ctx.vfs.disk_status();
    let (database_bytes, journal_bytes, log_bytes) = (size(db), size(wal), size(log));
    DiskReport {
        latus_bytes: space.store_bytes + database_bytes + journal_bytes + log_bytes,
        space,
        database_bytes,
        journal_bytes,
        log_bytes,
    }
}

fn handle(
    ctx: &StatusContext,
    unmounter: &Mutex<fuser::SessionUnmounter>,
    req: Request,
) -> Response {
    match req {
        Request::Status => Response::ok(report::status(ctx)),
        Request::SyncWait { timeout_secs } => match &ctx.uploader {
            None => Response::err(
                "mounted with --offline: nothing is published until a mount without it",
            ),
            Some(u) => match u.wait_idle(std::time::Duration::from_secs(timeout_secs)) {
                Ok(st) => Response::ok(st),
                Err(e) => Response::err(format!("sync incomplete: {e}")),
            },
        },
        Request::PathStatus { path } => match ctx.vfs.path_status(&path) {
            Ok(s) => {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                // Where the content is in the cloud (asks it: cold, thawing,
                // ready); left out when the cloud does not answer.
                if let Some(u) = &ctx.uploader
                    && let Ok(Some(tier)) = u.cooler().tier_of(&path)
                {
                    v["tier"] = tier.into();
                }
                Response::ok(v)
            }
            Err(e) => Response::err(format!("{path}: {e}")),
        },
        Request::LogHead => match crate::sync::log_head(ctx.vfs.meta()) {
            Ok(h) => Response::ok(h),
            Err(e) => Response::err(e),
        },
        Request::Log { since, limit } => {
            let meta = ctx.vfs.meta();
            match meta
                .commit_pending()
                .and_then(|()| meta.events_since(since, limit))
            {
                Ok(evs) => Response::ok(evs),
                Err(e) => Response::err(e),
            }
        }
        Request::UiUrl => match ctx.web_url.get() {
            Some(url) => Response::ok(serde_json::json!({ "url": url })),
            None => Response::err("the web app is not running (see daemon.log)"),
        },
        Request::Unmount => match unmount_now(unmounter, &ctx.mountpoint) {
            Ok(()) => Response::ok("unmounting"),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Response::err(format!(
                "{} is busy: a program has a file open there or works inside it (a shell's current folder counts); close it and try again (`fuser -vm {}` lists them)",
                ctx.mountpoint.display(),
                ctx.mountpoint.display()
            )),
            Err(e) => Response::err(format!("unmount failed: {e}")),
        },
        other => answer_history(&ctx.vfs, ctx.uploader.as_deref(), &ctx.config, other),
    }
}

/// Version history, restore, nodes and prune: answered the same by a
/// running daemon and by a one-shot command on an unmounted node.
pub fn answer_history(
    vfs: &Vfs,
    uploader: Option<&Uploader>,
    config: &Config,
    req: Request,
) -> Response {
    let needs_cloud = || "this needs the cloud: mount without --offline".to_string();
    let result: Result<serde_json::Value, String> = (|| match req {
        Request::Versions { path } => vfs
            .versions(&path)
            .map(|v| serde_json::json!(v))
            .map_err(|e| format!("{path}: {e}")),
        Request::Restore {
            path,
            version,
            at,
            to,
            dry_run,
        } => {
            let target = match (version, at) {
                (Some(v), _) => crate::vfs::RestoreTarget::Version(v),
                (None, Some(t)) => crate::vfs::RestoreTarget::At(t),
                (None, None) => crate::vfs::RestoreTarget::Latest,
            };
            let restore = || {
                vfs.restore_plan(&path, target, to.as_deref(), dry_run)
                    .map_err(|e| format!("{path}: {e}"))
            };
            // A restored version is current, so hot: its chunks come back
            // from the cold tier (or start thawing) at once.
            let (report, cool) = match uploader {
                Some(u) if !dry_run => {
                    let (r, c) = u.cooler().after(restore);
                    (r?, Some(c))
                }
                _ => (restore()?, None),
            };
            let mut v = serde_json::json!(report);
            match cool {
                Some(Ok(c)) if c.chunks_warmed + c.chunks_thawing > 0 => {
                    v["cold"] = serde_json::json!(c)
                }
                Some(Err(e)) => v["cold_error"] = e.to_string().into(),
                _ => {}
            }
            Ok(v)
        }
        Request::Nodes => {
            vfs.meta().commit_pending().map_err(|e| e.to_string())?;
            let log = vfs.meta().whole_log().map_err(|e| e.to_string())?;
            Ok(serde_json::json!(crate::sync::nodes(&log, config.node_id)))
        }
        Request::ForgetNode { id } => {
            let id: uuid::Uuid = id.parse().map_err(|_| format!("{id:?} is not a node id"))?;
            if id == config.node_id {
                return Err("a node cannot forget itself".into());
            }
            let u = uploader.ok_or_else(needs_cloud)?;
            u.forget_node(id)
                .map(|(m, left_out)| {
                    serde_json::json!({ "forgotten": id, "mivui": m, "not_given_new_key": left_out })
                })
                .map_err(|e| e.to_string())
        }
        Request::Placement { path, rule } => {
            let rule = crate::meta::Placement::parse(&rule)?;
            let Some(u) = uploader else {
                return vfs
                    .set_placement(&path, rule)
                    .map(|r| serde_json::json!(r))
                    .map_err(|e| format!("{path}: {e}"));
            };
            if rule == Some(crate::meta::Placement::Cold) {
                u.cooler()
                    .check_tier()
                    .map_err(|e| format!("{path}: {e}"))?;
                // What is below is in the cloud before it can go cold.
                u.wait_idle(std::time::Duration::from_secs(3600))
                    .map_err(|e| format!("{path}: cold: {e}"))?;
            }
            // Chunks move between tiers (cold, or back from it), then the
            // copies confirmed cold go.
            let (freed, cool) = u.cooler().after(|| vfs.set_placement(&path, rule));
            let freed = freed.map_err(|e| format!("{path}: {e}"))?;
            let cool = cool.map_err(|e| {
                format!("{path}: the rule is set; moving its content between tiers failed (tried again after each sync pass): {e}")
            })?;
            Ok(serde_json::json!({
                "files": freed.files + cool.files_freed,
                "bytes": freed.bytes + cool.bytes_freed,
                "kept": freed.kept.saturating_sub(cool.files_freed),
                "cold": cool,
            }))
        }
        Request::Thaw { path } => {
            let u = uploader.ok_or_else(needs_cloud)?;
            u.cooler()
                .thaw(&path)
                .map(|r| serde_json::json!(r))
                .map_err(|e| format!("{path}: {e}"))
        }
        Request::CloudOnly { path } => vfs
            .cloud_only_below(&path)
            .map(|v| serde_json::json!(v))
            .map_err(|e| format!("{path}: {e}")),
        Request::Hydrate { ino } => {
            if uploader.is_none() {
                return Err(needs_cloud());
            }
            vfs.hydrate(ino)
                .map(|()| serde_json::json!({ "ino": ino }))
                .map_err(|e| e.to_string())
        }
        Request::SetCacheCap { bytes } => {
            vfs.set_cache_cap(bytes);
            vfs.enforce_cache_cap();
            Ok(serde_json::json!({ "cap_bytes": bytes }))
        }
        Request::Checkpoint => {
            let u = uploader.ok_or_else(needs_cloud)?;
            u.checkpoint()
                .map(|r| serde_json::json!(r))
                .map_err(|e| e.to_string())
        }
        Request::Check { read_data } => {
            let u = uploader.ok_or_else(needs_cloud)?;
            u.check(read_data)
                .map(|r| serde_json::json!(r))
                .map_err(|e| e.to_string())
        }
        Request::Prune { dry_run } => {
            let u = uploader.ok_or_else(needs_cloud)?;
            u.prune(&config.retention, dry_run)
                .map(|r| serde_json::json!(r))
                .map_err(|e| e.to_string())
        }
        Request::Conflicts => Ok(serde_json::json!(crate::conflicts::list(
            vfs,
            &config.node_name
        ))),
        Request::ResolveConflict { path, keep } => {
            let keep: crate::conflicts::Keep = keep.parse().map_err(|e| format!("{e}"))?;
            crate::conflicts::resolve(vfs, &config.node_name, &path, keep)
                .map(|r| serde_json::json!(r))
                .map_err(|e| e.to_string())
        }
        Request::Activity { limit } => crate::status::activity(vfs, &config.node_name, limit)
            .map(|a| serde_json::json!(a))
            .map_err(|e| e.to_string()),
        Request::ListDir { path } => vfs
            .list_dir(&path)
            .map(|v| serde_json::json!(v))
            .map_err(|e| format!("{path}: {e}")),
        Request::Deleted { limit } => crate::status::deleted(vfs, limit)
            .map(|v| serde_json::json!(v))
            .map_err(|e| e.to_string()),
        _ => Err("not a history request".into()),
    })();
    match result {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(e),
    }
}

/// Appends a line to the daemon log (used by the CLI before the daemon's
/// own logging starts).
pub fn append_log_line(home: &Home, line: &str) {
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.log_path())
    {
        let _ = writeln!(f, "{line}");
    }
}
