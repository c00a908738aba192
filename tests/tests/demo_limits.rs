//! The demo as a good citizen of a server on the internet: user and room names are capped, the
//! number of rooms is capped, and a room goes away with its last member, whether that member
//! left with `HD_LeaveChat`, joined another room, or disconnected (the gate's `OnDisconnect`).

mod common;

use std::time::{Duration, Instant};

use demo::chat::Chat;
use demo::client::GateClient;
use demo::login::Login;
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{App, Config};
use rumqttc::QoS;
use serde_json::Value;

async fn login(port: u16, user: &str) -> GateClient {
    let c = GateClient::connect(&format!("limits-{user}"), "127.0.0.1", port)
        .await
        .expect("connects");
    let body = serde_json::json!({"userName": user, "passWord": "pw"}).to_string();
    let r = c
        .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(r["Error"], "", "{r}");
    c
}

async fn join(c: &GateClient, room: &str) -> Value {
    common::join_chat(c, room, QoS::AtLeastOnce).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_rooms_are_capped_and_empty_rooms_go() {
    let mut cfg = Config::ephemeral();
    cfg.broker.url = BrokerUrl::None;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    let app = App::builder()
        .config(cfg)
        .module(Login::new)
        .module(|app| Chat::with_max_rooms(app, 2))
        .build()
        .expect("builds");
    let port = app
        .start()
        .await
        .expect("starts")
        .gate
        .expect("gate")
        .port();

    // Names: 64 characters (of any script) are fine, 65 are not.
    let c = GateClient::connect("limits-names", "127.0.0.1", port)
        .await
        .expect("connects");
    for (name, ok) in [("名".repeat(64), true), ("n".repeat(65), false)] {
        let body = serde_json::json!({"userName": name, "passWord": "pw"}).to_string();
        let r = c
            .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
            .await
            .expect("reply");
        assert_eq!(r["Error"] == "", ok, "{r}");
    }
    let r = join(&c, &"r".repeat(65)).await;
    assert!(
        r["Error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 64")),
        "{r}"
    );

    let ann = login(port, "ann").await;
    let bob = login(port, "bob").await;
    let cy = login(port, "cy").await;
    assert_eq!(join(&ann, "r1").await["Error"], "");
    assert_eq!(join(&bob, "r2").await["Error"], "");
    let full = join(&cy, "r3").await;
    assert!(
        full["Error"]
            .as_str()
            .is_some_and(|e| e.contains("too many rooms")),
        "{full}"
    );
    let r1 = join(&cy, "r1").await;
    assert_eq!(
        r1["Result"]["users"],
        serde_json::json!(["ann", "cy"]),
        "{r1}"
    );

    // Bob leaves: r2 is gone, so a new room fits again; his current room is none.
    let left = bob
        .request("Chat/HD_LeaveChat", b"{}", QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(left["Result"], "r2", "{left}");
    let now = bob
        .request("Chat/HD_CurrentRoom", b"{}", QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert_eq!(now["Result"], Value::Null, "{now}");
    assert_eq!(join(&bob, "r3").await["Error"], "");

    // Ann disconnects: r1 keeps cy only. Then cy moves to r3: r1 is empty and goes, so a
    // third room fits.
    ann.disconnect().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = join(&cy, "r1").await;
        if r["Result"]["users"] == serde_json::json!(["cy"]) {
            break;
        }
        assert!(Instant::now() < deadline, "ann still in r1: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r3 = join(&cy, "r3").await;
    assert_eq!(
        r3["Result"]["users"],
        serde_json::json!(["bob", "cy"]),
        "{r3}"
    );
    let dee = login(port, "dee").await;
    assert_eq!(
        join(&dee, "r4").await["Error"],
        "",
        "r1 went with its last member"
    );
    app.shutdown().await;
}
