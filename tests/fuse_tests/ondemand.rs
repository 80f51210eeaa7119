//! Files on demand through the kernel mount, with two nodes on one volume:
//! A writes, B reads what is only in the cloud. Partial chunk-range reads
//! (counted by a TCP proxy in front of S3, independently of latus, and by
//! the disk B's store takes), readahead, concurrent readers, the cache cap
//! and its eviction rules, pin / free / unpin / local-only, the xattrs,
//! tampered cloud objects and the hydration policy.
//!
//! The cloud is made unreachable for B alone by giving B a `dir:` URL that
//! goes through a symlink, removed and put back by the test.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cloud::{Backend, aws_available, chunk_objects, sync_wait, unique};
use crate::harness::*;

const POLL_MS: u64 = 200;
/// How long another node's changes (or a background download) may take.
const CONVERGE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- nodes

fn edit_config(m: &Mounted, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = m.home.join("config.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    f(v.as_object_mut().expect("config.json is an object"));
    fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A node initialised on `url` (joining with `key` if given), polling
/// every 200 ms; not mounted.
fn init_node(url: &str, name: &str, key: Option<&Path>, extra: &[&str]) -> Mounted {
    let m = Mounted::bare();
    let key = key.map(|k| k.to_str().unwrap().to_string());
    let mut args = vec!["init", "--cloud", url, "--name", name];
    if let Some(k) = &key {
        args.extend(["--key-file", k.as_str()]);
    }
    args.extend(extra);
    m.latus(&args).expect_ok();
    edit_config(&m, |c| {
        c.insert("poll_ms".into(), POLL_MS.into());
    });
    m
}

/// Two nodes of one volume, not mounted: A creates it on `url_a`, B joins
/// through `url_b` (the same cloud, maybe by another path) with `b_args`.
/// Also returns the volume key.
fn two_nodes(url_a: &str, url_b: &str, b_args: &[&str]) -> (Mounted, Mounted, [u8; 32]) {
    let a = init_node(url_a, "a", None, &[]);
    let key_file = a.scratch().join("volume-key.json");
    a.latus(&["key", "export", key_file.to_str().unwrap()])
        .expect_ok();
    let b = init_node(url_b, "b", Some(&key_file), b_args);
    let key = latus::crypto::KeyFile::parse(&fs::read(&key_file).unwrap()).unwrap();
    (a, b, key)
}

/// A `dir` cloud that node B reaches through a symlink: `cut` makes it
/// unreachable for B only, `restore` brings it back (also on drop).
struct Link {
    real: PathBuf,
    link: PathBuf,
}

impl Link {
    fn new(scratch: &Path) -> Link {
        let real = scratch.join(unique("cloud"));
        let link = scratch.join(unique("link"));
        Link { real, link }
    }

    /// Called once the real folder exists (after A's init).
    fn make(&self) {
        symlink(&self.real, &self.link).unwrap();
    }

    fn url_a(&self) -> String {
        format!("dir:{}", self.real.display())
    }

    fn url_b(&self) -> String {
        format!("dir:{}", self.link.display())
    }

    fn cut(&self) {
        fs::remove_file(&self.link).unwrap();
    }

    fn restore(&self) {
        if fs::symlink_metadata(&self.link).is_err() {
            symlink(&self.real, &self.link).unwrap();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.real.exists() {
            self.restore();
        }
    }
}

/// A, B on a `dir` cloud that B reaches through `link`; both mounted.
fn pair_via_link(link: &Link, b_args: &[&str]) -> (Mounted, Mounted, [u8; 32]) {
    let a = init_node(&link.url_a(), "a", None, &[]);
    link.make();
    let key_file = a.scratch().join("volume-key.json");
    a.latus(&["key", "export", key_file.to_str().unwrap()])
        .expect_ok();
    let b = init_node(&link.url_b(), "b", Some(&key_file), b_args);
    let key = latus::crypto::KeyFile::parse(&fs::read(&key_file).unwrap()).unwrap();
    a.mount();
    b.mount();
    (a, b, key)
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn state(m: &Mounted, rel: &str) -> String {
    m.path_status(arg(&m.p(rel)))["state"]
        .as_str()
        .unwrap_or_else(|| panic!("{rel}: status --json has no state"))
        .to_string()
}

fn cache(m: &Mounted) -> (u64, u64, bool) {
    let s = m.status();
    let c = &s["cache"];
    (
        c["cap_bytes"].as_u64().expect("cache.cap_bytes"),
        c["used_bytes"].as_u64().expect("cache.used_bytes"),
        c["over_cap"].as_bool().expect("cache.over_cap"),
    )
}

fn daemon_log(m: &Mounted) -> String {
    fs::read_to_string(m.home.join("daemon.log")).unwrap_or_default()
}

fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(poll(timeout, f), "timed out after {timeout:?}: {what}");
}

/// Waits until `m` lists `rel` with `size` bytes.
fn wait_listed(m: &Mounted, rel: &str, size: usize) {
    let p = m.p(rel);
    wait_for(
        &format!("{rel} listed on {}", m.home.display()),
        CONVERGE,
        || fs::metadata(&p).is_ok_and(|md| md.len() == size as u64),
    );
}

fn write_file(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn pread(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Asserts the whole file reads back as `want` (by SHA-512).
fn assert_content(path: &Path, want: &[u8]) {
    let got = read_all(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(got.len(), want.len(), "{}: length", path.display());
    assert!(
        sha512_hex(&got) == sha512_hex(want),
        "{}: content differs from what was written",
        path.display()
    );
}

/// Disk taken by the regular files of B's content store (st_blocks), as
/// the kernel reports it: independent of latus's own accounting.
fn store_disk(m: &Mounted) -> u64 {
    fn walk(dir: &Path, sum: &mut u64) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                walk(&e.path(), sum);
            } else if md.is_file() {
                *sum += md.blocks() * 512;
            }
        }
    }
    let mut sum = 0;
    walk(&m.home.join("store"), &mut sum);
    sum
}

fn getxattr(path: &Path, name: &str) -> io::Result<String> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer we own.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(String::from_utf8(buf).unwrap())
}

fn setxattr(path: &Path, name: &str, value: &str) -> io::Result<()> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a value slice we own.
    check(unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// A copy of `program` named `name` in `dir`: the kernel's `comm` of a
/// process running it is `name` (what the hydration policy goes by).
fn program_named(dir: &Path, program: &str, name: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let to = dir.join(name);
    fs::copy(program, &to).unwrap_or_else(|e| panic!("copy {program}: {e}"));
    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    to
}

// ---------------------------------------------------------------- chunks

#[derive(Debug, Clone)]
struct Chunk {
    offset: u64,
    len: u64,
    /// The object's name in the cloud.
    name: String,
}

/// The chunks latus cuts `data` into, named as in the cloud.
fn chunks_of(data: &[u8], key: &[u8; 32]) -> Vec<Chunk> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    let keys = latus::crypto::Keys::derive(key);
    let mut out = Vec::new();
    latus::sync::for_each_chunk::<io::Error>(
        &f,
        data.len() as u64,
        keys.chunker_seed(),
        |offset, d| {
            out.push(Chunk {
                offset,
                len: d.len() as u64,
                name: keys.chunk_name(&d),
            });
            Ok(())
        },
    )
    .unwrap();
    out
}

fn covering(chunks: &[Chunk], offset: u64, len: u64) -> BTreeSet<String> {
    chunks
        .iter()
        .filter(|c| c.offset < offset + len && offset < c.offset + c.len)
        .map(|c| c.name.clone())
        .collect()
}

/// Sealed size of a chunk: LTS1 + nonce + (u64 length + data, padded to
/// its size bucket) + tag.
fn sealed_len(len: u64) -> u64 {
    (latus::crypto::SEAL_OVERHEAD + latus::crypto::bucket(len as usize + 8, 4096)) as u64
}

/// The dir cloud's file holding object `name`.
fn dir_object_path(cloud: &Path, name: &str) -> PathBuf {
    let hits: Vec<PathBuf> = chunk_objects(&Backend::Dir(cloud.to_path_buf()))
        .into_iter()
        .map(|(rel, _)| cloud.join(rel))
        .filter(|p| p.file_name().is_some_and(|f| f == name))
        .collect();
    assert_eq!(hits.len(), 1, "object {name} in {}", cloud.display());
    hits[0].clone()
}

// ---------------------------------------------------------------- proxy

/// What went through the proxy, from the server to the client.
#[derive(Debug, Default, Clone)]
struct Traffic {
    /// Every request line, in order.
    requests: Vec<String>,
    /// S3 GETs of one object, by object name.
    gets: BTreeMap<String, u64>,
    /// Bytes of the responses to those GETs (headers included).
    object_bytes: u64,
    /// Every byte from the server.
    total_bytes: u64,
    /// A request the proxy could not frame (chunked upload): counts after
    /// it may be misattributed.
    unframed: bool,
}

impl Traffic {
    fn object_gets(&self) -> u64 {
        self.gets.values().sum()
    }

    /// Object GETs since `before`, by name.
    fn gets_since(&self, before: &Traffic) -> BTreeMap<String, u64> {
        self.gets
            .iter()
            .filter_map(|(k, v)| {
                let d = v - before.gets.get(k).copied().unwrap_or(0);
                (d > 0).then(|| (k.clone(), d))
            })
            .collect()
    }
}

/// A counting TCP proxy in front of the S3/DynamoDB endpoint (a thread per
/// direction per connection): counts the bytes the server sends, and which
/// objects are fetched, independently of latus.
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The server is "gone": connections are closed, new ones dropped.
    down: Arc<AtomicBool>,
    traffic: Arc<Mutex<Traffic>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str, bucket: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let acceptor = {
            let (stop, down, traffic) = (stop.clone(), down.clone(), traffic.clone());
            let bucket = format!("/{bucket}/");
            thread::spawn(move || {
                let mut conns = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if down.load(Ordering::Acquire) {
                                drop(client);
                                continue;
                            }
                            client.set_nonblocking(false).unwrap();
                            let Ok(server) = TcpStream::connect(&upstream) else {
                                continue;
                            };
                            conns.extend(relay(client, server, &bucket, [&stop, &down], &traffic));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            })
        };
        Proxy {
            addr,
            stop,
            down,
            traffic,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn traffic(&self) -> Traffic {
        self.traffic.lock().unwrap().clone()
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Frames the client's requests (request line + headers, then
/// Content-Length bytes of body) to know which request a response answers.
struct RequestParser {
    head: Vec<u8>,
    body_left: u64,
    lost: bool,
}

impl RequestParser {
    /// Feeds client bytes; calls `on_request(line)` at each request head.
    fn feed(&mut self, mut data: &[u8], on_request: &mut dyn FnMut(&str, bool)) {
        while !data.is_empty() && !self.lost {
            if self.body_left > 0 {
                let n = (self.body_left as usize).min(data.len());
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            self.head.push(data[0]);
            data = &data[1..];
            if self.head.ends_with(b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.head).into_owned();
                self.head.clear();
                let mut lines = head.split("\r\n");
                let line = lines.next().unwrap_or_default().to_string();
                let mut chunked = false;
                for h in lines {
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        self.body_left = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                        chunked = true;
                    }
                }
                if chunked {
                    self.lost = true;
                }
                on_request(&line, chunked);
            }
        }
    }
}

fn relay(
    client: TcpStream,
    server: TcpStream,
    bucket: &str,
    [stop, down]: [&Arc<AtomicBool>; 2],
    traffic: &Arc<Mutex<Traffic>>,
) -> Vec<JoinHandle<()>> {
    let ended = {
        let (stop, down) = (stop.clone(), down.clone());
        move || stop.load(Ordering::Acquire) || down.load(Ordering::Acquire)
    };
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    // The object the response being relayed belongs to (no pipelining:
    // a client sends its next request after reading the last response).
    let current: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let up = {
        let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (ended, traffic, current) = (ended.clone(), traffic.clone(), current.clone());
        let bucket = bucket.to_string();
        thread::spawn(move || {
            let mut parser = RequestParser {
                head: Vec::new(),
                body_left: 0,
                lost: false,
            };
            let mut buf = vec![0u8; 256 * KIB];
            while !ended() {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue;
                    }
                    Err(_) => break,
                };
                parser.feed(&buf[..n], &mut |line, chunked| {
                    let object = line
                        .strip_prefix("GET ")
                        .and_then(|r| r.strip_prefix(bucket.as_str()))
                        .map(|r| r.split([' ', '?']).next().unwrap_or_default().to_string())
                        .filter(|o| !o.is_empty());
                    let mut t = traffic.lock().unwrap();
                    t.requests.push(line.to_string());
                    t.unframed |= chunked;
                    if let Some(o) = &object {
                        *t.gets.entry(o.clone()).or_default() += 1;
                    }
                    *current.lock().unwrap() = object;
                });
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let down = {
        let (mut from, mut to) = (server, client);
        let traffic = traffic.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * KIB];
            while !ended() {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue;
                    }
                    Err(_) => break,
                };
                {
                    // Counted before the client can see them.
                    let mut t = traffic.lock().unwrap();
                    t.total_bytes += n as u64;
                    if current.lock().unwrap().is_some() {
                        t.object_bytes += n as u64;
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    vec![up, down]
}

// ---------------------------------------------------------------- 1, 2, 10

mod partial_reads {
    #[test]
    fn dir() {
        super::partial_reads_fetch_only_the_chunks_read(false);
    }
    #[test]
    fn aws() {
        super::partial_reads_fetch_only_the_chunks_read(true);
    }
}

/// Reads `len` bytes at `offset` through O_DIRECT (each read reaches the
/// daemon, whatever the page cache holds), else a plain pread.
fn pread_direct(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => File::open(path)?,
        Err(e) => return Err(e),
    };
    let mut raw = vec![0u8; len + 4096];
    let start = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[start..start + len];
    f.read_exact_at(buf, offset)?;
    Ok(buf.to_vec())
}

/// Test 1: a 64 MiB file A wrote is listed on B with its size, mode and
/// published mtime; `ls -l`, `find`, `stat` download nothing; one 4 KiB
/// read in the middle fetches exactly the chunks covering it (S3 GETs and
/// bytes counted by a proxy in front of the server; B's store on disk); a
/// sequential reader is served ahead; 20 random reads are byte-exact.
/// Test 10: 4 concurrent O_DIRECT readers of one chunk: one download.
/// With the server gone (aws), an unfetched part fails with ENETUNREACH within
/// seconds and the log names the file; it reads once the server is back.
/// Test 2: a sequential read of the whole file equals the source, every
/// chunk is downloaded exactly once, and the file is then `local`.
/// Also: without `--cache-size`, the cap is a tenth of the disk.
fn partial_reads_fetch_only_the_chunks_read(aws: bool) {
    let scratch = tempfile::tempdir().unwrap();
    let backend = if aws {
        if !aws_available() {
            return;
        }
        Backend::Aws {
            bucket: unique("latus-test"),
            table: unique("latus-test"),
        }
    } else {
        Backend::Dir(scratch.path().join(unique("cloud")))
    };
    let proxy = match &backend {
        Backend::Aws { bucket, .. } => Some(Proxy::start(
            &std::env::var("AWS_ENDPOINT_URL").unwrap(),
            bucket,
        )),
        Backend::Dir(_) => None,
    };
    let traffic = || proxy.as_ref().map(Proxy::traffic).unwrap_or_default();
    let (a, b, key) = two_nodes(&backend.url(), &backend.url(), &[]);
    a.mount();
    match &proxy {
        Some(p) => b.mount_env(&[("AWS_ENDPOINT_URL", &p.url())]),
        None => b.mount(),
    };
    let size = 64 * MIB;
    let data = pattern(0x5eed_0001, size);
    let chunks = chunks_of(&data, &key);
    assert!(chunks.len() >= 16, "{} chunks", chunks.len());
    write_file(&a.p("big.bin"), &data);
    fs::set_permissions(a.p("big.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    sync_wait(&a);
    wait_listed(&b, "big.bin", size);
    let big = b.p("big.bin");

    // Listed with its real attributes; listing and stat download nothing.
    let (ma, mb) = (
        fs::metadata(a.p("big.bin")).unwrap(),
        fs::metadata(&big).unwrap(),
    );
    assert_eq!(mb.len(), size as u64);
    assert_eq!(mb.mode() & 0o7777, 0o640, "mode on B");
    // The version's mtime as A published it (A's own view may differ: see
    // other_nodes_list_the_mtime_the_writer_sees).
    let published = a
        .log_events()
        .iter()
        .rev()
        .find(|e| e.file_path == "big.bin")
        .and_then(|e| e.mtime.as_i64())
        .expect("A's event for big.bin has an mtime");
    assert_eq!(
        mb.mtime() * 1_000_000_000 + mb.mtime_nsec(),
        published,
        "mtime on B"
    );
    assert!(
        (mb.mtime() - ma.mtime()).abs() <= 2,
        "mtime on B far from A's"
    );
    assert_eq!(state(&b, "big.bin"), "cloud");
    // No --cache-size: a tenth of the disk holding the home.
    let home = cpath(&b.home);
    // SAFETY: statvfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(home.as_ptr(), &mut vfs) }).unwrap();
    assert_eq!(cache(&b).0, vfs.f_blocks * vfs.f_frsize / 10, "default cap");
    let t0 = traffic();
    let disk0 = store_disk(&b);
    let mnt = arg(&b.mnt);
    run_cmd(Command::new("ls").args(["-lR", mnt]), TIMEOUT).expect_ok();
    run_cmd(
        Command::new("find").args([mnt, "-type", "f", "-size", "+1k"]),
        TIMEOUT,
    )
    .expect_ok();
    run_cmd(Command::new("stat").arg(&big), TIMEOUT).expect_ok();
    assert_eq!(store_disk(&b), disk0, "ls/find/stat wrote content on B");
    let t1 = traffic();
    assert_eq!(
        t1.object_gets(),
        t0.object_gets(),
        "ls/find/stat fetched objects: {:?}",
        t1.gets_since(&t0)
    );
    assert_eq!(t1.object_bytes, t0.object_bytes);

    // One 4 KiB read in the middle: exactly the chunks covering it.
    let mid = 32 * MIB as u64 + 12 * 4096;
    assert_eq!(
        pread(&big, mid, 4096).unwrap(),
        data[mid as usize..][..4096]
    );
    let want = covering(&chunks, mid, 4096);
    let want_bytes: u64 = chunks
        .iter()
        .filter(|c| want.contains(&c.name))
        .map(|c| c.len)
        .sum();
    let disk1 = store_disk(&b);
    assert!(
        disk1 - disk0 <= want_bytes + 64 * KIB as u64,
        "a 4 KiB read wrote {} bytes to B's store; the chunks covering it are {want_bytes}",
        disk1 - disk0
    );
    assert!(
        disk1 - disk0 >= 4096,
        "the read fetched nothing into the store"
    );
    if proxy.is_some() {
        let t2 = traffic();
        let got: BTreeSet<String> = t2.gets_since(&t1).into_keys().collect();
        assert_eq!(
            got, want,
            "a 4 KiB read at {mid} must fetch exactly the chunks covering it (no readahead for a random read)"
        );
        let bytes = t2.object_bytes - t1.object_bytes;
        assert!(
            bytes <= 6 * MIB as u64,
            "a 4 KiB read transferred {bytes} bytes"
        );
        let sealed: u64 = want_bytes.div_ceil(4096) * 4096;
        assert!(bytes >= sealed, "{bytes} bytes < the chunk's {sealed}");
        eprintln!(
            "aws: a 4 KiB read at {mid} fetched {} object(s), {bytes} bytes from the server ({want_bytes} bytes of chunk)",
            got.len()
        );
        assert!(!t2.unframed, "the proxy lost the request framing");
    }
    assert_eq!(state(&b, "big.bin"), "cloud", "a partial copy is not local");

    // A sequential reader is served ahead: after reading the first 2 MiB,
    // chunks far past what the kernel asks for (its readahead is at most
    // 1 MiB) arrive without being read.
    let t3 = traffic();
    {
        let mut f = File::open(&big).unwrap();
        let mut head = vec![0u8; 2 * MIB];
        f.read_exact(&mut head).unwrap();
        assert!(head == data[..2 * MIB], "first 2 MiB differ");
    }
    let ahead = 6 * MIB as u64;
    let beyond: Vec<&Chunk> = chunks.iter().filter(|c| c.offset >= ahead).collect();
    let fetched_beyond = || -> bool {
        if proxy.is_some() {
            let g = traffic().gets_since(&t3);
            beyond.iter().any(|c| g.contains_key(&c.name))
        } else {
            store_disk(&b) >= disk1 + ahead
        }
    };
    wait_for(
        "readahead of a sequential reader fetches chunks past 6 MiB",
        Duration::from_secs(10),
        fetched_beyond,
    );

    // 20 random reads, byte-exact.
    let seeds = pattern(0x5eed_0002, 20 * 8);
    let mut offsets = Vec::new();
    for s in seeds.chunks(8) {
        let r = u64::from_le_bytes(s.try_into().unwrap());
        offsets.push(r % (size as u64 - 4096));
    }
    for &off in &offsets {
        let got = pread(&big, off, 4096).unwrap_or_else(|e| panic!("pread at {off}: {e}"));
        assert!(
            got == data[off as usize..][..4096],
            "4 KiB at {off} differ from the source"
        );
    }

    // Concurrent readers of one chunk not fetched yet: one download.
    let t4 = traffic();
    let fetched: BTreeSet<String> = t4.gets.keys().cloned().collect();
    let mut busy: BTreeSet<String> = want.clone();
    for &off in &offsets {
        busy.extend(covering(&chunks, off, 4096));
    }
    let target = chunks
        .iter()
        .rev()
        .find(|c| !busy.contains(&c.name) && !fetched.contains(&c.name) && c.len >= 64 * 1024)
        .expect("a chunk nobody read yet")
        .clone();
    let off = (target.offset + target.len / 2) / 4096 * 4096;
    assert!(off >= target.offset && off + 4096 <= target.offset + target.len);
    let barrier = Arc::new(Barrier::new(4));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (big, barrier) = (big.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                pread_direct(&big, off, 4096)
            })
        })
        .collect();
    for r in readers {
        let got = r.join().unwrap().unwrap();
        assert!(
            got == data[off as usize..][..4096],
            "concurrent read differs"
        );
    }
    if proxy.is_some() {
        let g = traffic().gets_since(&t4);
        assert_eq!(
            g.get(&target.name).copied(),
            Some(1),
            "4 concurrent readers of one chunk: it must be downloaded once ({g:?})"
        );
    }

    // The server goes away: a part not fetched yet fails with ENETUNREACH (soon,
    // not after minutes), the log names the file; it reads once the
    // server is back, without a remount.
    if let Some(p) = &proxy {
        let fetched: BTreeSet<String> = traffic().gets.into_keys().collect();
        let c = chunks
            .iter()
            .find(|c| !fetched.contains(&c.name) && c.len >= 64 * 1024)
            .expect("a chunk not fetched yet");
        let off = (c.offset + c.len / 2) / 4096 * 4096;
        p.set_down(true);
        let started = Instant::now();
        let r = pread(&big, off, 4096);
        let took = started.elapsed();
        p.set_down(false);
        assert_eq!(errno(r), libc::ENETUNREACH, "read with the server gone");
        assert!(took < Duration::from_secs(30), "ENETUNREACH took {took:?}");
        let log = daemon_log(&b);
        assert!(
            log.lines()
                .any(|l| l.contains("big.bin") && l.contains("ERROR")),
            "daemon.log does not name big.bin:\n{log}"
        );
        wait_for(
            "big.bin reads again once the server is back",
            Duration::from_secs(10),
            || pread(&big, off, 4096).is_ok(),
        );
        assert!(pread(&big, off, 4096).unwrap() == data[off as usize..][..4096]);
        eprintln!("aws: ENETUNREACH with the server gone after {took:?}");
    }

    // 2. The whole file, sequentially: equals the source; then local.
    assert_content(&big, &data);
    wait_for(
        "big.bin local after a full read",
        Duration::from_secs(10),
        || state(&b, "big.bin") == "local",
    );
    let disk = store_disk(&b);
    assert!(
        disk >= size as u64 && disk <= size as u64 + 2 * MIB as u64,
        "B's store takes {disk} bytes for a {size}-byte file"
    );
    if proxy.is_some() {
        let t = traffic();
        let twice: Vec<_> = t.gets.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "chunks downloaded more than once: {twice:?}"
        );
        for c in &chunks {
            assert!(
                t.gets.contains_key(&c.name),
                "chunk at {} never fetched",
                c.offset
            );
        }
        let sealed: u64 = chunks.iter().map(|c| sealed_len(c.len)).sum();
        assert!(
            t.object_bytes >= sealed && t.object_bytes <= sealed + sealed / 20,
            "object bytes {} for {sealed} bytes of sealed chunks",
            t.object_bytes
        );
    }
}

/// The mtime another node lists is the one the writer shows. A large file
/// written in one call (then chmod, as `cp -p` or an unpacker does) shows
/// on the writer the kernel's write time, but the daemon commits and
/// publishes the time its last WRITE request arrived (writeback caching):
/// B lists another mtime than A, and A itself shows B's after a remount.
#[test]
fn other_nodes_list_the_mtime_the_writer_sees() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, _) = two_nodes(&url, &url, &[]);
    a.mount();
    b.mount();
    let data = pattern(0x5eed_0004, 64 * MIB);
    let mut on_a = Vec::new();
    for i in 0..2 {
        let rel = format!("m{i}.bin");
        write_file(&a.p(&rel), &data);
        fs::set_permissions(a.p(&rel), fs::Permissions::from_mode(0o640)).unwrap();
        let m = fs::metadata(a.p(&rel)).unwrap();
        on_a.push((rel, (m.mtime(), m.mtime_nsec())));
    }
    sync_wait(&a);
    let mut diffs = Vec::new();
    for (rel, t) in &on_a {
        wait_listed(&b, rel, data.len());
        let m = fs::metadata(b.p(rel)).unwrap();
        if (m.mtime(), m.mtime_nsec()) != *t {
            diffs.push(format!(
                "{rel}: A shows {t:?}, B lists {:?}",
                (m.mtime(), m.mtime_nsec())
            ));
        }
    }
    a.remount();
    for (rel, t) in &on_a {
        let m = fs::metadata(a.p(rel)).unwrap();
        if (m.mtime(), m.mtime_nsec()) != *t {
            diffs.push(format!(
                "{rel}: A showed {t:?}, after a remount {:?}",
                (m.mtime(), m.mtime_nsec())
            ));
        }
    }
    assert!(diffs.is_empty(), "mtimes differ:\n{}", diffs.join("\n"));
}

// ---------------------------------------------------------------- 3

/// Test 3: With `--cache-size 20M`, reading 60 MiB of cloud-only files keeps
/// the cache (status and disk) under the cap; pinned content stays (and
/// reads with the cloud gone); B's own unuploaded writes are never evicted
/// (over_cap when they alone pass the cap), and go once uploaded; `latus
/// set cache-size` applies live.
#[test]
fn the_cache_stays_under_its_cap() {
    let scratch = tempfile::tempdir().unwrap();
    let link = Link::new(scratch.path());
    let (a, b, _) = pair_via_link(&link, &["--cache-size", "20M"]);
    let cap = 20 * MIB as u64;
    let keep: Vec<(String, Vec<u8>)> = (0..2)
        .map(|i| (format!("keep/k{i}.bin"), pattern(300 + i, 2 * MIB)))
        .collect();
    let bulk: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("bulk/f{i:02}.bin"), pattern(400 + i, 5 * MIB)))
        .collect();
    for (rel, data) in keep.iter().chain(&bulk) {
        write_file(&a.p(rel), data);
    }
    sync_wait(&a);
    for (rel, data) in keep.iter().chain(&bulk) {
        wait_listed(&b, rel, data.len());
    }
    assert_eq!(cache(&b).0, cap, "cap_bytes from --cache-size 20M");

    let out = b.latus(&["pin", arg(&b.p("keep"))]).expect_ok();
    assert!(
        out.stdout.contains("pinned") && out.stdout.contains("downloaded 2 files"),
        "pin output: {out}"
    );
    for (rel, _) in &keep {
        assert_eq!(state(&b, rel), "local", "{rel} after pin");
    }

    // The first file read stays open through the workload: the least
    // recently used, but open, so never evicted.
    let mut held = None;
    for (rel, data) in &bulk {
        assert_content(&b.p(rel), data);
        if held.is_none() {
            held = Some(File::open(b.p(rel)).unwrap());
        }
        // The read that completed the file evicted what was least recently
        // used: nothing to wait for.
        let (_, used, over) = cache(&b);
        assert!(used <= cap, "after reading {rel}: used {used} > cap {cap}");
        assert!(!over, "after reading {rel}: over_cap");
        let disk = store_disk(&b);
        assert!(
            disk <= cap + 256 * KIB as u64,
            "after reading {rel}: B's store takes {disk} bytes on disk (cap {cap})"
        );
    }
    for (rel, _) in &keep {
        assert_eq!(state(&b, rel), "local", "pinned {rel} evicted");
    }
    assert_eq!(state(&b, &bulk[0].0), "local", "an open file was evicted");
    // What may not be evicted (4 MiB pinned, 5 MiB held open, the file
    // being read and the one before it, whose release may still be on its
    // way: 19 MiB) never passed the cap: the cache never was over it.
    let log = daemon_log(&b);
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("over its cap")).collect();
    assert!(
        warned.is_empty(),
        "over_cap was raised with at most 19 MiB that may not be evicted (cap 20 MiB):\n{}",
        warned.join("\n")
    );
    drop(held);
    let evicted = bulk
        .iter()
        .filter(|(rel, _)| state(&b, rel) == "cloud")
        .count();
    assert!(evicted >= 8, "only {evicted} of 12 files evicted");

    // The cloud goes: pinned files read; B's own writes stay pending and
    // are never evicted, even over the cap.
    link.cut();
    for (rel, data) in &keep {
        assert_content(&b.p(rel), data);
    }
    let mine: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("mine/p{i}.bin"), pattern(500 + i, 5 * MIB)))
        .collect();
    for (rel, data) in &mine {
        write_file(&b.p(rel), data);
    }
    wait_for(
        "over_cap with 24 MiB that may not be evicted",
        CONVERGE,
        || {
            let (_, used, over) = cache(&b);
            over && used >= 24 * MIB as u64
        },
    );
    for (rel, data) in &mine {
        assert_eq!(state(&b, rel), "pending", "{rel}");
        assert_content(&b.p(rel), data);
    }
    for (rel, data) in &keep {
        assert_content(&b.p(rel), data);
    }
    let disk = store_disk(&b);
    assert!(disk >= 24 * MIB as u64, "unevictable content went: {disk}");
    assert!(
        disk <= 24 * MIB as u64 + 6 * MIB as u64,
        "evictable content stayed: {disk}"
    );

    // Back: B's writes upload, become evictable, and the cache returns
    // under its cap.
    link.restore();
    sync_wait(&b);
    wait_for("back under the cap once uploaded", CONVERGE, || {
        let (_, used, over) = cache(&b);
        !over && used <= cap
    });
    for (rel, data) in &mine {
        assert_content(&b.p(rel), data);
        wait_listed(&a, rel, data.len());
        assert_content(&a.p(rel), data);
    }

    // The cap changes live.
    let out = b.latus(&["set", "cache-size", "12M"]).expect_ok();
    assert!(out.stdout.contains("in force now"), "{out}");
    let cap = 12 * MIB as u64;
    wait_for("used under the new cap", CONVERGE, || {
        let (c, used, over) = cache(&b);
        c == cap && used <= cap && !over
    });
    let cfg: Value =
        serde_json::from_slice(&fs::read(b.home.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["cache_bytes"], cap);
    for (rel, _) in &keep {
        assert_eq!(state(&b, rel), "local", "pinned {rel} evicted");
    }
}

