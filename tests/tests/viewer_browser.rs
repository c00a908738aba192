//! The viewer page in a real browser: headless Chromium loads it from the running demo, runs
//! its JavaScript against the API, and the rendered DOM must show the trace list and the
//! nested timeline. README's test command, `cargo xtask test`, installs Chromium; without it
//! this test fails and says so.

mod common;

use common::browser::{render, render_and_shoot};
use common::{spans, start_demo};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_page_renders_trace_list_and_timeline() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("ivy").await;
    let r = common::join_chat(&c, "ui", QoS::AtLeastOnce).await;
    let id = r["TraceId"].as_str().expect("traced").to_string();
    let trace = d.wait_chat_trace(&id).await;
    let n = spans(&trace).len();

    let base = format!("http://{}", d.viewer);
    let page = format!("{base}/trace/{id}");
    let dom = render_and_shoot(&page, "trace").await;
    // The rendered elements only, not the page's own script text.
    let dom = dom.split("<script").next().unwrap_or_default().to_string();
    assert_eq!(
        dom.matches("class=\"span-row").count(),
        n,
        "one row per span:\n{dom}"
    );
    // A legend with one colour per service, no two alike.
    let legend: Vec<&str> = dom
        .split("class=\"svc legend\" style=\"background:")
        .skip(1)
        .map(|r| r.split(['"', ';']).next().unwrap_or_default())
        .collect();
    let distinct: std::collections::HashSet<&&str> = legend.iter().collect();
    assert_eq!(
        (legend.len(), distinct.len()),
        (3, 3),
        "Gate, Chat, Login: {legend:?}"
    );
    // Each span's details: what it is, when it started, its own time.
    assert_eq!(dom.matches("data-details-of=").count(), n, "{dom}");
    assert!(
        dom.contains(">self time<") && dom.contains(">starts at<"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("download=\"trace-{id}.json\"")),
        "{dom}"
    );
    // The critical path: the root, and each span on it under a parent on it.
    let critical: Vec<String> = dom
        .split("data-span-id=\"")
        .skip(1)
        .filter(|r| r.contains("data-critical=\"1\""))
        .map(|r| r.split('"').next().unwrap_or_default().to_string())
        .collect();
    let all = spans(&trace);
    let root = all.iter().find(|s| s.parent.is_none()).expect("root");
    assert!(
        critical.contains(&root.id),
        "the root is on it: {critical:?}"
    );
    assert!(critical.len() >= 4, "{critical:?}");
    for c in &critical {
        let span = all
            .iter()
            .find(|s| &s.id == c)
            .expect("a span of the trace");
        if let Some(p) = &span.parent {
            assert!(
                critical.contains(p),
                "{} on the path without its parent",
                span.name
            );
        }
    }
    assert!(
        dom.contains("<h2 id=\"trace-title\">gate Chat/HD_JoinChat</h2>"),
        "{dom}"
    );
    assert!(dom.contains("track测试"), "tags are in the DOM: {dom}");
    // The deepest always-present span, Login/track2 SERVER, sits six levels below the root.
    assert!(dom.contains("data-depth=\"6\""), "nested timeline: {dom}");

    // Find within the trace: the spans whose name, service, tags or events hold the text.
    let want = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter(|sp| {
            let service = &trace["processes"][sp["processID"].as_str().unwrap_or_default()];
            format!(
                "{} {} {} {}",
                sp["operationName"], service["serviceName"], sp["tags"], sp["logs"]
            )
            .to_lowercase()
            .contains("track2")
        })
        .count();
    assert!(want >= 2, "{trace}");
    let found = render_and_shoot(&format!("{page}?find=TRACK2"), "trace-find").await;
    let found = found.split("<script").next().unwrap_or_default();
    assert_eq!(found.matches("data-match=\"1\"").count(), want, "{found}");
    assert!(found.contains(&format!("{want} spans")), "{found}");

    let list = format!("{base}/");
    let dom = render_and_shoot(&list, "search").await;
    let page_only = dom.split("<script").next().unwrap_or_default();
    // One dot in the duration plot per trace listed, the chat trace among them.
    let listed = page_only
        .matches("<tr class=\"trace-row\" data-trace-id=")
        .count();
    assert!(listed >= 1, "{page_only}");
    assert_eq!(
        page_only.matches("data-dot-of=").count(),
        listed,
        "{page_only}"
    );
    assert!(
        page_only.contains(&format!("data-dot-of=\"{id}\"")),
        "{page_only}"
    );
    assert!(
        dom.contains(&format!("data-trace-id=\"{id}\"")),
        "trace listed: {dom}"
    );
    assert!(
        dom.contains("<option value=\"Login\">Login</option>"),
        "services loaded: {dom}"
    );
    assert!(
        dom.contains("data-operation=\"Login/track2\""),
        "latency table rendered: {dom}"
    );
    // Per operation: its rate and error rate over the window.
    let row = page_only
        .split("<tr ")
        .find(|r| r.contains("data-operation=\"Login/track2\""))
        .unwrap_or_default();
    assert!(
        row.contains("/s</td>") && row.contains("data-error-rate"),
        "{row}"
    );
    d.app.shutdown().await;
}

