//! Unit tests of the store: eviction by count, bytes and session share, caps, search, the
//! operation index, and the figures computed over the spans held.

use std::borrow::Cow;
use std::sync::Arc;

use super::players::Key;
use super::traces::{keep_spare_buffers, spare_buffer, SPARE, SPARE_MAX_BYTES};
use super::*;

fn span(trace: u128, id: u64, name: &'static str, pad: usize) -> StoredSpan {
    StoredSpan {
        trace_id: trace,
        span_id: id,
        parent_span_id: None,
        name: Cow::Borrowed(name),
        service: Arc::from("Login"),
        kind: "server",
        start_us: 1_000 + trace as u64,
        duration_us: 10,
        tags: vec![Tag::new("pad", "x".repeat(pad))],
        events: vec![],
        error: None,
        ..Default::default()
    }
}

#[test]
fn evicts_oldest_trace_by_count_and_counts_drops() {
    let store = TraceStore::new(StoreLimits {
        max_traces: 2,
        ..Default::default()
    });
    store.insert(span(1, 1, "a", 0));
    store.insert(span(1, 2, "a", 0));
    store.insert(span(2, 3, "b", 0));
    store.insert(span(3, 4, "c", 0));
    assert!(store.trace(1).is_none(), "oldest trace should be gone");
    assert!(store.trace(2).is_some() && store.trace(3).is_some());
    let st = store.stats();
    assert_eq!((st.traces, st.spans, st.spans_dropped), (2, 2, 2));
}

#[test]
fn evicts_by_bytes() {
    let one = span(1, 1, "a", 1000).stored_bytes();
    let store = TraceStore::new(StoreLimits {
        max_bytes: one * 2 + 10,
        ..Default::default()
    });
    for t in 1..=5 {
        store.insert(span(t, t as u64, "a", 1000));
    }
    let st = store.stats();
    assert_eq!(st.traces, 2);
    assert!(st.bytes <= one * 2 + 10);
    assert_eq!(st.spans_dropped, 3);
    assert!(store.trace(5).is_some() && store.trace(4).is_some());
}

#[test]
fn refuses_oversized_span_and_caps_spans_per_trace() {
    let store = TraceStore::new(StoreLimits {
        max_bytes: 500,
        max_spans_per_trace: 2,
        ..Default::default()
    });
    store.insert(span(1, 1, "big", 10_000));
    assert_eq!(store.stats().spans, 0);
    for id in 1..=3 {
        store.insert(span(2, id, "a", 0));
    }
    let st = store.stats();
    assert_eq!((st.spans, st.spans_dropped), (2, 2));
}

#[test]
fn find_filters_and_orders_newest_first() {
    let store = TraceStore::new(StoreLimits::default());
    for t in 1..=4u128 {
        let mut s = span(t, t as u64, if t % 2 == 0 { "even" } else { "odd" }, 0);
        s.duration_us = t as u64 * 100;
        store.insert(s);
    }
    let q = TraceQuery {
        operation: Some("even".into()),
        limit: 10,
        ..Default::default()
    };
    let ids: Vec<u128> = store.find(&q).iter().map(|t| t.spans[0].trace_id).collect();
    assert_eq!(ids, vec![4, 2]);
    let q = TraceQuery {
        min_duration_us: Some(250),
        limit: 1,
        ..Default::default()
    };
    let ids: Vec<u128> = store.find(&q).iter().map(|t| t.spans[0].trace_id).collect();
    assert_eq!(ids, vec![4]);
    let q = TraceQuery {
        tags: vec![("pad".into(), "".into())],
        service: Some("Nope".into()),
        limit: 10,
        ..Default::default()
    };
    assert!(store.find(&q).is_empty());
    assert_eq!(store.services(), vec!["Login".to_string()]);
    assert_eq!(store.operations("Login").len(), 2);
}

