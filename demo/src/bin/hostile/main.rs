//! `cargo build --release -p demo --bins && ./target/release/hostile`: the attacks of the
//! "hostile clients" table, on the gate, (`ws`) on its WebSocket and TLS listeners, and
//! (`doors`) on the viewer, the collector and the embedded broker, each against a fresh demo
//! process started beside this binary; for each, the demo's resident memory before and at its
//! peak during the attack, and a normal client's (plain MQTT over TCP) `HD_JoinChat` p50 before
//! and during it, with its failed requests, and the connections the gate closed when the attack
//! counts them. The bar: memory grows by under 300 MiB, the p50 stays within 1.2x, no request
//! fails.

mod doors;
mod ws;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use demo::client::GateClient;
use demo::harness::{median, rss_mib, DemoProcess, SelfSigned};
use demo::raw::{connect_from, connect_packet, publish_header};
use rumqttc::QoS;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Hostile clients against the demo, measured.
#[derive(Debug, Parser)]
#[command(name = "hostile")]
struct Cli {
    /// Seconds each measurement lasts (before, and during the attack).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Run only the attacks whose name holds this text (e.g. `WebSocket`, `TLS`).
    #[arg(long)]
    only: Option<String>,
}

/// Something an attack runs until told to stop.
type Attack = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts an attack on a target.
type Start = fn(Target) -> Attack;

/// What an attack needs to know about its target.
#[derive(Clone)]
struct Target {
    gate: (String, u16),
    viewer: String,
    collector: String,
    broker: Option<String>,
    /// The gate's WebSocket listener, `host:port` (WSS when TLS is on).
    ws: Option<String>,
    /// The gate's MQTT over TLS listener, `host:port`, when TLS is on.
    tls: Option<String>,
    /// Connections the gate closed, counted by the attacks that count them.
    closed: Arc<ws::Closed>,
    stop: Arc<AtomicBool>,
}

