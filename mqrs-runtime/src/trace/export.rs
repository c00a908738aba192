//! OTLP export: finished spans of every module go through one bounded queue to one export
//! thread, which batches them and sends them by OTLP/HTTP protobuf (`opentelemetry-otlp`) to a
//! collector (mqrs's own, Jaeger, Tempo, an OpenTelemetry Collector). Spans that do not fit in
//! the queue are dropped, counted and logged; a clean stop exports what is queued.
//!
//! The thread is woken once per batch, not once per span: by the first span of a batch, then
//! by the span that fills it or by its deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mqrs_base::sync::Locked;
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;

/// Most spans sent in one export request.
const MAX_BATCH: usize = 512;
/// Longest a finished span waits before it is sent.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Counters of the exporter, read with [`App::export_stats`](crate::App::export_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// Spans in requests the collector refused or that failed.
    pub failed: u64,
}

mqrs_base::counters! {
    /// The counters behind [`ExportStats`].
    struct Counters => ExportStats { exported, dropped, failed }
}

/// What the span processors share with the export thread besides the queue: how many spans
/// are queued, to wake the thread when a whole batch is.
#[derive(Debug, Default)]
struct Filling {
    queued: AtomicUsize,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Filling {
    /// One more span is about to be queued (counted first, so the thread's count never goes
    /// below zero); true when it makes a whole batch.
    fn adding(&self) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed) + 1 == MAX_BATCH
    }

    /// Wakes the thread: a whole batch is queued.
    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// One span left the queue (or did not enter it).
    fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One queue and one thread that export every module's spans.
pub(crate) struct Exporter {
    tx: SyncSender<(Arc<str>, SpanData)>,
    filling: Arc<Filling>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Exporter {
    /// Starts the export thread for the collector's traces URL `url` (see [`traces_url`]),
    /// with room for `queue` spans.
    pub(crate) fn start(url: &str, queue: usize) -> Result<Exporter, String> {
        let url = url.to_string();
        let (tx, rx) = sync_channel(queue.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let filling = Arc::new(Filling::default());
        let (s, c, f) = (stop.clone(), counters.clone(), filling.clone());
        let thread = std::thread::Builder::new()
            .name("mqrs-otlp-export".into())
            .spawn(move || run(url, rx, s, c, &f))
            .map_err(|e| format!("cannot start the OTLP export thread: {e}"))?;
        let _ = filling.thread.set(thread.thread().clone());
        Ok(Exporter {
            tx,
            filling,
            stop,
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The span processor a module's tracer provider uses to feed this exporter.
    pub(crate) fn processor(&self, service: Arc<str>) -> ExportProcessor {
        ExportProcessor {
            tx: self.tx.clone(),
            filling: self.filling.clone(),
            service,
            counters: self.counters.clone(),
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> ExportStats {
        self.counters.snapshot()
    }

    /// Exports what is queued, then stops the thread.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.filling.thread.get() {
            t.unpark();
        }
        let thread = self.thread.locked().take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The collector's traces URL for `endpoint`.
pub(crate) fn traces_url(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim().trim_end_matches('/');
    if !e.starts_with("http://") && !e.starts_with("https://") {
        return Err(format!(
            "OTLP endpoint `{endpoint}` must be an http:// URL, e.g. http://127.0.0.1:4318"
        ));
    }
    Ok(if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    })
}

/// Hands each finished span of one module to the export queue, without waiting.
#[derive(Debug)]
pub(crate) struct ExportProcessor {
    tx: SyncSender<(Arc<str>, SpanData)>,
    filling: Arc<Filling>,
    service: Arc<str>,
    counters: Arc<Counters>,
}

impl SpanProcessor for ExportProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !crate::trace::sampling::wanted(&span) {
            return;
        }
        let whole = self.filling.adding();
        match self.tx.try_send((self.service.clone(), span)) {
            Ok(()) if whole => self.filling.wake(),
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.filling.taken();
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(
                        dropped = n + 1,
                        "OTLP export queue full: spans dropped ([trace] otlp_queue)"
                    );
                }
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export thread: batches by size or age, one OTLP exporter per service (its resource).
fn run(
    url: String,
    rx: Receiver<(Arc<str>, SpanData)>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    filling: &Filling,
) {
    let mut exporters: HashMap<Arc<str>, opentelemetry_otlp::SpanExporter> = HashMap::new();
    let mut batch: Vec<(Arc<str>, SpanData)> = Vec::with_capacity(MAX_BATCH);
    let mut oldest = Instant::now();
    let mut warned = false;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        while let Ok(item) = rx.try_recv() {
            filling.taken();
            if batch.is_empty() {
                oldest = Instant::now();
            }
            batch.push(item);
            if batch.len() >= MAX_BATCH {
                send(&url, &mut exporters, &mut batch, &counters, &mut warned);
            }
        }
        if stopping {
            send(&url, &mut exporters, &mut batch, &counters, &mut warned);
            for (_, e) in exporters.drain() {
                let _ = e.shutdown();
            }
            return;
        }
        if batch.is_empty() {
            // Idle: the next span wakes this thread.
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(item) => {
                    filling.taken();
                    oldest = Instant::now();
                    batch.push(item);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        let left = MAX_DELAY.saturating_sub(oldest.elapsed());
        if left.is_zero() {
            send(&url, &mut exporters, &mut batch, &counters, &mut warned);
            continue;
        }
        // Filling: woken by the span that makes a whole batch, or at the batch's deadline
        // (the stop flag is looked at every 100 ms too).
        std::thread::park_timeout(left.min(Duration::from_millis(100)));
    }
}

fn send(
    url: &str,
    exporters: &mut HashMap<Arc<str>, opentelemetry_otlp::SpanExporter>,
    batch: &mut Vec<(Arc<str>, SpanData)>,
    counters: &Counters,
    warned: &mut bool,
) {
    let mut by_service: HashMap<Arc<str>, Vec<SpanData>> = HashMap::new();
    for (service, span) in batch.drain(..) {
        by_service.entry(service).or_default().push(span);
    }
    for (service, spans) in by_service {
        let n = spans.len() as u64;
        let exporter = match exporters.get(&service) {
            Some(e) => e,
            None => match new_exporter(url, &service) {
                Ok(e) => exporters.entry(service.clone()).or_insert(e),
                Err(e) => {
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot build the OTLP exporter; spans lost");
                    continue;
                }
            },
        };
        match futures_executor::block_on(exporter.export(spans)) {
            Ok(()) => {
                counters.exported.fetch_add(n, Ordering::Relaxed);
                *warned = false;
            }
            Err(e) => {
                counters.failed.fetch_add(n, Ordering::Relaxed);
                if !*warned {
                    tracing::warn!(collector = %url, error = %e, "OTLP export failed; spans lost");
                    *warned = true;
                }
            }
        }
    }
}

/// An OTLP/HTTP protobuf exporter whose resource names `service`. Built on the export thread:
/// its blocking HTTP client must not live inside the async runtime.
fn new_exporter(url: &str, service: &str) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let mut e = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    e.set_resource(
        &Resource::builder_empty()
            .with_service_name(service.to_string())
            .build(),
    );
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn endpoints() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://tempo:4318/v1/traces/").as_deref(),
            Ok("http://tempo:4318/v1/traces")
        );
        assert!(traces_url("127.0.0.1:4318").is_err());
    }
}
