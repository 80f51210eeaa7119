//! A failure-injecting wrapper around a cloud, for tests: it fails calls on
//! demand and counts them. An object store and an event log may share one
//! `FaultControl` (one cloud going down) or have one each.

use std::sync::Arc;

use uuid::Uuid;

use super::{CloudError, CloudErrorKind, CloudResult, EventLog, LogRecord, ObjectStore};
use crate::locks::{Mutex, lock};

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every call fails with this kind until `FaultControl::heal`.
    Down(CloudErrorKind),
    /// The next `n` calls fail with this kind; later calls pass.
    Next(u32, CloudErrorKind),
    /// The next `n` calls take effect in the inner cloud but their answer is
    /// lost: the caller sees `Unreachable` (a timeout after the write).
    LostReplies(u32),
}

/// Calls made through the wrappers, per operation, failed ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub puts: u64,
    pub gets: u64,
    pub exists: u64,
    pub deletes: u64,
    pub lists: u64,
    pub appends: u64,
    pub reads: u64,
    /// Calls that failed because of an injected fault.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct State {
    fault: Option<Fault>,
    counts: Counts,
}

/// What happens to one call.
enum Verdict {
    Pass,
    Fail(CloudErrorKind),
    LoseReply,
}

#[derive(Debug, Default)]
pub struct FaultControl {
    state: Mutex<State>,
}

impl FaultControl {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Replaces any fault in force.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).fault = Some(fault);
    }

    /// Calls pass again.
    pub fn heal(&self) {
        lock(&self.state).fault = None;
    }

    pub fn counts(&self) -> Counts {
        lock(&self.state).counts
    }

    /// Counts a call and decides its fate.
    fn call(&self, count: fn(&mut Counts) -> &mut u64) -> Verdict {
        let mut state = lock(&self.state);
        *count(&mut state.counts) += 1;
        let verdict = match state.fault {
            None => Verdict::Pass,
            Some(Fault::Down(kind)) => Verdict::Fail(kind),
            Some(Fault::Next(n, kind)) => {
                state.fault = (n > 1).then_some(Fault::Next(n - 1, kind));
                Verdict::Fail(kind)
            }
            Some(Fault::LostReplies(n)) => {
                state.fault = (n > 1).then_some(Fault::LostReplies(n - 1));
                Verdict::LoseReply
            }
        };
        if !matches!(verdict, Verdict::Pass) {
            state.counts.failed += 1;
        }
        verdict
    }

    /// Runs `f` on the inner cloud unless the call is failed.
    fn run<T>(
        &self,
        op: &'static str,
        what: &str,
        count: fn(&mut Counts) -> &mut u64,
        f: impl FnOnce() -> CloudResult<T>,
    ) -> CloudResult<T> {
        match self.call(count) {
            Verdict::Pass => f(),
            Verdict::Fail(kind) => Err(injected(kind, op, what)),
            Verdict::LoseReply => {
                f()?;
                Err(injected(CloudErrorKind::Unreachable, op, what))
            }
        }
    }
}

fn injected(kind: CloudErrorKind, op: &'static str, what: &str) -> CloudError {
    CloudError::new(kind, op, what, "injected fault")
}

pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    control: Arc<FaultControl>,
}

impl FaultyObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self::with_control(inner, FaultControl::new())
    }

    pub fn with_control(inner: Arc<dyn ObjectStore>, control: Arc<FaultControl>) -> Self {
        Self { inner, control }
    }

    pub fn control(&self) -> &Arc<FaultControl> {
        &self.control
    }
}

impl ObjectStore for FaultyObjectStore {
    fn put(&self, name: &str, data: &[u8]) -> CloudResult<()> {
        self.control
            .run("put", name, |c| &mut c.puts, || self.inner.put(name, data))
    }

    fn get(&self, name: &str) -> CloudResult<Vec<u8>> {
        self.control
            .run("get", name, |c| &mut c.gets, || self.inner.get(name))
    }

    fn exists(&self, name: &str) -> CloudResult<bool> {
        self.control.run(
            "exists",
            name,
            |c| &mut c.exists,
            || self.inner.exists(name),
        )
    }

