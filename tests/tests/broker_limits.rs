//! The embedded broker against a client that tries to exhaust the process it shares with the
//! gate: retained messages past their count or bytes, topics and filters past their length,
//! subscriptions past their count. Each is refused and counted in `broker_stats()`, the client
//! is disconnected (for the first two), and the process goes on serving.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{mqtt5_client, start_demo, Incoming, Running};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;
use rumqttc::QoS as V4QoS;

fn broker(d: &Running) -> SocketAddr {
    d.app.addrs().broker.expect("embedded broker")
}

fn options(id: &str, at: SocketAddr) -> MqttOptions {
    let mut o = MqttOptions::new(id, at.ip().to_string(), at.port());
    o.set_max_packet_size(Some(4 << 20));
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Waits for the first packet `want` picks out, failing after 5 s.
async fn wait_for(rx: &mut Incoming, what: &str, want: impl Fn(&Packet) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(p)) if want(&p) => return,
            Ok(Some(_)) => {}
            _ => panic!("no {what} within 5 s"),
        }
    }
}

/// The broker's stats once `done` holds of them, failing after 5 s.
async fn stats_when(
    d: &Running,
    done: impl Fn(&mqrs_runtime::EmbeddedBrokerStats) -> bool,
) -> mqrs_runtime::EmbeddedBrokerStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = d
            .app
            .broker_stats()
            .and_then(|s| s.embedded)
            .expect("embedded broker stats");
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gate client can still log in and join a room: the process lives and serves.
async fn still_serves(d: &Running, user: &str) {
    let c = d.logged_in(user).await;
    let r = common::join_chat(&c, "after", V4QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_past_their_bytes_are_refused_and_the_client_cut_off() {
    let d = start_demo(|_| {}).await;
    let before = rss();
    // The attack: 200 retained messages of 1 MB each (the default cap is 16 MiB in all).
    let (client, mut rx) = mqtt5_client(options("hoarder", broker(&d)));
    wait_for(&mut rx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    let payload = vec![b'x'; 1 << 20];
    for i in 0..200 {
        if client
            .publish(format!("junk/{i}"), QoS::AtMostOnce, true, payload.clone())
            .await
            .is_err()
        {
            break;
        }
    }
    let s = stats_when(&d, |s| {
        s.retained_refused >= 1 && s.clients_disconnected >= 1
    })
    .await;
    assert!(s.retained_bytes <= 16 << 20, "{s:?}");
    assert!(s.retained <= 17, "{s:?}");
    drop(client);
    still_serves(&d, "after-hoard").await;
    // What the broker holds stays near its cap (the test process also keeps its own copies
    // of nothing: the payload is one buffer).
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 150 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    // A retained message may still be replaced, and cleared, by a well-behaved client.
    let (ok, mut rx) = mqtt5_client(options("tidy", broker(&d)));
    wait_for(&mut rx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    ok.publish("junk/0", QoS::AtLeastOnce, true, Vec::new())
        .await
        .expect("publish");
    wait_for(&mut rx, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    let after = stats_when(&d, |t| t.retained < s.retained).await;
    assert_eq!(after.clients_disconnected, s.clients_disconnected);
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_past_their_count_are_refused() {
    let d = start_demo(|c| c.broker.embedded_max_retained = 20).await;
    let (client, mut rx) = mqtt5_client(options("counter", broker(&d)));
    wait_for(&mut rx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    for i in 0..40 {
        if client
            .publish(format!("many/{i}"), QoS::AtMostOnce, true, b"x".to_vec())
            .await
            .is_err()
        {
            break;
        }
    }
    let s = stats_when(&d, |s| {
        s.retained_refused >= 1 && s.clients_disconnected >= 1
    })
    .await;
    // The app's own presence is retained too: the count is over everything held.
    assert!(s.retained <= 20, "{s:?}");
    still_serves(&d, "after-count").await;
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_subscriptions_past_their_limits_are_refused() {
    // The app's own broker client holds a few subscriptions too; 30 leaves room for them.
    let d = start_demo(|c| c.broker.embedded_max_subscriptions = 30).await;
    // A filter of 2,000 bytes: refused, counted, disconnected.
    let (long, mut rx) = mqtt5_client(options("long-filter", broker(&d)));
    wait_for(&mut rx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    long.subscribe(format!("a/{}", "b".repeat(2_000)), QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let s = stats_when(&d, |s| s.topics_refused == 1 && s.clients_disconnected == 1).await;
    assert_eq!(s.subscriptions_refused, 0);
    // 32 subscriptions where 30 are allowed: the last two get SUBACK's refusal.
    let (many, mut rx) = mqtt5_client(options("many-subs", broker(&d)));
    wait_for(&mut rx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    for i in 0..32 {
        many.subscribe(format!("s/{i}"), QoS::AtMostOnce)
            .await
            .expect("subscribe");
        wait_for(&mut rx, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    }
    let s = stats_when(&d, |s| s.subscriptions_refused == 2).await;
    assert_eq!(s.clients_disconnected, 1, "{s:?}");
    still_serves(&d, "after-topics").await;
    d.app.shutdown().await;
}

/// QoS 2 is not offered (mqrs uses 0 and 1): its CONNACK says so, and a QoS 2 publish is not
/// stored, even retained: the retained limits cannot be passed by
/// way of a QoS 2 message that is stored only at its release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_is_not_offered_and_a_retained_qos_2_message_is_not_stored() {
    let d = start_demo(|_| {}).await;
    let (client, mut rx) = mqtt5_client(options("qos2", broker(&d)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let max_qos = loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Packet::ConnAck(a))) => break a.properties.and_then(|p| p.max_qos),
            Ok(Some(_)) => {}
            _ => panic!("no CONNACK within 5 s"),
        }
    };
    assert_eq!(max_qos, Some(1), "CONNACK's Maximum QoS");
    let before = stats_when(&d, |_| true).await;
    client
        .publish("kept/two", QoS::ExactlyOnce, true, vec![b'x'; 1000])
        .await
        .expect("queued");
    // The broker answers with a PUBREC saying "QoS not supported" (which rumqttc may not
    // read: the client's own connection is not what is tested here).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new subscriber gets no retained message on that topic.
    let (reader, mut rx2) = mqtt5_client(options("qos2-reader", broker(&d)));
    wait_for(&mut rx2, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    reader
        .subscribe("kept/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    wait_for(&mut rx2, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    let got = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match rx2.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    assert!(got.is_err(), "a retained QoS 2 message was stored: {got:?}");
    let after = stats_when(&d, |_| true).await;
    assert_eq!(after.retained, before.retained, "{after:?}");
    still_serves(&d, "after-qos2").await;
    d.app.shutdown().await;
}
