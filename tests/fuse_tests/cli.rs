//! The command-line contract: init, mount errors, status, unmount.

use std::fs;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Mounted, is_mounted, live_threads, pid_alive, wait_until};

fn assert_no_mount_no_daemon(m: &Mounted) {
    assert!(
        !is_mounted(&m.mnt),
        "{} is mounted after a failed mount",
        m.mnt.display()
    );
    let pid_file = m.home.join("daemon.pid");
    if let Ok(pid) = fs::read_to_string(&pid_file).map(|s| s.trim().parse::<u32>()) {
        let pid = pid.expect("daemon.pid holds a pid");
        assert!(
            !pid_alive(pid),
            "a daemon ({pid}) is running after a failed mount"
        );
    }
}

#[test]
fn mount_fails_when_mountpoint_is_missing() {
    let m = Mounted::bare();
    m.latus(&["init"]).expect_ok();
    fs::remove_dir(&m.mnt).unwrap();
    let out = m.try_mount();
    assert!(!out.ok(), "mount on a missing folder must fail: {out}");
    assert!(
        !out.stderr.trim().is_empty(),
        "a failed mount explains itself on stderr: {out}"
    );
    assert!(
        out.stderr.contains(m.mnt.to_str().unwrap()),
        "the message names the mountpoint: {out}"
    );
    assert!(
        !m.mnt.exists(),
        "mount must not create the missing mountpoint silently"
    );
    assert_no_mount_no_daemon(&m);
}

#[test]
fn mount_adopts_what_the_plain_folder_holds() {
    let m = Mounted::bare();
    m.latus(&["init"]).expect_ok();
    fs::write(m.mnt.join("precious.txt"), b"do not hide me").unwrap();
    let out = m.mount();
    assert!(out.stdout.contains("recovered: adopted 1 entries"), "{out}");
    assert_eq!(fs::read(m.p("precious.txt")).unwrap(), b"do not hide me");
    m.unmount();
    // Nothing stays hidden under the mount, and the plain folder is
    // closed to programs while latus is not mounted.
    assert!(fs::read_dir(&m.mnt).unwrap().next().is_none());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&m.mnt).unwrap().permissions())
            & 0o777,
        0
    );
}

#[test]
fn mount_fails_when_already_mounted() {
    let m = Mounted::new();
    fs::write(m.p("f"), b"before").unwrap();
    let pid = m.daemon_pid();
    let out = m.latus(&["mount", m.mnt.to_str().unwrap()]);
    assert!(
        !out.ok(),
        "a second mount on the same folder must fail: {out}"
    );
    assert!(!out.stderr.trim().is_empty(), "{out}");
    // The first mount is untouched and still answers.
    assert!(is_mounted(&m.mnt));
    assert_eq!(
        m.status()["pid"].as_u64(),
        Some(pid as u64),
        "status still reports the first daemon"
    );
    assert!(pid_alive(pid));
    assert_eq!(fs::read(m.p("f")).unwrap(), b"before");
    fs::write(m.p("g"), b"after").unwrap();
    assert_eq!(fs::read(m.p("g")).unwrap(), b"after");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let n = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == m.mnt.to_str())
        .count();
    assert_eq!(n, 1, "exactly one mount on {}", m.mnt.display());
}

#[test]
fn mount_without_init_initialises_the_node() {
    let m = Mounted::bare();
    assert!(!m.home.exists());
    m.mount();
    let st = m.status();
    let node_id = st["node_id"].as_str().expect("node_id");
    uuid::Uuid::parse_str(node_id)
        .unwrap_or_else(|e| panic!("node_id {node_id:?} is not a UUID: {e}"));
    fs::write(m.p("x"), b"works").unwrap();
    assert_eq!(fs::read(m.p("x")).unwrap(), b"works");
}

#[test]
fn init_with_name_and_node_id_is_stable() {
    let m = Mounted::bare();
    m.latus(&["init", "--name", "test-laptop"]).expect_ok();
    m.mount();
    let id = m.status()["node_id"].as_str().unwrap().to_string();
    m.remount();
    assert_eq!(
        m.status()["node_id"].as_str().unwrap(),
        id,
        "node id across remounts"
    );
}

#[test]
fn status_json_while_mounted() {
    let m = Mounted::new();
    let st = m.status();
    for key in ["pid", "mountpoint", "node_id", "files", "events"] {
        assert!(st.get(key).is_some(), "status --json lacks {key:?}: {st}");
    }
    let pid = st["pid"].as_u64().expect("pid is a number") as u32;
    assert!(pid_alive(pid), "status pid {pid} is not a running process");
    assert_ne!(pid, std::process::id());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("latus"),
        "pid {pid} is not a latus process"
    );
    let mp = st["mountpoint"].as_str().expect("mountpoint is a string");
    assert_eq!(fs::canonicalize(mp).unwrap(), m.mnt, "mountpoint");
    uuid::Uuid::parse_str(st["node_id"].as_str().expect("node_id is a string"))
        .expect("node_id is a UUID");
    let files0 = st["files"].as_u64().expect("files is a number");
    let events0 = st["events"].as_u64().expect("events is a number");

    fs::create_dir(m.p("d")).unwrap();
    for i in 0..3 {
        fs::write(m.p(&format!("d/f{i}")), b"x").unwrap();
    }
    let mut last = Value::Null;
    let grown = wait_until(Duration::from_secs(10), || {
        last = m.status();
        last["files"].as_u64().unwrap_or(0) >= files0 + 3
            && last["events"].as_u64().unwrap_or(0) >= events0 + 4
    });
    assert!(
        grown,
        "after 3 files and a folder, status shows files {} -> ? and events {} -> ?: {last}",
        files0, events0
    );
}