/// Test 3b: A partial copy (some chunks of a file read at random, the file
/// closed) is content safely in the cloud, not pinned, not open: it counts
/// against the cap and must be evicted like a whole copy, and `over_cap`
/// must not claim it may not be.
#[test]
fn partial_copies_are_evicted_under_the_cap() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, key) = two_nodes(&url, &url, &["--cache-size", "4M"]);
    a.mount();
    b.mount();
    let cap = 4 * MIB as u64;
    let size = 32 * MIB;
    let data = pattern(0x5eed_0003, size);
    let chunks = chunks_of(&data, &key);
    write_file(&a.p("sparse.bin"), &data);
    sync_wait(&a);
    wait_listed(&b, "sparse.bin", size);
    // One 4 KiB read in every other chunk: about 16 MiB of chunks.
    let p = b.p("sparse.bin");
    for c in chunks.iter().step_by(2) {
        let off = (c.offset + c.len / 2) / 4096 * 4096;
        assert_eq!(pread(&p, off, 4096).unwrap(), data[off as usize..][..4096]);
    }
    let read: u64 = chunks.iter().step_by(2).map(|c| c.len).sum();
    assert!(read > 3 * cap, "the reads cover {read} bytes of chunks");
    let ok = poll(Duration::from_secs(5), || {
        let (_, used, over) = cache(&b);
        used <= cap && !over
    });
    let (_, used, over) = cache(&b);
    let disk = store_disk(&b);
    assert!(
        ok && disk <= cap + 256 * KIB as u64,
        "after random reads of a closed cloud-only file: used_bytes {used}, over_cap {over}, \
         {disk} bytes on disk; cap {cap}: the partial copy is never evicted"
    );
}

