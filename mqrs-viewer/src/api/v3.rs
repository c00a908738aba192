//! Jaeger's `api_v3` over the embedded store, beside the v1 API: the stable query API that the
//! Jaeger UI (services and operations from v2.15, trace summaries from v2.19) and Grafana's
//! Jaeger data source in its newer mode read.
//!
//! Traces are OTLP/JSON as the OpenTelemetry specification writes it: hex ids, numeric `kind`
//! and status codes, nanosecond times as decimal strings, empty fields left out. Parameters
//! are read by their current camelCase names and by the snake_case names older clients send
//! (`query.serviceName` or `query.service_name`, ...). Errors are Jaeger's
//! `{"error":{"httpCode":N,"message":"..."}}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::search_params::{self, go_duration_us, rfc3339_us, Params};
use crate::http::answer::{parse_trace_id, MAX_ANSWER_BYTES};
use crate::store::{StoredSpan, StoredTrace, Tag, TraceQuery, TraceStore};

/// Traces a search returns when it names no depth (Jaeger's default).
const DEFAULT_DEPTH: usize = 100;

/// The `api_v3` routes over `store`.
pub fn router(store: Arc<TraceStore>) -> Router {
    Router::new()
        .route("/api/v3/services", get(services))
        .route("/api/v3/operations", get(operations))
        .route("/api/v3/traces", get(find_traces))
        .route("/api/v3/traces/{id}", get(get_trace))
        .route("/api/v3/trace-summaries", get(trace_summaries))
        .with_state(store)
}

/// An error answer, written as Jaeger's gateway writes it.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"httpCode": self.0.as_u16(), "message": self.1}});
        (self.0, Json(body)).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

fn malformed(param: &str, why: impl std::fmt::Display) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        format!("malformed parameter {param}: {why}"),
    )
}

/// The value of the first of `names` given (current name first, then older aliases); of a
/// repeated parameter, the first value, as Go's `Query().Get` reads it.
fn param<'a>(q: &'a Params, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
    names
        .iter()
        .find_map(|n| search_params::all(q, n).next().map(|v| (*n, v)))
}

/// A boolean as Go's `strconv.ParseBool` reads it.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Waits for the process's heavy-answer permit (see `http_limits`).
async fn heavy() -> Result<mqrs_base::budget::Share, ApiError> {
    crate::http::answer::heavy()
        .await
        .ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))
}

async fn services(State(store): State<Arc<TraceStore>>) -> Response {
    let _permit = match heavy().await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    Json(json!({ "services": store.services() })).into_response()
}

async fn operations(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let kind = param(&q, &["spanKind", "span_kind"]).map(|(_, k)| k.to_ascii_lowercase());
    let _permit = match heavy().await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let all = match param(&q, &["service"]) {
        Some((_, s)) => store.operations(s),
        None => store
            .all_operations()
            .into_iter()
            .map(|(_, n, k)| (n, k))
            .collect(),
    };
    let ops: Vec<Value> = all
        .into_iter()
        .filter(|(_, k)| kind.as_deref().is_none_or(|want| want == *k))
        .map(|(name, k)| json!({"name": name, "spanKind": k}))
        .collect();
    Json(json!({ "operations": ops })).into_response()
}

/// Checks the optional time hints of a trace fetch (the trace is returned whole either way).
fn check_times(q: &Params) -> Result<(), ApiError> {
    for names in [["startTime", "start_time"], ["endTime", "end_time"]] {
        if let Some((name, v)) = param(q, &names) {
            rfc3339_us(v)
                .ok_or_else(|| malformed(name, format!("'{v}' is not an RFC 3339 time")))?;
        }
    }
    check_bool(q, &["rawTraces", "raw_traces"])
}

/// Checks a boolean parameter known by `names`, if given.
fn check_bool(q: &Params, names: &[&str]) -> Result<(), ApiError> {
    match param(q, names) {
        Some((name, v)) if go_bool(v).is_none() => {
            Err(malformed(name, format!("'{v}' is not true or false")))
        }
        _ => Ok(()),
    }
}

