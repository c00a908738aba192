//! Budgets: the one type for every limit on what many holders may take at once, whether it is
//! counted in calls, connections or bytes. A holder takes a [`Share`] and gives it back by
//! dropping it.
//!
//! ```
//! use mqrs_base::budget::Budget;
//!
//! let bytes = Budget::new(1000);
//! let a = bytes.try_take(600).expect("room");
//! assert!(bytes.try_take(600).is_none(), "only 400 left");
//! // A holder larger than the whole budget takes all of it: served alone, never refused forever.
//! drop(a);
//! let big = bytes.try_take(5000).expect("the whole budget");
//! assert_eq!(big.amount(), 1000);
//! assert_eq!(bytes.in_use(), 1000);
//! ```

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A limit on what holders take at once; clones share it.
#[derive(Clone, Debug)]
pub struct Budget {
    units: Arc<Semaphore>,
    size: usize,
}

/// What one holder took of a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Share(OwnedSemaphorePermit);

impl Share {
    /// How many units it holds.
    pub fn amount(&self) -> usize {
        self.0.num_permits()
    }
}

impl Budget {
    /// A budget of `size` units: at least one, at most `u32::MAX` (what one share can hold).
    pub fn new(size: usize) -> Budget {
        let size = size.clamp(1, u32::MAX as usize);
        Budget {
            units: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Its size in units.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Units held now.
    pub fn in_use(&self) -> usize {
        self.size - self.units.available_permits().min(self.size)
    }

    /// `n` units at most the whole budget, as the semaphore counts them.
    fn clip(&self, n: usize) -> u32 {
        // `size` is at most u32::MAX, so this never saturates.
        u32::try_from(n.min(self.size)).unwrap_or(u32::MAX)
    }

    /// `n` units if they are free now (a holder larger than the budget takes all of it);
    /// `None` when they are not.
    pub fn try_take(&self, n: usize) -> Option<Share> {
        self.units
            .clone()
            .try_acquire_many_owned(self.clip(n))
            .ok()
            .map(Share)
    }

    /// Waits for `n` units (a holder larger than the budget takes all of it); `None` only once
    /// the budget is closed.
    pub async fn take(&self, n: usize) -> Option<Share> {
        let n = self.clip(n);
        self.units
            .clone()
            .acquire_many_owned(n)
            .await
            .ok()
            .map(Share)
    }

    /// Waits until no one holds any of it, and takes it all: how a stopping service waits for
    /// the work in flight to finish.
    pub async fn take_all(&self) -> Option<Share> {
        self.take(self.size).await
    }

    /// Refuses every later take, at once and when waited for; shares held stay valid.
    pub fn close(&self) {
        self.units.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_is_at_least_one_and_a_take_at_most_the_whole() {
        let b = Budget::new(0);
        assert_eq!(b.size(), 1);
        let s = b.try_take(0).expect("nothing is always free");
        assert_eq!(s.amount(), 0);
        let all = b.try_take(usize::MAX).expect("all of it");
        assert_eq!((all.amount(), b.in_use()), (1, 1));
        assert!(b.try_take(1).is_none());
        drop(all);
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn a_waiting_take_gets_its_turn_and_take_all_waits_for_every_holder() {
        let b = Budget::new(10);
        let first = b.take(7).await.expect("open");
        let clone = b.clone();
        let waiting = tokio::spawn(async move { clone.take(5).await.map(|s| s.amount()) });
        let clone = b.clone();
        let drain = tokio::spawn(async move { clone.take_all().await.map(|s| s.amount()) });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished() && !drain.is_finished());
        drop(first);
        assert_eq!(waiting.await.expect("task"), Some(5));
        assert_eq!(drain.await.expect("task"), Some(10));
        b.close();
        assert!(b.take(1).await.is_none());
        assert!(b.try_take(1).is_none());
    }
}