#[test]
fn dependencies_count_cross_service_parent_links() {
    let store = TraceStore::new(StoreLimits::default());
    let mut root = span(1, 1, "gate", 0);
    root.service = Arc::from("Gate");
    let mut a = span(1, 2, "Login/track", 0);
    a.parent_span_id = Some(1);
    let mut b = span(1, 3, "Login/track2", 0);
    b.parent_span_id = Some(2);
    let mut root2 = span(2, 1, "gate", 0);
    root2.service = Arc::from("Gate");
    let mut failed = span(2, 2, "Login/track", 0);
    failed.parent_span_id = Some(1);
    failed.duration_us = 900;
    failed.error = Some("boom".into());
    for s in [root, a, b, root2, failed] {
        store.insert(s);
    }
    let deps = store.dependencies(0, u64::MAX);
    assert_eq!(
        deps,
        vec![Dependency {
            parent: "Gate".into(),
            child: "Login".into(),
            calls: 2,
            errors: 1,
            p95_us: 900,
        }]
    );
    // The spans start at 1_001 µs: a window that ends before them sees no calls.
    assert!(store.dependencies(0, 1_000).is_empty());
}

#[test]
fn latency_percentiles_per_operation() {
    let store = TraceStore::new(StoreLimits::default());
    for i in 1..=100u64 {
        let mut s = span(i as u128, i, "op", 0);
        s.duration_us = i;
        s.error = (i % 10 == 0).then_some(Cow::Borrowed("e"));
        store.insert(s);
    }
    let l = store.latency(0);
    assert_eq!(l.len(), 1);
    let op = &l[0];
    assert_eq!((op.count, op.errors, op.max_us), (100, 10, 100));
    // Nearest rank over 1..=100: the p-th value is p.
    assert_eq!(
        (op.p50_us, op.p95_us, op.p99_us, op.avg_us),
        (50, 95, 99, 50)
    );
    assert!(store.latency(u64::MAX).is_empty());
}

#[test]
fn operation_index_shrinks_as_traces_are_evicted_and_values_are_cut() {
    let store = TraceStore::new(StoreLimits {
        max_traces: 3,
        ..Default::default()
    });
    let names: Vec<&'static str> = (0..10)
        .map(|i| &*Box::leak(format!("op{i}").into_boxed_str()))
        .collect();
    for (i, n) in names.iter().enumerate() {
        store.insert(span(i as u128 + 1, i as u64 + 1, n, 0));
    }
    // Ten operations went through; the three traces held name three of them.
    let ops: Vec<String> = store.operations("Login").into_iter().map(|o| o.0).collect();
    assert_eq!(ops, ["op7", "op8", "op9"]);
    let mut big = span(100, 100, "big", 0);
    big.tags = vec![Tag::new("user.id", "u".repeat(100_000))];
    big.name = Cow::Owned("n".repeat(10_000));
    store.insert(big);
    let t = store.trace(100).expect("stored");
    assert!(t.spans[0].name.len() <= MAX_NAME_BYTES + 3);
    let v = t.spans[0]
        .tag("user.id")
        .expect("tag")
        .as_str()
        .into_owned();
    assert!(
        v.len() <= MAX_VALUE_BYTES + 3 && v.ends_with('…'),
        "{}",
        v.len()
    );
    // Evicting the last span of a service forgets the service too.
    for i in 200..204 {
        let mut s = span(i, i as u64, "x", 0);
        s.service = Arc::from("Other");
        store.insert(s);
    }
    assert_eq!(store.services(), vec!["Other".to_string()]);
}

#[test]
fn a_flooding_session_loses_its_own_traces_not_the_others() {
    let store = TraceStore::new(StoreLimits {
        max_traces: 10,
        max_traces_per_session: 3,
        ..Default::default()
    });
    let of = |trace: u128, session: &'static str| {
        let mut s = span(trace, trace as u64, "op", 0);
        s.tags = vec![Tag::new("session.id", session)];
        s
    };
    store.insert(of(1, "calm"));
    store.insert(of(2, "calm"));
    for t in 100..200 {
        store.insert(of(t, "flood"));
    }
    // The flood keeps its newest three; the calm session keeps both of its traces.
    assert!(store.trace(1).is_some() && store.trace(2).is_some());
    let flood: Vec<u128> = (100..200).filter(|t| store.trace(*t).is_some()).collect();
    assert_eq!(flood, vec![197, 198, 199]);
    assert_eq!(store.stats().traces, 5);
}

