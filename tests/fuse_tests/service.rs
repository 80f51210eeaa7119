//! latus run the way its systemd unit runs it (`mount-helpers/latus.service`):
//! `mount --foreground` as the unit's main process, stopped by SIGTERM.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{LATUS, Mounted, is_mounted, spawn_cmd, wait_until};

/// `systemctl stop`: SIGTERM to the main process. It flushes, unmounts and
/// exits 0, whatever thread the signal reaches; what was written before
/// is there at the next mount.
#[test]
fn sigterm_to_a_foreground_mount_flushes_unmounts_and_exits_0() {
    let m = Mounted::bare();
    m.latus(&["init"]).expect_ok();
    let log = m.scratch().join("foreground.log");
    let mut child = spawn_cmd(
        Command::new(LATUS)
            .arg("--home")
            .arg(&m.home)
            .args(["mount", "--foreground"])
            .arg(&m.mnt),
        &log,
    );
    let mounted = wait_until(Duration::from_secs(60), || is_mounted(&m.mnt));
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    assert!(mounted, "not mounted after 60 s:\n{}", read_log());
    fs::write(m.p("kept.txt"), b"written before SIGTERM").unwrap();

    // SAFETY: plain syscall on the pid of the child this test started.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 90 s after SIGTERM:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        read_log()
    );
    assert!(!is_mounted(&m.mnt), "still mounted after SIGTERM");
    assert!(read_log().contains("unmounted cleanly"), "{}", read_log());

    m.mount();
    assert_eq!(
        fs::read(m.p("kept.txt")).unwrap(),
        b"written before SIGTERM"
    );
    m.unmount();
}
