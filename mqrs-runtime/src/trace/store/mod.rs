//! The embedded trace store: finished spans kept in memory, bounded by trace count and bytes.
//! What is computed over the spans held (latency per operation, calls between services) is in
//! `analytics`.
//!
//! Oldest traces are evicted first; every span that is evicted or refused is counted. The store
//! is fed through [`TraceStore::insert`] by any source: the SDK processor of this process and
//! the OTLP collector (spans of other processes and other SDKs). Inserted spans enter in
//! batches per thread (`pending`); every read takes them in first.

mod analytics;
mod codec;
mod disk;
pub mod limits;
mod pending;
mod players;
mod query;

pub use analytics::{nearest_rank, Dependency, OpLatency};
pub(crate) use limits::shared_tags;
pub use limits::{cap_values, MAX_NAME_BYTES, MAX_VALUE_BYTES};

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::Value;

use super::hash::KeyedHash;
use players::{Key, Players};

/// A span attribute as the store keeps it: the SDK's own key and value, moved in as they are.
pub use opentelemetry::KeyValue as Tag;

/// A timestamped event within a span (a Jaeger "log"): the SDK's own event, moved in as it is.
pub use opentelemetry::trace::Event as StoredEvent;

/// A link from a span to another span (of its trace or another), as OTLP carries it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredLink {
    /// The linked span's trace id.
    pub trace_id: u128,
    /// The linked span's id.
    pub span_id: u64,
    /// The link's attributes.
    pub attributes: Vec<Tag>,
}

/// One finished span.
///
/// The representation is the SDK's: names and attribute keys that repeat are `'static` or
/// shared (see `trace::names`), attribute values are moved in, so turning a finished span into
/// a stored one allocates nothing. Build one with `..Default::default()` for the fields that
/// do not matter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredSpan {
    /// 16-byte trace id.
    pub trace_id: u128,
    /// 8-byte span id.
    pub span_id: u64,
    /// Parent span id, `None` for a root.
    pub parent_span_id: Option<u64>,
    /// Operation name, e.g. `Login/track`.
    pub name: Cow<'static, str>,
    /// Service (module) that recorded the span.
    pub service: Arc<str>,
    /// `server`, `client`, `internal`, `producer`, `consumer`, or `unspecified` (an OTLP span
    /// that named none).
    pub kind: &'static str,
    /// Start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Attributes.
    pub tags: Vec<Tag>,
    /// Events.
    pub events: Vec<StoredEvent>,
    /// `Some(description)` when the span ended with an error status.
    pub error: Option<Cow<'static, str>>,
    /// True when the span's status was set to OK (`error` is `None` then); false when unset.
    pub status_ok: bool,
    /// The attributes of the resource that recorded the span, but `service.name` (in
    /// `service`); empty for this process's own spans. Shared by the spans of one resource.
    pub resource: Arc<[Tag]>,
    /// The instrumentation scope's name (`mqrs` for this process's own spans; empty if the
    /// sender named none) and version.
    pub scope: (Cow<'static, str>, Cow<'static, str>),
    /// Links to other spans.
    pub links: Vec<StoredLink>,
}

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn cut(s: &str, max: usize) -> Cow<'_, str> {
    let kept = clip(s, max);
    if kept.len() == s.len() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{kept}…"))
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (no mark).
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Microseconds since the Unix epoch (0 before it).
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl StoredSpan {
    /// The value of attribute `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.tags
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// What the span costs the store's byte cap: its compact form and its bookkeeping.
    pub fn stored_bytes(&self) -> usize {
        let mut out = Vec::new();
        codec::encode(self, &mut out);
        out.len() + SPAN_OVERHEAD
    }
}

/// Caps of the store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Most traces kept.
    pub max_traces: usize,
    /// Most bytes (approximate) kept over all spans.
    pub max_bytes: usize,
    /// Most spans kept for one trace; later spans of it are dropped.
    pub max_spans_per_trace: usize,
    /// Most traces kept for one client session (`session.id`): a session over it makes room
    /// by losing its own oldest trace, so one flooding client cannot wipe everyone's history.
    pub max_traces_per_session: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_traces: 10_000,
            max_bytes: 64 << 20,
            max_spans_per_trace: 2_000,
            max_traces_per_session: 1_000,
        }
    }
}

