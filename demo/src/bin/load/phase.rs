//! One measured phase of requests: N clients through one door, K requests in flight each,
//! for a few seconds after a warm-up; requests/s, p50/p99, errors, and the gate process's CPU
//! time per request and memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo::harness::{cpu_seconds, rss_mib};
use rumqttc::QoS;

use crate::door::Door;
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
}

/// Connects the clients (logged in when `login`), then measures one phase.
pub async fn phase(cli: &Cli, door: &Door, login: bool) -> Result<Phase, String> {
    let mut clients = Vec::with_capacity(cli.clients);
    for i in 0..cli.clients {
        let id = format!("load-{}-{i}", if login { "t" } else { "u" });
        let c = door
            .connect(&id)
            .await
            .map_err(|e| format!("client {i}: {e}"))?;
        if login {
            let body = serde_json::json!({"userName": format!("load{i}"), "passWord": "pw"});
            let r = c
                .request(
                    "Login/HD_Login",
                    body.to_string().as_bytes(),
                    QoS::AtMostOnce,
                )
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
                    let r = c.request(&handler, b"{}", QoS::AtMostOnce).await;
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
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = cpu_before
        .zip(pid.and_then(cpu_seconds))
        .map(|(a, b)| b - a);
    let rss = pid.and_then(rss_mib);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.disconnect().await;
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
        per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(lat[lat.len() / 2]),
        p99_ms: ms(lat[lat.len() * 99 / 100]),
        errors: errors.load(Ordering::Relaxed),
        rss,
    })
}
