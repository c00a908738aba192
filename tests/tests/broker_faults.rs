//! What happens to calls between processes when the broker is not there: unreachable at start
//! (a clear error, retries with backoff, never a busy loop, then it joins), and restarted
//! mid-traffic (calls in flight fail within their deadline with a clear error; after the
//! reconnection subscriptions and presence are restored and calls succeed again). The broker
//! is a real mosquitto, killed with SIGKILL as a crash would. A process serving as many calls
//! from others, or bytes of them, as its settings allow answers the next "unavailable" at once.

mod common;

use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::{config_on, free_port, wait_for};
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session};

/// A module that answers after a while.
pub struct Wait;

#[rpc_module]
impl Wait {
    #[rpc]
    async fn wait(&self, _session: Session, ms: u64) -> Result<u64, String> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    /// The length of what it got, and that many bytes back when asked.
    #[rpc]
    async fn sized(
        &self,
        _session: Session,
        text: String,
        reply: usize,
    ) -> Result<(usize, String), String> {
        Ok((text.len(), "x".repeat(reply)))
    }

    /// Holds `text` until the test lets it go (see [`HOLDING`]), then says how long it was.
    #[rpc]
    async fn hold(&self, _session: Session, text: String) -> Result<usize, String> {
        HOLDING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RELEASE.acquire().await.map_err(|e| e.to_string())?.forget();
        Ok(text.len())
    }
}

/// Calls of `Wait/hold` that have started; each waits for a permit of [`RELEASE`].
static HOLDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Lets calls of `Wait/hold` finish, one per permit.
static RELEASE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// An app on `port` with only `Wait` (as `name`'s server) or nothing.
async fn app_on(port: u16, server_id: &str, with_wait: bool) -> App {
    app_on_nodes(&[port], server_id, with_wait, 3000).await
}

/// An app given the broker nodes on `ports`, in that order, calls limited to `timeout_ms`.
async fn app_on_nodes(ports: &[u16], server_id: &str, with_wait: bool, timeout_ms: u64) -> App {
    start(config_on(ports, server_id, timeout_ms), with_wait).await
}

/// Builds and starts an app with `c`, running `Wait` or nothing.
async fn start(c: Config, with_wait: bool) -> App {
    let mut b = App::builder().config(c);
    if with_wait {
        b = b.module(|_| Wait);
    }
    let app = b.build().expect("app");
    app.start().await.expect("starts even without a broker");
    app
}

/// Waits (up to 3 s) until `app` knows that server `sid` runs `Wait`.
async fn await_wait(app: &App, sid: &str) {
    wait_for(
        &format!("presence of {sid}"),
        Duration::from_secs(3),
        || sees_wait(app, sid),
    )
    .await;
}