async fn get_trace(
    State(store): State<Arc<TraceStore>>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let Some(tid) = parse_trace_id(&id) else {
        return malformed("trace_id", format!("'{id}' is not a hex trace id")).into_response();
    };
    if let Err(e) = check_times(&q) {
        return e.into_response();
    }
    let _permit = match heavy().await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match store.trace_within(tid, MAX_ANSWER_BYTES) {
        Some((t, total)) => {
            let warning = crate::http::answer::cut_warning(t.spans.len(), total);
            let mut body = json!({"result": {"resourceSpans": resource_spans(&[t])}});
            // OTLP/JSON has no place for it: beside `result`, as the v1 API writes it.
            if let Some(w) = warning {
                body["warnings"] = json!([w]);
            }
            Json(body).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "No traces found").into_response(),
    }
}

/// Reads FindTraces' parameters (shared by trace summaries) into a store query.
fn find_query(q: &Params) -> Result<TraceQuery, ApiError> {
    let time = |names: [&str; 2]| -> Result<Option<u64>, ApiError> {
        param(q, &names)
            .map(|(n, v)| {
                rfc3339_us(v).ok_or_else(|| malformed(n, format!("'{v}' is not an RFC 3339 time")))
            })
            .transpose()
    };
    let dur = |names: [&str; 2]| -> Result<Option<u64>, ApiError> {
        param(q, &names)
            .map(|(n, v)| {
                go_duration_us(v).ok_or_else(|| {
                    malformed(n, format!("'{v}' is not a Go duration such as 100ms"))
                })
            })
            .transpose()
    };
    let (Some(min), Some(max)) = (
        time(["query.startTimeMin", "query.start_time_min"])?,
        time(["query.startTimeMax", "query.start_time_max"])?,
    ) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "query.startTimeMin and query.startTimeMax are required",
        ));
    };
    if min >= max {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "query.startTimeMin must be before query.startTimeMax",
        ));
    }
    let depth = match param(
        q,
        &[
            "query.searchDepth",
            "query.search_depth",
            "query.num_traces",
        ],
    ) {
        Some((n, v)) => v
            .parse::<usize>()
            .map_err(|_| malformed(n, format!("'{v}' is not a number")))?,
        None => DEFAULT_DEPTH,
    };
    let mut tags = Vec::new();
    if let Some((n, v)) = param(q, &["query.attributes"]) {
        let map: BTreeMap<String, Value> =
            serde_json::from_str(v).map_err(|e| malformed(n, format!("not a JSON object: {e}")))?;
        tags.extend(
            map.into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))),
        );
    }
    let query = TraceQuery {
        service: param(q, &["query.serviceName", "query.service_name"]).map(|(_, v)| v.to_string()),
        operation: param(q, &["query.operationName", "query.operation_name"])
            .map(|(_, v)| v.to_string()),
        tags,
        min_duration_us: dur(["query.durationMin", "query.duration_min"])?,
        max_duration_us: dur(["query.durationMax", "query.duration_max"])?,
        start_us: Some(min),
        end_us: Some(max),
        limit: depth.clamp(1, search_params::MAX_LIMIT),
        max_bytes: MAX_ANSWER_BYTES,
    };
    if let (Some(lo), Some(hi)) = (query.min_duration_us, query.max_duration_us) {
        if hi < lo {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "query.durationMax must not be below query.durationMin",
            ));
        }
    }
    Ok(query)
}

/// Runs a search with the one-heavy-query-at-a-time rule of the v1 API.
async fn search(store: &TraceStore, q: &Params) -> Result<Vec<StoredTrace>, ApiError> {
    let query = find_query(q)?;
    let _permit = heavy().await?;
    Ok(store.find_within(&query).0)
}

