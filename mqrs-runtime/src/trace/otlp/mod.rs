//! OpenTelemetry's wire protocol, both ways: `export` sends this process's spans to a collector
//! by OTLP/HTTP; `ingest` is the collector that receives spans from other processes (and any
//! OpenTelemetry SDK) into the embedded store, so one trace shows every process's part.

mod convert;
pub(crate) mod export;
pub(crate) mod ingest;
mod prescan;

pub use convert::MAX_SPANS_PER_REQUEST;
pub use export::ExportStats;
