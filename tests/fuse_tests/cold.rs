//! Cold storage through the mount, on both backends: `latus cold` moves a
//! folder's chunks to the cold tier and frees the local copies; reads of
//! instant classes work, restore-first classes fail with EAGAIN until
//! thawed, a cold folder that is not connected fails with ENOMEDIUM;
//! `cold_after_days` cools old versions and `restore` brings one back;
//! chunks a hot file shares stay hot. Where each chunk is, is read from
//! the store itself (S3's storage class, the cold folder), never asked of
//! latus.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cloud::{Backend, aws_available, backends, sync_wait, unique};
use crate::harness::*;

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(60);

/// A node on `b` with a cold tier: the cold folder (dir) or `class` (aws).
fn cold_node(
    b: &Backend,
    scratch: &Path,
    class: &str,
    extra: &[(&str, &str)],
) -> (Mounted, PathBuf) {
    let m = Mounted::bare();
    m.latus(&["init", "--cloud", &b.url()]).expect_ok();
    let cold = scratch.join(unique("cold"));
    match b {
        Backend::Dir(_) => {
            fs::create_dir(&cold).unwrap();
            m.latus(&["set", "cold-dir", cold.to_str().unwrap()])
                .expect_ok();
        }
        Backend::Aws { .. } => {
            m.latus(&["set", "cold-class", class]).expect_ok();
        }
    }
    m.latus(&["set", "poll-ms", "200"]).expect_ok();
    for (k, v) in extra {
        m.latus(&["set", k, v]).expect_ok();
    }
    m.mount();
    (m, cold)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Every chunk object and its tier, read from the store: S3's storage
/// class (`STANDARD` when none is stated), or `hot` / `cold` for the
/// cloud folder and the cold folder.
fn tiers(b: &Backend, cold: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match b {
        Backend::Dir(cloud) => {
            for (dir, tier) in [
                (cloud.join("objects"), "hot"),
                (cold.join("objects"), "cold"),
            ] {
                for name in files_below(&dir) {
                    if name != "volume" {
                        // In both for a moment while it moves.
                        let was = out.insert(name.clone(), tier.to_string());
                        if was.is_some() {
                            out.insert(name, "moving".into());
                        }
                    }
                }
            }
        }
        Backend::Aws { bucket, .. } => {
            let rt = runtime();
            rt.block_on(async {
                let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                let s3 = aws_sdk_s3::Client::from_conf(
                    aws_sdk_s3::config::Builder::from(&cfg)
                        .force_path_style(true)
                        .build(),
                );
                let page = s3
                    .list_objects_v2()
                    .bucket(bucket)
                    .send()
                    .await
                    .expect("list objects");
                for o in page.contents() {
                    let key = o.key().unwrap().to_string();
                    if key == "volume" {
                        continue;
                    }
                    let head = s3
                        .head_object()
                        .bucket(bucket)
                        .key(&key)
                        .send()
                        .await
                        .expect("head object");
                    let class = head
                        .storage_class()
                        .map_or("STANDARD", |c| c.as_str())
                        .to_string();
                    out.insert(key, class);
                }
            });
        }
    }
    out
}

fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str())
            && !n.starts_with('.')
        {
            out.push(n.to_string());
        }
    }
    out
}

fn hot_name(b: &Backend) -> &'static str {
    match b {
        Backend::Dir(_) => "hot",
        Backend::Aws { .. } => "STANDARD",
    }
}

fn cold_name(b: &Backend, class: &str) -> String {
    match b {
        Backend::Dir(_) => "cold".into(),
        Backend::Aws { .. } => class.into(),
    }
}

/// Names that appeared between `before` and `after`.
fn new_names(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect()
}

fn assert_tier(b: &Backend, cold: &Path, names: &BTreeSet<String>, want: &str, what: &str) {
    assert!(!names.is_empty(), "{what}: no chunks to look at");
    let t = tiers(b, cold);
    for n in names {
        assert_eq!(
            t.get(n).map(String::as_str),
            Some(want),
            "{}: {what}: chunk {n}",
            b.name()
        );
    }
}

