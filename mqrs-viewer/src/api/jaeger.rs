//! The viewer's HTTP side: a Jaeger-compatible query API over the embedded store (readable by
//! the Jaeger UI and Grafana's Jaeger data source), with `api_v3` and the page (`ui`) beside it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::search_params;
use crate::http::answer::{cut_warning, error, heavy, not_found, parse_trace_id, MAX_ANSWER_BYTES};
use crate::store::{cut, micros, StoredTrace, TraceStore};

/// The API's routes over `store`.
pub fn router(store: Arc<TraceStore>) -> Router {
    Router::new()
        .merge(super::ui::routes())
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
        .route("/api/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/latency", get(latency))
        .route("/api/metrics/latencies", get(super::monitor::latencies))
        .route("/api/metrics/calls", get(super::monitor::calls))
        .route("/api/metrics/errors", get(super::monitor::errors))
        .route("/api/transform", post(transform))
        .route("/api/history", get(super::history::history))
        .with_state(store.clone())
        .merge(super::v3::router(store))
        .fallback(not_found)
        .layer(axum::middleware::map_response(errors_as_json))
}

/// Binds `addr` and serves the API until `shutdown` turns true.
pub async fn serve(
    store: Arc<TraceStore>,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let counters = store.viewer_http.clone();
    crate::http::limits::serve("trace viewer", router(store), addr, shutdown, counters).await
}

/// `POST /api/transform`: the uploaded OTLP traces in Jaeger's JSON.
async fn transform(store: State<Arc<TraceStore>>, body: axum::body::Body) -> Response {
    match super::transform::traces(store, body).await {
        Ok(traces) => {
            envelope(Value::Array(traces.iter().map(jaeger_trace).collect())).into_response()
        }
        Err(refusal) => refusal,
    }
}

fn envelope(data: Value) -> Json<Value> {
    let total = data.as_array().map_or(0, Vec::len);
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

fn closing() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into())
}

async fn services(State(store): State<Arc<TraceStore>>) -> Response {
    // A read of every span's head: one heavy answer at a time in the process.
    let Some(_permit) = heavy().await else {
        return closing();
    };
    envelope(json!(store.services())).into_response()
}

async fn service_operations(
    State(store): State<Arc<TraceStore>>,
    Path(service): Path<String>,
) -> Response {
    let Some(_permit) = heavy().await else {
        return closing();
    };
    let mut names: Vec<String> = store
        .operations(&service)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.dedup();
    envelope(json!(names)).into_response()
}

async fn operations(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(service) = q.get("service") else {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter 'service' is required".into(),
        );
    };
    let kind = q.get("spanKind").filter(|k| !k.is_empty());
    let Some(_permit) = heavy().await else {
        return closing();
    };
    let ops: Vec<Value> = store
        .operations(service)
        .into_iter()
        .filter(|(_, k)| kind.is_none_or(|want| want == k))
        .map(|(name, k)| json!({"name": name, "spanKind": k}))
        .collect();
    envelope(Value::Array(ops)).into_response()
}

async fn latency(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // A scan of every span held: one such search at a time in the process.
    let Some(_permit) = heavy().await else {
        return closing();
    };
    let lookback = q.get("lookback").map(String::as_str).unwrap_or("1h");
    let Some(d) = search_params::lookback_us(lookback) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("cannot parse lookback '{lookback}': use e.g. 1h or 2d"),
        );
    };
    let kind = q
        .get("spanKind")
        .map(String::as_str)
        .filter(|k| !k.is_empty());
    let ops = super::red::latency(&store, search_params::now_us().saturating_sub(d), kind);
    envelope(Value::Array(ops)).into_response()
}

async fn stats(State(store): State<Arc<TraceStore>>) -> Json<Value> {
    let mut out = json!(store.stats());
    out["http"] = json!({
        "viewer": store.viewer_http.snapshot(),
        "collector": store.collector_http.snapshot(),
    });
    out["metrics"] = super::red::stats(&store);
    out["history"] = super::history::stats(&store);
    Json(out)
}

