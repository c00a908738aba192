//! Tracing: one tracer per module (its `service.name`), spans fed into the embedded store,
//! the W3C text form for process boundaries, and the HTTP viewer.

pub(crate) mod answer;
pub mod api;
pub mod api_v3;
pub(crate) mod attrs;
pub(crate) mod clock;
pub mod context;
pub(crate) mod hash;
pub mod http_limits;
pub(crate) mod ids;
pub mod layer;
pub(crate) mod names;
pub mod otlp;
mod provider;
pub(crate) mod recorded;
pub mod sampling;
pub mod search_params;
pub(crate) mod skipped;
pub(crate) mod spans;
pub mod store;
mod tracer;
mod ui;

pub use layer::layer;
pub use provider::Tracing;
pub use sampling::Sampling;
pub use store::{
    OpLatency, StoreLimits, StoreStats, StoredEvent, StoredLink, StoredSpan, Tag, TraceQuery,
    TraceStore,
};
pub use tracer::{ServiceTracer, TracerParts};