/// Test 3c: A partial copy goes when its file goes (deleted by another node):
/// nothing names it any more, yet it stays on disk and in `used_bytes`.
#[test]
fn a_partial_copy_goes_with_its_file() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, _) = two_nodes(&url, &url, &[]);
    a.mount();
    b.mount();
    let data = pattern(0x5eed_0005, 16 * MIB);
    write_file(&a.p("gone.bin"), &data);
    sync_wait(&a);
    wait_listed(&b, "gone.bin", data.len());
    let off = 8 * MIB as u64;
    assert_eq!(
        pread(&b.p("gone.bin"), off, 4096).unwrap(),
        data[off as usize..][..4096]
    );
    assert!(
        store_disk(&b) >= 256 * KIB as u64,
        "the read fetched nothing"
    );
    fs::remove_file(a.p("gone.bin")).unwrap();
    sync_wait(&a);
    wait_for("gone.bin gone from B", CONVERGE, || {
        !b.p("gone.bin").exists()
    });
    let ok = poll(Duration::from_secs(5), || {
        store_disk(&b) < 64 * KIB as u64 && cache(&b).1 < 64 * KIB as u64
    });
    assert!(
        ok,
        "a partial copy of a deleted file stays: {} bytes on disk, used_bytes {}",
        store_disk(&b),
        cache(&b).1
    );
}

