//! Where the core and the sync engine read the time: the system clock in
//! the daemon, a manual clock in the deterministic simulation, so every
//! event time (and the conflict decisions that depend on it) replays.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::meta::Nanos;

pub trait Clock: Send + Sync {
    /// Nanoseconds since the Unix epoch.
    fn now(&self) -> Nanos;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Nanos) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(start)))
    }

    pub fn advance(&self, by: Nanos) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }

    pub fn set(&self, at: Nanos) {
        self.0.store(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
    }
}
