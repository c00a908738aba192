//! RED metrics count every request, whatever the sampler and the store keep: a known load
//! through the gate over real MQTT at `sample_ratio = 0.01` with a store of 100 traces, read
//! back from `/api/latency` (exact counts and errors, percentiles within the histogram's stated
//! error of the known durations), from `/metrics` by the Prometheus client library's parser,
//! and across processes by OTLP: from another mqrs app and from the OpenTelemetry Python SDK.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tools;
use demo::client::GateClient;
use mqrs_runtime::red::histogram::RELATIVE_ERROR;
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
use rumqttc::QoS;
use serde_json::Value;

/// The body of `HD_Sleep`.
#[derive(serde::Deserialize)]
pub struct Sleep {
    ms: u64,
}

/// Handlers of known duration, and one that always fails.
pub struct Timed;

#[rpc_module]
impl Timed {
    #[rpc(name = "HD_Sleep")]
    async fn sleep(&self, _session: Session, req: Sleep) -> Result<u64, String> {
        tokio::time::sleep(Duration::from_millis(req.ms)).await;
        Ok(req.ms)
    }

    #[rpc(name = "HD_Fail")]
    async fn fail(&self, _session: Session) -> Result<(), String> {
        Err("refused on purpose".into())
    }

    #[rpc]
    async fn ok(&self, _session: Session) -> Result<u32, String> {
        Ok(1)
    }
}

/// Clients, and requests each sends one after another.
const CLIENTS: usize = 4;
const PER_CLIENT: usize = 100;

/// The sleep of request `i` (ms): 2..=60, spread.
fn sleep_of(i: usize) -> u64 {
    2 + (i as u64 * 7) % 59
}

/// Every fifth request fails.
fn fails(i: usize) -> bool {
    i % 5 == 4
}

async fn start(tweak: impl FnOnce(&mut Config)) -> (App, Option<SocketAddr>, Option<u16>) {
    let mut cfg = Config::ephemeral();
    cfg.broker.url = mqrs_runtime::config::BrokerUrl::None;
    tweak(&mut cfg);
    let app = App::builder()
        .config(cfg)
        .module(|_| Timed)
        .build()
        .expect("app builds");
    let addrs = app.start().await.expect("app starts");
    (app, addrs.viewer, addrs.gate.map(|g| g.port()))
}

