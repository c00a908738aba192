//! The OTLP/HTTP collector from outside: the OpenTelemetry Python SDK (nobody on this team wrote
//! it) exports a trace, plain and gzip-compressed, and the Jaeger API gives it back nested with
//! its service, tags, events and error; OTLP/JSON as the specification writes it is accepted;
//! bad bodies get 400, oversized ones 413, invalid ids a partial success.

mod common;

use std::time::{Duration, Instant};

use common::{http_post, spans, start_demo, tools, Running};
use serde_json::Value;

/// Waits until trace `id` has `n` spans and returns it (Jaeger JSON).
async fn trace_with(d: &Running, id: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = d.get(&format!("/api/traces/{id}")).await;
        if status == 200 && body["data"][0]["spans"].as_array().map_or(0, Vec::len) >= n {
            return body["data"][0].clone();
        }
        assert!(Instant::now() < deadline, "trace {id}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_a_trace_that_the_jaeger_api_returns() {
    let python = tools::test_python();
    let d = start_demo(|_| {}).await;
    let url = format!(
        "http://{}/v1/traces",
        d.app.addrs().collector.expect("collector")
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/otel_export.py");
    for compression in ["none", "gzip"] {
        let out = tools::run(
            tokio::process::Command::new(&python).args([script, &url, compression]),
            Duration::from_secs(30),
        )
        .await;
        assert!(
            out.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(id.len(), 32, "{id}");
        let t = trace_with(&d, &id, 2).await;
        let all = spans(&t);
        let root = all.iter().find(|s| s.name == "checkout").expect("checkout");
        let child = all.iter().find(|s| s.name == "charge").expect("charge");
        assert_eq!(child.parent.as_deref(), Some(root.id.as_str()));
        assert_eq!(
            (root.service.as_str(), root.kind.as_str()),
            ("py-shop", "server")
        );
        assert_eq!(child.kind, "client");
        assert_eq!(child.tag("payment.amount"), Some(Value::from(42)));
        assert_eq!(child.tag("error"), Some(Value::Bool(true)));
        assert_eq!(
            child.tag("otel.status_description"),
            Some(Value::from("declined"))
        );
        let raw = t["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["operationName"] == "charge"))
            .expect("raw charge");
        assert!(raw["logs"].to_string().contains("card declined"), "{raw}");
    }
    let (_, services) = d.get("/api/services").await;
    assert!(
        services["data"].to_string().contains("py-shop"),
        "{services}"
    );
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_bad_bodies_and_limits() {
    let d = start_demo(|c| c.trace.collector_max_body = 64 * 1024).await;
    let addr = d.app.addrs().collector.expect("collector");
    let json = [("Content-Type", "application/json")];
    // OTLP/JSON as the specification writes it: hex ids, nanoseconds as strings, enum numbers.
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "name": "json-op",
            "kind": 2,
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": "1544712661000000000",
            "attributes": [{"key": "k", "value": {"intValue": "7"}}]
        }, {
            "traceId": "",
            "spanId": "eee19b7ec3c1b175",
            "name": "no-trace-id",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": "1544712661000000000"
        }]}]
    }]});
    let (status, reply) = http_post(addr, "/v1/traces", &json, body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let reply: Value = serde_json::from_slice(&reply).expect("JSON reply");
    assert_eq!(reply["partialSuccess"]["rejectedSpans"], 1, "{reply}");
    let t = trace_with(&d, "5b8efff798038103d269b633813fc60c", 1).await;
    let s = &spans(&t)[0];
    assert_eq!(
        (s.name.as_str(), s.service.as_str()),
        ("json-op", "json-svc")
    );
    assert_eq!((s.start, s.duration), (1_544_712_660_000_000, 1_000_000));
    assert_eq!(s.tag("k"), Some(Value::from(7)));

    // Malformed: 400 with the reason, in either encoding.
    let (status, reply) = http_post(addr, "/v1/traces", &json, b"{\"resourceSpans\": 3}").await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&reply).contains("OTLP/JSON"));
    let proto = [("Content-Type", "application/x-protobuf")];
    let (status, reply) = http_post(addr, "/v1/traces", &proto, &[0xff; 16]).await;
    assert_eq!(status, 400);
    // A google.rpc.Status: field 1 (code) = 3, INVALID_ARGUMENT; field 2 (message) the reason.
    assert_eq!(reply[..2], [0x08, 3], "{reply:?}");
    assert_eq!(reply[2], 0x12, "{reply:?}");
    assert!(String::from_utf8_lossy(&reply).contains("protobuf"));
    let gz = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "gzip"),
    ];
    let (status, _) = http_post(addr, "/v1/traces", &gz, b"not gzip at all").await;
    assert_eq!(status, 400);
    // Neither protobuf nor JSON: 415, as OTLP/HTTP asks.
    let (status, _) = http_post(addr, "/v1/traces", &[("Content-Type", "text/plain")], b"hi").await;
    assert_eq!(status, 415);
    // Over the configured body limit: 413, and the collector keeps serving.
    let (status, reply) = http_post(addr, "/v1/traces", &proto, &vec![0u8; 128 * 1024]).await;
    assert_eq!(status, 413);
    assert_eq!(reply[..2], [0x08, 8], "RESOURCE_EXHAUSTED: {reply:?}");
    let (status, _) = http_post(addr, "/v1/traces", &proto, &[]).await;
    assert_eq!(status, 200, "an empty request is a valid, empty export");

    // What went in and what was refused, as a Prometheus client library reads `/metrics`.
    let (_, stats) = d.get("/api/stats").await;
    assert_eq!(
        (
            stats["otlp_requests"].as_u64(),
            stats["otlp_rejected"].as_u64()
        ),
        (Some(7), Some(5)),
        "{stats}"
    );
    let scraped = tools::prom_scrape(&format!("http://{}/metrics", d.viewer)).await;
    assert!(
        scraped["content_type"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{scraped}"
    );
    let family = |name: &str| scraped["families"][name].clone();
    let requests = family("mqrs_otlp_requests");
    assert_eq!(requests["type"], "counter", "{scraped}");
    assert_eq!(
        requests["samples"]["mqrs_otlp_requests_total"], 7.0,
        "{scraped}"
    );
    assert_eq!(
        family("mqrs_otlp_requests_rejected")["samples"]["mqrs_otlp_requests_rejected_total"],
        5.0
    );
    assert_eq!(
        family("mqrs_trace_spans_received")["samples"]["mqrs_trace_spans_received_total"],
        1.0,
        "the one JSON span with a trace id"
    );
    let held = family("mqrs_trace_spans");
    assert_eq!(
        (
            held["type"].as_str(),
            held["samples"]["mqrs_trace_spans"].as_f64()
        ),
        (Some("gauge"), Some(1.0))
    );
    d.app.shutdown().await;
}

