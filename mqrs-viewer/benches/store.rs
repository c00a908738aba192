//! `cargo bench -p mqrs-viewer --bench store`: what the trace store and its OTLP/HTTP collector
//! sustain on this machine, printed as figures (not a timed test). Three measures, over the
//! same synthetic requests (5 spans each: the gate's SERVER root, its CLIENT call, the first
//! service's SERVER span, its CLIENT call onward, the second service's SERVER span; 4 services;
//! `user.id`, `session.id`, `rpc.method` and the gate's connection attributes):
//!
//! 1. OTLP/HTTP protobuf ingest: concurrent keep-alive HTTP/1.1 clients `POST /v1/traces`
//!    with 512 spans per request to a collector listening on loopback, started as the
//!    standalone viewer starts it; spans accepted per second over 5 s (target ≥ 100,000/s).
//! 2. Memory: 1,000,000 spans (200,000 traces) inserted through [`TraceStore::insert`]; RSS
//!    growth per span beside the store's own byte accounting.
//! 3. Searches over those spans, built from the query strings the viewer sends
//!    (`search_params::parse_query`, 1 MiB answer bound as the API sets it): service +
//!    operation + `user.id`, limit 20; the session view (every trace of a user holding 1,000
//!    traces: `user.id`, lookback 2d, limit 500); service only, limit 20. Median of 10 runs
//!    each (target < 50 ms).
//!
//! Measures 2 and 3 run first, alone in the process, so that RSS counts only their store.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use mqrs_viewer::__private::search_params::{self, now_us};
use mqrs_viewer::{StoreLimits, StoreStats, StoredSpan, Tag, TraceStore};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

/// Services of the synthetic app; the gate is the first.
const SERVICES: [&str; 4] = ["Gate", "Login", "Room", "Chat"];

/// Request flows: (first service, its handler, second service, its handler), by index into
/// [`SERVICES`].
const FLOWS: [(usize, &str, usize, &str); 4] = [
    (1, "HD_Login", 3, "HD_Notify"),
    (2, "HD_Join", 3, "HD_Say"),
    (2, "HD_Move", 1, "HD_Check"),
    (3, "HD_Say", 2, "HD_Broadcast"),
];

/// Spans per request (trace).
const SPANS_PER_TRACE: usize = 5;
/// Traces put in the store for measures 2 and 3.
const FILL_TRACES: u64 = 200_000;
/// Distinct users of those traces.
const USERS: u32 = 1_000;
/// The user who made exactly 1,000 of them (every 200th): the session view's subject.
const HEAVY_USER: u32 = 0;
/// A user with an ordinary share of traces (about 200): the search's subject.
const TYPICAL_USER: u32 = 421;
/// The answer bound of `/api/traces` (`MAX_ANSWER_BYTES` in `trace::api`).
const API_MAX_BYTES: usize = 1 << 20;
/// Runs of each search; the median is reported.
const QUERY_RUNS: usize = 10;
/// Target of each search, ms.
const QUERY_TARGET_MS: f64 = 50.0;
/// Spans per OTLP request.
const BATCH_SPANS: usize = 512;
/// Concurrent HTTP clients.
const CLIENTS: usize = 3;
/// Ingest before the measure starts.
const WARMUP: Duration = Duration::from_millis(500);
/// Length of the ingest measure.
const MEASURE: Duration = Duration::from_secs(5);
/// Ingest target, spans per second.
const INGEST_TARGET: f64 = 100_000.0;
/// High 8 bytes of every trace id in the encoded OTLP template, replaced per request.
const MARKER: u64 = 0x9e37_79b9_7f4a_7c15;

/// An attribute value as the synthetic spans carry them.
enum Val {
    Str(String),
    Int(i64),
}

