//! `cargo bench -p mqrs-runtime --bench rpc`: the cost of an mqrs in-process call, untraced and
//! traced, beside the floor it is judged against — a bare tokio mpsc request + oneshot reply
//! with serde_json both ways. Prints p50 latency with one call in flight, throughput, and the
//! ratios to the floor (targets: untraced ≤ 2x, traced ≤ 4x).

use std::time::Duration;

use mqrs_runtime::{App, Config, Session};
use tokio::sync::{mpsc, oneshot};

mod common;

use common::{echo, msg, Bench, Msg};

type Req = (Vec<u8>, oneshot::Sender<Vec<u8>>);

async fn floor_server(mut rx: mpsc::Receiver<Req>) {
    while let Some((body, reply)) = rx.recv().await {
        let m: Msg = serde_json::from_slice(&body).expect("floor decode");
        let _ = reply.send(serde_json::to_vec(&m).expect("floor encode"));
    }
}

async fn floor_call(tx: &mpsc::Sender<Req>, m: &Msg) -> Msg {
    let (rtx, rrx) = oneshot::channel();
    tx.send((serde_json::to_vec(m).expect("encode"), rtx))
        .await
        .expect("send");
    serde_json::from_slice(&rrx.await.expect("reply")).expect("decode")
}

struct Sample {
    p50_ns: f64,
    calls_per_s: f64,
}

/// Runs `f` sequentially `n` times; returns median latency and throughput.
async fn measure<F, Fut>(n: usize, f: F) -> Sample
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (lat, total) = common::sequential(n, f).await;
    Sample {
        p50_ns: lat[n / 2].as_nanos() as f64,
        calls_per_s: n as f64 / total.as_secs_f64(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

// One thread, as the floors in the field notes were measured: a cross-thread wake-up would
// dominate every path alike and hide what mqrs itself costs.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("MQRS_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let mut cfg = Config::ephemeral();
    cfg.gate.enabled = false;
    cfg.trace.viewer = false;
    // A store big enough that the traced run measures inserting, not evicting.
    cfg.trace.max_traces = 1_000;
    let app = App::new(cfg.clone());
    app.add_module(Bench).expect("module");
    // The same app counting nothing (`[trace] metrics = false`): what counting every call
    // costs an in-process call.
    cfg.trace.metrics = false;
    let uncounted = App::new(cfg);
    uncounted.add_module(Bench).expect("module");
    let (tx, rx) = mpsc::channel::<Req>(64);
    tokio::spawn(floor_server(rx));
    let m = msg();
    assert_eq!(serde_json::to_vec(&m).expect("json").len(), 49);
    let plain = Session::default();
    // Traced calls are grouped 50 to a trace (a new root every 50 calls), so the store keeps
    // every span and evicts whole old traces at its cap, as it does under steady load.
    let root = std::cell::RefCell::new((app.start_trace("bench", &plain), 0u32));
    let traced_session = || {
        let mut r = root.borrow_mut();
        r.1 += 1;
        if r.1 == 50 {
            *r = (app.start_trace("bench", &plain), 0);
        }
        r.0.session().clone()
    };

    let (mut floor, mut untraced, mut with_spans) = (vec![], vec![], vec![]);
    let (mut floor_tp, mut untraced_tp, mut traced_tp) = (vec![], vec![], vec![]);
    let (mut bare, mut bare_tp) = (vec![], vec![]);
    for _ in 0..3 {
        let s = measure(n, || async {
            std::hint::black_box(floor_call(&tx, &m).await);
        })
        .await;
        floor.push(s.p50_ns);
        floor_tp.push(s.calls_per_s);
        let s = measure(n, || echo(&app, &plain, &m)).await;
        untraced.push(s.p50_ns);
        untraced_tp.push(s.calls_per_s);
        let s = measure(n, || echo(&uncounted, &plain, &m)).await;
        bare.push(s.p50_ns);
        bare_tp.push(s.calls_per_s);
        let s = measure(n, || async {
            let traced = traced_session();
            echo(&app, &traced, &m).await;
        })
        .await;
        with_spans.push(s.p50_ns);
        traced_tp.push(s.calls_per_s);
    }
    let (f, u, t) = (median(floor), median(untraced), median(with_spans));
    let b = median(bare);
    println!("mqrs in-process RPC, {n} sequential calls x 3 runs (medians), 49-byte JSON body");
    println!(
        "{:<58} {:>10} {:>12} {:>8}",
        "path", "p50", "calls/s", "x floor"
    );
    let row = |name: &str, p50: f64, tp: Vec<f64>| {
        println!(
            "{name:<58} {:>8.2}µs {:>12.0} {:>7.2}x",
            p50 / 1000.0,
            median(tp),
            p50 / f
        );
    };
    row(
        "floor: tokio mpsc + oneshot, serde_json both ways",
        f,
        floor_tp,
    );
    row(
        "mqrs app.call, tracing off (untraced session)",
        u,
        untraced_tp,
    );
    row(
        "mqrs app.call, tracing off, counting off ([trace] metrics)",
        b,
        bare_tp,
    );
    row(
        "mqrs app.call, traced (CLIENT + SERVER span, stored)",
        t,
        traced_tp,
    );
    let ok_u = u <= 2.0 * f;
    let ok_t = t <= 4.0 * f;
    println!(
        "targets: untraced <= 2x floor: {} ({:.2}x); traced <= 4x floor: {} ({:.2}x)",
        if ok_u { "met" } else { "MISSED" },
        u / f,
        if ok_t { "met" } else { "MISSED" },
        t / f
    );
    println!(
        "counting every call (RED metrics, CLIENT and SERVER side) adds {:.0} ns to an untraced call",
        u - b
    );
    drop(root);
    let stats = app.trace_store().expect("store").stats();
    println!(
        "store after run: {} traces, {} spans held; {} spans evicted with old traces by the cap",
        stats.traces, stats.spans, stats.spans_dropped
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