#[test]
fn status_of_a_path() {
    let m = Mounted::new();
    fs::create_dir(m.p("docs")).unwrap();
    fs::write(m.p("docs/report.txt"), vec![b'r'; 1234]).unwrap();
    let abs = m.p("docs/report.txt");
    let by_abs = m.path_status(abs.to_str().unwrap());
    let by_rel = m.path_status("docs/report.txt");
    for st in [&by_abs, &by_rel] {
        let state = st["state"]
            .as_str()
            .unwrap_or_else(|| panic!("state: {st}"));
        assert!(
            ["local", "pending", "cloud", "local-only"].contains(&state),
            "state {state:?}"
        );
        assert!(
            state == "local" || state == "pending",
            "a file just written here is local or pending, not {state:?}"
        );
        assert_eq!(st["size"].as_u64(), Some(1234), "size: {st}");
        assert!(
            st.get("last_event").is_some_and(|e| !e.is_null()),
            "last_event of a written file: {st}"
        );
    }
    assert_eq!(by_abs["size"], by_rel["size"]);
    assert_eq!(
        by_abs["last_event"]["id"], by_rel["last_event"]["id"],
        "absolute and relative paths name the same file"
    );

    // The last event follows changes.
    let before = by_rel["last_event"].clone();
    fs::write(m.p("docs/report.txt"), b"short").unwrap();
    let changed = wait_until(Duration::from_secs(10), || {
        m.path_status("docs/report.txt")["last_event"] != before
    });
    assert!(changed, "last_event unchanged after a modify");
    assert_eq!(m.path_status("docs/report.txt")["size"].as_u64(), Some(5));

    let out = m.latus(&["status", m.p("no/such/file").to_str().unwrap(), "--json"]);
    assert!(!out.ok(), "status of a missing path fails: {out}");
    assert!(!out.stderr.trim().is_empty(), "{out}");
}

#[test]
fn unmount_stops_the_daemon_and_frees_the_folder() {
    let m = Mounted::new();
    fs::write(m.p("kept"), b"in the node, not in the folder").unwrap();
    let pid = m.daemon_pid();
    m.latus(&["unmount", m.mnt.to_str().unwrap()]).expect_ok();
    // Checked the moment unmount returns: a zombie leader with a thread
    // still exiting holds the database, and a mount now would fail.
    let live = live_threads(pid);
    assert!(!is_mounted(&m.mnt));
    assert_eq!(
        live, 0,
        "daemon {pid} still had live threads when `latus unmount` returned"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !pid_alive(pid)),
        "daemon {pid} never exited"
    );
    assert_eq!(
        fs::read_dir(&m.mnt).unwrap().count(),
        0,
        "the mountpoint folder is empty again"
    );
    m.mount();
    assert_ne!(m.daemon_pid(), pid, "a new daemon");
    assert_eq!(
        fs::read(m.p("kept")).unwrap(),
        b"in the node, not in the folder"
    );
}

/// A key file joins an existing volume only: without `--cloud`, or with a
/// cloud that holds no volume, nothing is created under the same key.
#[test]
fn init_with_a_key_file_joins_and_never_creates_a_volume() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join("cloud");
    let a = Mounted::bare();
    a.latus(&["init", "--cloud", &format!("dir:{}", cloud.display())])
        .expect_ok();
    let key = scratch.path().join("key.json");
    a.latus(&["key", "export", key.to_str().unwrap()])
        .expect_ok();
    let b = Mounted::bare();
    let out = b.latus(&["init", "--key-file", key.to_str().unwrap()]);
    assert!(!out.ok() && out.stderr.contains("--cloud"), "{out}");
    let wrong = scratch.path().join("not-the-cloud");
    std::fs::create_dir_all(&wrong).unwrap();
    let out = b.latus(&[
        "init",
        "--cloud",
        &format!("dir:{}", wrong.display()),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    assert!(!out.ok(), "joined a folder that holds no volume: {out}");
    assert!(
        !wrong.join("objects").join("volume").exists() && !wrong.join("volume").exists(),
        "a second volume was created under the same key"
    );
    assert!(!b.home.join("config.json").exists());
}

/// The daemon refuses a home other users can read (it holds the key), and
/// its control socket is the owner's only.
#[test]
fn a_home_open_to_others_is_refused_and_the_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let m = Mounted::bare();
    m.latus(&["init"]).expect_ok();
    std::fs::create_dir_all(&m.mnt).unwrap();
    std::fs::set_permissions(&m.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = m.latus(&["mount", m.mnt.to_str().unwrap()]);
    assert!(!out.ok() && out.stderr.contains("chmod 700"), "{out}");
    std::fs::set_permissions(&m.home, std::fs::Permissions::from_mode(0o700)).unwrap();
    m.mount();
    let mode = std::fs::metadata(m.home.join("daemon.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
