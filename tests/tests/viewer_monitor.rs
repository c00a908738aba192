//! What the Jaeger UI asks of a backend beyond traces, sent as its source sends it (jaeger-ui
//! v2.20: `api/jaeger.ts` `fetchMetrics`, `actions/jaeger-api.ts`, `ServicesView`): the
//! Monitor tab's eight metrics requests, answered in Jaeger's `MetricFamily` JSON from the RED
//! metrics; the page's `metricsStorage` capability; the OTLP file upload (`POST /api/transform`,
//! posted as text/plain); and a search without `limit` returning up to 100 traces.

mod common;

use common::Running;
use rumqttc::QoS;
use serde_json::Value;

/// The Monitor tab's query for `service`: the service first and unencoded, then the other
/// parameters sorted by name (`query-string`'s `stringify`), as `fetchMetrics` builds it.
fn monitor_query(service: &str, end_ms: u64, grouped: bool, quantile: f64) -> String {
    let mut q = format!("service={service}&endTs={end_ms}");
    if grouped {
        q.push_str("&groupByOperation=true");
    }
    q.push_str(&format!(
        "&lookback=3600000&quantile={quantile}&ratePer=600000&spanKind=server&step=60000"
    ));
    q
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// The last point's value of the metric whose labels include `label` = `value`.
fn last_point(family: &Value, label: &str, value: &str) -> Value {
    family["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| {
            m["labels"]
                .as_array()
                .is_some_and(|ls| ls.iter().any(|l| l["name"] == label && l["value"] == value))
        })
        .and_then(|m| m["metricPoints"].as_array()?.last().cloned())
        .map(|p| p["gaugeValue"]["doubleValue"].clone())
        .unwrap_or(Value::Null)
}

