//! `cargo run --release -p demo --bin load`: drives the gate over real MQTT with N clients and
//! K requests in flight each, for the same handler untraced (anonymous clients, whom the demo's
//! `on_request_tracing` skips) and traced (logged-in clients), and prints requests/s, p50/p99,
//! the gate process's resident memory and CPU time per request, and the traced/untraced ratio,
//! in one run, phases alternated over `--rounds`.
//!
//! Without `--gate` it starts the demo binary next to itself on free ports and measures that
//! process; with `--gate HOST:PORT` it drives a demo already running (RSS only with `--gate-pid`).
//!
//! Other comparisons, each side by side in one run:
//! - `--transports`: MQTT over TCP, WebSocket, TLS and WSS (all untraced, same handler, same
//!   client library), against TCP; TLS with a self-signed certificate made for the run.
//! - `--fanout N`: `Chat/HD_Say` in a room of N members, messages delivered per second, against
//!   one publish to N subscribers through mosquitto (module [`fanout`]).
//! - `--connections N`: N idle connections, half TCP and half WebSocket, and the gate's memory
//!   per connection (module [`idle`]).
//! - `--metrics-cost`: untraced requests through a demo that counts every call (RED metrics)
//!   and through one started with `--no-metrics`: what counting costs the gate.
//! - `--collector`: OTLP/HTTP protobuf ingest into the demo's collector, with the gate idle
//!   and beside gate load (module [`collector`]).
//! - `--split`: the demo split over a gate process and a modules process, through the
//!   embedded broker and mosquitto, untraced, traced and at 10 % sampling, against a bare MQTT
//!   request/reply floor through the same broker and the demo in one process, with every
//!   process's CPU time per request (module [`split`]).
//! - `--cluster RMQTTD`: the demo over a three-node rmqttd cluster, one node killed and
//!   started again under load (module [`cluster`]; `cargo xtask cluster` runs it).
//! - `--restarts`: two processes of each of Chat and Login behind a gate, each restarted in
//!   turn (SIGTERM) and one killed (SIGKILL) under load: requests/s, latency and errors in
//!   each window, through the embedded broker and mosquitto (module [`restarts`]).

mod bare;
mod cluster;
mod collector;
mod door;
mod fanout;
mod idle;
mod lean;
mod phase;
mod restarts;
mod split;

use std::process::ExitCode;

use clap::Parser;
use demo::harness::{median, DemoProcess, SelfSigned};

use door::{Door, Kind};
use phase::Mode;

/// Load on the demo's gate, measured side by side.
#[derive(Debug, Parser)]
#[command(name = "load")]
pub struct Cli {
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
    /// Rounds of every phase, alternated so drift on the machine hits all alike; ratios are
    /// taken over the medians.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The started demo's `--sample-ratio` (traces recorded; failed and slow ones kept).
    #[arg(long, default_value_t = 1.0)]
    sample_ratio: f64,
    /// Run only these phases (comma-separated; to profile one, or to alternate two).
    #[arg(long, value_name = "PHASE,...", value_delimiter = ',')]
    only: Vec<String>,
    /// Compare MQTT over WebSocket, TLS and WSS with MQTT over TCP (all untraced) instead of
    /// traced with untraced.
    #[arg(long)]
    transports: bool,
    /// A running demo's WebSocket listener, with `--gate` and `--transports`.
    #[arg(long, value_name = "HOST:PORT")]
    ws: Option<String>,
    /// Measure `Chat/HD_Say` in a room of this many members against one publish to as many
    /// subscribers through mosquitto.
    #[arg(long, value_name = "MEMBERS", conflicts_with_all = ["transports", "connections"])]
    fanout: Option<usize>,
    /// Members of the fan-out room who talk, one message in flight each.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Hold this many idle connections (half TCP, half WebSocket) and print the gate's memory
    /// per connection.
    #[arg(long, value_name = "N", conflicts_with = "transports")]
    connections: Option<usize>,
    /// The client library of the request phases: rumqttc (what users run), or `lean`, this
    /// benchmark's own few lines of MQTT, so a transport's cost to the client (which shares
    /// the machine) does not decide the gate's throughput.
    #[arg(long, default_value = "rumqttc", value_parser = ["rumqttc", "lean"])]
    client: String,
    /// Compare untraced requests through a demo that counts every call with one that counts
    /// none (`--no-metrics`).
    #[arg(long, conflicts_with_all = ["transports", "fanout", "connections", "gate"])]
    metrics_cost: bool,
    /// The demo split over two processes, through the embedded broker and mosquitto,
    /// untraced, traced and at 10 % sampling, against a bare MQTT request/reply floor through
    /// the same broker and against the demo in one process.
    #[arg(long, conflicts_with_all = ["transports", "fanout", "connections", "gate", "metrics_cost"])]
    split: bool,
    /// OTLP/HTTP protobuf ingest into the demo's collector (spans/s, CPU per span), with the
    /// gate idle and beside gate load.
    #[arg(long, conflicts_with_all = ["transports", "fanout", "connections", "gate", "metrics_cost", "split"])]
    collector: bool,
    /// Restart each of two Chat and two Login processes in turn (SIGTERM), then kill one
    /// (SIGKILL), under load: requests/s, latency and errors in each window.
    #[arg(long, conflicts_with_all = ["transports", "fanout", "connections", "gate", "metrics_cost", "split", "collector"])]
    restarts: bool,
    /// The demo over a three-node cluster of this rmqttd (raft cluster plugin) on loopback,
    /// node 3 killed and started again under load (`cargo xtask cluster` installs it).
    #[arg(long, value_name = "RMQTTD", conflicts_with_all = ["transports", "fanout", "connections", "gate", "metrics_cost", "split", "collector", "restarts"])]
    cluster: Option<std::path::PathBuf>,
    /// With `--cluster`: how long a node waits on another node's answer (rmqtt's
    /// `node_grpc_client_timeout`); a session moving off a dead node waits this long, and
    /// so does a subscription asking it for retained messages.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    node_timeout_ms: u64,
    /// Internal: answer bare requests through the broker at HOST:PORT.
    #[arg(long, hide = true, value_name = "HOST:PORT")]
    bare_responder: Option<String>,
    /// Internal: hold a share of `--connections` in a worker process.
    #[arg(long, hide = true, value_name = "SPEC")]
    hold_worker: Option<String>,
}

