//! The OTLP/HTTP collector: `POST /v1/traces` with an `ExportTraceServiceRequest` as protobuf
//! or JSON, optionally gzip-compressed, is decoded with `opentelemetry-proto`'s generated types
//! and fed to the embedded store; `POST /v1/metrics` the same way into its RED metrics. Any OpenTelemetry SDK, in any language, can send here; so do
//! mqrs processes started with an OTLP endpoint. A malformed body gets 400 and an oversized one
//! 413, each with a reason.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::watch;

use crate::http::limits::{read_body, BodyError};
use crate::store::TraceStore;

use super::convert::{to_stored, traces_per_request};
use super::prescan::{decode_budget, json_over, metrics_protobuf_over, protobuf_over};

/// What the collector needs: where spans go, how large a body may be, and how far in the
/// future a span may be stamped.
#[derive(Clone)]
struct Collector {
    store: Arc<TraceStore>,
    max_body: usize,
    max_skew_us: u64,
    /// The previous point of each cumulative metrics stream taken in.
    streams: Arc<super::metrics::Streams>,
}

/// Binds `addr` and serves `POST /v1/traces` into `store` until `shutdown` turns true.
pub async fn serve(
    store: Arc<TraceStore>,
    addr: SocketAddr,
    max_body: usize,
    max_skew: Duration,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let counters = store.collector_http.clone();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .route("/v1/metrics", post(receive_metrics))
        .layer(axum::middleware::map_response(status_bodies))
        .layer(axum::middleware::map_response_with_state(
            store.clone(),
            count,
        ))
        .with_state(Collector {
            store,
            max_body,
            max_skew_us: max_skew.as_micros() as u64,
            streams: Arc::default(),
        });
    crate::http::limits::serve("OTLP collector", app, addr, shutdown, counters).await
}

/// Counts every answer in the store's stats: taken in, or refused.
async fn count(State(store): State<Arc<TraceStore>>, r: Response) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    store.counters.otlp_requests.fetch_add(1, Relaxed);
    if !r.status().is_success() {
        store.counters.otlp_rejected.fetch_add(1, Relaxed);
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
    match crate::http::limits::untyped_error(r, &typed).await {
        Ok((status, text)) => refuse(status, false, text),
        Err(r) => r,
    }
}

/// The body of an OTLP/HTTP request, unpacked, and whether it is JSON; or the refusal.
async fn read_otlp(
    c: &Collector,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, bool), Box<Response>> {
    let json = is_json(headers);
    let no = |status: StatusCode, msg: String| Err(Box::new(refuse(status, json, msg)));
    // OTLP/HTTP names its two content types; a POST without one (as a web page on another
    // origin can send without asking) is refused.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    if !json && !content_type.is_some_and(|t| t.starts_with("application/x-protobuf")) {
        let given = match content_type {
            Some(t) => format!("Content-Type `{}`", crate::store::cut(t, 64)),
            None => "no Content-Type".to_string(),
        };
        return Err(Box::new(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            false,
            format!("{given}: send application/x-protobuf or application/json"),
        )));
    }
    let body = match read_body(body, c.max_body, &c.store.collector_http).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return no(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than {} bytes ([trace] collector_max_body)",
                    c.max_body
                ),
            )
        }
        Err(BodyError::TooSlow) => {
            return no(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body came slower than {} KiB/s",
                    crate::http::limits::BODY_MIN_RATE >> 10
                ),
            )
        }
        Err(BodyError::Broken(e)) => {
            return no(StatusCode::BAD_REQUEST, format!("body not read: {e}"))
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok((body, json));
    }
    let mut out = Vec::new();
    let read = flate2::read::GzDecoder::new(&body[..])
        .take(c.max_body as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(e) => no(StatusCode::BAD_REQUEST, format!("bad gzip body: {e}")),
        Ok(n) if n > c.max_body => no(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body unpacks to more than {} bytes ([trace] collector_max_body)",
                c.max_body
            ),
        ),
        Ok(_) => Ok((Bytes::from(out), json)),
    }
}

/// `POST /v1/traces`.
async fn receive(State(c): State<Collector>, headers: HeaderMap, body: Body) -> Response {
    let (body, json) = match read_otlp(&c, &headers, body).await {
        Ok(b) => b,
        Err(refusal) => return *refusal,
    };
    let request: ExportTraceServiceRequest = match decode(
        &c,
        &body,
        json,
        protobuf_over,
        "ExportTraceServiceRequest",
        "spans, events and attributes",
    ) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let now_us = crate::store::micros(std::time::SystemTime::now());
    let max_traces = traces_per_request(c.store.limits().max_traces);
    let (spans, rejected) = to_stored(request, now_us.saturating_add(c.max_skew_us), max_traces);
    for s in spans {
        c.store.insert(s);
    }
    c.store.count_future(rejected.future as u64);
    let response = ExportTraceServiceResponse {
        partial_success: (rejected.total() > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected.total() as i64,
            error_message: rejected.describe(c.max_skew_us, max_traces),
        }),
    };
    encoded(json, &response)
}

/// `POST /v1/metrics`: the RPC duration histograms go into the registry the viewer reads
/// (see `metrics`); an answer in the request's encoding says how many points were skipped.
async fn receive_metrics(State(c): State<Collector>, headers: HeaderMap, body: Body) -> Response {
    let (body, json) = match read_otlp(&c, &headers, body).await {
        Ok(b) => b,
        Err(refusal) => return *refusal,
    };
    let request: ExportMetricsServiceRequest = match decode(
        &c,
        &body,
        json,
        metrics_protobuf_over,
        "ExportMetricsServiceRequest",
        "points and attributes",
    ) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let merged = super::metrics::merge(c.store.red(), &c.streams, &request);
    // Points of other metrics are not errors: OTLP's partial success is for refused data.
    let response = ExportMetricsServiceResponse {
        partial_success: None,
    };
    tracing::trace!(
        points = merged.points,
        skipped = merged.skipped,
        "OTLP metrics merged"
    );
    encoded(json, &response)
}

/// Decodes the OTLP request `T` (`name`) from `body`, refused when what it `holds` would take
/// more than the decode budget (`protobuf_over` walks the protobuf form) or it does not parse.
fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    c: &Collector,
    body: &[u8],
    json: bool,
    protobuf_over: fn(&[u8], usize) -> bool,
    name: &str,
    holds: &str,
) -> Result<T, Box<Response>> {
    let budget = decode_budget(c.max_body);
    let over = if json {
        json_over(body, budget)
    } else {
        protobuf_over(body, budget)
    };
    if over {
        return Err(Box::new(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            json,
            format!(
                "the body holds more {holds} than one request may: they would take over {} MiB \
                 decoded; send smaller batches",
                budget >> 20
            ),
        )));
    }
    let decoded = if json {
        serde_json::from_slice::<T>(body).map_err(|e| format!("not an OTLP/JSON {name}: {e}"))
    } else {
        T::decode(body).map_err(|e| format!("not an OTLP protobuf {name}: {e}"))
    };
    decoded.map_err(|msg| Box::new(refuse(StatusCode::BAD_REQUEST, json, msg)))
}

/// An OTLP answer in the request's encoding.
fn encoded<T: Message + serde::Serialize>(json: bool, response: &T) -> Response {
    if json {
        let body = serde_json::to_string(response).unwrap_or_else(|_| "{}".into());
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response()
    }
}
