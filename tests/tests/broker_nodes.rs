//! A process given several broker nodes (a cluster's URLs) whose node dies: it takes the next
//! node at once, calls it makes meanwhile wait for the new connection instead of failing, and
//! replies to calls it was serving go out on the new connection while their callers still
//! wait. Two real mosquitto brokers stand for two nodes of a cluster: the second bridges every
//! topic to the first over MQTT 5 (reply topics and correlation data cross), and the first is
//! killed with SIGKILL as a crash would.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::mosquitto::Mosquitto;
use common::{config_on, free_port, wait_for};
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};

/// A module that answers after a while and counts the long calls it started.
pub struct Slow;

/// Long calls (500 ms and more) of `Slow/wait` started: the first test's (the other test,
/// which runs beside it, makes short ones).
static STARTED: AtomicUsize = AtomicUsize::new(0);

#[rpc_module]
impl Slow {
    #[rpc]
    async fn wait(&self, _session: Session, ms: u64) -> Result<u64, String> {
        if ms >= 500 {
            STARTED.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

/// Two brokers, the second bridging every topic both ways to the first.
fn two_nodes() -> (Mosquitto, Mosquitto) {
    let first = Mosquitto::start();
    let bridge = format!(
        "connection to-first\naddress 127.0.0.1:{}\ntopic # both 1\n\
         bridge_protocol_version mqttv50\ntry_private true\ncleansession true\nrestart_timeout 1",
        first.port
    );
    let second = Mosquitto::start_with(free_port(), &bridge);
    (first, second)
}

/// Builds and starts an app with `c`, running `Slow` or nothing.
async fn start(mut c: Config, with_slow: bool) -> App {
    // Long enough for a failover: calls made while reconnecting wait this long at most.
    c.broker.connect_wait_ms = 3000;
    let mut b = App::builder().config(c);
    if with_slow {
        b = b.module(|_| Slow);
    }
    let app = b.build().expect("app");
    app.start().await.expect("starts");
    app
}

/// Waits until `app` knows that server `sid` runs `Slow` (across the bridge, it may take a
/// moment for the bridge to connect).
async fn await_slow(app: &App, sid: &str) {
    wait_for(
        &format!("presence of {sid}"),
        Duration::from_secs(10),
        || {
            app.cluster()
                .get(sid)
                .is_some_and(|m| m.iter().any(|x| x == "Slow"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_being_served_when_the_callees_node_dies_is_answered_from_the_next_node() {
    let (mut first, second) = two_nodes();
    // The caller only knows the second node; the callee has the first node first.
    let caller = start(config_on(&[second.port], "caller", 3000), false).await;
    let callee = start(config_on(&[first.port, second.port], "callee", 3000), true).await;
    await_slow(&caller, "callee").await;
    let before = STARTED.load(Ordering::SeqCst);

    let call = {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .call::<_, u64>("Slow", "wait", &Session::default(), (800u64,))
                .await
        })
    };
    wait_for(
        "the callee to start serving",
        Duration::from_secs(3),
        || STARTED.load(Ordering::SeqCst) > before,
    )
    .await;
    first.kill();
    // The callee's connection died with its node while it served the call: it moves to the
    // second node and the reply goes out there, to the caller still waiting.
    let ms = call
        .await
        .expect("call task")
        .expect("answered across the failover");
    assert_eq!(ms, 800);
    assert_eq!(
        STARTED.load(Ordering::SeqCst),
        before + 1,
        "the call was served once"
    );
    let stats = callee.broker_stats().expect("stats");
    assert_eq!((stats.connects, stats.connection_errors), (2, 1));
    callee.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_while_a_process_changes_node_wait_for_the_next_node() {
    let (mut first, second) = two_nodes();
    // Between the two, a node that takes connections and drops them after 300 ms without a
    // word: the caller is without a connection for that long after the first node dies.
    let slow_node = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let slow_port = slow_node.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for conn in slow_node.incoming() {
            std::thread::sleep(Duration::from_millis(300));
            drop(conn);
        }
    });
    let callee = start(config_on(&[second.port], "callee-2", 3000), true).await;
    let nodes = [first.port, slow_port, second.port];
    let caller = start(config_on(&nodes, "caller-2", 3000), false).await;
    await_slow(&caller, "callee-2").await;
    let ms: u64 = caller
        .call("Slow", "wait", &Session::default(), (1u64,))
        .await
        .expect("across the bridge");
    assert_eq!(ms, 1);

    first.kill();
    // While the caller is without a connection its calls wait for the next node instead of
    // failing, are sent once there, and are answered.
    wait_for(
        "the caller to see its node go",
        Duration::from_secs(3),
        || !caller.broker_stats().expect("stats").connected,
    )
    .await;
    let calls = (0..5u64).map(|i| {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .call::<_, u64>("Slow", "wait", &Session::default(), (10 + i,))
                .await
        })
    });
    for (i, call) in calls.collect::<Vec<_>>().into_iter().enumerate() {
        let ms = call
            .await
            .expect("call task")
            .expect("sent after the failover");
        assert_eq!(ms, 10 + i as u64);
    }
    let stats = caller.broker_stats().expect("stats");
    assert_eq!((stats.connects, stats.connection_errors), (2, 2));
    caller.shutdown().await;
    callee.shutdown().await;
}
