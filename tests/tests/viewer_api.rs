//! The Jaeger-compatible query API as Grafana's Jaeger data source and the Jaeger UI call it,
//! and the viewer's HTML page.

mod common;

use common::{http_get_text, start_demo};
use rumqttc::QoS;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_query_api() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("gina").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = common::join_chat(&c, "api", QoS::AtLeastOnce).await;
        ids.push(r["TraceId"].as_str().expect("traced").to_string());
    }
    let bad = c
        .request("Nope/HD_X", b"{}", QoS::AtLeastOnce)
        .await
        .expect("error reply");
    let bad_id = bad["TraceId"]
        .as_str()
        .expect("error requests are traced too")
        .to_string();
    for id in &ids {
        d.wait_chat_trace(id).await;
    }
    // An unknown route: the gate's root alone, under the one fixed name (no call was made).
    let bad_trace = d.wait_trace(&bad_id, 1).await;
    assert_eq!(
        bad_trace["spans"][0]["operationName"], "gate unknown-route",
        "{bad_trace}"
    );

    let (st, v) = d.get("/api/services").await;
    assert_eq!(st, 200);
    assert_eq!(v["data"], serde_json::json!(["Chat", "Gate", "Login"]));

    let (_, v) = d.get("/api/services/Login/operations").await;
    let ops: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in ["Login/track", "Login/track2"] {
        assert!(ops.contains(&want), "{ops:?}");
    }
    let (_, v) = d.get("/api/operations?service=Chat&spanKind=server").await;
    assert_eq!(
        v["data"],
        serde_json::json!([{"name": "Chat/HD_JoinChat", "spanKind": "server"}])
    );
    let (st, _) = d.get("/api/operations").await;
    assert_eq!(st, 400);

    // Search by service and operation, newest first, limited.
    let (st, v) = d
        .get("/api/traces?service=Gate&operation=gate%20Chat%2FHD_JoinChat&limit=2&lookback=1h")
        .await;
    assert_eq!(st, 200, "{v}");
    let found: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["traceID"].as_str().expect("id"))
        .collect();
    assert_eq!(found, vec![ids[2].as_str(), ids[1].as_str()]);

    // Tag search (UTF-8 value, URL-encoded JSON) and duration filters.
    let tags = r#"{"track":"track测试"}"#;
    let path = format!(
        "/api/traces?service=Login&tags={}&limit=20",
        urlencode(tags)
    );
    let (_, v) = d.get(&path).await;
    assert_eq!(v["data"].as_array().expect("list").len(), 3, "{v}");
    let (_, v) = d
        .get("/api/traces?service=Login&minDuration=15ms&limit=20")
        .await;
    assert_eq!(
        v["data"].as_array().expect("list").len(),
        3,
        "track takes over 20 ms"
    );
    let (_, v) = d.get("/api/traces?service=Login&minDuration=10s").await;
    assert_eq!(v["data"], serde_json::json!([]));
    let (_, v) = d
        .get("/api/traces?tags=%7B%22error%22%3A%22true%22%7D&limit=20")
        .await;
    let errs: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["traceID"].as_str().expect("id"))
        .collect();
    assert_eq!(errs, vec![bad_id.as_str()]);

    // start/end in microseconds exclude everything when in the past.
    let (_, v) = d.get("/api/traces?service=Gate&start=1&end=2").await;
    assert_eq!(v["data"], serde_json::json!([]));

    // One trace: Jaeger's shape.
    let (st, v) = d.get(&format!("/api/traces/{}", ids[0])).await;
    assert_eq!(st, 200);
    let t = &v["data"][0];
    assert_eq!(t["traceID"], ids[0].as_str());
    let span = &t["spans"][0];
    for key in [
        "traceID",
        "spanID",
        "operationName",
        "references",
        "startTime",
        "duration",
        "tags",
        "logs",
        "processID",
    ] {
        assert!(span.get(key).is_some(), "span lacks {key}: {span}");
    }
    assert!(t["processes"]
        .as_object()
        .expect("processes")
        .values()
        .all(|p| p["serviceName"].is_string()));
    let err_trace = d.get(&format!("/api/traces/{bad_id}")).await.1;
    let err_tags = err_trace["data"][0]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .flat_map(|s| s["tags"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["key"] == "error")
        .count();
    assert_eq!(err_tags, 1, "the gate root carries error=true: {err_trace}");

    // Errors are JSON with a code, never a panic.
    let (st, v) = d.get("/api/traces/00000000000000000000000000000001").await;
    assert_eq!(st, 404);
    assert_eq!(v["errors"][0]["code"], 404);
    let (st, _) = d.get("/api/traces/not-hex").await;
    assert_eq!(st, 400);
    let (st, v) = d.get("/api/traces?minDuration=soon").await;
    assert_eq!(st, 400);
    assert!(v["errors"][0]["msg"]
        .as_str()
        .expect("msg")
        .contains("minDuration"));
    let (st, _) = d.get("/api/traces?tags=notjson").await;
    assert_eq!(st, 400);
    let (st, _) = d.get("/api/nothing").await;
    assert_eq!(st, 404);

    // Dependencies between services, and store counters.
    let (_, v) = d.get("/api/dependencies?lookback=3600000").await;
    let deps = v["data"].as_array().expect("list");
    let pair = |p: &str, c: &str| deps.iter().any(|x| x["parent"] == p && x["child"] == c);
    assert!(pair("Gate", "Chat") && pair("Chat", "Login"), "{v}");
    let (_, v) = d.get("/api/stats").await;
    assert!(v["spans"].as_u64().expect("spans") >= 21);
    assert_eq!(v["spans_dropped"], 0);

    // Per-operation latency of server spans.
    let (st, v) = d.get("/api/latency?lookback=1h&spanKind=server").await;
    assert_eq!(st, 200);
    let track = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|o| o["operation"] == "Login/track")
        .expect("Login/track listed")
        .clone();
    assert_eq!(
        (track["service"].clone(), track["count"].clone()),
        ("Login".into(), 3.into())
    );
    assert!(track["p50_us"].as_u64().expect("p50") >= 20_000, "{track}");
    assert!(
        track["p50_us"].as_u64() <= track["p95_us"].as_u64()
            && track["p95_us"].as_u64() <= track["max_us"].as_u64()
    );
    let (st, _) = d.get("/api/latency?lookback=forever").await;
    assert_eq!(st, 400);

    // The page itself.
    let (st, html) = http_get_text(d.viewer, "/").await;
    assert_eq!(st, 200);
    assert!(html.contains("<title>mqrs traces</title>"));
    let (st, _) = http_get_text(d.viewer, &format!("/trace/{}", ids[0])).await;
    assert_eq!(st, 200);
    d.app.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_caps_evict_oldest_and_count_drops() {
    let d = start_demo(|c| c.trace.max_traces = 2).await;
    let c = d.logged_in("hal").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let r = common::join_chat(&c, "cap", QoS::AtLeastOnce).await;
        let id = r["TraceId"].as_str().expect("traced").to_string();
        d.wait_chat_trace(&id).await;
        ids.push(id);
    }
    let (st, _) = d.get(&format!("/api/traces/{}", ids[0])).await;
    assert_eq!(st, 404, "oldest trace evicted");
    let (st, _) = d.get(&format!("/api/traces/{}", ids[3])).await;
    assert_eq!(st, 200);
    let (_, v) = d.get("/api/stats").await;
    assert_eq!(v["traces"], 2);
    assert!(v["spans_dropped"].as_u64().expect("count") >= 14, "{v}");
    d.app.shutdown().await;
}