/// One synthetic span, in neither the store's nor OTLP's form.
struct Spec {
    span_id: u64,
    parent: Option<u64>,
    service: usize,
    name: String,
    server: bool,
    start_us: u64,
    duration_us: u64,
    tags: Vec<(&'static str, Val)>,
    error: Option<&'static str>,
}

/// A 64-bit mix (splitmix64): spreads users, flows and durations deterministically.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The user of request `i`: every 200th is [`HEAVY_USER`], the rest spread over the others.
fn user_of(i: u64) -> u32 {
    if i.is_multiple_of(200) {
        HEAVY_USER
    } else {
        1 + (mix(i) % u64::from(USERS - 1)) as u32
    }
}

/// The five spans of request `i` of `user`, started at `start_us`, each the parent of the next.
fn request_spans(i: u64, user: u32, start_us: u64) -> Vec<Spec> {
    let h = mix(i);
    let (svc1, op1, svc2, op2) = FLOWS[(h % FLOWS.len() as u64) as usize];
    let method1 = format!("{}/{op1}", SERVICES[svc1]);
    let method2 = format!("{}/{op2}", SERVICES[svc2]);
    let user_id = format!("user-{user:04}");
    // A new session every 20,000 requests: a player reconnects now and then.
    let session_id = format!("sess-{user:04}-{}", i / 20_000);
    let rpc = |method: &str| {
        vec![
            ("rpc.system.name", Val::Str("mqrs".into())),
            ("rpc.method", Val::Str(method.to_string())),
            ("user.id", Val::Str(user_id.clone())),
            ("session.id", Val::Str(session_id.clone())),
        ]
    };
    let gate = vec![
        ("network.protocol.name", Val::Str("mqtt".into())),
        ("network.transport", Val::Str("tcp".into())),
        (
            "client.address",
            Val::Str(format!("10.{}.{}.{}", user >> 8, user & 0xff, 7)),
        ),
        ("mqrs.topic", Val::Str(format!("{method1}/{}", i % 1000))),
        ("mqrs.qos", Val::Int(1)),
        ("session.id", Val::Str(session_id.clone())),
        ("user.id", Val::Str(user_id.clone())),
    ];
    let base = 300 + (h >> 32) % 4_000;
    let id = |k: u64| (i << 3) | (k + 1);
    let span = |k: u64, service, name: &str, server, at: u64, dur: u64, tags| Spec {
        span_id: id(k),
        parent: k.checked_sub(1).map(id),
        service,
        name: name.to_string(),
        server,
        start_us: start_us + at,
        duration_us: dur,
        tags,
        error: None,
    };
    let mut spans = vec![
        span(0, 0, &format!("gate {method1}"), true, 0, base + 600, gate),
        span(1, 0, &method1, false, 40, base + 450, rpc(&method1)),
        span(2, svc1, &method1, true, 120, base + 250, rpc(&method1)),
        span(3, svc1, &method2, false, 200, base / 2 + 100, rpc(&method2)),
        span(4, svc2, &method2, true, 260, base / 2, rpc(&method2)),
    ];
    // One request in a hundred fails in the last handler.
    if h % 100 == 7 {
        spans[4].error = Some("room full");
    }
    spans
}

/// `s` as the store takes it; `services` holds the shared service names.
fn to_stored(trace_id: u128, s: Spec, services: &[Arc<str>]) -> StoredSpan {
    StoredSpan {
        trace_id,
        span_id: s.span_id,
        parent_span_id: s.parent,
        name: Cow::Owned(s.name),
        service: services[s.service].clone(),
        kind: if s.server { "server" } else { "client" },
        start_us: s.start_us,
        duration_us: s.duration_us,
        tags: s
            .tags
            .into_iter()
            .map(|(k, v)| match v {
                Val::Str(v) => Tag::new(k, v),
                Val::Int(v) => Tag::new(k, v),
            })
            .collect(),
        events: Vec::new(),
        error: s.error.map(Cow::Borrowed),
        ..Default::default()
    }
}

/// `s` as an OpenTelemetry SDK exports it.
fn to_otlp(trace_id: u128, s: Spec) -> Span {
    let attributes = s
        .tags
        .into_iter()
        .map(|(k, v)| {
            let value = match v {
                Val::Str(v) => any_value::Value::StringValue(v),
                Val::Int(v) => any_value::Value::IntValue(v),
            };
            attr(k, value)
        })
        .collect();
    let kind = if s.server {
        span::SpanKind::Server
    } else {
        span::SpanKind::Client
    };
    Span {
        trace_id: trace_id.to_be_bytes().to_vec(),
        span_id: s.span_id.to_be_bytes().to_vec(),
        parent_span_id: s
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        flags: 0x101,
        name: s.name,
        kind: kind as i32,
        start_time_unix_nano: s.start_us * 1000,
        end_time_unix_nano: (s.start_us + s.duration_us) * 1000,
        attributes,
        status: Some(match s.error {
            Some(msg) => Status {
                message: msg.into(),
                code: status::StatusCode::Error as i32,
            },
            None => Status::default(),
        }),
        ..Default::default()
    }
}

/// An OTLP attribute.
fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Resident set size of this process, bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// What filling the store cost.
struct Fill {
    spans: usize,
    rss_per_span: f64,
    accounted_per_span: f64,
    secs: f64,
    heavy_traces: usize,
    typical_traces: usize,
}

/// Inserts [`FILL_TRACES`] requests of 5 spans into `store`, spread over the last 40 minutes,
/// each trace's spans in the order they end (innermost first).
fn fill(store: &TraceStore) -> Fill {
    let services: Vec<Arc<str>> = SERVICES.iter().map(|s| Arc::from(*s)).collect();
    let window_us = 40 * 60 * 1_000_000;
    let first_us = now_us() - window_us;
    let mut per_user = vec![0usize; USERS as usize];
    let before = rss_bytes();
    let start = Instant::now();
    for i in 0..FILL_TRACES {
        let user = user_of(i);
        per_user[user as usize] += 1;
        let trace_id = (u128::from(mix(i)) << 64) | u128::from(i + 1);
        let at = first_us + i * window_us / FILL_TRACES;
        for s in request_spans(i, user, at).into_iter().rev() {
            store.insert(to_stored(trace_id, s, &services));
        }
    }
    // Reading the stats places the spans still waiting to enter.
    let stats = store.stats();
    let secs = start.elapsed().as_secs_f64();
    let grown = rss_bytes().saturating_sub(before);
    assert_eq!(stats.spans_dropped, 0, "the store must hold every span");
    Fill {
        spans: stats.spans,
        rss_per_span: grown as f64 / stats.spans as f64,
        accounted_per_span: stats.bytes as f64 / stats.spans as f64,
        secs,
        heavy_traces: per_user[HEAVY_USER as usize],
        typical_traces: per_user[TYPICAL_USER as usize],
    }
}

/// One search's timings.
struct Timed {
    label: &'static str,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    found: usize,
    cut: bool,
}

/// Runs the search the viewer's query string `params` asks for, once to warm up and then
/// [`QUERY_RUNS`] times.
fn time_query(store: &TraceStore, label: &'static str, params: &[(&str, String)]) -> Timed {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let query = search_params::parse_query(&params, API_MAX_BYTES).expect("valid search");
    let (warm, cut) = store.find_within(&query);
    let found = warm.len();
    drop(warm);
    let mut ms: Vec<f64> = (0..QUERY_RUNS)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(store.find_within(&query));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Timed {
        label,
        median_ms: ms[ms.len() / 2],
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        found,
        cut,
    }
}

/// A user's `user.id` as a Jaeger `tags` parameter.
fn user_tag(user: u32) -> String {
    serde_json::json!({ "user.id": format!("user-{user:04}") }).to_string()
}

/// The searches over the filled store: by user (indexed), a user's session view, by a tag
/// that has no index, and by service only.
fn queries(store: &TraceStore) -> Vec<Timed> {
    vec![
        time_query(
            store,
            "search: service + operation + user.id, limit 20",
            &[
                ("service", "Chat".into()),
                ("operation", "Chat/HD_Notify".into()),
                ("tags", user_tag(TYPICAL_USER)),
                ("lookback", "1h".into()),
                ("limit", "20".into()),
            ],
        ),
        time_query(
            store,
            "session view: user.id (1,000 traces), limit 500",
            &[
                ("tags", user_tag(HEAVY_USER)),
                ("lookback", "2d".into()),
                ("limit", "500".into()),
            ],
        ),
        time_query(
            store,
            "search: service + operation + mqrs.topic (no index)",
            &[
                ("service", "Gate".into()),
                ("operation", "gate Room/HD_Join".into()),
                ("tags", r#"{"mqrs.topic":"Room/HD_Join/17"}"#.into()),
                ("lookback", "1h".into()),
                ("limit", "20".into()),
            ],
        ),
        time_query(
            store,
            "search: service only, limit 20",
            &[
                ("service", "Chat".into()),
                ("lookback", "1h".into()),
                ("limit", "20".into()),
            ],
        ),
    ]
}

/// One OTLP request body, encoded once, whose trace ids each request rewrites in place.
struct Template {
    body: Vec<u8>,
    /// Where the [`MARKER`] half of each trace id sits in `body`.
    marks: Vec<usize>,
}

impl Template {
    /// [`BATCH_SPANS`] spans of consecutive requests (the last one cut short, its other spans
    /// left to a later batch, as an SDK's batches fall), grouped by service as an SDK sends
    /// them.
    fn new() -> Template {
        let start_us = now_us();
        let traces = BATCH_SPANS.div_ceil(SPANS_PER_TRACE) as u64;
        let mut by_service: Vec<Vec<Span>> = SERVICES.iter().map(|_| Vec::new()).collect();
        let mut n = 0;
        for i in 0..traces {
            let trace_id = (u128::from(MARKER) << 64) | u128::from(i + 1);
            for s in request_spans(i, user_of(i), start_us + i * 500) {
                if n < BATCH_SPANS {
                    by_service[s.service].push(to_otlp(trace_id, s));
                    n += 1;
                }
            }
        }
        let resource_spans = SERVICES
            .iter()
            .zip(by_service)
            .map(|(name, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        attr(
                            "service.name",
                            any_value::Value::StringValue(name.to_string()),
                        ),
                        attr(
                            "telemetry.sdk.language",
                            any_value::Value::StringValue("rust".into()),
                        ),
                        attr(
                            "telemetry.sdk.name",
                            any_value::Value::StringValue("opentelemetry".into()),
                        ),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "mqrs".into(),
                        version: "0.1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        let body = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
        let marker = MARKER.to_be_bytes();
        let marks: Vec<usize> = body
            .windows(marker.len())
            .enumerate()
            .filter(|(_, w)| *w == marker)
            .map(|(at, _)| at)
            .collect();
        assert_eq!(
            marks.len(),
            BATCH_SPANS,
            "one trace id per span in the template"
        );
        Template { body, marks }
    }

    /// The body of request `seq`: every trace id's high half replaced by `seq + 1`, so each
    /// request carries new traces.
    fn body(&self, seq: u64) -> Bytes {
        let mut body = self.body.clone();
        let high = (seq + 1).to_be_bytes();
        for &at in &self.marks {
            body[at..at + high.len()].copy_from_slice(&high);
        }
        Bytes::from(body)
    }
}

/// What one client saw during the measure.
#[derive(Default)]
struct ClientCount {
    accepted: u64,
    requests: u64,
    failed: u64,
    error: Option<String>,
}

/// Posts batches to `addr` over one keep-alive connection until `end`, counting what is
/// accepted from `from` on.
async fn client(
    addr: SocketAddr,
    template: Arc<Template>,
    seq: Arc<AtomicU64>,
    from: Instant,
    end: Instant,
) -> ClientCount {
    let mut count = ClientCount::default();
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            count.error = Some(format!("connect: {e}"));
            return count;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => {
            count.error = Some(format!("handshake: {e}"));
            return count;
        }
    };
    tokio::spawn(conn);
    let host = addr.to_string();
    while Instant::now() < end {
        let body = template.body(seq.fetch_add(1, Ordering::Relaxed));
        let request = hyper::Request::post("/v1/traces")
            .header(HOST, &host)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .expect("a valid request");
        let answer = async {
            let response = sender.send_request(request).await?;
            let ok = response.status().is_success();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((ok, body))
        };
        let (ok, body) = match answer.await {
            Ok(r) => r,
            Err(e) => {
                count.error = Some(format!("request: {e}"));
                break;
            }
        };
        let rejected = ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64);
        if Instant::now() >= from {
            count.requests += 1;
            if ok {
                count.accepted += BATCH_SPANS as u64 - rejected;
            } else {
                count.failed += 1;
            }
        }
    }
    count
}

/// What the ingest measure found.
struct Ingest {
    spans_per_s: f64,
    requests: u64,
    failed: u64,
    body_bytes: usize,
    stats: StoreStats,
    errors: Vec<String>,
}

/// Starts the collector as the standalone viewer does (store and collector only, on a free
/// loopback port) with caps far above what the measure sends, and posts to it from
/// [`CLIENTS`] clients for [`WARMUP`] + [`MEASURE`].
async fn ingest() -> Ingest {
    // Room for 20 M spans (4 M traces, about 4 GiB): every span the measure sends is kept, so
    // what is measured is taking spans in, not evicting.
    let store = Arc::new(TraceStore::new(StoreLimits {
        max_traces: 4_000_000,
        max_bytes: 8 << 30,
        max_traces_per_session: usize::MAX,
        ..StoreLimits::default()
    }));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (addr, collector) = mqrs_viewer::serve_collector(
        store.clone(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        4 << 20,
        Duration::from_secs(3600),
        stopped,
    )
    .await
    .expect("collector starts");
    let template = Arc::new(Template::new());
    let seq = Arc::new(AtomicU64::new(0));
    let from = Instant::now() + WARMUP;
    let end = from + MEASURE;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(addr, template.clone(), seq.clone(), from, end)))
        .collect();
    let mut total = ClientCount::default();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(c) => {
                total.accepted += c.accepted;
                total.requests += c.requests;
                total.failed += c.failed;
                errors.extend(c.error);
            }
            Err(e) => errors.push(format!("client task: {e}")),
        }
    }
    let stats = store.stats();
    let _ = stop.send(true);
    let _ = collector.await;
    Ingest {
        spans_per_s: total.accepted as f64 / MEASURE.as_secs_f64(),
        requests: total.requests,
        failed: total.failed,
        body_bytes: template.body.len(),
        stats,
        errors,
    }
}

