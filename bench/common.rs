//! What the benches share: the work directory, a mounted latus node,
//! running commands, the kernel's knobs, timed samples and the table.
//! Each bench includes it with `mod common;`; it is not a bench of its own.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

/// The bench being built (`fsbench`, `cloudbench`, ...): names its
/// messages and its folder under target/.
const BENCH: &str = env!("CARGO_CRATE_NAME");

pub const MIB: usize = 1 << 20;

pub fn latus_binary(option: Option<PathBuf>) -> Result<PathBuf> {
    let path = option
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/latus"));
    ensure!(
        path.is_file(),
        "latus binary not found at {}: run `cargo build --release` first, or pass --latus PATH",
        path.display()
    );
    Ok(path)
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

// ---------------------------------------------------------------- work dir

/// Holds everything a bench writes (plain folders, homes, mount points, a
/// `dir` cloud), so it all shares one disk.
pub enum WorkDir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    /// `dir` (`--dir`) if given, which must be empty or absent; otherwise a
    /// fresh temporary directory under target/BENCH/, removed on drop.
    pub fn create(dir: Option<&Path>) -> Result<Self> {
        let Some(dir) = dir else {
            let parent = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(BENCH);
            fs::create_dir_all(&parent)?;
            // Canonical, so mount points read as in /proc/self/mountinfo.
            let parent = parent.canonicalize()?;
            let temp = tempfile::Builder::new()
                .prefix("run-")
                .tempdir_in(&parent)
                .with_context(|| format!("creating a work directory in {}", parent.display()))?;
            return Ok(Self::Temporary(temp));
        };
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        ensure!(
            fs::read_dir(dir)?.next().is_none(),
            "--dir {} is not empty",
            dir.display()
        );
        Ok(Self::Kept(dir.canonicalize()?))
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Temporary(temp) => temp.path(),
            Self::Kept(path) => path,
        }
    }
}

// ---------------------------------------------------------------- the node

/// A latus node with its own home; dropping it unmounts it if mounted.
pub struct Node {
    latus: PathBuf,
    pub home: PathBuf,
    pub mountpoint: PathBuf,
    /// Environment changes for every `latus` command of this node (and so
    /// for the daemon that `mount` starts): set a variable, or remove it
    /// with `None`.
    pub env: Vec<(OsString, Option<OsString>)>,
}

impl Node {
    /// Sets one field of the node's config.json (before it mounts).
    pub fn set_config(&self, key: &str, value: serde_json::Value) -> Result<()> {
        let path = self.home.join("config.json");
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: serde_json::Value = serde_json::from_slice(&text)?;
        config
            .as_object_mut()
            .context("config.json is not an object")?
            .insert(key.into(), value);
        fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    pub fn new(latus: &Path, home: &Path, mountpoint: &Path) -> Self {
        Self {
            latus: latus.to_owned(),
            home: home.to_owned(),
            mountpoint: mountpoint.to_owned(),
            env: Vec::new(),
        }
    }

    /// `latus --home HOME`, to add a subcommand to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.latus);
        command.arg("--home").arg(&self.home);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }

    /// `latus init`, with `--cloud URL` if given.
    pub fn init(&self, cloud: Option<&str>) -> Result<()> {
        let cloud = cloud.into_iter().flat_map(|url| ["--cloud", url]);
        run(self.command().arg("init").args(cloud))
    }

    /// Mounts and checks that the mount point is one; `offline`: changes
    /// queue, nothing uploads.
    pub fn mount(&self, offline: bool) -> Result<()> {
        fs::create_dir_all(&self.mountpoint)?;
        run(self
            .command()
            .arg("mount")
            .arg(&self.mountpoint)
            .args(offline.then_some("--offline")))
        .and_then(|()| {
            ensure!(
                is_mounted(&self.mountpoint)?,
                "`latus mount` returned but {} is not a mount point",
                self.mountpoint.display()
            );
            Ok(())
        })
        .with_context(|| {
            format!(
                "mounting latus at {} failed; {}",
                self.mountpoint.display(),
                self.log_tail()
            )
        })
    }

    pub fn unmount(&self) -> Result<()> {
        run(self.command().arg("unmount").arg(&self.mountpoint))
            .with_context(|| format!("unmounting latus; {}", self.log_tail()))
    }

    /// The end of the daemon's log, for error messages (the work directory
    /// may not outlive them).
    pub fn log_tail(&self) -> String {
        let path = self.home.join("daemon.log");
        match fs::read_to_string(&path) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                format!("last lines of {}:\n{tail}", path.display())
            }
            Err(error) => format!("no daemon log at {}: {error}", path.display()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !is_mounted(&self.mountpoint).unwrap_or(true) {
            return;
        }
        let Err(error) = self.unmount() else { return };
        eprintln!("{BENCH}: {error:#}; falling back to fusermount3 -u -z");
        let mut fallback = Command::new("fusermount3");
        fallback.args(["-u", "-z"]).arg(&self.mountpoint);
        if let Err(error) = run(&mut fallback) {
            eprintln!("{BENCH}: {error:#}");
        }
    }
}