/// Catches a collector that does not limit what a gzip body unpacks to (the `take` and the
/// size check after `GzDecoder` in `ingest.rs` taken out): 1 MiB of zeros packs into about a
/// kilobyte, far under `collector_max_body`, and must still be refused with 413 and a
/// RESOURCE_EXHAUSTED status, as an uncompressed body that size would be. A body that unpacks
/// to exactly the limit is not refused for its size (it is not protobuf: 400), one byte more is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_gzip_body_that_unpacks_past_the_limit_gets_413() {
    let max = 64 * 1024;
    let d = start_demo(|c| c.trace.collector_max_body = max).await;
    let addr = d.app.addrs().collector.expect("collector");
    let gz = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "gzip"),
    ];
    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }
    // An empty export, packed: gzip itself is taken.
    let (status, reply) = http_post(addr, "/v1/traces", &gz, &gzip(&[])).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));

    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 16 * 1024, "{} bytes packed", bomb.len());
    let (status, reply) = http_post(addr, "/v1/traces", &gz, &bomb).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(reply[..2], [0x08, 8], "RESOURCE_EXHAUSTED: {reply:?}");
    assert!(
        String::from_utf8_lossy(&reply).contains("unpacks to more than 65536 bytes"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // At the limit and one byte over it.
    let (status, reply) = http_post(addr, "/v1/traces", &gz, &gzip(&vec![0u8; max])).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    assert!(String::from_utf8_lossy(&reply).contains("protobuf"));
    let (status, reply) = http_post(addr, "/v1/traces", &gz, &gzip(&vec![0u8; max + 1])).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(reply[..2], [0x08, 8], "RESOURCE_EXHAUSTED: {reply:?}");

    // The collector keeps serving.
    let proto = [("Content-Type", "application/x-protobuf")];
    let (status, _) = http_post(addr, "/v1/traces", &proto, &[]).await;
    assert_eq!(status, 200);
    d.app.shutdown().await;
}

/// A body that is small but would decode to far more: 2 bytes an empty span on the wire,
/// about 260 decoded. Refused before it is decoded, with the reason; an ordinary batch of the
/// same size in bytes is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_empty_spans_that_would_decode_to_hundreds_of_mib_gets_413() {
    let d = start_demo(|_| {}).await;
    let addr = d.app.addrs().collector.expect("collector");
    let proto = [("Content-Type", "application/x-protobuf")];
    // Protobuf by hand: Request.resource_spans(1) { ResourceSpans.scope_spans(2) {
    // ScopeSpans.spans(2) {} x 1.5M } }.
    fn put_len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let spans = [0x12u8, 0x00].repeat(1_500_000);
    let mut scope = vec![0x12];
    put_len(&mut scope, spans.len());
    scope.extend_from_slice(&spans);
    let mut body = vec![0x0a];
    put_len(&mut body, scope.len());
    body.extend_from_slice(&scope);
    assert!(
        body.len() < 4 << 20,
        "within the body limit: {}",
        body.len()
    );
    let (status, reply) = http_post(addr, "/v1/traces", &proto, &body).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(reply[..2], [0x08, 8], "RESOURCE_EXHAUSTED: {reply:?}");
    assert!(
        String::from_utf8_lossy(&reply).contains("send smaller batches"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // The same in OTLP/JSON: empty objects.
    let json = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
        "{},".repeat(1_000_000)
    );
    let (status, reply) = http_post(
        addr,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&reply));
    let stats = d.app.trace_store().expect("store").stats();
    assert_eq!(stats.otlp_rejected, 2, "{stats:?}");
    assert_eq!(stats.spans_received, 0, "nothing was taken: {stats:?}");
    d.app.shutdown().await;
}