/// Counters of what the store holds and what it dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Traces held now.
    pub traces: usize,
    /// Spans held now.
    pub spans: usize,
    /// Approximate bytes held now.
    pub bytes: usize,
    /// Spans accepted since start.
    pub spans_received: u64,
    /// Spans removed by eviction of old traces, refused by a cap, or refused as conflicting
    /// (the sum of the three below).
    pub spans_dropped: u64,
    /// Spans removed with old traces to make room for new ones.
    pub spans_evicted: u64,
    /// Spans turned away: larger than the byte cap, or past their trace's span cap.
    pub spans_refused: u64,
    /// Spans turned away because their trace already held a span with their id, or because
    /// they named themselves as their parent.
    pub spans_conflicting: u64,
    /// Spans kept without some of their attributes or events, past a per-span limit
    /// (`limits`); counted on the span too.
    pub spans_limited: u64,
    /// OTLP requests the collector took in.
    pub otlp_requests: u64,
    /// OTLP requests the collector refused (malformed, too large, wrong type).
    pub otlp_rejected: u64,
    /// Spans the collector refused for starting or ending past the allowed clock skew.
    pub otlp_future_spans: u64,
}

impl StoredTrace {
    /// What the spans read cost in the store's measure (their encoded form and bookkeeping).
    pub fn stored_bytes(&self) -> usize {
        self.bytes
    }
}

/// One trace's spans as held by the store.
#[derive(Debug, Clone, Default)]
pub struct StoredTrace {
    /// Spans in arrival order.
    pub spans: Vec<StoredSpan>,
    bytes: usize,
    /// Earliest span start.
    pub start_us: u64,
    /// Latest span end.
    pub end_us: u64,
}

/// Filters of a trace search; a trace matches when one of its spans passes them all.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// Service that recorded the span.
    pub service: Option<String>,
    /// Operation (span name).
    pub operation: Option<String>,
    /// Tags that must all be present on the span with these values.
    pub tags: Vec<(String, String)>,
    /// Minimum span duration, µs.
    pub min_duration_us: Option<u64>,
    /// Maximum span duration, µs.
    pub max_duration_us: Option<u64>,
    /// Span start at or after, µs since epoch.
    pub start_us: Option<u64>,
    /// Span start at or before, µs since epoch.
    pub end_us: Option<u64>,
    /// Most traces returned, newest first.
    pub limit: usize,
    /// Most bytes of traces (the store's measure) returned; 0: no bound. At least one trace is
    /// returned when any matches.
    pub max_bytes: usize,
}

/// One trace as the store holds it: its spans encoded one after the other (`codec`), so the
/// whole trace is one allocation.
#[derive(Default)]
struct Held {
    data: Vec<u8>,
    spans: usize,
    bytes: usize,
    /// The players (hashed user and session ids) its spans carry, each once.
    players: Vec<Key>,
    start_us: u64,
    end_us: u64,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<u128, Held, KeyedHash>,
    /// Trace ids of each user and session.
    players: Players,
    order: VecDeque<u128>,
    bytes: usize,
    spans: usize,
    /// Spans accepted since start.
    received: u64,
    /// Spans evicted since start.
    evicted: u64,
    /// Spans refused since start.
    refused: u64,
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
    inner: Mutex<Inner>,
    limits: StoreLimits,
    pending: pending::Pending,
    /// Hashes `session.id` and `user.id` values into player keys.
    owner_hash: KeyedHash,
    /// What the OTLP collector feeding this store took in and refused.
    pub(crate) otlp: OtlpCounters,
    /// Spans refused for an id their trace already held, or for naming themselves as parent.
    conflicts: AtomicU64,
    /// Spans that lost attributes or events to a per-span limit.
    limited: AtomicU64,
    /// What the viewer's HTTP bounds turned away.
    pub(crate) viewer_http: Arc<crate::trace::http_limits::HttpCounters>,
    /// What the collector's HTTP bounds turned away.
    pub(crate) collector_http: Arc<crate::trace::http_limits::HttpCounters>,
    /// The log that keeps the store across restarts, when it has a data directory.
    journal: Option<Mutex<disk::Journal>>,
}

