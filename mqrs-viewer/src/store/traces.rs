//! [`TraceStore`]: the bounded in-memory store of finished spans, its traces in arrival order,
//! each held as one buffer of encoded spans.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use mqrs_base::history::History;
use mqrs_base::red::Red;
use mqrs_base::sync::Locked;

use super::codec::{self, SPAN_OVERHEAD};
use super::limits;
use super::model::{StoreLimits, StoreStats, StoredSpan, Tag};
use super::players::{Key, Players};
use super::{disk, pending};
use mqrs_base::hash::KeyedHash;

/// One trace as the store holds it: its spans encoded one after the other (`codec`), so the
/// whole trace is one allocation.
#[derive(Default)]
pub(super) struct Held {
    pub(super) data: Vec<u8>,
    pub(super) spans: usize,
    pub(super) bytes: usize,
    /// The players (hashed user and session ids) its spans carry, each once.
    pub(super) players: Vec<Key>,
    pub(super) start_us: u64,
    pub(super) end_us: u64,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) traces: HashMap<u128, Held, KeyedHash>,
    /// Trace ids of each user and session.
    pub(super) players: Players,
    pub(super) order: VecDeque<u128>,
    pub(super) bytes: usize,
    pub(super) spans: usize,
    /// Spans accepted since start.
    pub(super) received: u64,
    /// Spans evicted since start.
    pub(super) evicted: u64,
    /// Spans refused since start.
    pub(super) refused: u64,
}

impl std::fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStore")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The bounded in-memory store of finished spans.
pub struct TraceStore {
    pub(super) inner: Mutex<Inner>,
    pub(super) limits: StoreLimits,
    pub(super) pending: pending::Pending,
    /// Hashes `session.id` and `user.id` values into player keys.
    pub(super) owner_hash: KeyedHash,
    /// Spans refused as conflicting or limited; what the OTLP collector feeding this store
    /// took in and refused.
    pub(crate) counters: StoreCounters,
    /// What the viewer's HTTP bounds turned away.
    pub(crate) viewer_http: Arc<crate::http::limits::HttpCounters>,
    /// What the collector's HTTP bounds turned away.
    pub(crate) collector_http: Arc<crate::http::limits::HttpCounters>,
    /// The log that keeps the store across restarts, when it has a data directory.
    pub(super) journal: Option<Mutex<disk::Journal>>,
    /// Where encoded spans' attribute lists go, when their source reuses them.
    pub(super) recycle_tags: OnceLock<fn(Vec<Tag>)>,
    /// Every call counted where it happened, sampled or not: this process's own and what the
    /// collector takes in from others (`POST /v1/metrics`).
    pub(crate) red: Arc<Red>,
    /// Every gate request of every connection, when the embedding process keeps them.
    pub(crate) history: Option<Arc<History>>,
}

/// Buffers of evicted traces each thread keeps for the spans it encodes next (about one batch's
/// evictions), at most this many, each of at most [`SPARE_MAX_BYTES`]: under 128 KiB a thread,
/// outside the store's count.
pub(super) const SPARE_BUFFERS: usize = 32;
pub(super) const SPARE_MAX_BYTES: usize = 4 << 10;

thread_local! {
    pub(super) static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer for a span of `len` bytes: an evicted trace's when this thread has one of
/// that size or up to 64 bytes more (a store counts its traces' bytes, not their buffers'
/// spare room), else a new one. Freeing an evicted trace's buffer reads memory no core has
/// touched since the trace was stored (the allocator's headers beside it): in a full store that
/// was the largest part of placing a span. Filling the buffer again only writes there.
pub(super) fn spare_buffer(len: usize) -> Vec<u8> {
    let reused = SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .filter(|b| (len..=len + 64).contains(&b.capacity()));
    match reused {
        Some(mut b) => {
            b.clear();
            b
        }
        None => Vec::with_capacity(len),
    }
}

/// Keeps `buffers` (of evicted traces) for [`spare_buffer`], up to [`SPARE_BUFFERS`] of them
/// and none larger than [`SPARE_MAX_BYTES`]; the rest are freed.
pub(super) fn keep_spare_buffers(buffers: impl Iterator<Item = Vec<u8>>) {
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        for b in buffers {
            if s.len() < SPARE_BUFFERS && (1..=SPARE_MAX_BYTES).contains(&b.capacity()) {
                s.push(b);
            }
        }
    });
}

mqrs_base::counters! {
    /// The counters behind [`StoreStats`] that are not kept under the store's lock.
    pub(crate) struct StoreCounters => StoreStats {
        spans_conflicting,
        spans_limited,
        otlp_requests,
        otlp_rejected,
        otlp_future_spans,
    }
}

