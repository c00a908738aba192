//! Tracing: one tracer per module (its `service.name`), mqrs's own spans and the sampling that
//! decides them, the W3C text form for process boundaries, the `tracing` layer, and where
//! finished spans go: a [`SpanSink`] (the embedded trace store, with the `viewer` feature) and
//! an OTLP/HTTP exporter.

pub(crate) mod attrs;
pub(crate) mod clock;
pub mod context;
pub(crate) mod export;
pub(crate) mod ids;
pub mod layer;
pub(crate) mod names;
mod provider;
pub(crate) mod recorded;
pub mod sampling;
mod sink;
pub(crate) mod skipped;
pub(crate) mod spans;
mod tracer;

pub use export::ExportStats;
pub use layer::layer;
pub use provider::Tracing;
pub use sampling::Sampling;
pub use sink::SpanSink;
pub use tracer::{ServiceTracer, TracerParts};

#[cfg(feature = "viewer")]
pub use mqrs_viewer::{
    OpLatency, StoreLimits, StoreStats, StoredEvent, StoredLink, StoredSpan, Tag, TraceQuery,
    TraceStore,
};
