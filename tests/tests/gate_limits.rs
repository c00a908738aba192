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
    let mut cfg = Config::ephemeral();
    cfg.broker.url = BrokerUrl::None;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    let app = App::builder()
        .config(cfg)
        .module(|_| Big)
        .build()
        .expect("builds");
    let addrs = app.start().await.expect("starts");
    let port = addrs.gate.expect("gate").port();
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
async fn client_topics_and_names_never_grow_the_operation_list_or_the_spans() {
    let d = start_demo(|_| {}).await;
    // A 100 KB user name: accepted by the demo, but cut on every span that carries it.
    let user = "u".repeat(100_000);
    let c = d.logged_in(&user).await;
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
    let r = common::join_chat(&c, "names", QoS::AtMostOnce).await;
    let id = r["TraceId"].as_str().expect("traced").to_string();
    let trace = d.wait_chat_trace(&id).await;
    for s in common::spans(&trace) {
        if let Some(u) = s.tag("user.id") {
            let u = u.as_str().unwrap_or_default().to_string();
            assert!(
                u.len() <= 1024 + 3 && u.ends_with('…'),
                "{}: {} bytes",
                s.name,
                u.len()
            );
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
    let len = 2 + topic.len() + payload.len();
    assert!(len < 128, "one-byte remaining length");
    let mut p = vec![0x30, len as u8];
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
    let after = d.app.gate_stats().expect("gate").protocol_violations;
    assert_eq!(after - before, 8, "each disconnect is counted");
    // A client that keeps to the rules is served as before.
    let c = d.logged_in("rules").await;
    let r = common::join_chat(&c, "rules", QoS::AtMostOnce).await;
    assert_eq!(r["Error"], "", "{r}");
    d.app.shutdown().await;
}
