//! Random trace and span ids, and the random numbers sampling draws: a small fast generator
//! per thread, seeded from the thread's secure generator, as the OpenTelemetry SDK's id
//! generator does. Ids need to be unique, not secret.

use std::cell::RefCell;

use opentelemetry::trace::{SpanId, TraceId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A random, valid (non-zero) span id.
pub(crate) fn new_span_id() -> SpanId {
    SpanId::from_bytes(next_u64().max(1).to_be_bytes())
}

/// A random, valid trace id.
pub(crate) fn new_trace_id() -> TraceId {
    let id = (u128::from(next_u64()) << 64) | u128::from(next_u64());
    TraceId::from_bytes(id.max(1).to_be_bytes())
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// The next random `u64` of this thread's generator.
pub(crate) fn next_u64() -> u64 {
    RNG.with(|r| r.borrow_mut().random())
}
