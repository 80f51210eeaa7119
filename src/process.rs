//! Which process a FUSE request comes from. The kernel reports the calling
//! thread's id; threads of one process share their descriptors, a forked
//! child has copies of its own.

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