#[test]
fn nearest_rank_from_first_principles() {
    // n = 100: rank p. n = 10: p50 is the 5th, p95 and p99 the 10th. n = 1: always the 1st.
    assert_eq!(
        [50, 95, 99, 100].map(|p| nearest_rank(100, p)),
        [50, 95, 99, 100]
    );
    assert_eq!([50, 95, 99].map(|p| nearest_rank(10, p)), [5, 10, 10]);
    assert_eq!([0, 50, 99].map(|p| nearest_rank(1, p)), [1, 1, 1]);
    assert_eq!(nearest_rank(3, 50), 2);
}

#[test]
fn searches_by_user_or_session_read_the_players_lists_and_stay_exact() {
    let store = TraceStore::new(StoreLimits {
        max_traces: 4,
        ..Default::default()
    });
    let tagged = |trace: u128, id: u64, user: Option<&'static str>, session: &'static str| {
        let mut s = span(trace, id, "Login/track", 0);
        s.tags.push(Tag::new("session.id", session));
        if let Some(u) = user {
            s.tags.push(Tag::new("user.id", u));
        }
        s
    };
    // Trace 1 logs a player in: its first span has no user, a later one names "ann".
    store.insert(tagged(1, 1, None, "s1"));
    store.insert(tagged(1, 2, Some("ann"), "s1"));
    store.insert(tagged(2, 3, Some("bob"), "s2"));
    store.insert(tagged(3, 4, Some("ann"), "s1"));
    let find = |k: &str, v: &str| -> Vec<u128> {
        let q = TraceQuery {
            tags: vec![(k.to_string(), v.to_string())],
            limit: 10,
            ..Default::default()
        };
        store.find(&q).iter().map(|t| t.spans[0].trace_id).collect()
    };
    assert_eq!(
        find("user.id", "ann"),
        vec![3, 1],
        "newest first, late user found"
    );
    assert_eq!(find("session.id", "s1"), vec![3, 1]);
    assert_eq!(find("user.id", "bob"), vec![2]);
    assert!(find("user.id", "nobody").is_empty());
    // Evicting the oldest traces takes them off the lists too.
    for t in 10..13 {
        store.insert(tagged(t, 100 + t as u64, Some("cy"), "s3"));
    }
    assert_eq!(find("user.id", "ann"), vec![3]);
    assert_eq!(find("session.id", "s2"), Vec::<u128>::new());
    assert_eq!(find("user.id", "cy"), vec![12, 11, 10]);
    let g = store.lock();
    let listed: usize = ["ann", "bob", "cy"]
        .iter()
        .map(|u| g.players.count(Key::User(store.player_hash(u))))
        .sum();
    assert_eq!(listed, g.traces.len(), "one entry per held trace and user");
}

