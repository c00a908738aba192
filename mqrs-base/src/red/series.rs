//! One series: the calls of one operation seen from one side (a service serving a method, or a
//! service calling one), split by outcome (success, or each `error.type`), each outcome kept
//! in time slots: 10 s slots for the last hour, rolled up into 5 min slots for the last day.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use super::histogram::{self, Buckets};
use super::{Key, Memory};
use crate::sync::Locked;

/// Width of the recent slots, seconds.
pub const RECENT_SLOT_S: u64 = 10;
/// How long recent slots are kept before they are rolled up, seconds.
pub const RECENT_SPAN_S: u64 = 3600;
/// Width of the older slots, seconds.
pub const OLDER_SLOT_S: u64 = 300;
/// How long anything is kept, seconds.
pub const OLDER_SPAN_S: u64 = 86_400;
/// Most outcomes (success and error types) one series tells apart; later error types are
/// counted as [`OTHER_ERROR`].
pub const MAX_OUTCOMES: usize = 16;
/// The error type of errors past [`MAX_OUTCOMES`].
pub const OTHER_ERROR: &str = "_OTHER";

/// Calls in one time slot (or summed over several): count, total and extremes of their
/// durations, and the exponential histogram of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Calls.
    pub count: u64,
    /// Sum of their durations, ns.
    pub sum_ns: u64,
    /// Shortest duration, ns (0 when `count` is 0).
    pub min_ns: u64,
    /// Longest duration, ns.
    pub max_ns: u64,
    /// The durations in exponential buckets.
    pub buckets: Buckets,
}

impl Tally {
    /// Counts one call of `ns` (in bucket `index`); `grow` false keeps the buckets' memory as
    /// it is. Returns the
    /// bytes the buckets grew by.
    fn add(&mut self, index: i32, ns: u64, grow: bool) -> usize {
        self.min_ns = if self.count == 0 {
            ns
        } else {
            self.min_ns.min(ns)
        };
        self.max_ns = self.max_ns.max(ns);
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.buckets.add(index, 1, grow)
    }

    /// Adds `other` in; returns the bytes the buckets grew by.
    pub fn merge(&mut self, other: &Tally, grow: bool) -> usize {
        if other.count == 0 {
            return 0;
        }
        self.min_ns = if self.count == 0 {
            other.min_ns
        } else {
            self.min_ns.min(other.min_ns)
        };
        self.max_ns = self.max_ns.max(other.max_ns);
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.buckets.merge(&other.buckets, grow)
    }

    /// The `p`-th percentile (0..=100, nearest rank), in ns: the middle of its bucket, kept
    /// within the shortest and longest durations seen. 0 when empty.
    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max_ns;
        }
        if rank == 1 {
            return self.min_ns;
        }
        match self.buckets.bucket_of_rank(rank) {
            Some(i) => histogram::middle_ns(i).clamp(self.min_ns, self.max_ns),
            None => self.max_ns,
        }
    }

    /// Mean duration, ns.
    pub fn mean_ns(&self) -> u64 {
        self.sum_ns.checked_div(self.count).unwrap_or(0)
    }

    fn heap_bytes(&self) -> usize {
        self.buckets.heap_bytes()
    }
}

/// One slot of time.
#[derive(Debug, Clone)]
struct Slot {
    start_s: u64,
    tally: Tally,
}

/// What a slot costs beside its buckets.
const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Calls since the process started, in classic (Prometheus) buckets, for counters that never
/// go down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls.
    pub count: u64,
    /// Sum of their durations, ns.
    pub sum_ns: u64,
    /// Calls per classic bucket ([`histogram::CLASSIC_BOUNDS`], then `+Inf`), not cumulative.
    pub classic: [u64; 17],
}

/// One outcome of a series.
#[derive(Debug)]
struct Outcome {
    /// `None` for success, else the `error.type`.
    error: Option<Arc<str>>,
    recent: VecDeque<Slot>,
    older: VecDeque<Slot>,
    totals: Totals,
}

impl Outcome {
    fn new(error: Option<Arc<str>>) -> Outcome {
        Outcome {
            error,
            recent: VecDeque::new(),
            older: VecDeque::new(),
            totals: Totals::default(),
        }
    }
}

/// The calls of one operation from one side; see the module docs. Each thread counts into a
/// shard of its own (one per core, up to 8), so two cores counting the same hot route do not
/// pass one lock and its cache line back and forth; readers add the shards up.
#[derive(Debug)]
pub struct Series {
    key: Key,
    id: u32,
    shards: Box<[Shard]>,
    mem: Arc<Memory>,
}

/// One shard of a series, on a cache line of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Vec<Outcome>>);

/// Most shards a series has.
const MAX_SHARDS: usize = 8;

/// How many shards a series has on this machine: one per core rounded up to a power of two
/// (a thread finds its shard with a mask), at most [`MAX_SHARDS`].
fn shard_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .next_power_of_two()
            .clamp(1, MAX_SHARDS)
    })
}

