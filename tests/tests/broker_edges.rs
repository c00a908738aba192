//! Edges of calls between processes that the broker tests pass by: a callee whose handler
//! outlives the call's deadline sends no reply at all (neither on time nor late); a reply whose
//! correlation nobody waits for is counted and dropped even while another call is waiting,
//! which still gets its own answer; and an empty presence message (a stale last will) is
//! answered by announcing again even just after a false one used up the once-a-second limit.
//! Two apps connected through a real mosquitto, as two processes would be, with raw MQTT 5
//! clients watching or writing on the broker.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::{config_on, wait_for};
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS as QoS5;

/// A module that answers after a while, or when the test lets it.
pub struct Wait;

#[rpc_module]
impl Wait {
    #[rpc]
    async fn wait(&self, _session: Session, ms: u64) -> Result<u64, String> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    /// Holds `text` until the test lets it go (see [`HOLDING`]), then says how long it was.
    #[rpc]
    async fn hold(&self, _session: Session, text: String) -> Result<usize, String> {
        HOLDING.fetch_add(1, Ordering::SeqCst);
        RELEASE.acquire().await.map_err(|e| e.to_string())?.forget();
        Ok(text.len())
    }
}

/// Calls of `Wait/hold` that have started; each waits for a permit of [`RELEASE`]. Only one
/// test of this file calls `hold`.
static HOLDING: AtomicUsize = AtomicUsize::new(0);
/// Lets calls of `Wait/hold` finish, one per permit.
static RELEASE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// Builds and starts server `server_id` on `port`, running `Wait` or nothing.
async fn app_on(port: u16, server_id: &str, with_wait: bool, timeout_ms: u64) -> App {
    let mut b = App::builder().config(config_on(&[port], server_id, timeout_ms));
    if with_wait {
        b = b.module(|_| Wait);
    }
    let app = b.build().expect("app");
    app.start().await.expect("app starts");
    app
}