// ---------------------------------------------------------------- 4

/// Test 4: `latus pin` downloads a folder before it returns; with the cloud
/// gone every pinned file reads, a cloud-only file outside fails with ENETUNREACH
/// and the daemon log names it; with the cloud back it reads without a
/// remount; a new file A writes under the pin becomes `local` on B
/// without being read; `unpin` returns to auto.
#[test]
fn pinned_folders_work_without_the_cloud() {
    let scratch = tempfile::tempdir().unwrap();
    let link = Link::new(scratch.path());
    let (a, b, _) = pair_via_link(&link, &[]);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("pinned/a.bin", pattern(40, 3 * MIB)),
        ("pinned/sub/b.bin", pattern(41, MIB + 17)),
        ("pinned/c.txt", b"small pinned file\n".to_vec()),
        ("other/x.bin", pattern(42, 2 * MIB)),
    ];
    for (rel, data) in &files {
        write_file(&a.p(rel), data);
    }
    sync_wait(&a);
    for (rel, data) in &files {
        wait_listed(&b, rel, data.len());
        assert_eq!(state(&b, rel), "cloud", "{rel} before pin");
    }
    let out = b.latus(&["pin", arg(&b.p("pinned"))]).expect_ok();
    assert!(
        out.stdout.contains("pinned: pinned; downloaded 3 files"),
        "pin output: {out}"
    );
    for (rel, _) in &files[..3] {
        assert_eq!(state(&b, rel), "local", "{rel} after pin returned");
        let st = b.path_status(arg(&b.p(rel)));
        assert_eq!(st["placement"]["rule"], "pinned", "{rel}: {st}");
        assert_eq!(st["placement"]["from"], "pinned", "{rel}: {st}");
    }
    let st = b.path_status(arg(&b.p("other/x.bin")));
    assert_eq!(st["placement"]["rule"], "auto", "{st}");
    assert!(st["placement"]["from"].is_null(), "{st}");

    link.cut();
    for (rel, data) in &files[..3] {
        assert_content(&b.p(rel), data);
    }
    let x = b.p("other/x.bin");
    assert_eq!(
        errno(pread(&x, MIB as u64, 4096)),
        libc::ENETUNREACH,
        "cloud-only file with the cloud gone"
    );
    let log = daemon_log(&b);
    assert!(
        log.lines()
            .any(|l| l.contains("other/x.bin") && (l.contains("ERROR") || l.contains("WARN"))),
        "daemon.log does not name other/x.bin:\n{log}"
    );

    link.restore();
    wait_for(
        "other/x.bin reads again without a remount",
        Duration::from_secs(10),
        || pread(&x, MIB as u64, 4096).is_ok(),
    );
    assert_content(&x, &files[3].1);

    // Eager: new content below the pin comes without being read.
    sync_wait(&b);
    let new = pattern(43, 2 * MIB);
    write_file(&a.p("pinned/sub/new.bin"), &new);
    sync_wait(&a);
    wait_for(
        "pinned/sub/new.bin local on B without a read",
        CONVERGE,
        || {
            fs::metadata(b.p("pinned/sub/new.bin")).is_ok()
                && state(&b, "pinned/sub/new.bin") == "local"
        },
    );
    // A change A makes to a pinned file comes eagerly too.
    let changed = pattern(44, 3 * MIB + 5);
    write_file(&a.p("pinned/a.bin"), &changed);
    sync_wait(&a);
    wait_for(
        "the new pinned/a.bin local on B without a read",
        CONVERGE,
        || {
            fs::metadata(b.p("pinned/a.bin")).is_ok_and(|m| m.len() == changed.len() as u64)
                && state(&b, "pinned/a.bin") == "local"
        },
    );
    link.cut();
    assert_content(&b.p("pinned/sub/new.bin"), &new);
    assert_content(&b.p("pinned/a.bin"), &changed);

    // A pin made while the cloud is gone says what it could not download,
    // and downloads it once the cloud is back.
    let y = pattern(45, MIB);
    link.restore();
    write_file(&a.p("later/y.bin"), &y);
    sync_wait(&a);
    wait_listed(&b, "later/y.bin", y.len());
    link.cut();
    let out = b.latus(&["pin", arg(&b.p("later"))]);
    assert!(!out.ok(), "pin with the cloud gone succeeded: {out}");
    assert!(out.stderr.contains("later/y.bin"), "{out}");
    assert_eq!(state(&b, "later/y.bin"), "cloud");
    thread::sleep(Duration::from_secs(2));
    let warned = daemon_log(&b)
        .lines()
        .filter(|l| l.contains("could not download a pinned file"))
        .count();
    eprintln!("pinned download failures logged while the cloud was gone (about 2 s): {warned}");
    link.restore();
    wait_for("later/y.bin local once the cloud is back", CONVERGE, || {
        state(&b, "later/y.bin") == "local"
    });
    link.cut();
    assert_content(&b.p("later/y.bin"), &y);
    link.restore();

    let out = b.latus(&["unpin", arg(&b.p("pinned"))]).expect_ok();
    assert!(out.stdout.contains("auto"), "{out}");
    let st = b.path_status(arg(&b.p("pinned/a.bin")));
    assert_eq!(st["placement"]["rule"], "auto", "{st}");
}

