//! Time windows and ranges of the query API, checked against what Jaeger's parameters mean
//! rather than against today's output: spans placed at known times and durations in the store,
//! then searched over HTTP as the Jaeger UI and Grafana ask.

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{start_demo, Running};
use mqrs_runtime::trace::{StoredSpan, Tag};
use serde_json::Value;

const MIN_US: u64 = 60_000_000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn span(
    trace: u128,
    id: u64,
    parent: Option<u64>,
    service: &str,
    start_us: u64,
    dur_us: u64,
) -> StoredSpan {
    StoredSpan {
        trace_id: trace,
        span_id: id,
        parent_span_id: parent,
        name: format!("{service}/op").into(),
        service: Arc::from(service),
        kind: "server",
        start_us,
        duration_us: dur_us,
        tags: vec![Tag::new("case", "window")],
        events: vec![],
        error: None,
        ..Default::default()
    }
}

/// Trace ids (as Jaeger writes them) of a search.
async fn search(d: &Running, query: &str) -> Vec<String> {
    let (st, v) = d.get(&format!("/api/traces?{query}")).await;
    assert_eq!(st, 200, "{query}: {v}");
    let mut ids: Vec<String> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["traceID"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

fn hex(t: u128) -> String {
    format!("{t:032x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_search_honours_lookback_start_end_and_duration_range() {
    let d = start_demo(|_| {}).await;
    let store = d.app.trace_store().expect("store");
    let now = now_us();
    // Three traces of service Synth: 3 h ago for 5 ms, 30 min ago for 50 ms, 1 min ago for 500 ms.
    let (old, mid, new) = (0xA1u128, 0xA2u128, 0xA3u128);
    store.insert(span(old, 1, None, "Synth", now - 180 * MIN_US, 5_000));
    store.insert(span(mid, 2, None, "Synth", now - 30 * MIN_US, 50_000));
    store.insert(span(new, 3, None, "Synth", now - MIN_US, 500_000));
    let all = vec![hex(old), hex(mid), hex(new)];
    let q = |extra: &str| format!("service=Synth&limit=100{extra}");

    assert_eq!(search(&d, &q("")).await, all);
    // lookback: the window ending now.
    assert_eq!(search(&d, &q("&lookback=1h")).await, [hex(mid), hex(new)]);
    assert_eq!(search(&d, &q("&lookback=10m")).await, [hex(new)]);
    assert_eq!(search(&d, &q("&lookback=4h")).await, all);
    // start/end in µs since the epoch.
    let (s, e) = (now - 120 * MIN_US, now - 10 * MIN_US);
    assert_eq!(
        search(&d, &q(&format!("&start={s}&end={e}"))).await,
        [hex(mid)]
    );
    assert_eq!(
        search(&d, &q(&format!("&end={e}"))).await,
        [hex(old), hex(mid)]
    );
    assert_eq!(
        search(&d, &q(&format!("&start={s}"))).await,
        [hex(mid), hex(new)]
    );
    // lookback measured back from `end` (the Jaeger UI sends both).
    assert_eq!(
        search(&d, &q(&format!("&end={e}&lookback=1h"))).await,
        [hex(mid)]
    );
    // Durations: maxDuration alone, minDuration alone, and both.
    assert_eq!(
        search(&d, &q("&maxDuration=100ms")).await,
        [hex(old), hex(mid)]
    );
    assert_eq!(
        search(&d, &q("&minDuration=10ms")).await,
        [hex(mid), hex(new)]
    );
    assert_eq!(
        search(&d, &q("&minDuration=10ms&maxDuration=100ms")).await,
        [hex(mid)]
    );
    assert_eq!(
        search(&d, &q("&lookback=1h&maxDuration=100ms")).await,
        [hex(mid)]
    );
    d.app.shutdown().await;
}

/// `(parent, child, callCount)` rows of `/api/dependencies?{query}`.
async fn deps(d: &Running, query: &str) -> Vec<(String, String, u64)> {
    let (st, v) = d.get(&format!("/api/dependencies?{query}")).await;
    assert_eq!(st, 200, "{query}: {v}");
    v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| {
            (
                r["parent"].as_str().expect("parent").to_string(),
                r["child"].as_str().expect("child").to_string(),
                r["callCount"].as_u64().expect("count"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_cover_the_window_ending_at_end_ts() {
    let d = start_demo(|_| {}).await;
    let store = d.app.trace_store().expect("store");
    let now = now_us();
    // Three hours ago: Front -> Back once. One minute ago: Side -> Back twice.
    let t0 = now - 180 * MIN_US;
    store.insert(span(0xB1, 1, None, "Front", t0, 2_000));
    store.insert(span(0xB1, 2, Some(1), "Back", t0 + 100, 1_000));
    let t1 = now - MIN_US;
    store.insert(span(0xB2, 3, None, "Side", t1, 2_000));
    store.insert(span(0xB2, 4, Some(3), "Back", t1 + 100, 500));
    store.insert(span(0xB2, 5, Some(3), "Back", t1 + 900, 500));
    let front = ("Front".to_string(), "Back".to_string(), 1);
    let side = ("Side".to_string(), "Back".to_string(), 2);
    let ms = |us: u64| us / 1000;

    // Jaeger's defaults: ending now, 24 h back.
    let rows = deps(&d, "").await;
    assert!(rows.contains(&front) && rows.contains(&side), "{rows:?}");
    // The last hour: only the recent calls.
    let last_hour = deps(&d, &format!("endTs={}&lookback=3600000", ms(now))).await;
    assert!(
        last_hour.contains(&side) && !last_hour.contains(&front),
        "{last_hour:?}"
    );
    // A window ending two hours ago, two hours long: only the old call.
    let earlier = deps(
        &d,
        &format!(
            "endTs={}&lookback={}",
            ms(now - 120 * MIN_US),
            2 * 3_600_000
        ),
    )
    .await;
    assert!(
        earlier.contains(&front) && !earlier.contains(&side),
        "{earlier:?}"
    );
    // A window before everything: nothing.
    assert!(deps(
        &d,
        &format!("endTs={}&lookback=60000", ms(now - 300 * MIN_US))
    )
    .await
    .iter()
    .all(|(_, c, _)| c != "Back"));
    let (st, v) = d.get("/api/dependencies?endTs=yesterday").await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["errors"][0]["msg"]
            .as_str()
            .is_some_and(|m| m.contains("endTs")),
        "{v}"
    );
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_percentiles_are_nearest_rank() {
    let d = start_demo(|_| {}).await;
    let store = d.app.trace_store().expect("store");
    let now = now_us();
    // 100 spans of Pct/op lasting 1..=100 µs, in shuffled order.
    for i in 0..100u64 {
        let dur = (i * 37) % 100 + 1;
        store.insert(span(
            0xC000 + u128::from(i),
            i + 1,
            None,
            "Pct",
            now - MIN_US,
            dur,
        ));
    }
    let (st, v) = d.get("/api/latency?lookback=1h").await;
    assert_eq!(st, 200);
    let op: &Value = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|o| o["service"] == "Pct")
        .expect("Pct/op listed");
    // Nearest rank: the p-th percentile of 1..=100 is p.
    assert_eq!(
        (
            &op["count"],
            &op["p50_us"],
            &op["p95_us"],
            &op["p99_us"],
            &op["max_us"]
        ),
        (
            &Value::from(100),
            &Value::from(50),
            &Value::from(95),
            &Value::from(99),
            &Value::from(100)
        ),
        "{op}"
    );
    d.app.shutdown().await;
}