/// Requests the Jaeger UI and Grafana send in their exact shapes: a list of trace ids (the UI's
/// multi-trace fetch and trace compare), repeated tags that must all apply, searches by status
/// and kind as the UI shows them, Go durations, and the lookbacks the UI offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_jaeger_clients_send() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("jo").await;
    let ok = common::join_chat(&c, "shapes", QoS::AtLeastOnce).await;
    let failed = c
        .request("Chat/HD_JoinChat", br#"{"roomName": ""}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    let ok = ok["TraceId"].as_str().expect("traced").to_string();
    let failed = failed["TraceId"].as_str().expect("traced").to_string();
    d.wait_chat_trace(&ok).await;
    d.wait_trace(&failed, 3).await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["traceID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };

    // Exactly the traces asked for, in order, and an error for the one not held.
    let missing = "0123456789abcdef0123456789abcdef";
    let (status, v) = d
        .get(&format!(
            "/api/traces?traceID={failed}&traceID={ok}&traceID={missing}"
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(ids(&v), [failed.clone(), ok.clone()], "{v}");
    assert_eq!(v["errors"][0]["traceID"], missing, "{v}");

    // Status and kind as the UI shows them, in any case; repeated tags all apply.
    for q in [
        "tags=%7B%22error%22%3A%22true%22%7D",
        "tag=otel.status_code:ERROR",
        "tag=otel.status_code:error",
        "tag=span.kind:SERVER&tag=error:true",
        "tags=%7B%22span.kind%22%3A%22client%22%7D&tags=%7B%22error%22%3A%22true%22%7D",
    ] {
        let (status, v) = d
            .get(&format!("/api/traces?service=Gate&lookback=1h&{q}"))
            .await;
        assert_eq!(status, 200, "{q}: {v}");
        let found = ids(&v);
        assert!(
            found.contains(&failed) && !found.contains(&ok),
            "{q}: {found:?}"
        );
    }
    let (_, v) = d
        .get("/api/traces?service=Gate&tag=user.id:jo&tag=user.id:somebody-else")
        .await;
    assert!(ids(&v).is_empty(), "both tags must hold: {v}");

    // Go durations; max below min is refused as Jaeger does.
    for (q, want) in [
        ("minDuration=0", 200),
        ("minDuration=%2B20us", 200),
        ("minDuration=1d", 400),
        ("minDuration=2s&maxDuration=1s", 400),
        ("lookback=2w", 200),
        ("lookback=4w", 200),
        ("lookback=custom", 200),
    ] {
        let (status, v) = d.get(&format!("/api/traces?service=Gate&{q}")).await;
        assert_eq!(status, want, "{q}: {v}");
    }
    // With start and end given, they decide the window, whatever the lookback.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let (_, v) = d
        .get(&format!(
            "/api/traces?service=Gate&lookback=1h&start={}&end={}",
            now_us - 3_600_000_000 * 48,
            now_us - 3_600_000_000 * 47
        ))
        .await;
    assert!(ids(&v).is_empty(), "a window two days back holds none: {v}");
    d.app.shutdown().await;
}
