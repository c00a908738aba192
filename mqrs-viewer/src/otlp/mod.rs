//! The OTLP/HTTP collector: `ingest.rs` serves `POST /v1/traces`, `prescan.rs` adds up what a
//! body would cost to decode before it is decoded, `convert.rs` turns OTLP spans into the
//! store's, `metrics.rs` merges OTLP RPC metrics into the RED registry, `transform.rs` turns OTLP/JSON into traces without storing them.

mod convert;
mod ingest;
pub(crate) mod metrics;
mod prescan;
mod transform;

pub use convert::MAX_SPANS_PER_REQUEST;
pub use ingest::serve as serve_collector;
pub use transform::otlp_json_traces;
