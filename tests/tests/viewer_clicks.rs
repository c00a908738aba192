//! The viewer as a user works it, in headless Chromium driven over the DevTools protocol: real
//! mouse clicks and typing on the search page, a trace, the compare view and the service
//! graph, and live mode picking up a new trace without a reload. Screenshots of the compare
//! view and the service graph go to `target/screenshots/`.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::browser::Page;
use common::{spans, start_demo};
use rumqttc::QoS;
use serde_json::Value;

/// The path keys of a Jaeger JSON trace's spans, as the compare view matches them: the chain of
/// `service operation` from the root, each with its place among same-named siblings.
fn path_keys(trace: &Value) -> BTreeSet<String> {
    let all = spans(trace);
    let ids: BTreeSet<&str> = all.iter().map(|s| s.id.as_str()).collect();
    let mut kids: HashMap<Option<&str>, Vec<&common::Span>> = HashMap::new();
    for s in &all {
        let parent = s.parent.as_deref().filter(|p| ids.contains(p));
        kids.entry(parent).or_default().push(s);
    }
    let mut out = BTreeSet::new();
    let mut stack = vec![(None, String::new())];
    while let Some((parent, prefix)) = stack.pop() {
        let mut children = kids.get(&parent).cloned().unwrap_or_default();
        children.sort_by_key(|s| s.start);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for c in children {
            let label = format!("{} {}", c.service, c.name);
            let n = seen.entry(label.clone()).or_default();
            let key = format!("{prefix}/{label}#{n}");
            *n += 1;
            out.insert(key.clone());
            stack.push((Some(c.id.as_str()), key));
        }
    }
    out
}

