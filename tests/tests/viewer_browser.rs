//! The viewer page in a real browser: headless Chromium loads it from the running demo, runs
//! its JavaScript against the API, and the rendered DOM must show the trace list and the
//! nested timeline. README's test command, `cargo xtask test`, installs Chromium; without it
//! this test fails and says so.

mod common;

use std::time::Duration;

use common::{spans, start_demo, tools};
use rumqttc::QoS;

/// Renders `url` in headless Chromium and returns the DOM after scripts ran.
async fn render(url: &str) -> String {
    let chromium = tools::require("chromium", "chromium");
    let profile = std::env::temp_dir().join(format!(
        "mqrs-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let out = tools::run(
        tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(url),
        Duration::from_secs(60),
    )
    .await;
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

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
    let dom = render(&page).await;
    assert_eq!(
        dom.matches("class=\"span-row\"").count(),
        n,
        "one row per span:\n{dom}"
    );
    assert!(
        dom.contains("<h2 id=\"trace-title\">gate Chat/HD_JoinChat</h2>"),
        "{dom}"
    );
    assert!(dom.contains("track测试"), "tags are in the DOM: {dom}");
    // The deepest always-present span, Login/track2 SERVER, sits six levels below the root.
    assert!(dom.contains("data-depth=\"6\""), "nested timeline: {dom}");

    let list = format!("{base}/");
    let dom = render(&list).await;
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
