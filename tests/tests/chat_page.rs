//! The demo's chat page in real browsers: headless Chromium loads it from the gate's WebSocket
//! port, and its own MQTT client talks to the gate over WebSocket. Two pages in one room see
//! each other arrive and talk; a third page logging in as the first user kicks the first,
//! which shows why. Screenshots land beside the viewer's.

mod common;

use common::browser::Page;
use common::start_demo;

/// Logs `page` in as `user` and joins `room`, as a person would: fill in, click, wait.
async fn log_in(page: &mut Page, user: &str, room: &str) {
    page.eval(&format!(
        "document.getElementById('user').value = '';
         document.getElementById('room').value = {room:?}; true"
    ))
    .await;
    page.click("#user").await;
    page.type_text(user).await;
    page.click("#login").await;
    page.wait_for(
        "document.getElementById('text').disabled === false
         || document.getElementById('status').textContent !== ''",
        "the page logs in or says why not",
    )
    .await;
    let status = page
        .eval("document.getElementById('status').textContent")
        .await;
    assert_eq!(status, "", "{user} could not log in");
}

/// True (as JavaScript) when a line of the page's log contains `text`.
fn line_with(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#log .line')].some(l => l.textContent.includes({text:?}))"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_chat_and_a_third_login_kicks_the_first() {
    let d = start_demo(|_| {}).await;
    let viewer = format!("http://{}", d.viewer);
    demo::web::add_pages(&d.app, Some(&viewer));
    let url = format!("http://{}/", d.ws);
    let mut amy = Page::open(&url).await;
    let mut bo = Page::open(&url).await;
    log_in(&mut amy, "amy", "den").await;
    log_in(&mut bo, "bo", "den").await;
    // Amy's page learns that Bo came.
    amy.wait_for(
        "[...document.querySelectorAll('#members li')].map(l => l.textContent).join() === 'amy,bo'",
        "bo in amy's member list",
    )
    .await;
    amy.click("#text").await;
    amy.type_text("hello bo, 你好").await;
    amy.click("#say").await;
    bo.wait_for(&line_with("hello bo, 你好"), "amy's message on bo's page")
        .await;
    // The line names its sender and links to its trace in the viewer.
    let link = bo
        .eval(
            "[...document.querySelectorAll('#log .line')]
               .find(l => l.textContent.includes('hello bo'))
               .querySelector('a.trace').href",
        )
        .await;
    let link = link.as_str().unwrap_or_default().to_string();
    assert!(link.starts_with(&format!("{viewer}/trace/")), "{link}");
    let id = link.rsplit('/').next().unwrap_or_default();
    let trace = d.wait_trace(id, 3).await;
    assert!(
        common::spans(&trace)
            .iter()
            .any(|s| s.name == "gate Chat/HD_Say"),
        "the link opens the HD_Say trace"
    );
    bo.shoot("chat").await;
    // Amy logs in on a third page: the first is told why and closed.
    let mut again = Page::open(&url).await;
    log_in(&mut again, "amy", "den").await;
    amy.wait_for(
        "document.getElementById('notice').textContent.includes('another connection')",
        "the kick notice on amy's first page",
    )
    .await;
    amy.wait_for(
        "document.getElementById('status').textContent.includes('closed')",
        "amy's first page sees its connection closed",
    )
    .await;
    amy.shoot("chat-kicked").await;
    d.app.shutdown().await;
}
