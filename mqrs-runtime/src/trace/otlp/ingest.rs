//! The OTLP/HTTP collector: `POST /v1/traces` with an `ExportTraceServiceRequest` as protobuf
//! or JSON, optionally gzip-compressed, is decoded with `opentelemetry-proto`'s generated types
//! and fed to the embedded store. Any OpenTelemetry SDK, in any language, can send here; so do
//! mqrs processes started with an OTLP endpoint. A malformed body gets 400 and an oversized one
//! 413, each with a reason.

use std::borrow::Cow;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry::Value;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use tokio::sync::watch;

use crate::trace::http_limits::{read_body, BodyError};
use crate::trace::store::{StoredEvent, StoredSpan, Tag, TraceStore};

/// What the collector needs: where spans go, how large a body may be, and how far in the
/// future a span may be stamped.
#[derive(Clone)]
struct Collector {
    store: Arc<TraceStore>,
    max_body: usize,
    max_skew_us: u64,
}

/// Most spans taken from one request (32 times an SDK's default batch of 512); the rest are
/// refused in its partial success, so one request cannot replace the whole store.
pub const MAX_SPANS_PER_REQUEST: usize = 16_384;

/// Spans of one request refused, by reason.
#[derive(Debug, Default, PartialEq)]
struct Rejected {
    /// A trace id not of 16 bytes or all zero, or a span id not of 8 bytes or all zero.
    bad_ids: usize,
    /// Starting or ending past the allowed clock skew.
    future: usize,
    /// Past [`MAX_SPANS_PER_REQUEST`].
    over_cap: usize,
}

impl Rejected {
    fn total(&self) -> usize {
        self.bad_ids + self.future + self.over_cap
    }

    /// The partial success's message: each reason that refused spans.
    fn describe(&self, max_skew_us: u64) -> String {
        let mut parts = Vec::new();
        if self.bad_ids > 0 {
            parts.push(format!(
                "{} spans had an invalid trace id (16 bytes, not all zero) or span id (8 bytes, not all zero)",
                self.bad_ids
            ));
        }
        if self.future > 0 {
            parts.push(format!(
                "{} spans started or ended more than {} s in the future ([trace] collector_max_skew_s)",
                self.future,
                max_skew_us / 1_000_000
            ));
        }
        if self.over_cap > 0 {
            parts.push(format!(
                "{} spans were past the {MAX_SPANS_PER_REQUEST} taken from one request",
                self.over_cap
            ));
        }
        parts.join("; ")
    }
}

/// Binds `addr` and serves `POST /v1/traces` into `store` until `shutdown` turns true.
pub(crate) async fn serve(
    store: Arc<TraceStore>,
    addr: SocketAddr,
    max_body: usize,
    max_skew: Duration,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let counters = store.collector_http.clone();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .layer(axum::middleware::map_response(status_bodies))
        .layer(axum::middleware::map_response_with_state(
            store.clone(),
            count,
        ))
        .with_state(Collector {
            store,
            max_body,
            max_skew_us: max_skew.as_micros() as u64,
        });
    crate::trace::http_limits::serve("OTLP collector", app, addr, shutdown, counters).await
}

/// Counts every answer in the store's stats: taken in, or refused.
async fn count(State(store): State<Arc<TraceStore>>, r: Response) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    store.otlp.requests.fetch_add(1, Relaxed);
    if !r.status().is_success() {
        store.otlp.rejected.fetch_add(1, Relaxed);
    }
    r
}

/// Whether the body is JSON (else protobuf).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// `google.rpc.Status`, the body OTLP/HTTP gives every 4xx and 5xx answer (the fields used).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    message: String,
}

/// The gRPC code that goes with an HTTP error status.
fn grpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 415 => 3, // INVALID_ARGUMENT
        408 => 4,       // DEADLINE_EXCEEDED
        413 => 8,       // RESOURCE_EXHAUSTED
        503 => 14,      // UNAVAILABLE
        _ => 2,         // UNKNOWN
    }
}

/// An error answer as OTLP/HTTP asks: a `google.rpc.Status`, protobuf-encoded, or in its JSON
/// form for a JSON request.
fn refuse(status: StatusCode, json: bool, msg: String) -> Response {
    tracing::debug!(%status, reason = %msg, "OTLP request refused");
    let code = grpc_code(status);
    if json {
        let body = serde_json::json!({ "code": code, "message": msg });
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    } else {
        let body = RpcStatus { code, message: msg }.encode_to_vec();
        (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            body,
        )
            .into_response()
    }
}

/// Errors the HTTP layer answers itself (a body over the limit, a wrong method) get the same
/// `google.rpc.Status` body as the collector's own.
async fn status_bodies(r: Response) -> Response {
    let typed = ["application/x-protobuf", "application/json"];
    match crate::trace::http_limits::untyped_error(r, &typed).await {
        Ok((status, text)) => refuse(status, false, text),
        Err(r) => r,
    }
}

