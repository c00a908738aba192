//! Spans on their way into the store. Each thread fills a small buffer of its own and hands it
//! over whole, so the store's lock is taken once per [`BATCH`] spans instead of once per span,
//! the spans of one request (which end on one thread, one after the other) are placed together,
//! and the traces they evict are freed together. Every read of the store first takes what
//! waits here, so a read sees every span inserted before it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mqrs_base::sync::Locked;

/// Spans a thread gathers before it takes the store's lock.
pub(super) const BATCH: usize = 32;

/// Buffers; threads are spread over them, so each is mostly used by one thread.
const SHARDS: usize = 16;

/// A span ready for the store: its compact form and what placing it needs.
pub(super) struct Ready {
    pub(super) trace_id: u128,
    pub(super) start_us: u64,
    pub(super) end_us: u64,
    /// Hash of the span's `session.id`, if it has one.
    pub(super) owner: Option<u64>,
    /// Hash of the span's `user.id`, if it has one.
    pub(super) user: Option<u64>,
    /// The span encoded by `codec`.
    pub(super) bytes: Vec<u8>,
}

/// One buffer, alone on its cache lines so that threads filling neighbours do not slow it,
/// with an emptied batch kept for reuse (a batch is a few KiB: allocating one each time costs
/// glibc a consolidation of its small free lists).
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Bufs>);

#[derive(Default)]
struct Bufs {
    filling: Vec<Ready>,
    spare: Vec<Ready>,
}

/// The buffers of one store: at most `SHARDS * BATCH` spans wait at any time.
#[derive(Default)]
pub(super) struct Pending {
    shards: [Shard; SHARDS],
}

impl Pending {
    /// Adds a span to this thread's buffer; returns the buffer's spans once it is full.
    pub(super) fn push(&self, ready: Ready) -> Option<Vec<Ready>> {
        let mut bufs = self.shards[shard_of_this_thread()].0.locked();
        if bufs.filling.capacity() == 0 {
            bufs.filling = std::mem::take(&mut bufs.spare);
            bufs.filling.reserve(BATCH);
        }
        bufs.filling.push(ready);
        (bufs.filling.len() >= BATCH).then(|| std::mem::take(&mut bufs.filling))
    }

    /// Keeps an emptied batch for this thread's next one.
    pub(super) fn recycle(&self, mut batch: Vec<Ready>) {
        batch.clear();
        if batch.capacity() < BATCH || batch.capacity() > 4 * BATCH {
            return;
        }
        let mut bufs = self.shards[shard_of_this_thread()].0.locked();
        if bufs.spare.capacity() == 0 {
            bufs.spare = batch;
        }
    }

    /// Everything waiting, buffer by buffer.
    pub(super) fn take_all(&self) -> Vec<Vec<Ready>> {
        self.shards
            .iter()
            .filter_map(|s| {
                let mut bufs = s.0.locked();
                (!bufs.filling.is_empty()).then(|| std::mem::take(&mut bufs.filling))
            })
            .collect()
    }
}

/// The buffer this thread fills: threads take the buffers in turn as they first insert.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}