/// Buffers of evicted traces each thread keeps for the spans it encodes next (about one batch's
/// evictions), at most this many, each of at most [`SPARE_MAX_BYTES`]: under 128 KiB a thread,
/// outside the store's count.
const SPARE_BUFFERS: usize = 32;
const SPARE_MAX_BYTES: usize = 4 << 10;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer for a span of `len` bytes: an evicted trace's when this thread has one of
/// that size or up to 64 bytes more (a store counts its traces' bytes, not their buffers'
/// spare room), else a new one. Freeing an evicted trace's buffer reads memory no core has
/// touched since the trace was stored (the allocator's headers beside it): in a full store that
/// was the largest part of placing a span. Filling the buffer again only writes there.
fn spare_buffer(len: usize) -> Vec<u8> {
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
fn keep_spare_buffers(buffers: impl Iterator<Item = Vec<u8>>) {
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        for b in buffers {
            if s.len() < SPARE_BUFFERS && (1..=SPARE_MAX_BYTES).contains(&b.capacity()) {
                s.push(b);
            }
        }
    });
}

/// Requests of the OTLP collector, counted for the store's stats.
#[derive(Default)]
pub(crate) struct OtlpCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) future_spans: AtomicU64,
}

/// Bytes a span costs beyond its encoded form (its share of the trace's bookkeeping).
const SPAN_OVERHEAD: usize = 16;

impl TraceStore {
    /// An empty store with these caps.
    pub fn new(limits: StoreLimits) -> Self {
        TraceStore {
            inner: Mutex::new(Inner::default()),
            limits,
            pending: pending::Pending::default(),
            owner_hash: KeyedHash::default(),
            otlp: OtlpCounters::default(),
            conflicts: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            viewer_http: Arc::default(),
            collector_http: Arc::default(),
            journal: None,
        }
    }

    /// A store kept across restarts in `dir`: what the logs there hold is read back first
    /// (the caps apply as it enters), then every span placed is logged. See `disk`.
    pub fn persistent(limits: StoreLimits, dir: &std::path::Path) -> std::io::Result<Arc<Self>> {
        let mut store = TraceStore::new(limits);
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
                if s.journal
                    .as_ref()
                    .is_some_and(|j| j.lock().unwrap_or_else(|p| p.into_inner()).is_closed())
                {
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
            j.lock().unwrap_or_else(|p| p.into_inner()).close();
        }
    }

    /// The store for reading: spans still waiting to enter are placed first.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        for batch in self.pending.take_all() {
            self.place_all(batch);
        }
        self.lock_inner()
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a finished span, evicting the oldest traces when a cap is exceeded. The per-span
    /// limits (`limits`) apply first. A span that names itself as its parent is refused, and
    /// so is one whose trace already holds its span id (see `place`); both are counted.
    pub fn insert(&self, mut span: StoredSpan) {
        if span.parent_span_id == Some(span.span_id) {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
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
                        self.limited.fetch_add(1, Ordering::Relaxed);
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
                self.limited.fetch_add(1, Ordering::Relaxed);
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
        crate::trace::attr_pool::give(tags);
        if let Some(batch) = self.pending.push(ready) {
            self.place_all(batch);
        }
    }

    /// The hash a `user.id` or `session.id` value is indexed under.
    fn player_hash(&self, value: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.owner_hash, value)
    }

    /// Places `batch` under one hold of the lock. The traces it evicts are freed after the
    /// lock is released, each in one piece.
    fn place_all(&self, mut batch: Vec<pending::Ready>) {
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
                j.lock().unwrap_or_else(|p| p.into_inner()).append(batch);
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
    fn place(&self, inner: &mut Inner, span: &mut pending::Ready, evicted: &mut Vec<Held>) -> bool {
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
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
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
    fn evict_oldest(&self, inner: &mut Inner) -> Option<Held> {
        loop {
            let id = inner.order.pop_front()?;
            if let Some(t) = self.remove(inner, id) {
                return Some(t);
            }
        }
    }

    /// Takes trace `id` out of the store and its indexes, counting its spans as evicted;
    /// `None` if it is not held. The caller frees it.
    fn remove(&self, inner: &mut Inner, id: u128) -> Option<Held> {
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
            self.otlp.future_spans.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let g = self.lock();
        StoreStats {
            traces: g.traces.len(),
            spans: g.spans,
            bytes: g.bytes,
            spans_received: g.received,
            spans_dropped: g.evicted + g.refused + self.conflicts.load(Ordering::Relaxed),
            spans_evicted: g.evicted,
            spans_refused: g.refused,
            spans_conflicting: self.conflicts.load(Ordering::Relaxed),
            spans_limited: self.limited.load(Ordering::Relaxed),
            otlp_requests: self.otlp.requests.load(Ordering::Relaxed),
            otlp_rejected: self.otlp.rejected.load(Ordering::Relaxed),
            otlp_future_spans: self.otlp.future_spans.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
