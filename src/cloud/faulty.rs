//! A failure-injecting wrapper around a cloud, for tests: it fails calls on
//! demand and counts them. An object store and an event log may share one
//! `FaultControl` (one cloud going down) or have one each. A fault applies
//! to every call, or to one kind of call (`FaultControl::inject_on`).

use std::collections::BTreeMap;
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
    /// The next `n` calls hang: the caller sees `Unreachable` at once, and
    /// the call's effect is held until `FaultControl::release_held` carries
    /// it out (a request that reaches the service after its timeout) or
    /// `drop_held` forgets it. A held append is a conditional write of the
    /// numbers it would have had, as `aws` does it: it lands only if no
    /// record was appended in between.
    Hang(u32),
}

/// A kind of call, for faults that target one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallKind {
    Put,
    Get,
    Size,
    Delete,
    List,
    Append,
    Read,
    /// A move between tiers or a restore request.
    Tier,
}

/// Calls made through the wrappers, per operation, failed ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub puts: u64,
    pub gets: u64,
    pub sizes: u64,
    pub deletes: u64,
    pub lists: u64,
    pub appends: u64,
    pub reads: u64,
    pub tiers: u64,
    /// Calls that failed because of an injected fault.
    pub failed: u64,
}

impl Counts {
    fn of(&mut self, op: CallKind) -> &mut u64 {
        match op {
            CallKind::Put => &mut self.puts,
            CallKind::Get => &mut self.gets,
            CallKind::Size => &mut self.sizes,
            CallKind::Delete => &mut self.deletes,
            CallKind::List => &mut self.lists,
            CallKind::Append => &mut self.appends,
            CallKind::Read => &mut self.reads,
            CallKind::Tier => &mut self.tiers,
        }
    }
}

/// The effect of a hung call, carried out later or never.
type Effect = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Applies to every call without a targeted fault.
    fault: Option<Fault>,
    targeted: BTreeMap<CallKind, Fault>,
    counts: Counts,
    held: Vec<(CallKind, String, Effect)>,
}

/// What happens to one call.
enum Verdict {
    Pass,
    Fail(CloudErrorKind),
    LoseReply,
    Hang,
}

#[derive(Default)]
pub struct FaultControl {
    state: Mutex<State>,
}

impl std::fmt::Debug for FaultControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("FaultControl")
            .field("fault", &st.fault)
            .field("targeted", &st.targeted)
            .field("held", &st.held.len())
            .finish()
    }
}

impl FaultControl {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Replaces any fault in force for every kind of call.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).fault = Some(fault);
    }

    /// Replaces any fault in force for calls of kind `op` (which then
    /// ignore the fault for every kind).
    pub fn inject_on(&self, op: CallKind, fault: Fault) {
        lock(&self.state).targeted.insert(op, fault);
    }

    /// Calls pass again (held calls stay held).
    pub fn heal(&self) {
        let mut st = lock(&self.state);
        st.fault = None;
        st.targeted.clear();
    }

    pub fn counts(&self) -> Counts {
        lock(&self.state).counts
    }

    /// The calls held by `Fault::Hang`, oldest first: kind and object.
    pub fn held(&self) -> Vec<(CallKind, String)> {
        lock(&self.state)
            .held
            .iter()
            .map(|(op, what, _)| (*op, what.clone()))
            .collect()
    }

    /// Carries out the held call at `index` (see `held`) now.
    pub fn release_held(&self, index: usize) {
        let mut st = lock(&self.state);
        if index < st.held.len() {
            let (_, _, effect) = st.held.remove(index);
            drop(st);
            effect();
        }
    }

    /// Forgets every held call: they never take effect.
    pub fn drop_held(&self) {
        lock(&self.state).held.clear();
    }

    /// Counts a call and decides its fate.
    fn call(&self, op: CallKind) -> Verdict {
        let mut state = lock(&self.state);
        *state.counts.of(op) += 1;
        let targeted = state.targeted.contains_key(&op);
        let slot = if targeted {
            state.targeted.get_mut(&op)
        } else {
            state.fault.as_mut()
        };
        let Some(fault) = slot else {
            return Verdict::Pass;
        };
        let (verdict, left) = match *fault {
            Fault::Down(kind) => (Verdict::Fail(kind), Some(*fault)),
            Fault::Next(n, kind) => (
                Verdict::Fail(kind),
                (n > 1).then_some(Fault::Next(n - 1, kind)),
            ),
            Fault::LostReplies(n) => (
                Verdict::LoseReply,
                (n > 1).then_some(Fault::LostReplies(n - 1)),
            ),
            Fault::Hang(n) => (Verdict::Hang, (n > 1).then_some(Fault::Hang(n - 1))),
        };
        match left {
            Some(f) => *fault = f,
            None if targeted => {
                state.targeted.remove(&op);
            }
            None => state.fault = None,
        }
        state.counts.failed += 1;
        verdict
    }

    /// Runs `f` on the inner cloud unless the call is failed; a hung call's
    /// effect is `later`, made only then (it owns what it needs).
    fn run<T>(
        &self,
        op: CallKind,
        what: &str,
        f: impl FnOnce() -> CloudResult<T>,
        later: impl FnOnce() -> Effect,
    ) -> CloudResult<T> {
        let name = op_name(op);
        match self.call(op) {
            Verdict::Pass => f(),
            Verdict::Fail(kind) => Err(injected(kind, name, what)),
            Verdict::LoseReply => {
                f()?;
                Err(injected(CloudErrorKind::Unreachable, name, what))
            }
            Verdict::Hang => {
                let effect = later();
                lock(&self.state).held.push((op, what.to_string(), effect));
                Err(injected(CloudErrorKind::Unreachable, name, what))
            }
        }
    }
}

