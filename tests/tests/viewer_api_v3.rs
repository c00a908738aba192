//! Jaeger's `api_v3` as its consumers call it: the Jaeger UI (services and operations from
//! v2.15, trace summaries with camelCase parameters from v2.19) and Grafana's Jaeger data source
//! in its newer mode (snake_case `start_time`/`end_time` put into the query string unencoded).
//! Traces are read back with the OpenTelemetry protobuf types' own JSON decoding, so they are
//! OTLP/JSON as the specification writes it, not only as this test expects it.

mod common;

use common::start_demo;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use rumqttc::QoS;
use serde_json::json;

const ALL_TIME: &str =
    "query.startTimeMin=2020-01-01T00:00:00.000Z&query.startTimeMax=2100-01-01T00:00:00.000Z";

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_v3_as_the_jaeger_ui_and_grafana_call_it() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("vera").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = common::join_chat(&c, "v3", QoS::AtLeastOnce).await;
        ids.push(r["TraceId"].as_str().expect("traced").to_string());
    }
    let mut v1 = Vec::new();
    for id in &ids {
        v1.push(d.wait_chat_trace(id).await);
    }

    // Services and operations: the UI checks these shapes strictly (lowercase span kinds).
    let (st, v) = d.get("/api/v3/services").await;
    assert_eq!(st, 200);
    assert_eq!(v, json!({"services": ["Chat", "Gate", "Login"]}));
    let (st, v) = d.get("/api/v3/operations?service=Chat").await;
    assert_eq!(st, 200);
    let ops = v["operations"].as_array().expect("operations");
    assert!(
        ops.contains(&json!({"name": "Chat/HD_JoinChat", "spanKind": "server"})),
        "{v}"
    );
    // Without a service: every service's operations, in one list.
    let chat_ops = ops.len();
    let (st, all) = d.get("/api/v3/operations").await;
    assert_eq!(st, 200);
    let all = all["operations"].as_array().expect("operations").clone();
    for want in [
        json!({"name": "Chat/HD_JoinChat", "spanKind": "server"}),
        json!({"name": "Login/track", "spanKind": "server"}),
        json!({"name": "gate Chat/HD_JoinChat", "spanKind": "server"}),
    ] {
        assert!(all.contains(&want), "{want} in {all:?}");
    }
    assert!(all.len() > chat_ops, "{all:?}");
    let (_, v) = d
        .get("/api/v3/operations?service=Login&spanKind=client")
        .await;
    let ops = v["operations"].as_array().expect("operations");
    assert!(!ops.is_empty(), "{v}");
    assert!(ops.iter().all(|o| o["spanKind"] == "client"), "{v}");

    // Grafana: one trace by id, with its time hints unencoded (a `+` offset arrives as a space).
    let path = format!(
        "/api/v3/traces/{}?start_time=2020-01-01T00:00:00+00:00&end_time=2100-01-01T00:00:00Z",
        ids[0]
    );
    let (st, v) = d.get(&path).await;
    assert_eq!(st, 200, "{v}");
    let data: TracesData =
        serde_json::from_value(v["result"].clone()).expect("OTLP/JSON the proto types read");
    let mut spans = Vec::new();
    for rs in &data.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
            .map(|v| format!("{v:?}"))
            .expect("service.name");
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                spans.push((service.clone(), s.clone()));
            }
        }
    }
    let v1_spans = common::spans(&v1[0]);
    assert_eq!(spans.len(), v1_spans.len(), "same spans as the v1 API");
    for (service, s) in &spans {
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(
            s.trace_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            ids[0]
        );
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
        assert!(s.start_time_unix_nano > 1_700_000_000_000_000_000);
        let sid: String = s.span_id.iter().map(|b| format!("{b:02x}")).collect();
        let twin = v1_spans.iter().find(|x| x.id == sid).expect("span in v1");
        assert_eq!(s.name, twin.name);
        assert!(
            service.contains(&twin.service),
            "{service} {}",
            twin.service
        );
        let parent: String = s
            .parent_span_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            parent,
            twin.parent.clone().unwrap_or_default(),
            "{}",
            s.name
        );
        let kind = match twin.kind.as_str() {
            "server" => 2,
            "client" => 3,
            _ => 1,
        };
        assert_eq!(s.kind, kind, "{}", s.name);
    }
    let root = &spans
        .iter()
        .find(|(_, s)| s.parent_span_id.is_empty())
        .expect("root")
        .1;
    assert_eq!(root.name, "gate Chat/HD_JoinChat");
    assert!(root
        .attributes
        .iter()
        .any(|a| a.key == "user.id" && format!("{:?}", a.value).contains("vera")));
    // Raw shape details the UI and Grafana depend on.
    let raw_span = &v["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert!(raw_span["startTimeUnixNano"].is_string(), "{raw_span}");
    assert!(raw_span["kind"].is_number(), "{raw_span}");

    let (st, v) = d.get(&format!("/api/v3/traces/{}", "ab".repeat(16))).await;
    assert_eq!(st, 404);
    assert_eq!(
        v,
        json!({"error": {"httpCode": 404, "message": "No traces found"}})
    );
    let (st, v) = d.get("/api/v3/traces/not-hex").await;
    assert_eq!(st, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("malformed parameter trace_id")),
        "{v}"
    );
    let (st, _) = d
        .get(&format!("/api/v3/traces/{}?start_time=yesterday", ids[0]))
        .await;
    assert_eq!(st, 400);

    // The UI's search (v2.19+): trace summaries, camelCase, attributes as a JSON map.
    let attrs = urlencode(r#"{"user.id":"vera"}"#);
    let path = format!(
        "/api/v3/trace-summaries?query.serviceName=Chat&query.operationName={}&{ALL_TIME}\
         &query.searchDepth=20&query.durationMin=0&query.attributes={attrs}",
        urlencode("Chat/HD_JoinChat")
    );
    let (st, v) = d.get(&path).await;
    assert_eq!(st, 200, "{v}");
    let summaries = v["summaries"].as_array().expect("summaries");
    let got: Vec<&str> = summaries
        .iter()
        .filter_map(|s| s["traceId"].as_str())
        .collect();
    assert_eq!(got, vec![ids[1].as_str(), ids[0].as_str()], "newest first");
    let s = &summaries[1];
    assert_eq!(s["rootServiceName"], "Gate");
    assert_eq!(s["rootOperationName"], "gate Chat/HD_JoinChat");
    assert_eq!(s["spanCount"], json!(v1_spans.len()));
    assert_eq!(s["errorSpanCount"], 0);
    let min: u128 = s["minStartTimeUnixNano"]
        .as_str()
        .and_then(|x| x.parse().ok())
        .expect("nanos string");
    let max: u128 = s["maxEndTimeUnixNano"]
        .as_str()
        .and_then(|x| x.parse().ok())
        .expect("nanos string");
    assert!(max > min);
    let names: Vec<&str> = s["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(names, vec!["Chat", "Gate", "Login"], "sorted by name");

    // Nothing found is an empty list for summaries (the UI treats any error as a failure) ...
    let (st, v) = d
        .get("/api/v3/trace-summaries?query.startTimeMin=2020-01-01T00:00:00Z&query.startTimeMax=2020-01-02T00:00:00Z")
        .await;
    assert_eq!((st, v), (200, json!({"summaries": []})));
    let (st, v) = d
        .get(&format!(
            "/api/v3/trace-summaries?query.attributes={}&{ALL_TIME}",
            urlencode(r#"{"user.id":"nobody"}"#)
        ))
        .await;
    assert_eq!((st, v), (200, json!({"summaries": []})));
    // ... and a 404 for FindTraces, as Jaeger answers.
    let (st, v) = d
        .get(&format!(
            "/api/v3/traces?query.service_name=Nope&{ALL_TIME}"
        ))
        .await;
    assert_eq!(st, 404, "{v}");

    // FindTraces with the snake_case names (Grafana's search in this mode, UI before v2.19).
    let path = "/api/v3/traces?query.service_name=Login&query.start_time_min=2020-01-01T00:00:00Z\
                &query.start_time_max=2100-01-01T00:00:00Z&query.num_traces=1";
    let (st, v) = d.get(path).await;
    assert_eq!(st, 200, "{v}");
    let data: TracesData = serde_json::from_value(v["result"].clone()).expect("OTLP/JSON");
    let traces: std::collections::HashSet<Vec<u8>> = data
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.trace_id.clone())
        .collect();
    assert_eq!(traces.len(), 1, "num_traces=1 returns one trace");

    // Bad parameters name themselves.
    for (path, param) in [
        ("/api/v3/trace-summaries?query.serviceName=Chat", "query.startTimeMin"),
        (
            &*format!("/api/v3/trace-summaries?{ALL_TIME}&query.durationMin=1d"),
            "query.durationMin",
        ),
        (
            "/api/v3/traces?query.startTimeMin=2020-01-01T00:00:00&query.startTimeMax=2100-01-01T00:00:00Z",
            "query.startTimeMin",
        ),
        (
            &*format!("/api/v3/traces?{ALL_TIME}&query.searchDepth=many"),
            "query.searchDepth",
        ),
        (
            "/api/v3/traces?query.startTimeMin=2100-01-01T00:00:00Z&query.startTimeMax=2020-01-01T00:00:00Z",
            "query.startTimeMin",
        ),
    ] {
        let (st, v) = d.get(path).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert_eq!(v["error"]["httpCode"], 400, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(param)),
            "{path}: {v}"
        );
    }
}