/// The store's and the collector's counters in the Prometheus text format (version 0.0.4).
async fn metrics(State(store): State<Arc<TraceStore>>) -> Response {
    let s = store.stats();
    let rows: [(&str, &str, &str, u64); 8] = [
        (
            "mqrs_trace_spans_received_total",
            "counter",
            "Spans the store accepted.",
            s.spans_received,
        ),
        (
            "mqrs_trace_spans_evicted_total",
            "counter",
            "Spans removed with old traces to make room.",
            s.spans_evicted,
        ),
        (
            "mqrs_trace_spans_refused_total",
            "counter",
            "Spans turned away by a cap (bytes, spans per trace).",
            s.spans_refused,
        ),
        (
            "mqrs_trace_traces",
            "gauge",
            "Traces held.",
            s.traces as u64,
        ),
        ("mqrs_trace_spans", "gauge", "Spans held.", s.spans as u64),
        (
            "mqrs_trace_bytes",
            "gauge",
            "Bytes held, by the store's measure.",
            s.bytes as u64,
        ),
        (
            "mqrs_otlp_requests_total",
            "counter",
            "OTLP/HTTP requests the collector answered.",
            s.otlp_requests,
        ),
        (
            "mqrs_otlp_requests_rejected_total",
            "counter",
            "OTLP/HTTP requests the collector refused.",
            s.otlp_rejected,
        ),
    ];
    let mut out = String::with_capacity(1024);
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            super::red::prometheus(&store, &mut out);
            out
        },
    )
        .into_response()
}

async fn find_traces(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    // `traceID=a&traceID=b`: exactly those traces (the Jaeger UI's multi-trace fetch and
    // trace compare), and an error entry for each one not held.
    if search_params::all(&q, "traceID").next().is_some() {
        return traces_by_id(&store, search_params::all(&q, "traceID")).await;
    }
    let query = match search_params::parse_query(&q, MAX_ANSWER_BYTES) {
        Ok(query) => query,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let Some(_permit) = heavy().await else {
        return closing();
    };
    let (found, truncated) = store.find_within(&query);
    let traces: Vec<Value> = found.iter().map(jaeger_trace).collect();
    let mut body = envelope(Value::Array(traces)).0;
    if truncated {
        // Jaeger clients read `data`; the note says why there are fewer than `limit`.
        body["warnings"] = json!([format!(
            "answer cut at about {} MiB of spans: narrow the search or lower the limit",
            MAX_ANSWER_BYTES >> 20
        )]);
    }
    Json(body).into_response()
}

/// The traces with these ids, each once, in the order first asked, and `errors` for those not
/// held or not read because the answer reached [`MAX_ANSWER_BYTES`].
async fn traces_by_id<'a>(store: &TraceStore, ids: impl Iterator<Item = &'a str>) -> Response {
    let Some(_permit) = heavy().await else {
        return closing();
    };
    let (mut found, mut errors, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    let mut used = 0usize;
    for id in ids {
        let Some(n) = parse_trace_id(id) else {
            errors.push(json!({"code": 400, "msg": "not a trace id", "traceID": cut(id, 64)}));
            continue;
        };
        if !seen.insert(n) {
            continue;
        }
        if used >= MAX_ANSWER_BYTES {
            errors.push(not_read(id));
            continue;
        }
        match store.trace_within(n, MAX_ANSWER_BYTES - used) {
            // Only the first trace is read past the cap (by its first span).
            Some((t, _)) if !found.is_empty() && used + t.stored_bytes() > MAX_ANSWER_BYTES => {
                used = MAX_ANSWER_BYTES;
                errors.push(not_read(id));
            }
            Some((t, total)) => {
                used += t.stored_bytes();
                let mut trace = jaeger_trace(&t);
                if let Some(w) = cut_warning(t.spans.len(), total) {
                    trace["warnings"] = json!([w.clone()]);
                    warnings.push(json!(format!("trace {id}: {w}")));
                }
                found.push(trace);
            }
            None => errors.push(json!({"code": 404, "msg": "trace not found", "traceID": id})),
        }
    }
    let mut body = envelope(Value::Array(found)).0;
    if !errors.is_empty() {
        body["errors"] = Value::Array(errors);
    }
    if !warnings.is_empty() {
        body["warnings"] = Value::Array(warnings);
    }
    Json(body).into_response()
}

/// The `errors` entry of a trace not read because the answer reached its cap.
fn not_read(id: &str) -> Value {
    json!({"code": 413, "traceID": id, "msg": format!(
        "not read: the answer reached its cap of {} MiB; ask for fewer traces",
        MAX_ANSWER_BYTES >> 20
    )})
}

async fn get_trace(State(store): State<Arc<TraceStore>>, Path(id): Path<String>) -> Response {
    let Some(tid) = parse_trace_id(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("'{id}' is not a trace id (up to 32 hex digits)"),
        );
    };
    let Some(_permit) = heavy().await else {
        return closing();
    };
    match store.trace_within(tid, MAX_ANSWER_BYTES) {
        Some((t, total)) => {
            let mut trace = jaeger_trace(&t);
            let warning = cut_warning(t.spans.len(), total);
            if let Some(w) = &warning {
                trace["warnings"] = json!([w]);
            }
            let mut body = envelope(json!([trace])).0;
            if let Some(w) = warning {
                body["warnings"] = json!([w]);
            }
            Json(body).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("trace {} not found", cut(&id, 64)),
        ),
    }
}