    fn delete(&self, name: &str) -> CloudResult<()> {
        self.control.run(
            "delete",
            name,
            |c| &mut c.deletes,
            || self.inner.delete(name),
        )
    }

    fn list(&self) -> CloudResult<Vec<String>> {
        self.control
            .run("list", "", |c| &mut c.lists, || self.inner.list())
    }
}

pub struct FaultyEventLog {
    inner: Arc<dyn EventLog>,
    control: Arc<FaultControl>,
}

impl FaultyEventLog {
    pub fn new(inner: Arc<dyn EventLog>) -> Self {
        Self::with_control(inner, FaultControl::new())
    }

    pub fn with_control(inner: Arc<dyn EventLog>, control: Arc<FaultControl>) -> Self {
        Self { inner, control }
    }

    pub fn control(&self) -> &Arc<FaultControl> {
        &self.control
    }
}

impl EventLog for FaultyEventLog {
    fn append(&self, originator: Uuid, payload: &[u8]) -> CloudResult<u64> {
        self.control.run(
            "append",
            "log",
            |c| &mut c.appends,
            || self.inner.append(originator, payload),
        )
    }

    /// Counted as one append; a lost reply loses the whole batch's answer.
    fn append_batch(&self, originator: Uuid, payloads: &[Vec<u8>]) -> CloudResult<Vec<u64>> {
        self.control.run(
            "append",
            "log",
            |c| &mut c.appends,
            || self.inner.append_batch(originator, payloads),
        )
    }

    fn read_after(&self, after: u64, limit: usize) -> CloudResult<Vec<LogRecord>> {
        self.control.run(
            "read",
            "log",
            |c| &mut c.reads,
            || self.inner.read_after(after, limit),
        )
    }
}

/// The behaviour every backend must show, written once and run against
/// each (`dir` always, `aws` against a local server).
#[cfg(test)]
pub(super) mod conformance {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::Duration;

    use uuid::Uuid;

    use crate::cloud::{CloudErrorKind, EventLog, ObjectStore};

    /// Put, get, exists, delete and list round trips on an empty store.
    pub fn object_store(store: &dyn ObjectStore) {
        assert_eq!(
            store.list().unwrap(),
            Vec::<String>::new(),
            "a new store is empty"
        );
        let names = ["volume", "0a", "0a1b2c", "ff00", "7"];
        for (i, name) in names.iter().enumerate() {
            store.put(name, &vec![i as u8; i * 1000]).unwrap();
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(store.get(name).unwrap(), vec![i as u8; i * 1000], "{name}");
            assert!(store.exists(name).unwrap(), "{name}");
        }
        let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        expected.sort();
        let mut listed = store.list().unwrap();
        listed.sort();
        assert_eq!(listed, expected);

        store.put("0a", b"replaced").unwrap();
        assert_eq!(store.get("0a").unwrap(), b"replaced");

        let missing = store.get("deadbeef").unwrap_err();
        assert_eq!(missing.kind, CloudErrorKind::NotFound, "{missing}");
        assert!(missing.is_not_found() && !missing.is_retryable());
        assert!(!store.exists("deadbeef").unwrap());

        store.delete("0a1b2c").unwrap();
        store.delete("0a1b2c").unwrap();
        assert!(!store.exists("0a1b2c").unwrap());
        assert!(store.get("0a1b2c").unwrap_err().is_not_found());
        assert!(!store.list().unwrap().contains(&"0a1b2c".to_string()));
    }

    /// Appends and reads on a new, empty log. `open` opens another instance
    /// of the same log (as another node or process would).
    pub fn event_log(open: &dyn Fn() -> Arc<dyn EventLog>) {
        let log = open();
        assert!(
            log.read_after(0, 100).unwrap().is_empty(),
            "a new log is empty"
        );
        let me = Uuid::new_v4();
        let first = log.append(me, b"first").unwrap();
        let second = log.append(me, b"").unwrap();
        assert_eq!((first, second), (1, 2), "numbers are dense from 1");
        let records = log.read_after(0, 100).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (
                records[0].mivui,
                records[0].originator,
                records[0].payload.as_slice()
            ),
            (first, me, &b"first"[..])
        );
        assert_eq!(
            (records[1].mivui, records[1].payload.as_slice()),
            (second, &b""[..])
        );
        assert_eq!(log.read_after(first, 100).unwrap(), records[1..]);
        assert!(
            log.read_after(second, 100).unwrap().is_empty(),
            "past the end"
        );
        assert!(log.read_after(u64::MAX, 100).unwrap().is_empty());
        assert!(log.read_after(0, 0).unwrap().is_empty());