/// True when `app` knows that server `sid` runs `Wait`.
fn sees_wait(app: &App, sid: &str) -> bool {
    app.cluster()
        .get(sid)
        .is_some_and(|m| m.iter().any(|x| x == "Wait"))
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

/// The next packet `incoming` receives that `pick` takes, within 3 s; `what` names it.
async fn next<T>(
    incoming: &mut common::Incoming,
    what: &str,
    pick: impl Fn(Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match incoming.recv().await.map(&pick) {
                Some(Some(t)) => return t,
                Some(None) => {}
                None => panic!("waiting for {what}: the spy's connection ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within 3 s"))
}

/// A raw MQTT 5 client named `id` on the mosquitto at `port`, subscribed (QoS 1) to `filter`;
/// returns once the broker has acknowledged the subscription.
async fn spy_on(port: u16, id: &str, filter: &str) -> (rumqttc::v5::AsyncClient, common::Incoming) {
    let (c, mut incoming) =
        common::mqtt5_client(rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port));
    c.subscribe(filter, QoS5::AtLeastOnce)
        .await
        .expect("subscribes");
    next(&mut incoming, "the SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    (c, incoming)
}

/// Catches a callee that sends its `deadline_exceeded` reply although the deadline has passed
/// (the "deadline passed; no reply sent" check of `serve::reply` taken out). A handler that
/// outlives its call is cancelled at the deadline and nothing at all goes to the reply topic:
/// a spy that only listens on `mqrs/reply/#` sees the answer of an ordinary call, and nothing
/// for the call that timed out, and the caller counts no late reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_sends_no_reply_once_the_deadline_has_passed() {
    let broker = Mosquitto::start();
    let caller = app_on(broker.port, "caller", false, 300).await;
    let callee = app_on(broker.port, "callee", true, 3000).await;
    await_wait(&caller, "callee").await;
    let (_spy, mut replies) = spy_on(broker.port, "reply-spy", "mqrs/reply/#").await;
    let a_reply = |p: Packet| match p {
        Packet::Publish(p) => Some((
            String::from_utf8_lossy(&p.topic).into_owned(),
            p.payload.to_vec(),
        )),
        _ => None,
    };

    // An ordinary call: its reply goes out, and the spy sees it.
    let ms: u64 = caller
        .call("Wait", "wait", &Session::default(), (1u64,))
        .await
        .expect("served in time");
    assert_eq!(ms, 1);
    let (topic, payload) = next(&mut replies, "the reply of the ordinary call", a_reply).await;
    assert!(topic.starts_with("mqrs/reply/caller/"), "{topic}");
    assert_eq!(payload, br#"{"ok":1}"#.to_vec(), "{topic}");

    // A call whose handler would take 1.5 s with 300 ms to go: the caller times out.
    let served = || callee.broker_stats().expect("stats").calls_served;
    let served_before = served();
    let started = Instant::now();
    let e = caller
        .call::<_, u64>("Wait", "wait", &Session::default(), (1500u64,))
        .await
        .expect_err("times out");
    assert_eq!(e.kind(), "timeout", "{e}");
    // The callee ends the call at its deadline...
    wait_for("the callee to end the call", Duration::from_secs(3), || {
        served() == served_before + 1
    })
    .await;
    // ...and, well past the time the handler would have taken, has sent nothing for it.
    tokio::time::sleep(
        (started + Duration::from_millis(2000)).saturating_duration_since(Instant::now()),
    )
    .await;
    while let Ok(p) = replies.try_recv() {
        if let Some((topic, payload)) = a_reply(p) {
            panic!(
                "a reply after the deadline on {topic}: {}",
                String::from_utf8_lossy(&payload)
            );
        }
    }
    let st = caller.broker_stats().expect("stats");
    assert_eq!(st.late_replies, 0, "{st:?}");
    assert_eq!(st.pending, 0, "{st:?}");
    callee.shutdown().await;
    caller.shutdown().await;
}

/// Catches a reply of unknown correlation being handed to whichever call is waiting (the
/// `pending` lookup of `Shared::complete` falling back to any entry). While a real call is held
/// in its handler, a forged reply with another correlation arrives on the caller's reply
/// topic: it is counted in `late_replies`, the call keeps waiting, and once released it gets
/// its own answer, not the forged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_of_unknown_correlation_is_not_given_to_the_call_waiting() {
    let broker = Mosquitto::start();
    let caller = app_on(broker.port, "caller", false, 10_000).await;
    let callee = app_on(broker.port, "callee", true, 10_000).await;
    await_wait(&caller, "callee").await;
    // It sees the request (a plain subscription beside the callee's shared one: the callee
    // still gets it), so it knows the caller's reply topic and the call's correlation.
    let (forger, mut requests) = spy_on(broker.port, "forger", "mqrs/call/Wait/hold").await;
    let stats = || caller.broker_stats().expect("stats");
    let before = stats().late_replies;

    let held = {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .call::<_, usize>("Wait", "hold", &Session::default(), ("hello".to_string(),))
                .await
        })
    };
    let props = next(&mut requests, "the request", |p| match p {
        Packet::Publish(p) => Some(p.properties.unwrap_or_default()),
        _ => None,
    })
    .await;
    let reply_to = props.response_topic.expect("a response topic");
    assert!(reply_to.starts_with("mqrs/reply/caller/"), "{reply_to}");
    let correlation = props.correlation_data.expect("correlation data");
    let id =
        u64::from_be_bytes(<[u8; 8]>::try_from(&correlation[..]).expect("8 bytes of correlation"));
    wait_for(
        "the callee to hold the call",
        Duration::from_secs(3),
        || HOLDING.load(Ordering::SeqCst) == 1,
    )
    .await;
    assert_eq!(stats().pending, 1, "one call waiting");

    // A reply for no call: every bit of the correlation differs from the waiting call's.
    let forged = PublishProperties {
        correlation_data: Some((!id).to_be_bytes().to_vec().into()),
        ..Default::default()
    };
    forger
        .publish_with_properties(
            reply_to,
            QoS5::AtLeastOnce,
            false,
            br#"{"ok": 999}"#.to_vec(),
            forged,
        )
        .await
        .expect("publishes");
    wait_for(
        "the unknown reply to be counted",
        Duration::from_secs(3),
        || stats().late_replies == before + 1,
    )
    .await;
    assert!(
        !held.is_finished(),
        "the waiting call took the forged reply"
    );
    assert_eq!(stats().pending, 1, "the call still waits");

    RELEASE.add_permits(1);
    let r = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("answered once released")
        .expect("call task");
    assert_eq!(r, Ok(5), "its own answer, never the forged 999");
    let st = stats();
    assert_eq!((st.late_replies, st.pending), (before + 1, 0), "{st:?}");
    callee.shutdown().await;
    caller.shutdown().await;
}