/// This thread's shard number (taken round robin when the thread first counts).
fn my_shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed);
    }
    MINE.with(|m| *m)
}

/// One outcome's calls over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRead {
    /// `None` for success, else the `error.type`.
    pub error: Option<Arc<str>>,
    /// The calls.
    pub tally: Tally,
}

impl Series {
    pub(super) fn new(key: Key, id: u32, mem: Arc<Memory>) -> Series {
        Series {
            key,
            id,
            shards: (0..shard_count())
                .map(|_| Shard(Mutex::new(vec![Outcome::new(None)])))
                .collect(),
            mem,
        }
    }

    /// This thread's shard.
    fn shard(&self) -> &Mutex<Vec<Outcome>> {
        &self.shards[my_shard() & (self.shards.len() - 1)].0
    }

    /// What this series counts.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// False when its registry counts nothing.
    pub fn enabled(&self) -> bool {
        self.mem.enabled
    }

    /// Its number in its registry: small, and never reused there.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Counts one call that took `ns` and ended at `now_s` (Unix seconds), with `error` its
    /// `error.type` when it failed.
    pub fn record_at(&self, now_s: u64, ns: u64, error: Option<&str>) {
        if !self.mem.enabled {
            return;
        }
        let mut g = self.shard().locked();
        let o = outcome(&mut g, error);
        let grow = self.mem.has_room();
        let (slot, new_bytes) = slot_at(o, now_s, grow, &self.mem);
        let index = histogram::index_of(ns);
        let grew = slot.tally.add(index, ns, grow) + new_bytes;
        let t = &mut o.totals;
        t.count += 1;
        t.sum_ns = t.sum_ns.saturating_add(ns);
        t.classic[histogram::classic_index_in(index, ns)] += 1;
        drop(g);
        self.mem.charge(grew);
    }

    /// Adds calls counted elsewhere (another process's export) into the slot of `at_s`.
    pub fn merge_at(&self, at_s: u64, error: Option<&str>, tally: &Tally, totals: &Totals) {
        if tally.count == 0 || !self.mem.enabled {
            return;
        }
        let mut g = self.shard().locked();
        let o = outcome(&mut g, error);
        let grow = self.mem.has_room();
        let (slot, new_bytes) = slot_at(o, at_s, grow, &self.mem);
        let grew = slot.tally.merge(tally, grow) + new_bytes;
        let t = &mut o.totals;
        t.count += totals.count;
        t.sum_ns = t.sum_ns.saturating_add(totals.sum_ns);
        for (a, b) in t.classic.iter_mut().zip(totals.classic) {
            *a += b;
        }
        drop(g);
        self.mem.charge(grew);
    }

    /// Each outcome's calls in slots that overlap `from_s..to_s` (Unix seconds); a window
    /// takes whole slots, so its edges round out to 10 s within the last hour and to 5 min
    /// before that. Outcomes with no calls in it are left out.
    pub fn read(&self, from_s: u64, to_s: u64) -> Vec<OutcomeRead> {
        let mut out: Vec<OutcomeRead> = Vec::new();
        for shard in self.shards.iter() {
            let g = shard.0.locked();
            for o in g.iter() {
                let mut tally = Tally::default();
                for (slots, width) in [(&o.older, OLDER_SLOT_S), (&o.recent, RECENT_SLOT_S)] {
                    let first = slots.partition_point(|s| s.start_s + width <= from_s);
                    for s in slots.range(first..).take_while(|s| s.start_s < to_s) {
                        tally.merge(&s.tally, true);
                    }
                }
                if tally.count == 0 {
                    continue;
                }
                match out.iter_mut().find(|r| r.error == o.error) {
                    Some(r) => {
                        r.tally.merge(&tally, true);
                    }
                    None => out.push(OutcomeRead {
                        error: o.error.clone(),
                        tally,
                    }),
                }
            }
        }
        // Success first, then the error types in the order first seen.
        out.sort_by_key(|r| r.error.is_some());
        out
    }

    /// The recent slots that start in `from_s..to_s`, each outcome's on its own: what an
    /// exporter sends once a slot is complete. Each item is (slot start, error type, calls).
    pub fn recent_slots(&self, from_s: u64, to_s: u64) -> Vec<(u64, Option<Arc<str>>, Tally)> {
        let mut out: Vec<(u64, Option<Arc<str>>, Tally)> = Vec::new();
        for shard in self.shards.iter() {
            let g = shard.0.locked();
            for o in g.iter() {
                let first = o.recent.partition_point(|s| s.start_s < from_s);
                for s in o.recent.range(first..).take_while(|s| s.start_s < to_s) {
                    match out
                        .iter_mut()
                        .find(|(t, e, _)| *t == s.start_s && *e == o.error)
                    {
                        Some((_, _, t)) => {
                            t.merge(&s.tally, true);
                        }
                        None => out.push((s.start_s, o.error.clone(), s.tally.clone())),
                    }
                }
            }
        }
        out.sort_by_key(|a| (a.0, a.1.is_some()));
        out
    }

