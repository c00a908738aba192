//! The shape of the chat scenario's trace (`Chat/HD_JoinChat` → `Login/track` → `track2` →
//! sometimes `track3`, beside `Gate/Push`), checked span by span on a Jaeger JSON trace; the
//! same check holds whether the modules ran in one process or several, and whether or not
//! handlers' `tracing` spans are recorded.

use std::collections::HashMap;

use super::Span;

/// Follows the only child with `name` and `kind` of `parent`.
pub fn child<'a>(all: &'a [Span], parent: &Span, name: &str, kind: &str) -> &'a Span {
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

pub fn assert_within(parent: &Span, c: &Span) {
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
pub fn assert_chat_tree(all: &[Span], user: &str) -> bool {
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
    // `tracing` spans opened in handlers (recorded when the app's subscriber has
    // `mqrs_runtime::trace::layer()`) sit inside a span of the same service.
    let internal: Vec<&Span> = all.iter().filter(|s| s.kind == "internal").collect();
    for s in &internal {
        let parent = all
            .iter()
            .find(|p| Some(&p.id) == s.parent.as_ref())
            .unwrap_or_else(|| panic!("`{}` has no parent in the trace: {all:#?}", s.name));
        assert_eq!(
            s.service, parent.service,
            "`{}` under `{}`",
            s.name, parent.name
        );
        assert_within(parent, s);
    }
    // Joining a room where others are tells them (`Chat/OnJoin`): one Chat -> Gate/SendBatch
    // call per gate that holds them.
    let told = all
        .iter()
        .filter(|s| s.name == "Gate/SendBatch" && s.kind == "client")
        .count();
    for c in all
        .iter()
        .filter(|s| s.name == "Gate/SendBatch" && s.kind == "client")
    {
        assert_eq!(
            c.parent.as_ref(),
            Some(&chat.id),
            "SendBatch under HD_JoinChat"
        );
        let served = child(all, c, "Gate/SendBatch", "server");
        // The recipient count, on the caller's span and on the gate's.
        let count = c.tag("messaging.batch.message_count");
        assert!(
            count
                .as_ref()
                .and_then(|n| n.as_i64())
                .is_some_and(|n| n >= 1),
            "the CLIENT span counts the batch's recipients: {count:?}"
        );
        assert_eq!(served.tag("messaging.batch.message_count"), count);
    }
    let rpc_spans = all.len() - internal.len() - 2 * told;
    let has3 = all.iter().any(|s| s.name == "Login/track3");
    if has3 {
        let t3c = child(all, track2, "Login/track3", "client");
        let t3 = child(all, t3c, "Login/track3", "server");
        assert_within(track2, t3c);
        assert_eq!(t3.service, "Login");
        assert_eq!(rpc_spans, 11);
    } else {
        assert_eq!(rpc_spans, 9);
    }
    // Exactly one SERVER span per handler name.
    let mut servers: HashMap<&str, usize> = HashMap::new();
    for s in all.iter().filter(|s| s.kind == "server") {
        *servers.entry(&s.name).or_default() += 1;
    }
    assert!(servers.values().all(|n| *n == 1), "{servers:?}");
    has3
}
