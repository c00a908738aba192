//! `cargo run --release -p demo --bin load`: drives the gate over real MQTT with N clients and
//! K requests in flight each, for the same handler untraced (anonymous clients, whom the demo's
//! `on_request_tracing` skips) and traced (logged-in clients), and prints requests/s, p50/p99,
//! the gate process's resident memory, and the traced/untraced ratio, in one run.
//!
//! Without `--gate` it starts the demo binary next to itself on free ports and measures that
//! process; with `--gate HOST:PORT` it drives a demo already running (RSS only with `--gate-pid`).
//!
//! With `--transports` the two phases are MQTT over TCP and MQTT over WebSocket instead (both
//! untraced, same handler, same client library), and it prints WebSocket against TCP.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use demo::client::GateClient;
use demo::harness::{cpu_seconds, median, rss_mib, DemoProcess};
use rumqttc::{MqttOptions, QoS, Transport};

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
    #[arg(long, value_parser = ["untraced", "traced", "tcp", "ws"])]
    only: Option<String>,
    /// Compare MQTT over WebSocket with MQTT over TCP (both untraced) instead of traced with
    /// untraced.
    #[arg(long)]
    transports: bool,
    /// A running demo's WebSocket listener, with `--gate` and `--transports`.
    #[arg(long, value_name = "HOST:PORT")]
    ws: Option<String>,
}

/// Where the clients connect.
#[derive(Debug, Clone)]
struct Door {
    host: String,
    port: u16,
    /// MQTT over WebSocket (`ws://host:port/mqtt`) rather than TCP.
    ws: bool,
}

impl Door {
    fn parse(addr: &str, ws: bool) -> Result<Door, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("`{addr}`: expected HOST:PORT"))?;
        Ok(Door { host, port, ws })
    }

    async fn connect(&self, id: &str) -> Result<GateClient, String> {
        let r = if self.ws {
            let url = format!("ws://{}:{}/mqtt", self.host, self.port);
            let mut opts = MqttOptions::new(id, url, self.port);
            opts.set_transport(Transport::Ws);
            GateClient::connect_with(opts).await
        } else {
            GateClient::connect(id, &self.host, self.port).await
        };
        r.map_err(|e| e.to_string())
    }
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
async fn phase(cli: &Cli, door: &Door, login: bool, pid: Option<u32>) -> Result<Phase, String> {
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
    let (demo, gate, ws, pid) = match &cli.gate {
        Some(g) => (None, g.clone(), cli.ws.clone(), cli.gate_pid),
        None => match DemoProcess::start(&["--sample-ratio", &cli.sample_ratio.to_string()]) {
            Ok(d) => {
                let (g, ws, pid) = (d.gate.clone(), d.ws.clone(), d.pid());
                (Some(d), g, ws, Some(pid))
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let tcp = match Door::parse(&gate, false) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --gate {e}");
            return ExitCode::from(2);
        }
    };
    let over_ws = match (cli.transports, &ws) {
        (false, _) => None,
        (true, Some(w)) => match Door::parse(w, true) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("error: --ws {e}");
                return ExitCode::from(2);
            }
        },
        (true, None) => {
            eprintln!("error: --transports needs the demo's WebSocket listener (--ws HOST:PORT with --gate)");
            return ExitCode::from(2);
        }
    };
    // Each phase: its name, where its clients connect, and whether they log in (are traced).
    let phases: [(&str, &Door, bool); 2] = match &over_ws {
        None => [("untraced", &tcp, false), ("traced", &tcp, true)],
        Some(w) => [("tcp", &tcp, false), ("ws", w, false)],
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
    let mut p50s: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..cli.rounds.max(1) {
        for (i, &(name, door, login)) in phases.iter().enumerate() {
            if cli.only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            match phase(&cli, door, login, pid).await {
                Ok(p) => {
                    let rss = p.rss.map_or("-".to_string(), |r| format!("{r:.0} MiB"));
                    let cpu = p.cpu_us.map_or("-".to_string(), |c| format!("{c:.2} µs"));
                    println!(
                        "{name:<10} {:>10.0} {:>7.2}ms {:>7.2}ms {:>8} {:>11} {:>13}",
                        p.per_s, p.p50_ms, p.p99_ms, p.errors, rss, cpu
                    );
                    rates[i].push(p.per_s);
                    cpus[i].extend(p.cpu_us);
                    p50s[i].push(p.p50_ms);
                }
                Err(e) => {
                    eprintln!("error in the {name} phase: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if over_ws.is_some() {
        if let ([Some(tcp), Some(ws)], [Some(tcp50), Some(ws50)]) = (
            rates.map(|mut r| median(&mut r)),
            p50s.map(|mut r| median(&mut r)),
        ) {
            println!(
                "median req/s: tcp {tcp:.0}, ws {ws:.0}; WebSocket/TCP throughput {:.2}x (target >= 0.8x), p50 {:.2}x (target <= 1.2x)",
                ws / tcp,
                ws50 / tcp50
            );
        }
        if let [Some(tcp), Some(ws)] = cpus.map(|mut c| median(&mut c)) {
            println!(
                "median gate CPU per request: tcp {tcp:.2} µs, ws {ws:.2} µs ({:.2}x)",
                ws / tcp
            );
        }
        drop(demo);
        return ExitCode::SUCCESS;
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
