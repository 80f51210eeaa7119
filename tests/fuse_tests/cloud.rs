//! The zero-knowledge cloud volume, through the mount and the CLI, against
//! both backends: the embedded `dir` cloud and S3 + DynamoDB served locally
//! (scripts/test.sh starts the server and exports AWS_ENDPOINT_URL).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const MARK: &str = "ZKMARKq7731";

pub(crate) enum Backend {
    Dir(PathBuf),
    Aws { bucket: String, table: String },
}

impl Backend {
    pub(crate) fn url(&self) -> String {
        match self {
            Backend::Dir(p) => format!("dir:{}", p.display()),
            Backend::Aws { bucket, table } => format!("aws://{bucket}?table={table}"),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Dir(_) => "dir",
            Backend::Aws { .. } => "aws",
        }
    }
}

/// Whether the local S3 + DynamoDB server is there. Missing, it is a test
/// failure unless LATUS_SKIP_AWS=1 says so: a skip must not hide a missing
/// install step.
pub(crate) fn aws_available() -> bool {
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        return true;
    }
    if std::env::var("LATUS_SKIP_AWS").as_deref() == Ok("1") {
        eprintln!("SKIPPED aws backend (LATUS_SKIP_AWS=1)");
        return false;
    }
    panic!(
        "AWS_ENDPOINT_URL is not set: run the tests through scripts/test.sh (it starts a local S3 + DynamoDB server), or set LATUS_SKIP_AWS=1"
    );
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(40)
        .collect()
}

/// Every backend, each with a fresh cloud.
pub(crate) fn backends(scratch: &Path) -> Vec<Backend> {
    let mut v = vec![Backend::Dir(scratch.join(unique("cloud")))];
    if aws_available() {
        v.push(Backend::Aws {
            bucket: unique("latus-test"),
            table: unique("latus-test"),
        });
    }
    v
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

fn s3() -> aws_sdk_s3::Client {
    let cfg = runtime().block_on(aws_config());
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&cfg)
            .force_path_style(true)
            .build(),
    )
}

/// Every object as (name, bytes), read straight from the server.
pub(crate) fn objects(b: &Backend) -> Vec<(String, Vec<u8>)> {
    match b {
        Backend::Dir(path) => {
            let mut out = Vec::new();
            walk(path, &mut |p| {
                out.push((
                    p.strip_prefix(path).unwrap().display().to_string(),
                    fs::read(p).unwrap(),
                ))
            });
            out
        }
        Backend::Aws { bucket, .. } => {
            let rt = runtime();
            let client = s3();
            rt.block_on(async {
                let mut out = Vec::new();
                let mut token = None;
                loop {
                    let page = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .expect("list objects");
                    for o in page.contents() {
                        let key = o.key().unwrap().to_string();
                        let body = client
                            .get_object()
                            .bucket(bucket)
                            .key(&key)
                            .send()
                            .await
                            .expect("get");
                        let bytes = body
                            .body
                            .collect()
                            .await
                            .expect("body")
                            .into_bytes()
                            .to_vec();
                        out.push((key, bytes));
                    }
                    match page.next_continuation_token() {
                        Some(t) => token = Some(t.to_string()),
                        None => break,
                    }
                }
                out
            })
        }
    }
}

