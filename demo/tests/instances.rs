//! Several instances of the demo's modules, each a process of its own behind one gate and one
//! broker, with players joining rooms (every join calls `Login/track`, which the demo declares
//! idempotent) and asking for their room: an instance killed with SIGKILL costs no join, since
//! the calls waiting on it are sent again to another instance; instances restarted in turn with
//! SIGTERM cost no request at all, through the embedded broker and through mosquitto.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo::client::GateClient;
use demo::harness::{DemoProcess, Mosquitto};
use rumqttc::QoS;

const PLAYERS: usize = 40;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_demo"))
}

/// A process running `modules` as server `id`, connected to `broker`.
fn instance(modules: &str, id: &str, broker: &str) -> DemoProcess {
    DemoProcess::start_at(
        exe(),
        &["--modules", modules, "--broker", broker, "--server-id", id],
        true,
    )
    .unwrap_or_else(|e| panic!("{id}: {e}"))
}

/// Players connected to the gate at `gate` and logged in.
async fn players(gate: &str) -> Vec<Arc<GateClient>> {
    let port: u16 = gate
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("gate port");
    let mut players = Vec::new();
    for i in 0..PLAYERS {
        let c = GateClient::connect(&format!("player-{i}"), "127.0.0.1", port)
            .await
            .expect("connect");
        let body = serde_json::json!({"userName": format!("p{i}"), "passWord": "pw"}).to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The gate hears of the instances a moment after they are ready.
            let r = c
                .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
                .await
                .expect("login reply");
            if r["Error"] == "" {
                break;
            }
            assert!(Instant::now() < deadline, "login: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        players.push(Arc::new(c));
    }
    players
}

/// What the players saw while they played.
#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    errors: Mutex<Vec<String>>,
    slowest: Mutex<Duration>,
}

/// Players joining rooms and asking for their room back to back until [`Load::stop`].
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(players: &[Arc<GateClient>]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let tasks = players
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (c, stop, tally) = (c.clone(), stop.clone(), tally.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let (route, body) = match n % 2 {
                            0 => ("Chat/HD_CurrentRoom", String::new()),
                            _ => (
                                "Chat/HD_JoinChat",
                                serde_json::json!({ "roomName": format!("room-{i}-{}", n % 3) })
                                    .to_string(),
                            ),
                        };
                        let t = Instant::now();
                        let r = c.request(route, body.as_bytes(), QoS::AtLeastOnce).await;
                        let took = t.elapsed();
                        {
                            let mut s = tally.slowest.lock().unwrap_or_else(|p| p.into_inner());
                            *s = (*s).max(took);
                        }
                        match r {
                            Ok(r) if r["Error"] == "" => {
                                tally.answered.fetch_add(1, Ordering::SeqCst);
                            }
                            other => tally
                                .errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{route}: {other:?}")),
                        }
                    }
                })
            })
            .collect();
        Load { stop, tally, tasks }
    }

    fn answered(&self) -> usize {
        self.tally.answered.load(Ordering::SeqCst)
    }

    /// Stops the players; what they saw: answers, errors, the slowest request.
    async fn stop(self) -> (usize, Vec<String>, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("player task");
        }
        let errors = self.tally.errors.lock().unwrap_or_else(|p| p.into_inner());
        let slowest = *self.tally.slowest.lock().unwrap_or_else(|p| p.into_inner());
        let answered = self.tally.answered.load(Ordering::SeqCst);
        (answered, errors.clone(), slowest)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_instance_killed_under_load_costs_no_join() {
    let front = DemoProcess::start_at(
        exe(),
        &["--modules", "gate,chat", "--broker", "embedded"],
        false,
    )
    .expect("gate and chat");
    let broker = format!("mqtt://{}", front.broker.clone().expect("embedded broker"));
    let _a = instance("login", "login-a", &broker);
    let mut b = instance("login", "login-b", &broker);
    let players = players(&front.gate).await;

    let load = Load::start(&players);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = load.answered();
    b.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (answered, errors, slowest) = load.stop().await;
    println!(
        "SIGKILL: {answered} answered ({before} before the kill), {} errors, slowest {slowest:?}",
        errors.len()
    );
    assert!(before > 0, "nothing answered before the kill");
    assert!(answered > before, "nothing answered after the kill");
    assert!(errors.is_empty(), "requests failed: {errors:?}");
    // The calls waiting on the killed instance were sent again at once, not at their deadline.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request took {slowest:?}"
    );
}

/// Two instances of `Chat` and two of `Login` behind a gate on `broker` (the gate's embedded
/// one when `None`); each restarted in turn with SIGTERM while the players play.
async fn rolling_restart(mosquitto: Option<Mosquitto>) {
    let url = mosquitto.as_ref().map_or("embedded".to_string(), |m| {
        format!("mqtt://127.0.0.1:{}", m.port)
    });
    let front = DemoProcess::start_at(exe(), &["--modules", "gate", "--broker", &url], false)
        .expect("gate");
    let broker = match &mosquitto {
        Some(m) => format!("mqtt://127.0.0.1:{}", m.port),
        None => format!("mqtt://{}", front.broker.clone().expect("embedded broker")),
    };
    let ids = [
        ("chat", "chat-a"),
        ("chat", "chat-b"),
        ("login", "login-a"),
        ("login", "login-b"),
    ];
    let mut running: Vec<DemoProcess> =
        ids.iter().map(|(m, id)| instance(m, id, &broker)).collect();
    let players = players(&front.gate).await;

    let load = Load::start(&players);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, (module, id)) in ids.iter().enumerate() {
        let before = load.answered();
        let t = Instant::now();
        running[i].terminate();
        let stopped = t.elapsed();
        running[i] = instance(module, id, &broker);
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "restarted {id}: stopped in {stopped:?}, back in {:?}; {} answered meanwhile",
            t.elapsed(),
            load.answered() - before
        );
    }
    let (answered, errors, slowest) = load.stop().await;
    let broker_name = if mosquitto.is_some() {
        "mosquitto"
    } else {
        "embedded"
    };
    println!(
        "{broker_name}: {answered} answered, {} errors, slowest {slowest:?}",
        errors.len()
    );
    assert!(answered > 0);
    assert!(errors.is_empty(), "requests failed: {errors:?}");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_restarted_in_turn_cost_no_request_through_the_embedded_broker() {
    rolling_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_restarted_in_turn_cost_no_request_through_mosquitto() {
    rolling_restart(Some(
        Mosquitto::start().expect("mosquitto (cargo xtask test installs it)"),
    ))
    .await;
}
