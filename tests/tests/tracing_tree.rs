//! The headline: one client request becomes one correctly nested trace, with every span
//! ended, its tags, and no mixing between concurrent clients; handlers' `tracing` logs and
//! spans appear inside their RPC spans.

mod common;

use std::collections::HashMap;

use common::chat_tree::{assert_chat_tree, assert_within};
use common::{spans, start_demo};
use rumqttc::QoS;
use serde_json::Value;

/// Installs, once for this test binary, a subscriber like the demo's: `info` and the demo's own
/// `debug` lines, with `mqrs_runtime::trace::layer()`. Every test here runs with it.
fn install_layer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(
                "info,demo=debug,mqtt5=warn",
            ))
            .with(mqrs_runtime::trace::layer());
        tracing::subscriber::set_global_default(subscriber)
            .expect("the only subscriber of this test binary");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_chat_produces_the_nested_trace() {
    install_layer();
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("alice").await;
    let r = common::join_chat(&c, "mqant", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "");
    assert_eq!(r["Result"]["roomName"], "mqant");
    assert_eq!(r["Result"]["users"], serde_json::json!(["alice"]));
    let id = r["TraceId"]
        .as_str()
        .expect("traced request carries TraceId");
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let trace = d.wait_chat_trace(id).await;
    assert_eq!(trace["traceID"], id);
    assert_chat_tree(&spans(&trace), "alice");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track3_is_called_about_69_percent_of_the_time() {
    install_layer();
    let d = start_demo(|_| {}).await;
    let mut ids = Vec::new();
    let clients = futures_join(4, |i| {
        let d = &d;
        async move { d.logged_in(&format!("u{i}")).await }
    })
    .await;
    for round in 0..10 {
        for c in &clients {
            let r = common::join_chat(c, "r", QoS::AtMostOnce).await;
            assert_eq!(r["Error"], "", "round {round}: {r}");
            ids.push(r["TraceId"].as_str().expect("trace id").to_string());
        }
    }
    let mut with3 = 0;
    for id in &ids {
        let t = d.wait_chat_trace(id).await;
        if spans(&t).iter().any(|s| s.name == "Login/track3") {
            with3 += 1;
        }
    }
    // Binomial(40, 0.69): outside 14..=38 has probability below 1e-5.
    assert!((14..=38).contains(&with3), "track3 in {with3} of 40 traces");
    d.app.shutdown().await;
}

async fn futures_join<F, T>(n: usize, f: impl Fn(usize) -> F) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut out = Vec::new();
    for i in 0..n {
        out.push(f(i).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_traces_never_mix() {
    install_layer();
    let d = std::sync::Arc::new(start_demo(|_| {}).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("user{i}");
            let c = d.logged_in(&user).await;
            let mut ids = Vec::new();
            for _ in 0..4 {
                let r = common::join_chat(&c, "busy", QoS::AtLeastOnce).await;
                assert_eq!(r["Error"], "");
                ids.push(r["TraceId"].as_str().expect("trace id").to_string());
            }
            (user, ids)
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        let (user, ids) = t.await.expect("client task");
        for id in ids {
            assert!(seen.insert(id.clone()), "trace id {id} reused");
            let trace = d.wait_chat_trace(&id).await;
            let all = spans(&trace);
            assert_chat_tree(&all, &user);
            for s in &all {
                if let Some(u) = s.tag("user.id") {
                    assert_eq!(u, user.as_str(), "span {} of {user}'s trace", s.name);
                }
            }
        }
    }
    assert_eq!(seen.len(), 32);
    d.app.shutdown().await;
}

/// The Jaeger `logs` of the one span named `name` of `kind`, each as its fields by key.
fn logs_of(trace: &Value, name: &str, kind: &str) -> Vec<HashMap<String, Value>> {
    let all = spans(trace);
    let found: Vec<_> = all
        .iter()
        .filter(|s| s.name == name && s.kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} `{name}` expected: {all:#?}");
    let raw = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["spanID"] == found[0].id.as_str())
        .expect("span by id");
    raw["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| {
            l["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .map(|f| {
                    let key = f["key"].as_str().expect("key").to_string();
                    (key, f["value"].clone())
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_logs_and_tracing_spans_land_in_their_rpc_spans() {
    install_layer();
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("carol").await;
    // Outside any handler: recorded nowhere.
    tracing::info!(user = "carol", "outside any handler");
    let r = common::join_chat(&c, "logs", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "", "{r}");
    let id = r["TraceId"].as_str().expect("trace id");
    let trace = d.wait_chat_trace(id).await;
    let all = spans(&trace);
    assert_chat_tree(&all, "carol");

    // `Login/track`'s `info!` line, with its fields, on its SERVER span.
    let track = logs_of(&trace, "Login/track", "server");
    assert_eq!(track.len(), 1, "{track:?}");
    assert_eq!(track[0]["event"], "track called");
    assert_eq!(track[0]["level"], "INFO");
    assert_eq!(track[0]["target"], "demo::login");
    assert_eq!(track[0]["user"], "carol");
    // Chat's `debug!` after its call to `Login/track` returned lands in Chat's span.
    let chat = logs_of(&trace, "Chat/HD_JoinChat", "server");
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert_eq!(chat[0]["event"], "Login/track answered");
    assert_eq!(chat[0]["level"], "DEBUG");
    assert_eq!(chat[0]["track"], "My is Login Module");

    // `track2`'s `tracing` span: an INTERNAL child of its SERVER span, in Login's service.
    let track2 = all
        .iter()
        .find(|s| s.name == "Login/track2" && s.kind == "server")
        .expect("track2");
    let wait: Vec<_> = all.iter().filter(|s| s.kind == "internal").collect();
    assert_eq!(wait.len(), 1, "{all:#?}");
    let wait = wait[0];
    assert_eq!(wait.name, "track2 wait");
    assert_eq!(wait.service, "Login");
    assert_eq!(wait.parent.as_deref(), Some(track2.id.as_str()));
    assert_eq!(wait.tag("ms"), Some(Value::from(10)));
    assert!(wait.duration >= 10_000, "sleeps 10 ms: {}", wait.duration);
    assert_within(track2, wait);

    // No other span has logs but the gate root's own `reply queued`.
    for s in &all {
        let logs = logs_of(&trace, &s.name, &s.kind);
        match (s.name.as_str(), s.kind.as_str()) {
            ("Login/track" | "Chat/HD_JoinChat", "server") => {}
            (_, _) if s.parent.is_none() => {
                assert!(
                    logs.iter().all(|l| l["event"] == "reply queued"),
                    "{logs:?}"
                )
            }
            _ => assert!(logs.is_empty(), "`{}` {}: {logs:?}", s.name, s.kind),
        }
    }
    d.app.shutdown().await;
}