/// Test 4b: A pinned folder keeps what comes below it downloaded, also files
/// moved into it: by another node (a remote move) or on this node.
#[test]
fn files_moved_into_a_pinned_folder_are_downloaded() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, _) = two_nodes(&url, &url, &[]);
    a.mount();
    b.mount();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("inbox/by-a.bin", pattern(46, MIB)),
        ("inbox/by-b.bin", pattern(47, MIB)),
    ];
    for (rel, data) in &files {
        write_file(&a.p(rel), data);
    }
    fs::create_dir(a.p("pinned")).unwrap();
    sync_wait(&a);
    for (rel, data) in &files {
        wait_listed(&b, rel, data.len());
    }
    b.latus(&["pin", arg(&b.p("pinned"))]).expect_ok();
    let mut failures = Vec::new();

    fs::rename(a.p("inbox/by-a.bin"), a.p("pinned/by-a.bin")).unwrap();
    sync_wait(&a);
    wait_listed(&b, "pinned/by-a.bin", MIB);
    if !poll(Duration::from_secs(10), || {
        state(&b, "pinned/by-a.bin") == "local"
    }) {
        failures.push(format!(
            "a file another node moved into a pinned folder stays {} (rule {})",
            state(&b, "pinned/by-a.bin"),
            b.path_status(arg(&b.p("pinned/by-a.bin")))["placement"]
        ));
    }
    fs::rename(b.p("inbox/by-b.bin"), b.p("pinned/by-b.bin")).unwrap();
    if !poll(Duration::from_secs(10), || {
        state(&b, "pinned/by-b.bin") == "local"
    }) {
        failures.push(format!(
            "a file moved into a pinned folder on this node stays {} (rule {})",
            state(&b, "pinned/by-b.bin"),
            b.path_status(arg(&b.p("pinned/by-b.bin")))["placement"]
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_content(&b.p("pinned/by-a.bin"), &files[0].1);
    assert_content(&b.p("pinned/by-b.bin"), &files[1].1);
}

// ---------------------------------------------------------------- 5

/// Test 5: `latus free FOLDER` evicts the local copies that are safely in the
/// cloud before it returns (state `cloud`, disk freed), keeps B's own
/// unuploaded file, and every file still reads (fetched again).
#[test]
fn free_evicts_what_is_in_the_cloud() {
    let scratch = tempfile::tempdir().unwrap();
    let link = Link::new(scratch.path());
    let (a, b, _) = pair_via_link(&link, &[]);
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("docs/d{i}.bin"),
                pattern(50 + i, 2 * MIB + 100 * i as usize),
            )
        })
        .collect();
    for (rel, data) in &files {
        write_file(&a.p(rel), data);
    }
    sync_wait(&a);
    for (rel, data) in &files {
        wait_listed(&b, rel, data.len());
        assert_content(&b.p(rel), data);
        // The complete copy is checked and put in place just after the read.
        wait_for(
            &format!("{rel} local after a full read"),
            Duration::from_secs(10),
            || state(&b, rel) == "local",
        );
    }
    // A file of B's own, not yet in the cloud.
    link.cut();
    let mine = pattern(59, MIB);
    write_file(&b.p("docs/mine.bin"), &mine);
    let before = store_disk(&b);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();

    let out = b.latus(&["free", arg(&b.p("docs"))]).expect_ok();
    assert!(
        out.stdout
            .contains(&format!("freed {total} bytes in 4 files (1 kept")),
        "free output: {out}"
    );
    for (rel, _) in &files {
        assert_eq!(state(&b, rel), "cloud", "{rel} after free");
        assert_eq!(
            getxattr(&b.p(rel), "user.latus.placement").unwrap(),
            "online-only"
        );
    }
    assert_eq!(state(&b, "docs/mine.bin"), "pending");
    let after = store_disk(&b);
    assert!(
        before >= after + total - 64 * KIB as u64,
        "disk went from {before} to {after}; {total} bytes were freed"
    );
    assert_content(&b.p("docs/mine.bin"), &mine);

    link.restore();
    for (rel, data) in &files {
        assert_content(&b.p(rel), data);
    }
    // Once uploaded, B's own file goes too (the folder is online-only).
    sync_wait(&b);
    wait_for("docs/mine.bin evicted once uploaded", CONVERGE, || {
        state(&b, "docs/mine.bin") == "cloud"
    });
    assert_content(&b.p("docs/mine.bin"), &mine);
    wait_listed(&a, "docs/mine.bin", mine.len());
}

