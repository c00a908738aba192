//! `cargo bench -p mqrs-runtime --bench broker`: calls between processes through the embedded
//! MQTT broker, side by side in one run:
//!
//! - (b) the floor: a bare rumqttc v5 request/reply through the same broker at the same QoS 0
//!   (response topic + correlation data, a JSON body echoed back);
//! - (a) mqrs RPC through the broker, tracing off, and traced (CLIENT + SERVER spans stored);
//! - (c) mqrs in-process RPC, for scale.
//!
//! Two apps stand for two processes (each its own broker connection). Prints p50/p99 with one
//! call in flight, calls/s with one and with 64 in flight, and the ratios the targets name:
//! (a) at least 0.8x the throughput of (b) and at most 1.2x its p50; tracing costs (a) under 5 %.
//! The tracing cost is measured a second way too: in pairs of short blocks, untraced and traced
//! back to back, one ratio per pair (the machine's speed drifts more between the table's runs
//! than tracing costs), beside what the `traceparent` user property alone costs the floor: the
//! share of tracing's cost that is the broker's and the MQTT clients' work.
//! `MQRS_BENCH_ONLY=cost` runs only that measure; `MQRS_BENCH_ONLY=plain` or `=traced` runs
//! one (a) row ten times with 64 in flight, for a profiler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{App, Config, Session};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::oneshot;

mod common;

use common::{echo, msg, Bench, Msg};

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(Some(1 << 20));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    o.set_network_options(net);
    o
}

/// The floor's responder: echoes each request's JSON body to its response topic.
async fn bare_responder(port: u16) {
    let (client, mut events) = AsyncClient::new(options("bare-responder", port), 1024);
    client
        .subscribe("bench/req", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    while let Ok(ev) = events.poll().await {
        if let Event::Incoming(Packet::Publish(p)) = ev {
            let props = p.properties.unwrap_or_default();
            let Some(topic) = props.response_topic else {
                continue;
            };
            let m: Msg = serde_json::from_slice(&p.payload).expect("decode");
            let body = serde_json::to_vec(&m).expect("encode");
            let reply = PublishProperties {
                correlation_data: props.correlation_data,
                ..Default::default()
            };
            let c = client.clone();
            tokio::spawn(async move {
                let _ = c
                    .publish_with_properties(topic, QoS::AtMostOnce, false, body, reply)
                    .await;
            });
        }
    }
}

/// Writes `bytes` as lower-case hex into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[usize::from(b >> 4)];
        o[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// The floor's requester: publishes with a response topic and correlation id.
struct Bare {
    client: AsyncClient,
    waiting: Waiting,
    next: std::sync::atomic::AtomicU64,
    /// Replies that did not come within 3 s (QoS 0: a broker may drop a message).
    lost: std::sync::atomic::AtomicU64,
}

impl Bare {
    async fn connect(port: u16) -> Bare {
        let (client, mut events) = AsyncClient::new(options("bare-requester", port), 1024);
        let waiting: Waiting = Arc::default();
        let w = waiting.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            while let Ok(ev) = events.poll().await {
                match ev {
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let id = p
                            .properties
                            .and_then(|pr| pr.correlation_data)
                            .and_then(|d| d.as_ref().try_into().ok())
                            .map(u64::from_be_bytes);
                        if let Some(tx) = id.and_then(|id| w.lock().expect("lock").remove(&id)) {
                            let _ = tx.send(p.payload.to_vec());
                        }
                    }
                    _ => {}
                }
            }
        });
        client
            .subscribe_many([Filter::new("bench/reply", QoS::AtMostOnce)])
            .await
            .expect("subscribe");
        let _ = ready_rx.await;
        Bare {
            client,
            waiting,
            next: std::sync::atomic::AtomicU64::new(1),
            lost: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// One request and its reply; `None` when the reply is lost. With `traceparent`, the
    /// request carries it as a user property, as a traced mqrs call does.
    async fn call(&self, m: &Msg, traceparent: Option<&str>) -> Option<Msg> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("lock").insert(id, tx);
        let props = PublishProperties {
            response_topic: Some("bench/reply".into()),
            correlation_data: Some(id.to_be_bytes().to_vec().into()),
            user_properties: traceparent
                .map(|tp| vec![("traceparent".to_string(), tp.to_string())])
                .unwrap_or_default(),
            ..Default::default()
        };
        let body = serde_json::to_vec(m).expect("encode");
        self.client
            .publish_with_properties("bench/req", QoS::AtMostOnce, false, body, props)
            .await
            .expect("publish");
        match tokio::time::timeout(Duration::from_secs(3), rx).await {
            Ok(Ok(reply)) => Some(serde_json::from_slice(&reply).expect("decode")),
            _ => {
                self.waiting.lock().expect("lock").remove(&id);
                self.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
        }
    }
}

struct Sample {
    p50_us: f64,
    p99_us: f64,
    seq_per_s: f64,
    par_per_s: f64,
}

/// Sequential latency over `n` calls, then throughput with 64 in flight over `n` calls.
async fn measure<F, Fut>(n: usize, f: F) -> Sample
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (lat, seq) = common::sequential(n, &f).await;
    let par_per_s = rate(n, 64, &f).await;
    let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
    Sample {
        p50_us: us(lat[n / 2]),
        p99_us: us(lat[n * 99 / 100]),
        seq_per_s: n as f64 / seq.as_secs_f64(),
        par_per_s,
    }
}

