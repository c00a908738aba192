//! The viewer cannot starve the gate: searches answer with a bounded amount of data whatever
//! their `limit`, idle HTTP connections neither take the gate's descriptors nor keep the viewer
//! busy for long, and errors from the HTTP layer come in the API's JSON shape.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{http_get, http_get_text, http_post, start_demo};
use mqrs_runtime::trace::{StoredSpan, Tag};
use rumqttc::QoS;

/// A trace of ten spans, each with about 1 KB of tags.
fn heavy_trace(store: &mqrs_runtime::trace::TraceStore, trace: u128) {
    for i in 0..10u64 {
        store.insert(StoredSpan {
            trace_id: trace,
            span_id: trace as u64 * 100 + i + 1,
            parent_span_id: (i > 0).then_some(trace as u64 * 100 + 1),
            name: "Heavy/op".into(),
            service: Arc::from("Heavy"),
            kind: "server",
            start_us: 1_000_000 + trace as u64,
            duration_us: 10,
            tags: vec![Tag::new("pad", "p".repeat(1000))],
            events: vec![],
            error: None,
            ..Default::default()
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_answers_with_bounded_data_whatever_its_limit() {
    let d = start_demo(|_| {}).await;
    let store = d.app.trace_store().expect("store");
    for t in 1..=1500u128 {
        heavy_trace(&store, t);
    }
    let (status, body) = http_get_text(d.viewer, "/api/traces?service=Heavy&limit=1500").await;
    assert_eq!(status, 200);
    assert!(body.len() < 16 << 20, "{} bytes", body.len());
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let n = v["data"].as_array().map_or(0, Vec::len);
    assert!((1..1500).contains(&n), "{n} traces");
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("answer cut")),
        "{}",
        v["warnings"]
    );
    // A small search is not cut.
    let (_, v) = http_get(d.viewer, "/api/traces?service=Heavy&limit=5").await;
    assert_eq!(v["data"].as_array().map_or(0, Vec::len), 5);
    assert!(v.get("warnings").is_none(), "{}", v["warnings"]);
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_viewer_connections_do_not_stop_the_gate_and_time_out() {
    let d = start_demo(|_| {}).await;
    // From ten other loopback addresses, 15 each: under the cap one address may hold, over
    // the 64 the viewer serves at once.
    let mut idle = Vec::new();
    for i in 0..150u8 {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(std::net::SocketAddr::from(([127, 0, 0, 10 + i % 10], 0)))
            .expect("bind");
        idle.push(s.connect(d.viewer).await.expect("connect"));
    }
    // The gate serves as usual meanwhile.
    let c = d.logged_in("beside-idle").await;
    let r = common::join_chat(&c, "idle", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "", "{r}");
    // Connections that send nothing are closed 2 s after they are accepted, 64 at a time, so
    // the viewer answers again after a few rounds.
    let t = Instant::now();
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(15), http_get(d.viewer, "/api/stats"))
            .await
            .expect("the viewer answers once idle connections are closed");
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(15));
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_layer_errors_come_in_the_api_shape() {
    let d = start_demo(|_| {}).await;
    let (status, body) = http_post(d.viewer, "/api/traces", &[], b"{}").await;
    assert_eq!(status, 405);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(v["errors"][0]["code"], 405, "{v}");
    let (status, v) = http_get(d.viewer, "/api/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(v["errors"][0]["code"], 404, "{v}");
    d.app.shutdown().await;
}
