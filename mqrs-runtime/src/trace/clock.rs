//! Span timestamps: wall-clock time read off the CPU's time-stamp counter (`quanta`), kept in
//! step with the system clock. Every span and event mqrs records, its own and those `tracing`
//! opens in handlers, takes its times from here, so a child never starts before its parent
//! because two clocks disagreed.
//!
//! A traced request reads the time at every span's start and end, several times per request,
//! also for spans of traces the sampler skipped (kept if they fail or are slow). On this kind
//! of machine a system clock read costs about 30 ns and a counter read about 10 ns, a
//! measurable part of what tracing costs the gate; tracers built for low overhead read the
//! counter for the same reason. Where the CPU has no stable counter, `quanta` reads the
//! operating system's monotonic clock instead, and all of this still holds.
//!
//! How it stays in step: all threads share one anchor (a wall time, a counter reading and a
//! small rate correction), copied per thread and re-read when its generation changes. Once a
//! second the first thread to notice compares the mapping with the system clock and takes a new
//! anchor that continues the old mapping exactly, with a rate that closes the gap over the next
//! second. So time does not step back, not on one thread and not across threads, and follows
//! the system clock (NTP's slewing included) within microseconds. A gap over [`STEP`] means the
//! system clock was set: it is followed at once, backwards too, as every process's spans follow
//! it (a span across such a step gets a zero duration, never a negative one).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mqrs_base::sync::Locked;

/// How often the mapping is compared with the system clock.
const PERIOD_NS: u64 = 1_000_000_000;
/// A gap to the system clock larger than this is a step of the system clock, followed at once.
const STEP: u64 = 1_000_000;
/// Largest rate correction, in parts per billion (NTP slews at most 500 ppm).
const MAX_CORRECTION_PPB: i64 = 500_000;

/// The mapping from counter readings to wall time.
#[derive(Clone, Copy)]
struct Anchor {
    generation: u64,
    /// Wall time at `raw`, ns since the Unix epoch.
    wall_ns: u64,
    /// Counter reading the anchor was taken at.
    raw: u64,
    /// Rate correction in parts per billion of elapsed time.
    correction_ppb: i64,
}

impl Anchor {
    fn at(&self, clock: &quanta::Clock, raw: u64) -> u64 {
        let since = clock.delta_as_nanos(self.raw, raw);
        // The correction closes the gap over one period and then stops, however long the next
        // re-anchoring takes (a quiet process reads the time rarely).
        let steered = since.min(PERIOD_NS);
        let adjust = (i128::from(steered) * i128::from(self.correction_ppb) / 1_000_000_000) as i64;
        self.wall_ns
            .saturating_add(since)
            .saturating_add_signed(adjust)
    }
}

struct Shared {
    clock: quanta::Clock,
    generation: AtomicU64,
    anchor: Mutex<Anchor>,
}

fn system_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        let anchor = Anchor {
            generation: 1,
            wall_ns: system_ns(),
            raw,
            correction_ppb: 0,
        };
        Shared {
            clock,
            generation: AtomicU64::new(1),
            anchor: Mutex::new(anchor),
        }
    })
}

/// The anchor after `old`, taken now: continues `old`'s mapping and steers toward the system
/// clock over the next period. The counter and the system clock are read together here, so a
/// thread paused between its own reading and this one cannot skew the anchor.
fn next(old: &Anchor, clock: &quanta::Clock) -> Anchor {
    let raw = clock.raw();
    let system = system_ns();
    let mapped = old.at(clock, raw);
    let gap = system as i128 - mapped as i128;
    let (wall_ns, correction_ppb) = if gap.unsigned_abs() > u128::from(STEP) {
        (system, 0)
    } else {
        // `gap` ns to close over PERIOD_NS ns of elapsed time.
        let ppb = (gap * 1_000_000_000 / i128::from(PERIOD_NS)) as i64;
        (mapped, ppb.clamp(-MAX_CORRECTION_PPB, MAX_CORRECTION_PPB))
    };
    Anchor {
        generation: old.generation + 1,
        wall_ns,
        raw,
        correction_ppb,
    }
}