/// A trace the sampler skipped but kept because it failed is marked so in the list and on
/// its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_marks_traces_kept_after_a_failure() {
    let d = start_demo(|c| c.trace.sample_ratio = 0.0).await;
    let c = d.logged_in("kim").await;
    let r = c
        .request("Chat/HD_JoinChat", br#"{"notARoom": 1}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert!(r["Error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    let id = r["TraceId"].as_str().expect("kept, so named").to_string();
    d.wait_chat_trace(&id).await;

    let base = format!("http://{}", d.viewer);
    let dom = render(&format!("{base}/")).await;
    let row = dom
        .split("<tr ")
        .find(|r| r.contains(&format!("data-trace-id=\"{id}\"")))
        .unwrap_or_else(|| panic!("kept trace listed: {dom}"));
    assert!(row.contains("kept: error"), "marked in the list: {row}");
    let dom = render(&format!("{base}/trace/{id}")).await;
    assert!(
        dom.contains("not sampled, kept (error)"),
        "marked on its page: {dom}"
    );
    d.app.shutdown().await;
}

/// One player's session on one timeline: every request of the connection in order, the failed
/// one marked, reachable from any of its traces, and the same by user id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_players_requests_show_on_one_timeline() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("liv").await;
    let first = common::join_chat(&c, "lobby", QoS::AtLeastOnce).await;
    let failed = c
        .request("Chat/HD_JoinChat", br#"{"roomName": ""}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    assert!(
        failed["Error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    let last = common::join_chat(&c, "arena", QoS::AtLeastOnce).await;
    let ids: Vec<String> = [&first, &failed, &last]
        .iter()
        .map(|r| r["TraceId"].as_str().expect("traced").to_string())
        .collect();
    let trace = d.wait_chat_trace(&ids[2]).await;
    let session = spans(&trace)
        .iter()
        .find_map(|s| s.tag("session.id"))
        .and_then(|v| v.as_str().map(str::to_string))
        .expect("the root names the session");
    // Another player's request must not show on this one's timeline.
    let other = d.logged_in("max").await;
    let theirs = common::join_chat(&other, "lobby", QoS::AtLeastOnce).await;
    let theirs = theirs["TraceId"].as_str().expect("traced").to_string();
    d.wait_chat_trace(&theirs).await;

    let base = format!("http://{}", d.viewer);
    let dom = render(&format!("{base}/trace/{}", ids[2])).await;
    assert!(
        dom.contains(&format!("href=\"/session/{session}\"")),
        "a trace links to its session: {dom}"
    );
    assert!(dom.contains("href=\"/user/liv\""), "and to its user: {dom}");

    for page in [format!("/session/{session}"), "/user/liv".to_string()] {
        let shot = if page.starts_with("/user") {
            "user"
        } else {
            "session"
        };
        let dom = render_and_shoot(&format!("{base}{page}"), shot).await;
        let rows: Vec<&str> = dom.split("class=\"session-row").skip(1).collect();
        // The login, then the three joins, in the order they were made: the demo does not
        // trace guests, so the login is a plain mark from the gate's request history.
        assert_eq!(rows.len(), 4, "{page}: one row per request:\n{dom}");
        assert!(
            rows[0].starts_with(" untraced") && rows[0].contains("gate Login/HD_Login"),
            "{page}: the guest's login, untraced: {}",
            rows[0]
        );
        let position = |id: &str| {
            rows.iter()
                .position(|r| r.contains(&format!("data-trace-id=\"{id}\"")))
        };
        let at: Vec<Option<usize>> = ids.iter().map(|id| position(id)).collect();
        assert_eq!(at, [Some(1), Some(2), Some(3)], "{page}: in order:\n{dom}");
        assert!(
            rows[2].starts_with(" failed"),
            "{page}: the failed join is marked: {}",
            rows[2]
        );
        assert!(!rows[1].starts_with(" failed") && !rows[3].starts_with(" failed"));
        assert!(
            !dom.contains(&theirs),
            "{page}: another player's request shows"
        );
        assert!(dom.contains("4 requests over"), "{page}: {dom}");
        assert!(dom.contains("3 traced"), "{page}: {dom}");
        assert!(dom.contains("1 failed"), "{page}: {dom}");
    }
    d.app.shutdown().await;
}

/// At 10 % sampling a player's timeline still shows every request: 50 of them (and the
/// guest's login before) as marks from the gate's request history, the sampled ones as the
/// traces they open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_players_timeline_shows_every_request_whatever_was_sampled() {
    let d = start_demo(|c| {
        c.trace.sample_ratio = 0.1;
        c.trace.keep_failed = false;
    })
    .await;
    let c = d.logged_in("sam").await;
    let mut traced = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let r = c
            .request("Chat/HD_CurrentRoom", b"{}", QoS::AtLeastOnce)
            .await
            .expect("reply");
        assert_eq!(r["Error"], "", "{r}");
        if let Some(id) = r["TraceId"].as_str().filter(|s| !s.is_empty()) {
            traced.insert(id.to_string());
        }
    }
    assert!(traced.len() < 50, "sampling at 10 % skipped some");
    for id in &traced {
        d.wait_trace(id, 1).await;
    }
    // The API: 51 requests of the user, the sampled ones naming their traces.
    let (status, h) = d.get("/api/history?user=sam").await;
    assert_eq!(status, 200, "{h}");
    let entries = h["data"][0]["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 51, "{h}");
    assert_eq!(entries[0]["operation"], "gate Login/HD_Login");
    assert!(
        entries[0]["trace_id"].is_null(),
        "the guest's login is not traced"
    );
    let named: std::collections::BTreeSet<String> = entries
        .iter()
        .filter_map(|e| e["trace_id"].as_str().map(String::from))
        .collect();
    assert_eq!(named, traced);
    assert!(entries
        .iter()
        .all(|e| e["duration_us"].as_u64().is_some_and(|d| d > 0)));

    // The page: one mark per request, the traced ones open their trace.
    let dom = render(&format!("http://{}/user/sam", d.viewer)).await;
    let rows: Vec<&str> = dom.split("class=\"session-row").skip(1).collect();
    assert_eq!(rows.len(), 51, "{dom}");
    let linked = rows.iter().filter(|r| r.contains("data-trace-id=")).count();
    assert_eq!(linked, traced.len(), "{dom}");
    assert_eq!(
        rows.iter().filter(|r| r.starts_with(" untraced")).count(),
        51 - traced.len()
    );
    assert!(dom.contains("51 requests over"), "{dom}");
    assert!(dom.contains(&format!("{} traced", traced.len())), "{dom}");
    // `/api/stats` says what the history holds.
    let (_, stats) = d.get("/api/stats").await;
    assert!(
        stats["history"]["entries"]
            .as_u64()
            .is_some_and(|n| n >= 51),
        "{stats}"
    );
    assert_eq!(stats["history"]["per_connection"], 256);
    d.app.shutdown().await;
}
