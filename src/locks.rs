//! Every lock the crate takes comes from here, so a deterministic scheduler
//! can be swapped in for tests that explore interleavings.

pub use std::sync::{Condvar, Mutex, MutexGuard};

/// Locks a mutex, treating poisoning as fatal: a panic while holding the
/// tree lock means the in-memory state may be inconsistent, and continuing
/// could journal a corrupt state.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("lock poisoned by an earlier panic")
}
