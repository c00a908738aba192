//! Tracing: one tracer per module (its `service.name`), spans fed into the embedded store,
//! the W3C text form for process boundaries, and the HTTP viewer.

pub mod api;
pub mod api_v3;
pub(crate) mod attr_pool;
pub(crate) mod clock;
pub mod context;
pub(crate) mod hash;
pub mod http_limits;
pub mod layer;
pub(crate) mod names;
pub mod otlp;
pub(crate) mod recorded;
pub mod sampling;
pub mod search_params;
pub(crate) mod skipped;
pub(crate) mod spans;
pub mod store;
mod ui;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;

pub use layer::layer;
pub use sampling::Sampling;
pub use store::{
    OpLatency, StoreLimits, StoreStats, StoredEvent, StoredLink, StoredSpan, Tag, TraceQuery,
    TraceStore,
};

/// A tracer bound to one service (module), shared by every span that module records. Every
/// traced session carries one; a clone is one reference count.
#[derive(Clone, Debug)]
pub struct ServiceTracer(Arc<TracerParts>);

impl std::ops::Deref for ServiceTracer {
    type Target = TracerParts;
    fn deref(&self) -> &TracerParts {
        &self.0
    }
}

/// What a [`ServiceTracer`] holds.
#[derive(Debug)]
pub struct TracerParts {
    /// Service name, e.g. `Login`.
    pub name: Arc<str>,
    /// The SDK tracer whose resource carries that `service.name`.
    pub tracer: SdkTracer,
    /// How this module's spans are sampled, and where kept spans of skipped traces go.
    pub(crate) policy: Arc<Policy>,
}

/// How one module's spans are sampled, and where the kept spans of skipped traces go (they
/// bypass the SDK, which never saw them: see `trace::skipped`).
#[derive(Debug)]
pub(crate) struct Policy {
    /// The process's root decision.
    pub(crate) sampler: sampling::Sampler,
    /// The sampling settings: what is kept of skipped traces.
    pub(crate) sampling: Sampling,
    service: Arc<str>,
    store: Option<Arc<TraceStore>>,
    exporter: Option<otlp::export::ExportProcessor>,
}

impl Policy {
    /// True when skipped traces are followed, to keep the failed or slow ones.
    pub(crate) fn keeps(&self) -> bool {
        self.sampling.keeps()
    }

    /// Stores and exports a kept span of a skipped trace, as the SDK's processors would.
    pub(crate) fn deliver(&self, span: SpanData) {
        match (&self.store, &self.exporter) {
            (Some(store), Some(exporter)) => {
                exporter.on_end(span.clone());
                store.insert(to_stored(span, self.service.clone()));
            }
            (Some(store), None) => store.insert(to_stored(span, self.service.clone())),
            (None, Some(exporter)) => exporter.on_end(span),
            (None, None) => {}
        }
    }
}

/// Owns the per-service tracer providers and where their spans go.
pub struct Tracing {
    store: Option<Arc<TraceStore>>,
    sampling: Sampling,
    sampler: sampling::Sampler,
    exporter: Option<otlp::export::Exporter>,
    services: Mutex<HashMap<Arc<str>, (SdkTracerProvider, ServiceTracer)>>,
}

impl Tracing {
    /// Tracing whose finished spans go to `store` (none: spans are created but kept nowhere).
    pub fn new(store: Option<Arc<TraceStore>>) -> Self {
        let sampling = Sampling::default();
        Tracing {
            store,
            sampler: sampling.sampler(),
            sampling,
            exporter: None,
            services: Mutex::new(HashMap::new()),
        }
    }