// ---------------------------------------------------------------- 6

/// Test 6: Tampered, swapped or missing chunk objects: reads of what they hold
/// fail with EIO (never wrong bytes) and the daemon log names the object;
/// the other chunks read right; once the object is repaired it reads.
#[test]
fn tampered_cloud_objects_fail_with_eio() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, key) = two_nodes(&url, &url, &[]);
    a.mount();
    b.mount();
    let data = pattern(60, 12 * MIB);
    let chunks = chunks_of(&data, &key);
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    write_file(&a.p("t.bin"), &data);
    sync_wait(&a);
    wait_listed(&b, "t.bin", data.len());
    let t = b.p("t.bin");
    let inside = |c: &Chunk| (c.offset + c.len / 2) / 4096 * 4096;

    // Flip a byte in the middle of chunk 1's sealed object.
    let c1 = &chunks[1];
    let p1 = dir_object_path(&cloud, &c1.name);
    let orig1 = fs::read(&p1).unwrap();
    let mut bad = orig1.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    fs::write(&p1, &bad).unwrap();
    // Chunk 2's object replaced by chunk 3's (a swap of valid objects).
    let (c2, c3) = (&chunks[2], &chunks[3]);
    let p2 = dir_object_path(&cloud, &c2.name);
    let orig2 = fs::read(&p2).unwrap();
    fs::write(&p2, fs::read(dir_object_path(&cloud, &c3.name)).unwrap()).unwrap();
    // Chunk 4's object missing.
    let c4 = &chunks[4];
    let p4 = dir_object_path(&cloud, &c4.name);
    let orig4 = fs::read(&p4).unwrap();
    fs::remove_file(&p4).unwrap();

    let c0 = &chunks[0];
    let off0 = inside(c0).max(8192);
    assert_eq!(
        pread(&t, off0, 4096).unwrap(),
        data[off0 as usize..][..4096]
    );
    for c in [c1, c2, c4] {
        let off = inside(c);
        assert_eq!(
            errno(pread(&t, off, 4096)),
            libc::EIO,
            "read inside the bad chunk at {}",
            c.offset
        );
    }
    let off3 = inside(c3);
    assert_eq!(
        pread(&t, off3, 4096).unwrap(),
        data[off3 as usize..][..4096]
    );
    let log = daemon_log(&b);
    for c in [c1, c2, c4] {
        assert!(
            log.lines().any(|l| l.contains(&c.name)),
            "daemon.log does not name object {}:\n{log}",
            c.name
        );
    }
    assert!(log.contains("t.bin"), "daemon.log does not name the file");

    // A whole read stops at the first bad chunk: what it returned is right.
    let mut f = File::open(&t).unwrap();
    let mut got = Vec::new();
    let err = f
        .read_to_end(&mut got)
        .expect_err("a full read of a tampered file");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        got.len() as u64 <= c1.offset,
        "{} bytes read past a bad chunk",
        got.len()
    );
    assert!(got == data[..got.len()], "wrong bytes before the bad chunk");
    let out = run_cmd(Command::new("cat").arg(&t), TIMEOUT);
    assert!(!out.ok(), "cat of a tampered file succeeded");
    assert_eq!(state(&b, "t.bin"), "cloud");

    // Repaired: reads work, without a remount.
    fs::write(&p1, &orig1).unwrap();
    fs::write(&p2, &orig2).unwrap();
    fs::write(&p4, &orig4).unwrap();
    assert_content(&t, &data);
    wait_for("t.bin local once complete", Duration::from_secs(10), || {
        state(&b, "t.bin") == "local"
    });
}

// ---------------------------------------------------------------- 7

