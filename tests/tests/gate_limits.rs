//! What a client cannot do to the gate: overtake its own requests (they are handled in arrival
//! order by default), or make a reply vanish by making it too large (it becomes an error reply
//! that says so).

mod common;

use common::start_demo;
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
use rumqttc::QoS;

/// Answers with as many bytes as asked.
pub struct Big;

/// The body of `HD_Big`.
#[derive(serde::Deserialize)]
pub struct Size {
    bytes: usize,
}

#[rpc_module]
impl Big {
    #[rpc(name = "HD_Big")]
    async fn big(&self, _session: Session, size: Size) -> Result<String, String> {
        Ok("x".repeat(size.bytes))
    }

    #[rpc(name = "HD_Sleep")]
    async fn sleep(&self, _session: Session, size: Size) -> Result<(), String> {
        tokio::time::sleep(std::time::Duration::from_millis(size.bytes as u64)).await;
        Ok(())
    }
}

/// An app with [`Big`] behind a gate (no broker, no viewer); returns it and the gate's port.
async fn start_big(tweak: impl FnOnce(&mut Config)) -> (App, u16) {
    let mut cfg = Config::ephemeral();
    cfg.broker.url = BrokerUrl::None;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    tweak(&mut cfg);
    let app = App::builder()
        .config(cfg)
        .module(|_| Big)
        .build()
        .expect("builds");
    let addrs = app.start().await.expect("starts");
    (app, addrs.gate.expect("gate").port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_sent_right_before_a_join_is_done_before_it() {
    let d = start_demo(|_| {}).await;
    let mut failed = Vec::new();
    for i in 0..20 {
        let c = d.client(&format!("order-{i}")).await;
        let login =
            serde_json::json!({"userName": format!("ord{i}"), "passWord": "pw"}).to_string();
        // Both are on the wire before either is answered: the join must see the login.
        let (l, j) = tokio::join!(
            c.request("Login/HD_Login", login.as_bytes(), QoS::AtMostOnce),
            c.request(
                "Chat/HD_JoinChat",
                br#"{"roomName":"ordered"}"#,
                QoS::AtMostOnce
            ),
        );
        let (l, j) = (l.expect("login reply"), j.expect("join reply"));
        assert_eq!(l["Error"], "", "{l}");
        if j["Error"] != "" {
            failed.push(j);
        }
        c.disconnect().await;
    }
    assert!(
        failed.is_empty(),
        "joins that overtook their login: {failed:?}"
    );
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_packet_limit_becomes_an_error_reply() {
    let (app, port) = start_big(|_| {}).await;
    let c = demo::client::GateClient::connect("big", "127.0.0.1", port)
        .await
        .expect("connects");
    // Fits: answered as usual.
    let ok = c
        .request("Big/HD_Big", br#"{"bytes": 1000}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(ok["Result"].as_str().map(str::len), Some(1000));
    // Over 1 MiB: the client still gets an answer, and it says why.
    for _ in 0..2 {
        let r = c
            .request("Big/HD_Big", br#"{"bytes": 1100000}"#, QoS::AtLeastOnce)
            .await
            .expect("an error reply, not silence");
        let e = r["Error"].as_str().unwrap_or_default();
        assert!(e.contains("over the gate's packet limit"), "{r}");
    }
    // The connection is still good.
    let ok = c
        .request("Big/HD_Big", br#"{"bytes": 10}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(ok["Result"], "xxxxxxxxxx");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_topics_never_grow_the_operation_list_or_the_spans() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("namer").await;
    let long = "M".repeat(30_000);
    for i in 0..40 {
        let r = c
            .request(&format!("Nope{i}/HD_x"), b"{}", QoS::AtMostOnce)
            .await
            .expect("reply");
        let e = r["Error"].as_str().unwrap_or_default();
        assert!(e.contains("unknown module"), "{r}");
        let r = c
            .request(&format!("{long}{i}/HD_x"), b"{}", QoS::AtMostOnce)
            .await
            .expect("reply");
        let e = r["Error"].as_str().unwrap_or_default();
        assert!(
            e.contains("at most 128 bytes") && e.len() < 400,
            "{}",
            e.len()
        );
    }
    let r = c
        .request("Chat/HD_NoSuchHandler", b"{}", QoS::AtMostOnce)
        .await
        .expect("reply");
    assert!(r["Error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    // The 30 KB topics are cut on the root spans that name them.
    let (_, found) = d
        .get("/api/traces?service=Gate&operation=gate%20unknown-route&limit=100")
        .await;
    let roots = found["data"].as_array().expect("traces");
    assert!(roots.len() >= 40, "{} unknown-route traces", roots.len());
    for t in roots {
        for s in common::spans(t) {
            let topic = s.tag("mqrs.topic").expect("topic");
            assert!(topic.as_str().is_some_and(|t| t.len() <= 256), "{}", topic);
        }
    }

    // 81 unknown routes went through the gate, traced: one operation name covers them all.
    let (status, ops) = d.get("/api/services/Gate/operations").await;
    assert_eq!(status, 200);
    let ops: Vec<String> = ops["data"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|o| o.as_str().map(str::to_string))
        .collect();
    assert!(ops.contains(&"gate unknown-route".to_string()), "{ops:?}");
    assert!(
        ops.iter()
            .all(|o| o.len() < 64 && !o.contains("Nope") && !o.contains("MMM")),
        "{ops:?}"
    );
    let (_, services) = d.get("/api/services").await;
    assert!(
        !services.to_string().contains("Nope"),
        "no service named after a client's topic: {services}"
    );
    let (_, all) = d.get("/api/operations?service=Chat").await;
    assert!(!all.to_string().contains("HD_NoSuchHandler"), "{all}");
    d.app.shutdown().await;
}

/// A PUBLISH (QoS 0) of `payload` on `topic` as raw bytes; `topic` may break the rules.
fn raw_publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut len = 2 + topic.len() + payload.len();
    let mut p = vec![0x30];
    // Remaining length: 7 bits per byte, high bit set while more follow.
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        p.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    p.extend_from_slice(topic);
    p.extend_from_slice(payload);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_break_mqtt_rules_are_disconnected_and_counted() {
    use common::raw::{read_exact, read_until_closed, CONNACK_OK, CONNECT_V4};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    let d = start_demo(|_| {}).await;
    let connected = |bytes: Vec<u8>| {
        let port = d.gate.port();
        async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            s.write_all(CONNECT_V4).await.expect("write");
            assert_eq!(
                read_exact(&mut s, 4, Duration::from_secs(5)).await,
                CONNACK_OK
            );
            s.write_all(&bytes).await.expect("write");
            s
        }
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("wildcard #", raw_publish(b"Chat/#/1", b"{}")),
        ("wildcard +", raw_publish(b"+/HD_JoinChat/1", b"{}")),
        ("empty topic", raw_publish(b"", b"{}")),
        ("NUL in topic", raw_publish(b"Chat/HD\0X/1", b"{}")),
        // SUBSCRIBE with flags 0000 instead of 0010, and with reserved option bits.
        ("subscribe flags", vec![0x80, 6, 0, 1, 0, 1, b'a', 0]),
        ("subscribe options", vec![0x82, 6, 0, 1, 0, 1, b'a', 0x40]),
    ];
    let before = d.app.gate_stats().expect("gate").protocol_violations;
    for (what, bytes) in cases.drain(..) {
        let mut s = connected(bytes).await;
        // Closed without an answer (no reply is ever published on a wildcard topic).
        let rest = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(rest.is_empty(), "{what}: the gate answered {rest:?}");
    }
    // CONNECTs the rules forbid: the reserved flag, a password without a user name.
    for (what, flags) in [("reserved flag", 0x03u8), ("password alone", 0x42)] {
        let mut connect = CONNECT_V4.to_vec();
        connect[9] = flags;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", d.gate.port()))
            .await
            .expect("connect");
        s.write_all(&connect).await.expect("write");
        let rest = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(rest.is_empty(), "{what}: no CONNACK, just closed: {rest:?}");
    }
    // Each is counted when its connection's task ends, which can be just after the client
    // saw the close.
    common::wait_for("eight violations counted", Duration::from_secs(5), || {
        d.app
            .gate_stats()
            .is_some_and(|s| s.protocol_violations - before >= 8)
    })
    .await;
    let after = d.app.gate_stats().expect("gate").protocol_violations;
    assert_eq!(after - before, 8, "each disconnect is counted");
    // A client that keeps to the rules is served as before.
    let c = d.logged_in("rules").await;
    let r = common::join_chat(&c, "rules", QoS::AtMostOnce).await;
    assert_eq!(r["Error"], "", "{r}");
    d.app.shutdown().await;
}

/// A raw connection that sent `connect` and got the CONNACK, from `local` (a loopback IP).
async fn raw_client(
    port: u16,
    local: std::net::IpAddr,
    connect: &[u8],
) -> Option<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind((local, 0).into()).expect("bind");
    let mut s = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect");
    s.write_all(connect).await.ok()?;
    let mut ack = [0u8; 4];
    match tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut ack)).await {
        Ok(Ok(_)) if ack == common::raw::CONNACK_OK => Some(s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let d = start_demo(|c| c.gate.max_connections_per_ip = 3).await;
    let port = d.gate.port();
    let (a, b) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            raw_client(port, a, common::raw::CONNECT_V4)
                .await
                .expect("within the limit"),
        );
    }
    assert!(
        raw_client(port, a, common::raw::CONNECT_V4).await.is_none(),
        "a 4th from 127.0.0.1"
    );
    let other = raw_client(port, b, common::raw::CONNECT_V4).await;
    assert!(other.is_some(), "another address is still served");
    let stats = d.app.gate_stats().expect("gate");
    assert_eq!(stats.refused_per_ip, 1, "{stats:?}");
    // A closed connection gives its place back.
    drop(held.pop());
    common::wait_for("a freed place", std::time::Duration::from_secs(5), || {
        d.app.gate_stats().is_some_and(|s| s.open == 3)
    })
    .await;
    assert!(raw_client(port, a, common::raw::CONNECT_V4).await.is_some());
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_clients_are_closed_whatever_keepalive_they_asked() {
    use common::raw::{connect_with_keepalive, read_until_closed};
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let d = start_demo(|c| {
        c.gate.max_idle_ms = 1500;
        c.gate.packet_timeout_ms = 200;
    })
    .await;
    let (port, lo) = (d.gate.port(), [127, 0, 0, 1].into());
    // Keepalive 0 ("never") and keepalive 65535 s: both closed after the gate's idle limit.
    for ka in [0u16, u16::MAX] {
        let mut s = raw_client(port, lo, &connect_with_keepalive(ka))
            .await
            .expect("connected");
        let t = Instant::now();
        read_until_closed(&mut s, Duration::from_secs(5)).await;
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(1300) && waited < Duration::from_millis(3000),
            "keepalive {ka}: closed after {waited:?}"
        );
    }
    // Half a PUBLISH (it announces 50 bytes, sends 3), then nothing: closed at the packet
    // timeout, long before the idle limit, and counted.
    let before = d.app.gate_stats().expect("gate").slow_clients;
    let mut s = raw_client(port, lo, &connect_with_keepalive(60))
        .await
        .expect("connected");
    s.write_all(&[0x30, 50, 0]).await.expect("write");
    let t = Instant::now();
    read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    common::wait_for("the stalled client counted", Duration::from_secs(5), || {
        d.app
            .gate_stats()
            .is_some_and(|st| st.slow_clients > before)
    })
    .await;
    assert_eq!(d.app.gate_stats().expect("gate").slow_clients, before + 1);
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_replies_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let (app, port) = start_big(|c| c.gate.max_outgoing_bytes = 256 * 1024).await;
    let mut s = raw_client(port, [127, 0, 0, 1].into(), common::raw::CONNECT_V4)
        .await
        .expect("connected");
    // 400 requests for 64 KB each (25 MB of replies), and never a read.
    let mut burst = Vec::new();
    for i in 0..400 {
        burst.extend(raw_publish(
            format!("Big/HD_Big/{i}").as_bytes(),
            br#"{"bytes":65536}"#,
        ));
    }
    let _ = s.write_all(&burst).await;
    common::wait_for(
        "the slow reader to be noticed",
        std::time::Duration::from_secs(30),
        || app.gate_stats().is_some_and(|st| st.slow_clients == 1),
    )
    .await;
    common::wait_for(
        "its connection to close",
        std::time::Duration::from_secs(15),
        || app.gate_stats().is_some_and(|st| st.open == 0),
    )
    .await;
    // A reading client is served meanwhile and after.
    let c = demo::client::GateClient::connect("reader", "127.0.0.1", port)
        .await
        .expect("connects");
    let ok = c
        .request("Big/HD_Big", br#"{"bytes": 3}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(ok["Result"], "xxx");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_to_be_handled_are_bounded_in_bytes() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    const BUDGET: u64 = 100_000;
    let (app, port) = start_big(|c| c.gate.max_request_bytes = BUDGET as usize).await;
    let mut s = raw_client(port, [127, 0, 0, 1].into(), common::raw::CONNECT_V4)
        .await
        .expect("connected");
    // One slow request, then 30 of 40 KB each: 1.2 MB sent at once.
    let mut burst = raw_publish(b"Big/HD_Sleep/0", br#"{"bytes": 600}"#);
    let pad = format!(r#"{{"bytes": 1, "pad": "{}"}}"#, "p".repeat(40_000));
    for i in 1..=30 {
        burst.extend(raw_publish(
            format!("Big/HD_Big/{i}").as_bytes(),
            pad.as_bytes(),
        ));
    }
    s.write_all(&burst).await.expect("write");
    let mut most = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen_some = false;
    loop {
        let held = app.gate_stats().expect("gate").request_bytes_held;
        most = most.max(held);
        seen_some |= held > 0;
        if seen_some && held == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "held {held} bytes for 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(most <= BUDGET, "held {most} bytes, budget {BUDGET}");
    assert!(most >= 40_000, "the budget was used: {most}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalling_in_large_packets_lose_their_turn_at_the_packet_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    // Large packets still arriving may hold 600 KB together (half the total budget): one
    // 500 KB PUBLISH at a time.
    let (app, port) = start_big(|c| {
        c.gate.max_total_request_bytes = 1_200_000;
        c.gate.packet_timeout_ms = 2000;
    })
    .await;
    let lo = [127, 0, 0, 1].into();
    let half = {
        let body = format!(r#"{{"bytes": 1, "pad": "{}"}}"#, "p".repeat(500_000));
        let p = raw_publish(b"Big/HD_Big/1", body.as_bytes());
        p[..p.len() / 2].to_vec()
    };
    // Twelve clients send half of a 500 KB request each and stop: one holds the budget, the
    // others wait for it. Each is closed a packet timeout after its first byte, waiting
    // included, not one after the other.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..12 {
        let mut s = raw_client(port, lo, common::raw::CONNECT_V4)
            .await
            .expect("connected");
        s.write_all(&half).await.expect("write");
        stalled.push(s);
    }
    // Meanwhile, halfway through their time, a client sends a whole large request: its own
    // packet timeout runs a second after theirs.
    tokio::time::sleep_until((started + Duration::from_millis(1000)).into()).await;
    let mut good = raw_client(port, lo, common::raw::CONNECT_V4)
        .await
        .expect("connected");
    let body = format!(r#"{{"bytes": 3, "pad": "{}"}}"#, "p".repeat(500_000));
    good.write_all(&raw_publish(b"Big/HD_Big/2", body.as_bytes()))
        .await
        .expect("write");
    for s in &mut stalled {
        common::raw::read_until_closed(s, Duration::from_secs(6)).await;
    }
    let all_closed = started.elapsed();
    let reply = common::raw::read_exact(&mut good, 2, Duration::from_secs(6)).await;
    assert_eq!(reply[0], 0x30, "a PUBLISH reply");
    // One after the other they would take 24 s.
    assert!(
        all_closed < Duration::from_secs(5),
        "stalled clients closed after {all_closed:?}"
    );
    common::wait_for(
        "the stalled clients counted",
        Duration::from_secs(5),
        || app.gate_stats().is_some_and(|st| st.slow_clients >= 12),
    )
    .await;
    app.shutdown().await;
}
