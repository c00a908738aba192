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
mod from_sdk;
pub mod limits;
mod model;
mod pending;
mod players;
mod query;
mod traces;

pub use analytics::{nearest_rank, Dependency, OpLatency};
pub(crate) use limits::shared_tags;
pub use limits::{cap_values, MAX_NAME_BYTES, MAX_VALUE_BYTES};
pub use mqrs_base::text::cut;

pub use model::{
    micros, StoreLimits, StoreStats, StoredEvent, StoredLink, StoredSpan, StoredTrace, Tag,
    TraceQuery,
};
pub use traces::TraceStore;

#[cfg(test)]
mod tests;