async fn find_traces(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(e) = check_bool(&q, &["query.rawTraces", "query.raw_traces"]) {
        return e.into_response();
    }
    match search(&store, &q).await {
        Ok(found) if found.is_empty() => {
            error(StatusCode::NOT_FOUND, "No traces found").into_response()
        }
        // Jaeger's gateway answers every trace found in one `resourceSpans` list.
        Ok(found) => {
            Json(json!({"result": {"resourceSpans": resource_spans(&found)}})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn trace_summaries(
    State(store): State<Arc<TraceStore>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    match search(&store, &q).await {
        Ok(found) => {
            let summaries: Vec<Value> = found.iter().map(summary).collect();
            Json(json!({ "summaries": summaries })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// One trace summarised: its root, time span, span and error counts, per service.
fn summary(t: &StoredTrace) -> Value {
    let ids: std::collections::HashSet<u64> = t.spans.iter().map(|s| s.span_id).collect();
    // The earliest span without a parent, else the earliest span.
    let root = t
        .spans
        .iter()
        .min_by_key(|s| (s.parent_span_id.is_some(), s.start_us));
    let orphans = t
        .spans
        .iter()
        .filter(|s| s.parent_span_id.is_some_and(|p| !ids.contains(&p)))
        .count();
    let mut per_service: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for s in &t.spans {
        let e = per_service.entry(&s.service).or_default();
        e.0 += 1;
        e.1 += u64::from(s.error.is_some());
    }
    let services: Vec<Value> = per_service
        .iter()
        .map(|(name, (n, err))| json!({"name": name, "spanCount": n, "errorSpanCount": err}))
        .collect();
    let mut out = json!({
        "traceId": format!("{:032x}", t.spans.first().map_or(0, |s| s.trace_id)),
        "minStartTimeUnixNano": nanos(t.start_us),
        "maxEndTimeUnixNano": nanos(t.end_us),
        "spanCount": t.spans.len(),
        "errorSpanCount": t.spans.iter().filter(|s| s.error.is_some()).count(),
        "services": services,
    });
    if let Some(r) = root {
        out["rootServiceName"] = json!(&*r.service);
        out["rootOperationName"] = json!(r.name);
    }
    if orphans > 0 {
        out["orphanSpanCount"] = json!(orphans);
    }
    out
}

/// Microseconds as OTLP/JSON's nanosecond string.
fn nanos(us: u64) -> String {
    (u128::from(us) * 1000).to_string()
}

/// Traces as OTLP/JSON `resourceSpans`: one resource per service and resource attributes of
/// each trace, one scope per instrumentation scope within it.
pub fn resource_spans(traces: &[StoredTrace]) -> Vec<Value> {
    type Scopes<'a> = BTreeMap<(&'a str, &'a str), Vec<Value>>;
    let mut out = Vec::new();
    for t in traces {
        let mut by_resource: Vec<((&str, &[Tag]), Scopes<'_>)> = Vec::new();
        for s in &t.spans {
            let key = (&*s.service, &s.resource[..]);
            let at = match by_resource.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    by_resource.push((key, BTreeMap::new()));
                    by_resource.len() - 1
                }
            };
            by_resource[at]
                .1
                .entry((&s.scope.0, &s.scope.1))
                .or_default()
                .push(otlp_span(s));
        }
        for ((service, resource), scopes) in by_resource {
            let mut attributes = vec![kv(
                "service.name",
                &opentelemetry::Value::from(service.to_string()),
            )];
            attributes.extend(resource.iter().map(|t| kv(t.key.as_str(), &t.value)));
            let scope_spans: Vec<Value> = scopes
                .into_iter()
                .map(|((name, version), spans)| {
                    let mut scope = Map::new();
                    if !name.is_empty() {
                        scope.insert("name".into(), json!(name));
                    }
                    if !version.is_empty() {
                        scope.insert("version".into(), json!(version));
                    }
                    json!({"scope": scope, "spans": spans})
                })
                .collect();
            out.push(json!({
                "resource": {"attributes": attributes},
                "scopeSpans": scope_spans,
            }));
        }
    }
    out
}

/// OTLP's span kind number for the store's kind name.
fn kind_number(kind: &str) -> u8 {
    match kind {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => 0, // unspecified
    }
}

fn otlp_span(s: &StoredSpan) -> Value {
    let mut span = Map::new();
    span.insert("traceId".into(), json!(format!("{:032x}", s.trace_id)));
    span.insert("spanId".into(), json!(format!("{:016x}", s.span_id)));
    if let Some(p) = s.parent_span_id {
        span.insert("parentSpanId".into(), json!(format!("{p:016x}")));
    }
    span.insert("name".into(), json!(s.name));
    span.insert("kind".into(), json!(kind_number(s.kind)));
    span.insert("startTimeUnixNano".into(), json!(nanos(s.start_us)));
    span.insert(
        "endTimeUnixNano".into(),
        json!(nanos(s.start_us.saturating_add(s.duration_us))),
    );
    if !s.tags.is_empty() {
        let attrs: Vec<Value> = s
            .tags
            .iter()
            .map(|t| kv(t.key.as_str(), &t.value))
            .collect();
        span.insert("attributes".into(), Value::Array(attrs));
    }
    if !s.events.is_empty() {
        let events: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut ev = json!({
                    "timeUnixNano": nanos(crate::store::micros(e.timestamp)),
                    "name": e.name,
                });
                if !e.attributes.is_empty() {
                    ev["attributes"] = e
                        .attributes
                        .iter()
                        .map(|a| kv(a.key.as_str(), &a.value))
                        .collect();
                }
                ev
            })
            .collect();
        span.insert("events".into(), Value::Array(events));
    }
    if !s.links.is_empty() {
        let links: Vec<Value> = s
            .links
            .iter()
            .map(|l| {
                let mut link = json!({"traceId": format!("{:032x}", l.trace_id),
                                      "spanId": format!("{:016x}", l.span_id)});
                if !l.attributes.is_empty() {
                    link["attributes"] = l
                        .attributes
                        .iter()
                        .map(|a| kv(a.key.as_str(), &a.value))
                        .collect();
                }
                link
            })
            .collect();
        span.insert("links".into(), Value::Array(links));
    }
    if let Some(e) = &s.error {
        span.insert("status".into(), json!({"code": 2, "message": e}));
    } else if s.status_ok {
        span.insert("status".into(), json!({"code": 1}));
    }
    Value::Object(span)
}

fn kv(key: &str, v: &opentelemetry::Value) -> Value {
    json!({"key": key, "value": any_value(v)})
}

/// An attribute value in OTLP/JSON: 64-bit integers as strings, as proto3's JSON mapping has it.
fn any_value(v: &opentelemetry::Value) -> Value {
    use opentelemetry::{Array, Value as V};
    match v {
        V::Bool(b) => json!({"boolValue": b}),
        V::I64(i) => json!({"intValue": i.to_string()}),
        V::F64(f) if f.is_finite() => json!({"doubleValue": f}),
        V::F64(f) => json!({"stringValue": f.to_string()}),
        V::String(s) => json!({"stringValue": s.as_str()}),
        V::Array(a) => {
            let values: Vec<Value> = match a {
                Array::Bool(x) => x.iter().map(|b| json!({"boolValue": b})).collect(),
                Array::I64(x) => x
                    .iter()
                    .map(|i| json!({"intValue": i.to_string()}))
                    .collect(),
                Array::F64(x) => x.iter().map(|f| json!({"doubleValue": f})).collect(),
                Array::String(x) => x
                    .iter()
                    .map(|s| json!({"stringValue": s.as_str()}))
                    .collect(),
                _ => Vec::new(),
            };
            json!({"arrayValue": {"values": values}})
        }
        other => json!({"stringValue": other.as_str()}),
    }
}
