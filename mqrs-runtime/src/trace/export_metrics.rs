//! OTLP metrics export: every few seconds, the RED metrics' 10 s slots completed since the last
//! export go by OTLP/HTTP protobuf to the collector's `/v1/metrics` as OpenTelemetry's RPC
//! metrics (`rpc.server.call.duration`, `rpc.client.call.duration`, seconds), one exponential
//! histogram point per slot, operation and outcome, with *delta* temporality: each point counts
//! its slot's calls once, so a receiver adds points up (mqrs's collector merges them into its
//! own registry at the slot's time). A clean stop sends the slot in progress too.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mqrs_base::red::{histogram, Kind, Red, Series, Tally, RECENT_SLOT_S, RECENT_SPAN_S};
use mqrs_base::sync::Locked;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// How often completed slots are sent.
const EVERY: Duration = Duration::from_secs(5);
/// Oldest slots kept for a collector that is down: sent once it is back.
const BACKLOG_S: u64 = 300;

/// Counters of the metrics exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsExportStats {
    /// Data points the collector accepted.
    pub points: u64,
    /// Requests that failed or were refused.
    pub failed: u64,
    /// Data points given up because the collector was unreachable for longer than the backlog.
    pub dropped: u64,
}

mqrs_base::counters! {
    /// The counters behind [`MetricsExportStats`].
    struct Counters => MetricsExportStats { points, failed, dropped }
}

