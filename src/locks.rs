//! Every lock the crate takes comes from here, so a deterministic scheduler
//! can be swapped in for tests that explore interleavings.

pub use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks a mutex, treating poisoning as fatal: a panic while holding the
/// tree lock means the in-memory state may be inconsistent, and continuing
/// could journal a corrupt state.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("lock poisoned by an earlier panic")
}

/// Shares a lock that guards no data of its own (poisoning says nothing
/// about a `()`).
pub fn share(l: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes a lock that guards no data of its own alone.
pub fn exclude(l: &RwLock<()>) -> RwLockWriteGuard<'_, ()> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