/// Test 7: The hydration policy: indexers (defaults) get EACCES on cloud-only
/// content, counted in `status --json` `hydration` and logged once per
/// program; `cat` downloads; once local, anyone reads; the default
/// thumbnailer range (4 MiB) reads its head; a `range:1M` program
/// configured in config.json reads its first MiB, makes latus download no
/// more than the chunks covering it, and cannot read past it.
#[test]
fn the_hydration_policy_refuses_indexers() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, key) = two_nodes(&url, &url, &[]);
    edit_config(&b, |c| {
        let programs = c["hydration"]["programs"]
            .as_object_mut()
            .expect("config.json has hydration.programs");
        assert_eq!(programs["tracker-miner-f"], "refuse", "default policy");
        programs.insert("latus-thumb".into(), "range:1M".into());
    });
    a.mount();
    b.mount();
    // Text, so programs' output compares as a string.
    let text = |seed: u64, len: usize| hex(&pattern(seed, len / 2)).into_bytes();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("media/v.txt", text(70, 6 * MIB)),
        ("media/w.txt", text(71, 12 * MIB)),
        ("media/x.txt", text(72, 12 * MIB)),
    ];
    for (rel, data) in &files {
        write_file(&a.p(rel), data);
    }
    sync_wait(&a);
    for (rel, data) in &files {
        wait_listed(&b, rel, data.len());
    }
    let (v, w, x) = (&files[0].1, &files[1].1, &files[2].1);
    let (vp, wp, xp) = (b.p(files[0].0), b.p(files[1].0), b.p(files[2].0));
    let bin = scratch.path().join("bin");
    let tracker = program_named(&bin, "/bin/cat", "tracker-miner-f");
    let baloo = program_named(&bin, "/bin/cat", "baloo_file");
    let thumb = program_named(&bin, "/usr/bin/head", "latus-thumb");
    let tumbler = program_named(&bin, "/usr/bin/head", "tumblerd");
    let disk0 = store_disk(&b);

    // Refused: EACCES, nothing downloaded, counted, logged once.
    for _ in 0..2 {
        let out = run_cmd(Command::new(&tracker).arg(&vp), TIMEOUT);
        assert!(!out.ok(), "tracker-miner-f read cloud-only content: {out}");
        assert!(out.stderr.contains("Permission denied"), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
    let out = run_cmd(Command::new(&baloo).arg(&wp), TIMEOUT);
    assert!(
        !out.ok() && out.stderr.contains("Permission denied"),
        "{out}"
    );
    assert_eq!(store_disk(&b), disk0, "a refused program downloaded");
    assert_eq!(state(&b, "media/v.txt"), "cloud");
    let h = &b.status()["hydration"];
    assert!(
        h["tracker-miner-f"]["refused"].as_u64().unwrap() >= 2,
        "{h}"
    );
    assert_eq!(h["tracker-miner-f"]["reads"], 0, "{h}");
    assert!(h["baloo_file"]["refused"].as_u64().unwrap() >= 1, "{h}");
    let log = daemon_log(&b);
    let lines = log
        .lines()
        .filter(|l| l.contains("tracker-miner-f") && l.contains("hydration"))
        .count();
    assert_eq!(lines, 1, "refusals of one program logged once:\n{log}");

    // Download for everyone else; once local, anyone reads it.
    let out = run_cmd(Command::new("cat").arg(&vp), TIMEOUT).expect_ok();
    assert!(out.stdout.as_bytes() == v, "cat of v.txt differs");
    let h = &b.status()["hydration"];
    assert!(h["cat"]["reads"].as_u64().unwrap() >= 1, "{h}");
    assert!(h["cat"]["bytes"].as_u64().unwrap() >= 1, "{h}");
    wait_for("v.txt local after cat", Duration::from_secs(10), || {
        state(&b, "media/v.txt") == "local"
    });
    let out = run_cmd(Command::new(&tracker).arg(&vp), TIMEOUT).expect_ok();
    assert!(out.stdout.as_bytes() == v, "tracker-miner-f of local v.txt");

    // The default thumbnailer range (4 MiB): its head reads.
    let out = run_cmd(
        Command::new(&tumbler).args(["-c", "100", arg(&xp)]),
        TIMEOUT,
    )
    .expect_ok();
    assert_eq!(out.stdout.as_bytes(), &x[..100]);
    let out = run_cmd(
        Command::new(&tumbler).args(["-c", "4194304", arg(&xp)]),
        TIMEOUT,
    );
    assert!(
        out.ok(),
        "tumblerd could not read its whole 4 MiB range: {out}"
    );
    assert!(
        out.stdout.as_bytes() == &x[..4 * MIB],
        "tumblerd's first 4 MiB differ"
    );
    let h = &b.status()["hydration"];
    assert!(h["tumblerd"]["reads"].as_u64().unwrap() >= 1, "{h}");

    // range:1M: the head reads; nothing past the chunks covering the
    // range is downloaded (readahead included), and reads past it fail.
    thread::sleep(Duration::from_secs(2)); // x.txt's readahead, if any, ends
    let disk1 = store_disk(&b);
    let out = run_cmd(Command::new(&thumb).args(["-c", "1000", arg(&wp)]), TIMEOUT).expect_ok();
    assert_eq!(out.stdout.as_bytes(), &w[..1000]);
    let out = run_cmd(
        Command::new(&thumb).args(["-c", "1048576", arg(&wp)]),
        TIMEOUT,
    );
    assert!(
        out.ok(),
        "latus-thumb could not read its whole 1 MiB range: {out}"
    );
    assert!(
        out.stdout.as_bytes() == &w[..MIB],
        "latus-thumb's first MiB differs"
    );
    let h = &b.status()["hydration"];
    assert!(h["latus-thumb"]["reads"].as_u64().unwrap() >= 1, "{h}");
    thread::sleep(Duration::from_secs(2));
    let allowed: u64 = chunks_of(w, &key)
        .iter()
        .filter(|c| c.offset < MIB as u64)
        .map(|c| c.len)
        .sum();
    let fetched = store_disk(&b) - disk1;
    assert!(
        fetched <= allowed + 64 * KIB as u64,
        "a range:1M program made latus download {fetched} bytes of w.txt; the chunks covering \
         its first MiB are {allowed} bytes (state now {})",
        state(&b, "media/w.txt")
    );
    let out = run_cmd(
        Command::new(&thumb).args(["-c", "3000000", arg(&wp)]),
        TIMEOUT,
    );
    assert!(
        !out.ok(),
        "latus-thumb read past its range: {} bytes",
        out.stdout.len()
    );
    assert!(out.stderr.contains("Permission denied"), "{out}");
    assert!(
        out.stdout.len() <= MIB,
        "{} bytes past a 1 MiB range",
        out.stdout.len()
    );
    assert_eq!(out.stdout.as_bytes(), &w[..out.stdout.len()]);
    let h = &b.status()["hydration"];
    assert!(h["latus-thumb"]["refused"].as_u64().unwrap() >= 1, "{h}");
}

/// Test 7b: The policy goes by the reading *process*: a refused program that
/// reads from a worker thread it renamed (GLib thread pools do) is still
/// refused. FUSE gives the thread's id; its process is the thread group.
#[test]
fn a_refused_program_is_refused_in_its_worker_threads() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, _) = two_nodes(&url, &url, &[]);
    a.mount();
    b.mount();
    write_file(&a.p("doc.bin"), &pattern(75, MIB));
    sync_wait(&a);
    wait_listed(&b, "doc.bin", MIB);
    let script = r#"
import ctypes, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(15, b"tracker-miner-f", 0, 0, 0)  # PR_SET_NAME: the process's comm
out = {}
def work():
    libc.prctl(15, b"pool-worker", 0, 0, 0)  # the worker thread's own name
    try:
        with open(sys.argv[1], "rb") as f:
            out["read"] = len(f.read(4096))
    except OSError as e:
        out["errno"] = e.errno
t = threading.Thread(target=work)
t.start()
t.join()
print(open("/proc/self/comm").read().strip(), out.get("read"), out.get("errno"))
"#;
    let out = run_cmd(
        Command::new("python3").args(["-c", script, arg(&b.p("doc.bin"))]),
        TIMEOUT,
    )
    .expect_ok();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"tracker-miner-f"), "{out}");
    assert_eq!(
        words.get(2),
        Some(&"13"),
        "process tracker-miner-f read cloud-only content from a thread named pool-worker \
         (read, errno): {out}\nhydration: {}",
        b.status()["hydration"]
    );
}

// ---------------------------------------------------------------- 8