fn wait_tier(b: &Backend, cold: &Path, names: &BTreeSet<String>, want: &str, what: &str) {
    let ok = wait_until(WAIT, || {
        let t = tiers(b, cold);
        names
            .iter()
            .all(|n| t.get(n).map(String::as_str) == Some(want))
    });
    assert!(
        ok,
        "{}: {what}: not all {want} after {WAIT:?}: {:?}",
        b.name(),
        tiers(b, cold)
    );
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn state(m: &Mounted, rel: &str) -> String {
    m.path_status(arg(&m.p(rel)))["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn assert_reads(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        got.len() == want.len() && sha512_hex(&got) == sha512_hex(want),
        "{}: content differs",
        path.display()
    );
}

fn xattr(path: &Path, name: &str) -> String {
    let p = cpath(path);
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer we own.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        r >= 0,
        "getxattr {name}: {}",
        std::io::Error::last_os_error()
    );
    buf.truncate(r as usize);
    String::from_utf8(buf).unwrap()
}

fn daemon_log(m: &Mounted) -> String {
    fs::read_to_string(m.home.join("daemon.log")).unwrap_or_default()
}

#[test]
fn a_cold_folder_frees_its_copies_and_moves_only_its_own_chunks_cold() {
    let scratch = tempfile::tempdir().unwrap();
    for b in backends(scratch.path()) {
        let (m, cold) = cold_node(&b, scratch.path(), "GLACIER_IR", &[]);
        let (hot, cold_class) = (hot_name(&b), cold_name(&b, "GLACIER_IR"));
        let t0 = tiers(&b, &cold);
        let shared = pattern(1, 3 * MIB);
        write(&m.p("work/shared.bin"), &shared);
        sync_wait(&m);
        let t1 = tiers(&b, &cold);
        let shared_chunks = new_names(&t0, &t1);
        let own = pattern(2, 3 * MIB + 77);
        write(&m.p("archive/copy-of-shared.bin"), &shared);
        write(&m.p("archive/own.bin"), &own);
        sync_wait(&m);
        let own_chunks = new_names(&t1, &tiers(&b, &cold));

        let out = m.latus(&["cold", arg(&m.p("archive"))]).expect_ok();
        assert!(out.stdout.contains("archive: cold"), "{out}");
        assert_tier(
            &b,
            &cold,
            &own_chunks,
            &cold_class,
            "the cold folder's own chunks",
        );
        assert_tier(&b, &cold, &shared_chunks, hot, "chunks a hot file shares");
        for f in ["archive/own.bin", "archive/copy-of-shared.bin"] {
            assert_eq!(state(&m, f), "cold", "{}: {f}", b.name());
            assert_eq!(xattr(&m.p(f), "user.latus.state"), "cold");
            assert_eq!(xattr(&m.p(f), "user.latus.placement"), "cold");
        }
        assert_eq!(
            fs::metadata(m.p("archive/own.bin")).unwrap().len(),
            own.len() as u64
        );
        assert_eq!(state(&m, "work/shared.bin"), "local");
        let st = m.status();
        assert!(
            st["tiers"]["cold_bytes"].as_u64().unwrap() >= own.len() as u64,
            "{}: status tiers: {}",
            b.name(),
            st["tiers"]
        );
        assert!(st["tiers"]["hot_bytes"].as_u64().unwrap() >= shared.len() as u64);

        // An instant class (GLACIER_IR, a connected cold folder) reads at once.
        assert_reads(&m.p("archive/own.bin"), &own);
        assert_reads(&m.p("archive/copy-of-shared.bin"), &shared);
        assert_reads(&m.p("work/shared.bin"), &shared);
        assert_eq!(
            m.path_status(arg(&m.p("archive/own.bin")))["tier"],
            "cold",
            "{}",
            b.name()
        );
        // What was read is cached like any other copy.
        assert!(
            wait_until(WAIT, || state(&m, "archive/own.bin") == "local"),
            "{}: the copy read back was not kept",
            b.name()
        );

        // A new version written there goes cold after upload.
        let t2 = tiers(&b, &cold);
        let newer = pattern(3, 2 * MIB);
        write(&m.p("archive/newer.bin"), &newer);
        sync_wait(&m);
        let newer_chunks: BTreeSet<String> = new_names(&t2, &tiers(&b, &cold));
        wait_tier(
            &b,
            &cold,
            &newer_chunks,
            &cold_class,
            "a new version below a cold rule",
        );
        assert!(
            wait_until(WAIT, || state(&m, "archive/newer.bin") == "cold"),
            "{}: the new version's copy was not freed",
            b.name()
        );

        // Back to automatic: the chunks come back hot.
        m.latus(&["unpin", arg(&m.p("archive"))]).expect_ok();
        assert_tier(&b, &cold, &own_chunks, hot, "after unpin");
        assert_tier(&b, &cold, &newer_chunks, hot, "after unpin");
        assert_reads(&m.p("archive/newer.bin"), &newer);
    }
}