/// A phase to run in every round: its name, its door, and who its clients are.
struct Spec {
    name: &'static str,
    door: Door,
    mode: Mode,
}

/// The demos this run started (stopped when dropped) and the phases through them.
struct Plan {
    /// Other processes the run started (responders, then brokers), stopped when dropped,
    /// before the demos.
    _held: Vec<Box<dyn std::any::Any>>,
    _demos: Vec<DemoProcess>,
    _cert: Option<SelfSigned>,
    specs: Vec<Spec>,
}

/// The traced and untraced phases through one gate.
fn plan_tracing(cli: &Cli) -> Result<Plan, String> {
    let (demos, gate, pid) = match &cli.gate {
        Some(g) => (vec![], g.clone(), cli.gate_pid),
        None => {
            let d = DemoProcess::start(&["--sample-ratio", &cli.sample_ratio.to_string()])?;
            let (g, pid) = (d.gate.clone(), d.pid());
            (vec![d], g, Some(pid))
        }
    };
    let door = Door::parse(&gate, Kind::Tcp, pid).map_err(|e| format!("--gate {e}"))?;
    Ok(Plan {
        _demos: demos,
        _cert: None,
        _held: Vec::new(),
        specs: vec![
            Spec {
                name: "untraced",
                door: door.clone(),
                mode: Mode::Anonymous,
            },
            Spec {
                name: "traced",
                door,
                mode: Mode::LoggedIn,
            },
        ],
    })
}

/// Untraced requests through a demo that counts every call and one that counts none.
fn plan_metrics(cli: &Cli) -> Result<Plan, String> {
    let ratio = cli.sample_ratio.to_string();
    let counted = DemoProcess::start(&["--sample-ratio", &ratio])?;
    let uncounted = DemoProcess::start(&["--sample-ratio", &ratio, "--no-metrics"])?;
    let spec = |name, d: &DemoProcess| -> Result<Spec, String> {
        Ok(Spec {
            name,
            door: Door::parse(&d.gate, Kind::Tcp, Some(d.pid()))?,
            mode: Mode::Anonymous,
        })
    };
    let specs = vec![spec("counted", &counted)?, spec("uncounted", &uncounted)?];
    Ok(Plan {
        _demos: vec![counted, uncounted],
        _cert: None,
        _held: Vec::new(),
        specs,
    })
}

/// Prints counted against uncounted.
fn print_metrics_cost(all: Vec<Medians>) {
    let [mut counted, mut uncounted] = [all[0].clone(), all[1].clone()];
    if let (Some(c), Some(u)) = (median(&mut counted.per_s), median(&mut uncounted.per_s)) {
        println!(
            "median req/s: counted {c:.0}, uncounted {u:.0}; counted/uncounted throughput: \
             {:.3}x (target >= 0.97x)",
            c / u
        );
    }
    if let (Some(c), Some(u)) = (median(&mut counted.cpu_us), median(&mut uncounted.cpu_us)) {
        println!(
            "median gate CPU per request: counted {c:.2} µs, uncounted {u:.2} µs; counting \
             adds {:.2} µs (target < 0.3 µs)",
            c - u
        );
    }
}