impl Target {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A raw TCP connection to `addr` from the loopback address `from`.
async fn raw_from(from: IpAddr, addr: &str) -> Option<TcpStream> {
    connect_from(from, addr.parse().ok()?).await.ok()
}

/// A client of the gate, logged in as `id`.
async fn logged_in(t: &Target, id: &str) -> Option<GateClient> {
    let c = GateClient::connect(id, &t.gate.0, t.gate.1).await.ok()?;
    let body = serde_json::json!({"userName": id, "passWord": "pw"}).to_string();
    c.request("Login/HD_Login", body.as_bytes(), QoS::AtMostOnce)
        .await
        .ok()?;
    Some(c)
}

/// The normal client's `HD_JoinChat` p50, in ms, over `d`, and how many of its requests
/// failed (an error, no reply, or an error reply).
async fn p50(c: &GateClient, d: Duration) -> (f64, usize) {
    let (mut lat, mut failed) = (Vec::new(), 0);
    let until = Instant::now() + d;
    while Instant::now() < until {
        let t = Instant::now();
        match c
            .request(
                "Chat/HD_JoinChat",
                br#"{"roomName":"normal"}"#,
                QoS::AtMostOnce,
            )
            .await
        {
            Ok(r) if r["Error"].as_str().is_none_or(str::is_empty) => {
                lat.push(t.elapsed().as_secs_f64() * 1000.0)
            }
            _ => failed += 1,
        }
    }
    (median(&mut lat).unwrap_or(f64::NAN), failed)
}

/// The attacks, by name, with whether their demo runs with TLS on: on the gate here, on its
/// WebSocket and TLS listeners in `ws`, on the other doors in `doors`.
fn attacks() -> Vec<(&'static str, Start, bool)> {
    let on = |tls: bool| move |(name, start): (&'static str, Start)| (name, start, tls);
    let plain = gate_attacks()
        .into_iter()
        .chain(ws::attacks())
        .map(on(false));
    let tls = ws::tls_attacks().into_iter().map(on(true));
    let doors = doors::attacks().into_iter().map(on(false));
    plain.chain(tls).chain(doors).collect()
}

/// The attacks on the gate's MQTT over TCP listener.
fn gate_attacks() -> Vec<(&'static str, Start)> {
    vec![
        ("requests to unique 30 KB module names", |t| {
            Box::pin(async move {
                let long = "M".repeat(30_000);
                let mut tasks = Vec::new();
                for i in 0..4 {
                    let (t, long) = (t.clone(), long.clone());
                    tasks.push(tokio::spawn(async move {
                        let Some(c) = logged_in(&t, &format!("names{i}")).await else {
                            return;
                        };
                        let mut n = 0u64;
                        while t.running() {
                            n += 1;
                            let _ = c
                                .request(&format!("{long}{i}x{n}/HD_x"), b"{}", QoS::AtMostOnce)
                                .await;
                        }
                    }));
                }
                join(tasks).await;
            })
        }),
        (
            "4 connections sending 500 KB requests, never reading",
            |t| {
                Box::pin(async move {
                    let mut tasks = Vec::new();
                    for i in 0..4 {
                        let t = t.clone();
                        tasks.push(tokio::spawn(async move {
                            let gate = format!("{}:{}", t.gate.0, t.gate.1);
                            let Some(mut s) = raw_from([127, 0, 0, 2].into(), &gate).await else {
                                return;
                            };
                            let _ = s.write_all(&connect_packet(&format!("big{i}"), 0)).await;
                            let body = format!(
                                r#"{{"userName":"{}","passWord":"pw"}}"#,
                                "n".repeat(500_000)
                            );
                            for n in 0..50 {
                                if !t.running() {
                                    break;
                                }
                                let mut p =
                                    publish_header(&format!("Login/HD_Login/{n}"), body.len());
                                p.extend(body.as_bytes());
                                let write = s.write_all(&p);
                                if tokio::time::timeout(Duration::from_millis(200), write)
                                    .await
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            while t.running() {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }));
                    }
                    join(tasks).await;
                })
            },
        ),
        (
            "300 connections: a 1 MiB PUBLISH minus its last byte, keepalive 0",
            |t| {
                Box::pin(async move {
                    let gate = format!("{}:{}", t.gate.0, t.gate.1);
                    let mut held = Vec::new();
                    let payload = vec![b'x'; 1_000_000];
                    for i in 0..300 {
                        if !t.running() {
                            break;
                        }
                        let Some(mut s) = raw_from([127, 0, 0, 3].into(), &gate).await else {
                            continue;
                        };
                        let mut p = connect_packet(&format!("part{i}"), 0);
                        p.extend(publish_header("Chat/HD_JoinChat/1", payload.len()));
                        p.extend(&payload[..payload.len() - 1]);
                        let _ =
                            tokio::time::timeout(Duration::from_millis(100), s.write_all(&p)).await;
                        held.push(s);
                    }
                    while t.running() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            },
        ),
        ("1,000 idle keepalive-0 connections from one address", |t| {
            Box::pin(async move {
                let gate = format!("{}:{}", t.gate.0, t.gate.1);
                let mut held = Vec::new();
                for i in 0..1000 {
                    if let Some(mut s) = raw_from([127, 0, 0, 4].into(), &gate).await {
                        let _ = s.write_all(&connect_packet(&format!("idle{i}"), 0)).await;
                        held.push(s);
                    }
                }
                while t.running() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        }),
        ("4 clients flooding traced requests", |t| {
            Box::pin(async move {
                let mut tasks = Vec::new();
                for i in 0..4 {
                    let t = t.clone();
                    tasks.push(tokio::spawn(async move {
                        let Some(c) = logged_in(&t, &format!("flood{i}")).await else {
                            return;
                        };
                        let c = Arc::new(c);
                        let mut inner = Vec::new();
                        for _ in 0..8 {
                            let (c, t) = (c.clone(), t.clone());
                            inner.push(tokio::spawn(async move {
                                while t.running() {
                                    let _ = c
                                        .request("Chat/HD_CurrentRoom", b"{}", QoS::AtMostOnce)
                                        .await;
                                }
                            }));
                        }
                        join(inner).await;
                    }));
                }
                join(tasks).await;
            })
        }),
    ]
}

async fn join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Starts a demo (with TLS on when `tls`), measures before, runs `attack` and measures during;
/// one table row.
async fn row(name: &str, attack: Start, tls: bool, seconds: u64) -> Result<String, String> {
    // Declared before the demo, so its files outlive it.
    let cert = tls.then(|| SelfSigned::new("hostile")).transpose()?;
    let mut args = vec!["--broker".to_string(), "embedded".to_string()];
    args.extend(cert.iter().flat_map(SelfSigned::demo_flags));
    let demo = DemoProcess::start(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let (host, port) = demo
        .gate
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or("bad gate address")?;
    let t = Target {
        gate: (host, port),
        viewer: demo.viewer.clone(),
        collector: demo.collector.clone(),
        broker: demo.broker.clone(),
        ws: demo.ws.clone(),
        tls: demo.tls.clone(),
        closed: Arc::default(),
        stop: Arc::default(),
    };
    let normal = logged_in(&t, "normal")
        .await
        .ok_or("the normal client cannot log in")?;
    let d = Duration::from_secs(seconds);
    let (p50_before, _) = p50(&normal, d).await;
    let rss_before = rss_mib(demo.pid()).unwrap_or(f64::NAN);
    let running = tokio::spawn(attack(t.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = demo.pid();
    let sampler = tokio::spawn(async move {
        let mut most = 0f64;
        let until = Instant::now() + d;
        while Instant::now() < until {
            most = most.max(rss_mib(pid).unwrap_or(0.0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        most
    });
    let (p50_during, failed) = p50(&normal, d).await;
    let rss_during = sampler.await.unwrap_or(f64::NAN);
    t.stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    let ratio = p50_during / p50_before;
    let grown = rss_during - rss_before;
    let closed = t.closed.shown();
    let verdict = match (grown < 300.0, ratio <= 1.2, failed == 0) {
        (true, true, true) => "ok".to_string(),
        (g, r, f) => [(!g, "memory"), (!r, "p50"), (!f, "failures")]
            .iter()
            .filter(|(over, _)| *over)
            .map(|(_, what)| *what)
            .collect::<Vec<_>>()
            .join(", "),
    };
    Ok(format!(
        "{name:<62} {rss_before:>7.0} {rss_during:>7.0} {grown:>6.0} {p50_before:>8.1} {p50_during:>8.1} {ratio:>6.2}x {failed:>6} {closed:>7} {verdict}"
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    println!("{} s before and {} s during each attack; RSS in MiB, p50 of a normal client's HD_JoinChat in ms", cli.seconds, cli.seconds);
    println!("closed: connections the gate closed during the attack (-: not counted)");
    println!(
        "{:<62} {:>7} {:>7} {:>6} {:>8} {:>8} {:>7} {:>6} {:>7}",
        "attack", "RSS", "RSS max", "grown", "p50", "p50 atk", "ratio", "failed", "closed"
    );
    let mut failed = false;
    let chosen = attacks()
        .into_iter()
        .filter(|(name, _, _)| cli.only.as_deref().is_none_or(|o| name.contains(o)));
    for (name, attack, tls) in chosen {
        match row(name, attack, tls, cli.seconds).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{name}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