/// `n` with thousands separated by commas.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `ok` or `MISS`.
fn verdict(met: bool) -> &'static str {
    if met {
        "ok"
    } else {
        "MISS"
    }
}

fn main() {
    // Measures 2 and 3: one store holding every span.
    let store = TraceStore::new(StoreLimits {
        max_traces: FILL_TRACES as usize,
        max_bytes: 8 << 30,
        max_spans_per_trace: 2_000,
        max_traces_per_session: usize::MAX,
    });
    println!(
        "[2] filling a store with {} traces x {SPANS_PER_TRACE} spans ({USERS} users, {} services) through TraceStore::insert",
        thousands(FILL_TRACES as f64),
        SERVICES.len()
    );
    let f = fill(&store);
    println!(
        "    {} spans in {:.2} s ({} spans/s, one thread); user-{HEAVY_USER:04} holds {} traces, user-{TYPICAL_USER:04} {}",
        thousands(f.spans as f64),
        f.secs,
        thousands(f.spans as f64 / f.secs),
        f.heavy_traces,
        f.typical_traces
    );
    println!(
        "    memory per span: {:.0} B of RSS growth, {:.0} B by the store's accounting (encoded span + 16)",
        f.rss_per_span, f.accounted_per_span
    );
    println!(
        "[3] searches over {} spans, {QUERY_RUNS} runs each (after one warm-up run)",
        thousands(f.spans as f64)
    );
    let timed = queries(&store);
    for t in &timed {
        println!(
            "    {:<50} median {:>7.1} ms (min {:.1}, max {:.1}); {} traces{}",
            t.label,
            t.median_ms,
            t.min_ms,
            t.max_ms,
            t.found,
            if t.cut { ", cut at 1 MiB" } else { "" }
        );
    }
    drop(store);

    // Measure 1: the collector on loopback.
    println!(
        "[1] OTLP/HTTP protobuf ingest: {CLIENTS} keep-alive HTTP/1.1 clients, {BATCH_SPANS} spans per POST /v1/traces, {:.1} s warm-up + {} s",
        WARMUP.as_secs_f64(),
        MEASURE.as_secs()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ing = rt.block_on(ingest());
    let s = &ing.stats;
    println!(
        "    {} spans/s accepted; {} requests of {} KiB in the measure, {} failed",
        thousands(ing.spans_per_s),
        thousands(ing.requests as f64),
        ing.body_bytes / 1024,
        ing.failed
    );
    println!(
        "    store after: {} spans received, {} stored ({} traces, {} MiB), {} evicted, {} refused; collector: {} requests, {} rejected",
        thousands(s.spans_received as f64),
        thousands(s.spans as f64),
        thousands(s.traces as f64),
        s.bytes >> 20,
        s.spans_evicted,
        s.spans_refused,
        thousands(s.otlp_requests as f64),
        s.otlp_rejected
    );
    for e in &ing.errors {
        println!("    client error: {e}");
    }

    println!();
    println!(
        "summary (this machine: {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<62} {:>14} {:>14}", "measure", "figure", "target");
    println!(
        "{:<62} {:>14} {:>14}  {}",
        "OTLP/HTTP protobuf ingest, spans/s",
        thousands(ing.spans_per_s),
        format!(">= {}", thousands(INGEST_TARGET)),
        verdict(ing.spans_per_s >= INGEST_TARGET && ing.errors.is_empty())
    );
    println!(
        "{:<62} {:>14} {:>14}",
        "memory per stored span, RSS growth",
        format!("{:.0} B", f.rss_per_span),
        "-"
    );
    println!(
        "{:<62} {:>14} {:>14}",
        "memory per stored span, store's accounting",
        format!("{:.0} B", f.accounted_per_span),
        "-"
    );
    for t in &timed {
        println!(
            "{:<62} {:>14} {:>14}  {}",
            format!("{} (1M spans)", t.label),
            format!("{:.1} ms", t.median_ms),
            format!("< {QUERY_TARGET_MS:.0} ms"),
            verdict(t.median_ms < QUERY_TARGET_MS)
        );
    }
}