/// The `/api/latency` row of `service` / `operation` (server side).
async fn row(viewer: SocketAddr, service: &str, operation: &str) -> Value {
    let (status, body) = common::http_get(viewer, "/api/latency?lookback=5m&spanKind=server").await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["service"] == service && r["operation"] == operation)
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// The nearest-rank percentile of sorted `v`.
fn pct(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_counted_exactly_whatever_is_sampled_or_stored() {
    let (app, viewer, gate) = start(|c| {
        c.trace.sample_ratio = 0.01;
        c.trace.max_traces = 100;
        // Only sampled traces: nothing kept for being failed or slow.
        c.trace.keep_failed = false;
        c.trace.keep_slow_ms = 0;
    })
    .await;
    let (viewer, gate) = (viewer.expect("viewer"), gate.expect("gate"));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let client = GateClient::connect(&format!("red-{c}"), "127.0.0.1", gate)
                .await
                .expect("connects");
            let mut round_trips = Vec::new();
            for j in 0..PER_CLIENT {
                let i = c * PER_CLIENT + j;
                let started = Instant::now();
                let reply = if fails(i) {
                    client
                        .request("Timed/HD_Fail", b"{}", QoS::AtMostOnce)
                        .await
                } else {
                    let body = format!("{{\"ms\":{}}}", sleep_of(i));
                    client
                        .request("Timed/HD_Sleep", body.as_bytes(), QoS::AtMostOnce)
                        .await
                };
                let reply = reply.expect("reply");
                assert_eq!(reply["Error"] != "", fails(i), "{reply}");
                if !fails(i) {
                    round_trips.push(started.elapsed().as_secs_f64() * 1e3);
                }
            }
            round_trips
        }));
    }
    let mut round_trips = Vec::new();
    for t in tasks {
        round_trips.extend(t.await.expect("client"));
    }
    let total = CLIENTS * PER_CLIENT;
    let failed = (0..total).filter(|&i| fails(i)).count();
    let store = app.trace_store().expect("store").stats();
    assert!(
        store.traces <= 100,
        "the store keeps at most 100 traces: {store:?}"
    );

    // Exact counts from the gate's and the module's side, though few traces were kept.
    let slow = row(viewer, "Gate", "gate Timed/HD_Sleep").await;
    let fail = row(viewer, "Gate", "gate Timed/HD_Fail").await;
    assert_eq!(slow["source"], "metrics", "{slow}");
    assert_eq!(slow["count"], (total - failed) as u64, "{slow}");
    assert_eq!(slow["errors"], 0, "{slow}");
    assert_eq!(fail["count"], failed as u64, "{fail}");
    assert_eq!(fail["errors"], failed as u64, "{fail}");
    assert_eq!(
        fail["errors_by_type"]["handler_error"], failed as u64,
        "{fail}"
    );
    let served = row(viewer, "Timed", "Timed/HD_Sleep").await;
    assert_eq!(served["count"], (total - failed) as u64, "{served}");
    let traced = app.trace_store().expect("store").stats().traces as u64;
    assert!(
        traced < (total as u64) / 4,
        "sampling kept few traces ({traced}), the counts are still whole"
    );

    // Percentiles within the histogram's error of the known durations, with a few ms for
    // scheduling (a gate's duration is the sleep and its own work), and within the client's
    // round trips (which hold the gate's duration).
    let mut sleeps: Vec<f64> = (0..total)
        .filter(|&i| !fails(i))
        .map(|i| sleep_of(i) as f64)
        .collect();
    sleeps.sort_by(f64::total_cmp);
    round_trips.sort_by(f64::total_cmp);
    for (p, field) in [(50.0, "p50_us"), (95.0, "p95_us")] {
        let truth = pct(&sleeps, p);
        let got = slow[field].as_f64().expect("percentile") / 1e3;
        assert!(
            got >= truth * (1.0 - RELATIVE_ERROR) && got <= truth * (1.0 + RELATIVE_ERROR) + 4.0,
            "{field}: {got} ms, the sleeps' is {truth} ms"
        );
        let client = pct(&round_trips, p);
        assert!(
            got <= client * (1.0 + RELATIVE_ERROR),
            "{field}: {got} ms, the clients saw {client} ms"
        );
    }

    // The same numbers as the Prometheus client library reads them.
    let scraped = tools::prom_scrape(&format!("http://{viewer}/metrics")).await;
    let family = &scraped["families"]["rpc_server_call_duration_seconds"];
    assert_eq!(family["type"], "histogram", "{scraped}");
    let samples = family["labelled"].as_array().expect("samples");
    let sample = |name: &str, want: &[(&str, &str)]| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| {
                s[0] == name
                    && want.iter().all(|(k, v)| s[1][*k] == *v)
                    && (want.iter().any(|(k, _)| *k == "error_type")
                        || s[1]["error_type"].is_null())
            })
            .filter_map(|s| s[2].as_f64())
            .collect()
    };
    let gate_sleep = [
        ("service_name", "Gate"),
        ("rpc_method", "Timed/HD_Sleep"),
        ("rpc_system_name", "mqrs"),
    ];
    assert_eq!(
        sample("rpc_server_call_duration_seconds_count", &gate_sleep),
        [(total - failed) as f64],
        "{family}"
    );
    let gate_fail = [
        ("service_name", "Gate"),
        ("rpc_method", "Timed/HD_Fail"),
        ("error_type", "handler_error"),
    ];
    assert_eq!(
        sample("rpc_server_call_duration_seconds_count", &gate_fail),
        [failed as f64]
    );
    // Cumulative buckets: the 0.1 s bucket holds every sleep (at most 60 ms), the 1 ms one none.
    let bucket = |le: &str| {
        let mut want = gate_sleep.to_vec();
        want.push(("le", le));
        sample("rpc_server_call_duration_seconds_bucket", &want)
    };
    assert_eq!(bucket("0.1"), [(total - failed) as f64]);
    assert_eq!(bucket("0.001"), [0.0]);
    let sum = sample("rpc_server_call_duration_seconds_sum", &gate_sleep)[0];
    let slept: f64 = sleeps.iter().sum::<f64>() / 1e3;
    assert!(
        sum >= slept && sum < slept * 1.2,
        "sum {sum} s, slept {slept} s"
    );
    assert!(
        scraped["families"]["rpc_client_call_duration_seconds"]["type"] == "histogram",
        "{scraped}"
    );

    // `/api/stats` says how much the metrics hold and how they are kept.
    let (_, stats) = common::http_get(viewer, "/api/stats").await;
    let m = &stats["metrics"];
    assert!(
        m["bytes"].as_u64().is_some_and(|b| b > 0 && b < 1 << 20),
        "{m}"
    );
    assert_eq!(m["limit_bytes"], 64u64 << 20, "{m}");
    app.shutdown().await;
}

