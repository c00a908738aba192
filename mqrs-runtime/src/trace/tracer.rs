//! [`ServiceTracer`]: one module's tracer (its `service.name`), how its spans are sampled, and
//! where the spans it finishes go.

use std::sync::Arc;

use opentelemetry_sdk::trace::{SdkTracer, SpanData, SpanProcessor};

use super::export::ExportProcessor;
use super::sampling::{Sampler, Sampling};
use super::sink::SpanSink;

/// A tracer bound to one service (module), shared by every span that module records. Every
/// traced session carries one; a clone is one reference count.
#[derive(Clone, Debug)]
pub struct ServiceTracer(Arc<TracerParts>);

impl ServiceTracer {
    /// A tracer of these parts.
    pub(crate) fn new(parts: TracerParts) -> ServiceTracer {
        ServiceTracer(Arc::new(parts))
    }
}

impl std::ops::Deref for ServiceTracer {
    type Target = TracerParts;
    fn deref(&self) -> &TracerParts {
        &self.0
    }
}

/// What a [`ServiceTracer`] holds.
#[derive(Debug)]
pub struct TracerParts {
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
    pub(crate) sampler: Sampler,
    /// The sampling settings: what is kept of skipped traces.
    pub(crate) sampling: Sampling,
    pub(crate) service: Arc<str>,
    /// Where every call of this service is counted.
    pub(crate) red: Arc<mqrs_base::red::Red>,
    pub(crate) sink: Option<Arc<dyn SpanSink>>,
    pub(crate) exporter: Option<ExportProcessor>,
}

impl Policy {
    /// True when skipped traces are followed, to keep the failed or slow ones.
    pub(crate) fn keeps(&self) -> bool {
        self.sampling.keeps()
    }

    /// Stores and exports a kept span of a skipped trace, as the SDK's processors would.
    pub(crate) fn deliver(&self, span: SpanData) {
        match (&self.sink, &self.exporter) {
            (Some(sink), Some(exporter)) => {
                exporter.on_end(span.clone());
                sink.insert(span, self.service.clone());
            }
            (Some(sink), None) => sink.insert(span, self.service.clone()),
            (None, Some(exporter)) => exporter.on_end(span),
            (None, None) => {}
        }
    }
}