/// TCP and WebSocket through one demo, TLS and WSS through a second one with a certificate
/// made for the run (its WebSocket port speaks WSS); with `--gate`, TCP and `--ws` only.
fn plan_transports(cli: &Cli) -> Result<Plan, String> {
    let untraced = |name, door| Spec {
        name,
        door,
        mode: Mode::Anonymous,
    };
    if let Some(g) = &cli.gate {
        let ws = cli.ws.as_deref().ok_or(
            "--transports with --gate needs the demo's WebSocket listener (--ws HOST:PORT)",
        )?;
        println!("(TLS and WSS are measured only on demos this binary starts)");
        return Ok(Plan {
            _demos: vec![],
            _cert: None,
            _held: Vec::new(),
            specs: vec![
                untraced("tcp", Door::parse(g, Kind::Tcp, cli.gate_pid)?),
                untraced("ws", Door::parse(ws, Kind::Ws, cli.gate_pid)?),
            ],
        });
    }
    let ratio = cli.sample_ratio.to_string();
    let plain = DemoProcess::start(&["--sample-ratio", &ratio])?;
    let cert = SelfSigned::new("load-tls")?;
    let mut flags = cert.demo_flags();
    flags.extend(["--sample-ratio".to_string(), ratio]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tls = DemoProcess::start(&flags)?;
    let trust = cert.client_config()?;
    let missing = |what: &str| format!("the demo did not log its {what} address");
    let door = |addr: &Option<String>, kind, pid, what| {
        let addr = addr.as_deref().ok_or_else(|| missing(what))?;
        Door::parse(addr, kind, Some(pid))
    };
    let specs = vec![
        untraced(
            "tcp",
            Door::parse(&plain.gate, Kind::Tcp, Some(plain.pid()))?,
        ),
        untraced("ws", door(&plain.ws, Kind::Ws, plain.pid(), "ws")?),
        untraced(
            "tls",
            door(&tls.tls, Kind::Tls, tls.pid(), "mqtts")?.trusting(trust.clone()),
        ),
        untraced(
            "wss",
            door(&tls.ws, Kind::Wss, tls.pid(), "wss")?.trusting(trust),
        ),
    ];
    Ok(Plan {
        _demos: vec![plain, tls],
        _cert: Some(cert),
        _held: Vec::new(),
        specs,
    })
}

/// Medians of every phase's rounds.
#[derive(Default, Clone)]
struct Medians {
    per_s: Vec<f64>,
    p50_ms: Vec<f64>,
    cpu_us: Vec<f64>,
    client_cpu_us: Vec<f64>,
    /// The door's other processes' CPU time per request, by name.
    also: Vec<(String, Vec<f64>)>,
}

/// Runs every phase of `plan` in every round and prints each phase's row.
async fn run_rounds(cli: &Cli, plan: &Plan) -> Result<Vec<Medians>, String> {
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>8} {:>11} {:>13} {:>15}",
        "phase", "req/s", "p50", "p99", "errors", "gate RSS", "gate CPU/req", "client CPU/req"
    );
    let mut all = vec![Medians::default(); plan.specs.len()];
    for _ in 0..cli.rounds.max(1) {
        for (spec, m) in plan.specs.iter().zip(&mut all) {
            if !cli.only.is_empty() && !cli.only.iter().any(|o| o == spec.name) {
                continue;
            }
            let p = phase::phase(cli, &spec.door, spec.mode)
                .await
                .map_err(|e| format!("in the {} phase: {e}", spec.name))?;
            let rss = p.rss.map_or("-".to_string(), |r| format!("{r:.0} MiB"));
            let us = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.2} µs"));
            let also: String = p
                .also_cpu_us
                .iter()
                .map(|(n, c)| format!("  {n} {c:.2} µs"))
                .collect();
            println!(
                "{:<10} {:>10.0} {:>7.2}ms {:>7.2}ms {:>8} {:>11} {:>13} {:>15}{also}",
                spec.name,
                p.per_s,
                p.p50_ms,
                p.p99_ms,
                p.errors,
                rss,
                us(p.cpu_us),
                us(p.client_cpu_us)
            );
            m.per_s.push(p.per_s);
            m.p50_ms.push(p.p50_ms);
            m.cpu_us.extend(p.cpu_us);
            m.client_cpu_us.extend(p.client_cpu_us);
            for (name, c) in p.also_cpu_us {
                match m.also.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, v)) => v.push(c),
                    None => m.also.push((name, vec![c])),
                }
            }
        }
    }
    Ok(all)
}