    /// Each outcome's calls since the process started.
    pub fn totals(&self) -> Vec<(Option<Arc<str>>, Totals)> {
        let mut out: Vec<(Option<Arc<str>>, Totals)> = Vec::new();
        for shard in self.shards.iter() {
            let g = shard.0.locked();
            for o in g.iter().filter(|o| o.totals.count > 0) {
                match out.iter_mut().find(|(e, _)| *e == o.error) {
                    Some((_, t)) => {
                        t.count += o.totals.count;
                        t.sum_ns = t.sum_ns.saturating_add(o.totals.sum_ns);
                        for (a, b) in t.classic.iter_mut().zip(o.totals.classic) {
                            *a += b;
                        }
                    }
                    None => out.push((o.error.clone(), o.totals.clone())),
                }
            }
        }
        out.sort_by_key(|(e, _)| e.is_some());
        out
    }

    /// Drops slots older than a day and rolls recent slots older than an hour up, as of
    /// `now_s`; recording does this too, this is for series no one records into any more.
    pub fn age(&self, now_s: u64) {
        let mut freed = 0;
        for shard in self.shards.iter() {
            let mut g = shard.0.locked();
            for o in g.iter_mut() {
                freed += roll(o, now_s);
            }
        }
        self.mem.release(freed);
    }
}

/// The outcome of `error`, added if new (past [`MAX_OUTCOMES`], the shared `_OTHER` one).
fn outcome<'a>(outcomes: &'a mut Vec<Outcome>, error: Option<&str>) -> &'a mut Outcome {
    let Some(e) = error else {
        return &mut outcomes[0];
    };
    let i = match outcomes.iter().position(|o| o.error.as_deref() == Some(e)) {
        Some(i) => i,
        None if outcomes.len() < MAX_OUTCOMES - 1 => {
            outcomes.push(Outcome::new(Some(Arc::from(e))));
            outcomes.len() - 1
        }
        None => match outcomes
            .iter()
            .position(|o| o.error.as_deref() == Some(OTHER_ERROR))
        {
            Some(i) => i,
            None => {
                outcomes.push(Outcome::new(Some(Arc::from(OTHER_ERROR))));
                outcomes.len() - 1
            }
        },
    };
    &mut outcomes[i]
}

/// The slot `at_s` falls in, made if missing (when `grow`; else the nearest one there is),
/// and the bytes a new slot took. Slots older than an hour go to the 5 min slots.
fn slot_at<'a>(o: &'a mut Outcome, at_s: u64, grow: bool, mem: &Memory) -> (&'a mut Slot, usize) {
    let recent_start = at_s - at_s % RECENT_SLOT_S;
    // The common case: the newest slot.
    if o.recent.back().is_some_and(|s| s.start_s == recent_start) {
        let last = o.recent.len() - 1;
        return (&mut o.recent[last], 0);
    }
    let newest = o.recent.back().map_or(0, |s| s.start_s);
    if recent_start > newest {
        mem.release(roll(o, at_s));
    }
    let now_s = newest.max(recent_start);
    let (slots, start) = if recent_start + RECENT_SPAN_S > now_s {
        (&mut o.recent, recent_start)
    } else {
        (&mut o.older, at_s - at_s % OLDER_SLOT_S)
    };
    let i = slots.partition_point(|s| s.start_s < start);
    if slots.get(i).is_some_and(|s| s.start_s == start) {
        return (&mut slots[i], 0);
    }
    if !grow && !slots.is_empty() {
        // No room for another slot: the nearest one counts it.
        mem.squeezed.fetch_add(1, Relaxed);
        let i = i.min(slots.len() - 1);
        return (&mut slots[i], 0);
    }
    slots.insert(
        i,
        Slot {
            start_s: start,
            tally: Tally::default(),
        },
    );
    (&mut slots[i], SLOT_BYTES)
}

/// Rolls recent slots older than an hour before `now_s` into the 5 min slots and drops 5 min
/// slots older than a day; returns the bytes freed.
fn roll(o: &mut Outcome, now_s: u64) -> usize {
    let mut freed = 0;
    while let Some(s) = o.recent.front() {
        if s.start_s + RECENT_SPAN_S > now_s {
            break;
        }
        let Some(s) = o.recent.pop_front() else { break };
        freed += SLOT_BYTES + s.tally.heap_bytes();
        let start = s.start_s - s.start_s % OLDER_SLOT_S;
        match o.older.back_mut() {
            Some(last) if last.start_s == start => {
                freed = freed.saturating_sub(last.tally.merge(&s.tally, true));
            }
            _ => {
                freed = freed.saturating_sub(SLOT_BYTES + s.tally.heap_bytes());
                o.older.push_back(Slot {
                    start_s: start,
                    tally: s.tally,
                });
            }
        }
    }
    while o
        .older
        .front()
        .is_some_and(|s| s.start_s + OLDER_SPAN_S <= now_s)
    {
        if let Some(s) = o.older.pop_front() {
            freed += SLOT_BYTES + s.tally.heap_bytes();
        }
    }
    freed
}
