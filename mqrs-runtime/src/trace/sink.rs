//! [`SpanSink`]: where a process's finished spans are kept, beside any export. The embedded
//! trace store (`mqrs_viewer::TraceStore`, with the `viewer` feature) is one; an app that only
//! exports to Jaeger or Tempo has none and compiles no trace backend.

use std::sync::Arc;

use opentelemetry_sdk::trace::SpanData;

/// Takes the finished spans of every module of a process.
pub trait SpanSink: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps `span`, recorded by the module `service`. Called on the thread that ended the
    /// span: it must not block.
    fn insert(&self, span: SpanData, service: Arc<str>);

    /// Called once when tracing starts with this sink: a sink that is done with a span's
    /// attribute list before it returns from [`SpanSink::insert`] may give the list back
    /// through `give`, so the next span reuses it instead of allocating one. Default: lists
    /// are freed.
    fn recycle_with(&self, give: fn(Vec<opentelemetry::KeyValue>)) {
        let _ = give;
    }

    /// The process stops: writes what is still held (this may block; it is called off the
    /// async runtime).
    fn close(&self) {}
}

#[cfg(feature = "viewer")]
impl SpanSink for mqrs_viewer::TraceStore {
    fn insert(&self, span: SpanData, service: Arc<str>) {
        mqrs_viewer::TraceStore::insert(self, mqrs_viewer::StoredSpan::from_sdk(span, service));
    }

    fn recycle_with(&self, give: fn(Vec<opentelemetry::KeyValue>)) {
        self.set_tag_recycler(give);
    }

    fn close(&self) {
        mqrs_viewer::TraceStore::close(self);
    }
}