/// The thread that exports one registry.
pub(crate) struct MetricsExporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl MetricsExporter {
    /// Starts exporting `red` to the metrics URL `url`.
    pub(crate) fn start(url: String, red: Arc<Red>) -> Result<MetricsExporter, String> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let counters = Arc::new(Counters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("mqrs-otlp-metrics".into())
            .spawn(move || run(&url, &red, &s, &c))
            .map_err(|e| format!("cannot start the OTLP metrics thread: {e}"))?;
        Ok(MetricsExporter {
            stop,
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The counters.
    pub(crate) fn stats(&self) -> MetricsExportStats {
        self.counters.snapshot()
    }

    /// Sends what is counted so far, then stops the thread.
    pub(crate) fn shutdown(&self) {
        *self.stop.0.locked() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.locked().take() {
            let _ = t.join();
        }
    }
}

/// The collector's metrics URL for the traces URL or endpoint `url`.
pub(crate) fn metrics_url(url: &str) -> String {
    let e = url.trim().trim_end_matches('/');
    let base = e.strip_suffix("/v1/traces").unwrap_or(e);
    format!("{base}/v1/metrics")
}

fn run(url: &str, red: &Red, stop: &(Mutex<bool>, Condvar), counters: &Counters) {
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "OTLP metrics export is off: no HTTP client");
            return;
        }
    };
    let slot = |s: u64| s - s % RECENT_SLOT_S;
    let mut next = slot(mqrs_base::red::now_s());
    let mut warned = false;
    loop {
        let stopping = {
            let g = stop.0.locked();
            let (g, _) = stop
                .1
                .wait_timeout_while(g, EVERY, |stopped| !*stopped)
                .unwrap_or_else(|e| e.into_inner());
            *g
        };
        let now = mqrs_base::red::now_s();
        // Complete slots only, unless stopping: then the one in progress too.
        let upto = if stopping {
            slot(now) + RECENT_SLOT_S
        } else {
            slot(now)
        };
        if upto > next {
            let request = encode(red, next, upto);
            let points = count_points(&request);
            let sent = points == 0 || post(&client, url, &request, &mut warned);
            if sent {
                counters.points.fetch_add(points, Relaxed);
                next = upto;
            } else {
                counters.failed.fetch_add(1, Relaxed);
                // Kept for a later try, up to the backlog (and never past what the 10 s slots
                // still hold).
                let oldest = upto.saturating_sub(BACKLOG_S.min(RECENT_SPAN_S));
                if next < oldest {
                    counters
                        .dropped
                        .fetch_add(count_points(&encode(red, next, oldest)), Relaxed);
                    next = oldest;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    request: &ExportMetricsServiceRequest,
    warned: &mut bool,
) -> bool {
    let result = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send();
    let problem = match result {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("the collector answered {}", r.status())),
        Err(e) => Some(e.to_string()),
    };
    match problem {
        None => {
            *warned = false;
            true
        }
        Some(p) => {
            if !*warned {
                tracing::warn!(url, problem = %p, "OTLP metrics export failed; will retry");
                *warned = true;
            }
            false
        }
    }
}

fn count_points(r: &ExportMetricsServiceRequest) -> u64 {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
            _ => 0,
        })
        .sum()
}

/// The slots starting in `from_s..to_s` of every series of `red`, one resource per service.
pub(crate) fn encode(red: &Red, from_s: u64, to_s: u64) -> ExportMetricsServiceRequest {
    // service -> (server points, client points)
    type Points = (
        Vec<ExponentialHistogramDataPoint>,
        Vec<ExponentialHistogramDataPoint>,
    );
    let mut by_service: BTreeMap<Arc<str>, Points> = BTreeMap::new();
    for series in red.all() {
        let slots = series.recent_slots(from_s, to_s);
        if slots.is_empty() {
            continue;
        }
        let key = series.key();
        let e = by_service.entry(key.service.clone()).or_default();
        let points = match key.kind {
            Kind::Server => &mut e.0,
            Kind::Client => &mut e.1,
        };
        for (start, error, tally) in slots {
            points.push(point(&series, start, error.as_deref(), &tally));
        }
    }
    let resource_metrics = by_service
        .into_iter()
        .map(|(service, (server, client))| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", &service),
                    text("service.instance.id", red.instance()),
                    text("telemetry.sdk.name", "mqrs"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "mqrs".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: [
                    (
                        "rpc.server.call.duration",
                        "Duration of calls served.",
                        server,
                    ),
                    (
                        "rpc.client.call.duration",
                        "Duration of calls made.",
                        client,
                    ),
                ]
                .into_iter()
                .filter(|(_, _, p)| !p.is_empty())
                .map(|(name, description, data_points)| Metric {
                    name: name.into(),
                    description: description.into(),
                    unit: "s".into(),
                    data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                    })),
                    ..Default::default()
                })
                .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn point(
    series: &Series,
    start_s: u64,
    error: Option<&str>,
    t: &Tally,
) -> ExponentialHistogramDataPoint {
    let key = series.key();
    let mut attributes = vec![
        text("rpc.system.name", "mqrs"),
        text("rpc.method", &key.method),
    ];
    if let Some(e) = error {
        attributes.push(text("error.type", e));
    }
    if key.operation != key.method {
        // The name this operation's spans have (the gate's `gate Module/HD_x`), so the
        // receiver's figures and traces meet.
        attributes.push(text("mqrs.operation", &key.operation));
    }
    let (lo, counts) = t.buckets.parts();
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start_s * 1_000_000_000,
        time_unix_nano: (start_s + RECENT_SLOT_S) * 1_000_000_000,
        count: t.count,
        sum: Some(t.sum_ns as f64 / 1e9),
        scale: histogram::SCALE,
        zero_count: 0,
        positive: Some(Buckets {
            offset: lo,
            bucket_counts: counts.iter().map(|&c| u64::from(c)).collect(),
        }),
        negative: None,
        flags: 0,
        exemplars: Vec::new(),
        min: Some(t.min_ns as f64 / 1e9),
        max: Some(t.max_ns as f64 / 1e9),
        zero_threshold: 0.0,
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_become_delta_points_of_opentelemetry_rpc_metrics() {
        let red = Red::default();
        let s = red
            .table(Kind::Server, "Gate")
            .series("Chat/HD_Say", || "gate Chat/HD_Say".into());
        s.record_at(1_000_005, 2_000_000, None);
        s.record_at(1_000_006, 4_000_000, None);
        s.record_at(1_000_015, 1_000_000, Some("timeout"));
        let r = encode(&red, 1_000_000, 1_000_020);
        assert_eq!(count_points(&r), 2);
        let rm = &r.resource_metrics[0];
        let m = &rm.scope_metrics[0].metrics[0];
        assert_eq!(
            (m.name.as_str(), m.unit.as_str()),
            ("rpc.server.call.duration", "s")
        );
        let Some(metric::Data::ExponentialHistogram(h)) = &m.data else {
            panic!("exponential histogram")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.scale, p.start_time_unix_nano),
            (2, 3, 1_000_000_000_000_000)
        );
        assert_eq!(
            p.positive
                .as_ref()
                .map(|b| b.bucket_counts.iter().sum::<u64>()),
            Some(2)
        );
        assert!((p.sum.unwrap_or_default() - 0.006).abs() < 1e-12);
        let attr = |p: &ExponentialHistogramDataPoint, k: &str| {
            p.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| match &a.value {
                    Some(AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    }) => Some(s.clone()),
                    _ => None,
                })
        };
        assert_eq!(
            attr(p, "mqrs.operation").as_deref(),
            Some("gate Chat/HD_Say")
        );
        assert_eq!(
            attr(&h.data_points[1], "error.type").as_deref(),
            Some("timeout")
        );
        // Nothing in a window with no slots.
        assert_eq!(count_points(&encode(&red, 1_000_020, 1_000_100)), 0);
        assert_eq!(
            metrics_url("http://h:4318/v1/traces"),
            "http://h:4318/v1/metrics"
        );
        assert_eq!(metrics_url("http://h:4318/"), "http://h:4318/v1/metrics");
    }
}
