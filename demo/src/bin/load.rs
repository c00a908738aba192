//! `cargo run --release -p demo --bin load`: drives the gate over real MQTT with N clients and
//! K requests in flight each, for the same handler untraced (anonymous clients, whom the demo's
//! `on_request_tracing` skips) and traced (logged-in clients), and prints requests/s, p50/p99,
//! the gate process's resident memory, and the traced/untraced ratio, in one run.
//!
//! Without `--gate` it starts the demo binary next to itself on free ports and measures that
//! process; with `--gate HOST:PORT` it drives a demo already running (RSS only with `--gate-pid`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use demo::client::GateClient;
use demo::harness::{cpu_seconds, median, rss_mib, DemoProcess};
use rumqttc::QoS;

/// Load on the demo's gate, traced against untraced.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Cli {
    /// A running demo's gate; default: start one.
    #[arg(long, value_name = "HOST:PORT")]
    gate: Option<String>,
    /// Process id of that demo, to read its memory.
    #[arg(long)]
    gate_pid: Option<u32>,
    /// MQTT client connections.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Seconds measured per phase (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The handler every request calls.
    #[arg(long, default_value = "Chat/HD_CurrentRoom")]
    handler: String,
    /// Rounds of both phases, alternated so drift on the machine hits both alike; the ratio is
    /// taken over the medians.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The started demo's `--sample-ratio` (traces recorded; failed and slow ones kept).
    #[arg(long, default_value_t = 1.0)]
    sample_ratio: f64,
    /// Run one phase only (to profile it); the ratio needs both.
    #[arg(long, value_parser = ["untraced", "traced"])]
    only: Option<String>,
}

struct Phase {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    rss: Option<f64>,
    /// The gate process's CPU time per answered request, µs.
    cpu_us: Option<f64>,
}

/// Connects the clients (logged in when `login`), then measures one phase.
async fn phase(
    cli: &Cli,
    host: &str,
    port: u16,
    login: bool,
    pid: Option<u32>,
) -> Result<Phase, String> {
    let mut clients = Vec::with_capacity(cli.clients);
    for i in 0..cli.clients {
        let id = format!("load-{}-{i}", if login { "t" } else { "u" });
        let c = GateClient::connect(&id, host, port)
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (demo, gate, pid) = match &cli.gate {
        Some(g) => (None, g.clone(), cli.gate_pid),
        None => match DemoProcess::start(&["--sample-ratio", &cli.sample_ratio.to_string()]) {
            Ok(d) => {
                let (g, pid) = (d.gate.clone(), d.pid());
                (Some(d), g, Some(pid))
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let Some((host, port)) = gate
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        eprintln!("error: --gate `{gate}`: expected HOST:PORT");
        return ExitCode::from(2);
    };
    println!(
        "load: {} clients x {} in flight, {} s per phase, {}, QoS 0, gate {gate}, {} round(s)",
        cli.clients, cli.inflight, cli.seconds, cli.handler, cli.rounds
    );
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>8} {:>11} {:>13}",
        "phase", "req/s", "p50", "p99", "errors", "gate RSS", "gate CPU/req"
    );
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpus: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..cli.rounds.max(1) {
        for (i, (name, login)) in [("untraced", false), ("traced", true)]
            .into_iter()
            .enumerate()
        {
            if cli.only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            match phase(&cli, &host, port, login, pid).await {
                Ok(p) => {
                    let rss = p.rss.map_or("-".to_string(), |r| format!("{r:.0} MiB"));
                    let cpu = p.cpu_us.map_or("-".to_string(), |c| format!("{c:.2} µs"));
                    println!(
                        "{name:<10} {:>10.0} {:>7.2}ms {:>7.2}ms {:>8} {:>11} {:>13}",
                        p.per_s, p.p50_ms, p.p99_ms, p.errors, rss, cpu
                    );
                    rates[i].push(p.per_s);
                    cpus[i].extend(p.cpu_us);
                }
                Err(e) => {
                    eprintln!("error in the {name} phase: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if let [Some(untraced), Some(traced)] = rates.map(|mut r| median(&mut r)) {
        let target = if cli.sample_ratio >= 1.0 {
            "target >= 0.85x at 100 % sampling"
        } else {
            "target >= 0.95x at 10 % sampling, failed and slow kept"
        };
        println!(
            "median req/s: untraced {untraced:.0}, traced {traced:.0} (sample ratio {}); \
             traced/untraced throughput: {:.2}x ({target})",
            cli.sample_ratio,
            traced / untraced
        );
    }
    // CPU per request moves less with the machine's load than throughput does: the load
    // client shares the machine, and a busy neighbour slows both phases' clients alike.
    if let [Some(untraced), Some(traced)] = cpus.map(|mut c| median(&mut c)) {
        println!(
            "median gate CPU per request: untraced {untraced:.2} µs, traced {traced:.2} µs; \
             tracing adds {:.2} µs ({:.0} %)",
            traced - untraced,
            (traced / untraced - 1.0) * 100.0
        );
    }
    drop(demo);
    ExitCode::SUCCESS
}