/// Every item of `table`, read straight from the server (`endpoint`: a
/// server other than the environment's).
fn scan_table(table: &str, endpoint: Option<&str>) -> Vec<Item> {
    let rt = runtime();
    rt.block_on(async {
        let cfg = aws_config().await;
        let mut conf = aws_sdk_dynamodb::config::Builder::from(&cfg);
        if let Some(url) = endpoint {
            conf = conf.endpoint_url(url);
        }
        let client = aws_sdk_dynamodb::Client::from_conf(conf.build());
        let (mut items, mut start) = (Vec::new(), None);
        loop {
            let page = client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        items
    })
}

type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// Every table item, rendered, read straight from the server.
fn table_items(b: &Backend) -> String {
    let Backend::Aws { table, .. } = b else {
        return String::new(); // the dir log is files: `objects` covers it
    };
    scan_table(table, None)
        .iter()
        .map(|item| format!("{item:?}\n"))
        .collect()
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn sync_wait(m: &Mounted) {
    m.latus(&["sync", "--wait", "--timeout", "300"]).expect_ok();
}

/// Chunk objects: everything but the volume marker and the dir log.
pub(crate) fn chunk_objects(b: &Backend) -> Vec<(String, Vec<u8>)> {
    objects(b)
        .into_iter()
        .filter(|(n, _)| n != "volume" && !n.starts_with("events") && !n.ends_with("/volume"))
        .collect()
}

#[test]
fn the_cloud_never_sees_a_name_a_size_or_a_byte_in_clear() {
    let scratch = tempfile::tempdir().unwrap();
    for b in backends(scratch.path()) {
        let m = Mounted::with_cloud(&b.url());
        let dir = m.p(&format!("{MARK}-folder"));
        fs::create_dir(&dir).unwrap();
        let content = format!("{MARK} secret body ").repeat(5000).into_bytes();
        fs::write(dir.join(format!("{MARK}-report.txt")), &content).unwrap();
        fs::write(m.p("small.txt"), MARK).unwrap();
        fs::rename(m.p("small.txt"), m.p(&format!("{MARK}-renamed.txt"))).unwrap();
        sync_wait(&m);
        let objs = objects(&b);
        assert!(
            objs.len() >= 3,
            "{}: expected chunks in the cloud, found {}",
            b.name(),
            objs.len()
        );
        let hash = sha512_hex(&content);
        let items = table_items(&b);
        for (name, bytes) in &objs {
            for needle in [
                MARK.as_bytes(),
                hash.as_bytes(),
                b"report.txt",
                b"secret body",
            ] {
                assert!(
                    !contains(name.as_bytes(), needle),
                    "{}: object name {name} holds {needle:?}",
                    b.name()
                );
                assert!(
                    !contains(bytes, needle),
                    "{}: object {name} holds {:?} in clear",
                    b.name(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
        for needle in [MARK, &hash, "report.txt", "folder"] {
            assert!(
                !items.contains(needle),
                "{}: the event table holds {needle:?} in clear",
                b.name()
            );
        }
        let size = content.len().to_string();
        assert!(
            !items.contains(&size),
            "{}: the event table holds the size {size} in clear",
            b.name()
        );
        // Every event is published, with a cloud-assigned mivui.
        let evs = m.log_events();
        assert!(
            evs.iter().all(|e| e.mivui.as_u64().is_some()),
            "{}: unpublished events after sync --wait",
            b.name()
        );
    }
}

#[test]
fn the_same_32_mib_in_two_files_is_stored_once() {
    let scratch = tempfile::tempdir().unwrap();
    for b in backends(scratch.path()) {
        let m = Mounted::with_cloud(&b.url());
        let data = pattern(7, 32 << 20);
        fs::write(m.p("one.bin"), &data).unwrap();
        fs::write(m.p("two.bin"), &data).unwrap();
        sync_wait(&m);
        let stored: usize = chunk_objects(&b).iter().map(|(_, d)| d.len()).sum();
        // Once, padded to size buckets (at most 12.5% each), never twice.
        assert!(
            stored <= data.len() + data.len() / 8 + (64 << 10),
            "{}: {stored} bytes stored for 32 MiB written twice",
            b.name()
        );
        assert!(
            stored >= data.len(),
            "{}: only {stored} bytes stored",
            b.name()
        );
    }
}

/// Replaces the stored bytes of object `name`.
fn overwrite_object(b: &Backend, name: &str, bytes: &[u8]) {
    match b {
        Backend::Dir(path) => fs::write(path.join(name), bytes).unwrap(),
        Backend::Aws { bucket, .. } => {
            let rt = runtime();
            let client = s3();
            rt.block_on(async {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(name)
                    .body(bytes.to_vec().into())
                    .send()
                    .await
                    .expect("put")
            });
        }
    }
}

fn remove_local_copies(home: &Path) {
    walk(&home.join("store/objects"), &mut |p| {
        fs::remove_file(p).unwrap()
    });
}

#[test]
fn a_tampered_object_fails_the_read_and_the_log_names_it() {
    let scratch = tempfile::tempdir().unwrap();
    for b in backends(scratch.path()) {
        let m = Mounted::with_cloud(&b.url());
        let data = pattern(11, 3 << 20);
        fs::write(m.p("doc.bin"), &data).unwrap();
        sync_wait(&m);
        m.unmount();
        let chunks = chunk_objects(&b);
        let (name, original) = chunks.first().cloned().expect("a chunk object");
        let mut bad = original.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        overwrite_object(&b, &name, &bad);
        // The local copy is lost: the content must come back from the cloud.
        remove_local_copies(&m.home);
        m.mount();
        let err = fs::read(m.p("doc.bin")).expect_err("a tampered object must fail the read");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{}: {err}", b.name());
        let log = fs::read_to_string(m.home.join("daemon.log")).unwrap();
        let base = name.rsplit('/').next().unwrap();
        assert!(
            log.contains(base),
            "{}: the daemon log does not name object {base}:\n{log}",
            b.name()
        );
        // Truncated is refused too.
        overwrite_object(&b, &name, &original[..original.len() - 1]);
        assert_eq!(
            errno(fs::read(m.p("doc.bin"))),
            libc::EIO,
            "{}: truncated object",
            b.name()
        );
        // Put right, the same read works, byte for byte, without a remount.
        overwrite_object(&b, &name, &original);
        assert!(
            fs::read(m.p("doc.bin")).unwrap() == data,
            "{}: wrong bytes after repair",
            b.name()
        );
    }
}

/// The provider swaps two objects (each a valid sealed chunk of this
/// volume): each is bound to its name, so both reads fail with EIO, and
/// swapped back they read right.
#[test]
fn swapped_objects_fail_the_read() {
    let scratch = tempfile::tempdir().unwrap();
    let b = Backend::Dir(scratch.path().join(unique("cloud")));
    let m = Mounted::with_cloud(&b.url());
    let (one, two) = (pattern(21, 100 << 10), pattern(22, 100 << 10));
    fs::write(m.p("one.bin"), &one).unwrap();
    fs::write(m.p("two.bin"), &two).unwrap();
    sync_wait(&m);
    m.unmount();
    let chunks = chunk_objects(&b);
    assert_eq!(chunks.len(), 2, "one chunk per file");
    let ((x, xb), (y, yb)) = (chunks[0].clone(), chunks[1].clone());
    overwrite_object(&b, &x, &yb);
    overwrite_object(&b, &y, &xb);
    remove_local_copies(&m.home);
    m.mount();
    for f in ["one.bin", "two.bin"] {
        assert_eq!(
            errno(fs::read(m.p(f))),
            libc::EIO,
            "{f} read a swapped object"
        );
    }
    overwrite_object(&b, &x, &xb);
    overwrite_object(&b, &y, &yb);
    assert!(fs::read(m.p("one.bin")).unwrap() == one);
    assert!(fs::read(m.p("two.bin")).unwrap() == two);
}

/// The provider keeps a chunk truncated under its name. A node writing
/// the same content again does not take the object as present (its length
/// is wrong): it uploads it again, so freeing the local copies later loses
/// nothing.
#[test]
fn a_chunk_present_with_a_wrong_length_is_uploaded_again() {
    let scratch = tempfile::tempdir().unwrap();
    let b = Backend::Dir(scratch.path().join(unique("cloud")));
    let m = Mounted::with_cloud(&b.url());
    let data = pattern(31, 300 << 10);
    fs::create_dir(m.p("docs")).unwrap();
    fs::write(m.p("docs/one.bin"), &data).unwrap();
    sync_wait(&m);
    let chunks = chunk_objects(&b);
    assert_eq!(chunks.len(), 1);
    let (name, sealed) = chunks[0].clone();
    overwrite_object(&b, &name, &sealed[..sealed.len() / 2]);
    // A new daemon: the one that uploaded the chunk remembers it did.
    m.unmount();
    m.mount();
    fs::write(m.p("docs/two.bin"), &data).unwrap();
    sync_wait(&m);
    let after = chunk_objects(&b);
    assert_eq!(after.len(), 1);
    assert_eq!(
        (&after[0].0, after[0].1.len()),
        (&name, sealed.len()),
        "the chunk was not put right"
    );
    let log = fs::read_to_string(m.home.join("daemon.log")).unwrap();
    assert!(log.contains("wrong length"), "{log}");
    m.latus(&["free", m.p("docs").to_str().unwrap()])
        .expect_ok();
    m.unmount();
    remove_local_copies(&m.home);
    m.mount();
    assert!(fs::read(m.p("docs/one.bin")).unwrap() == data);
    assert!(fs::read(m.p("docs/two.bin")).unwrap() == data);
}

#[test]
fn a_key_that_does_not_match_the_volume_is_refused_with_both_fingerprints() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = format!("dir:{}", scratch.path().join("cloud").display());
    let a = Mounted::bare();
    a.latus(&["init", "--cloud", &cloud]).expect_ok();
    let fp_a = a
        .latus(&["key", "fingerprint"])
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    let b = Mounted::bare();
    let out = b.latus(&["init", "--cloud", &cloud]);
    assert!(!out.ok(), "a second node with a fresh key joined: {out}");
    assert!(out.stderr.contains("does not match"), "{out}");
    assert!(
        out.stderr.contains(&fp_a),
        "the volume's fingerprint is not shown: {out}"
    );
    assert!(
        !b.home.join("config.json").exists(),
        "a refused init left a node behind"
    );
    // With the exported key it joins.
    let key_file = scratch.path().join("key.json");
    a.latus(&["key", "export", key_file.to_str().unwrap()])
        .expect_ok();
    b.latus(&[
        "init",
        "--cloud",
        &cloud,
        "--key-file",
        key_file.to_str().unwrap(),
    ])
    .expect_ok();
    assert_eq!(
        b.latus(&["key", "fingerprint"]).expect_ok().stdout.trim(),
        fp_a
    );
    // Export never overwrites.
    assert!(!a.latus(&["key", "export", key_file.to_str().unwrap()]).ok());
}

#[test]
fn kill_9_during_uploads_then_restart_publishes_everything_once() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud_dir = scratch.path().join("cloud");
    let m = Mounted::with_cloud(&format!("dir:{}", cloud_dir.display()));
    for i in 0..150 {
        fs::write(
            m.p(&format!("f{i:03}")),
            pattern(i, 20_000 + i as usize * 997),
        )
        .unwrap();
    }
    fs::write(m.p("big.bin"), pattern(99, 12 << 20)).unwrap();
    // The uploader is busy now; stop the daemon the hard way.
    m.kill9_and_remount();
    sync_wait(&m);
    let evs = m.log_events();
    let mut mivuis: Vec<u64> = evs
        .iter()
        .map(|e| e.mivui.as_u64().expect("published"))
        .collect();
    let n = mivuis.len();
    mivuis.sort();
    mivuis.dedup();
    assert_eq!(mivuis.len(), n, "two local events share a mivui");
    let records = objects(&Backend::Dir(cloud_dir.clone()))
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("events/")
                && name
                    .rsplit('/')
                    .next()
                    .is_some_and(|f| f.len() == 20 && f.bytes().all(|c| c.is_ascii_digit()))
        })
        .count();
    // Besides the events, each daemon run that reached the cloud adds one
    // `node` record (its hello): two runs here.
    assert!(
        (n..=n + 2).contains(&records),
        "the log holds {records} records for {n} local events"
    );
    // Every record read back and opened: this node's changes, once each.
    let nodes: serde_json::Value =
        serde_json::from_str(m.latus(&["nodes", "--json"]).expect_ok().stdout.trim()).unwrap();
    let me = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["this_node"] == true)
        .expect("this node is listed");
    assert_eq!(
        me["events_published"].as_u64(),
        Some(n as u64),
        "the log holds this node's changes more than once: {nodes}"
    );
    for i in (0..150).step_by(37) {
        assert!(
            fs::read(m.p(&format!("f{i:03}"))).unwrap() == pattern(i, 20_000 + i as usize * 997)
        );
    }
}

#[test]
fn sync_wait_fails_with_the_reason_when_the_cloud_is_down() {
    if !aws_available() {
        return;
    }
    let b = Backend::Aws {
        bucket: unique("latus-test"),
        table: unique("latus-test"),
    };
    let m = Mounted::bare();
    m.latus(&["init", "--cloud", &b.url()]).expect_ok();
    fs::create_dir_all(&m.mnt).unwrap();
    // Nothing listens on port 9 of loopback: the cloud is down for this node.
    let run = |args: &[&str]| {
        let mut cmd = Command::new(LATUS);
        cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .arg("--home")
            .arg(&m.home)
            .args(args);
        run_cmd(&mut cmd, Duration::from_secs(180))
    };
    run(&["mount", m.mnt.to_str().unwrap()]).expect_ok();
    fs::write(m.p("queued.txt"), b"waits for the cloud").unwrap();
    let out = run(&["sync", "--wait", "--timeout", "20"]);
    assert!(
        !out.ok(),
        "sync --wait succeeded with the cloud down: {out}"
    );
    assert!(
        out.stderr.to_lowercase().contains("unreachable") || out.stderr.contains("127.0.0.1:9"),
        "no reason given: {out}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&run(&["status", "--json"]).expect_ok().stdout).unwrap();
    assert_eq!(st["queue"]["pending_files"], 1, "{st}");
    run(&["unmount", m.mnt.to_str().unwrap()]).expect_ok();
}

#[test]
fn a_one_byte_change_to_a_big_file_uploads_about_one_chunk() {
    let scratch = tempfile::tempdir().unwrap();
    let m = Mounted::with_cloud(&format!("dir:{}", scratch.path().join("cloud").display()));
    let data = pattern(5, 48 << 20);
    fs::write(m.p("big.bin"), &data).unwrap();
    sync_wait(&m);
    assert_eq!(m.path_status("big.bin")["state"], "local");
    let before = m.status()["queue"]["uploaded_bytes"].as_u64().unwrap();
    assert!(before >= data.len() as u64, "{before}");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.p("big.bin"))
            .unwrap();
        f.write_all_at(b"!", 20 << 20).unwrap();
    }
    assert_eq!(m.path_status("big.bin")["state"], "pending");
    sync_wait(&m);
    let delta = m.status()["queue"]["uploaded_bytes"].as_u64().unwrap() - before;
    assert!(delta < 9 << 20, "a one-byte change uploaded {delta} bytes");
    assert_eq!(m.path_status("big.bin")["state"], "local");
}