async fn requests(d: &Running) -> (u64, u64) {
    let c = d.logged_in("monitor").await;
    let mut ok = 1; // the login
    for _ in 0..20 {
        let r = c
            .request("Chat/HD_CurrentRoom", b"{}", QoS::AtMostOnce)
            .await
            .expect("reply");
        assert_eq!(r["Error"], "", "{r}");
        ok += 1;
    }
    let mut failed = 0;
    for _ in 0..5 {
        let r = c
            .request("Chat/HD_NoSuchThing", b"{}", QoS::AtMostOnce)
            .await
            .expect("reply");
        assert_ne!(r["Error"], "", "{r}");
        failed += 1;
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jaeger_ui_monitor_tab_reads_the_red_metrics() {
    let d = common::start_demo(|_| {}).await;
    let (ok, failed) = requests(&d).await;
    let end = now_ms();
    // Everything the Gate service served: the clients' requests, and its own handlers that
    // the modules call (the login's `Gate/Bind`).
    let (_, rows) = d.get("/api/latency?lookback=1h&spanKind=server").await;
    let served: u64 = rows["data"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["service"] == "Gate")
        .map(|r| r["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(served, ok + failed + 1, "{rows}");

    // `fetchAllServiceMetrics`: latencies at three quantiles, calls and errors, each on its
    // own request; the UI reads `metrics[0].labels[0].value` as the service.
    let mut service_level = Vec::new();
    for (kind, quantile) in [
        ("latencies", 0.5),
        ("latencies", 0.75),
        ("latencies", 0.95),
        ("calls", 0.95),
        ("errors", 0.95),
    ] {
        let path = format!(
            "/api/metrics/{kind}?{}",
            monitor_query("Gate", end, false, quantile)
        );
        let (status, family) = d.get(&path).await;
        assert_eq!(status, 200, "{path}: {family}");
        assert_eq!(family["type"], "GAUGE");
        let first = &family["metrics"][0];
        assert_eq!(first["labels"][0]["name"], "service_name", "{family}");
        assert_eq!(first["labels"][0]["value"], "Gate", "{family}");
        // One point a minute over the hour, RFC 3339 times.
        let points = first["metricPoints"].as_array().expect("points");
        assert_eq!(points.len(), 61, "{path}");
        assert!(points[0]["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20));
        service_level.push(family);
    }
    let names: Vec<&str> = service_level
        .iter()
        .map(|f| f["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "service_latencies",
            "service_latencies",
            "service_latencies",
            "service_call_rate",
            "service_error_rate"
        ]
    );
    // Calls per second over `ratePer` (10 min): every request of this test. Errors a fraction.
    let calls = last_point(&service_level[3], "service_name", "Gate")
        .as_f64()
        .expect("calls");
    assert!(
        (calls * 600.0 - served as f64).abs() < 1e-6,
        "{calls}/s over 600 s, served {served}"
    );
    let errors = last_point(&service_level[4], "service_name", "Gate")
        .as_f64()
        .expect("errors");
    assert!(
        (errors - failed as f64 / served as f64).abs() < 1e-9,
        "{errors}"
    );
    // Latency in ms, the quantiles in order, the p95 as `/api/latency` reads it.
    let lat: Vec<f64> = service_level[..3]
        .iter()
        .map(|f| {
            last_point(f, "service_name", "Gate")
                .as_f64()
                .expect("latency")
        })
        .collect();
    assert!(
        lat[0] > 0.0 && lat[0] <= lat[1] && lat[1] <= lat[2],
        "{lat:?}"
    );
    assert!(lat[2] < 1_000.0, "ms, not µs: {lat:?}");

    // `fetchAggregatedServiceMetrics`: the same per operation.
    for (kind, name) in [
        ("latencies", "service_operation_latencies"),
        ("calls", "service_operation_call_rate"),
        ("errors", "service_operation_error_rate"),
    ] {
        let path = format!(
            "/api/metrics/{kind}?{}",
            monitor_query("Gate", end, true, 0.95)
        );
        let (status, family) = d.get(&path).await;
        assert_eq!(status, 200, "{family}");
        assert_eq!(family["name"], name);
        for m in family["metrics"].as_array().expect("metrics") {
            assert!(
                m["labels"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l["name"] == "operation")),
                "{m}"
            );
        }
        let current = last_point(&family, "operation", "gate Chat/HD_CurrentRoom");
        let unknown = last_point(&family, "operation", "gate unknown-route");
        match kind {
            "calls" => {
                assert!((current.as_f64().expect("rate") * 600.0 - 20.0).abs() < 1e-6);
                assert!((unknown.as_f64().expect("rate") * 600.0 - failed as f64).abs() < 1e-6);
            }
            "errors" => {
                assert_eq!((current.as_f64(), unknown.as_f64()), (Some(0.0), Some(1.0)));
            }
            _ => assert!(current.as_f64().is_some_and(|ms| ms > 0.0), "{family}"),
        }
    }

    // A service with nothing counted: an empty list, never a missing one.
    let (status, family) = d
        .get(&format!(
            "/api/metrics/calls?{}",
            monitor_query("nobody", end, false, 0.95)
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(family["metrics"], Value::Array(vec![]), "{family}");
    // Jaeger's own refusals.
    let (status, body) = d.get("/api/metrics/latencies?service=Gate").await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["msg"]
            .as_str()
            .is_some_and(|m| m.contains("quantile")),
        "{body}"
    );
    let (status, _) = d.get("/api/metrics/calls?quantile=0.5").await;
    assert_eq!(status, 400, "no service");
    let (status, _) = d
        .get("/api/metrics/calls?service=Gate&spanKind=sideways")
        .await;
    assert_eq!(status, 400);

    // The page declares the capability as Jaeger's does, so the UI shows its Monitor tab.
    let (_, page) = common::http_get_text(d.viewer, "/").await;
    assert!(
        page.contains("JAEGER_BACKEND_CAPABILITIES = {"),
        "{page:.500}"
    );
    assert!(page.contains("\"metricsStorage\": true"));
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_upload_and_the_default_search_limit() {
    let d = common::start_demo(|_| {}).await;
    // What the UI's file loader posts: OTLP/JSON as text/plain.
    let file = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeSpans": [{"scope": {"name": "s"}, "spans": [
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
             "name": "checkout", "kind": 2,
             "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000"},
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
             "parentSpanId": "eee19b7ec3c1b174", "name": "db", "kind": 3,
             "startTimeUnixNano": "1544712660100000000", "endTimeUnixNano": "1544712660500000000",
             "status": {"code": 2, "message": "boom"}},
            {"traceId": "00000000000000000000000000000abc", "spanId": "0000000000000001",
             "name": "other", "startTimeUnixNano": "1544712660000000000",
             "endTimeUnixNano": "1544712660000001000"}
        ]}]
    }]});
    let (status, body) = common::http_post(
        d.viewer,
        "/api/transform",
        &[("Content-Type", "text/plain;charset=UTF-8")],
        file.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    let traces = v["data"].as_array().expect("traces");
    assert_eq!(traces.len(), 2, "{v}");
    assert_eq!(traces[0]["traceID"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(traces[0]["spans"].as_array().map(Vec::len), Some(2));
    assert_eq!(traces[0]["processes"]["p1"]["serviceName"], "shop");
    let db = &traces[0]["spans"][1];
    assert_eq!(db["references"][0]["spanID"], "eee19b7ec3c1b174");
    assert_eq!(db["duration"], 400_000);
    // Nothing of it is stored.
    let (status, _) = d.get("/api/traces/5b8efff798038103d269b633813fc60c").await;
    assert_eq!(status, 404);
    let (status, body) = common::http_post(d.viewer, "/api/transform", &[], b"{not json").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // Searches: without `limit` (and with 0) up to 100 traces, as Jaeger.
    let c = d.logged_in("many").await;
    for _ in 0..30 {
        c.request("Chat/HD_CurrentRoom", b"{}", QoS::AtMostOnce)
            .await
            .expect("reply");
    }
    let count = |body: &Value| body["data"].as_array().map_or(0, Vec::len);
    // The login is a guest's request, which the demo does not trace.
    common::wait_for("30 traces", std::time::Duration::from_secs(5), || {
        d.app.trace_store().is_some_and(|s| s.stats().traces >= 30)
    })
    .await;
    for q in ["", "&limit=0"] {
        let (status, body) = d
            .get(&format!("/api/traces?service=Gate&lookback=1h{q}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(count(&body), 30, "{q}: every request");
    }
    let (_, body) = d.get("/api/traces?service=Gate&lookback=1h&limit=7").await;
    assert_eq!(count(&body), 7);
    d.app.shutdown().await;
}
