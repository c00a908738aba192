//! The headline: one client request becomes one correctly nested trace, with every span
//! ended, its tags, and no mixing between concurrent clients.

mod common;

use std::collections::HashMap;

use common::{spans, start_demo, Span};
use rumqttc::QoS;

/// Follows the only child with `name` and `kind` of `parent`.
fn child<'a>(all: &'a [Span], parent: &Span, name: &str, kind: &str) -> &'a Span {
    let found: Vec<&Span> = all
        .iter()
        .filter(|s| s.parent.as_deref() == Some(&parent.id) && s.name == name && s.kind == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} `{name}` under `{}`: {all:#?}",
        parent.name
    );
    found[0]
}

fn assert_within(parent: &Span, c: &Span) {
    assert!(
        c.start >= parent.start && c.start + c.duration <= parent.start + parent.duration + 1,
        "`{}` [{}, +{}] is not inside `{}` [{}, +{}]",
        c.name,
        c.start,
        c.duration,
        parent.name,
        parent.start,
        parent.duration
    );
}

/// Checks the full chain and returns whether `Login/track3` was called.
fn assert_chat_tree(all: &[Span], user: &str) -> bool {
    let roots: Vec<&Span> = all.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root expected: {all:#?}");
    let root = roots[0];
    assert_eq!(
        (
            root.name.as_str(),
            root.service.as_str(),
            root.kind.as_str()
        ),
        ("gate Chat/HD_JoinChat", "Gate", "server")
    );
    let gate_client = child(all, root, "Chat/HD_JoinChat", "client");
    assert_eq!(gate_client.service, "Gate");
    let chat = child(all, gate_client, "Chat/HD_JoinChat", "server");
    assert_eq!(chat.service, "Chat");
    let track_c = child(all, chat, "Login/track", "client");
    let track = child(all, track_c, "Login/track", "server");
    assert_eq!(track.service, "Login");
    assert_eq!(track.tag("track").expect("track tag"), "track测试");
    let track2_c = child(all, track, "Login/track2", "client");
    let track2 = child(all, track2_c, "Login/track2", "server");
    assert_eq!(
        track2.tag("track").expect("track2 tag"),
        "track 第二个测试函数"
    );
    for (p, c) in [
        (root, gate_client),
        (gate_client, chat),
        (chat, track_c),
        (track_c, track),
        (track, track2_c),
        (track2_c, track2),
    ] {
        assert_within(p, c);
    }
    assert!(
        track.duration >= 20_000,
        "track sleeps 10 ms and track2 10 ms: {}",
        track.duration
    );
    // RPC semantic conventions and the user id on every RPC span.
    for s in all
        .iter()
        .filter(|s| s.kind == "server" && s.service != "Gate" || s.kind == "client")
    {
        assert_eq!(
            s.tag("rpc.system.name").expect("rpc.system.name"),
            "mqrs",
            "{}",
            s.name
        );
        assert_eq!(s.tag("rpc.method").expect("rpc.method"), s.name.as_str());
        assert_eq!(s.tag("user.id").expect("user.id"), user, "{}", s.name);
    }
    // HD_JoinChat pushes the room to the gate: Chat -> Gate/Push, beside Login/track.
    let push_c = child(all, chat, "Gate/Push", "client");
    let push = child(all, push_c, "Gate/Push", "server");
    assert_eq!(
        (push_c.service.as_str(), push.service.as_str()),
        ("Chat", "Gate")
    );
    assert_within(chat, push_c);
    let has3 = all.iter().any(|s| s.name == "Login/track3");
    if has3 {
        let t3c = child(all, track2, "Login/track3", "client");
        let t3 = child(all, t3c, "Login/track3", "server");
        assert_within(track2, t3c);
        assert_eq!(t3.service, "Login");
        assert_eq!(all.len(), 11);
    } else {
        assert_eq!(all.len(), 9);
    }
    // Exactly one SERVER span per handler name.
    let mut servers: HashMap<&str, usize> = HashMap::new();
    for s in all.iter().filter(|s| s.kind == "server") {
        *servers.entry(&s.name).or_default() += 1;
    }
    assert!(servers.values().all(|n| *n == 1), "{servers:?}");
    has3
}

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
