//! The embedded store under a burst through the gate: whatever arrives, it holds at most its
//! caps (traces, bytes), counts what it evicted, and keeps the newest traces whole.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::start_demo;
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_leaves_the_store_within_its_caps() {
    const MAX_TRACES: usize = 40;
    const MAX_BYTES: usize = 64 * 1024;
    let d = start_demo(|c| {
        c.trace.max_traces = MAX_TRACES;
        c.trace.max_bytes = MAX_BYTES;
    })
    .await;
    let store = d.app.trace_store().expect("store");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = Arc::new(d.logged_in(&format!("burst{i}")).await);
        for _ in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut last = None;
                for _ in 0..25 {
                    let r = c
                        .request("Chat/HD_CurrentRoom", b"{}", QoS::AtMostOnce)
                        .await
                        .expect("reply");
                    last = r["TraceId"].as_str().map(str::to_string);
                }
                last
            }));
        }
    }
    let mut newest = Vec::new();
    for t in tasks {
        newest.extend(t.await.expect("task"));
    }
    // 800 traced requests of 3 spans each went through a store capped at 40 traces.
    let st = store.stats();
    assert!(st.traces <= MAX_TRACES, "{st:?}");
    assert!(st.bytes <= MAX_BYTES, "{st:?}");
    assert!(st.spans_received >= 800 * 3, "{st:?}");
    assert!(
        st.spans_dropped >= st.spans_received - (MAX_TRACES * 3) as u64,
        "every evicted span is counted: {st:?}"
    );
    // The newest traces are kept, whole (the root ends just after its reply, so wait for it).
    let ids: Vec<u128> = newest
        .iter()
        .filter_map(|id| u128::from_str_radix(id, 16).ok())
        .collect();
    common::wait_for("the newest traces, whole", Duration::from_secs(5), || {
        let kept: Vec<_> = ids.iter().filter_map(|id| store.trace(*id)).collect();
        !kept.is_empty() && kept.iter().all(|t| t.spans.len() == 3)
    })
    .await;
    let (status, stats) = d.get("/api/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["traces"].as_u64(), Some(st.traces as u64), "{stats}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_client_cannot_wipe_the_others_traces() {
    let d = start_demo(|c| {
        c.trace.max_traces = 50;
        c.trace.max_traces_per_session = 10;
    })
    .await;
    let store = d.app.trace_store().expect("store");
    let calm = d.logged_in("calm").await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        let r = common::join_chat(&calm, "calm", QoS::AtLeastOnce).await;
        kept.push(r["TraceId"].as_str().expect("traced").to_string());
    }
    for id in &kept {
        d.wait_chat_trace(id).await;
    }
    let flood = d.logged_in("flood").await;
    for _ in 0..300 {
        flood
            .request("Chat/HD_CurrentRoom", b"{}", QoS::AtMostOnce)
            .await
            .expect("reply");
    }
    for id in &kept {
        let id = u128::from_str_radix(id, 16).expect("hex");
        assert!(
            store.trace(id).is_some(),
            "the calm client's trace {id:x} was wiped"
        );
    }
    assert!(store.stats().traces <= 50);
    d.app.shutdown().await;
}