#[test]
fn a_restore_first_class_fails_reads_with_eagain_until_thawed() {
    if !aws_available() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let b = Backend::Aws {
        bucket: unique("latus-test"),
        table: unique("latus-test"),
    };
    let (m, cold) = cold_node(&b, scratch.path(), "GLACIER", &[]);
    let t0 = tiers(&b, &cold);
    let data = pattern(7, 2 * MIB + 5);
    write(&m.p("old/a.bin"), &data);
    sync_wait(&m);
    let chunks = new_names(&t0, &tiers(&b, &cold));
    m.latus(&["cold", arg(&m.p("old"))]).expect_ok();
    assert_tier(&b, &cold, &chunks, "GLACIER", "made cold");
    assert_eq!(state(&m, "old/a.bin"), "cold");
    assert_eq!(m.path_status(arg(&m.p("old/a.bin")))["tier"], "cold");

    // The read learns of the restore it needs, asks for it, and fails.
    // (moto completes a restore at once; reads of it still fail until
    // `thaw` has seen it ready: latus does not ask the cloud again for
    // a minute, as a real restore takes hours.)
    let err = fs::read(m.p("old/a.bin")).map(|d| d.len());
    if err.is_ok() {
        panic!("a frozen file read: {}", daemon_log(&m));
    }
    assert_eq!(errno(err), libc::EAGAIN, "a read of a frozen file");
    let log = daemon_log(&m);
    assert!(
        log.contains("old/a.bin is being restored from cold storage")
            && log.contains("ready in about 3 to 5 hours"),
        "{log}"
    );

    let out = m.latus(&["thaw", arg(&m.p("old")), "--wait"]).expect_ok();
    assert!(out.stdout.contains("old: ready"), "{out}");
    assert_eq!(m.path_status(arg(&m.p("old/a.bin")))["tier"], "ready");
    assert_reads(&m.p("old/a.bin"), &data);
    // Still in its class: the restored copy is read, the object stays cold.
    assert_tier(&b, &cold, &chunks, "GLACIER", "after the restore");
}

#[test]
fn a_cold_folder_not_connected_fails_reads_with_enomedium_until_it_is_back() {
    let scratch = tempfile::tempdir().unwrap();
    let b = Backend::Dir(scratch.path().join(unique("cloud")));
    let (m, cold) = cold_node(&b, scratch.path(), "", &[]);
    let data = pattern(9, MIB + 3);
    let t0 = tiers(&b, &cold);
    write(&m.p("usb/a.bin"), &data);
    sync_wait(&m);
    let chunks = new_names(&t0, &tiers(&b, &cold));
    m.latus(&["cold", arg(&m.p("usb"))]).expect_ok();
    assert_eq!(state(&m, "usb/a.bin"), "cold");
    assert_tier(&b, &cold, &chunks, "cold", "in the cold folder");

    let away = scratch.path().join("unplugged");
    fs::rename(&cold, &away).unwrap();
    let err = fs::read(m.p("usb/a.bin")).map(|d| d.len());
    assert_eq!(
        errno(err),
        libc::ENOMEDIUM,
        "a read with the cold folder away"
    );
    assert!(
        daemon_log(&m).contains("usb/a.bin is in cold storage and cannot be read now (ENOMEDIUM)"),
        "{}",
        daemon_log(&m)
    );
    let out = m.latus(&["thaw", arg(&m.p("usb"))]);
    assert!(!out.ok() && out.stderr.contains("not connected"), "{out}");
    // `check` knows the chunks are cold, not missing.
    let out = m.latus(&["check", "--json"]).expect_ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["chunks_missing"], 0, "{v}");
    assert_eq!(
        v["chunks_cold_unread"].as_u64(),
        Some(chunks.len() as u64),
        "{v}"
    );

    fs::rename(&away, &cold).unwrap();
    assert_reads(&m.p("usb/a.bin"), &data);
}