#[test]
fn a_store_with_a_data_dir_reads_back_what_it_held_within_its_caps() {
    let dir = std::env::temp_dir().join(format!("mqrs-store-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let limits = StoreLimits::default();
    let store = TraceStore::persistent(limits, &dir).expect("open");
    assert!(store.is_persistent());
    let mut kept = span(3, 30, "Login/track", 0);
    kept.tags.push(Tag::new("user.id", "ann"));
    kept.events.push(StoredEvent::new(
        "reply queued",
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(5),
        vec![Tag::new("bytes", 12i64)],
        0,
    ));
    kept.error = Some("boom".into());
    for s in [span(1, 10, "a", 0), span(2, 20, "b", 0), kept.clone()] {
        store.insert(s);
    }
    store.close();
    drop(store);

    let back = TraceStore::persistent(limits, &dir).expect("reopen");
    assert_eq!(back.stats().traces, 3);
    assert_eq!(
        back.trace(3).map(|t| t.spans),
        Some(vec![kept]),
        "span for span"
    );
    let q = TraceQuery {
        tags: vec![("user.id".into(), "ann".into())],
        limit: 5,
        ..Default::default()
    };
    assert_eq!(back.find(&q).len(), 1, "the player lists are rebuilt");
    back.insert(span(4, 40, "c", 0));
    back.close();
    drop(back);

    // Smaller caps on the next start: the newest traces stay.
    let small = StoreLimits {
        max_traces: 2,
        ..limits
    };
    let again = TraceStore::persistent(small, &dir).expect("reopen");
    let held: Vec<bool> = (1..=4).map(|t| again.trace(t).is_some()).collect();
    assert_eq!(held, [false, false, true, true]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_trace_taken_out_for_its_session_never_leaves_another_unevictable() {
    // One trace per session, and room for two small spans in all.
    let one = span(1, 1, "a", 0).stored_bytes();
    let store = TraceStore::new(StoreLimits {
        max_traces_per_session: 1,
        max_bytes: 2 * one + one / 2,
        ..Default::default()
    });
    let in_session = |trace: u128, id: u64| {
        let mut s = span(trace, id, "a", 0);
        s.tags.push(Tag::new("session.id", "s1"));
        s
    };
    store.insert(in_session(1, 1));
    // Trace 2 of the same session takes trace 1 out (its id stays behind in the order).
    store.insert(in_session(2, 2));
    store.insert(in_session(2, 3));
    // Trace 2 is the oldest held: a span over the byte cap is refused, the trace kept.
    store.insert(in_session(2, 4));
    {
        let g = store.lock();
        assert_eq!(g.traces.get(&2).map(|t| t.spans), Some(2));
        assert!(
            g.traces.keys().all(|id| g.order.contains(id)),
            "every held trace can be evicted"
        );
    }
    // And it is evicted like any other when newer traces need the room.
    store.insert(span(3, 5, "a", 0));
    store.insert(span(4, 6, "a", 0));
    assert!(store.trace(2).is_none());
    assert!(store.trace(4).is_some());
}

#[test]
fn with_a_data_dir_waiting_spans_reach_the_log_within_a_second_without_a_read() {
    let dir = std::env::temp_dir().join(format!("mqrs-store-flush-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = TraceStore::persistent(StoreLimits::default(), &dir).expect("open");
    // One span: far from filling its thread's batch, and nothing reads the store.
    store.insert(span(9, 90, "quiet", 0));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut logged = Vec::new();
    disk::replay(&dir, |id, _| logged.push(id)).expect("replay");
    assert_eq!(logged, [9], "logged without a read or a stop");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_evicted_traces_buffer_is_filled_again_when_its_size_fits() {
    // Run on a thread of its own: the spare buffers are per thread.
    std::thread::spawn(|| {
        let b = Vec::<u8>::with_capacity(100);
        let ptr = b.as_ptr();
        keep_spare_buffers([b].into_iter());
        let again = spare_buffer(80);
        assert_eq!(again.as_ptr(), ptr, "a buffer of about the size is reused");
        assert!(again.is_empty());
        // Much larger than needed: not used (it would hold memory the store does not count),
        // and freed.
        keep_spare_buffers([again].into_iter());
        let fresh = spare_buffer(10);
        assert!(fresh.capacity() >= 10 && fresh.capacity() < 100);
        assert!(SPARE.with(|s| s.borrow().is_empty()));
        // Large buffers are not kept at all.
        keep_spare_buffers([Vec::with_capacity(SPARE_MAX_BYTES + 1)].into_iter());
        assert!(SPARE.with(|s| s.borrow().is_empty()));
        // A store at its cap keeps working through reused buffers, contents intact.
        let store = TraceStore::new(StoreLimits {
            max_traces: 4,
            ..StoreLimits::default()
        });
        for i in 1..=200u128 {
            store.insert(span(i, i as u64, "op", (i % 7) as usize * 10));
        }
        for i in 197..=200u128 {
            let t = store.trace(i).expect("the newest are held");
            assert_eq!(
                t.spans,
                vec![span(i, i as u64, "op", (i % 7) as usize * 10)]
            );
        }
        assert_eq!(store.stats().traces, 4);
    })
    .join()
    .expect("test thread");
}

#[test]
fn a_span_id_held_twice_or_a_span_its_own_parent_is_refused_and_counted() {
    let store = TraceStore::new(StoreLimits::default());
    store.insert(span(7, 1, "root", 0));
    let mut child = span(7, 2, "child", 0);
    child.parent_span_id = Some(1);
    store.insert(child);
    // The attack: the root's id again, naming itself as parent, with a false error.
    let mut poison = span(7, 1, "poison", 0);
    poison.parent_span_id = Some(1);
    poison.error = Some("fake".into());
    store.insert(poison);
    // The same id again with another parent: still refused, the first one stays.
    let mut again = span(7, 1, "again", 0);
    again.parent_span_id = Some(2);
    store.insert(again);
    let t = store.trace(7).expect("held");
    let names: Vec<&str> = t.spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["root", "child"]);
    assert!(t.spans.iter().all(|s| s.error.is_none()));
    let st = store.stats();
    assert_eq!((st.spans, st.spans_conflicting), (2, 2));
    assert_eq!(st.spans_dropped, 2);
    // The same span id in another trace is no conflict.
    store.insert(span(8, 1, "root", 0));
    assert_eq!(store.stats().spans_conflicting, 2);
    assert!(store.trace(8).is_some());
}

#[test]
fn a_trace_read_within_a_budget_stops_after_whole_spans() {
    let store = TraceStore::new(StoreLimits::default());
    for i in 1..=10u64 {
        store.insert(span(9, i, "s", 1000));
    }
    let one = span(9, 1, "s", 1000).stored_bytes();
    let (t, total) = store.trace_within(9, 3 * one + 5).expect("held");
    assert_eq!((t.spans.len(), total), (3, 10));
    assert_eq!(t.stored_bytes(), 3 * one);
    assert_eq!(
        t.spans.iter().map(|s| s.span_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // At least one span, however small the budget.
    assert_eq!(store.trace_within(9, 1).expect("held").0.spans.len(), 1);
    let (all, total) = store.trace_within(9, usize::MAX).expect("held");
    assert_eq!((all.spans.len(), total), (10, 10));
}

#[test]
fn a_first_match_larger_than_the_answer_budget_is_cut_to_whole_spans() {
    let store = TraceStore::new(StoreLimits::default());
    for i in 1..=10u64 {
        store.insert(span(9, i, "s", 1000));
    }
    let one = span(9, 1, "s", 1000).stored_bytes();
    let q = TraceQuery {
        limit: 5,
        max_bytes: 3 * one + 5,
        ..Default::default()
    };
    let (found, cut) = store.find_within(&q);
    assert!(cut, "the answer says it was cut");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].spans.len(), 3);
    assert_eq!(found[0].stored_bytes(), 3 * one);
}

#[test]
fn searches_match_process_tags_the_scope_and_an_ok_status() {
    let store = TraceStore::new(StoreLimits::default());
    let mut a = span(1, 1, "a", 0);
    a.resource = vec![Tag::new("host.name", "h7")].into();
    a.scope = (Cow::Borrowed("io.example.lib"), Cow::Borrowed("1.0"));
    a.status_ok = true;
    store.insert(a);
    store.insert(span(2, 2, "b", 0));
    let ids = |k: &str, v: &str| -> Vec<u128> {
        let q = TraceQuery {
            tags: vec![(k.into(), v.into())],
            limit: 10,
            ..Default::default()
        };
        store.find(&q).iter().map(|t| t.spans[0].trace_id).collect()
    };
    assert_eq!(ids("host.name", "h7"), [1]);
    assert_eq!(ids("host.name", "h8"), Vec::<u128>::new());
    assert_eq!(ids("otel.scope.name", "io.example.lib"), [1]);
    assert_eq!(ids("otel.status_code", "OK"), [1]);
    assert_eq!(ids("otel.status_code", "ERROR"), Vec::<u128>::new());
}

#[test]
fn a_span_limited_once_is_the_same_when_read_back() {
    let store = TraceStore::new(StoreLimits::default());
    let mut s = span(3, 1, "wide", 0);
    s.tags = (0..200)
        .map(|i| Tag::new(format!("k{i}"), i as i64))
        .collect();
    store.insert(s);
    let once = store.trace(3).expect("held").spans.remove(0);
    assert_eq!(
        once.tag("otel.dropped_attributes_count").cloned(),
        Some(opentelemetry::Value::I64(72))
    );
    // As a data directory's replay does: the stored span enters a store again.
    let again = TraceStore::new(StoreLimits::default());
    again.insert(once.clone());
    let twice = again.trace(3).expect("held").spans.remove(0);
    assert_eq!(twice.tags, once.tags);
}
