//! OTLP metrics into the RED registry: the RPC duration histograms of OpenTelemetry's
//! conventions (`rpc.server.call.duration` and `rpc.client.call.duration` in seconds, and the
//! older `rpc.server.duration` / `rpc.client.duration` in ms) from any process, mqrs's or an
//! OpenTelemetry SDK's, merged into this process's registry at each point's time. Exponential
//! histograms of any scale and explicit-bucket histograms are taken; delta points are added as
//! they are, cumulative ones by their difference from the stream's previous point. Every other
//! metric is skipped and counted.

use std::collections::HashMap;
use std::sync::Mutex;

use mqrs_base::red::{histogram, Kind, Red, Tally, Totals};
use mqrs_base::sync::Locked;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint,
};

/// Most cumulative streams remembered (for their differences); past it, the oldest half is
/// forgotten and their next point counts as a first one.
const MAX_STREAMS: usize = 4096;

/// What one request brought.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// Points merged.
    pub points: u64,
    /// Points skipped: other metrics, no `rpc.method`, or this process's own.
    pub skipped: u64,
}

/// The previous cumulative point of each stream, by (resource, metric, attributes).
#[derive(Debug, Default)]
pub struct Streams(Mutex<HashMap<String, Tally>>);

/// Merges the RPC duration points of `req` into `red`.
pub fn merge(red: &Red, streams: &Streams, req: &ExportMetricsServiceRequest) -> Merged {
    let mut out = Merged::default();
    for rm in &req.resource_metrics {
        let attrs = rm
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let service = text(attrs, "service.name").unwrap_or("unknown_service");
        let instance = text(attrs, "service.instance.id").unwrap_or("");
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let (kind, unit_ns) = match (m.name.as_str(), m.unit.as_str()) {
                ("rpc.server.call.duration", u) => (Kind::Server, unit(u, 1e9)),
                ("rpc.client.call.duration", u) => (Kind::Client, unit(u, 1e9)),
                ("rpc.server.duration", u) => (Kind::Server, unit(u, 1e6)),
                ("rpc.client.duration", u) => (Kind::Client, unit(u, 1e6)),
                _ => {
                    out.skipped += points(m) as u64;
                    continue;
                }
            };
            let cumulative = |t: i32| t == AggregationTemporality::Cumulative as i32;
            // Each point's attributes, time and calls, and whether it counts from the start.
            let tallies: Vec<(&[KeyValue], u64, Tally, bool)> = match &m.data {
                Some(metric::Data::ExponentialHistogram(h)) => h
                    .data_points
                    .iter()
                    .map(|p| (&p.attributes[..], p.time_unix_nano, exp_tally(p, unit_ns)))
                    .map(|(a, t, tally)| (a, t, tally, cumulative(h.aggregation_temporality)))
                    .collect(),
                Some(metric::Data::Histogram(h)) => h
                    .data_points
                    .iter()
                    .map(|p| {
                        (
                            &p.attributes[..],
                            p.time_unix_nano,
                            explicit_tally(p, unit_ns),
                        )
                    })
                    .map(|(a, t, tally)| (a, t, tally, cumulative(h.aggregation_temporality)))
                    .collect(),
                _ => {
                    out.skipped += points(m) as u64;
                    continue;
                }
            };
            for (attributes, time_ns, tally, cumulative) in tallies {
                let method = text(attributes, "rpc.method");
                let Some(method) = method.filter(|_| instance != red.instance()) else {
                    out.skipped += 1;
                    continue;
                };
                let tally = if cumulative {
                    let key = stream_key(service, instance, &m.name, attributes);
                    match streams.difference(key, tally) {
                        Some(t) => t,
                        None => continue,
                    }
                } else {
                    tally
                };
                if tally.count == 0 {
                    continue;
                }
                let operation = text(attributes, "mqrs.operation").unwrap_or(method);
                let series = red
                    .table(kind, service)
                    .series(method, || operation.to_string());
                // Counted at the end of the point's interval, as a local call is at its end.
                let at_s = (time_ns / 1_000_000_000).saturating_sub(1);
                series.merge_at(
                    at_s,
                    text(attributes, "error.type"),
                    &tally,
                    &totals_of(&tally),
                );
                out.points += 1;
            }
        }
    }
    out
}

impl Streams {
    /// The calls since the stream's previous cumulative point (all of them for its first, or
    /// after a reset); `None` when nothing new.
    fn difference(&self, key: String, now: Tally) -> Option<Tally> {
        let mut g = self.0.locked();
        if g.len() >= MAX_STREAMS && !g.contains_key(&key) {
            let drop: Vec<String> = g.keys().take(MAX_STREAMS / 2).cloned().collect();
            for k in drop {
                g.remove(&k);
            }
        }
        let prev = g.insert(key, now.clone());
        let Some(prev) = prev.filter(|p| p.count <= now.count) else {
            return Some(now);
        };
        if prev.count == now.count {
            return None;
        }
        let mut d = Tally {
            count: now.count - prev.count,
            sum_ns: now.sum_ns.saturating_sub(prev.sum_ns),
            ..Tally::default()
        };
        let (plo, pc) = prev.buckets.parts();
        let before = |i: i32| -> u32 {
            usize::try_from(i - plo)
                .ok()
                .and_then(|j| pc.get(j).copied())
                .unwrap_or(0)
        };
        let (lo, counts) = now.buckets.parts();
        let (mut first, mut last) = (None, None);
        for (j, &c) in counts.iter().enumerate() {
            let i = lo + j as i32;
            let n = c.saturating_sub(before(i));
            if n > 0 {
                d.buckets.add(i, n, true);
                first = first.or(Some(i));
                last = Some(i);
            }
        }
        // The difference's extremes are known only to their buckets.
        d.min_ns = first.map_or(0, histogram::middle_ns);
        d.max_ns = last.map_or(0, histogram::middle_ns);
        Some(d)
    }
}