/// Test 8: `latus local-only DIR` withdraws DIR from the volume (other nodes
/// stop seeing it), files written inside never reach them, status and
/// xattrs say `local-only`; `--off` publishes everything again.
#[test]
fn local_only_folders_never_leave_the_node() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, key) = two_nodes(&url, &url, &[]);
    a.mount();
    b.mount();
    let one = pattern(80, 300 * KIB);
    write_file(&b.p("proj/one.bin"), &one);
    sync_wait(&b);
    wait_listed(&a, "proj/one.bin", one.len());

    let out = b.latus(&["local-only", arg(&b.p("proj"))]).expect_ok();
    assert!(out.stdout.contains("local-only"), "{out}");
    sync_wait(&b);
    wait_for("proj gone from A", CONVERGE, || !a.p("proj").exists());
    for rel in ["proj", "proj/one.bin"] {
        assert_eq!(state(&b, rel), "local-only", "{rel}");
        let st = b.path_status(arg(&b.p(rel)));
        assert_eq!(st["placement"]["rule"], "local-only", "{st}");
        assert_eq!(st["placement"]["from"], "proj", "{st}");
        assert_eq!(
            getxattr(&b.p(rel), "user.latus.state").unwrap(),
            "local-only"
        );
        assert_eq!(
            getxattr(&b.p(rel), "user.latus.placement").unwrap(),
            "local-only"
        );
    }
    assert_content(&b.p("proj/one.bin"), &one);

    let two = pattern(81, 200 * KIB);
    write_file(&b.p("proj/sub/two.bin"), &two);
    write_file(
        &b.p("visible.txt"),
        b"a marker after the local-only write\n",
    );
    sync_wait(&b);
    wait_listed(&a, "visible.txt", 36);
    sync_wait(&a);
    assert!(!a.p("proj").exists(), "a local-only folder reached A");
    assert!(
        a.log_events()
            .iter()
            .all(|e| !e.file_path.contains("two.bin")),
        "A journaled an event of a local-only file"
    );
    let in_cloud: BTreeSet<String> = chunk_objects(&Backend::Dir(cloud.clone()))
        .into_iter()
        .filter_map(|(rel, _)| Some(Path::new(&rel).file_name()?.to_str()?.to_string()))
        .collect();
    for c in chunks_of(&two, &key) {
        assert!(
            !in_cloud.contains(&c.name),
            "a chunk of a local-only file was uploaded"
        );
    }

    let out = b
        .latus(&["local-only", arg(&b.p("proj")), "--off"])
        .expect_ok();
    assert!(out.stdout.contains("auto"), "{out}");
    assert_eq!(state(&b, "proj/one.bin"), "pending");
    sync_wait(&b);
    wait_listed(&a, "proj/one.bin", one.len());
    wait_listed(&a, "proj/sub/two.bin", two.len());
    assert_content(&a.p("proj/one.bin"), &one);
    assert_content(&a.p("proj/sub/two.bin"), &two);
    assert_eq!(state(&b, "proj/sub/two.bin"), "local");
}

/// Test 8b: Content that is only in the cloud when its folder is made
/// local-only must be brought here: the folder is withdrawn from the
/// volume (other nodes delete it, a prune may drop its chunks), so it has
/// to read with the cloud gone.
#[test]
fn cloud_only_content_made_local_only_stays_readable() {
    let scratch = tempfile::tempdir().unwrap();
    let link = Link::new(scratch.path());
    let (a, b, _) = pair_via_link(&link, &[]);
    let data = pattern(85, 2 * MIB);
    write_file(&a.p("shared/s.bin"), &data);
    sync_wait(&a);
    wait_listed(&b, "shared/s.bin", data.len());
    assert_eq!(state(&b, "shared/s.bin"), "cloud");
    b.latus(&["local-only", arg(&b.p("shared"))]).expect_ok();
    sync_wait(&b);
    wait_for("shared gone from A", CONVERGE, || !a.p("shared").exists());
    link.cut();
    let got = read_all(&b.p("shared/s.bin"));
    link.restore();
    let got = got.unwrap_or_else(|e| {
        panic!("a local-only file whose content was left in the cloud does not read with the cloud gone: {e}")
    });
    assert!(got == data, "local-only content differs");
}

// ---------------------------------------------------------------- 9

/// Test 9: `user.latus.state` and `user.latus.placement` read the right
/// values; setting the placement to online-only evicts, to pinned
/// downloads (eventually `local`, without a read), to auto inherits;
/// bad values and writing the state are refused.
#[test]
fn placement_and_state_xattrs() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let url = format!("dir:{}", cloud.display());
    let (a, b, _) = two_nodes(&url, &url, &[]);
    a.mount();
    b.mount();
    let f = pattern(90, 2 * MIB);
    let g = pattern(91, MIB);
    write_file(&a.p("x/f.bin"), &f);
    write_file(&a.p("x/g.bin"), &g);
    sync_wait(&a);
    wait_listed(&b, "x/f.bin", f.len());
    wait_listed(&b, "x/g.bin", g.len());
    let (fp, gp, xp) = (b.p("x/f.bin"), b.p("x/g.bin"), b.p("x"));
    assert_eq!(getxattr(&fp, "user.latus.state").unwrap(), "cloud");
    assert_eq!(getxattr(&fp, "user.latus.placement").unwrap(), "auto");

    assert_content(&fp, &f);
    // The complete copy is checked and put in place just after the read.
    wait_for(
        "f.bin local after a full read",
        Duration::from_secs(10),
        || getxattr(&fp, "user.latus.state").unwrap() == "local",
    );
    let before = store_disk(&b);
    setxattr(&fp, "user.latus.placement", "online-only").unwrap();
    assert_eq!(getxattr(&fp, "user.latus.state").unwrap(), "cloud");
    assert_eq!(
        getxattr(&fp, "user.latus.placement").unwrap(),
        "online-only"
    );
    assert_eq!(state(&b, "x/f.bin"), "cloud");
    let st = b.path_status(arg(&fp));
    assert_eq!(st["placement"]["rule"], "online-only", "{st}");
    assert_eq!(st["placement"]["from"], "x/f.bin", "{st}");
    assert!(
        store_disk(&b) + f.len() as u64 <= before + 64 * KIB as u64,
        "online-only did not free the disk"
    );

    // Pinned on the folder: g downloads; f keeps its own rule.
    setxattr(&xp, "user.latus.placement", "pinned").unwrap();
    assert_eq!(getxattr(&gp, "user.latus.placement").unwrap(), "pinned");
    wait_for("x/g.bin local after pinning x", CONVERGE, || {
        getxattr(&gp, "user.latus.state").unwrap() == "local"
    });
    assert_eq!(getxattr(&fp, "user.latus.state").unwrap(), "cloud");
    setxattr(&fp, "user.latus.placement", "pinned").unwrap();
    wait_for("x/f.bin local after pinning it", CONVERGE, || {
        getxattr(&fp, "user.latus.state").unwrap() == "local"
    });
    setxattr(&fp, "user.latus.placement", "auto").unwrap();
    let st = b.path_status(arg(&fp));
    assert_eq!(st["placement"]["rule"], "pinned", "{st}");
    assert_eq!(st["placement"]["from"], "x", "{st}");
    assert_eq!(
        errno(setxattr(&fp, "user.latus.placement", "sometimes")),
        libc::EINVAL
    );
    assert_eq!(
        errno(setxattr(&fp, "user.latus.state", "local")),
        libc::EPERM
    );
    assert_content(&fp, &f);
    assert_content(&gp, &g);

    // local-only through the xattr: A stops seeing it; removing the xattr
    // is auto: A sees it again.
    write_file(&b.p("z/own.txt"), b"written on b\n");
    sync_wait(&b);
    wait_listed(&a, "z/own.txt", 13);
    setxattr(&b.p("z"), "user.latus.placement", "local-only").unwrap();
    assert_eq!(
        getxattr(&b.p("z/own.txt"), "user.latus.state").unwrap(),
        "local-only"
    );
    sync_wait(&b);
    wait_for("z gone from A", CONVERGE, || !a.p("z").exists());
    let z = cpath(&b.p("z"));
    let name = CString::new("user.latus.placement").unwrap();
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::removexattr(z.as_ptr(), name.as_ptr()) }).unwrap();
    assert_eq!(getxattr(&b.p("z"), "user.latus.placement").unwrap(), "auto");
    sync_wait(&b);
    wait_listed(&a, "z/own.txt", 13);
}