/// The current wall-clock time, for span and event timestamps.
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(now_ns())
}

/// The current wall-clock time in ns since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    thread_local! {
        static LOCAL: Cell<Option<Anchor>> = const { Cell::new(None) };
    }
    let s = shared();
    let raw = s.clock.raw();
    LOCAL.with(|local| {
        let generation = s.generation.load(Ordering::Acquire);
        let mut a = match local.get() {
            Some(a) if a.generation == generation => a,
            _ => {
                let a = *s.anchor.locked();
                local.set(Some(a));
                a
            }
        };
        if s.clock.delta_as_nanos(a.raw, raw) >= PERIOD_NS {
            // One thread re-anchors; the others keep the current mapping meanwhile.
            if let Ok(mut shared) = s.anchor.try_lock() {
                if shared.generation == a.generation {
                    *shared = next(&shared, &s.clock);
                    s.generation.store(shared.generation, Ordering::Release);
                }
                a = *shared;
                local.set(Some(a));
            }
        }
        a.at(&s.clock, raw)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap_to_system() -> Duration {
        let system = SystemTime::now();
        let ours = now();
        ours.duration_since(system).unwrap_or_else(|e| e.duration())
    }

    #[test]
    fn follows_the_system_clock_and_never_goes_back() {
        let mut last = now();
        for _ in 0..200_000 {
            let t = now();
            assert!(t >= last, "went back: {t:?} after {last:?}");
            last = t;
        }
        assert!(
            gap_to_system() < Duration::from_millis(2),
            "{:?}",
            gap_to_system()
        );
    }

    #[test]
    fn times_taken_on_two_threads_keep_their_order() {
        // A time read after another thread's read (ordered by a channel) is never earlier,
        // across re-anchoring.
        let (tx, rx) = std::sync::mpsc::channel::<SystemTime>();
        let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            while let Ok(t) = rx.recv() {
                let mine = now();
                assert!(mine >= t, "{mine:?} read after {t:?}");
                if back_tx.send(()).is_err() {
                    break;
                }
            }
        });
        let until = std::time::Instant::now() + Duration::from_millis(2300);
        while std::time::Instant::now() < until {
            tx.send(now()).expect("other thread alive");
            back_rx.recv().expect("other thread alive");
        }
        drop(tx);
        other.join().expect("no panic on the other thread");
    }

    #[test]
    fn the_rate_correction_stops_after_one_period() {
        let (clock, _mock) = quanta::Clock::mock();
        let a = Anchor {
            generation: 1,
            wall_ns: 1_000,
            raw: 0,
            correction_ppb: 500_000,
        };
        // Half a period in: half the period's correction.
        assert_eq!(a.at(&clock, PERIOD_NS / 2), 1_000 + PERIOD_NS / 2 + 250_000);
        // Ten periods in: one period's correction, not ten.
        assert_eq!(
            a.at(&clock, 10 * PERIOD_NS),
            1_000 + 10 * PERIOD_NS + 500_000
        );
    }

    #[test]
    fn measures_a_sleep_and_steers_to_a_gap() {
        let a = now();
        std::thread::sleep(Duration::from_millis(30));
        let slept = now().duration_since(a).unwrap_or_default();
        assert!(slept >= Duration::from_millis(29), "{slept:?}");
        assert!(slept < Duration::from_secs(2), "{slept:?}");

        let clock = quanta::Clock::new();
        let raw = clock.raw();
        let behind = Anchor {
            generation: 7,
            wall_ns: system_ns() - 200_000,
            raw,
            correction_ppb: 0,
        };
        let n = next(&behind, &clock);
        assert_eq!(n.generation, 8);
        assert!(n.correction_ppb > 100_000, "{}", n.correction_ppb);
        assert!(
            n.wall_ns <= system_ns(),
            "continues the old mapping, no jump"
        );
        let far = Anchor {
            wall_ns: system_ns() - 5_000_000_000,
            ..behind
        };
        let n = next(&far, &clock);
        assert_eq!(n.correction_ppb, 0);
        assert!(
            system_ns() - n.wall_ns < 1_000_000_000,
            "a set clock is followed at once"
        );
    }
}
