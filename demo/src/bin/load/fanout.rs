//! `load --fanout N`: one room of N members; `--senders` of them talk (`Chat/HD_Say`, one
//! message in flight each, waiting for the reply and its own copy), and every member counts the `Chat/OnSay`
//! messages it receives. The floor, in the same run and alternated with it: the same fan-out
//! through mosquitto with the same client library (rumqttc), N subscribers of one topic, the
//! same senders publishing a payload of the same size and each waiting for its own copy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use demo::client::rumqttc_client;
use demo::harness::{cpu_seconds, median, DemoProcess, Mosquitto};
use rumqttc::{Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;

use crate::door::{Door, Kind};
use crate::Cli;

/// The text every sender says.
const TEXT: &str = "a message of the size players type in a chat room";

/// What one fan-out phase measured.
struct Fanned {
    /// Messages received by members per second, all members together.
    deliveries_per_s: f64,
    /// Messages sent per second, all senders together.
    sent_per_s: f64,
    /// Sends that failed while measuring.
    errors: u64,
    /// CPU time of the server process (gate or broker) per delivered message, µs.
    cpu_us: Option<f64>,
    /// Bytes of one delivered message's payload.
    payload: usize,
}

/// The counters a phase's tasks share.
#[derive(Default)]
struct Counts {
    measuring: AtomicBool,
    stop: AtomicBool,
    delivered: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
    payload: AtomicU64,
}

/// Lets the phase warm up for a second, measures `seconds`, stops its tasks.
async fn measure(counts: &Counts, seconds: u64, pid: Option<u32>) -> (Duration, Option<f64>) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    counts.measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let cpu_before = pid.and_then(cpu_seconds);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counts.measuring.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let cpu = cpu_before
        .zip(pid.and_then(cpu_seconds))
        .map(|(a, b)| b - a);
    counts.stop.store(true, Ordering::SeqCst);
    (elapsed, cpu)
}

impl Fanned {
    fn from(counts: &Counts, elapsed: Duration, cpu: Option<f64>) -> Fanned {
        let delivered = counts.delivered.load(Ordering::SeqCst) as f64;
        Fanned {
            deliveries_per_s: delivered / elapsed.as_secs_f64(),
            sent_per_s: counts.sent.load(Ordering::SeqCst) as f64 / elapsed.as_secs_f64(),
            errors: counts.errors.load(Ordering::SeqCst),
            cpu_us: cpu.filter(|_| delivered > 0.0).map(|c| c * 1e6 / delivered),
            payload: counts.payload.load(Ordering::SeqCst) as usize,
        }
    }
}

