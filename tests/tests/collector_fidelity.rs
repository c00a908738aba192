//! The collector keeps what a sender meant: the resource's attributes, the instrumentation
//! scope, links, an OK status, an unspecified kind, and every OTLP value type. The Jaeger API
//! shows them as Jaeger does (process tags, `otel.scope.*`, `otel.status_code`, FOLLOWS_FROM
//! references, JSON text for nested values), and api_v3 as OTLP/JSON.

mod common;

use std::time::{Duration, Instant};

use common::{http_post, start_demo, tools, Running};
use serde_json::{json, Value};

/// Waits until `path` answers 200 with `n` spans in its first Jaeger trace.
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

fn span<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["operationName"] == name))
        .unwrap_or_else(|| panic!("no span {name} in {t}"))
}

fn tag(s: &Value, key: &str) -> Option<Value> {
    s["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| t["value"].clone())
}

/// The OTLP/JSON span named `name` in an api_v3 answer, with its resource and scope.
fn v3_span(v: &Value, name: &str) -> (Value, Value, Value) {
    for rs in v["result"]["resourceSpans"]
        .as_array()
        .expect("resourceSpans")
    {
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            for s in ss["spans"].as_array().expect("spans") {
                if s["name"] == name {
                    return (s.clone(), rs["resource"].clone(), ss["scope"].clone());
                }
            }
        }
    }
    panic!("no span {name} in {v}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_python_sdk_sends_comes_back_whole() {
    let python = tools::test_python();
    let d = start_demo(|_| {}).await;
    let url = format!(
        "http://{}/v1/traces",
        d.app.addrs().collector.expect("collector")
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/otel_rich.py");
    let out = tools::run(
        tokio::process::Command::new(&python).args([script, &url]),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = stdout.split_whitespace().collect();
    let [first, second] = ids[..] else {
        panic!("{stdout}")
    };
    let t = trace_with(&d, first, 2).await;
    let (order, pack) = (span(&t, "order"), span(&t, "pack"));
    assert_eq!(tag(order, "otel.status_code"), Some(json!("OK")));
    assert_eq!(tag(order, "error"), None);
    assert_eq!(tag(pack, "otel.status_code"), None, "unset stays unset");
    assert_eq!(tag(pack, "otel.scope.name"), Some(json!("rich-lib")));
    assert_eq!(tag(pack, "otel.scope.version"), Some(json!("2.1.0")));
    assert_eq!(tag(pack, "span.kind"), Some(json!("internal")));
    assert_eq!(tag(pack, "items"), Some(json!(r#"["a","b"]"#)));
    let process = &t["processes"][order["processID"].as_str().expect("pid")];
    assert_eq!(process["serviceName"], "py-rich");
    let ptag = |k: &str| {
        process["tags"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["key"] == k))
            .map(|t| t["value"].clone())
    };
    assert_eq!(ptag("deployment.environment"), Some(json!("test")));
    assert_eq!(ptag("telemetry.sdk.language"), Some(json!("python")));
    assert_eq!(ptag("service.name"), None, "it is the service name already");
    // The link, as Jaeger writes it.
    let t2 = trace_with(&d, second, 1).await;
    let audit = span(&t2, "audit");
    assert_eq!(tag(audit, "span.kind"), Some(json!("consumer")));
    assert_eq!(
        audit["references"],
        json!([{"refType": "FOLLOWS_FROM", "traceID": first, "spanID": pack["spanID"]}])
    );
    // api_v3: the same as OTLP/JSON.
    let (_, v) = common::http_get(d.viewer, &format!("/api/v3/traces/{first}")).await;
    let (order3, resource, scope) = v3_span(&v, "order");
    assert_eq!(order3["status"], json!({"code": 1}));
    assert_eq!(scope, json!({"name": "rich-lib", "version": "2.1.0"}));
    assert!(
        resource["attributes"].as_array().is_some_and(|a| a
            .contains(&json!({"key": "deployment.environment", "value": {"stringValue": "test"}}))),
        "{resource}"
    );
    let (pack3, _, _) = v3_span(&v, "pack");
    let items = pack3["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["key"] == "items"))
        .expect("items");
    assert_eq!(
        items["value"],
        json!({"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}})
    );
    let (_, v) = common::http_get(d.viewer, &format!("/api/v3/traces/{second}")).await;
    let (audit3, _, _) = v3_span(&v, "audit");
    assert_eq!(
        audit3["links"],
        json!([{"traceId": first, "spanId": pack["spanID"],
                "attributes": [{"key": "reason", "value": {"stringValue": "batch"}}]}])
    );
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_values_bytes_and_an_unspecified_kind_are_kept() {
    let d = start_demo(|_| {}).await;
    let addr = d.app.addrs().collector.expect("collector");
    let id = "6b8efff798038103d269b633813fc60c";
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "nested"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": id,
            "spanId": "aee19b7ec3c1b174",
            "name": "op",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": "1544712661000000000",
            "attributes": [
                {"key": "map", "value": {"kvlistValue": {"values": [
                    {"key": "a", "value": {"intValue": "1"}},
                    {"key": "b", "value": {"arrayValue": {"values": [{"boolValue": true}]}}}]}}},
                {"key": "mixed", "value": {"arrayValue": {"values": [
                    {"stringValue": "x"}, {"doubleValue": 1.5}]}}},
                {"key": "raw", "value": {"bytesValue": "AAEC"}}
            ]
        }]}]
    }]});
    let (status, reply) = http_post(
        addr,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let t = trace_with(&d, id, 1).await;
    let s = span(&t, "op");
    assert_eq!(tag(s, "map"), Some(json!(r#"{"a":1,"b":[true]}"#)));
    assert_eq!(tag(s, "mixed"), Some(json!(r#"["x",1.5]"#)));
    assert_eq!(tag(s, "raw"), Some(json!("AAEC")));
    assert_eq!(
        tag(s, "span.kind"),
        None,
        "unspecified: no kind tag, as Jaeger"
    );
    let (_, v) = common::http_get(d.viewer, &format!("/api/v3/traces/{id}")).await;
    let (op, _, scope) = v3_span(&v, "op");
    assert_eq!(op["kind"], 0);
    assert_eq!(scope, json!({}), "no scope was sent");
    d.app.shutdown().await;
}