/// Prints each transport against TCP (the first phase).
fn print_transports(plan: &Plan, mut all: Vec<Medians>) {
    let mut med = |i: usize| {
        let m = &mut all[i];
        (
            median(&mut m.per_s),
            median(&mut m.p50_ms),
            median(&mut m.cpu_us),
            median(&mut m.client_cpu_us),
        )
    };
    let (Some(tcp), Some(tcp50), tcp_cpu, tcp_client) = med(0) else {
        return;
    };
    for (i, spec) in plan.specs.iter().enumerate().skip(1) {
        let (Some(r), Some(p50), cpu, client) = med(i) else {
            continue;
        };
        let target = match spec.name {
            "ws" => " (targets: >= 0.8x, p50 <= 1.2x)",
            "tls" => " (target: >= 0.7x)",
            _ => "",
        };
        let against = |c: Option<f64>, t: Option<f64>, what: &str| {
            c.zip(t).map_or(String::new(), |(c, t)| {
                format!(", {what} CPU/req {:.2}x", c / t)
            })
        };
        let cpu = against(cpu, tcp_cpu, "gate") + &against(client, tcp_client, "client");
        println!(
            "{}/tcp: throughput {:.2}x ({r:.0} against {tcp:.0} req/s), p50 {:.2}x{cpu}{target}",
            spec.name,
            r / tcp,
            p50 / tcp50,
        );
    }
}

/// Prints traced against untraced.
fn print_tracing(cli: &Cli, all: Vec<Medians>) {
    let [mut untraced, mut traced] = [all[0].clone(), all[1].clone()];
    if let (Some(u), Some(t)) = (median(&mut untraced.per_s), median(&mut traced.per_s)) {
        let target = if cli.sample_ratio >= 1.0 {
            "target >= 0.85x at 100 % sampling"
        } else {
            "target >= 0.95x at 10 % sampling, failed and slow kept"
        };
        println!(
            "median req/s: untraced {u:.0}, traced {t:.0} (sample ratio {}); \
             traced/untraced throughput: {:.2}x ({target})",
            cli.sample_ratio,
            t / u
        );
    }
    // CPU per request moves less with the machine's load than throughput does: the load
    // client shares the machine, and a busy neighbour slows both phases' clients alike.
    if let (Some(u), Some(t)) = (median(&mut untraced.cpu_us), median(&mut traced.cpu_us)) {
        println!(
            "median gate CPU per request: untraced {u:.2} µs, traced {t:.2} µs; \
             tracing adds {:.2} µs ({:.0} %)",
            t - u,
            (t / u - 1.0) * 100.0
        );
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = if let Some(broker) = &cli.bare_responder {
        bare::respond(broker).await
    } else if let Some(spec) = &cli.hold_worker {
        idle::hold(spec).await
    } else if let Some(n) = cli.connections {
        idle::run(&cli, n).await
    } else if let Some(n) = cli.fanout {
        fanout::run(&cli, n).await
    } else if cli.collector {
        collector::run(&cli).await
    } else if cli.restarts {
        restarts::run(&cli).await
    } else if let Some(rmqttd) = &cli.cluster {
        cluster::run(&cli, rmqttd).await
    } else {
        requests(&cli).await
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The request phases: traced against untraced, the transports against TCP, or counted
/// against uncounted.
async fn requests(cli: &Cli) -> Result<(), String> {
    let plan = if cli.transports {
        plan_transports(cli)?
    } else if cli.metrics_cost {
        plan_metrics(cli)?
    } else if cli.split {
        split::plan(cli)?
    } else {
        plan_tracing(cli)?
    };
    for only in &cli.only {
        if !plan.specs.iter().any(|s| s.name == only) {
            let names: Vec<&str> = plan.specs.iter().map(|s| s.name).collect();
            return Err(format!(
                "--only {only}: the phases are {}",
                names.join(", ")
            ));
        }
    }
    let gate = &plan.specs[0].door;
    println!(
        "load: {} {} clients x {} in flight, {} s per phase, {}, QoS 0, gate {}:{}, {} round(s)",
        cli.clients,
        cli.client,
        cli.inflight,
        cli.seconds,
        cli.handler,
        gate.host,
        gate.port,
        cli.rounds
    );
    let all = run_rounds(cli, &plan).await?;
    if cli.transports {
        print_transports(&plan, all);
    } else if cli.metrics_cost {
        print_metrics_cost(all);
    } else if cli.split {
        split::print(&plan, all);
    } else {
        print_tracing(cli, all);
    }
    Ok(())
}
