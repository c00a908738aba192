//! Requests at the edges of a handler's contract, through the gate with a real MQTT client:
//! the bodies mqant clients send to handlers that take no message, a handler that panics, and
//! the root span covering the hand-off of the reply.

mod common;

use common::{spans, start_demo};
use mqrs_runtime::{rpc, rpc_module, Config, Session};
use rumqttc::QoS;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_without_a_message_accept_empty_body_empty_object_and_null() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("nomsg").await;
    common::join_chat(&c, "lobby", QoS::AtLeastOnce).await;
    for body in [&b""[..], b"{}", b"null", b"{ }"] {
        let r = c
            .request("Chat/HD_CurrentRoom", body, QoS::AtLeastOnce)
            .await
            .expect("reply");
        assert_eq!(
            (r["Error"].as_str(), &r["Result"]),
            (Some(""), &Value::from("lobby")),
            "body {:?}",
            String::from_utf8_lossy(body)
        );
    }
    // A body that carries something is still refused, with the reason.
    let r = c
        .request("Chat/HD_CurrentRoom", br#"{"room":1}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    let err = r["Error"].as_str().expect("error text");
    assert!(err.contains("takes no arguments"), "{err}");
    d.app.shutdown().await;
}

/// A module whose client-reachable handler panics.
struct Crash;

#[rpc_module]
impl Crash {
    #[rpc(name = "HD_Boom")]
    async fn boom(&self, _session: Session) -> Result<(), String> {
        panic!("boom, on purpose")
    }

    #[rpc(name = "HD_Slow")]
    async fn slow(&self, _session: Session) -> Result<&'static str, String> {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        Ok("finished")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_shutdown_finishes_within_the_grace_period() {
    let app = demo::build_app(Config::ephemeral()).expect("demo app");
    app.add_module(Crash).expect("add Crash");
    let addrs = app.start().await.expect("start");
    let gate = addrs.gate.expect("gate");
    let c = demo::client::GateClient::connect("grace", "127.0.0.1", gate.port())
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let stopping = {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            app.shutdown().await;
        })
    };
    let r = c
        .request("Crash/HD_Slow", b"{}", QoS::AtLeastOnce)
        .await
        .expect("the reply still arrives");
    assert_eq!(
        (r["Error"].as_str(), &r["Result"]),
        (Some(""), &Value::from("finished")),
        "{r}"
    );
    // Meanwhile the listener is closed: no new clients during the drain.
    assert!(tokio::net::TcpStream::connect(gate).await.is_err());
    stopping.await.expect("shutdown task");
    assert!(started.elapsed() >= std::time::Duration::from_millis(450));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_gets_an_error_reply_and_the_connection_lives() {
    let app = demo::build_app(Config::ephemeral()).expect("demo app");
    app.add_module(Crash).expect("add Crash");
    app.start().await.expect("start");
    let port = app.addrs().gate.expect("gate").port();
    let c = demo::client::GateClient::connect("crash-test", "127.0.0.1", port)
        .await
        .expect("connect");
    for _ in 0..3 {
        let r = c
            .request("Crash/HD_Boom", b"{}", QoS::AtLeastOnce)
            .await
            .expect("an error reply, not silence");
        assert_eq!(r["Result"], Value::Null);
        let err = r["Error"].as_str().expect("error text");
        assert!(err.contains("`Crash/HD_Boom` panicked"), "{err}");
    }
    // Same connection, next request: served.
    let body = serde_json::json!({"userName": "after-boom", "passWord": "pw"}).to_string();
    let r = c
        .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
        .await
        .expect("login reply");
    assert_eq!(r["Error"], "", "{r}");
    // The panic was the handler's, contained by dispatch: none in the gate's own tasks.
    assert_eq!(app.gate_stats().expect("gate").panics, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_span_ends_after_the_reply_is_handed_to_the_connection() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("handoff").await;
    let r = common::join_chat(&c, "handoff", QoS::AtLeastOnce).await;
    let reply_len = serde_json::to_vec(&r).expect("json").len() as i64;
    let id = r["TraceId"].as_str().expect("traced");
    let trace = d.wait_chat_trace(id).await;
    let all = spans(&trace);
    let root = all.iter().find(|s| s.parent.is_none()).expect("root");
    let server = all
        .iter()
        .find(|s| s.name == "Chat/HD_JoinChat" && s.kind == "server")
        .expect("server span");
    // The event is recorded once the reply is queued on the connection; a span that had
    // already ended would have dropped it.
    let raw = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["spanID"] == root.id.as_str())
        .expect("raw root");
    let log = raw["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .find(|l| {
            l["fields"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["value"] == "reply queued"))
        })
        .unwrap_or_else(|| panic!("root span has no 'reply queued' event: {raw}"));
    let at = log["timestamp"].as_u64().expect("timestamp");
    let size = log["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "messaging.message.body.size"))
        .and_then(|f| f["value"].as_i64())
        .expect("reply size");
    // The reply as received (re-encoded by the test) has the size the gate recorded.
    assert_eq!(size, reply_len, "{raw}");
    assert!(
        at >= server.start + server.duration,
        "reply queued at {at} before the handler ended at {} ({} + {}): {raw}",
        server.start + server.duration,
        server.start,
        server.duration
    );
    assert!(
        at <= root.start + root.duration,
        "the root span ended before the reply was queued"
    );
    d.app.shutdown().await;
}