/// Jaeger's default window for `/api/dependencies` when `lookback` is absent: 24 hours.
const DEPENDENCY_LOOKBACK_MS: u64 = 24 * 3600 * 1000;

/// `/api/dependencies?endTs=&lookback=` as Jaeger means it: calls in the window of `lookback`
/// milliseconds ending at `endTs` (milliseconds since the epoch; default now).
async fn dependencies(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // A scan of every span held: one such search at a time in the process.
    let Some(_permit) = heavy().await else {
        return closing();
    };
    let ms = |k: &str| -> Result<Option<u64>, String> {
        match q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("cannot parse {k} '{v}' as milliseconds")),
        }
    };
    let (end_ms, lookback_ms) = match (ms("endTs"), ms("lookback")) {
        (Ok(e), Ok(l)) => (
            e.unwrap_or_else(|| search_params::now_us() / 1000),
            l.unwrap_or(DEPENDENCY_LOOKBACK_MS),
        ),
        (Err(msg), _) | (_, Err(msg)) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let to_us = end_ms.saturating_mul(1000);
    let from_us = end_ms.saturating_sub(lookback_ms).saturating_mul(1000);
    // Jaeger's fields, and the calls' error count and p95 for the service graph (readers
    // that know only Jaeger's fields skip the others).
    let deps = super::red::dependencies(&store, from_us, to_us);
    envelope(Value::Array(deps)).into_response()
}