async fn receive(State(c): State<Collector>, headers: HeaderMap, body: Body) -> Response {
    let json = is_json(&headers);
    // OTLP/HTTP names its two content types; a POST without one (as a web page on another
    // origin can send without asking) is refused.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    if !json && !content_type.is_some_and(|t| t.starts_with("application/x-protobuf")) {
        let given = match content_type {
            Some(t) => format!("Content-Type `{}`", crate::trace::store::cut(t, 64)),
            None => "no Content-Type".to_string(),
        };
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            false,
            format!("{given}: send application/x-protobuf or application/json"),
        );
    }
    let body = match read_body(body, c.max_body, &c.store.collector_http).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                json,
                format!(
                    "the body is larger than {} bytes ([trace] collector_max_body)",
                    c.max_body
                ),
            )
        }
        Err(BodyError::TooSlow) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                json,
                format!(
                    "the body came slower than {} KiB/s",
                    crate::trace::http_limits::BODY_MIN_RATE >> 10
                ),
            )
        }
        Err(BodyError::Broken(e)) => {
            return refuse(StatusCode::BAD_REQUEST, json, format!("body not read: {e}"))
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gzip {
        let mut out = Vec::new();
        let read = flate2::read::GzDecoder::new(&body[..])
            .take(c.max_body as u64 + 1)
            .read_to_end(&mut out);
        match read {
            Err(e) => return refuse(StatusCode::BAD_REQUEST, json, format!("bad gzip body: {e}")),
            Ok(n) if n > c.max_body => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json,
                    format!(
                        "the body unpacks to more than {} bytes ([trace] collector_max_body)",
                        c.max_body
                    ),
                )
            }
            Ok(_) => Bytes::from(out),
        }
    } else {
        body
    };
    let request = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body)
            .map_err(|e| format!("not an OTLP/JSON ExportTraceServiceRequest: {e}"))
    } else {
        ExportTraceServiceRequest::decode(&body[..])
            .map_err(|e| format!("not an OTLP protobuf ExportTraceServiceRequest: {e}"))
    };
    let request = match request {
        Ok(r) => r,
        Err(msg) => return refuse(StatusCode::BAD_REQUEST, json, msg),
    };
    let now_us = crate::trace::store::micros(std::time::SystemTime::now());
    let (spans, rejected) = to_stored(request, now_us.saturating_add(c.max_skew_us));
    for s in spans {
        c.store.insert(s);
    }
    c.store.count_future(rejected.future as u64);
    let response = ExportTraceServiceResponse {
        partial_success: (rejected.total() > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected.total() as i64,
            error_message: rejected.describe(c.max_skew_us),
        }),
    };
    if json {
        let body = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response()
    }
}

/// Converts a request into stored spans; returns them and what was refused. A span starting
/// or ending after `latest_us` is refused.
fn to_stored(req: ExportTraceServiceRequest, latest_us: u64) -> (Vec<StoredSpan>, Rejected) {
    let mut out = Vec::new();
    let mut rejected = Rejected::default();
    for rs in req.resource_spans {
        let service: Arc<str> = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(Arc::from(s.as_str())),
                _ => None,
            })
            .unwrap_or_else(|| Arc::from("unknown_service"));
        for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            let ids = (
                <[u8; 16]>::try_from(span.trace_id.as_slice()).map(u128::from_be_bytes),
                <[u8; 8]>::try_from(span.span_id.as_slice()).map(u64::from_be_bytes),
            );
            let (Ok(trace_id), Ok(span_id)) = ids else {
                rejected.bad_ids += 1;
                continue;
            };
            if trace_id == 0 || span_id == 0 {
                rejected.bad_ids += 1;
                continue;
            }
            let start_us = span.start_time_unix_nano / 1000;
            let end_us = (span.end_time_unix_nano / 1000).max(start_us);
            if end_us > latest_us {
                rejected.future += 1;
                continue;
            }
            if out.len() >= MAX_SPANS_PER_REQUEST {
                rejected.over_cap += 1;
                continue;
            }
            let parent = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
                .map(u64::from_be_bytes)
                .ok()
                .filter(|p| *p != 0);
            let error = span
                .status
                .as_ref()
                .filter(|s| s.code == 2)
                .map(|s| Cow::Owned(s.message.clone()));
            out.push(StoredSpan {
                trace_id,
                span_id,
                parent_span_id: parent,
                name: Cow::Owned(span.name),
                service: service.clone(),
                kind: match span.kind {
                    2 => "server",
                    3 => "client",
                    4 => "producer",
                    5 => "consumer",
                    _ => "internal",
                },
                start_us,
                duration_us: end_us - start_us,
                tags: tags(span.attributes),
                events: span
                    .events
                    .into_iter()
                    .map(|e| {
                        StoredEvent::new(
                            e.name,
                            UNIX_EPOCH + Duration::from_nanos(e.time_unix_nano),
                            tags(e.attributes),
                            e.dropped_attributes_count,
                        )
                    })
                    .collect(),
                error,
            });
        }
    }
    (out, rejected)
}

fn tags(kvs: Vec<KeyValue>) -> Vec<Tag> {
    kvs.into_iter()
        .map(|kv| Tag::new(kv.key, kv.value.map_or(Value::from(""), tag_value)))
        .collect()
}

fn tag_value(v: AnyValue) -> Value {
    match v.value {
        Some(any_value::Value::StringValue(s)) => Value::from(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::I64(i),
        Some(any_value::Value::DoubleValue(f)) => Value::F64(f),
        Some(any_value::Value::ArrayValue(a)) => Value::from(
            a.values
                .into_iter()
                .map(|v| tag_value(v).as_str().into_owned())
                .collect::<Vec<_>>()
                .join(","),
        ),
        Some(any_value::Value::BytesValue(b)) => {
            Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
        Some(other) => Value::from(format!("{other:?}")),
        None => Value::from(""),
    }
}