fn op_name(op: CallKind) -> &'static str {
    match op {
        CallKind::Put => "put",
        CallKind::Get => "get",
        CallKind::Size => "size",
        CallKind::Delete => "delete",
        CallKind::List => "list",
        CallKind::Append => "append",
        CallKind::Read => "read",
        CallKind::Tier => "tier",
    }
}

fn injected(kind: CloudErrorKind, op: &'static str, what: &str) -> CloudError {
    CloudError::new(kind, op, what, "injected fault")
}

/// A read has no effect to hold.
fn nothing() -> Effect {
    Box::new(|| ())
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
        self.control.run(
            CallKind::Put,
            name,
            || self.inner.put(name, data),
            || {
                let (inner, name, data) = (self.inner.clone(), name.to_string(), data.to_vec());
                Box::new(move || {
                    let _ = inner.put(&name, &data);
                })
            },
        )
    }

    fn get(&self, name: &str) -> CloudResult<Vec<u8>> {
        self.control
            .run(CallKind::Get, name, || self.inner.get(name), nothing)
    }

    fn size(&self, name: &str) -> CloudResult<Option<u64>> {
        self.control
            .run(CallKind::Size, name, || self.inner.size(name), nothing)
    }

    fn delete(&self, name: &str) -> CloudResult<()> {
        self.control.run(
            CallKind::Delete,
            name,
            || self.inner.delete(name),
            || {
                let (inner, name) = (self.inner.clone(), name.to_string());
                Box::new(move || {
                    let _ = inner.delete(&name);
                })
            },
        )
    }

    fn list(&self) -> CloudResult<Vec<String>> {
        self.control
            .run(CallKind::List, "", || self.inner.list(), nothing)
    }

    fn stat(&self, name: &str) -> CloudResult<Option<super::ObjectStat>> {
        self.control
            .run(CallKind::Size, name, || self.inner.stat(name), nothing)
    }

    fn to_cold(&self, name: &str) -> CloudResult<()> {
        self.control
            .run(CallKind::Tier, name, || self.inner.to_cold(name), nothing)
    }

    fn to_hot(&self, name: &str) -> CloudResult<()> {
        self.control
            .run(CallKind::Tier, name, || self.inner.to_hot(name), nothing)
    }

    fn thaw(&self, name: &str) -> CloudResult<super::Tier> {
        self.control
            .run(CallKind::Tier, name, || self.inner.thaw(name), nothing)
    }

    fn thaw_wait(&self) -> &'static str {
        self.inner.thaw_wait()
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

    /// A held append: the batch lands at the numbers it would have had, if
    /// they are still free when it is released.
    fn held_append(&self, originator: Uuid, payloads: &[Vec<u8>]) -> Effect {
        let inner = self.inner.clone();
        let payloads = payloads.to_vec();
        let before = highest(&*inner);
        Box::new(move || {
            if let Ok(before) = before
                && highest(&*inner).is_ok_and(|now| now == before)
            {
                let _ = inner.append_batch(originator, &payloads);
            }
        })
    }
}

