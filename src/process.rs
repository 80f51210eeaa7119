//! Which process a FUSE request comes from. The kernel reports the calling
//! thread's id; threads of one process share their descriptors, a forked
//! child has copies of its own.

/// The thread group (process) id of a thread, from /proc.
fn tgid(tid: u32) -> Option<u32> {
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
    match (tgid(a), tgid(b)) {
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
        // SAFETY: gettid has no preconditions.
        let tid = std::thread::spawn(|| unsafe { libc::gettid() } as u32)
            .join()
            .unwrap();
        assert!(same_process(me, me));
        // The spawned thread is gone: its tgid is unknown, but the live side is us.
        assert!(!same_process(tid, 1) || tid == 1);
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