/// Another app (another process as far as metrics go: its own registry, exporting by OTLP
/// over HTTP) and the OpenTelemetry Python SDK send their counts to this app's collector;
/// its `/api/latency` shows them beside its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_metrics_from_other_processes_are_merged() {
    let (first, viewer, _) = start(|c| c.gate.enabled = false).await;
    let viewer = viewer.expect("viewer");
    let collector = first.addrs().collector.expect("collector");
    let (second, _, _) = start(|c| {
        c.app.name = "second".into();
        c.gate.enabled = false;
        c.trace.viewer = false;
        c.trace.collector = false;
        c.trace.otlp_export = format!("http://{collector}");
    })
    .await;
    let session = Session::default();
    for _ in 0..37 {
        let _: u32 = second.call("Timed", "ok", &session, ()).await.expect("ok");
    }
    // A clean stop sends the slot in progress.
    second.shutdown().await;
    let stats = second.metrics_export_stats().expect("exported");
    assert!(stats.points >= 2 && stats.failed == 0, "{stats:?}");
    let served = row(viewer, "Timed", "Timed/ok").await;
    assert_eq!(
        served["count"], 37,
        "the second app's calls, counted here: {served}"
    );
    let (_, body) = common::http_get(viewer, "/api/latency?lookback=5m&spanKind=client").await;
    let made: Vec<&Value> = body["data"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["service"] == "second" && r["operation"] == "Timed/ok")
        .collect();
    assert_eq!(made.len(), 1, "{body}");
    assert_eq!(made[0]["count"], 37);
    // The service graph has the edge, from the caller's count.
    let (_, deps) = common::http_get(viewer, "/api/dependencies?lookback=300000").await;
    assert!(
        deps["data"]
            .as_array()
            .expect("edges")
            .iter()
            .any(|e| e["parent"] == "second"
                && e["child"] == "Timed"
                && e["callCount"] == 37
                && e["source"] == "metrics"),
        "{deps}"
    );

    // The OpenTelemetry Python SDK: cumulative points, exported twice, counted once each.
    let url = format!("http://{collector}/v1/metrics");
    let expected = tools::python_json("otel_metrics.py", &[&url]).await;
    let py = row(viewer, "py-shop", "Shop/checkout").await;
    assert_eq!(
        py["count"], 15,
        "10 then 5 more, exported cumulatively: {py}"
    );
    assert_eq!(py["errors"], 3, "{py}");
    let p50 = py["p50_us"].as_f64().expect("p50") / 1e6;
    let want = expected["p50"].as_f64().expect("p50");
    assert!(
        (p50 - want).abs() <= want * RELATIVE_ERROR * 1.01,
        "p50 {p50} s, the script recorded {want} s"
    );
    first.shutdown().await;
}

/// The Grafana dashboard in the repository asks only for what `/metrics` serves: every metric
/// its queries select exists, with every label they match or group by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_name_what_metrics_serves() {
    let (app, viewer, gate) = start(|_| {}).await;
    let (viewer, gate) = (viewer.expect("viewer"), gate.expect("gate"));
    let c = GateClient::connect("grafana", "127.0.0.1", gate)
        .await
        .expect("connects");
    for route in ["Timed/HD_Fail", "Timed/HD_Sleep"] {
        c.request(route, b"{\"ms\":1}", QoS::AtMostOnce)
            .await
            .expect("reply");
    }
    let scraped = tools::prom_scrape(&format!("http://{viewer}/metrics")).await;
    // Served sample names and the labels each carries.
    let mut served: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
    for family in scraped["families"].as_object().expect("families").values() {
        for s in family["labelled"].as_array().expect("samples") {
            let labels = served
                .entry(s[0].as_str().unwrap_or_default().into())
                .or_default();
            for k in s[1].as_object().expect("labels").keys() {
                labels.insert(k.clone());
            }
        }
    }

    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/mqrs-red.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("dashboard"))
        .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    for v in dash["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = v["query"]["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    assert!(
        exprs.len() >= 8,
        "rate, errors, three percentiles, the graph: {exprs:?}"
    );
    let selector = regex::Regex::new(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}").expect("regex");
    let matcher = regex::Regex::new(r#"(\w+)\s*(?:=~|!~|!=|=)\s*""#).expect("regex");
    let grouping = regex::Regex::new(r"by \(([^)]*)\)").expect("regex");
    let made = regex::Regex::new(r#""(\w+)",\s*"\$1",\s*"(\w+)""#).expect("regex");
    for expr in &exprs {
        let synthetic: Vec<String> = made.captures_iter(expr).map(|c| c[1].to_string()).collect();
        let mut metrics = Vec::new();
        for c in selector.captures_iter(expr) {
            let name = &c[1];
            let labels = served
                .get(name)
                .unwrap_or_else(|| panic!("`{name}` in `{expr}` is not served by /metrics"));
            for m in matcher.captures_iter(&c[2]) {
                assert!(
                    labels.contains(&m[1]),
                    "label `{}` of `{name}` in `{expr}`",
                    &m[1]
                );
            }
            metrics.push(labels);
        }
        assert!(!metrics.is_empty(), "`{expr}` selects no metric");
        for g in grouping.captures_iter(expr) {
            for label in g[1].split(',').map(str::trim) {
                assert!(
                    synthetic.iter().any(|s| s == label)
                        || metrics.iter().any(|l| l.contains(label)),
                    "`by ({label})` in `{expr}`: no such label"
                );
            }
        }
        for c in made.captures_iter(expr) {
            assert!(
                metrics.iter().any(|l| l.contains(&c[2])),
                "label_replace source `{}`",
                &c[2]
            );
        }
    }
    app.shutdown().await;
}
