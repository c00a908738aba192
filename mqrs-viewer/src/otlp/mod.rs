//! The OTLP/HTTP collector: `ingest.rs` serves `POST /v1/traces`, `prescan.rs` adds up what a
//! body would cost to decode before it is decoded, `convert.rs` turns OTLP spans into the
//! store's.

mod convert;
mod ingest;
mod prescan;

pub use convert::MAX_SPANS_PER_REQUEST;
pub use ingest::serve as serve_collector;
