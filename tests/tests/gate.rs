//! The gate against real MQTT clients and hostile bytes: routing, the HD_ rule, error replies,
//! QoS 0/1, requests without msgid, CONNECT rules, size limits, and tracing decisions.

mod common;

use std::time::Duration;

use common::raw::{read_until_closed, CONNECT_V4};
use common::start_demo;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_keep_the_connection_usable() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("bob").await;
    let cases: [(&str, &[u8], &str); 6] = [
        ("Login/track/7", b"", "not reachable from clients"),
        ("Nope/HD_X/8", b"{}", "unknown module `Nope`"),
        (
            "Chat/HD_Nope/9",
            b"{}",
            "module `Chat` has no handler `HD_Nope`",
        ),
        (
            "Chat/HD_JoinChat/10",
            b"{\"roomName\":",
            "bad arguments for `Chat/HD_JoinChat`: body starts with '{' but is not valid JSON",
        ),
        (
            "Chat/HD_JoinChat/11",
            b"{\"roomName\":\"\"}",
            "roomName must be non-empty",
        ),
        (
            "Chat/HD_JoinChat/12",
            b"plain text",
            "bad arguments for `Chat/HD_JoinChat`",
        ),
    ];
    for (topic, body, want) in cases {
        let r = c
            .request_on(topic, body, QoS::AtLeastOnce)
            .await
            .expect("error reply");
        let err = r["Error"].as_str().expect("Error is text");
        assert!(
            err.contains(want),
            "{topic}: `{err}` should contain `{want}`"
        );
        assert_eq!(r["Result"], Value::Null, "{topic}");
    }
    // Module@ServerId: this process answers for its own server id only.
    let r = c
        .request_on("Chat@elsewhere/HD_JoinChat/13", b"{}", QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(r["Error"], "unknown module `Chat@elsewhere`");
    let r = c
        .request_on(
            "Chat@gate-1/HD_JoinChat/14",
            br#"{"roomName":"sid"}"#,
            QoS::AtLeastOnce,
        )
        .await
        .expect("reply");
    assert_eq!(r["Error"], "", "{r}");
    // Still usable after all of that, on both QoS levels.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let r = common::join_chat(&c, "after", qos).await;
        assert_eq!(r["Error"], "", "{qos:?}: {r}");
        assert_eq!(r["Result"]["users"], serde_json::json!(["bob"]));
    }
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_are_answered_but_not_traced() {
    let d = start_demo(|_| {}).await;
    let c = d.client("anon").await;
    let r = common::join_chat(&c, "x", QoS::AtLeastOnce).await;
    assert!(
        r["Error"].as_str().expect("text").contains("not logged in"),
        "{r}"
    );
    assert!(
        r.get("TraceId").is_none(),
        "anonymous request was traced: {r}"
    );
    let r = c
        .request(
            "Login/HD_Login",
            br#"{"userName":"carol","passWord":"pw"}"#,
            QoS::AtLeastOnce,
        )
        .await
        .expect("reply");
    assert_eq!(r["Result"]["userId"], "carol");
    assert!(
        r.get("TraceId").is_none(),
        "the login itself was anonymous: {r}"
    );
    let stats = d.app.trace_store().expect("store").stats();
    assert_eq!(
        stats.spans, 0,
        "no span may be recorded for anonymous requests"
    );
    // After login the same connection is traced, as the demo's on_request_tracing says.
    let r = common::join_chat(&c, "x", QoS::AtLeastOnce).await;
    assert!(r["TraceId"].is_string(), "{r}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_does_not_leak_into_the_next_request() {
    let d = start_demo(|_| {}).await;
    // Trace only requests whose body asks for it.
    d.app
        .set_on_request_tracing(|_, p| p.payload.windows(5).any(|w| w == b"TRACE"));
    let c = d.logged_in("dave").await;
    let r1 = common::join_chat(&c, "TRACE", QoS::AtLeastOnce).await;
    let id = r1["TraceId"].as_str().expect("traced").to_string();
    let t = d.wait_chat_trace(&id).await;
    let spans_after_first = d.app.trace_store().expect("store").stats().spans;
    for _ in 0..3 {
        let r = common::join_chat(&c, "quiet", QoS::AtLeastOnce).await;
        assert_eq!(r["Error"], "");
        assert!(
            r.get("TraceId").is_none(),
            "untraced request got a trace id: {r}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = d.app.trace_store().expect("store").stats();
    assert_eq!(
        st.spans, spans_after_first,
        "untraced requests recorded spans"
    );
    assert_eq!(st.traces, 1);
    assert!(t["spans"].as_array().expect("spans").len() >= 7);
    d.app.shutdown().await;
}

/// A bare rumqttc client that records every publish it receives.
async fn recording_client(
    port: u16,
    id: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut ev) = AsyncClient::new(opts, 16);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = tx.send(("<closed>".into(), vec![]));
                    return;
                }
            }
        }
    });
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_msgid_means_no_reply_and_replies_use_the_request_topic() {
    let d = start_demo(|_| {}).await;
    // Trace everything here, so the finished login is visible in the store.
    d.app.set_on_request_tracing(|_, _| true);
    let (client, mut rx) = recording_client(d.gate.port(), "rec").await;
    client
        .publish(
            "Login/HD_Login",
            QoS::AtLeastOnce,
            false,
            br#"{"userName":"e","passWord":"p"}"#.to_vec(),
        )
        .await
        .expect("publish");
    // Requests of one connection are handled in order by default ([gate] max_inflight = 1),
    // so the join below would wait for the login anyway; waiting here until the unanswered
    // login has finished (its root span is stored when the request is done) keeps the test
    // true with more requests in flight, when they run concurrently and unordered.
    let store = d.app.trace_store().expect("store");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let login_done = || {
        let q = mqrs_runtime::trace::TraceQuery {
            operation: Some("gate Login/HD_Login".into()),
            limit: 1,
            ..Default::default()
        };
        !store.find(&q).is_empty()
    };
    while !login_done() {
        assert!(std::time::Instant::now() < deadline, "login never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
        .publish(
            "Chat/HD_JoinChat/abc",
            QoS::AtLeastOnce,
            false,
            br#"{"roomName":"z"}"#.to_vec(),
        )
        .await
        .expect("publish");
    let (topic, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a reply in time")
        .expect("open");
    assert_eq!(
        topic, "Chat/HD_JoinChat/abc",
        "only the request with a msgid is answered"
    );
    let v: Value = serde_json::from_slice(&body).expect("JSON reply");
    // The login without msgid still took effect: the user is bound.
    assert_eq!(v["Result"]["users"], serde_json::json!(["e"]), "{v}");
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_err());
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_publish_closes_only_that_connection() {
    let d = start_demo(|c| c.gate.max_packet_size = 64 * 1024).await;
    let (client, mut rx) = recording_client(d.gate.port(), "big").await;
    let body = format!(r#"{{"roomName":"{}"}}"#, "x".repeat(100 * 1024));
    client
        .publish(
            "Chat/HD_JoinChat/1",
            QoS::AtMostOnce,
            false,
            body.into_bytes(),
        )
        .await
        .expect("queued");
    let (topic, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("closed in time")
        .expect("event");
    assert_eq!(topic, "<closed>");
    let c = d.logged_in("fine").await;
    let r = common::join_chat(&c, "ok", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rules_and_hostile_bytes() {
    let d = start_demo(|c| c.gate.connect_timeout_ms = 300).await;
    let addr = d.gate;

    // First packet is not CONNECT: closed without a reply.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0xC0, 0x00]).await.expect("write");
    assert!(read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .is_empty());

    // Silence: closed after the connect timeout.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert!(read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .is_empty());

    // MQTT 5 CONNECT: refused with a v5 CONNACK, reason 0x84 "unsupported protocol version".
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'v',
    ])
    .await
    .expect("write");
    assert_eq!(
        read_until_closed(&mut s, Duration::from_secs(3)).await,
        vec![0x20, 3, 0, 0x84, 0]
    );

    // MQTT 3.1 ("MQIsdp", level 3): refused with the 3.1.1 code 1.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 1, b'o',
    ])
    .await
    .expect("write");
    assert_eq!(
        read_until_closed(&mut s, Duration::from_secs(3)).await,
        vec![0x20, 2, 0, 1]
    );

    // A header claiming 2 MiB (over the 1 MiB default) is refused before any body is sent.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(CONNECT_V4).await.expect("write");
    s.write_all(&[0x30, 0x80, 0x80, 0x80, 0x01])
        .await
        .expect("write");
    let got = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert_eq!(got, vec![0x20, 2, 0, 0], "only the CONNACK, then closed");

    // Malformed remaining length and random garbage after CONNECT.
    for junk in [
        &[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..],
        &[0xff; 64][..],
        &[0x82, 0x02, 0, 0][..],
    ] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(CONNECT_V4).await.expect("write");
        s.write_all(junk).await.expect("write");
        let got = read_until_closed(&mut s, Duration::from_secs(3)).await;
        assert_eq!(got, vec![0x20, 2, 0, 0], "{junk:?}");
    }

    // An empty client id without clean session is refused with code 2 (identifier rejected).
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60, 0, 0])
        .await
        .expect("write");
    assert_eq!(
        read_until_closed(&mut s, Duration::from_secs(3)).await,
        vec![0x20, 2, 0, 2]
    );

    // A second CONNECT is a protocol violation.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(CONNECT_V4).await.expect("write");
    s.write_all(CONNECT_V4).await.expect("write");
    assert_eq!(
        read_until_closed(&mut s, Duration::from_secs(3)).await,
        vec![0x20, 2, 0, 0]
    );

    // PINGREQ is answered, SUBSCRIBE acknowledged with QoS capped at 1.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(CONNECT_V4).await.expect("write");
    s.write_all(&[0xC0, 0x00]).await.expect("write");
    s.write_all(&[0x82, 8, 0, 7, 0, 3, b'a', b'/', b'b', 2])
        .await
        .expect("write");
    s.write_all(&[0xE0, 0x00]).await.expect("write");
    let got = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert_eq!(got, vec![0x20, 2, 0, 0, 0xD0, 0, 0x90, 3, 0, 7, 1]);

    // The gate still serves well-behaved clients.
    let c = d.logged_in("survivor").await;
    let r = common::join_chat(&c, "ok", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "");
    d.app.shutdown().await;
}

