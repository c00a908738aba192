//! Answers from the RED metrics (`mqrs_base::red`), which count every call whatever was
//! sampled: the dashboard's `/api/latency` and the service graph's `/api/dependencies` rows,
//! with rows from the spans held only for what no metrics cover (a service that sends spans
//! but no metrics), each row saying its `source`.

use std::collections::HashSet;

use mqrs_base::red::{histogram, Edge, Kind, Row};
use serde_json::{json, Value};

use crate::store::TraceStore;

/// Where a row's figures come from.
pub const FROM_METRICS: &str = "metrics";
/// A row computed from the spans the store holds (sampled, and only those not evicted).
pub const FROM_SPANS: &str = "spans";

/// `/api/latency` rows since `since_us` (µs since the epoch) of span kind `kind` (any when
/// `None`): every operation the metrics count, then those only the spans show; slowest p95
/// first.
pub fn latency(store: &TraceStore, since_us: u64, kind: Option<&str>) -> Vec<Value> {
    let (from_s, to_s) = (since_us / 1_000_000, u64::MAX);
    let mut covered = HashSet::new();
    let mut rows: Vec<(u64, Value)> = Vec::new();
    for r in store.red().rows(from_s, to_s) {
        let k = r.key.kind.as_str();
        if kind.is_some_and(|want| want != k) {
            continue;
        }
        covered.insert((r.key.service.to_string(), r.key.operation.to_string(), k));
        rows.push((r.all.percentile_ns(95.0) / 1000, latency_row(&r)));
    }
    for o in store.latency(since_us) {
        if kind.is_some_and(|want| want != o.kind)
            || covered.contains(&(o.service.clone(), o.operation.clone(), o.kind))
        {
            continue;
        }
        let mut v = json!(o);
        v["source"] = json!(FROM_SPANS);
        rows.push((o.p95_us, v));
    }
    rows.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1["operation"].as_str().cmp(&b.1["operation"].as_str()))
    });
    rows.into_iter().map(|(_, v)| v).collect()
}

fn latency_row(r: &Row) -> Value {
    let us = |ns: u64| ns / 1000;
    let by_error: serde_json::Map<String, Value> = r
        .by_error
        .iter()
        .map(|(e, n)| (e.to_string(), json!(n)))
        .collect();
    json!({
        "service": &*r.key.service,
        "operation": &*r.key.operation,
        "kind": r.key.kind.as_str(),
        "count": r.all.count,
        "errors": r.errors,
        "errors_by_type": by_error,
        "avg_us": us(r.all.mean_ns()),
        "p50_us": us(r.all.percentile_ns(50.0)),
        "p95_us": us(r.all.percentile_ns(95.0)),
        "p99_us": us(r.all.percentile_ns(99.0)),
        "max_us": us(r.all.max_ns),
        "source": FROM_METRICS,
    })
}

/// `/api/dependencies` rows in `from_us..=to_us`: the edges the callers' metrics count, then
/// the edges only the spans show.
pub fn dependencies(store: &TraceStore, from_us: u64, to_us: u64) -> Vec<Value> {
    let edges: Vec<Edge> = store
        .red()
        .edges(from_us / 1_000_000, to_us.div_ceil(1_000_000));
    let covered: HashSet<(String, String)> = edges
        .iter()
        .map(|e| (e.parent.to_string(), e.child.to_string()))
        .collect();
    let mut out: Vec<Value> = edges
        .iter()
        .map(|e| {
            json!({"parent": &*e.parent, "child": &*e.child, "callCount": e.calls,
                   "errorCount": e.errors, "p95Us": e.all.percentile_ns(95.0) / 1000,
                   "source": FROM_METRICS})
        })
        .collect();
    for d in store.dependencies(from_us, to_us) {
        if covered.contains(&(d.parent.clone(), d.child.clone())) {
            continue;
        }
        out.push(
            json!({"parent": d.parent, "child": d.child, "callCount": d.calls,
                        "errorCount": d.errors, "p95Us": d.p95_us, "source": FROM_SPANS}),
        );
    }
    out
}

/// The registry's size for `/api/stats`.
pub fn stats(store: &TraceStore) -> Value {
    let s = store.red().stats();
    json!({
        "series": s.series,
        "bytes": s.bytes,
        "limit_bytes": s.limit,
        "squeezed": s.squeezed,
        "slots": format!(
            "{} s for the last {} min, then {} min for the last {} h",
            mqrs_base::red::RECENT_SLOT_S,
            mqrs_base::red::RECENT_SPAN_S / 60,
            mqrs_base::red::OLDER_SLOT_S / 60,
            mqrs_base::red::OLDER_SPAN_S / 3600
        ),
        "histogram": format!(
            "exponential, scale {}: percentiles within {:.1} %",
            mqrs_base::red::histogram::SCALE,
            mqrs_base::red::histogram::RELATIVE_ERROR * 100.0
        ),
    })
}

/// Appends every series since the process started to `out` as Prometheus classic histograms
/// (text format 0.0.4): `rpc_server_call_duration_seconds` and
/// `rpc_client_call_duration_seconds`, labelled as OpenTelemetry's RPC metrics are when a
/// Prometheus exporter writes them (`service_name`, `rpc_system_name`, `rpc_method`, and
/// `error_type` on failed calls).
pub fn prometheus(store: &TraceStore, out: &mut String) {
    use std::fmt::Write as _;
    let all = store.red().all();
    for kind in [Kind::Server, Kind::Client] {
        let name = match kind {
            Kind::Server => "rpc_server_call_duration_seconds",
            Kind::Client => "rpc_client_call_duration_seconds",
        };
        let help = match kind {
            Kind::Server => "Duration of calls served (every call, whatever was sampled).",
            Kind::Client => "Duration of calls made, as the caller saw them (every call).",
        };
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        for s in all.iter().filter(|s| s.key().kind == kind) {
            let k = s.key();
            for (error, t) in s.totals() {
                let mut labels = format!(
                    "service_name=\"{}\",rpc_system_name=\"mqrs\",rpc_method=\"{}\"",
                    escape(&k.service),
                    escape(&k.method)
                );
                if let Some(e) = &error {
                    let _ = write!(labels, ",error_type=\"{}\"", escape(e));
                }
                let mut cumulative = 0;
                for (i, bound) in histogram::CLASSIC_BOUNDS.iter().enumerate() {
                    cumulative += t.classic[i];
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", t.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", t.sum_ns as f64 / 1e9);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", t.count);
            }
        }
    }
}

/// A label value as the Prometheus text format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