fn tag_json(key: &str, v: &opentelemetry::Value) -> Value {
    use opentelemetry::{Array, Value as V};
    let (ty, val) = match v {
        V::Bool(b) => ("bool", json!(b)),
        V::I64(i) => ("int64", json!(i)),
        V::F64(f) => ("float64", json!(f)),
        // Arrays as JSON text, as Jaeger's own translation from OTLP writes them.
        V::Array(a) => (
            "string",
            json!(match a {
                Array::Bool(x) => json!(x),
                Array::I64(x) => json!(x),
                Array::F64(x) => json!(x),
                Array::String(x) => json!(x.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
                _ => json!([]),
            }
            .to_string()),
        ),
        other => ("string", json!(other.as_str())),
    };
    json!({"key": key, "type": ty, "value": val})
}

fn text_json(key: &str, v: &str) -> Value {
    json!({"key": key, "type": "string", "value": v})
}

/// A trace in Jaeger's JSON shape: one process per service and resource, the resource's
/// attributes as its tags; span kind, status and scope as the `span.kind`, `otel.status_code`
/// and `otel.scope.*` tags; the parent as a CHILD_OF reference and links as FOLLOWS_FROM ones,
/// as Jaeger's translation from OTLP writes them.
pub fn jaeger_trace(t: &StoredTrace) -> Value {
    let trace_id = t.spans.first().map_or(0, |s| s.trace_id);
    let tid = format!("{trace_id:032x}");
    let mut processes = serde_json::Map::new();
    let mut pid_of: HashMap<(&str, &[crate::store::Tag]), String> = HashMap::new();
    let spans: Vec<Value> = t
        .spans
        .iter()
        .map(|s| {
            let n = pid_of.len();
            let pid = pid_of
                .entry((&s.service, &s.resource))
                .or_insert_with(|| {
                    let pid = format!("p{}", n + 1);
                    let tags: Vec<Value> = s
                        .resource
                        .iter()
                        .map(|kv| tag_json(kv.key.as_str(), &kv.value))
                        .collect();
                    processes.insert(pid.clone(), json!({"serviceName": &*s.service, "tags": tags}));
                    pid
                })
                .clone();
            let mut tags: Vec<Value> = s
                .tags
                .iter()
                .map(|kv| tag_json(kv.key.as_str(), &kv.value))
                .collect();
            if s.kind != "unspecified" {
                tags.push(text_json("span.kind", s.kind));
            }
            if !s.scope.0.is_empty() {
                tags.push(text_json("otel.scope.name", &s.scope.0));
            }
            if !s.scope.1.is_empty() {
                tags.push(text_json("otel.scope.version", &s.scope.1));
            }
            if let Some(e) = &s.error {
                tags.push(json!({"key": "error", "type": "bool", "value": true}));
                tags.push(text_json("otel.status_code", "ERROR"));
                tags.push(text_json("otel.status_description", e));
            } else if s.status_ok {
                tags.push(text_json("otel.status_code", "OK"));
            }
            let references: Vec<Value> = s
                .parent_span_id
                .map(|p| json!({"refType": "CHILD_OF", "traceID": tid, "spanID": format!("{p:016x}")}))
                .into_iter()
                .chain(s.links.iter().map(|l| {
                    json!({"refType": "FOLLOWS_FROM", "traceID": format!("{:032x}", l.trace_id),
                           "spanID": format!("{:016x}", l.span_id)})
                }))
                .collect();
            let logs: Vec<Value> = s
                .events
                .iter()
                .map(|e| {
                    let mut fields = vec![text_json("event", &e.name)];
                    fields.extend(
                        e.attributes
                            .iter()
                            .map(|kv| tag_json(kv.key.as_str(), &kv.value)),
                    );
                    json!({"timestamp": micros(e.timestamp), "fields": fields})
                })
                .collect();
            json!({
                "traceID": tid,
                "spanID": format!("{:016x}", s.span_id),
                "flags": 1,
                "operationName": s.name,
                "references": references,
                "startTime": s.start_us,
                "duration": s.duration_us,
                "tags": tags,
                "logs": logs,
                "processID": pid,
                "warnings": null,
            })
        })
        .collect();
    json!({"traceID": tid, "spans": spans, "processes": processes, "warnings": null})
}

/// Errors from the HTTP layer itself (a method the route does not take, a query string that is
/// not valid URL encoding, ...) answer in the API's own error shape, not as plain text.
async fn errors_as_json(r: Response) -> Response {
    match crate::http::limits::untyped_error(r, &["application/json"]).await {
        Ok((status, text)) => error(status, text),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids() {
        assert_eq!(parse_trace_id("ff"), Some(255));
        assert_eq!(parse_trace_id(&"f".repeat(33)), None);
        assert_eq!(parse_trace_id("xyz"), None);
    }
}
