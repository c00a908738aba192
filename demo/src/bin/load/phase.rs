//! One measured phase of requests: N clients through one door, K requests in flight each,
//! for a few seconds after a warm-up; requests/s, p50/p99, errors, and the gate process's CPU
//! time per request and memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo::client::GateClient;
use demo::harness::{cpu_seconds, rss_mib};
use rumqttc::QoS;
use serde_json::Value;

use crate::door::Door;
use crate::lean::LeanClient;
use crate::Cli;

/// What one phase measured.
pub struct Phase {
    /// Answered requests per second.
    pub per_s: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Requests that failed or timed out while measuring.
    pub errors: usize,
    /// The gate process's resident memory at the end, MiB.
    pub rss: Option<f64>,
    /// The gate process's CPU time per answered request, µs.
    pub cpu_us: Option<f64>,
    /// This load client's CPU time per answered request, µs: it shares the machine, so a
    /// transport that costs the client more leaves the gate less.
    pub client_cpu_us: Option<f64>,
    /// CPU time per answered request of each of the door's other processes, µs.
    pub also_cpu_us: Vec<(String, f64)>,
}

/// Who the phase's clients are and where their requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Anonymous clients of the gate (the demo traces none of their requests).
    Anonymous,
    /// Clients that log in first (the demo traces their requests).
    LoggedIn,
    /// Plain MQTT request/reply through the broker at the door, answered by a bare responder
    /// (`bare` module): the floor under the gate's path.
    Bare,
}

/// A connection of either client library.
enum Client {
    /// rumqttc, what users run.
    Rumqttc(GateClient),
    /// rumqttc to a plain broker, with a bare responder behind it.
    Bare(crate::bare::Requester),
    /// This benchmark's own lean client.
    Lean(LeanClient),
}

impl Client {
    async fn connect(door: &Door, id: &str, lean: bool, mode: Mode) -> Result<Client, String> {
        Ok(if mode == Mode::Bare {
            Client::Bare(crate::bare::Requester::connect(door, id).await?)
        } else if lean {
            Client::Lean(LeanClient::connect(door, id).await?)
        } else {
            Client::Rumqttc(door.connect(id).await?)
        })
    }

    async fn request(&self, handler: &str, body: &[u8]) -> Result<Value, String> {
        match self {
            Client::Rumqttc(c) => c
                .request(handler, body, QoS::AtMostOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::Lean(c) => c.request(handler, body).await,
            Client::Bare(c) => c.request(body).await,
        }
    }

    async fn close(self) {
        match self {
            Client::Rumqttc(c) => c.disconnect().await,
            Client::Bare(c) => c.close().await,
            Client::Lean(_) => {}
        }
    }
}

/// Connects the clients, then measures one phase.
pub async fn phase(cli: &Cli, door: &Door, mode: Mode) -> Result<Phase, String> {
    let mut clients = Vec::with_capacity(cli.clients);
    let lean = cli.client == "lean";
    let login = mode == Mode::LoggedIn;
    for i in 0..cli.clients {
        let id = format!("load-{}-{i}", if login { "t" } else { "u" });
        let c = Client::connect(door, &id, lean, mode)
            .await
            .map_err(|e| format!("client {i}: {e}"))?;
        if login {
            let body = serde_json::json!({"userName": format!("load{i}"), "passWord": "pw"});
            let r = c
                .request("Login/HD_Login", body.to_string().as_bytes())
                .await
                .map_err(|e| format!("login {i}: {e}"))?;
            if r["Error"] != "" {
                return Err(format!("login {i}: {r}"));
            }
        }
        clients.push(Arc::new(c));
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in &clients {
        for _ in 0..cli.inflight {
            let (c, handler) = (c.clone(), cli.handler.clone());
            let (measuring, stop) = (measuring.clone(), stop.clone());
            let (latencies, errors) = (latencies.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = c.request(&handler, b"{}").await;
                    let ok = matches!(&r, Ok(v) if v["Error"] == "");
                    if measuring.load(Ordering::Relaxed) {
                        if ok {
                            mine.push(t.elapsed());
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(mine);
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let pid = door.pid;
    let cpu_before = pid.and_then(cpu_seconds);
    let own_before = cpu_seconds(std::process::id());
    let also_before: Vec<Option<f64>> = door.also.iter().map(|m| m.cpu_seconds()).collect();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let own = own_before
        .zip(cpu_seconds(std::process::id()))
        .map(|(a, b)| b - a);
    let cpu = cpu_before
        .zip(pid.and_then(cpu_seconds))
        .map(|(a, b)| b - a);
    let rss = pid.and_then(rss_mib);
    let also: Vec<(String, Option<f64>)> = door
        .also
        .iter()
        .zip(also_before)
        .map(|(m, before)| {
            let used = before.zip(m.cpu_seconds()).map(|(a, b)| b - a);
            (m.name.clone(), used)
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    if lat.is_empty() {
        return Err("no request succeeded".into());
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let answered = lat.len() as f64;
    Ok(Phase {
        cpu_us: cpu.map(|c| c * 1e6 / answered),
        client_cpu_us: own.map(|c| c * 1e6 / answered),
        also_cpu_us: also
            .into_iter()
            .filter_map(|(name, c)| Some((name, c? * 1e6 / answered)))
            .collect(),
        per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(lat[lat.len() / 2]),
        p99_ms: ms(lat[lat.len() * 99 / 100]),
        errors: errors.load(Ordering::Relaxed),
        rss,
    })
}
