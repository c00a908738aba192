//! The embedded trace store: finished spans kept in memory, bounded by trace count and bytes.
//! What is computed over the spans held (latency per operation, calls between services) is in
//! `analytics`.
//!
//! Oldest traces are evicted first; every span that is evicted or refused is counted. The store
//! is fed through [`TraceStore::insert`] by any source: the SDK processor of this process and
//! the OTLP collector (spans of other processes and other SDKs).

mod analytics;

pub use analytics::{nearest_rank, OpLatency};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::Value;

use super::hash::KeyedHash;

/// A span attribute as the store keeps it: the SDK's own key and value, moved in as they are.
pub use opentelemetry::KeyValue as Tag;

/// A timestamped event within a span (a Jaeger "log"): the SDK's own event, moved in as it is.
pub use opentelemetry::trace::Event as StoredEvent;

/// One finished span.
///
/// The representation is the SDK's: names and attribute keys that repeat are `'static` or
/// shared (see `trace::names`), attribute values are moved in, so turning a finished span into
/// a stored one allocates nothing.
#[derive(Debug, Clone, PartialEq)]
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
    /// `server`, `client`, `internal`, `producer` or `consumer`.
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
}

/// Longest text attribute value the store keeps; longer ones are cut (and end with `…`), so
/// a client that sends a megabyte of name cannot put it on every span.
pub const MAX_VALUE_BYTES: usize = 1024;

/// Longest span or service name the store keeps.
pub const MAX_NAME_BYTES: usize = 256;

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