#[test]
fn a_cloud_that_goes_away_and_comes_back_gets_everything_without_a_remount() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join("cloud");
    let away = scratch.path().join("cloud-away");
    let m = Mounted::with_cloud(&format!("dir:{}", cloud.display()));
    fs::write(m.p("before.txt"), b"published").unwrap();
    sync_wait(&m);
    // The NAS is unplugged: the mount keeps working, writes queue.
    fs::rename(&cloud, &away).unwrap();
    fs::write(m.p("during.txt"), b"queued while the cloud is gone").unwrap();
    assert_eq!(fs::read(m.p("before.txt")).unwrap(), b"published");
    let out = m.latus(&["sync", "--wait", "--timeout", "20"]);
    assert!(
        !out.ok(),
        "sync --wait succeeded with the cloud gone: {out}"
    );
    assert!(
        !cloud.exists(),
        "the node recreated a vanished cloud folder"
    );
    assert_eq!(m.path_status("during.txt")["state"], "pending");
    // Plugged back in: the queue drains by itself.
    fs::rename(&away, &cloud).unwrap();
    sync_wait(&m);
    assert_eq!(m.path_status("during.txt")["state"], "local");
    assert!(m.log_events().iter().all(|e| e.mivui.as_u64().is_some()));
}

/// A TCP relay to the local S3 + DynamoDB server that can stop answering:
/// while hung it accepts connections and requests and forwards nothing (a
/// half-open connection, a stuck proxy), unlike a server that is down.
struct StallProxy {
    addr: std::net::SocketAddr,
    hung: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl StallProxy {
    fn start(upstream: &str) -> StallProxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hung = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (hung, stop) = (hung.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut pumps = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let Ok(server) = TcpStream::connect(&upstream) else {
                                continue;
                            };
                            for (from, to) in [
                                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                                (server, client),
                            ] {
                                let (hung, stop) = (hung.clone(), stop.clone());
                                pumps
                                    .push(std::thread::spawn(move || pump(from, to, &hung, &stop)));
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
                for p in pumps {
                    let _ = p.join();
                }
            })
        };
        StallProxy {
            addr,
            hung,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hang(&self, hung: bool) {
        self.hung.store(hung, std::sync::atomic::Ordering::Release);
    }
}

/// Copies `from` to `to` until either closes; holds everything while hung.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    hung: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Acquire) {
        if hung.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A server that accepts requests and never answers is seen: `status`
/// says since when the cloud stopped answering, `sync --wait` says why it
/// fails, and sync resumes by itself once the server answers again.
#[test]
fn a_server_that_stops_answering_shows_and_sync_resumes_by_itself() {
    if !aws_available() {
        return;
    }
    let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let proxy = StallProxy::start(&upstream);
    let b = Backend::Aws {
        bucket: unique("latus-test"),
        table: unique("latus-test"),
    };
    let m = Mounted::bare();
    m.latus(&["init", "--cloud", &b.url()]).expect_ok();
    fs::create_dir_all(&m.mnt).unwrap();
    let url = proxy.url();
    let run = |args: &[&str], timeout: u64| {
        let mut cmd = Command::new(LATUS);
        cmd.env("AWS_ENDPOINT_URL", &url)
            .arg("--home")
            .arg(&m.home)
            .args(args);
        run_cmd(&mut cmd, Duration::from_secs(timeout))
    };
    let status = || -> serde_json::Value {
        serde_json::from_str(&run(&["status", "--json"], 30).expect_ok().stdout).unwrap()
    };
    run(&["mount", m.mnt.to_str().unwrap()], 60).expect_ok();
    fs::write(m.p("before.txt"), b"published").unwrap();
    run(&["sync", "--wait", "--timeout", "60"], 90).expect_ok();

    proxy.hang(true);
    fs::write(m.p("during.txt"), b"waits for the cloud").unwrap();
    let shown = wait_until(Duration::from_secs(120), || {
        status()["queue"]["unreachable_since"].as_i64().is_some()
    });
    assert!(shown, "a hung server is not shown: {}", status());
    let plain = run(&["status"], 30).expect_ok();
    assert!(plain.stdout.contains("stopped answering"), "{plain}");
    let out = run(&["sync", "--wait", "--timeout", "5"], 60);
    assert!(
        !out.ok(),
        "sync --wait succeeded while the server hangs: {out}"
    );
    assert!(
        out.stderr.contains("events still to publish") || out.stderr.contains("nreachable"),
        "no reason given: {out}"
    );

    proxy.hang(false);
    let resumed = wait_until(Duration::from_secs(180), || {
        let st = status();
        st["queue"]["pending_events"] == 0 && st["queue"]["unreachable_since"].is_null()
    });
    assert!(resumed, "sync did not resume by itself: {}", status());
    run(&["unmount", m.mnt.to_str().unwrap()], 60).expect_ok();
}

fn delete_object(b: &Backend, name: &str) {
    match b {
        Backend::Dir(path) => fs::remove_file(path.join(name)).unwrap(),
        Backend::Aws { bucket, .. } => {
            let rt = runtime();
            let client = s3();
            rt.block_on(async {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(name)
                    .send()
                    .await
                    .expect("delete")
            });
        }
    }
}

/// `latus check` finds a healthy volume healthy, and finds (with a non-zero
/// exit) a chunk the provider lost and one it altered.
#[test]
fn check_finds_missing_and_damaged_chunks() {
    let scratch = tempfile::tempdir().unwrap();
    for b in backends(scratch.path()) {
        let m = Mounted::with_cloud(&b.url());
        fs::write(m.p("a.bin"), pattern(21, 3 << 20)).unwrap();
        fs::write(m.p("b.txt"), b"small").unwrap();
        sync_wait(&m);
        let out = m.latus(&["check", "--read-data", "--json"]).expect_ok();
        let r: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(r["chunks_missing"], 0, "{}: {r}", b.name());
        assert_eq!(r["chunks_damaged"], 0, "{}: {r}", b.name());
        assert!(r["chunks_needed"].as_u64() >= Some(3), "{}: {r}", b.name());
        assert!(
            r["log_breach"].is_null() && r["head_differs"] == false,
            "{r}"
        );

        let chunks = chunk_objects(&b);
        let (lost, _) = &chunks[0];
        let (altered, bytes) = &chunks[1];
        delete_object(&b, lost);
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        overwrite_object(&b, altered, &bad);
        let out = m.latus(&["check", "--read-data", "--json"]);
        assert!(
            !out.ok(),
            "{}: check passed a damaged volume: {out}",
            b.name()
        );
        let r: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(r["chunks_missing"], 1, "{}: {r}", b.name());
        assert_eq!(r["chunks_damaged"], 1, "{}: {r}", b.name());
        let base = |n: &str| n.rsplit('/').next().unwrap().to_string();
        assert_eq!(r["missing"][0].as_str().map(base), Some(base(lost)));
        assert_eq!(r["damaged"][0].as_str().map(base), Some(base(altered)));
        let plain = m.latus(&["check"]);
        assert!(!plain.ok() && plain.stdout.contains("1 missing"), "{plain}");
        // `status` no longer says the content is safely in the cloud, even
        // after a restart, until a check finds it whole.
        m.remount();
        assert!(
            m.status()["queue"]["cloud_damage"]
                .as_str()
                .is_some_and(|d| d.contains("1 chunks missing"))
        );
        let st = m.latus(&["status"]).expect_ok();
        assert!(st.stdout.contains("DAMAGED"), "{st}");
    }
}

/// The dynalite server scripts/test.sh starts beside moto: a
/// DynamoDB-compatible store without TransactWriteItems. Missing, it is a
/// failure wherever the aws tests run.
pub(crate) fn dynalite_url() -> Option<String> {
    if let Ok(url) = std::env::var("LATUS_TEST_DYNALITE_URL") {
        return Some(url);
    }
    if aws_available() {
        panic!("LATUS_TEST_DYNALITE_URL is not set: run the tests through scripts/test.sh");
    }
    None
}

/// Every record number in a dynalite table, in order.
fn dynalite_numbers(url: &str, table: &str) -> Vec<u64> {
    let mut numbers: Vec<u64> = scan_table(table, Some(url))
        .iter()
        .filter_map(|item| item.get("mivui")?.as_n().ok()?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
}

/// On a store that refuses TransactWriteItems (dynalite), a batch of
/// events is appended one conditional put at a time: the numbers stay
/// dense, and a second node gets every file.
#[test]
fn a_store_without_transactions_appends_record_by_record_and_nodes_agree() {
    let Some(dynalite) = dynalite_url() else {
        return;
    };
    let table = unique("latus-test");
    let b = Backend::Aws {
        bucket: unique("latus-test"),
        table: table.clone(),
    };
    let env = [("AWS_ENDPOINT_URL_DYNAMODB", dynalite.as_str())];
    let a = Mounted::bare();
    a.latus_env(&["init", "--cloud", &b.url(), "--name", "a"], &env)
        .expect_ok();
    // Offline first, so the files wait and go up in batches.
    let mnt = a.mnt.to_str().unwrap();
    a.latus_env(&["mount", "--offline", mnt], &env).expect_ok();
    for i in 0..30 {
        fs::write(a.p(&format!("f{i:02}.txt")), format!("file {i}")).unwrap();
    }
    a.unmount();
    a.mount_env(&env);
    a.latus_env(&["sync", "--wait", "--timeout", "120"], &env)
        .expect_ok();
    let log = fs::read_to_string(a.home.join("daemon.log")).unwrap();
    assert!(
        log.contains("does not take TransactWriteItems"),
        "no batch met the fallback: {log}"
    );
    let numbers = dynalite_numbers(&dynalite, &table);
    assert!(numbers.len() >= 30, "{numbers:?}");
    assert_eq!(
        numbers,
        (1..=numbers.len() as u64).collect::<Vec<_>>(),
        "the log's numbers have holes"
    );

    let key = a.scratch().join("volume-key.json");
    a.latus(&["key", "export", key.to_str().unwrap()])
        .expect_ok();
    let second = Mounted::bare();
    second
        .latus_env(
            &[
                "init",
                "--cloud",
                &b.url(),
                "--name",
                "b",
                "--key-file",
                key.to_str().unwrap(),
            ],
            &env,
        )
        .expect_ok();
    second.mount_env(&env);
    let agree = || tree(&a.mnt) == tree(&second.mnt);
    assert!(
        wait_until(Duration::from_secs(60), agree),
        "the second node did not get every file"
    );
    fs::write(second.p("from-b.txt"), b"back").unwrap();
    second
        .latus_env(&["sync", "--wait", "--timeout", "120"], &env)
        .expect_ok();
    assert!(
        wait_until(Duration::from_secs(60), || a.p("from-b.txt").exists()),
        "the first node did not get the second node's file"
    );
    assert!(agree());
}