/// Calls/s of `n` calls of `f`, with `inflight` calls in flight.
async fn rate<F, Fut>(n: usize, inflight: usize, f: &F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let mut running = FuturesUnordered::new();
    let mut sent = 0;
    while sent < n || !running.is_empty() {
        while sent < n && running.len() < inflight {
            running.push(f());
            sent += 1;
        }
        running.next().await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The cost of `b` over `a`, measured in pairs of short blocks run back to back (in the
/// order a b, then b a, so a drift favours neither), one ratio per pair. This machine's speed
/// drifts by more than the effect over seconds; two blocks a fraction of a second apart see
/// the same machine.
#[derive(Clone, Copy)]
struct Cost {
    /// Median of the per-pair throughput costs, percent.
    median: f64,
    /// First quartile of those, percent.
    q1: f64,
    /// Third quartile of those, percent.
    q3: f64,
    /// Median of the per-pair differences in time per call of throughput (1 / calls per
    /// second; with many calls in flight, not the latency of one), microseconds.
    us: f64,
}

/// See [`Cost`].
async fn paired_cost<A, FA, B, FB>(pairs: usize, n: usize, inflight: usize, a: A, b: B) -> Cost
where
    A: Fn() -> FA,
    FA: std::future::Future<Output = ()>,
    B: Fn() -> FB,
    FB: std::future::Future<Output = ()>,
{
    let mut costs = Vec::with_capacity(pairs);
    let mut us = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let (ra, rb) = if i % 2 == 0 {
            let ra = rate(n, inflight, &a).await;
            (ra, rate(n, inflight, &b).await)
        } else {
            let rb = rate(n, inflight, &b).await;
            (rate(n, inflight, &a).await, rb)
        };
        costs.push((1.0 - rb / ra) * 100.0);
        us.push((1.0 / rb - 1.0 / ra) * 1e6);
    }
    costs.sort_by(|x, y| x.total_cmp(y));
    us.sort_by(|x, y| x.total_cmp(y));
    Cost {
        median: costs[pairs / 2],
        q1: costs[pairs / 4],
        q3: costs[pairs * 3 / 4],
        us: us[pairs / 2],
    }
}

fn config(server_id: &str, url: BrokerUrl) -> Config {
    let mut c = Config::ephemeral();
    c.app.server_id = server_id.into();
    c.gate.enabled = false;
    c.trace.viewer = false;
    c.trace.collector = false;
    c.trace.max_traces = 1_000;
    c.broker.url = url;
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("MQRS_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    // The callee process runs the embedded broker and the caller process connects to it;
    // `MQRS_BENCH_PORT=<port>` puts both on a standard broker on 127.0.0.1 instead.
    let given: Option<u16> = std::env::var("MQRS_BENCH_PORT")
        .ok()
        .map(|p| p.parse().expect("MQRS_BENCH_PORT is a port number"));
    let url = |port: u16| BrokerUrl::Urls(vec![format!("mqtt://127.0.0.1:{port}")]);
    let callee = App::builder()
        .config(config("callee", given.map_or(BrokerUrl::Embedded, url)))
        .module(|_| Bench)
        .build()
        .expect("callee");
    let started = callee.start().await.expect("callee starts");
    let port = match given {
        Some(port) => port,
        None => started.broker.expect("embedded broker").port(),
    };
    let caller = App::builder()
        .config(config("caller", url(port)))
        .build()
        .expect("caller");
    caller.start().await.expect("caller starts");
    while !caller
        .cluster()
        .get("callee")
        .is_some_and(|m| m.iter().any(|x| x == "Bench"))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::spawn(bare_responder(port));
    let bare = Bare::connect(port).await;
    let m = msg();
    let plain = Session::default();
    // Traced calls as a module makes them while it handles requests traced elsewhere (at the
    // gate, in another process): each call's session continues its own sampled trace, made
    // from its `traceparent` as a request's session is made when it arrives (that cost counts
    // as tracing's), so the store sees many short traces rather than one of 100,000 spans.
    // The `traceparent` is written just before, as an arriving one was just read: values made
    // ahead of time (or sessions) would be cold in the cache by their turn.
    let next = std::sync::atomic::AtomicU64::new(0);
    let traced_session = || {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let trace_id = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-01";
        hex(&trace_id.to_be_bytes(), &mut tp[3..35]);
        hex(&i.to_be_bytes(), &mut tp[36..52]);
        let tp = std::str::from_utf8(&tp).expect("ASCII");
        plain.continuing(tp, None).expect("a valid traceparent")
    };
    assert!(traced_session().is_traced());
    let traced_call = || {
        let s = traced_session();
        let (caller, m) = (&caller, &m);
        async move { echo(caller, &s, m).await }
    };

    // For a profiler: `MQRS_BENCH_ONLY=plain` or `=traced` runs only that (a) row, 64 in flight.
    let only = std::env::var("MQRS_BENCH_ONLY").ok();
    if let Some(only) = only.as_deref().filter(|o| *o != "cost") {
        for _ in 0..10 {
            let r = if only == "traced" {
                rate(n, 64, &traced_call).await
            } else {
                rate(n, 64, &|| echo(&caller, &plain, &m)).await
            };
            println!("{only}: {r:.0} calls/s with 64 in flight");
        }
        caller.shutdown().await;
        callee.shutdown().await;
        return;
    }
    if only.is_none() {
        let mut rows: Vec<(&str, Vec<Sample>)> = vec![
            ("(b) floor: bare rumqttc v5 request/reply, QoS 0", vec![]),
            ("(a) mqrs RPC through the broker, tracing off", vec![]),
            ("(a) mqrs RPC through the broker, traced", vec![]),
            ("(c) mqrs in-process RPC, tracing off", vec![]),
        ];
        for _ in 0..3 {
            rows[0].1.push(
                measure(n, || async {
                    std::hint::black_box(bare.call(&m, None).await);
                })
                .await,
            );
            rows[1]
                .1
                .push(measure(n, || echo(&caller, &plain, &m)).await);
            rows[2].1.push(measure(n, traced_call).await);
            rows[3]
                .1
                .push(measure(n, || echo(&callee, &plain, &m)).await);
        }
        let med = |v: &[Sample], f: fn(&Sample) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(|a, b| a.total_cmp(b));
            x[x.len() / 2]
        };
        println!(
            "calls between two apps through {}, QoS 0, 49-byte JSON body",
            match given {
                Some(port) => format!("the MQTT broker on 127.0.0.1:{port}"),
                None => "the embedded MQTT broker (mqtt5)".into(),
            }
        );
        println!("{n} calls per run x 3 runs (medians); multi-thread runtime, 2 workers");
        println!(
            "{:<52} {:>9} {:>9} {:>12} {:>14}",
            "path", "p50", "p99", "calls/s (1)", "calls/s (64)"
        );
        let mut figures = Vec::new();
        for (name, s) in &rows {
            let f = (
                med(s, |x| x.p50_us),
                med(s, |x| x.p99_us),
                med(s, |x| x.seq_per_s),
                med(s, |x| x.par_per_s),
            );
            println!(
                "{name:<52} {:>7.1}µs {:>7.1}µs {:>12.0} {:>14.0}",
                f.0, f.1, f.2, f.3
            );
            figures.push(f);
        }
        let (b, a, at) = (figures[0], figures[1], figures[2]);
        println!(
            "(a)/(b): throughput {:.2}x with 1 in flight, {:.2}x with 64 (target >= 0.8x); p50 {:.2}x (target <= 1.2x)",
            a.2 / b.2,
            a.3 / b.3,
            a.0 / b.0
        );
        println!(
            "tracing on (a), from the medians above: throughput {:.1} % lower with 1 in flight, {:.1} % with 64",
            (1.0 - at.2 / a.2) * 100.0,
            (1.0 - at.3 / a.3) * 100.0
        );
    }
    // The medians above are minutes apart; the tracing cost is measured again in pairs.
    let (pairs, block) = (21, (n / 4).max(100));
    // What carrying the `traceparent` property costs the broker and the MQTT clients alone,
    // without mqrs: the floor's calls with and without it.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for inflight in [1, 64] {
        let plain_call = || echo(&caller, &plain, &m);
        let c = paired_cost(pairs, block, inflight, plain_call, traced_call).await;
        println!(
            "tracing on (a), {pairs} pairs of {block} calls back to back, {inflight} in flight: median {:.1} % lower (quartiles {:.1} % .. {:.1} %; target < 5 %), {:.2} µs more per call (1 / throughput)",
            c.median, c.q1, c.q3, c.us
        );
        // The method's own noise: the same pairs with tracing off on both sides.
        let c = paired_cost(pairs, block, inflight, plain_call, plain_call).await;
        println!(
            "  control, tracing off in both blocks of each pair: median {:.1} % (quartiles {:.1} % .. {:.1} %)",
            c.median, c.q1, c.q3
        );
        let c = paired_cost(
            pairs,
            block,
            inflight,
            || async {
                std::hint::black_box(bare.call(&m, None).await);
            },
            || async {
                std::hint::black_box(bare.call(&m, Some(tp)).await);
            },
        )
        .await;
        println!(
            "  the `traceparent` property alone, on (b): median {:.2} µs more per call ({:.1} % of (b))",
            c.us, c.median
        );
    }
    let s = caller.broker_stats().expect("stats");
    println!(
        "caller: {} calls sent, {} late replies, {} pending at the end; floor: {} replies lost",
        s.calls_sent,
        s.late_replies,
        s.pending,
        bare.lost.load(std::sync::atomic::Ordering::Relaxed)
    );
    caller.shutdown().await;
    callee.shutdown().await;
}