impl TraceStore {
    /// An empty store with these caps.
    pub fn new(limits: StoreLimits) -> Self {
        TraceStore {
            inner: Mutex::new(Inner::default()),
            limits,
            pending: pending::Pending::default(),
            owner_hash: KeyedHash::default(),
            counters: StoreCounters::default(),
            viewer_http: Arc::default(),
            collector_http: Arc::default(),
            journal: None,
            recycle_tags: OnceLock::new(),
            red: Arc::default(),
            history: None,
        }
    }

    /// The store showing the RED metrics of `red` (the embedding process's registry).
    pub fn with_red(mut self, red: Arc<Red>) -> Self {
        self.red = red;
        self
    }

    /// The store showing the request history `history` (the embedding process's gate's).
    pub fn with_history(mut self, history: Option<Arc<History>>) -> Self {
        self.history = history;
        self
    }

    /// The request history the viewer shows, when the embedding process keeps one.
    pub fn history(&self) -> Option<&Arc<History>> {
        self.history.as_ref()
    }

    /// The RED metrics the viewer shows: the embedding process counts its calls here.
    pub fn red(&self) -> &Arc<Red> {
        &self.red
    }

    /// Hands each span's attribute list, once the span is encoded, to `recycle` instead of
    /// freeing it (a span source that reuses its lists sets this once; later calls are
    /// ignored).
    pub fn set_tag_recycler(&self, recycle: fn(Vec<Tag>)) {
        let _ = self.recycle_tags.set(recycle);
    }

    /// A store kept across restarts in `dir`: what the logs there hold is read back first
    /// (the caps apply as it enters), then every span placed is logged. See `disk`.
    pub fn persistent(limits: StoreLimits, dir: &std::path::Path) -> std::io::Result<Arc<Self>> {
        Self::persistent_with(limits, dir, Arc::default(), None)
    }

    /// [`TraceStore::persistent`] showing the RED metrics of `red` and the request `history`.
    pub fn persistent_with(
        limits: StoreLimits,
        dir: &std::path::Path,
        red: Arc<Red>,
        history: Option<Arc<History>>,
    ) -> std::io::Result<Arc<Self>> {
        let mut store = TraceStore::new(limits).with_red(red).with_history(history);
        let mut bad = 0u64;
        let read = if dir.exists() {
            disk::replay(dir, |trace_id, bytes| {
                match codec::decode_one(bytes, trace_id) {
                    Some(span) => store.insert(span),
                    None => bad += 1,
                }
            })?
        } else {
            disk::Replayed::default()
        };
        drop(store.lock());
        let keep = (limits.max_bytes as u64)
            .saturating_mul(2)
            .max(2 * disk::SEGMENT_BYTES);
        store.journal = Some(Mutex::new(disk::Journal::open(
            dir,
            disk::SEGMENT_BYTES,
            keep,
        )?));
        let held = store.stats();
        tracing::info!(
            dir = %dir.display(),
            spans_read = read.records,
            undecodable = bad,
            damaged_stretches = read.damaged,
            skipped_bytes = read.skipped_bytes,
            already_held = held.spans_conflicting,
            traces = held.traces,
            spans = held.spans,
            "trace store read back from its data directory"
        );
        // Spans wait in per-thread batches until one fills; on a quiet app that can take long,
        // so once a second they are placed (and so logged) whatever their number.
        let store = Arc::new(store);
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("mqrs-trace-flush".into())
            .spawn(move || loop {
                std::thread::sleep(disk::FLUSH_EVERY);
                let Some(s) = weak.upgrade() else { return };
                if s.journal.as_ref().is_some_and(|j| j.locked().is_closed()) {
                    return;
                }
                drop(s.lock());
            })?;
        Ok(store)
    }

    /// The store's caps.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// True when the store is kept in a data directory.
    pub fn is_persistent(&self) -> bool {
        self.journal.is_some()
    }

    /// Places every span waiting and, for a store with a data directory, writes and syncs its
    /// log (a clean stop loses nothing). Spans inserted afterwards are kept in memory only.
    pub fn close(&self) {
        drop(self.lock());
        if let Some(j) = &self.journal {
            j.locked().close();
        }
    }

