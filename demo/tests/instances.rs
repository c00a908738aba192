//! Two instances of the demo's `Login` module, each a process of its own behind the gate's
//! embedded broker, with players joining rooms (every join calls `Login/track`, which the demo
//! declares idempotent): one instance killed with SIGKILL under that load costs no join, since
//! the calls that were waiting on it are sent again to the other.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo::client::GateClient;
use demo::harness::DemoProcess;
use rumqttc::QoS;

const PLAYERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_instance_killed_under_load_costs_no_join() {
    let exe = Path::new(env!("CARGO_BIN_EXE_demo"));
    let front = DemoProcess::start_at(
        exe,
        &["--modules", "gate,chat", "--broker", "embedded"],
        false,
    )
    .expect("gate and chat");
    let broker = format!("mqtt://{}", front.broker.clone().expect("embedded broker"));
    let login = |id: &str| {
        DemoProcess::start_at(
            exe,
            &["--modules", "login", "--broker", &broker, "--server-id", id],
            true,
        )
        .expect("a Login instance")
    };
    let _a = login("login-a");
    let mut b = login("login-b");
    let port: u16 = front
        .gate
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("gate port");

    // Players log in (answered by either instance) while both run.
    let mut players = Vec::new();
    for i in 0..PLAYERS {
        let c = GateClient::connect(&format!("player-{i}"), "127.0.0.1", port)
            .await
            .expect("connect");
        let body = serde_json::json!({"userName": format!("p{i}"), "passWord": "pw"}).to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The gate hears of the Login instances a moment after they are ready.
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

    // Joins run back to back on every connection; one instance is killed in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let (ok, after_kill) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let mut tasks = Vec::new();
    for (i, c) in players.iter().enumerate() {
        let (c, stop, killed) = (c.clone(), stop.clone(), killed.clone());
        let (ok, after_kill, errors, slowest) = (
            ok.clone(),
            after_kill.clone(),
            errors.clone(),
            slowest.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let body = serde_json::json!({ "roomName": format!("room-{i}-{}", n % 3) });
                let t = Instant::now();
                let r = c
                    .request(
                        "Chat/HD_JoinChat",
                        body.to_string().as_bytes(),
                        QoS::AtLeastOnce,
                    )
                    .await;
                let took = t.elapsed();
                let mut s = slowest.lock().unwrap_or_else(|p| p.into_inner());
                *s = (*s).max(took);
                drop(s);
                match r {
                    Ok(r) if r["Error"] == "" => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if killed.load(Ordering::SeqCst) {
                            after_kill.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    other => errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{other:?}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = ok.load(Ordering::SeqCst);
    b.kill();
    killed.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("player task");
    }

    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (ok, after_kill) = (ok.load(Ordering::SeqCst), after_kill.load(Ordering::SeqCst));
    let slowest = *slowest.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "joins: {ok} answered ({before} before the kill, {after_kill} after), {} errors, slowest {slowest:?}",
        errors.len()
    );
    assert!(before > 0, "no joins before the kill");
    assert!(after_kill > 0, "no joins after the kill");
    assert!(errors.is_empty(), "joins failed: {errors:?}");
    // The calls waiting on the killed instance were sent again at once, not at their deadline.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest join took {slowest:?}"
    );
}