/// True when `app` knows that server `sid` runs `Wait`.
fn sees_wait(app: &App, sid: &str) -> bool {
    app.cluster()
        .get(sid)
        .is_some_and(|m| m.iter().any(|x| x == "Wait"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_retried_with_backoff_and_joined_when_it_comes() {
    let port = free_port();
    let started = Instant::now();
    let caller = app_on(port, "caller", false).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "start does not hang"
    );
    let stats = || caller.broker_stats().expect("broker transport");
    assert!(!stats().connected);
    let e = caller
        .call::<_, u64>("Wait", "wait", &Session::default(), (1u64,))
        .await
        .expect_err("no broker");
    assert!(
        matches!(&e, RpcError::Unreachable { reason, .. } if reason.contains("not connected to the MQTT broker")),
        "{e}"
    );
    // Two seconds without a broker: a handful of attempts (backoff 0.1, 0.2, 0.4, 0.8 s...),
    // not a busy loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = stats().connection_errors;
    assert!((2..=10).contains(&tries), "{tries} attempts in 2 s");

    // The broker comes: the caller joins within its backoff, and calls go through.
    let _broker = Mosquitto::start_on(port);
    let callee = app_on(port, "callee", true).await;
    wait_for("the caller to connect", Duration::from_secs(8), || {
        stats().connected
    })
    .await;
    await_wait(&caller, "callee").await;
    let ms: u64 = caller
        .call("Wait", "wait", &Session::default(), (5u64,))
        .await
        .expect("through the broker");
    assert_eq!(ms, 5);
    callee.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_fails_calls_in_flight_and_traffic_resumes_after() {
    let mut broker = Mosquitto::start();
    let port = broker.port;
    let caller = app_on(port, "caller", false).await;
    let callee = app_on(port, "callee", true).await;
    await_wait(&caller, "callee").await;

    // A call in flight when the broker dies fails well before its 3 s deadline, and says why.
    let call = {
        let caller = caller.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = caller
                .call::<_, u64>("Wait", "wait", &Session::default(), (1500u64,))
                .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.kill();
    let (r, took) = call.await.expect("call task");
    let e = r.expect_err("the broker died");
    assert!(
        matches!(&e, RpcError::Unreachable { reason, .. } if reason.contains("lost")),
        "{e}"
    );
    assert!(took < Duration::from_millis(2500), "failed after {took:?}");
    assert_eq!(caller.broker_stats().expect("stats").pending, 0);

    // The broker is back on the same port (empty: no retained presence, no subscriptions).
    let _broker = Mosquitto::start_on(port);
    let connects = |app: &App| app.broker_stats().expect("stats").connects;
    let up = |app: &App| app.broker_stats().expect("stats").connected;
    wait_for("both to reconnect", Duration::from_secs(8), || {
        connects(&caller) >= 2 && connects(&callee) >= 2 && up(&caller) && up(&callee)
    })
    .await;
    // Both synced: what the caller knows now was heard after the restart, not kept from before.
    await_wait(&caller, "callee").await;
    let ms: u64 = caller
        .call("Wait", "wait", &Session::default(), (5u64,))
        .await
        .expect("subscriptions restored");
    assert_eq!(ms, 5);
    callee.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_broker_nodes_fails_over_to_the_next() {
    let broker = Mosquitto::start();
    // The first node is down: the process moves on to the second.
    let caller = app_on_nodes(&[free_port(), broker.port], "caller", false, 3000).await;
    let callee = app_on(broker.port, "callee", true).await;
    wait_for("failover", Duration::from_secs(8), || {
        caller.broker_stats().expect("stats").connected
    })
    .await;
    assert!(caller.broker_stats().expect("stats").connection_errors >= 1);
    await_wait(&caller, "callee").await;
    let ms: u64 = caller
        .call("Wait", "wait", &Session::default(), (3u64,))
        .await
        .expect("through the second node");
    assert_eq!(ms, 3);
    callee.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_empty_presence_for_a_live_process_is_answered_by_announcing_again() {
    let broker = Mosquitto::start();
    let caller = app_on(broker.port, "caller", false).await;
    let callee = app_on(broker.port, "callee", true).await;
    await_wait(&caller, "callee").await;
    // What an earlier connection's last will would publish: empty, retained.
    let mut opts = rumqttc::v5::MqttOptions::new("stale-will", "127.0.0.1", broker.port);
    opts.set_clean_start(true);
    let (c, _incoming) = common::mqtt5_client(opts);
    c.publish(
        "mqrs/presence/callee",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        Vec::new(),
    )
    .await
    .expect("publish");
    // The live process announces itself again; a process that joins later sees it too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    await_wait(&caller, "callee").await;
    let late = app_on(broker.port, "late", false).await;
    await_wait(&late, "callee").await;
    let ms: u64 = late
        .call("Wait", "wait", &Session::default(), (2u64,))
        .await
        .expect("callee reachable");
    assert_eq!(ms, 2);
    for app in [late, callee, caller] {
        app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_served_for_another_process_ends_at_its_deadline() {
    let broker = Mosquitto::start();
    let caller = app_on_nodes(&[broker.port], "caller", false, 300).await;
    // One call served at a time: a handler that outlives its deadline must give its place back.
    let mut c = config_on(&[broker.port], "callee", 3000);
    c.broker.max_pending = 1;
    let callee = start(c, true).await;
    await_wait(&caller, "callee").await;
    let e = caller
        .call::<_, u64>("Wait", "wait", &Session::default(), (10_000u64,))
        .await
        .expect_err("times out");
    assert_eq!(e.kind(), "timeout");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ms: u64 = caller
        .call("Wait", "wait", &Session::default(), (1u64,))
        .await
        .expect("served, not refused as busy");
    assert_eq!(ms, 1);
    callee.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_serving_its_most_calls_or_bytes_answers_unavailable_at_once() {
    let broker = Mosquitto::start();
    let caller = app_on(broker.port, "caller", false).await;
    let mut c = config_on(&[broker.port], "callee", 10_000);
    c.broker.max_pending = 2;
    // Room for one call holding 50,000 bytes of text (counted twice), not two.
    c.broker.max_serving_bytes = 150_000;
    let callee = start(c, true).await;
    await_wait(&caller, "callee").await;
    let s = Session::default();
    let text = "y".repeat(50_000);
    let holding = |n: usize| {
        wait_for_owned(format!("{n} held"), move || {
            HOLDING.load(std::sync::atomic::Ordering::SeqCst) == n
        })
    };
    let hold = |text: String| {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .call::<_, usize>("Wait", "hold", &Session::default(), (text,))
                .await
        })
    };
    let big = hold(text.clone());
    holding(1).await;
    let started = Instant::now();
    let e = caller
        .call::<_, usize>("Wait", "hold", &s, (text.clone(),))
        .await
        .expect_err("over max_serving_bytes");
    assert_eq!(e.kind(), "unavailable", "{e}");
    assert!(e.to_string().contains("max_serving_bytes"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    // A small call still fits beside it.
    let ms: u64 = caller
        .call("Wait", "wait", &s, (1u64,))
        .await
        .expect("fits");
    assert_eq!(ms, 1);
    // Two calls served at once (the large one and a small one): the third is refused.
    let small = hold(String::new());
    holding(2).await;
    let e = caller
        .call::<_, u64>("Wait", "wait", &s, (1u64,))
        .await
        .expect_err("over max_pending");
    assert_eq!(e.kind(), "unavailable", "{e}");
    assert!(e.to_string().contains("max_pending"), "{e}");
    // Both refusals are counted where they happened (the callee's SERVER series) and by the
    // caller, each once.
    let unavailable = |app: &App, kind| {
        app.red()
            .rows(0, u64::MAX)
            .into_iter()
            .filter(|r| r.key.kind == kind)
            .flat_map(|r| r.by_error)
            .filter(|(e, _)| &**e == "unavailable")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(unavailable(&callee, mqrs_runtime::red::Kind::Server), 2);
    assert_eq!(unavailable(&caller, mqrs_runtime::red::Kind::Client), 2);
    RELEASE.add_permits(2);
    assert_eq!(small.await.expect("task"), Ok(0));
    assert_eq!(big.await.expect("task"), Ok(50_000));
    // Both released: the large call is served again.
    let again = hold(text);
    holding(3).await;
    RELEASE.add_permits(1);
    assert_eq!(again.await.expect("task"), Ok(50_000));
    // A call larger than the whole byte budget is served when it is alone, not refused.
    let (n, _): (usize, String) = caller
        .call("Wait", "sized", &s, ("y".repeat(100_000), 0usize))
        .await
        .expect("served alone");
    assert_eq!(n, 100_000);
    callee.shutdown().await;
    caller.shutdown().await;
}

/// As `wait_for`, owning what it says it waits for, up to 5 s.
async fn wait_for_owned(what: String, check: impl FnMut() -> bool) {
    wait_for(&what, Duration::from_secs(5), check).await;
}

#[tokio::test]
async fn a_process_whose_presence_others_would_refuse_does_not_start() {
    // Checked before any connection: no broker is needed.
    let mut c = config_on(&[1], &"s".repeat(129), 3000);
    c.broker.connect_wait_ms = 0;
    let app = App::builder()
        .config(c)
        .module(|_| Wait)
        .build()
        .expect("app");
    let e = app.start().await.expect_err("refused");
    assert!(e.to_string().contains("not 1 to 128 bytes"), "{e}");
    let ok = start(config_on(&[1], &"s".repeat(128), 3000), true).await;
    ok.shutdown().await;
}

/// The retained presence message on `topic`, read by a fresh client.
async fn retained(port: u16, topic: &str) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    let (c, mut incoming) =
        common::mqtt5_client(rumqttc::v5::MqttOptions::new("reader", "127.0.0.1", port));
    c.subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match incoming.recv().await {
                Some(Packet::Publish(p)) => return p.payload.to_vec(),
                Some(_) => {}
                None => panic!("reader: the connection ended"),
            }
        }
    })
    .await
    .expect("a retained presence message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_restores_its_presence_and_refuses_malformed_ones() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    let broker = Mosquitto::start();
    let caller = app_on(broker.port, "caller", false).await;
    let callee = app_on(broker.port, "callee", true).await;
    await_wait(&caller, "callee").await;
    let (intruder, mut incoming) = common::mqtt5_client(rumqttc::v5::MqttOptions::new(
        "intruder",
        "127.0.0.1",
        broker.port,
    ));
    let malformed = || caller.broker_stats().expect("stats").malformed;
    let before = malformed();
    // Another client claims the callee runs no modules: the callee answers with its own.
    intruder
        .publish(
            "mqrs/presence/callee",
            QoS5::AtLeastOnce,
            true,
            r#"{"modules":[]}"#,
        )
        .await
        .expect("publishes");
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(p) = incoming.recv().await {
            if matches!(p, rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)) {
                return;
            }
        }
    })
    .await
    .expect("the broker took the false presence");
    let ours = serde_json::json!({ "modules": ["Wait"] });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let kept: serde_json::Value =
            serde_json::from_slice(&retained(broker.port, "mqrs/presence/callee").await)
                .expect("JSON");
        if kept == ours {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retained presence stays {kept}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sees_wait(&caller, "callee"));
    let ms: u64 = caller
        .call("Wait", "wait", &Session::default(), (1u64,))
        .await
        .expect("still called");
    assert_eq!(ms, 1);
    // Malformed presence, an over-long server id, too many modules: refused and counted,
    // never taken in part.
    let many: Vec<String> = (0..300).map(|i| format!("M{i}")).collect();
    for (topic, payload) in [
        ("mqrs/presence/junk".to_string(), b"junk".to_vec()),
        (
            format!("mqrs/presence/{}", "s".repeat(200)),
            br#"{"modules":["Wait"]}"#.to_vec(),
        ),
        (
            "mqrs/presence/many".to_string(),
            serde_json::to_vec(&serde_json::json!({ "modules": many })).expect("JSON"),
        ),
    ] {
        intruder
            .publish(topic, QoS5::AtLeastOnce, false, payload)
            .await
            .expect("publishes");
    }
    wait_for("three refusals", Duration::from_secs(3), || {
        malformed() == before + 3
    })
    .await;
    assert_eq!(
        caller
            .cluster()
            .keys()
            .filter(|k| k.as_str() != "caller")
            .count(),
        1,
        "only the callee: {:?}",
        caller.cluster()
    );
    callee.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_process_withdraws_at_once_and_finishes_the_calls_it_serves() {
    let broker = Mosquitto::start();
    let caller = app_on(broker.port, "caller", false).await;
    let callee = app_on(broker.port, "callee", true).await;
    await_wait(&caller, "callee").await;
    let in_flight = {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .call::<_, u64>("Wait", "wait", &Session::default(), (600u64,))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = {
        let callee = callee.clone();
        tokio::spawn(async move { callee.shutdown().await })
    };
    // Other processes learn at once that it takes no new calls...
    wait_for("withdrawal", Duration::from_secs(2), || {
        !sees_wait(&caller, "callee")
    })
    .await;
    let e = caller
        .call::<_, u64>("Wait", "wait", &Session::default(), (1u64,))
        .await
        .expect_err("withdrawn");
    assert_eq!(e, RpcError::UnknownModule("Wait".into()));
    // ...while the call it was serving still finishes and its reply goes out.
    let r = in_flight.await.expect("task");
    assert_eq!(r, Ok(600));
    stopping.await.expect("shutdown");
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_brokers_packet_limit_fail_clearly_and_the_link_stays_up() {
    let port = free_port();
    let _broker = Mosquitto::start_with(port, "max_packet_size 65536");
    let caller = app_on(port, "caller", false).await;
    let callee = app_on(port, "callee", true).await;
    await_wait(&caller, "callee").await;
    let s = Session::default();
    // Within [broker] max_payload (1 MiB) but over what this broker takes (64 KiB).
    let e = caller
        .call::<_, (usize, String)>("Wait", "sized", &s, ("y".repeat(100_000), 0usize))
        .await
        .expect_err("request too big for the broker");
    assert_eq!(e.kind(), "bad_args", "{e}");
    assert!(e.to_string().contains("at most 65536 bytes"), "{e}");
    let e = caller
        .call::<_, (usize, String)>("Wait", "sized", &s, (String::new(), 100_000usize))
        .await
        .expect_err("reply too big for the broker");
    assert_eq!(e.kind(), "bad_reply", "{e}");
    assert!(e.to_string().contains("at most 65536 bytes"), "{e}");
    // Neither connection was dropped.
    let (n, _): (usize, String) = caller
        .call("Wait", "sized", &s, ("ok".to_string(), 2usize))
        .await
        .expect("still connected");
    assert_eq!(n, 2);
    for app in [&caller, &callee] {
        let st = app.broker_stats().expect("stats");
        assert_eq!((st.connects, st.connection_errors), (1, 0), "{st:?}");
    }
    callee.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_modules_announces_itself_once() {
    let broker = Mosquitto::start();
    // A process that only calls others announces an empty module list: that is presence, not
    // a last will, and must not set off a re-announcement loop through the broker.
    let caller = app_on(broker.port, "caller", false).await;
    let (spy, mut incoming) = common::mqtt5_client(rumqttc::v5::MqttOptions::new(
        "presence-spy",
        "127.0.0.1",
        broker.port,
    ));
    spy.subscribe(
        "mqrs/presence/caller",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await
    .expect("subscribe");
    let mut seen = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(p)) = tokio::time::timeout_at(until, incoming.recv()).await {
        if matches!(p, rumqttc::v5::mqttbytes::v5::Packet::Publish(_)) {
            seen += 1;
        }
    }
    assert_eq!(seen, 1, "the retained announcement, and nothing after it");
    assert!(caller.cluster().contains_key("caller"));
    caller.shutdown().await;
}
