//! The demo chat as people use it: members of a room hear who comes, what is said and who
//! goes, also when they are connected to different gate processes behind mosquitto; a text
//! too long or said too fast gets an error reply; logging in again elsewhere kicks the older
//! connection, which first hears why.

mod common;

use std::time::Duration;

use common::mosquitto::Mosquitto;
use common::{start_demo, wait_for};
use demo::client::GateClient;
use demo::Parts;
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{App, Config};
use rumqttc::QoS;
use serde_json::{json, Value};

/// Sends `body` to `route` and returns the reply's `Result`, failing on an error reply.
async fn ok(c: &GateClient, route: &str, body: Value) -> Value {
    let r = c
        .request(route, body.to_string().as_bytes(), QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| panic!("{route}: {e}"));
    assert_eq!(r["Error"], "", "{route}: {r}");
    r["Result"].clone()
}

/// The next pushed message on `topic`, as JSON (other topics are skipped).
async fn heard(c: &GateClient, topic: &str) -> Value {
    loop {
        let (t, body) = c
            .message(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("nothing on {topic} within 5 s"));
        if t == topic {
            return serde_json::from_slice(&body).expect("JSON message");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_hear_who_comes_what_is_said_and_who_goes() {
    let d = start_demo(|_| {}).await;
    let (ann, ben) = (d.logged_in("ann").await, d.logged_in("ben").await);
    ok(&ann, "Chat/HD_JoinChat", json!({"roomName": "lobby"})).await;
    let users = ok(&ben, "Chat/HD_JoinChat", json!({"roomName": "lobby"})).await;
    assert_eq!(users["users"], json!(["ann", "ben"]));
    assert_eq!(
        heard(&ann, "Chat/OnJoin").await,
        json!({"room": "lobby", "user": "ben"})
    );
    let r = ok(&ben, "Chat/HD_Say", json!({"text": "hello, 世界"})).await;
    assert_eq!(r["delivered"], 2);
    for c in [&ann, &ben] {
        let m = heard(c, "Chat/OnSay").await;
        assert_eq!(m["room"], "lobby");
        assert_eq!(m["from"], "ben");
        assert_eq!(m["text"], "hello, 世界");
        assert!(
            m["at"].as_u64().is_some_and(|t| t > 1_700_000_000_000),
            "{m}"
        );
    }
    ok(&ben, "Chat/HD_LeaveChat", json!({})).await;
    assert_eq!(
        heard(&ann, "Chat/OnLeave").await,
        json!({"room": "lobby", "user": "ben"})
    );
    // A disconnect is a leave too.
    ok(&ben, "Chat/HD_JoinChat", json!({"roomName": "lobby"})).await;
    heard(&ann, "Chat/OnJoin").await;
    ben.disconnect().await;
    assert_eq!(heard(&ann, "Chat/OnLeave").await["user"], "ben");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_and_fast_talk_get_error_replies() {
    let d = start_demo(|_| {}).await;
    let cy = d.logged_in("cy").await;
    let say = |text: String| {
        let cy = &cy;
        async move {
            let body = json!({ "text": text }).to_string();
            cy.request("Chat/HD_Say", body.as_bytes(), QoS::AtLeastOnce)
                .await
                .expect("reply")
        }
    };
    let r = say("early".into()).await;
    assert!(
        r["Error"].as_str().unwrap_or("").contains("not in a room"),
        "{r}"
    );
    ok(&cy, "Chat/HD_JoinChat", json!({"roomName": "quiet"})).await;
    let r = say("x".repeat(1025)).await;
    assert!(
        r["Error"].as_str().unwrap_or("").contains("at most 1024"),
        "{r}"
    );
    // Five a second are fine (the long text above was refused before it counted).
    for i in 0..5 {
        assert_eq!(say(format!("m{i}")).await["Error"], "");
    }
    let r = say("one too many".into()).await;
    assert!(
        r["Error"].as_str().unwrap_or("").contains("too fast"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(say("again".into()).await["Error"], "");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_kicks_the_older_connection_which_hears_why() {
    let d = start_demo(|_| {}).await;
    let first = d.logged_in("kay").await;
    let second = d.logged_in("kay").await;
    let kick = heard(&first, "Login/OnKick").await;
    assert!(
        kick["reason"]
            .as_str()
            .unwrap_or("")
            .contains("another connection"),
        "{kick}"
    );
    // Then its connection is closed.
    let after = first.message(Duration::from_secs(5)).await;
    assert!(after.is_none(), "still open: {after:?}");
    assert_eq!(d.app.gate_stats().expect("gate").kicked, 1);
    // The newer connection goes on.
    ok(&second, "Chat/HD_JoinChat", json!({"roomName": "k"})).await;
    d.app.shutdown().await;
}

/// An app of the demo with `parts`, server id `sid`, on mosquitto at `port`; only the first
/// keeps a viewer.
async fn part(sid: &str, port: u16, parts: Parts) -> App {
    let mut c = Config::ephemeral();
    c.app.server_id = sid.into();
    c.broker.url = BrokerUrl::Urls(vec![format!("mqtt://127.0.0.1:{port}")]);
    c.trace.viewer = false;
    c.trace.collector = false;
    let app = demo::build(c, parts).expect("builds");
    app.start().await.expect("starts");
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_two_gate_processes_hear_each_other_through_mosquitto() {
    let m = Mosquitto::start();
    let only_gate = Parts {
        gate: true,
        login: false,
        chat: false,
    };
    let back = part(
        "back",
        m.port,
        Parts {
            gate: false,
            login: true,
            chat: true,
        },
    )
    .await;
    let (g1, g2) = (
        part("gate-1", m.port, only_gate).await,
        part("gate-2", m.port, only_gate).await,
    );
    wait_for("presence", Duration::from_secs(5), || {
        let seen = |app: &App, sid: &str, module: &str| {
            app.cluster()
                .get(sid)
                .is_some_and(|ms| ms.iter().any(|x| x == module))
        };
        seen(&g1, "back", "Chat")
            && seen(&g2, "back", "Login")
            && seen(&back, "gate-1", "Gate")
            && seen(&back, "gate-2", "Gate")
    })
    .await;
    let connect = |app: &App, user: &'static str| {
        let port = app.addrs().gate.expect("gate").port();
        async move {
            let c = GateClient::connect(&format!("split-{user}"), "127.0.0.1", port)
                .await
                .expect("connects");
            ok(
                &c,
                "Login/HD_Login",
                json!({"userName": user, "passWord": "pw"}),
            )
            .await;
            c
        }
    };
    let (ann, ben) = (connect(&g1, "ann").await, connect(&g2, "ben").await);
    ok(&ann, "Chat/HD_JoinChat", json!({"roomName": "split"})).await;
    ok(&ben, "Chat/HD_JoinChat", json!({"roomName": "split"})).await;
    assert_eq!(heard(&ann, "Chat/OnJoin").await["user"], "ben");
    let r = ok(&ben, "Chat/HD_Say", json!({"text": "across gates"})).await;
    assert_eq!(r["delivered"], 2);
    for c in [&ann, &ben] {
        let said = heard(c, "Chat/OnSay").await;
        assert_eq!(
            (said["from"].as_str(), said["text"].as_str()),
            (Some("ben"), Some("across gates"))
        );
    }
    for app in [g1, g2, back] {
        app.shutdown().await;
    }
}
