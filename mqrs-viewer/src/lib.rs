//! The mqrs trace backend: a bounded store of finished spans, its Jaeger-compatible query APIs
//! (v1 JSON and v3) with the web viewer, and an OTLP/HTTP collector that feeds it from any
//! OpenTelemetry SDK. The mqrs runtime embeds it (its default `viewer` feature) and hands it
//! the spans of its own process; the `mqrs-viewer` binary runs it on its own for processes that
//! export with `--otlp`. It does not depend on the runtime.
//!
//! ```
//! use mqrs_viewer::{StoreLimits, TraceQuery, TraceStore};
//! let store = TraceStore::new(StoreLimits::default());
//! assert!(store.find(&TraceQuery { limit: 20, ..Default::default() }).is_empty());
//! ```

#![warn(missing_docs)]

mod api;
mod http;
mod otlp;
mod store;

pub use api::jaeger::jaeger_trace;
pub use api::serve_viewer;
pub use http::limits::{HttpCounters, HttpStats};
pub use otlp::{serve_collector, MAX_SPANS_PER_REQUEST};
pub use store::{
    cap_values, cut, micros, nearest_rank, Dependency, OpLatency, StoreLimits, StoreStats,
    StoredEvent, StoredLink, StoredSpan, StoredTrace, Tag, TraceQuery, TraceStore, MAX_NAME_BYTES,
    MAX_VALUE_BYTES,
};

/// Items the benchmarks and tests reach into; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::api::search_params;
}