fn stream_key(service: &str, instance: &str, metric: &str, attributes: &[KeyValue]) -> String {
    let mut parts: Vec<String> = attributes
        .iter()
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect();
    parts.sort();
    format!(
        "{service}\u{0}{instance}\u{0}{metric}\u{0}{}",
        parts.join("\u{0}")
    )
}

/// Nanoseconds per unit of `u`, `default` when it is not one of the time units.
fn unit(u: &str, default: f64) -> f64 {
    match u {
        "s" => 1e9,
        "ms" => 1e6,
        "us" | "µs" => 1e3,
        "ns" => 1.0,
        _ => default,
    }
}

fn points(m: &opentelemetry_proto::tonic::metrics::v1::Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn ns(v: f64, unit_ns: f64) -> u64 {
    (v * unit_ns).clamp(0.0, u64::MAX as f64) as u64
}

/// An exponential histogram point as a tally at scale 3: finer scales fold their buckets in,
/// coarser ones put each bucket's calls at its middle.
fn exp_tally(p: &ExponentialHistogramDataPoint, unit_ns: f64) -> Tally {
    let mut t = Tally::default();
    let shift = p.scale - histogram::SCALE;
    // The bucket an index of this point's scale maps to, in a unit of `unit_ns`.
    let to_ours = |i: i64| -> i32 {
        let i = if shift >= 0 {
            i >> shift.min(62)
        } else {
            let k = (-shift).min(30);
            (i << k) + (1 << k) / 2
        };
        // Our buckets count seconds: shift by the unit's power of two.
        let unit_shift = (unit_ns / 1e9).log2() * f64::from(1 << histogram::SCALE);
        (i as f64 + unit_shift).floor() as i32
    };
    let mut add = |index: i32, n: u64| {
        let index = index.clamp(histogram::MIN_INDEX, histogram::MAX_INDEX);
        t.buckets
            .add(index, u32::try_from(n).unwrap_or(u32::MAX), true);
    };
    if p.zero_count > 0 {
        add(histogram::MIN_INDEX, p.zero_count);
    }
    if let Some(b) = &p.positive {
        for (j, &n) in b.bucket_counts.iter().enumerate() {
            if n > 0 {
                add(to_ours(i64::from(b.offset) + j as i64), n);
            }
        }
    }
    finish(t, (p.count, p.sum, p.min, p.max), unit_ns)
}

/// An explicit-bucket histogram point as a tally: each bucket's calls at its middle.
fn explicit_tally(p: &HistogramDataPoint, unit_ns: f64) -> Tally {
    let mut t = Tally::default();
    let bounds: Vec<u64> = p.explicit_bounds.iter().map(|&b| ns(b, unit_ns)).collect();
    for (i, &n) in p.bucket_counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let lo = if i == 0 {
            0
        } else {
            bounds.get(i - 1).copied().unwrap_or(0)
        };
        let hi = bounds.get(i).copied().unwrap_or(lo.saturating_mul(2));
        let mid = if lo == 0 {
            hi / 2
        } else {
            ((lo as f64) * (hi as f64)).sqrt() as u64
        };
        t.buckets.add(
            histogram::index_of(mid),
            u32::try_from(n).unwrap_or(u32::MAX),
            true,
        );
    }
    finish(t, (p.count, p.sum, p.min, p.max), unit_ns)
}

/// `t`'s buckets with the point's count, sum, min and max (in units of `unit_ns`).
fn finish(
    mut t: Tally,
    (count, sum, min, max): (u64, Option<f64>, Option<f64>, Option<f64>),
    unit_ns: f64,
) -> Tally {
    t.count = count;
    t.sum_ns = sum.map_or(0, |s| ns(s, unit_ns));
    let (min, max) = (min.map(|v| ns(v, unit_ns)), max.map(|v| ns(v, unit_ns)));
    fill_extremes(&mut t, min, max);
    t
}

/// Min and max as given, else the middles of the first and last buckets used.
fn fill_extremes(t: &mut Tally, min: Option<u64>, max: Option<u64>) {
    let (lo, counts) = t.buckets.parts();
    let first = counts.iter().position(|&c| c > 0).map(|j| lo + j as i32);
    let last = counts.iter().rposition(|&c| c > 0).map(|j| lo + j as i32);
    t.min_ns = min.unwrap_or_else(|| first.map_or(0, histogram::middle_ns));
    t.max_ns = max.unwrap_or_else(|| last.map_or(0, histogram::middle_ns));
}

/// The classic buckets of a tally's calls, each at its bucket's middle.
fn totals_of(t: &Tally) -> Totals {
    let mut totals = Totals {
        count: t.count,
        sum_ns: t.sum_ns,
        ..Totals::default()
    };
    let (lo, counts) = t.buckets.parts();
    for (j, &c) in counts.iter().enumerate() {
        let mid = histogram::middle_ns(lo + j as i32).clamp(t.min_ns, t.max_ns.max(t.min_ns));
        totals.classic[histogram::classic_index(mid)] += u64::from(c);
    }
    totals
}
