//! MQTT over WebSocket at the gate: Eclipse Paho (Python) over `ws://` runs the chat and is
//! traced like a TCP client; raw frames show that a packet split over frames and packets
//! joined in one frame both arrive; clients that break the handshake or the WebSocket protocol
//! are answered, closed and counted while a good client goes on.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{start_demo, tools};
use futures_util::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket to the gate that asks for `protocol` (none when empty).
async fn ws_connect(
    addr: std::net::SocketAddr,
    protocol: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/mqtt")
        .into_client_request()
        .expect("request");
    if !protocol.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocol.parse().expect("header value"),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// The next MQTT packet the gate sends, across as many frames as it takes.
async fn next_packet(ws: &mut Ws, buf: &mut BytesMut) -> Packet {
    loop {
        if let Ok(p) = Packet::read(buf, 1 << 20) {
            return p;
        }
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("stream open")
            .expect("frame");
        match msg {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame: {other:?}"),
        }
    }
}

/// An MQTT connection over WebSocket to the gate, CONNACK read; with the bytes read past it.
async fn mqtt_over_ws(addr: std::net::SocketAddr) -> (Ws, BytesMut) {
    let mut ws = ws_connect(addr, "mqtt").await.expect("handshake");
    ws.send(Message::Binary(common::raw::CONNECT_V4.to_vec().into()))
        .await
        .expect("send");
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_packet(&mut ws, &mut buf).await,
        Packet::ConnAck(_)
    ));
    (ws, buf)
}

fn encode(p: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.write(&mut out, 1 << 20).expect("encode");
    out.to_vec()
}

fn publish(topic: &str, body: &Value) -> Vec<u8> {
    encode(Packet::Publish(Publish::new(
        topic,
        QoS::AtMostOnce,
        body.to_string(),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_over_websocket_runs_the_chat_and_is_traced_with_scheme_ws() {
    let d = start_demo(|_| {}).await;
    let lines = tools::paho_chat(d.ws.port(), "wes", &["ws"]).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        lines[0]["reply"],
        serde_json::json!({"Result": {"userId": "wes"}, "Error": ""})
    );
    let root = d.gate_span_of_join(&lines[1]["reply"]).await;
    assert_eq!(root.tag("network.transport"), Some("tcp".into()));
    assert_eq!(root.tag("url.scheme"), Some("ws".into()));
    assert_eq!(root.tag("user.id"), Some("wes".into()));
    let err = lines[3]["reply"]["Error"].as_str().expect("error text");
    assert!(err.contains("not reachable from clients"), "{err}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_split_over_frames_and_packets_joined_in_one_frame_both_arrive() {
    let d = start_demo(|_| {}).await;
    let mut ws = ws_connect(d.ws, "mqtt").await.expect("handshake");
    let connect = common::raw::CONNECT_V4;
    // CONNECT in three frames, one of them empty.
    for part in [&connect[..3], &[][..], &connect[3..]] {
        ws.send(Message::Binary(part.to_vec().into()))
            .await
            .expect("send");
    }
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_packet(&mut ws, &mut buf).await,
        Packet::ConnAck(_)
    ));
    // Two requests and a PINGREQ in one frame.
    let mut joined = publish(
        "Login/HD_Login/1",
        &serde_json::json!({"userName": "fay", "passWord": "pw"}),
    );
    joined.extend(publish(
        "Chat/HD_JoinChat/2",
        &serde_json::json!({"roomName": "frames"}),
    ));
    joined.extend_from_slice(common::raw::PINGREQ);
    ws.send(Message::Binary(joined.into())).await.expect("send");
    let mut seen = Vec::new();
    // Three answers: two replies and a PINGRESP.
    while seen.len() < 3 {
        match next_packet(&mut ws, &mut buf).await {
            Packet::Publish(p) => {
                let reply: Value = serde_json::from_slice(&p.payload).expect("JSON reply");
                assert_eq!(reply["Error"], "", "{reply}");
                seen.push(p.topic);
            }
            Packet::PingResp => seen.push("PINGRESP".into()),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The PINGRESP is answered on reading, the replies once handled (in their order), as
    // over TCP.
    seen.retain(|t| t != "PINGRESP");
    assert_eq!(
        seen,
        ["Login/HD_Login/1", "Chat/HD_JoinChat/2"],
        "and a PINGRESP"
    );
    // A WebSocket ping is answered with a pong.
    ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("pong within 5 s");
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(p))) if &p[..] == b"hi"),
        "{pong:?}"
    );
    ws.close(None).await.expect("close");
    let stats = d.app.gate_stats().expect("gate");
    assert_eq!((stats.protocol_violations, stats.ws_refused), (0, 0));
    d.app.shutdown().await;
}