/// The highest number in a log (dense numbering: found by probing).
fn highest(log: &dyn EventLog) -> CloudResult<u64> {
    let present = |n: u64| -> CloudResult<bool> { Ok(!log.read_after(n - 1, 1)?.is_empty()) };
    let (mut lo, mut hi) = (0u64, 1u64);
    while present(hi)? {
        lo = hi;
        hi *= 2;
    }
    // Invariant: `lo` is present (or 0), `hi` is not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if present(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

impl EventLog for FaultyEventLog {
    fn append(&self, originator: Uuid, payload: &[u8]) -> CloudResult<u64> {
        self.control.run(
            CallKind::Append,
            "log",
            || self.inner.append(originator, payload),
            || self.held_append(originator, &[payload.to_vec()]),
        )
    }

    /// Counted as one append; a lost reply loses the whole batch's answer.
    fn append_batch(&self, originator: Uuid, payloads: &[Vec<u8>]) -> CloudResult<Vec<u64>> {
        self.control.run(
            CallKind::Append,
            "log",
            || self.inner.append_batch(originator, payloads),
            || self.held_append(originator, payloads),
        )
    }

    fn read_after(&self, after: u64, limit: usize) -> CloudResult<Vec<LogRecord>> {
        self.control.run(
            CallKind::Read,
            "log",
            || self.inner.read_after(after, limit),
            nothing,
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

    /// Put, get, size, delete and list round trips on an empty store.
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
            assert_eq!(store.size(name).unwrap(), Some(i as u64 * 1000), "{name}");
        }
        let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        expected.sort();
        let mut listed = store.list().unwrap();
        listed.sort();
        assert_eq!(listed, expected);

        store.put("0a", b"replaced").unwrap();
        assert_eq!(store.get("0a").unwrap(), b"replaced");
        assert_eq!(store.size("0a").unwrap(), Some(8));

        let missing = store.get("deadbeef").unwrap_err();
        assert_eq!(missing.kind, CloudErrorKind::NotFound, "{missing}");
        assert!(missing.is_not_found() && !missing.is_retryable());
        assert!(store.size("deadbeef").unwrap().is_none());

        store.delete("0a1b2c").unwrap();
        store.delete("0a1b2c").unwrap();
        assert!(store.size("0a1b2c").unwrap().is_none());
        assert!(store.get("0a1b2c").unwrap_err().is_not_found());
        assert!(!store.list().unwrap().contains(&"0a1b2c".to_string()));
    }

    /// Appends and reads on a new, empty log. `open` opens another instance
    /// of the same log (as another node or process would).
    pub fn event_log(open: &dyn Fn() -> Arc<dyn EventLog>) {
        event_log_with(open, true)
    }

    /// As `event_log`, for a store without transactions: a batch that
    /// races other writers may be interleaved with their records (each
    /// record still gets a new, dense, increasing number).
    pub fn event_log_without_transactions(open: &dyn Fn() -> Arc<dyn EventLog>) {
        event_log_with(open, false)
    }

    fn event_log_with(open: &dyn Fn() -> Arc<dyn EventLog>, atomic_batches: bool) {
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
        concurrent_appends(open, last(&*log), atomic_batches);
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
    fn concurrent_appends(open: &dyn Fn() -> Arc<dyn EventLog>, before: u64, atomic_batches: bool) {
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
                    if atomic_batches {
                        assert_eq!(
                            numbers,
                            (first..first + numbers.len() as u64).collect::<Vec<_>>(),
                            "a batch's numbers are consecutive"
                        );
                    } else {
                        assert!(numbers.is_sorted(), "a batch's numbers increase");
                    }
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
    use crate::cloud::{DirEventLog, DirObjectStore, MemEventLog, MemObjectStore};

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
            store.size("ab").unwrap_err().kind,
            CloudErrorKind::Throttled
        );
        assert_eq!(store.get("ab").unwrap_err().kind, CloudErrorKind::Throttled);
        assert!(store.size("ab").unwrap().is_none());
        assert!(
            store.get("ab").unwrap_err().is_not_found(),
            "the inner store answers again"
        );
        let counts = store.control().counts();
        assert_eq!((counts.sizes, counts.gets, counts.failed), (2, 2, 2));
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

    #[test]
    fn the_mem_cloud_conforms() {
        conformance::object_store(&MemObjectStore::new());
        let log: Arc<MemEventLog> = Arc::new(MemEventLog::new());
        conformance::event_log(&|| log.clone());
    }

    #[test]
    fn a_targeted_fault_hits_only_its_kind_of_call() {
        let store = FaultyObjectStore::new(Arc::new(MemObjectStore::new()));
        store
            .control()
            .inject_on(CallKind::Put, Fault::Next(1, CloudErrorKind::Server));
        store
            .control()
            .inject(Fault::Down(CloudErrorKind::Throttled));
        store
            .control()
            .inject_on(CallKind::Delete, Fault::LostReplies(1));
        assert_eq!(
            store.put("ab", b"x").unwrap_err().kind,
            CloudErrorKind::Server
        );
        assert_eq!(
            store.size("ab").unwrap_err().kind,
            CloudErrorKind::Throttled
        );
        assert_eq!(
            store.delete("ab").unwrap_err().kind,
            CloudErrorKind::Unreachable
        );
        store.control().heal();
        store.put("ab", b"x").unwrap();
        assert_eq!(store.get("ab").unwrap(), b"x");
    }

    #[test]
    fn a_hung_append_lands_later_only_on_the_numbers_it_would_have_had() {
        let mem = Arc::new(MemEventLog::new());
        let log = FaultyEventLog::new(mem.clone());
        let me = Uuid::new_v4();
        log.control().inject_on(CallKind::Append, Fault::Hang(2));
        assert_eq!(
            log.append_batch(me, &[b"a".to_vec(), b"b".to_vec()])
                .unwrap_err()
                .kind,
            CloudErrorKind::Unreachable
        );
        assert!(log.read_after(0, 10).unwrap().is_empty(), "not yet");
        log.control().release_held(0);
        assert_eq!(log.read_after(0, 10).unwrap().len(), 2, "it landed");
        // Overtaken by another append: its numbers are taken, it fails.
        log.append(me, b"c").unwrap_err();
        mem.append(me, b"d").unwrap();
        assert_eq!(log.control().held().len(), 1);
        log.control().release_held(0);
        let payloads: Vec<_> = mem.all().into_iter().map(|r| r.payload).collect();
        assert_eq!(payloads, [b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]);
        assert!(log.control().held().is_empty());
    }
}
