//! `cargo bench -p mqrs-runtime --bench spans`: what one span costs, beside the OpenTelemetry
//! SDK's own floor: a bare SDK start + end with no processor, and mqrs's own span as an RPC
//! handler records it (three attributes, child of a remote parent) and the embedded store keeps
//! it, with the store at its cap so eviction is included (the store takes spans in batches,
//! and the reading of its stats at the end places the last of them). Target (issue 7): record + insert
//! under 0.5 µs per span.

use std::time::Instant;

use mqrs_runtime::internals::{start_span, ServiceTracer, Tracing};
use mqrs_runtime::trace::{StoreLimits, TraceStore};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Nanoseconds per span over `n` spans made by `f`, median of 3 runs.
fn per_span(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..n {
            f(i);
        }
        runs.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[1]
}

/// A remote parent, as a call from another process or the gate's root would give.
fn parent(i: usize) -> Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let sc = SpanContext::new(
        TraceId::from_bytes(((i as u128 / 50) + 1).to_be_bytes()),
        SpanId::from_bytes(((i as u64) + 1).to_be_bytes()),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}

fn main() {
    let n: usize = std::env::var("MQRS_BENCH_SPANS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let attrs = || {
        vec![
            KeyValue::new("rpc.system.name", "mqrs"),
            KeyValue::new("rpc.method", "Login/track".to_string()),
            KeyValue::new("user.id", "user1".to_string()),
        ]
    };
    let bare = SdkTracerProvider::builder().build().tracer("bench");
    let sdk = per_span(n, |i| {
        let cx = parent(i);
        let span = bare
            .span_builder("Login/track")
            .with_kind(SpanKind::Server)
            .with_attributes(attrs())
            .start_with_context(&bare, &cx);
        drop(span);
    });
    // 50 spans per trace and a cap of 1,000 traces: every new trace evicts the oldest.
    let store = std::sync::Arc::new(TraceStore::new(StoreLimits {
        max_traces: 1_000,
        ..StoreLimits::default()
    }));
    let tracing = Tracing::new(Some(store.clone()));
    let t = tracing.tracer("Login");
    let mqrs = per_span(n, |i| {
        let cx = parent(i);
        record_span(&t, &cx, SpanKind::Server, "Login/track", attrs());
    });
    println!("one span: SERVER kind, 3 attributes, remote parent; {n} spans x 3 runs (medians)");
    println!("{:<62} {:>10}", "path", "per span");
    println!(
        "{:<62} {:>8.0}ns",
        "OpenTelemetry SDK start + end, no processor", sdk
    );
    println!(
        "{:<62} {:>8.0}ns",
        "mqrs: the same span recorded and kept in the store (at its cap)", mqrs
    );
    println!(
        "mqrs record + insert minus the SDK's bare start + end: {:+.0} ns; in all {:.2} µs (target < 0.5 µs)",
        mqrs - sdk,
        mqrs / 1000.0
    );
    let st = store.stats();
    println!(
        "store: {} traces, {} spans held, {} evicted",
        st.traces, st.spans, st.spans_dropped
    );
}

/// Records one span as mqrs records its RPC spans (a child of the span in `parent`) and ends
/// it.
fn record_span(
    tracer: &ServiceTracer,
    parent: &Context,
    kind: SpanKind,
    name: &'static str,
    attributes: Vec<KeyValue>,
) {
    drop(start_span(
        tracer,
        parent.span().span_context(),
        kind,
        name,
        attributes,
    ));
}