    /// Samples new traces by `sampling` instead of recording all of them; call before the
    /// first [`Tracing::tracer`].
    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampler = sampling.sampler();
        self.sampling = sampling;
        self
    }

    /// Also sends every finished span by OTLP/HTTP to `endpoint`, through a queue of `queue`
    /// spans; the error says why the endpoint is not usable.
    pub(crate) fn with_export(mut self, endpoint: &str, queue: usize) -> Result<Self, String> {
        self.exporter = Some(otlp::export::Exporter::start(endpoint, queue)?);
        Ok(self)
    }

    /// The exporter's counters, when spans are exported.
    pub fn export_stats(&self) -> Option<otlp::ExportStats> {
        self.exporter.as_ref().map(|e| e.stats())
    }

    /// The embedded store, when enabled.
    pub fn store(&self) -> Option<&Arc<TraceStore>> {
        self.store.as_ref()
    }

    /// The tracer for `service`, created on first use.
    pub fn tracer(&self, service: &str) -> ServiceTracer {
        let mut map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, t)) = map.get(service) {
            return t.clone();
        }
        let name: Arc<str> = Arc::from(service);
        let mut builder = SdkTracerProvider::builder().with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_string())
                .build(),
        );
        if let Some(store) = &self.store {
            builder = builder.with_span_processor(StoreProcessor {
                store: store.clone(),
                service: name.clone(),
            });
        }
        if let Some(exporter) = &self.exporter {
            builder = builder.with_span_processor(exporter.processor(name.clone()));
        }
        let provider = builder.build();
        let tracer = ServiceTracer(Arc::new(TracerParts {
            name: name.clone(),
            tracer: provider.tracer("mqrs"),
            policy: Arc::new(Policy {
                sampler: self.sampler.clone(),
                sampling: self.sampling.clone(),
                service: name.clone(),
                store: self.store.clone(),
                exporter: self.exporter.as_ref().map(|e| e.processor(name.clone())),
            }),
        }));
        map.insert(name, (provider, tracer.clone()));
        tracer
    }

    /// Flushes and shuts every provider down, then exports what is queued (this may block on
    /// the collector for a few seconds: call it off the async runtime).
    pub fn shutdown(&self) {
        let map = std::mem::take(&mut *self.services.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, (provider, _)) in map {
            let _ = provider.shutdown();
        }
        if let Some(e) = &self.exporter {
            e.shutdown();
        }
        if let Some(s) = &self.store {
            s.close();
        }
    }
}

/// Hands each finished span to the embedded store, tagged with its service.
#[derive(Debug)]
struct StoreProcessor {
    store: Arc<TraceStore>,
    service: Arc<str>,
}

impl SpanProcessor for StoreProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if sampling::wanted(&span) {
            self.store.insert(to_stored(span, self.service.clone()));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Converts the SDK's finished span into the store's form; moves, never copies, its strings.
pub(crate) fn to_stored(s: SpanData, service: Arc<str>) -> StoredSpan {
    let parent = u64::from_be_bytes(s.parent_span_id.to_bytes());
    let start_us = store::micros(s.start_time);
    StoredSpan {
        trace_id: u128::from_be_bytes(s.span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(s.span_context.span_id().to_bytes()),
        parent_span_id: (parent != 0).then_some(parent),
        name: s.name,
        service,
        kind: match s.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        },
        start_us,
        duration_us: store::micros(s.end_time).saturating_sub(start_us),
        tags: s.attributes,
        events: s.events.events,
        status_ok: matches!(s.status, Status::Ok),
        error: match s.status {
            Status::Error { description } => Some(description),
            _ => None,
        },
        resource: Default::default(),
        scope: (
            match s.instrumentation_scope.name() {
                "mqrs" => std::borrow::Cow::Borrowed("mqrs"),
                other => std::borrow::Cow::Owned(other.to_string()),
            },
            s.instrumentation_scope
                .version()
                .map(|v| std::borrow::Cow::Owned(v.to_string()))
                .unwrap_or_default(),
        ),
        links: s
            .links
            .links
            .into_iter()
            .map(|l| store::StoredLink {
                trace_id: u128::from_be_bytes(l.span_context.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(l.span_context.span_id().to_bytes()),
                attributes: l.attributes,
            })
            .collect(),
    }
}