/// Catches an empty presence message (a stale last will) being held to the once-a-second
/// limit on announcing again, which is meant only for other words on a process's topic. A
/// false, non-empty presence uses the limit up (the callee answers it by announcing again);
/// within the same second an empty retained message follows. The callee must answer that
/// one too, or the broker keeps the empty message and a process that joins later never
/// learns of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_last_will_right_after_a_false_presence_is_still_answered() {
    let broker = Mosquitto::start();
    let caller = app_on(broker.port, "caller", false, 3000).await;
    let callee = app_on(broker.port, "callee", true, 3000).await;
    await_wait(&caller, "callee").await;
    let topic = "mqrs/presence/callee";
    // It reads the topic (its own messages come back to it too) and writes on it.
    let (writer, mut seen) = spy_on(broker.port, "presence-writer", topic).await;
    let payload = |p: Packet| match p {
        Packet::Publish(p) => Some(p.payload.to_vec()),
        _ => None,
    };
    let ours = serde_json::json!({ "modules": ["Wait"] });
    let is_ours =
        |p: &[u8]| serde_json::from_slice::<serde_json::Value>(p).ok() == Some(ours.clone());
    // The retained announcement comes first.
    let first = next(&mut seen, "the retained presence", payload).await;
    assert!(
        is_ours(first.as_slice()),
        "{}",
        String::from_utf8_lossy(&first)
    );

    let false_presence = br#"{"modules":[]}"#.to_vec();
    // The empty message must reach the callee less than a second after the false one, or the
    // limit is due again and the test proves nothing: on a very slow machine, try again.
    for attempt in 1.. {
        let t0 = Instant::now();
        writer
            .publish(topic, QoS5::AtLeastOnce, true, false_presence.clone())
            .await
            .expect("publishes");
        next(&mut seen, "the false presence", |p| {
            payload(p).filter(|b| *b == false_presence)
        })
        .await;
        next(
            &mut seen,
            "the callee's answer to the false presence",
            |p| payload(p).filter(|b| is_ours(b.as_slice())),
        )
        .await;
        // What an earlier connection's last will would leave: empty, retained.
        writer
            .publish(topic, QoS5::AtLeastOnce, true, Vec::<u8>::new())
            .await
            .expect("publishes");
        next(&mut seen, "the empty presence", |p| {
            payload(p).filter(|b| b.is_empty())
        })
        .await;
        let window = t0.elapsed();
        next(
            &mut seen,
            "the callee's answer to the empty presence",
            |p| payload(p).filter(|b| is_ours(b.as_slice())),
        )
        .await;
        if window < Duration::from_millis(800) {
            break;
        }
        assert!(
            attempt < 5,
            "the false and the empty presence never came within 800 ms ({window:?})"
        );
        // Past the limit's second, so the next false presence uses it up again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // A process that joins later finds the callee, and calls it.
    let late = app_on(broker.port, "late", false, 3000).await;
    await_wait(&late, "callee").await;
    let ms: u64 = late
        .call("Wait", "wait", &Session::default(), (2u64,))
        .await
        .expect("callee reachable");
    assert_eq!(ms, 2);
    await_wait(&caller, "callee").await;
    for app in [late, callee, caller] {
        app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_knows_every_other_once_started_on_the_embedded_broker() {
    let mut cfg = Config::ephemeral();
    cfg.gate.enabled = false;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    cfg.app.server_id = "holder".into();
    let holder = App::builder().config(cfg).build().expect("app");
    let port = holder
        .start()
        .await
        .expect("start")
        .broker
        .expect("embedded broker")
        .port();
    knows_every_other_once_started(port).await;
    holder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_knows_every_other_once_started_on_mosquitto() {
    let m = Mosquitto::start();
    knows_every_other_once_started(m.port).await;
}

/// With 200 processes' presence retained at the broker on `port`, a newcomer's start returns
/// once it knows them all (the embedded broker acknowledges before it delivers retained
/// messages, so an acknowledgement is not proof), so a call it makes, or takes from a shared
/// subscription, right away can reach any module they run.
async fn knows_every_other_once_started(port: u16) {
    let mut opts = rumqttc::v5::MqttOptions::new("announcer", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut incoming) = common::mqtt5_client(opts);
    const OTHERS: usize = 200;
    for i in 0..OTHERS {
        let body = serde_json::json!({ "modules": [format!("M{i}")] }).to_string();
        client
            .publish(
                format!("mqrs/presence/other-{i}"),
                QoS5::AtLeastOnce,
                true,
                body,
            )
            .await
            .expect("publish");
    }
    // All through the broker before the newcomer subscribes.
    let mut acked = 0;
    while acked < OTHERS {
        match tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await {
            Ok(Some(Packet::PubAck(_))) => acked += 1,
            Ok(Some(_)) => {}
            other => panic!("waiting for PUBACKs: {other:?}"),
        }
    }
    for round in 0..5 {
        let mut cfg = Config::ephemeral();
        cfg.gate.enabled = false;
        cfg.trace.viewer = false;
        cfg.trace.collector = false;
        cfg.app.server_id = format!("newcomer-{round}");
        cfg.broker.url = BrokerUrl::Urls(vec![format!("mqtt://127.0.0.1:{port}")]);
        let app = App::builder().config(cfg).build().expect("app");
        app.start().await.expect("start");
        let known = app
            .cluster()
            .keys()
            .filter(|k| k.starts_with("other-"))
            .count();
        assert_eq!(
            known, OTHERS,
            "round {round}: knew {known} of {OTHERS} when started"
        );
        app.shutdown().await;
    }
    // The presence messages were retained: clear them.
    for i in 0..OTHERS {
        let _ = client
            .publish(
                format!("mqrs/presence/other-{i}"),
                QoS5::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await;
    }
}