/// Cuts over-long text values in place (rare: the common case touches nothing).
pub fn cap_values(tags: &mut [Tag]) {
    for kv in tags {
        if let Value::String(v) = &kv.value {
            if v.as_str().len() > MAX_VALUE_BYTES {
                kv.value = Value::from(cut(v.as_str(), MAX_VALUE_BYTES).into_owned());
            }
        }
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Bytes a string owns on the heap: nothing when it is `'static` or shared.
#[allow(clippy::ptr_arg)] // the point is to look at which `Cow` variant it is
fn owned_len(s: &Cow<'static, str>) -> usize {
    match s {
        Cow::Borrowed(_) => 0,
        Cow::Owned(s) => s.len(),
    }
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_str().len(),
        Value::Array(a) => a.to_string().len(),
        _ => 0,
    }
}

fn tags_bytes(t: &[Tag]) -> usize {
    t.iter()
        .map(|kv| 48 + kv.key.as_str().len() + value_bytes(&kv.value))
        .sum()
}

impl StoredSpan {
    /// The value of attribute `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.tags
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// What the span holds in memory, roughly (shared names count nothing).
    fn approx_bytes(&self) -> usize {
        160 + owned_len(&self.name)
            + tags_bytes(&self.tags)
            + self
                .events
                .iter()
                .map(|e| 48 + owned_len(&e.name) + tags_bytes(&e.attributes))
                .sum::<usize>()
            + self.error.as_ref().map_or(0, owned_len)
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
    /// Spans removed by eviction of old traces, or refused by a cap.
    pub spans_dropped: u64,
}

/// One trace's spans as held by the store.
#[derive(Debug, Clone, Default)]
pub struct StoredTrace {
    /// Spans in arrival order.
    pub spans: Vec<StoredSpan>,
    bytes: usize,
    /// The client session the trace belongs to (a hash of its `session.id`), if any.
    owner: Option<u64>,
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

#[derive(Default)]
struct Inner {
    traces: HashMap<u128, StoredTrace, KeyedHash>,
    /// Trace ids of each client session, oldest first (ids of evicted traces go lazily).
    owners: HashMap<u64, VecDeque<u128>>,
    /// Hashes `session.id` values into owners.
    owner_hash: KeyedHash,
    order: VecDeque<u128>,
    bytes: usize,
    spans: usize,
    /// Operation names of each service, with how many spans of each kind (in the order of
    /// `KINDS`) the store holds: an entry goes when its last span is evicted, so the index
    /// never outgrows the store.
    operations: BTreeMap<Arc<str>, BTreeMap<Box<str>, [u32; 5]>>,
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
    received: AtomicU64,
    dropped: AtomicU64,
}

impl TraceStore {
    /// An empty store with these caps.
    pub fn new(limits: StoreLimits) -> Self {
        TraceStore {
            inner: Mutex::new(Inner::default()),
            limits,
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a finished span, evicting the oldest traces when a cap is exceeded. Over-long
    /// names and text values are cut first.
    pub fn insert(&self, mut span: StoredSpan) {
        cap_values(&mut span.tags);
        for e in &mut span.events {
            cap_values(&mut e.attributes);
        }
        if span.name.len() > MAX_NAME_BYTES {
            span.name = Cow::Owned(cut(&span.name, MAX_NAME_BYTES).into_owned());
        }
        if span.service.len() > MAX_NAME_BYTES {
            span.service = Arc::from(cut(&span.service, MAX_NAME_BYTES).as_ref());
        }
        let size = span.approx_bytes();
        if size > self.limits.max_bytes {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Evicted traces are freed after the lock is released: dropping hundreds of spans'
        // strings under it would stall every other request's insert. One trace out for one in
        // is the usual case at the cap; it needs no list.
        let mut evicted: (Option<StoredTrace>, Vec<StoredTrace>) = (None, Vec::new());
        let mut keep = |t: StoredTrace| match evicted.0 {
            None => evicted.0 = Some(t),
            Some(_) => evicted.1.push(t),
        };
        let mut g = self.lock();
        let inner = &mut *g;
        let is_new = !inner.traces.contains_key(&span.trace_id);
        let mut owner = None;
        if is_new {
            owner = span
                .tag("session.id")
                .map(|v| std::hash::BuildHasher::hash_one(&inner.owner_hash, v.as_str()));
            if let Some(o) = owner {
                // A session at its share makes room from its own traces first.
                let cap = self.limits.max_traces_per_session.max(1);
                while inner.owners.get(&o).is_some_and(|ids| ids.len() >= cap) {
                    // Every removal keeps the owners' lists exact, so the front is held.
                    let oldest = inner.owners.get(&o).and_then(|ids| ids.front().copied());
                    match oldest.and_then(|id| self.remove(inner, id)) {
                        Some(t) => keep(t),
                        None => {
                            inner.owners.remove(&o);
                            break;
                        }
                    }
                }
            }
            while inner.traces.len() >= self.limits.max_traces.max(1) {
                match self.evict_oldest(inner) {
                    Some(t) => keep(t),
                    None => break,
                }
            }
        }
        while inner.bytes + size > self.limits.max_bytes {
            if inner.order.front() == Some(&span.trace_id) {
                // Only this trace is left to evict: refuse the span rather than the trace.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match self.evict_oldest(inner) {
                Some(t) => keep(t),
                None => break,
            }
        }
        if is_new {
            inner.order.push_back(span.trace_id);
            if let Some(o) = owner {
                inner.owners.entry(o).or_default().push_back(span.trace_id);
            }
        }
        let trace = inner.traces.entry(span.trace_id).or_default();
        if is_new {
            trace.owner = owner;
        }
        if trace.spans.len() >= self.limits.max_spans_per_trace {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let end = span.start_us + span.duration_us;
        if trace.spans.is_empty() || span.start_us < trace.start_us {
            trace.start_us = span.start_us;
        }
        trace.end_us = trace.end_us.max(end);
        trace.bytes += size;
        inner.bytes += size;
        inner.spans += 1;
        // Services and names repeat: look up by `&str` (no reference count touched), insert
        // only what is new.
        if !inner.operations.contains_key(&*span.service) {
            inner
                .operations
                .insert(span.service.clone(), BTreeMap::new());
        }
        if let Some(ops) = inner.operations.get_mut(&*span.service) {
            let kind = kind_index(span.kind);
            match ops.get_mut(&*span.name) {
                Some(counts) => counts[kind] += 1,
                None => {
                    let mut counts = [0; 5];
                    counts[kind] = 1;
                    ops.insert(span.name.as_ref().into(), counts);
                }
            }
        }
        trace.spans.push(span);
        self.received.fetch_add(1, Ordering::Relaxed);
        drop(g);
        drop(evicted);
    }

    /// Removes the oldest trace; `None` when the store is empty. The caller frees it.
    fn evict_oldest(&self, inner: &mut Inner) -> Option<StoredTrace> {
        loop {
            let id = inner.order.pop_front()?;
            if let Some(t) = self.remove(inner, id) {
                return Some(t);
            }
        }
    }

    /// Takes trace `id` out of the store and its indexes, counting its spans as dropped;
    /// `None` if it is not held. The caller frees it.
    fn remove(&self, inner: &mut Inner, id: u128) -> Option<StoredTrace> {
        let t = inner.traces.remove(&id)?;
        inner.bytes -= t.bytes;
        inner.spans -= t.spans.len();
        for s in &t.spans {
            forget_operation(&mut inner.operations, s);
        }
        if let Some(o) = t.owner {
            if let Some(ids) = inner.owners.get_mut(&o) {
                if ids.front() == Some(&id) {
                    ids.pop_front();
                } else {
                    ids.retain(|x| *x != id);
                }
                if ids.is_empty() {
                    inner.owners.remove(&o);
                }
            }
        }
        self.dropped
            .fetch_add(t.spans.len() as u64, Ordering::Relaxed);
        Some(t)
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let g = self.lock();
        StoreStats {
            traces: g.traces.len(),
            spans: g.spans,
            bytes: g.bytes,
            spans_received: self.received.load(Ordering::Relaxed),
            spans_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Services that have recorded spans, sorted.
    pub fn services(&self) -> Vec<String> {
        self.lock()
            .operations
            .keys()
            .map(|s| s.to_string())
            .collect()
    }

    /// Operations of one service with their span kinds, sorted.
    pub fn operations(&self, service: &str) -> Vec<(String, &'static str)> {
        self.lock()
            .operations
            .get(service)
            .map(|ops| {
                ops.iter()
                    .flat_map(|(name, counts)| {
                        KINDS
                            .iter()
                            .zip(counts)
                            .filter(|(_, n)| **n > 0)
                            .map(move |(k, _)| (name.to_string(), *k))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One trace by id.
    pub fn trace(&self, id: u128) -> Option<StoredTrace> {
        self.lock().traces.get(&id).cloned()
    }

    /// Traces matching the query, newest first.
    pub fn find(&self, q: &TraceQuery) -> Vec<StoredTrace> {
        self.find_within(q).0
    }

    /// Traces matching the query, newest first, and whether `max_bytes` cut the answer short of
    /// `limit`.
    pub fn find_within(&self, q: &TraceQuery) -> (Vec<StoredTrace>, bool) {
        let g = self.lock();
        let mut hits: Vec<&StoredTrace> = g
            .traces
            .values()
            .filter(|t| t.spans.iter().any(|s| span_matches(s, q)))
            .collect();
        hits.sort_by_key(|t| std::cmp::Reverse(t.start_us));
        let budget = if q.max_bytes == 0 {
            usize::MAX
        } else {
            q.max_bytes
        };
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for t in hits.iter().take(q.limit) {
            if !out.is_empty() && bytes + t.bytes > budget {
                return (out, true);
            }
            bytes += t.bytes;
            out.push((*t).clone());
        }
        (out, false)
    }
}

/// Span kinds, in the order of their counts in the operation index.
const KINDS: [&str; 5] = ["client", "consumer", "internal", "producer", "server"];

fn kind_index(kind: &str) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(2)
}

/// Takes an evicted span out of the operation index; drops entries left with no span.
fn forget_operation(ops: &mut BTreeMap<Arc<str>, BTreeMap<Box<str>, [u32; 5]>>, s: &StoredSpan) {
    let Some(names) = ops.get_mut(&*s.service) else {
        return;
    };
    if let Some(counts) = names.get_mut(&*s.name) {
        let n = &mut counts[kind_index(s.kind)];
        *n = n.saturating_sub(1);
        if counts.iter().all(|n| *n == 0) {
            names.remove(&*s.name);
        }
    }
    if names.is_empty() {
        ops.remove(&*s.service);
    }
}

fn span_matches(s: &StoredSpan, q: &TraceQuery) -> bool {
    if q.service.as_deref().is_some_and(|v| v != &*s.service) {
        return false;
    }
    if q.operation.as_deref().is_some_and(|v| v != s.name.as_ref()) {
        return false;
    }
    if q.min_duration_us.is_some_and(|v| s.duration_us < v)
        || q.max_duration_us.is_some_and(|v| s.duration_us > v)
    {
        return false;
    }
    if q.start_us.is_some_and(|v| s.start_us < v) || q.end_us.is_some_and(|v| s.start_us > v) {
        return false;
    }
    q.tags.iter().all(|(k, v)| {
        let has = |tags: &[Tag]| {
            tags.iter()
                .any(|kv| kv.key.as_str() == k && kv.value.as_str() == v.as_str())
        };
        has(&s.tags)
            || (k == "error" && v == "true" && s.error.is_some())
            || (k == "span.kind" && v == s.kind)
            || s.events.iter().any(|e| has(&e.attributes))
    })
}

#[cfg(test)]
mod tests;
