//! Grafana's Jaeger data source in its default mode, request by request as its Go backend
//! builds them (services, operations, search with `url.Values` encoding, trace by id with and
//! without its millisecond time hints, dependencies), each answer read into structs with the
//! field types Grafana's Go types declare: `startTime`, `duration` and `flags` integers,
//! references by `refType`, processes by id, dependency errors null or `[{code, msg}]`. An
//! answer Grafana could not read fails here.

mod common;

use std::collections::HashMap;

use common::start_demo;
use rumqttc::QoS;
use serde::Deserialize;

#[derive(Deserialize)]
struct ListResponse {
    data: Vec<String>,
}

#[derive(Deserialize)]
struct TracesResponse {
    data: Vec<Trace>,
}

#[derive(Deserialize)]
struct Trace {
    processes: HashMap<String, Process>,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[allow(dead_code)]
    warnings: Option<Vec<String>>,
    spans: Vec<Span>,
}

#[derive(Deserialize)]
struct Process {
    #[serde(rename = "serviceName")]
    service_name: String,
    tags: Option<Vec<KeyValue>>,
}

#[derive(Deserialize)]
struct Span {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "processID")]
    process_id: String,
    #[serde(rename = "operationName")]
    operation_name: String,
    #[serde(rename = "startTime")]
    start_time: i64,
    duration: i64,
    logs: Option<Vec<Log>>,
    references: Option<Vec<Reference>>,
    tags: Option<Vec<KeyValue>>,
    #[allow(dead_code)]
    warnings: Option<Vec<String>>,
    #[allow(dead_code)]
    flags: i64,
}

#[derive(Deserialize)]
struct Log {
    #[allow(dead_code)]
    timestamp: f64,
    #[allow(dead_code)]
    fields: Option<Vec<KeyValue>>,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(rename = "refType")]
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "traceID")]
    trace_id: String,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(rename = "type")]
    #[allow(dead_code)]
    kind: String,
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct DependenciesResponse {
    data: Vec<Dependency>,
    errors: Option<Vec<DependencyError>>,
}

#[derive(Deserialize)]
struct Dependency {
    parent: String,
    child: String,
    #[serde(rename = "callCount")]
    call_count: i64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct DependencyError {
    code: i64,
    msg: String,
}

/// Reads an answer strictly into `T`, as Grafana's `json.Unmarshal` would.
fn read<T: serde::de::DeserializeOwned>(what: &str, status: u16, body: serde_json::Value) -> T {
    assert!((200..300).contains(&status), "{what}: {status} {body}");
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("{what}: Grafana could not read it ({e}): {body}"))
}

/// What Grafana's trace view needs of every trace: spans (its search transform reads the first
/// one unguarded), each span's process, and parents it can resolve.
fn check_trace(t: &Trace) {
    assert!(
        !t.spans.is_empty(),
        "a trace without spans breaks Grafana's search"
    );
    for s in &t.spans {
        assert_eq!(s.trace_id, t.trace_id);
        assert_eq!(s.span_id.len(), 16, "{}", s.span_id);
        assert!(s.start_time > 1_600_000_000_000_000, "µs since the epoch");
        assert!(s.duration >= 0);
        let p = t
            .processes
            .get(&s.process_id)
            .expect("every span's process is listed");
        assert!(!p.service_name.is_empty());
        assert!(p.tags.is_some(), "process tags are a list");
        for r in s.references.iter().flatten() {
            assert_eq!(r.ref_type, "CHILD_OF");
            assert_eq!(r.trace_id, t.trace_id);
            assert!(
                t.spans.iter().any(|p| p.span_id == r.span_id),
                "parent {} of {} is in the trace",
                r.span_id,
                s.operation_name
            );
        }
        assert!(s.logs.is_some() && s.tags.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_default_mode_requests_and_the_types_it_reads() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("ana").await;
    let r = common::join_chat(&c, "grafana", QoS::AtLeastOnce).await;
    let id = r["TraceId"].as_str().expect("traced").to_string();
    d.wait_chat_trace(&id).await;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);

    // Health check and the service list: GET /api/services.
    let (st, v) = d.get("/api/services").await;
    let services: ListResponse = read("services", st, v);
    for s in ["Chat", "Gate", "Login"] {
        assert!(services.data.iter().any(|x| x == s), "{s}");
    }
    // Operations: url.JoinPath(base, "api/services", service, "operations").
    let (st, v) = d.get("/api/services/Login/operations").await;
    let ops: ListResponse = read("operations", st, v);
    assert!(
        ops.data.iter().any(|o| o == "Login/track"),
        "{:?}",
        ops.data
    );

    // Search: url.Values.Encode sorts the keys and writes spaces as `+`; the tags come from
    // the query's logfmt as a JSON map; start and end are µs; there is no lookback.
    let path = format!(
        "/api/traces?end={}&limit=20&minDuration=1us&operation=gate+Chat%2FHD_JoinChat\
         &service=Gate&start={}&tags=%7B%22user.id%22%3A%22ana%22%7D",
        now_us + 60_000_000,
        now_us - 3_600_000_000
    );
    let (st, v) = d.get(&path).await;
    let found: TracesResponse = read("search", st, v);
    assert!(
        found.data.iter().any(|t| t.trace_id == id),
        "the trace is found"
    );
    for t in &found.data {
        check_trace(t);
        // Grafana names a result "<service>: <operation>" of its earliest span.
        let root = t.spans.iter().min_by_key(|s| s.start_time).expect("spans");
        assert_eq!(root.operation_name, "gate Chat/HD_JoinChat");
        assert_eq!(t.processes[&root.process_id].service_name, "Gate");
    }

    // Trace by id, as is and with the time hints Grafana adds in milliseconds.
    for path in [
        format!("/api/traces/{id}"),
        format!(
            "/api/traces/{id}?end={}&start={}",
            now_us / 1000 + 60_000,
            now_us / 1000 - 3_600_000
        ),
    ] {
        let (st, v) = d.get(&path).await;
        let t: TracesResponse = read("trace", st, v);
        assert_eq!(t.data.len(), 1, "{path}");
        assert_eq!(t.data[0].trace_id, id);
        check_trace(&t.data[0]);
        let tagged = t.data[0]
            .spans
            .iter()
            .flat_map(|s| s.tags.iter().flatten())
            .any(|kv| kv.key == "user.id" && kv.value == "ana");
        assert!(tagged, "{path}: the user's tag is there");
    }

    // Dependencies: endTs and lookback in milliseconds; errors must be null or [{code, msg}].
    let path = format!(
        "/api/dependencies?endTs={}&lookback=3600000",
        now_us / 1000 + 60_000
    );
    let (st, v) = d.get(&path).await;
    let deps: DependenciesResponse = read("dependencies", st, v);
    assert!(deps.errors.is_none_or(|e| e.is_empty()));
    let gate_chat = deps
        .data
        .iter()
        .find(|e| e.parent == "Gate" && e.child == "Chat")
        .expect("Gate calls Chat");
    assert!(gate_chat.call_count >= 1);
    d.app.shutdown().await;
}
