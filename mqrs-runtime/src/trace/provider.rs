//! [`Tracing`]: the per-module tracer providers of a process, and the processor that hands
//! their finished spans to its [`SpanSink`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqrs_base::history::History;
use mqrs_base::red::Red;
use mqrs_base::sync::Locked;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::export::{ExportStats, Exporter};
use super::export_metrics::{metrics_url, MetricsExportStats, MetricsExporter};
use super::sampling::{self, Sampler, Sampling};
use super::sink::SpanSink;
use super::tracer::{Policy, ServiceTracer, TracerParts};

/// Owns the per-service tracer providers and where their spans go.
pub struct Tracing {
    sink: Option<Arc<dyn SpanSink>>,
    sampling: Sampling,
    sampler: Sampler,
    exporter: Option<Exporter>,
    services: Mutex<HashMap<Arc<str>, (SdkTracerProvider, ServiceTracer)>>,
    /// Every call counted, whatever is sampled.
    red: Arc<Red>,
    /// Every gate request of every connection, when kept.
    history: Option<Arc<History>>,
    /// Sends `red` by OTLP beside the spans, when they are exported.
    metrics_exporter: Option<MetricsExporter>,
}

impl Tracing {
    /// Tracing whose finished spans go to `sink` (none: spans are created but kept nowhere,
    /// unless exported).
    pub fn new(sink: Option<Arc<dyn SpanSink>>) -> Self {
        let sampling = Sampling::default();
        if let Some(s) = &sink {
            s.recycle_with(super::attrs::give);
        }
        Tracing {
            sink,
            sampler: sampling.sampler(),
            sampling,
            exporter: None,
            services: Mutex::new(HashMap::new()),
            red: Arc::default(),
            history: None,
            metrics_exporter: None,
        }
    }

    /// Counts calls into `red` (the registry a viewer reads) instead of a registry of its own;
    /// call before the first [`Tracing::tracer`].
    pub fn with_red(mut self, red: Arc<Red>) -> Self {
        self.red = red;
        self
    }

    /// The RED metrics of every call this process makes and serves.
    pub fn red(&self) -> &Arc<Red> {
        &self.red
    }

    /// Keeps every gate request in `history`.
    pub fn with_history(mut self, history: Option<Arc<History>>) -> Self {
        self.history = history;
        self
    }

    /// Every gate request of every connection, when kept.
    pub fn history(&self) -> Option<&Arc<History>> {
        self.history.as_ref()
    }

    /// Samples new traces by `sampling` instead of recording all of them; call before the
    /// first [`Tracing::tracer`].
    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampler = sampling.sampler();
        self.sampling = sampling;
        self
    }

    /// Also sends every finished span by OTLP/HTTP to the traces URL `url`, through a queue
    /// of `queue` spans, from the first [`Tracing::tracer`] on; the error says why the exporter
    /// could not start (spans are then not exported).
    pub(crate) fn export_to(&mut self, url: &str, queue: usize) -> Result<(), String> {
        self.exporter = Some(Exporter::start(url, queue)?);
        // The RED metrics go to the same collector: call `with_red` before this.
        self.metrics_exporter = Some(MetricsExporter::start(metrics_url(url), self.red.clone())?);
        Ok(())
    }

    /// The metrics exporter's counters, when metrics are exported.
    pub fn metrics_export_stats(&self) -> Option<MetricsExportStats> {
        self.metrics_exporter.as_ref().map(|e| e.stats())
    }

    /// The exporter's counters, when spans are exported.
    pub fn export_stats(&self) -> Option<ExportStats> {
        self.exporter.as_ref().map(|e| e.stats())
    }

    /// The tracer for `service`, created on first use.
    pub fn tracer(&self, service: &str) -> ServiceTracer {
        let mut map = self.services.locked();
        if let Some((_, t)) = map.get(service) {
            return t.clone();
        }
        let name: Arc<str> = Arc::from(service);
        let mut builder = SdkTracerProvider::builder().with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_string())
                .build(),
        );
        if let Some(sink) = &self.sink {
            builder = builder.with_span_processor(SinkProcessor {
                sink: sink.clone(),
                service: name.clone(),
            });
        }
        if let Some(exporter) = &self.exporter {
            builder = builder.with_span_processor(exporter.processor(name.clone()));
        }
        let provider = builder.build();
        let tracer = ServiceTracer::new(TracerParts {
            tracer: provider.tracer("mqrs"),
            policy: Arc::new(Policy {
                sampler: self.sampler.clone(),
                sampling: self.sampling.clone(),
                service: name.clone(),
                red: self.red.clone(),
                sink: self.sink.clone(),
                exporter: self.exporter.as_ref().map(|e| e.processor(name.clone())),
            }),
        });
        map.insert(name, (provider, tracer.clone()));
        tracer
    }

    /// Flushes and shuts every provider down, then exports what is queued (this may block on
    /// the collector for a few seconds: call it off the async runtime).
    pub fn shutdown(&self) {
        let map = std::mem::take(&mut *self.services.locked());
        for (_, (provider, _)) in map {
            let _ = provider.shutdown();
        }
        if let Some(e) = &self.exporter {
            e.shutdown();
        }
        if let Some(e) = &self.metrics_exporter {
            e.shutdown();
        }
        if let Some(s) = &self.sink {
            s.close();
        }
    }
}

/// Hands each finished span to the sink, tagged with its service.
#[derive(Debug)]
struct SinkProcessor {
    sink: Arc<dyn SpanSink>,
    service: Arc<str>,
}

impl SpanProcessor for SinkProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if sampling::wanted(&span) {
            self.sink.insert(span, self.service.clone());
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