#[test]
fn cold_after_days_cools_old_versions_and_restore_brings_one_back() {
    let scratch = tempfile::tempdir().unwrap();
    for b in backends(scratch.path()) {
        // 0 days: every version cools as soon as it is no longer current
        // (the day arithmetic is unit-tested in `sync::history`).
        let (m, cold) = cold_node(
            &b,
            scratch.path(),
            "GLACIER_IR",
            &[("cold-after-days", "0")],
        );
        let (hot, cold_class) = (hot_name(&b), cold_name(&b, "GLACIER_IR"));
        let t0 = tiers(&b, &cold);
        let v1 = pattern(11, 2 * MIB);
        write(&m.p("doc.bin"), &v1);
        sync_wait(&m);
        let t1 = tiers(&b, &cold);
        let v1_chunks = new_names(&t0, &t1);
        let v2 = pattern(12, 2 * MIB);
        write(&m.p("doc.bin"), &v2);
        sync_wait(&m);
        let v2_chunks = new_names(&t1, &tiers(&b, &cold));
        let out = m.latus(&["prune"]).expect_ok();
        assert!(out.stdout.contains("removed 0 versions"), "{out}");
        wait_tier(&b, &cold, &v1_chunks, &cold_class, "the old version");
        assert_tier(&b, &cold, &v2_chunks, hot, "the current version");

        let versions: serde_json::Value = serde_json::from_str(
            &m.latus(&["versions", "doc.bin", "--json"])
                .expect_ok()
                .stdout,
        )
        .unwrap();
        let first = versions
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["mivui"].as_u64().unwrap())
            .min()
            .unwrap()
            .to_string();
        let out = m
            .latus(&["restore", arg(&m.p("doc.bin")), "--version", &first])
            .expect_ok();
        assert!(
            out.stdout.contains("the version was in cold storage"),
            "{}: {out}",
            b.name()
        );
        assert_tier(&b, &cold, &v1_chunks, hot, "the restored version");
        assert_reads(&m.p("doc.bin"), &v1);
        let started = Instant::now();
        // The version it replaced is old now: it cools in turn.
        wait_tier(&b, &cold, &v2_chunks, &cold_class, "the replaced version");
        assert!(started.elapsed() < WAIT);
    }
}

#[test]
fn cold_is_refused_clearly_where_the_volume_has_no_cold_tier() {
    let scratch = tempfile::tempdir().unwrap();
    let m = Mounted::with_cloud(&format!("dir:{}", scratch.path().join("cloud").display()));
    write(&m.p("a/f.bin"), b"x");
    sync_wait(&m);
    let out = m.latus(&["cold", arg(&m.p("a"))]);
    assert!(
        !out.ok() && out.stderr.contains("latus set cold-dir"),
        "{out}"
    );
    assert_eq!(state(&m, "a/f.bin"), "local", "nothing was freed");
    assert_eq!(xattr(&m.p("a"), "user.latus.placement"), "auto");
}

/// Another node learns that content is cold when it reads it: at once
/// from a cold folder it can reach, or by a restore it starts (EAGAIN,
/// then `thaw --wait`).
#[test]
fn another_node_reads_cold_content_or_thaws_it_first() {
    let scratch = tempfile::tempdir().unwrap();
    for b in backends(scratch.path()) {
        let nodes = crate::sync::nodes_on(&b, &["a", "b"]);
        let cold = scratch.path().join(unique("cold"));
        fs::create_dir(&cold).unwrap();
        for m in &nodes {
            match b {
                Backend::Dir(_) => m.latus(&["set", "cold-dir", arg(&cold)]).expect_ok(),
                Backend::Aws { .. } => m.latus(&["set", "cold-class", "GLACIER"]).expect_ok(),
            };
            m.mount();
        }
        let (a, other) = (&nodes[0], &nodes[1]);
        let data = pattern(21, 2 * MIB + 1);
        write(&a.p("box/f.bin"), &data);
        sync_wait(a);
        a.latus(&["cold", arg(&a.p("box"))]).expect_ok();
        assert!(
            wait_until(WAIT, || fs::metadata(other.p("box/f.bin"))
                .is_ok_and(|m| m.len() == data.len() as u64)),
            "{}: the file reached the other node",
            b.name()
        );
        if let Backend::Aws { .. } = b {
            let err = fs::read(other.p("box/f.bin")).map(|d| d.len());
            assert_eq!(errno(err), libc::EAGAIN, "the other node's first read");
            other
                .latus(&["thaw", arg(&other.p("box")), "--wait"])
                .expect_ok();
        }
        assert_reads(&other.p("box/f.bin"), &data);
    }
}
