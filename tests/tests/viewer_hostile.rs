//! The viewer and the collector against an attacker on the same machine: what one request can
//! make the process hold is bounded (a fat span is cut as it enters, a trace read back is cut
//! at the answer cap, a multi-fetch counts each id once against it), slow clients from one host
//! cannot take every connection and are cut off on deadlines, a stranger cannot graft a span
//! onto a real trace under one of its ids, and the collector refuses what OTLP/HTTP does not
//! allow (no content type) or what cannot be true (spans from the future).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::browser::render;
use common::{http_post, start_demo, Running};
use mqrs_runtime::trace::{StoredSpan, Tag};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rumqttc::QoS;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

fn span(trace: u128, id: u64, parent: Option<u64>, name: &str) -> Span {
    let start = now_ns() - 2_000_000;
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        ..Default::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

const PROTO: [(&str, &str); 1] = [("Content-Type", "application/x-protobuf")];

/// Posts `req` as protobuf; the status and the decoded answer (or the raw body on an error).
async fn post(collector: SocketAddr, req: &ExportTraceServiceRequest) -> (u16, Vec<u8>) {
    http_post(collector, "/v1/traces", &PROTO, &req.encode_to_vec()).await
}

fn collector(d: &Running) -> SocketAddr {
    d.app.addrs().collector.expect("collector")
}

/// Waits until trace `id` is held with at least `n` spans; its Jaeger JSON answer.
async fn trace_answer(d: &Running, id: &str, n: usize) -> (Value, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = common::http_get_text(d.viewer, &format!("/api/traces/{id}")).await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && v["data"][0]["spans"].as_array().map_or(0, Vec::len) >= n {
            return (v, body.len());
        }
        assert!(
            Instant::now() < deadline,
            "trace {id}: {status} {body:.300}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fat_span_is_cut_as_it_enters_and_reads_back_small() {
    let d = start_demo(|_| {}).await;
    // The attack: one span with 200,000 empty attributes and 2,000 events of 50 attributes
    // (about 3 MB of protobuf).
    let trace = 0xfa7u128 << 64 | 1;
    let mut fat = span(trace, 1, None, "fat");
    fat.attributes = (0..200_000)
        .map(|i| KeyValue {
            key: format!("k{i}"),
            ..Default::default()
        })
        .collect();
    fat.events = (0..2_000)
        .map(|i| Event {
            time_unix_nano: fat.start_time_unix_nano,
            name: format!("e{i}"),
            attributes: (0..50).map(|j| text(&format!("a{j}"), "x")).collect(),
            ..Default::default()
        })
        .collect();
    let (status, body) = post(collector(&d), &request("fat-svc", vec![fat])).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (v, bytes) = trace_answer(&d, &format!("{trace:032x}"), 1).await;
    let s = &v["data"][0]["spans"][0];
    let tags = s["tags"].as_array().expect("tags");
    // 128 attributes, the two drop counts, and the span kind.
    assert!(tags.len() <= 131, "{} tags", tags.len());
    let tag = |k: &str| {
        tags.iter()
            .find(|t| t["key"] == k)
            .map(|t| t["value"].clone())
    };
    assert_eq!(
        tag("otel.dropped_attributes_count"),
        Some(Value::from(200_000 - 128 + 128 * 18))
    );
    assert_eq!(
        tag("otel.dropped_events_count"),
        Some(Value::from(2_000 - 128))
    );
    assert_eq!(s["logs"].as_array().map(Vec::len), Some(128));
    assert!(bytes < 1 << 20, "answer of {bytes} bytes");
    let (_, stats) = d.get("/api/stats").await;
    assert_eq!(stats["spans_limited"], 1, "{stats}");
    d.app.shutdown().await;
}

/// A trace of `n` spans of about 1 KB each, put straight into the store.
fn big_trace(d: &Running, trace: u128, n: u64) {
    let store = d.app.trace_store().expect("store");
    for i in 1..=n {
        store.insert(StoredSpan {
            trace_id: trace,
            span_id: i,
            parent_span_id: (i > 1).then_some(1),
            name: "Big/op".into(),
            service: Arc::from("Big"),
            kind: "server",
            start_us: 1_000_000 + i,
            duration_us: 10,
            tags: vec![Tag::new("pad", "p".repeat(1000))],
            events: vec![],
            error: None,
            ..Default::default()
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_read_back_is_cut_at_the_answer_cap_and_ids_count_once() {
    let d = start_demo(|_| {}).await;
    for t in 1..=3u128 {
        big_trace(&d, t, 2_000);
    }
    let id = format!("{:032x}", 1);
    let (v, bytes) = trace_answer(&d, &id, 1).await;
    let n = v["data"][0]["spans"].as_array().map_or(0, Vec::len);
    assert!((500..2_000).contains(&n), "{n} spans");
    assert!(bytes < 4 << 20, "answer of {bytes} bytes");
    for w in [&v["warnings"][0], &v["data"][0]["warnings"][0]] {
        assert!(
            w.as_str()
                .is_some_and(|w| w.contains("trace cut") && w.contains("of its 2000 spans")),
            "{w}"
        );
    }
    // api_v3 cuts the same way.
    let (_, v3) = common::http_get(d.viewer, &format!("/api/v3/traces/{id}")).await;
    assert!(
        v3["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("trace cut")),
        "{:.300}",
        v3.to_string()
    );
    // One id 1,500 times in the URL is read once.
    let many = vec![format!("traceID={id}"); 1_500].join("&");
    let (status, body) = common::http_get_text(d.viewer, &format!("/api/traces?{many}")).await;
    assert_eq!(status, 200);
    assert!(body.len() < 4 << 20, "{} bytes", body.len());
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
    // Three fat traces: the first fills the cap, the others are named as not read.
    let three = (1..=3)
        .map(|t| format!("traceID={t:032x}"))
        .collect::<Vec<_>>()
        .join("&");
    let (_, v) = common::http_get(d.viewer, &format!("/api/traces?{three}")).await;
    assert_eq!(
        v["data"].as_array().map(Vec::len),
        Some(1),
        "{:.300}",
        v.to_string()
    );
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e["code"] == 413), "{errors:?}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_graft_a_span_under_a_held_id_and_cycles_still_render() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("grafted").await;
    let r = common::join_chat(&c, "graft", QoS::AtLeastOnce).await;
    let id = r["TraceId"].as_str().expect("traced").to_string();
    let trace = d.wait_chat_trace(&id).await;
    let held = trace["spans"].as_array().map_or(0, Vec::len);
    let root = trace["spans"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["references"].as_array().is_some_and(Vec::is_empty))
        })
        .expect("root")["spanID"]
        .as_str()
        .expect("root id")
        .to_string();
    // The root's own id, naming itself as parent, with a false error and user.
    let tid = u128::from_str_radix(&id, 16).expect("hex");
    let rid = u64::from_str_radix(&root, 16).expect("hex");
    let mut poison = span(tid, rid, Some(rid), "poison");
    poison.attributes = vec![text("user.id", "mallory")];
    poison.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "fake".into(),
    });
    let mut again = span(tid, rid, None, "again");
    again.attributes = vec![text("user.id", "mallory")];
    let (status, _) = post(collector(&d), &request("Gate", vec![poison, again])).await;
    assert_eq!(status, 200);
    let (_, stats) = d.get("/api/stats").await;
    assert_eq!(stats["spans_conflicting"], 2, "{stats}");
    let (v, _) = trace_answer(&d, &id, held).await;
    let now = v["data"][0]["spans"].as_array().expect("spans");
    assert_eq!(now.len(), held);
    assert!(!v.to_string().contains("mallory") && !v.to_string().contains("fake"));

    // A trace whose spans make a parent cycle (ids all distinct, which the store allows):
    // the page shows every span once and finishes.
    let cyc = 0xc7c1eu128 << 64 | 7;
    let spans = vec![
        span(cyc, 1, None, "root"),
        span(cyc, 2, Some(3), "a"),
        span(cyc, 3, Some(2), "b"),
        span(cyc, 4, Some(4 + 100), "orphan"),
    ];
    let (status, _) = post(collector(&d), &request("cycle-svc", spans)).await;
    assert_eq!(status, 200);
    let cyc = format!("{cyc:032x}");
    trace_answer(&d, &cyc, 4).await;
    let dom = render(&format!("http://{}/trace/{cyc}", d.viewer)).await;
    let dom = dom.split("<script").next().unwrap_or_default().to_string();
    assert_eq!(dom.matches("class=\"span-row").count(), 4, "{dom:.2000}");
    d.app.shutdown().await;
}

/// Opens a connection to `to` from the loopback address `from` (another "host").
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(to).await
}

/// A request head sent one byte a second from `from`, for as long as the server reads it;
/// how long the connection lasted, or `None` if it was closed before the first byte.
async fn trickle(from: [u8; 4], to: SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let mut s = connect_from(from, to).await.ok()?;
    let head = b"GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut buf = [0u8; 64];
    // Closed at once (a slot refused): the read sees the end before anything is sent.
    if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
        return None;
    }
    for b in head.iter().chain(std::iter::repeat(&b'a')) {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => break,
            Err(_) => {}
        }
        if t.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    Some(t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_from_one_host_do_not_shut_out_others_and_are_cut_off() {
    let d = start_demo(|_| {}).await;
    let (viewer, otlp) = (d.viewer, collector(&d));
    let mut slow = Vec::new();
    for to in [viewer, otlp] {
        for _ in 0..70 {
            slow.push(tokio::spawn(trickle([127, 0, 0, 2], to)));
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Meanwhile a client on another address is served at once, on both ports.
    let t = Instant::now();
    let (status, stats) = tokio::time::timeout(Duration::from_secs(2), d.get("/api/stats"))
        .await
        .expect("the viewer answers while slow clients hold their slots");
    assert_eq!(status, 200);
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(2),
        post(otlp, &request("beside-slow", vec![span(77, 1, None, "ok")])),
    )
    .await
    .expect("the collector answers too");
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        stats["http"]["viewer"]["refused_per_address"].as_u64() >= Some(54),
        "{stats}"
    );
    // Those let in are closed once their head is 5 s late (not kept alive by their bytes).
    let mut lasted = Vec::new();
    for s in slow {
        if let Some(d) = s.await.expect("trickle task") {
            lasted.push(d);
        }
    }
    assert_eq!(lasted.len(), 32, "16 a port let in");
    assert!(
        lasted.iter().all(|d| *d < Duration::from_secs(9)),
        "{lasted:?}"
    );
    let (_, stats) = d.get("/api/stats").await;
    for side in ["viewer", "collector"] {
        assert!(
            stats["http"][side]["head_timeouts"].as_u64() >= Some(16),
            "{side}: {stats}"
        );
    }
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_is_refused_with_408() {
    let d = start_demo(|_| {}).await;
    let mut s = tokio::net::TcpStream::connect(collector(&d))
        .await
        .expect("connect");
    let head = "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n";
    s.write_all(head.as_bytes()).await.expect("head");
    let t = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while t.elapsed() < Duration::from_secs(15) {
        let _ = s.write_all(&[0u8; 8]).await;
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    let (_, stats) = d.get("/api/stats").await;
    assert_eq!(stats["http"]["collector"]["slow_bodies"], 1, "{stats}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_refuses_what_otlp_does_not_allow_or_cannot_be_true() {
    let d = start_demo(|_| {}).await;
    let otlp = collector(&d);
    let body = request("no-type", vec![span(5, 1, None, "x")]).encode_to_vec();
    // No Content-Type: what a web page on another origin can send without asking.
    let (status, reply) = http_post(otlp, "/v1/traces", &[], &body).await;
    assert_eq!(status, 415, "{}", String::from_utf8_lossy(&reply));
    assert!(String::from_utf8_lossy(&reply).contains("no Content-Type"));
    // A span two hours ahead of the clock is refused; ten minutes ahead is taken.
    let mut future = span(6, 1, None, "future");
    future.start_time_unix_nano = now_ns() + 2 * 3600 * 1_000_000_000;
    future.end_time_unix_nano = future.start_time_unix_nano + 1;
    let mut ahead = span(6, 2, None, "ahead");
    ahead.start_time_unix_nano = now_ns() + 600 * 1_000_000_000;
    ahead.end_time_unix_nano = ahead.start_time_unix_nano + 1;
    let mut long = span(6, 3, None, "ends-far-ahead");
    long.end_time_unix_nano = now_ns() + 90 * 24 * 3600 * 1_000_000_000;
    let (status, reply) = post(otlp, &request("clock", vec![future, ahead, long])).await;
    assert_eq!(status, 200);
    let answer = ExportTraceServiceResponse::decode(&reply[..]).expect("answer");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2, "{partial:?}");
    assert!(
        partial.error_message.contains("in the future"),
        "{partial:?}"
    );
    let (v, _) = trace_answer(&d, &format!("{:032x}", 6), 1).await;
    assert_eq!(v["data"][0]["spans"].as_array().map(Vec::len), Some(1));
    // One request cannot replace the store: it may bring spans of at most an eighth of the
    // store's traces (1,250 of the default 10,000), and at most 16,384 spans.
    let many: Vec<Span> = (1..=20_000u64)
        .map(|i| span(1000 + i as u128, 1, None, "m"))
        .collect();
    let (status, reply) = post(otlp, &request("many", many)).await;
    assert_eq!(status, 200);
    let partial = ExportTraceServiceResponse::decode(&reply[..])
        .expect("answer")
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 20_000 - 1_250, "{partial:?}");
    assert!(
        partial
            .error_message
            .contains("1250 taken from one request"),
        "{partial:?}"
    );
    trace_answer(&d, &format!("{:032x}", 6), 1).await;
    let one: Vec<Span> = (1..=20_000u64).map(|i| span(9, i, None, "one")).collect();
    let (_, reply) = post(otlp, &request("one", one)).await;
    let partial = ExportTraceServiceResponse::decode(&reply[..])
        .expect("answer")
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 20_000 - 16_384, "{partial:?}");
    let (_, stats) = d.get("/api/stats").await;
    assert_eq!(stats["otlp_future_spans"], 2, "{stats}");
    d.app.shutdown().await;
}

/// Clients that ask for large answers and never read them: each connection is closed once it
/// has taken no bytes for 10 s, so its slot comes back (else one address's 16 slots would be
/// held for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_nobody_reads_do_not_hold_their_connections() {
    let d = start_demo(|_| {}).await;
    big_trace(&d, 1, 2_000);
    let viewer = d.viewer;
    let from = [127, 0, 0, 3];
    let mut held = Vec::new();
    for _ in 0..16 {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.set_recv_buffer_size(4096).expect("small receive buffer");
        s.bind(SocketAddr::from((from, 0))).expect("bind");
        let mut s = s.connect(viewer).await.expect("connect");
        let get = format!("GET /api/traces/{:032x} HTTP/1.1\r\nHost: x\r\n\r\n", 1);
        s.write_all(get.repeat(8).as_bytes()).await.expect("send");
        held.push(s);
    }
    // All 16 of the address's slots are taken, so a GET from it is turned away, until their
    // writes have waited 10 s: then they are closed and the address is served again.
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut s = connect_from(from, viewer).await.expect("connect");
        s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "stalled answers still hold the address's slots"
        );
    }
    // Not at once: the slots were held.
    assert!(t.elapsed() > Duration::from_secs(5), "{:?}", t.elapsed());
    drop(held);
    d.app.shutdown().await;
}