    /// The store for reading: spans still waiting to enter are placed first.
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        for batch in self.pending.take_all() {
            self.place_all(batch);
        }
        self.lock_inner()
    }

    pub(super) fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data; keep serving.
        self.inner.locked()
    }

    /// Adds a finished span, evicting the oldest traces when a cap is exceeded. The per-span
    /// limits (`limits`) apply first. A span that names itself as its parent is refused, and
    /// so is one whose trace already holds its span id (see `place`); both are counted.
    pub fn insert(&self, mut span: StoredSpan) {
        if span.parent_span_id == Some(span.span_id) {
            self.counters
                .spans_conflicting
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut dropped = limits::counts(&mut span);
        // Encoded here, on the thread that ended the span, outside every lock, into this
        // thread's scratch buffer and then copied once into a buffer of about its size (an
        // evicted trace's, see `spare_buffer`; the first span of a trace becomes the trace's
        // own buffer); the span's own allocations are freed at once, while they are still in
        // this core's cache. A span over the byte budget, or one that lost something to a
        // limit, is encoded again once that is applied and marked on it.
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut encode = |span: &mut StoredSpan| {
            SCRATCH
                .try_with(|b| {
                    let mut b = b.borrow_mut();
                    b.clear();
                    codec::encode(span, &mut b);
                    if b.len() > limits::MAX_SPAN_BYTES {
                        dropped += limits::budget(span);
                    }
                    if dropped.any() {
                        std::mem::take(&mut dropped).mark(span);
                        self.counters.spans_limited.fetch_add(1, Ordering::Relaxed);
                        b.clear();
                        codec::encode(span, &mut b);
                    }
                    let mut bytes = spare_buffer(b.len());
                    bytes.extend_from_slice(&b);
                    // A huge span's buffer is not kept for the life of the thread.
                    if b.capacity() > 64 << 10 {
                        *b = Vec::new();
                    }
                    bytes
                })
                .ok()
        };
        let bytes = encode(&mut span).unwrap_or_else(|| {
            // The thread is ending and its buffer is gone (a span dropped by another
            // thread-local's destructor): encode without it.
            dropped += limits::budget(&mut span);
            if dropped.any() {
                dropped.mark(&mut span);
                self.counters.spans_limited.fetch_add(1, Ordering::Relaxed);
            }
            let mut b = Vec::new();
            codec::encode(&span, &mut b);
            b
        });
        let ready = pending::Ready {
            trace_id: span.trace_id,
            start_us: span.start_us,
            end_us: span.start_us.saturating_add(span.duration_us),
            owner: span
                .tag("session.id")
                .map(|v| self.player_hash(&v.as_str())),
            user: span.tag("user.id").map(|v| self.player_hash(&v.as_str())),
            bytes,
        };
        let tags = std::mem::take(&mut span.tags);
        drop(span);
        if let Some(recycle) = self.recycle_tags.get() {
            recycle(tags);
        }
        if let Some(batch) = self.pending.push(ready) {
            self.place_all(batch);
        }
    }

    /// The hash a `user.id` or `session.id` value is indexed under.
    pub(super) fn player_hash(&self, value: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.owner_hash, value)
    }

    /// Places `batch` under one hold of the lock. The traces it evicts are freed after the
    /// lock is released, each in one piece.
    pub(super) fn place_all(&self, mut batch: Vec<pending::Ready>) {
        // The list of evicted traces is this thread's, reused: made afresh it grows to a few
        // KiB per batch, which costs glibc a consolidation of its small free lists each time.
        thread_local! {
            static EVICTED: std::cell::RefCell<Vec<Held>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut evicted = EVICTED
            .try_with(|e| std::mem::take(&mut *e.borrow_mut()))
            .unwrap_or_default();
        let mut g = self.lock_inner();
        match &self.journal {
            None => {
                for ready in &mut batch {
                    self.place(&mut g, ready, &mut evicted);
                }
            }
            Some(j) => {
                // Only the spans stored are logged, in the order they were placed.
                batch.retain_mut(|ready| self.place(&mut g, ready, &mut evicted));
                j.locked().append(batch);
                batch = Vec::new();
            }
        }
        drop(g);
        keep_spare_buffers(evicted.drain(..).map(|t| t.data));
        if evicted.capacity() <= 4 * pending::BATCH {
            let _ = EVICTED.try_with(|e| *e.borrow_mut() = evicted);
        }
        self.pending.recycle(batch);
    }

    /// Places one span, evicting into `evicted` what the caps require; false when a cap
    /// refused it. Without a journal (which logs the span's bytes after), the first span of a
    /// trace gives its buffer to the trace.
    pub(super) fn place(
        &self,
        inner: &mut Inner,
        span: &mut pending::Ready,
        evicted: &mut Vec<Held>,
    ) -> bool {
        let size = span.bytes.len() + SPAN_OVERHEAD;
        if size > self.limits.max_bytes {
            inner.refused += 1;
            return false;
        }
        let is_new = !inner.traces.contains_key(&span.trace_id);
        if is_new {
            if let Some(o) = span.owner.map(Key::Session) {
                // A session at its share makes room from its own traces first.
                let cap = self.limits.max_traces_per_session.max(1);
                while inner.players.count(o) >= cap {
                    // Every removal keeps the lists exact, so the oldest is held.
                    match inner
                        .players
                        .oldest(o)
                        .and_then(|id| self.remove(inner, id))
                    {
                        Some(t) => evicted.push(t),
                        None => {
                            inner.players.forget(o);
                            break;
                        }
                    }
                }
                // Traces taken out for a session stay in `order` until evicted from its front;
                // when they pile up, drop them so `order` stays about the size of the store.
                if inner.order.len() > 2 * inner.traces.len() + 1024 {
                    let Inner { order, traces, .. } = inner;
                    order.retain(|id| traces.contains_key(id));
                }
            }
            while inner.traces.len() >= self.limits.max_traces.max(1) {
                match self.evict_oldest(inner) {
                    Some(t) => evicted.push(t),
                    None => break,
                }
            }
        }
        while inner.bytes + size > self.limits.max_bytes {
            // Step past traces already taken out (by a session's share) to the oldest held.
            while inner
                .order
                .front()
                .is_some_and(|id| !inner.traces.contains_key(id))
            {
                inner.order.pop_front();
            }
            if inner.order.front() == Some(&span.trace_id) {
                // Only this trace is left to evict: refuse the span rather than the trace.
                inner.refused += 1;
                return false;
            }
            match self.evict_oldest(inner) {
                Some(t) => evicted.push(t),
                None => break,
            }
        }
        let trace = match inner.traces.entry(span.trace_id) {
            Entry::Occupied(e) => {
                let t = e.into_mut();
                // Checked before the scan below, so a full trace costs nothing more per span.
                if t.spans >= self.limits.max_spans_per_trace {
                    inner.refused += 1;
                    return false;
                }
                // A second span with an id the trace holds would make its tree a cycle or
                // merge a stranger's span into it: refused, the first one stays.
                let id = span.bytes.get(4..12).and_then(|b| b.try_into().ok());
                if id.is_some_and(|id| codec::holds_span(&t.data, u64::from_le_bytes(id))) {
                    self.counters
                        .spans_conflicting
                        .fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                t
            }
            Entry::Vacant(e) => {
                inner.order.push_back(span.trace_id);
                e.insert(Held::default())
            }
        };
        if trace.spans >= self.limits.max_spans_per_trace {
            inner.refused += 1;
            return false;
        }
        let keys = [span.owner.map(Key::Session), span.user.map(Key::User)];
        for key in keys.into_iter().flatten() {
            if !trace.players.contains(&key) {
                trace.players.push(key);
                inner.players.add(key, span.trace_id);
            }
        }
        if trace.spans == 0 || span.start_us < trace.start_us {
            trace.start_us = span.start_us;
        }
        trace.end_us = trace.end_us.max(span.end_us);
        if self.journal.is_none() && trace.data.is_empty() {
            trace.data = std::mem::take(&mut span.bytes);
        } else {
            trace.data.extend_from_slice(&span.bytes);
        }
        trace.spans += 1;
        trace.bytes += size;
        inner.bytes += size;
        inner.spans += 1;
        inner.received += 1;
        true
    }

    /// Removes the oldest trace; `None` when the store is empty. The caller frees it.
    pub(super) fn evict_oldest(&self, inner: &mut Inner) -> Option<Held> {
        loop {
            let id = inner.order.pop_front()?;
            if let Some(t) = self.remove(inner, id) {
                return Some(t);
            }
        }
    }

    /// Takes trace `id` out of the store and its indexes, counting its spans as evicted;
    /// `None` if it is not held. The caller frees it.
    pub(super) fn remove(&self, inner: &mut Inner, id: u128) -> Option<Held> {
        let t = inner.traces.remove(&id)?;
        inner.bytes -= t.bytes;
        inner.spans -= t.spans;
        for key in &t.players {
            inner.players.remove(*key, id);
        }
        inner.evicted += t.spans as u64;
        Some(t)
    }

    /// Counts `n` spans the collector refused for a time too far in the future.
    pub(crate) fn count_future(&self, n: u64) {
        if n > 0 {
            self.counters
                .otlp_future_spans
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let g = self.lock();
        let mut stats = self.counters.snapshot_onto(StoreStats {
            traces: g.traces.len(),
            spans: g.spans,
            bytes: g.bytes,
            spans_received: g.received,
            spans_evicted: g.evicted,
            spans_refused: g.refused,
            ..StoreStats::default()
        });
        stats.spans_dropped = g.evicted + g.refused + stats.spans_conflicting;
        stats
    }
}