/// The room through the gate: N members log in and join, senders say, all count `OnSay`.
async fn through_gate(
    cli: &Cli,
    door: &Door,
    members: usize,
    round: usize,
) -> Result<Fanned, String> {
    let room = format!("fanout-{round}");
    let mut clients = Vec::with_capacity(members);
    for i in 0..members {
        let c = door.connect(&format!("fan-{round}-{i}")).await?;
        let login = serde_json::json!({"userName": format!("fan{round}x{i}"), "passWord": "pw"});
        let join = serde_json::json!({ "roomName": room });
        for (handler, body) in [("Login/HD_Login", login), ("Chat/HD_JoinChat", join)] {
            let r = c
                .request(handler, body.to_string().as_bytes(), QoS::AtMostOnce)
                .await
                .map_err(|e| format!("member {i}: {handler}: {e}"))?;
            if r["Error"] != "" {
                return Err(format!("member {i}: {handler}: {r}"));
            }
        }
        clients.push(Arc::new(c));
    }
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    let mut own_copies = Vec::with_capacity(members);
    for (i, c) in clients.iter().enumerate() {
        let (c, counts) = (c.clone(), counts.clone());
        let own = Arc::new(Notify::new());
        own_copies.push(own.clone());
        let mine = format!("\"from\":\"fan{round}x{i}\"");
        tasks.push(tokio::spawn(async move {
            while !counts.stop.load(Ordering::Relaxed) {
                let Some((topic, body)) = c.message(Duration::from_millis(100)).await else {
                    continue;
                };
                if topic != "Chat/OnSay" {
                    continue;
                }
                if counts.measuring.load(Ordering::Relaxed) {
                    counts.delivered.fetch_add(1, Ordering::Relaxed);
                    counts.payload.store(body.len() as u64, Ordering::Relaxed);
                }
                if String::from_utf8_lossy(&body).contains(&mine) {
                    own.notify_one();
                }
            }
        }));
    }
    let say = serde_json::json!({ "text": TEXT }).to_string();
    // Each sender waits for the reply and for its own copy, as the floor's senders do.
    for (c, own) in clients.iter().zip(&own_copies).take(cli.senders) {
        let (c, own, counts, say) = (c.clone(), own.clone(), counts.clone(), say.clone());
        tasks.push(tokio::spawn(async move {
            while !counts.stop.load(Ordering::Relaxed) {
                let r = c
                    .request("Chat/HD_Say", say.as_bytes(), QoS::AtMostOnce)
                    .await;
                let ok = matches!(&r, Ok(v) if v["Error"] == "")
                    && tokio::time::timeout(Duration::from_secs(10), own.notified())
                        .await
                        .is_ok();
                if counts.measuring.load(Ordering::Relaxed) {
                    let n = if ok { &counts.sent } else { &counts.errors };
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let (elapsed, cpu) = measure(&counts, cli.seconds, door.pid).await;
    for t in tasks {
        let _ = t.await;
    }
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.disconnect().await;
        }
    }
    Ok(Fanned::from(&counts, elapsed, cpu))
}

/// The floor: N rumqttc subscribers of one topic on mosquitto, the first `senders` of them
/// publishing `payload` bytes and each waiting for its own copy before the next.
async fn through_mosquitto(
    cli: &Cli,
    broker: &Mosquitto,
    members: usize,
    payload: usize,
    round: usize,
) -> Result<Fanned, String> {
    let topic = format!("room/fanout-{round}");
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::with_capacity(members);
    let mut tasks = Vec::new();
    for i in 0..members {
        let opts = MqttOptions::new(format!("floor-{round}-{i}"), "127.0.0.1", broker.port);
        // The same client settings as the gate's members.
        let (client, mut eventloop) = rumqttc_client(opts);
        client
            .subscribe(&topic, QoS::AtMostOnce)
            .await
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        // Wait for the SUBACK so no sender publishes before everyone listens.
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("subscriber {i}: {e}")),
            }
        }
        let own = Arc::new(Notify::new());
        let tag = format!("{i:06}");
        let (counts2, own2, tag2) = (counts.clone(), own.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            while !counts2.stop.load(Ordering::Relaxed) {
                let polled =
                    tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
                match polled {
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if counts2.measuring.load(Ordering::Relaxed) {
                            counts2.delivered.fetch_add(1, Ordering::Relaxed);
                            counts2
                                .payload
                                .store(p.payload.len() as u64, Ordering::Relaxed);
                        }
                        if p.payload.starts_with(tag2.as_bytes()) {
                            own2.notify_one();
                        }
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(_)) => return,
                }
            }
        }));
        clients.push((client, own, tag));
    }
    for (client, own, tag) in clients.iter().take(cli.senders) {
        let (client, own, counts) = (client.clone(), own.clone(), counts.clone());
        let mut body = tag.clone().into_bytes();
        body.resize(payload.max(tag.len()), b'x');
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            while !counts.stop.load(Ordering::Relaxed) {
                let sent = client
                    .publish(&topic, QoS::AtMostOnce, false, body.clone())
                    .await;
                let back = tokio::time::timeout(Duration::from_secs(10), own.notified()).await;
                if counts.measuring.load(Ordering::Relaxed) {
                    if sent.is_ok() && back.is_ok() {
                        counts.sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let (elapsed, cpu) = measure(&counts, cli.seconds, Some(broker.pid())).await;
    for t in tasks {
        let _ = t.await;
    }
    for (client, _, _) in clients {
        let _ = client.disconnect().await;
    }
    Ok(Fanned::from(&counts, elapsed, cpu))
}

/// Prints one phase's row.
fn row(name: &str, f: &Fanned) {
    let cpu = f.cpu_us.map_or("-".to_string(), |c| format!("{c:.2} µs"));
    println!(
        "{name:<10} {:>14.0} {:>10.0} {:>8} {:>9} {:>16}",
        f.deliveries_per_s, f.sent_per_s, f.errors, f.payload, cpu
    );
}

/// Runs the fan-out comparison.
pub async fn run(cli: &Cli, members: usize) -> Result<(), String> {
    if members == 0 || cli.senders == 0 || cli.senders > members {
        return Err("--fanout needs at least one member and 1..=members --senders".into());
    }
    let (_demo, door) = match &cli.gate {
        Some(g) => {
            println!("(a running demo says at most its --say-per-second per sender)");
            (None, Door::parse(g, Kind::Tcp, cli.gate_pid)?)
        }
        None => {
            let ratio = cli.sample_ratio.to_string();
            let d = DemoProcess::start(&["--sample-ratio", &ratio, "--say-per-second", "1000000"])?;
            let door = Door::parse(&d.gate, Kind::Tcp, Some(d.pid()))?;
            (Some(d), door)
        }
    };
    let broker = match Mosquitto::start() {
        Ok(b) => Some(b),
        Err(e) => {
            println!("no floor: {e}");
            None
        }
    };
    println!(
        "fan-out: a room of {members}, {} senders with one message in flight each, {} s per phase, {} round(s), sample ratio {}",
        cli.senders, cli.seconds, cli.rounds, cli.sample_ratio
    );
    println!(
        "{:<10} {:>14} {:>10} {:>8} {:>9} {:>16}",
        "phase", "deliveries/s", "sent/s", "errors", "payload", "server CPU/deliv"
    );
    let (mut gate_rates, mut floor_rates) = (Vec::new(), Vec::new());
    let mut payload = TEXT.len() + 100;
    for round in 0..cli.rounds.max(1) {
        if cli.only.is_empty() || cli.only.iter().any(|o| o == "mqrs") {
            let f = through_gate(cli, &door, members, round).await?;
            row("mqrs", &f);
            if f.payload > 0 {
                payload = f.payload;
            }
            gate_rates.push(f.deliveries_per_s);
        }
        if let Some(b) = broker
            .as_ref()
            .filter(|_| cli.only.is_empty() || cli.only.iter().any(|o| o == "mosquitto"))
        {
            let f = through_mosquitto(cli, b, members, payload, round).await?;
            row("mosquitto", &f);
            floor_rates.push(f.deliveries_per_s);
        }
    }
    if let (Some(g), Some(f)) = (median(&mut gate_rates), median(&mut floor_rates)) {
        println!(
            "median deliveries/s: mqrs {g:.0}, mosquitto {f:.0}; mqrs/mosquitto {:.2}x (target >= 0.5x)",
            g / f
        );
    }
    Ok(())
}