/// Sends `request` on a bare TCP connection to the WebSocket port; returns what comes back
/// before the gate closes.
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let back = common::raw::read_until_closed(&mut s, Duration::from_secs(5)).await;
    String::from_utf8_lossy(&back).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_that_are_not_mqtt_over_websocket_are_answered_closed_and_counted() {
    let d = start_demo(|c| c.gate.connect_timeout_ms = 500).await;
    // A browser visiting the port.
    let back = raw_http(d.ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(back.starts_with("HTTP/1.1 426 "), "{back}");
    // An MQTT client that took the wrong port.
    let back = raw_http(d.ws, common::raw::CONNECT_V4).await;
    assert!(
        back.is_empty() || back.starts_with("HTTP/1.1 400 "),
        "{back}"
    );
    // A WebSocket client for another protocol.
    match ws_connect(d.ws, "chat").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("a `chat` subprotocol was not refused: {other:?}"),
    }
    // A handshake that never finishes is closed at the connect timeout.
    let mut s = TcpStream::connect(d.ws).await.expect("connect");
    s.write_all(b"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut sink = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "a stalled handshake got an answer");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Meanwhile a good client is served.
    let (_ws, _) = mqtt_over_ws(d.ws).await;
    let stats = d.app.gate_stats().expect("gate");
    assert_eq!(stats.ws_refused, 4, "{stats:?}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_closes_the_connection_as_a_protocol_violation() {
    let d = start_demo(|_| {}).await;
    let (mut ws, _) = mqtt_over_ws(d.ws).await;
    ws.send(Message::Text("Login/HD_Login/1".into()))
        .await
        .expect("send");
    // The gate says why (close code 1003, unsupported data) and ends the connection.
    let mut close = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Message::Close(c) = m {
            close = c;
        }
    }
    let code = close.map(|c| u16::from(c.code));
    assert_eq!(code, Some(1003));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while d.app.gate_stats().expect("gate").protocol_violations == 0 {
        assert!(std::time::Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_share_the_connection_limit_and_one_can_be_turned_off() {
    let d = start_demo(|c| c.gate.max_connections = 2).await;
    let _tcp = d.client("shared-1").await;
    let (_ws, _) = mqtt_over_ws(d.ws).await;
    // The third, over either transport, is refused.
    let third = ws_connect(d.ws, "mqtt").await;
    assert!(third.is_err(), "a third connection was accepted");
    assert_eq!(d.app.gate_stats().expect("gate").refused, 1);
    d.app.shutdown().await;

    let mut cfg = mqrs_runtime::Config::ephemeral();
    cfg.gate.ws_addr = None;
    let off = demo::build_app(cfg).expect("builds");
    let addrs = off.start().await.expect("starts");
    assert!(addrs.gate.is_some() && addrs.gate_ws.is_none(), "{addrs:?}");
    off.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqttjs_under_node_chats_over_websocket() {
    let d = start_demo(|_| {}).await;
    let url = format!("ws://127.0.0.1:{}/mqtt", d.ws.port());
    let lines = tools::mqttjs_chat(&url, "node-ws", None).await;
    tools::assert_mqttjs_chat(&lines, "node-ws");
    d.app.shutdown().await;
}