/// A small deterministic generator, so a failure can be replayed from its seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize % max) + 1;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_never_take_the_gate_down() {
    // A panic in a gate task is contained to that task and counted by this app's gate alone,
    // so other tests running in this process cannot add to the count.
    let d = start_demo(|c| c.gate.connect_timeout_ms = 500).await;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for i in 0..300 {
        let mut s = TcpStream::connect(d.gate).await.expect("connect");
        let mut input = Vec::new();
        if i % 3 != 0 {
            input.extend_from_slice(CONNECT_V4);
        }
        // Mostly valid fixed headers with random bodies, sometimes pure noise.
        let mut junk = rng.bytes(200);
        if i % 2 == 0 {
            junk[0] = [0x30, 0x32, 0x82, 0xA2, 0xC0, 0xE0, 0x62][i % 7];
        }
        input.extend_from_slice(&junk);
        s.write_all(&input).await.expect("write");
        s.shutdown().await.expect("half-close");
        let _ = read_until_closed(&mut s, Duration::from_secs(3)).await;
    }
    let c = d.logged_in("after-noise").await;
    let r = common::join_chat(&c, "calm", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "");
    let stats = d.app.gate_stats().expect("gate started");
    assert_eq!(stats.panics, 0, "the gate panicked on input");
    assert!(stats.accepted >= 301, "{stats:?}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_change_the_session_the_gate_keeps() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("kim").await;
    let r = c
        .request("Chat/HD_CurrentRoom", b"", QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(r["Result"], Value::Null, "no room yet: {r}");
    common::join_chat(&c, "lobby", QoS::AtLeastOnce).await;
    let r = c
        .request("Chat/HD_CurrentRoom", b"", QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(r["Result"], "lobby", "pushed setting: {r}");
    // Another connection has its own session.
    let other = d.logged_in("lee").await;
    let r = other
        .request("Chat/HD_CurrentRoom", b"", QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(r["Result"], Value::Null);
    // Logout unbinds: the next join is refused and not traced.
    let r = c
        .request("Login/HD_Logout", b"", QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(r["Result"], "kim");
    let r = common::join_chat(&c, "lobby", QoS::AtLeastOnce).await;
    assert!(
        r["Error"].as_str().expect("text").contains("not logged in"),
        "{r}"
    );
    assert!(r.get("TraceId").is_none());
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_resend_is_acknowledged_but_handled_once() {
    use rumqttc::mqttbytes::v4::Packet as P;
    let d = start_demo(|_| {}).await;
    let mut s = TcpStream::connect(d.gate).await.expect("connect");
    s.write_all(CONNECT_V4).await.expect("write");
    let topic = b"Chat/HD_CurrentRoom/q2";
    let publish = |dup: bool| {
        let mut p = vec![
            if dup { 0x3C } else { 0x34 },
            (2 + topic.len() + 2) as u8,
            0,
            topic.len() as u8,
        ];
        p.extend_from_slice(topic);
        p.extend_from_slice(&[0, 9]); // packet id 9, empty body
        p
    };
    s.write_all(&publish(false)).await.expect("write");
    s.write_all(&publish(true)).await.expect("write");
    s.write_all(&[0x62, 2, 0, 9]).await.expect("write PUBREL");
    let mut buf = bytes::BytesMut::new();
    let (mut pubrecs, mut pubcomps, mut replies) = (0, 0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let mut chunk = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1000), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        while let Ok(p) = P::read(&mut buf, 1 << 20) {
            match p {
                P::PubRec(r) => {
                    assert_eq!(r.pkid, 9);
                    pubrecs += 1;
                }
                P::PubComp(c) => {
                    assert_eq!(c.pkid, 9);
                    pubcomps += 1;
                }
                P::Publish(p) => {
                    assert_eq!(p.topic, "Chat/HD_CurrentRoom/q2");
                    replies += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((pubrecs, pubcomps, replies), (2, 1, 1));
    d.app.shutdown().await;
}