/// Runs a command to completion, its output on our stderr (a daemon it
/// starts must not keep a pipe of ours open).
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// Whether `path` is a mount point in /proc/self/mountinfo.
fn is_mounted(path: &Path) -> Result<bool> {
    let mountinfo = fs::read("/proc/self/mountinfo")?;
    let path = path.as_os_str().as_bytes();
    Ok(mountinfo
        .split(|&byte| byte == b'\n')
        .filter_map(|line| line.split(|&byte| byte == b' ').nth(4))
        .any(|mountpoint| unescape_octal(mountpoint) == path))
}

/// Decodes the `\ooo` escapes that /proc/self/mountinfo uses for spaces and the like.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&byte, tail)) = rest.split_first() {
        match (byte, octal_byte(tail)) {
            (b'\\', Some(decoded)) => {
                out.push(decoded);
                rest = &tail[3..];
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    out
}

/// The byte that three octal digits at the start of `bytes` encode, if they do.
fn octal_byte(bytes: &[u8]) -> Option<u8> {
    let digits = bytes.get(..3)?;
    digits.iter().try_fold(0u8, |value, &digit| match digit {
        b'0'..=b'7' => value.checked_mul(8)?.checked_add(digit - b'0'),
        _ => None,
    })
}

// ---------------------------------------------------------------- files and caches

/// Closes the file and reports the error that `close` returns (a FUSE
/// filesystem reports write-back failures there; dropping a `File` hides it).
pub fn close(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `into_raw_fd` gave us sole ownership of `fd`; it is closed once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn can_drop_caches() -> bool {
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .is_ok()
}

/// Writes back dirty pages, then empties the page, dentry and inode caches.
pub fn drop_caches() -> Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache")
}

// ---------------------------------------------------------------- report

/// One timed run: how long it took and how many bytes (or operations) it did.
#[derive(Clone, Copy)]
pub struct Sample {
    pub elapsed: Duration,
    pub amount: u64,
}

impl Sample {
    pub fn since(start: Instant, amount: u64) -> Self {
        Self {
            elapsed: start.elapsed(),
            amount,
        }
    }

    pub fn megabytes_per_second(self) -> f64 {
        self.amount as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    pub fn per_second(self) -> f64 {
        self.amount as f64 / self.elapsed.as_secs_f64()
    }

    pub fn seconds(self) -> f64 {
        self.elapsed.as_secs_f64()
    }
}

#[derive(Clone, Copy)]
pub enum Unit {
    MegabytesPerSecond,
    OpsPerSecond,
    Seconds,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Self::MegabytesPerSecond => "MB/s",
            Self::OpsPerSecond => "ops/s",
            Self::Seconds => "s",
        }
    }

    pub fn format(self, value: f64) -> String {
        match self {
            Self::Seconds => format!("{value:.2}"),
            Self::MegabytesPerSecond | Self::OpsPerSecond => format!("{value:.0}"),
        }
    }
}

/// A ratio as the table shows it, `-` when there is none.
pub fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |ratio| format!("{ratio:.2}"))
}

/// One line of the table: a workload, its unit, then one cell per column.
pub struct Line {
    pub name: String,
    pub unit: Unit,
    pub cells: Vec<String>,
}

/// Prints a header (`workload`, `unit`, then the columns' titles) and the
/// lines: names left-aligned as wide as the longest (at least 8), cells
/// right-aligned to their column's width.
pub fn print_lines(columns: &[(String, usize)], lines: &[Line]) {
    let width = lines
        .iter()
        .map(|line| line.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let titles = columns.iter().map(|(title, _)| title);
    print_line(width, "workload", "unit", titles, columns);
    for line in lines {
        print_line(width, &line.name, line.unit.label(), &line.cells, columns);
    }
}

fn print_line<'a>(
    width: usize,
    name: &str,
    unit: &str,
    cells: impl IntoIterator<Item = &'a String>,
    columns: &[(String, usize)],
) {
    print!("{name:<width$}  {unit:>5}");
    for (cell, (_, cell_width)) in cells.into_iter().zip(columns) {
        print!("  {cell:>cell_width$}");
    }
    println!();
}

// ---------------------------------------------------------------- interruption

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// ^C (or SIGTERM, SIGHUP) makes a bench stop at its next check and
/// unwind through the guards that unmount what it mounted.
pub fn install_interrupt_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    anyhow::ensure!(!interrupted(), "interrupted");
    Ok(())
}

/// Sleeps, checking for ^C every 100 ms.
pub fn pause(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

// ---------------------------------------------------------------- files

/// Reads until `buffer` is full or the end of the input.
pub fn read_full(reader: &mut impl io::Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        match reader.read(&mut buffer[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Whether two files hold the same bytes.
pub fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut a = io::BufReader::with_capacity(MIB, File::open(a)?);
    let mut b = io::BufReader::with_capacity(MIB, File::open(b)?);
    let (mut x, mut y) = (vec![0; MIB], vec![0; MIB]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}
