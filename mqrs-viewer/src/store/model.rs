//! What the store holds and is asked: spans as it keeps them, a trace's spans, a search, the
//! store's caps and counters.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::Value;

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
    /// A trace of `spans` (one trace's, in that order) held outside any store.
    pub fn of_spans(spans: Vec<StoredSpan>) -> StoredTrace {
        let start_us = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
        let end_us = spans
            .iter()
            .map(|s| s.start_us + s.duration_us)
            .max()
            .unwrap_or(0);
        StoredTrace {
            spans,
            bytes: 0,
            start_us,
            end_us,
        }
    }

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
    pub(super) bytes: usize,
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
