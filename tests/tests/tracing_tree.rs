//! The headline: one client request becomes one correctly nested trace, with every span
//! ended, its tags, and no mixing between concurrent clients.

mod common;

use common::chat_tree::assert_chat_tree;
use common::{spans, start_demo};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_chat_produces_the_nested_trace() {
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
