//! Tracing: one tracer per module (its `service.name`), mqrs's own spans and the sampling that
//! decides them, the W3C text form for process boundaries, the `tracing` layer, and where
//! finished spans go: a [`SpanSink`] (the embedded trace store, with the `viewer` feature) and
//! an OTLP/HTTP exporter.

pub(crate) mod attrs;
pub(crate) mod clock;
pub(crate) mod context;
pub(crate) mod export;
pub(crate) mod export_metrics;
pub(crate) mod ids;
pub(crate) mod layer;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod provider;
pub(crate) mod recorded;
pub(crate) mod sampling;
mod sink;
pub(crate) mod skipped;
pub(crate) mod spans;
pub(crate) mod tracer;

pub use export::ExportStats;
pub use export_metrics::MetricsExportStats;
pub use layer::layer;
pub(crate) use provider::Tracing;
pub(crate) use sampling::Sampling;
pub use sink::SpanSink;
pub(crate) use tracer::ServiceTracer;

#[cfg(feature = "viewer")]
pub use mqrs_viewer::{
    OpLatency, StoreLimits, StoreStats, StoredEvent, StoredLink, StoredSpan, Tag, TraceQuery,
    TraceStore,
};
