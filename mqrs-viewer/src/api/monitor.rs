//! Jaeger's metrics API, which the Jaeger UI's Monitor tab reads: `GET /api/metrics/latencies`,
//! `/calls` and `/errors`, answered from the RED metrics as Jaeger answers from Prometheus: a
//! bare `MetricFamily` of gauges, one point per `step` over the `lookback` ending at `endTs`,
//! each point computed over the `ratePer` window ending there.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mqrs_base::red::{Key, Kind, Point};
use serde_json::{json, Value};

use super::search_params::{self, Params};
use crate::http::answer::{error, heavy};
use crate::store::TraceStore;

/// Most points one series of an answer has; a finer `step` is widened to fit.
const MAX_POINTS: u64 = 3000;

/// Which figure an answer carries.
#[derive(Clone, Copy)]
enum Figure {
    /// The `quantile` latency of the calls, ms.
    Latency(f64),
    /// Calls per second.
    Calls,
    /// Failed calls as a fraction of all calls.
    Errors,
}

/// `GET /api/metrics/latencies`.
pub async fn latencies(store: State<Arc<TraceStore>>, q: Query<Vec<(String, String)>>) -> Response {
    let quantile = match one(&q, "quantile").map(|v| (v, v.parse::<f64>())) {
        Some((_, Ok(v))) if (0.0..=1.0).contains(&v) => v,
        Some((v, _)) => {
            return bad(format!(
                "unable to parse param 'quantile': '{v}' is not a number in 0..1"
            ))
        }
        None => return bad("unable to parse param 'quantile': it is required".into()),
    };
    answer(store, q, Figure::Latency(quantile)).await
}

/// `GET /api/metrics/calls`.
pub async fn calls(store: State<Arc<TraceStore>>, q: Query<Vec<(String, String)>>) -> Response {
    answer(store, q, Figure::Calls).await
}

/// `GET /api/metrics/errors`.
pub async fn errors(store: State<Arc<TraceStore>>, q: Query<Vec<(String, String)>>) -> Response {
    answer(store, q, Figure::Errors).await
}

fn one<'a>(q: &'a Params, k: &'a str) -> Option<&'a str> {
    search_params::all(q, k).last()
}

fn bad(msg: String) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

/// The parameters every metrics request shares, with Jaeger's defaults.
struct Ask {
    services: Vec<String>,
    by_operation: bool,
    kinds: Vec<Kind>,
    end_ms: u64,
    lookback_ms: u64,
    step_ms: u64,
    rate_per_ms: u64,
}

fn parse(q: &Params) -> Result<Ask, String> {
    // The Jaeger UI joins several services with commas inside one `service=` value.
    let services: Vec<String> = search_params::all(q, "service")
        .flat_map(|v| v.split(','))
        .map(|s| s.strip_prefix("service=").unwrap_or(s).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if services.is_empty() {
        return Err("please provide at least one service name".into());
    }
    let by_operation = match one(q, "groupByOperation") {
        None => false,
        Some(v) => parse_bool(v).ok_or_else(|| {
            format!("unable to parse param 'groupByOperation': '{v}' is not a boolean")
        })?,
    };
    let mut kinds = Vec::new();
    let mut unsupported = false;
    for k in search_params::all(q, "spanKind") {
        match k.to_ascii_lowercase().trim_start_matches("span_kind_") {
            "server" => kinds.push(Kind::Server),
            "client" => kinds.push(Kind::Client),
            // Kinds no call of mqrs has: valid, and nothing is counted for them.
            "internal" | "producer" | "consumer" | "unspecified" => unsupported = true,
            other => return Err(format!("unsupported span kind: '{other}'")),
        }
    }
    if kinds.is_empty() && !unsupported {
        kinds.push(Kind::Server);
    }
    let ms = |k: &str, default: u64| -> Result<u64, String> {
        match one(q, k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("unable to parse param '{k}': '{v}' is not milliseconds")),
        }
    };
    Ok(Ask {
        services,
        by_operation,
        kinds,
        end_ms: ms("endTs", search_params::now_us() / 1000)?,
        lookback_ms: ms("lookback", 3_600_000)?,
        step_ms: ms("step", 5_000)?.max(1_000),
        rate_per_ms: ms("ratePer", 600_000)?.max(1_000),
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    // Go's strconv.ParseBool.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

async fn answer(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<Vec<(String, String)>>,
    figure: Figure,
) -> Response {
    let ask = match parse(&q) {
        Ok(a) => a,
        Err(msg) => return bad(msg),
    };
    // A read of every slot in the window per point: one such read at a time in the process.
    let Some(_permit) = heavy().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    let to_s = ask.end_ms / 1000;
    let from_s = ask.end_ms.saturating_sub(ask.lookback_ms) / 1000;
    let step_s = (ask.step_ms / 1000)
        .max((to_s - from_s) / MAX_POINTS)
        .max(1);
    // Points on whole steps, the last at or before `endTs`.
    let first = to_s - (to_s - from_s) / step_s * step_s;
    let pick = |k: &Key| -> Option<String> {
        if !ask.kinds.contains(&k.kind) || !ask.services.iter().any(|s| **s == *k.service) {
            return None;
        }
        // Grouped by service (and operation) with a separator no name holds.
        Some(if ask.by_operation {
            format!("{}\u{0}{}", k.service, k.operation)
        } else {
            k.service.to_string()
        })
    };
    let groups = store
        .red()
        .steps(pick, first, to_s, step_s, ask.rate_per_ms / 1000);
    let metrics: Vec<Value> = groups
        .into_iter()
        .map(|(group, points)| {
            let mut parts = group.splitn(2, '\u{0}');
            let service = parts.next().unwrap_or_default();
            let mut labels = vec![json!({"name": "service_name", "value": service})];
            if let Some(op) = parts.next() {
                labels.push(json!({"name": "operation", "value": op}));
            }
            let points: Vec<Value> = points
                .iter()
                .map(|p| {
                    json!({"gaugeValue": {"doubleValue": value(p, figure, ask.rate_per_ms)},
                           "timestamp": search_params::rfc3339_of_s(p.at_s)})
                })
                .collect();
            json!({"labels": labels, "metricPoints": points})
        })
        .collect();
    let (name, help) = match figure {
        Figure::Latency(q) => (
            "latencies",
            format!("{q}th quantile latency, grouped by service"),
        ),
        Figure::Calls => ("call_rate", "calls/sec, grouped by service".to_string()),
        Figure::Errors => (
            "error_rate",
            "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service"
                .to_string(),
        ),
    };
    let (prefix, help) = if ask.by_operation {
        ("service_operation", format!("{help} & operation"))
    } else {
        ("service", help)
    };
    // Always a `metrics` list, empty too: the Jaeger UI reads `metrics[0]` without a check.
    Json(json!({
        "name": format!("{prefix}_{name}"),
        "type": "GAUGE",
        "help": help,
        "metrics": metrics,
        "source": super::red::FROM_METRICS,
    }))
    .into_response()
}

/// A point's figure; `null` where it has none (no calls in the window), which the Jaeger UI
/// draws as a gap.
fn value(p: &Point, figure: Figure, rate_per_ms: u64) -> Value {
    match figure {
        Figure::Calls => json!(p.all.count as f64 * 1000.0 / rate_per_ms as f64),
        _ if p.all.count == 0 => Value::Null,
        Figure::Errors => json!(p.errors as f64 / p.all.count as f64),
        Figure::Latency(q) => json!(p.all.percentile_ns(q * 100.0) as f64 / 1e6),
    }
}