/// Rows of the compare view by their mark (`same`, `slower`, `faster`, `only-a`, `only-b`).
async fn compare_marks(page: &mut Page) -> HashMap<String, usize> {
    page.wait_for(
        "document.querySelectorAll('.cmp-row[data-diff]').length",
        "the compare rows",
    )
    .await;
    let marks = page
        .eval("[...document.querySelectorAll('.cmp-row[data-diff]')].map(r => r.dataset.diff)")
        .await;
    let mut out = HashMap::new();
    for m in marks.as_array().expect("marks") {
        *out.entry(m.as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_searches_opens_a_trace_folds_it_and_compares_two() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("rex").await;
    let mut ids = Vec::new();
    for room in ["north", "south"] {
        let r = common::join_chat(&c, room, QoS::AtLeastOnce).await;
        ids.push(r["TraceId"].as_str().expect("traced").to_string());
    }
    let failed = c
        .request("Chat/HD_JoinChat", br#"{"roomName": ""}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    let failed_id = failed["TraceId"].as_str().expect("traced").to_string();
    let mut traces = Vec::new();
    for id in &ids {
        traces.push(d.wait_chat_trace(id).await);
    }
    let failed_trace = d.wait_trace(&failed_id, 3).await;
    let base = format!("http://{}", d.viewer);

    // Search page: click the first join's row to open it.
    let mut page = Page::open(&format!("{base}/")).await;
    let row = format!("tr[data-trace-id=\"{}\"] td:nth-child(4)", ids[0]);
    page.click(&row).await;
    page.wait_for(
        &format!(
            "location.pathname === '/trace/{}' && document.querySelectorAll('.span-row').length",
            ids[0]
        ),
        "the trace page",
    )
    .await;

    // Click the span that carries the handler's tag: its details open with every attribute.
    let all = spans(&traces[0]);
    let tagged = all
        .iter()
        .find(|s| s.tag("track").is_some_and(|v| v == "track测试"))
        .expect("Login/track carries its tag");
    let details = format!("[data-details-of=\"{}\"]", tagged.id);
    let hidden = page
        .eval(&format!("document.querySelector('{details}').hidden"))
        .await;
    assert_eq!(hidden, Value::Bool(true), "details start closed");
    page.click(&format!(
        ".span-row[data-span-id=\"{}\"] .bar-wrap",
        tagged.id
    ))
    .await;
    let text = page
        .wait_for(
            &format!("!document.querySelector('{details}').hidden && document.querySelector('{details}').innerText"),
            "the span's details",
        )
        .await;
    let text = text.as_str().unwrap_or_default();
    for want in [
        "track测试",
        "kind",
        "self time",
        "rpc.method",
        "Login/track",
    ] {
        assert!(text.contains(want), "{want} in the details:\n{text}");
    }

    // Fold the tree at the root: only the root stays; expand all brings every span back.
    let root = all.iter().find(|s| s.parent.is_none()).expect("root");
    let visible = "[...document.querySelectorAll('.span-row')].filter(r => !r.hidden).length";
    page.click(&format!(".span-row[data-span-id=\"{}\"] .twisty", root.id))
        .await;
    page.wait_for(&format!("{visible} === 1"), "the tree folded to its root")
        .await;
    page.click("#expand-all").await;
    let n = page
        .wait_for(
            &format!("{visible} === {} && {visible}", all.len()),
            "all spans shown",
        )
        .await;
    assert_eq!(n, serde_json::json!(all.len()));
    let critical = page
        .eval("document.querySelectorAll('.span-row.critical').length")
        .await;
    assert!(critical.as_u64().is_some_and(|c| c >= 4), "{critical}");

    // Compare from the trace page: type the other trace's id.
    page.click("#compare-with input").await;
    page.type_text(&ids[1]).await;
    page.click("#compare-with button").await;
    page.wait_for(
        &format!("location.pathname === '/compare/{}/{}'", ids[0], ids[1]),
        "the compare view",
    )
    .await;
    let (a, b) = (path_keys(&traces[0]), path_keys(&traces[1]));
    let marks = compare_marks(&mut page).await;
    let count = |k: &str| marks.get(k).copied().unwrap_or(0);
    assert_eq!(count("only-a"), a.difference(&b).count(), "{marks:?}");
    assert_eq!(count("only-b"), b.difference(&a).count(), "{marks:?}");
    assert_eq!(
        marks.values().sum::<usize>(),
        a.union(&b).count(),
        "{marks:?}"
    );

    // Compare from the search list: tick a join and the failed join, then the button.
    page.goto(&format!("{base}/")).await;
    page.click(&format!("input[data-pick=\"{}\"]", ids[0]))
        .await;
    page.click(&format!("input[data-pick=\"{failed_id}\"]"))
        .await;
    page.wait_for(
        "!document.getElementById('compare-selected').disabled",
        "the compare button enabled by two ticks",
    )
    .await;
    page.click("#compare-selected").await;
    page.wait_for(
        &format!("location.pathname === '/compare/{}/{failed_id}'", ids[0]),
        "the compare view",
    )
    .await;
    let f = path_keys(&failed_trace);
    let marks = compare_marks(&mut page).await;
    let count = |k: &str| marks.get(k).copied().unwrap_or(0);
    assert!(
        a.difference(&f).count() > 0,
        "the failed join made fewer calls"
    );
    assert_eq!(count("only-a"), a.difference(&f).count(), "{marks:?}");
    assert_eq!(count("only-b"), f.difference(&a).count(), "{marks:?}");
    let summary = page
        .eval("document.getElementById('compare-summary').innerText")
        .await;
    assert!(
        summary
            .as_str()
            .is_some_and(|s| s.contains(&format!("{} spans only in A", count("only-a")))),
        "{summary}"
    );
    page.shoot("compare").await;
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_graph_shows_calls_errors_and_p95_and_live_mode_adds_traces() {
    let d = start_demo(|_| {}).await;
    let c = d.logged_in("sol").await;
    let ok = common::join_chat(&c, "east", QoS::AtLeastOnce).await;
    let failed = c
        .request("Chat/HD_JoinChat", br#"{"roomName": ""}"#, QoS::AtLeastOnce)
        .await
        .expect("reply");
    d.wait_chat_trace(ok["TraceId"].as_str().expect("traced"))
        .await;
    d.wait_trace(failed["TraceId"].as_str().expect("traced"), 3)
        .await;
    let (st, deps) = d.get("/api/dependencies").await;
    assert_eq!(st, 200);
    let deps = deps["data"].as_array().expect("dependencies").clone();
    assert!(
        deps.iter().any(|e| e["errorCount"].as_u64() > Some(0)),
        "the failed join shows on an edge: {deps:?}"
    );

    let base = format!("http://{}", d.viewer);
    let mut page = Page::open(&format!("{base}/")).await;
    page.wait_for(
        &format!(
            "document.querySelectorAll('#graph g.edge').length === {}",
            deps.len()
        ),
        "one edge per pair of modules that called",
    )
    .await;
    for e in &deps {
        let key = format!(
            "{}>{}",
            e["parent"].as_str().unwrap_or_default(),
            e["child"].as_str().unwrap_or_default()
        );
        let shown = page
            .eval(&format!(
                "(() => {{ const g = document.querySelector('#graph g.edge[data-edge=\"{key}\"]'); \
                 return [g.dataset.calls, g.dataset.errors, g.dataset.p95, g.querySelector('text').textContent]; }})()"
            ))
            .await;
        assert_eq!(shown[0], e["callCount"].to_string(), "{key}: {shown}");
        assert_eq!(shown[1], e["errorCount"].to_string(), "{key}: {shown}");
        assert_eq!(shown[2], e["p95Us"].to_string(), "{key}: {shown}");
        let label = shown[3].as_str().unwrap_or_default();
        assert!(
            label.contains(&format!("{} calls", e["callCount"])),
            "{label}"
        );
    }
    page.eval("document.getElementById('graph').scrollIntoView()")
        .await;
    page.shoot("service-graph").await;

    // Click a module: the search turns to its traces.
    page.click("#graph g.node[data-node=\"Login\"] rect").await;
    page.wait_for(
        "document.getElementById('service').value === 'Login' \
         && document.querySelectorAll('#traces tr.trace-row').length > 0 \
         && [...document.querySelectorAll('#traces tr.trace-row')].every(r => r.textContent.includes('Login'))",
        "the clicked module's traces listed",
    )
    .await;

    // Live: a request made now shows in the list without a reload.
    page.click("#live").await;
    page.wait_for(
        "document.getElementById('live').checked",
        "live mode switched on",
    )
    .await;
    let fresh = common::join_chat(&c, "west", QoS::AtLeastOnce).await;
    let fresh = fresh["TraceId"].as_str().expect("traced").to_string();
    d.wait_chat_trace(&fresh).await;
    page.wait_for(
        &format!("document.querySelector('tr[data-trace-id=\"{fresh}\"]') !== null"),
        "the new trace listed by live mode",
    )
    .await;
    d.app.shutdown().await;
}
