//! Format upgrades through the kernel mount. A home and its `dir:` volume
//! written by latus 0.1.0 (home format 1: `tests/fixtures/home-format-1`,
//! made by `tests/fixtures/make-home-fixture.sh`) open with this build: the
//! home is upgraded in place once, after a backup of its database and
//! journal, and keeps its files, their history and sync. A home of a newer
//! format is refused with a message naming the versions, and nothing in it
//! changes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Mounted, wait_until};

const OLD_FORMAT: u32 = 1;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/home-format-1")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Puts a copy of the fixture's home at `m.home` and of its volume in the
/// scratch folder (the config names the copy: the checked-in one says
/// `dir:@VOLUME@`), private as `init` makes them. Returns the cloud URL.
fn install_fixture(m: &Mounted) -> String {
    let cloud = m.scratch().join("cloud");
    copy_tree(&fixture().join("home"), &m.home);
    copy_tree(&fixture().join("cloud"), &cloud);
    let url = format!("dir:{}", cloud.display());
    let config = m.home.join("config.json");
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"dir:@VOLUME@\""), "fixture config: {text}");
    fs::write(&config, text.replace("dir:@VOLUME@", &url)).unwrap();
    fs::set_permissions(&m.home, fs::Permissions::from_mode(0o700)).unwrap();
    for f in ["config.json", "node.key"] {
        fs::set_permissions(m.home.join(f), fs::Permissions::from_mode(0o600)).unwrap();
    }
    url
}

fn config(m: &Mounted) -> serde_json::Map<String, Value> {
    serde_json::from_slice(&fs::read(m.home.join("config.json")).unwrap()).unwrap()
}

/// Every file below `dir`: relative path → bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn backups(m: &Mounted) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&m.home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".backup"))
        .collect();
    v.sort();
    v
}

fn blob() -> Vec<u8> {
    b"latus fixture blob line\n"
        .iter()
        .copied()
        .cycle()
        .take(102_400)
        .collect()
}

/// The fixture's files as its script wrote them (see its contents.txt).
fn check_fixture_files(m: &Mounted) {
    assert_eq!(
        fs::read_to_string(m.p("hello.txt")).unwrap(),
        "hello from the format fixture\n"
    );
    assert_eq!(
        fs::read_to_string(m.p("docs/notes.md")).unwrap(),
        "notes, second version\n"
    );
    assert!(!m.p("docs/deleted.txt").exists());
    assert_eq!(fs::read_link(m.p("link")).unwrap(), Path::new("hello.txt"));
    assert!(
        fs::read(m.p("data/blob.bin")).unwrap() == blob(),
        "data/blob.bin differs"
    );
}

#[test]
fn a_home_written_by_latus_0_1_is_upgraded_once_and_keeps_files_history_and_sync() {
    let a = Mounted::bare();
    let url = install_fixture(&a);
    let old = files(&a.home);
    assert_eq!(config(&a)["format_version"], OLD_FORMAT);

    a.mount();
    // Freed by the fixture: this read comes from the old volume.
    let blob_state = a.path_status(a.p("data/blob.bin").to_str().unwrap());
    assert_eq!(blob_state["state"], "cloud", "{blob_state}");
    check_fixture_files(&a);

    // Upgraded in place, after a backup of the database and journal as
    // 0.1.0 left them.
    let cfg = config(&a);
    assert_eq!(cfg["format_version"], latus::home::FORMAT);
    assert_eq!(
        cfg["written_by"],
        format!("latus {}", env!("CARGO_PKG_VERSION"))
    );
    let db_backup = format!("latus.redb.format-{OLD_FORMAT}.backup");
    let wal_backup = format!("journal.wal.format-{OLD_FORMAT}.backup");
    assert_eq!(backups(&a), vec![wal_backup.clone(), db_backup.clone()]);
    assert!(fs::read(a.home.join(&db_backup)).unwrap() == old["latus.redb"]);
    assert!(fs::read(a.home.join(&wal_backup)).unwrap() == old["journal.wal"]);

    // History from before the upgrade.
    let out = a
        .latus(&["versions", a.p("docs/notes.md").to_str().unwrap(), "--json"])
        .expect_ok();
    let versions: Vec<Value> = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(versions.len(), 2, "{out}");

    // Sync: a change published after the upgrade, and a new node of the
    // old volume sees the old files and the new one.
    fs::write(a.p("after-upgrade.txt"), b"written by the upgraded node\n").unwrap();
    a.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    let key = a.scratch().join("key.json");
    a.latus(&["key", "export", key.to_str().unwrap()])
        .expect_ok();
    let b = Mounted::bare();
    b.latus(&["init", "--cloud", &url, "--key-file", key.to_str().unwrap()])
        .expect_ok();
    b.mount();
    b.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    assert!(
        wait_until(Duration::from_secs(30), || b
            .p("after-upgrade.txt")
            .exists()),
        "the new node does not show the file written after the upgrade"
    );
    assert_eq!(
        fs::read(b.p("after-upgrade.txt")).unwrap(),
        b"written by the upgraded node\n"
    );
    check_fixture_files(&b);
    b.unmount();

    // Once: the next mount finds the current format and takes no second backup.
    a.unmount();
    assert_eq!(
        latus::meta::db_format(&a.home.join("latus.redb")).unwrap(),
        u64::from(latus::meta::DB_FORMAT)
    );
    let kept = fs::read(a.home.join(&db_backup)).unwrap();
    a.mount();
    check_fixture_files(&a);
    assert_eq!(backups(&a), vec![wal_backup, db_backup.clone()]);
    assert!(fs::read(a.home.join(&db_backup)).unwrap() == kept);
    let log = fs::read_to_string(a.home.join("daemon.log")).unwrap();
    assert_eq!(
        log.matches("upgraded the home's format").count(),
        1,
        "daemon log:\n{log}"
    );
    a.unmount();
}

#[test]
fn a_home_of_a_newer_format_is_refused_with_the_versions_and_left_as_it_was() {
    let m = Mounted::bare();
    m.latus(&["init"]).expect_ok();
    // A home the way a future latus 9.1.0 would leave it.
    let mut cfg = config(&m);
    cfg.insert("format_version".into(), 99.into());
    cfg.insert("written_by".into(), "latus 9.1.0".into());
    fs::write(
        m.home.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let before = files(&m.home);

    let mnt = m.mnt.to_str().unwrap().to_string();
    for args in [
        vec!["mount", mnt.as_str()],
        vec!["mount", "--foreground", mnt.as_str()],
        vec!["status"],
        vec!["log"],
    ] {
        let out = m.latus(&args);
        assert!(!out.ok(), "latus {args:?} accepted a newer home: {out}");
        for want in [
            "was written by a newer latus (home format 99, by latus 9.1.0)",
            &format!(
                "this latus {} reads home formats up to {}",
                env!("CARGO_PKG_VERSION"),
                latus::home::FORMAT
            ),
            "install latus ≥ 9.1.0",
        ] {
            assert!(
                out.stderr.contains(want),
                "latus {args:?}: no {want:?} in {out}"
            );
        }
        assert!(!crate::harness::is_mounted(&m.mnt));
    }
    assert!(files(&m.home) == before, "the refused home changed");
}
