//! Locks taken whatever another holder did: a thread that panicked while holding a lock leaves
//! its data as it was, and mqrs's locked data (counters, maps of connections, queues) stays
//! usable, so every lock is taken past the poison mark in one place, here.
//!
//! ```
//! use std::sync::Mutex;
//! use mqrs_base::sync::Locked;
//! let m = Mutex::new(1);
//! *m.locked() += 1;
//! assert_eq!(*m.locked(), 2);
//! ```

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A lock taken even when another holder panicked.
pub trait Locked<T: ?Sized> {
    /// The guard, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A read-write lock taken even when another holder panicked.
pub trait RwLocked<T: ?Sized> {
    /// A read guard, poisoned or not.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard, poisoned or not.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLocked<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}
