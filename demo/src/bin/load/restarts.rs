//! `--restarts`: the demo split over a gate process and two processes of each of `Chat` and
//! `Login`, players joining rooms and asking for their room (`--clients` logged in,
//! `--inflight` requests each), while each instance is restarted in turn as a deployment does
//! (SIGTERM, wait until it has exited, start it again), then one `Login` instance is killed
//! (SIGKILL) and started again. Through the embedded broker and mosquitto (when present), it
//! prints requests/s, p50, p99, the slowest request and the errors in each window, so a reader
//! sees what a deployment costs the players.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo::client::GateClient;
use demo::harness::{DemoProcess, Mosquitto};
use rumqttc::QoS;

use crate::Cli;

/// One request as a player saw it.
struct Seen {
    /// When it was sent.
    at: Instant,
    took: Duration,
    /// The gate's error text, or the client's; `None` when answered.
    error: Option<String>,
}

/// The instances, by module and server id.
const INSTANCES: [(&str, &str); 4] = [
    ("chat", "chat-a"),
    ("chat", "chat-b"),
    ("login", "login-a"),
    ("login", "login-b"),
];

/// Runs the restarts through each broker and prints a table per broker.
pub async fn run(cli: &Cli) -> Result<(), String> {
    println!(
        "restarts: {} logged-in players x {} in flight, Chat/HD_JoinChat and Chat/HD_CurrentRoom \
         alternated, QoS 1; two processes of Chat and two of Login behind one gate",
        cli.clients, cli.inflight
    );
    through(cli, None).await?;
    match Mosquitto::start() {
        Ok(m) => through(cli, Some(m)).await?,
        Err(e) => println!("(not through mosquitto: {e})"),
    }
    Ok(())
}

/// The windows of one run, each with where it starts and ends.
type Windows = Vec<(String, Instant, Instant)>;

async fn through(cli: &Cli, mosquitto: Option<Mosquitto>) -> Result<(), String> {
    let url = mosquitto.as_ref().map_or("embedded".to_string(), |m| {
        format!("mqtt://127.0.0.1:{}", m.port)
    });
    let gate = DemoProcess::start(&["--modules", "gate", "--broker", &url])?;
    let broker = match &mosquitto {
        Some(m) => format!("mqtt://127.0.0.1:{}", m.port),
        None => format!(
            "mqtt://{}",
            gate.broker.clone().ok_or("no embedded broker")?
        ),
    };
    let otlp = format!("http://{}", gate.collector);
    let start = |module: &str, id: &str| DemoProcess::start_instance(module, id, &broker, &otlp);
    let mut running = Vec::new();
    for (module, id) in INSTANCES {
        running.push(start(module, id)?);
    }
    let players =
        crate::door::logged_in(cli.clients, &gate.gate, "restarts", Duration::from_secs(10))
            .await?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = play(cli, &players, &seen, &stop);

    let mut windows: Windows = Vec::new();
    let mut window = |name: String, from: Instant| windows.push((name, from, Instant::now()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    window("steady before".into(), t);
    for (i, (module, id)) in INSTANCES.iter().enumerate() {
        let t = Instant::now();
        running[i].terminate();
        let stopped = t.elapsed();
        running[i] = start(module, id)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        window(
            format!("SIGTERM {id} ({:.1} s to stop)", stopped.as_secs_f64()),
            t,
        );
    }
    let t = Instant::now();
    running[3].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    running[3] = start("login", "login-b")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    window("SIGKILL login-b, back 2 s later".into(), t);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    window("steady after".into(), t);

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let name = if mosquitto.is_some() {
        "mosquitto"
    } else {
        "the embedded broker"
    };
    println!("through {name}:");
    print(&windows, &seen);
    drop(running);
    Ok(())
}

/// Starts `--inflight` request loops per player, each alternating a join and a room query.
fn play(
    cli: &Cli,
    players: &[Arc<GateClient>],
    seen: &Arc<Mutex<Vec<Seen>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, c) in players.iter().enumerate() {
        for k in 0..cli.inflight {
            let (c, seen, stop) = (c.clone(), seen.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut n = k;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (route, body) = match n % 2 {
                        0 => ("Chat/HD_CurrentRoom", String::new()),
                        _ => (
                            "Chat/HD_JoinChat",
                            serde_json::json!({ "roomName": format!("room-{}", (i + n) % 7) })
                                .to_string(),
                        ),
                    };
                    let at = Instant::now();
                    let r = c.request(route, body.as_bytes(), QoS::AtLeastOnce).await;
                    let error = match r {
                        Ok(v) if v["Error"] == "" => None,
                        Ok(v) => Some(format!("{route}: {}", v["Error"])),
                        Err(e) => Some(format!("{route}: {e}")),
                    };
                    mine.push(Seen {
                        at,
                        took: at.elapsed(),
                        error,
                    });
                }
                seen.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            }));
        }
    }
    tasks
}

/// One line per window: requests sent in it, answered per second, p50, p99, the slowest, the
/// errors (and the first of their texts).
fn print(windows: &Windows, seen: &[Seen]) {
    println!(
        "{:<38} {:>8} {:>9} {:>9} {:>9} {:>7}",
        "window", "req/s", "p50", "p99", "max", "errors"
    );
    let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
    let mut first_errors = Vec::new();
    for (name, from, to) in windows {
        let mut took: Vec<Duration> = Vec::new();
        let mut errors = 0;
        for s in seen.iter().filter(|s| s.at >= *from && s.at < *to) {
            match &s.error {
                None => took.push(s.took),
                Some(e) => {
                    errors += 1;
                    if first_errors.len() < 5 {
                        first_errors.push(format!("{name}: {e}"));
                    }
                }
            }
        }
        took.sort();
        let secs = to.duration_since(*from).as_secs_f64().max(1e-9);
        let at = |q: usize| took.get(q).copied().unwrap_or_default();
        println!(
            "{:<38} {:>8.0} {:>9} {:>9} {:>9} {:>7}",
            name,
            took.len() as f64 / secs,
            ms(at(took.len() / 2)),
            ms(at(took.len() * 99 / 100)),
            ms(took.last().copied().unwrap_or_default()),
            errors
        );
    }
    for e in first_errors {
        println!("  {e}");
    }
}
