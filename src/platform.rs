//! What the core needs from the operating system, behind plain functions
//! (so the core's own interface stays platform-neutral): which process a
//! request comes from, and the space of the disk holding the store.
//!
//! Processes: the kernel reports the calling thread's id; threads of one
//! process share their descriptors, a forked child has copies of its own.

use std::path::Path;

/// Space of a filesystem, in bytes (files: inodes).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskSpace {
    pub total: u64,
    pub free: u64,
    /// Free to unprivileged users.
    pub available: u64,
    pub files_free: u64,
}

/// The space of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain data, for which all zeroes is valid.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we own; `c` is NUL-terminated.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = s.f_frsize;
    Ok(DiskSpace {
        total: s.f_blocks.saturating_mul(unit),
        free: s.f_bfree.saturating_mul(unit),
        available: s.f_bavail.saturating_mul(unit),
        files_free: s.f_ffree,
    })
}

/// The thread group (process) id of a thread, from /proc.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether two thread ids belong to one process. Unknown (a thread that is
/// gone) counts as not the same.
pub fn same_process(a: u32, b: u32) -> bool {
    if a == b {
        return true;
    }
    match (tgid_of(a), tgid_of(b)) {
        (Some(x), Some(y)) => x == y,
        (Some(x), None) => x == b,
        (None, Some(y)) => y == a,
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_of_one_process_are_the_same_process() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().unwrap(); // stay alive while checked
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        assert!(same_process(tid, me), "a live thread of this process");
        assert!(same_process(me, tid));
        done_tx.send(()).unwrap();
        worker.join().unwrap();
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!same_process(me, child.id()));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