        batches(&*log);
        concurrent_appends(open, last(&*log));
        paging(&*log);
    }

    /// The highest number in the log.
    fn last(log: &dyn EventLog) -> u64 {
        log.read_after(0, usize::MAX)
            .unwrap()
            .last()
            .map_or(0, |r| r.mivui)
    }

    /// Batches of 0, 1 and several records get the next numbers, in order.
    fn batches(log: &dyn EventLog) {
        let start = last(log);
        let me = Uuid::new_v4();
        assert!(log.append_batch(me, &[]).unwrap().is_empty());
        assert_eq!(
            log.append_batch(me, &[b"one".to_vec()]).unwrap(),
            [start + 1]
        );
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; i as usize]).collect();
        assert_eq!(
            log.append_batch(me, &payloads).unwrap(),
            (start + 2..start + 7).collect::<Vec<_>>()
        );
        assert_eq!(log.append(me, b"after").unwrap(), start + 7);
        let records = log.read_after(start, 100).unwrap();
        let read: Vec<_> = records
            .iter()
            .map(|r| (r.mivui, r.originator, r.payload.clone()))
            .collect();
        let mut expected = vec![(start + 1, me, b"one".to_vec())];
        expected.extend((start + 2..).zip(payloads).map(|(n, p)| (n, me, p)));
        expected.push((start + 7, me, b"after".to_vec()));
        assert_eq!(read, expected);
    }

    /// What one writer thread appended: per call, the numbers it got and
    /// the payloads it gave.
    type Appended = (Uuid, Vec<(Vec<u64>, Vec<Vec<u8>>)>);

    /// Several instances, several threads each, appending records and
    /// batches at once while readers poll: every number is new, the
    /// numbers are dense, each batch's are consecutive, each thread sees
    /// its numbers increase, and no reader ever skips a number.
    fn concurrent_appends(open: &dyn Fn() -> Arc<dyn EventLog>, before: u64) {
        const INSTANCES: usize = 3;
        const THREADS: usize = 2;
        /// Per round, each thread appends one record, then a batch this big.
        const BATCHES: [usize; 5] = [3, 1, 12, 0, 30];
        const READERS: usize = 2;
        /// `limit` of each read: small, so that reads page.
        const READ_LIMIT: usize = 23;
        let per_thread = BATCHES.len() + BATCHES.iter().sum::<usize>();
        let total = (INSTANCES * THREADS * per_thread) as u64;

        let logs: Vec<_> = (0..INSTANCES).map(|_| open()).collect();
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let (log, done) = (open(), Arc::clone(&done));
                thread::spawn(move || {
                    let mut cursor = before;
                    let mut reads = 0;
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        let page = log.read_after(cursor, READ_LIMIT).unwrap();
                        reads += 1;
                        for (r, n) in page.iter().zip(cursor + 1..) {
                            assert_eq!(r.mivui, n, "a reader at {cursor} got a gap");
                        }
                        match page.last() {
                            Some(r) => cursor = r.mivui,
                            None if finished => return (cursor, reads),
                            None => thread::sleep(Duration::from_millis(1)),
                        }
                    }
                })
            })
            .collect();
        let writers: Vec<_> = logs
            .iter()
            .flat_map(|log| (0..THREADS).map(move |_| Arc::clone(log)))
            .map(|log| {
                thread::spawn(move || -> Appended {
                    let me = Uuid::new_v4();
                    let mut calls = Vec::new();
                    for (round, &size) in BATCHES.iter().enumerate() {
                        let one = vec![round as u8];
                        calls.push((vec![log.append(me, &one).unwrap()], vec![one]));
                        let batch: Vec<Vec<u8>> =
                            (0..size).map(|i| vec![round as u8, i as u8]).collect();
                        calls.push((log.append_batch(me, &batch).unwrap(), batch));
                    }
                    (me, calls)
                })
            })
            .collect();
        let mut expected = BTreeMap::new();
        for writer in writers {
            let (me, calls) = writer.join().unwrap();
            let mut previous = before;
            for (numbers, payloads) in calls {
                assert_eq!(numbers.len(), payloads.len());
                if let Some(&first) = numbers.first() {
                    assert!(first > previous, "{first} after {previous}: not increasing");
                    assert_eq!(
                        numbers,
                        (first..first + numbers.len() as u64).collect::<Vec<_>>(),
                        "a batch's numbers are consecutive"
                    );
                    previous = *numbers.last().unwrap();
                }
                for (n, payload) in numbers.into_iter().zip(payloads) {
                    assert!(
                        expected.insert(n, (me, payload)).is_none(),
                        "mivui {n} assigned twice"
                    );
                }
            }
        }
        done.store(true, Ordering::SeqCst);
        assert_eq!(
            expected.keys().copied().collect::<Vec<_>>(),
            (before + 1..=before + total).collect::<Vec<_>>(),
            "the numbers are dense"
        );
        for reader in readers {
            let (cursor, reads) = reader.join().unwrap();
            assert_eq!(cursor, before + total, "a reader caught up ({reads} reads)");
        }
        let records = logs[0].read_after(before, usize::MAX).unwrap();
        let read: BTreeMap<_, _> = records
            .into_iter()
            .map(|r| (r.mivui, (r.originator, r.payload)))
            .collect();
        assert_eq!(
            read, expected,
            "read_after returns exactly the appended records"
        );
    }

    /// 250 records, appended one by one then in one batch, read 100 at a
    /// time.
    fn paging(log: &dyn EventLog) {
        let payloads: Vec<Vec<u8>> = (0..250u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let me = Uuid::new_v4();
        let start = last(log);
        let appended: Vec<u64> = payloads
            .iter()
            .map(|p| log.append(me, p).unwrap())
            .collect();
        assert_eq!(appended, (start + 1..=start + 250).collect::<Vec<_>>());
        read_in_pages(log, start, &appended, me);
        let start = last(log);
        let appended = log.append_batch(me, &payloads).unwrap();
        assert_eq!(appended, (start + 1..=start + 250).collect::<Vec<_>>());
        read_in_pages(log, start, &appended, me);
    }

    /// Reads the records after `start` 100 at a time: they are `appended`,
    /// from `me`, with payloads 0, 1, 2, ... (little-endian `u32`).
    fn read_in_pages(log: &dyn EventLog, start: u64, appended: &[u64], me: Uuid) {
        let mut after = start;
        let mut pages = Vec::new();
        loop {
            let page = log.read_after(after, 100).unwrap();
            let Some(last) = page.last() else { break };
            after = last.mivui;
            pages.push(page);
        }
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let records: Vec<_> = pages.concat();
        assert_eq!(
            records.iter().map(|r| r.mivui).collect::<Vec<_>>(),
            appended
        );
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                (r.originator, r.payload.as_slice()),
                (me, &(i as u32).to_le_bytes()[..])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{DirEventLog, DirObjectStore};

    fn dir_cloud(dir: &std::path::Path) -> (Arc<dyn ObjectStore>, Arc<dyn EventLog>) {
        let mut created = Vec::new();
        let store = DirObjectStore::open(dir, true, &mut created).unwrap();
        let log = DirEventLog::open(dir, Uuid::new_v4(), true, &mut created).unwrap();
        (Arc::new(store), Arc::new(log))
    }

    #[test]
    fn a_healthy_wrapper_is_transparent() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = dir_cloud(dir.path());
        let faulty = FaultyObjectStore::new(store);
        conformance::object_store(&faulty);
        let volume = Uuid::new_v4();
        let control = FaultControl::new();
        conformance::event_log(&|| {
            let inner = DirEventLog::open(dir.path(), volume, false, &mut Vec::new()).unwrap();
            Arc::new(FaultyEventLog::with_control(
                Arc::new(inner),
                Arc::clone(&control),
            ))
        });
        assert_eq!(control.counts().failed, 0);
        assert!(faulty.control().counts().puts >= 6);
    }

    #[test]
    fn down_fails_every_call_until_healed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = dir_cloud(dir.path());
        let control = FaultControl::new();
        let store = FaultyObjectStore::with_control(store, Arc::clone(&control));
        let log = FaultyEventLog::with_control(log, Arc::clone(&control));
        control.inject(Fault::Down(CloudErrorKind::Unreachable));
        for _ in 0..3 {
            let e = store.put("ab", b"x").unwrap_err();
            assert!(e.is_retryable() && e.op == "put" && e.what == "ab", "{e}");
            assert_eq!(
                log.append(Uuid::new_v4(), b"x").unwrap_err().kind,
                CloudErrorKind::Unreachable
            );
        }
        assert!(
            !dir.path().join("objects/ab/ab").exists(),
            "a failed put writes nothing"
        );
        control.heal();
        store.put("ab", b"x").unwrap();
        assert_eq!(log.append(Uuid::new_v4(), b"x").unwrap(), 1);
        let counts = control.counts();
        assert_eq!((counts.puts, counts.appends, counts.failed), (4, 4, 6));
    }

    #[test]
    fn next_fails_that_many_calls_of_any_operation() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = dir_cloud(dir.path());
        let store = FaultyObjectStore::new(store);
        store
            .control()
            .inject(Fault::Next(2, CloudErrorKind::Throttled));
        assert_eq!(
            store.exists("ab").unwrap_err().kind,
            CloudErrorKind::Throttled
        );
        assert_eq!(store.get("ab").unwrap_err().kind, CloudErrorKind::Throttled);
        assert!(!store.exists("ab").unwrap());
        assert!(
            store.get("ab").unwrap_err().is_not_found(),
            "the inner store answers again"
        );
        let counts = store.control().counts();
        assert_eq!((counts.exists, counts.gets, counts.failed), (2, 2, 2));
    }

    #[test]
    fn a_lost_reply_still_takes_effect() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = dir_cloud(dir.path());
        let control = FaultControl::new();
        let store = FaultyObjectStore::with_control(store, Arc::clone(&control));
        let log = FaultyEventLog::with_control(log, Arc::clone(&control));
        control.inject(Fault::LostReplies(2));
        assert_eq!(
            store.put("ab", b"x").unwrap_err().kind,
            CloudErrorKind::Unreachable
        );
        assert_eq!(
            log.append(Uuid::new_v4(), b"x").unwrap_err().kind,
            CloudErrorKind::Unreachable
        );
        assert_eq!(store.get("ab").unwrap(), b"x");
        assert_eq!(log.read_after(0, 10).unwrap().len(), 1);
        assert_eq!(control.counts().failed, 2);
    }

    #[test]
    fn a_batch_is_one_append_and_fails_or_loses_its_answer_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (_, log) = dir_cloud(dir.path());
        let log = FaultyEventLog::new(log);
        let batch = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        log.control()
            .inject(Fault::Next(1, CloudErrorKind::Throttled));
        let e = log.append_batch(Uuid::new_v4(), &batch).unwrap_err();
        assert_eq!((e.kind, e.op), (CloudErrorKind::Throttled, "append"));
        assert!(log.read_after(0, 10).unwrap().is_empty());
        log.control().inject(Fault::LostReplies(1));
        assert_eq!(
            log.append_batch(Uuid::new_v4(), &batch).unwrap_err().kind,
            CloudErrorKind::Unreachable
        );
        assert_eq!(log.read_after(0, 10).unwrap().len(), 3, "it took effect");
        assert_eq!(log.append_batch(Uuid::new_v4(), &batch).unwrap(), [4, 5, 6]);
        let counts = log.control().counts();
        assert_eq!((counts.appends, counts.failed), (3, 2));
    }
}
