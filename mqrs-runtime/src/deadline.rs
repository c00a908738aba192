//! The one deadline type: when a call must be answered, and the arithmetic every layer does
//! with it (time left, the sooner of two, has it passed, a future bounded by it). The wire's
//! form of it (milliseconds left) lives with the wire, in `transport::mqtt::wire`.

use std::future::Future;
use std::time::{Duration, Instant};

/// Longest time a call may be given, whatever it asks: a deadline further away is brought in
/// to this (an hour), so no timeout from config or from another process overflows the clock.
pub(crate) const LONGEST: Duration = Duration::from_secs(3600);

/// When a call must be answered: the caller stops waiting then, and the callee refuses work
/// that reaches it later.
///
/// ```
/// use std::time::Duration;
/// use mqrs_runtime::Deadline;
///
/// let d = Deadline::after(Duration::from_secs(3));
/// assert!(!d.has_passed());
/// assert!(d.left() <= Duration::from_secs(3));
/// assert_eq!(d.sooner(None), d);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now (at most an hour).
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::after_from(Instant::now(), timeout)
    }

    /// `timeout` from `start` (at most an hour).
    pub fn after_from(start: Instant, timeout: Duration) -> Deadline {
        Deadline(start + timeout.min(LONGEST))
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left before it; zero once it has passed.
    pub fn left(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Time from `start` to it; zero when it was already past at `start`.
    pub fn since(self, start: Instant) -> Duration {
        self.0.saturating_duration_since(start)
    }

    /// True once it has come.
    pub fn has_passed(self) -> bool {
        Instant::now() >= self.0
    }

    /// This deadline, or `other` when that comes sooner.
    pub fn sooner(self, other: Option<Deadline>) -> Deadline {
        other.map_or(self, |o| o.min(self))
    }

    /// Runs `f` until this deadline: its output, or `None` when the deadline came first (`f`
    /// is dropped then).
    pub(crate) async fn bound<F: Future>(self, f: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.0.into(), f).await.ok()
    }
}

impl From<Instant> for Deadline {
    fn from(at: Instant) -> Deadline {
        Deadline(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_never_further_than_an_hour_and_never_overflows() {
        let now = Instant::now();
        let far = Deadline::after_from(now, Duration::MAX);
        assert_eq!(far.since(now), LONGEST);
        assert_eq!(
            Deadline::after_from(now, Duration::ZERO).since(now),
            Duration::ZERO
        );
    }

    #[test]
    fn the_sooner_of_two_wins_and_a_past_one_has_no_time_left() {
        let now = Instant::now();
        let soon = Deadline::after_from(now, Duration::from_millis(10));
        let late = Deadline::after_from(now, Duration::from_secs(10));
        assert_eq!(late.sooner(Some(soon)), soon);
        assert_eq!(soon.sooner(Some(late)), soon);
        assert_eq!(late.sooner(None), late);
        let past = Deadline::after_from(now - Duration::from_secs(1), Duration::ZERO);
        assert!(past.has_passed());
        assert_eq!(past.left(), Duration::ZERO);
        assert_eq!(past.since(now), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_future_is_cut_at_the_deadline() {
        let d = Deadline::after(Duration::from_millis(20));
        assert_eq!(d.bound(async { 7 }).await, Some(7));
        let never = std::future::pending::<()>();
        assert_eq!(d.bound(never).await, None);
        assert!(d.has_passed());
    }
}
