//! MQTT.js (the npm package `mqtt`, its browser bundle) inside headless Chromium: a page the
//! gate's WebSocket port serves loads the bundle and runs the chat of
//! `clients/mqttjs_scenario.js`, the one the Node client runs (log in, join a room, say
//! something, hear it back) against the
//! gate's `/mqtt` of its own origin, over `ws://` and over `wss://`. The replies are those
//! MQTT.js gives under Node, and the gate traces the browser's join with the scheme it came
//! by. Over `wss://`, a browser that does not trust the gate's self-signed certificate has its
//! WebSocket refused and the gate counts the broken-off handshake; one told to trust that
//! certificate's key (and no other) loads the page over `https://` and runs the chat.

mod common;

use std::time::Duration;

use base64::Engine;
use common::browser::Page;
use common::{start_demo, tools, Running};
use demo::harness::SelfSigned;
use serde_json::{json, Value};
use tokio_rustls::rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;

/// The page: MQTT.js's browser bundle (which defines the global `mqtt`) and the chat of
/// `clients/mqttjs_scenario.js` (the one the Node client runs), as the user named by `?user=`.
/// It leaves one object per request (`{topic, reply}`) and one for the message heard
/// (`{heard, body}`) in `window.results`; `window.done` says it finished, `window.failure` why
/// it did not get through.
const PAGE: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"><title>MQTT.js in a browser</title>
<link rel="icon" href="data:,">
<script src="/mqtt.min.js"></script>
<script src="/mqttjs_scenario.js"></script></head>
<body><script>
"use strict";
window.results = [];
window.done = false;
window.failure = null;
const user = new URLSearchParams(location.search).get("user");
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/mqtt";
mqttjsChat(mqtt, url, user, {}, (line) => window.results.push(line))
  .catch((e) => { window.failure = String((e && e.message) || e); })
  .finally(() => { window.done = true; });
</script></body></html>
"##;

/// The chat scenario MQTT.js runs, shared with the Node client.
const SCENARIO: &str = include_str!("../clients/mqttjs_scenario.js");

/// Adds the page and MQTT.js's browser bundle, read from the tests' `node_modules`, to the
/// gate's WebSocket port.
fn add_pages(app: &mqrs_runtime::App) {
    let bundle = tools::test_node_modules().join("mqtt/dist/mqtt.min.js");
    let js = std::fs::read(&bundle)
        .unwrap_or_else(|e| panic!("MQTT.js's browser bundle {}: {e}", bundle.display()));
    app.add_page("/mqtt.min.js", "text/javascript; charset=utf-8", js);
    app.add_page(
        "/mqttjs_scenario.js",
        "text/javascript; charset=utf-8",
        SCENARIO,
    );
    app.add_page("/mqttjs.html", "text/html; charset=utf-8", PAGE);
}

/// Opens the page at `origin` as `user` in headless Chromium started with `flags`, waits for
/// MQTT.js in it to finish, and returns what it reported: the lines `clients/mqttjs_chat.js`
/// prints under Node for the same scenario.
async fn chat_in_chromium(origin: &str, user: &str, flags: &[String]) -> Vec<Value> {
    let mut page = Page::open_with(&format!("{origin}/mqttjs.html?user={user}"), flags).await;
    let out = page
        .wait_for(
            "window.done && { failure: window.failure, results: window.results, \
             agent: navigator.userAgent }",
            "MQTT.js in the page to finish the chat",
        )
        .await;
    assert_eq!(
        out["failure"],
        Value::Null,
        "MQTT.js in Chromium failed: {out}"
    );
    let agent = out["agent"].as_str().unwrap_or_default();
    assert!(agent.contains("Chrome"), "not run by Chromium: {agent}");
    out["results"]
        .as_array()
        .expect("window.results is an array")
        .clone()
}

/// What the page reported shows the chat working as MQTT.js under Node does, and the gate
/// traced the browser's join as arriving over `scheme`.
async fn assert_chat(d: &Running, lines: &[Value], user: &str, scheme: &str) {
    tools::assert_mqttjs_chat(lines, user);
    assert_eq!(
        lines[1]["reply"]["Result"]["roomName"], "mqttjs",
        "{lines:?}"
    );
    assert_eq!(
        lines[1]["reply"]["Result"]["users"],
        json!([user]),
        "{lines:?}"
    );
    assert_eq!(lines[2]["reply"]["Result"]["delivered"], 1, "{lines:?}");
    assert_eq!(lines[3]["body"]["room"], "mqttjs", "{lines:?}");
    assert_eq!(
        lines[3]["body"]["trace"], lines[2]["reply"]["TraceId"],
        "Chat/OnSay names the trace of the HD_Say that sent it: {lines:?}"
    );
    let root = d.gate_span_of_join(&lines[1]["reply"]).await;
    assert_eq!(
        root.tag("url.scheme"),
        Some(scheme.into()),
        "the browser's join came in over {scheme}"
    );
    assert_eq!(root.tag("user.id"), Some(user.into()));
}

/// The base64 SHA-256 of `cert`'s SubjectPublicKeyInfo, for Chromium's
/// `--ignore-certificate-errors-spki-list` (which trusts that key only, unlike
/// `--ignore-certificate-errors`).
fn spki_sha256(cert: &SelfSigned) -> String {
    // SHA-256 from rustls's ring provider: the tests depend on no hash crate of their own.
    let sha256 = TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider;
    base64::engine::general_purpose::STANDARD.encode(sha256.hash(cert.spki()).as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqttjs_in_chromium_runs_the_chat_over_ws() {
    let d = start_demo(|_| {}).await;
    add_pages(&d.app);
    let lines = chat_in_chromium(&format!("http://{}", d.ws), "brw-ws", &[]).await;
    assert_chat(&d, &lines, "brw-ws", "ws").await;
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqttjs_in_chromium_trusting_the_gate_certificate_runs_the_chat_over_wss() {
    let cert = SelfSigned::new("tls-browser").expect("certificate");
    let (c, k) = (cert.cert(), cert.key());
    let d = start_demo(|cfg| {
        cfg.gate.tls_cert = Some(c);
        cfg.gate.tls_key = Some(k);
    })
    .await;
    add_pages(&d.app);
    let origin = format!("https://{}", d.ws);
    // A browser not told to trust the certificate: its WebSocket to the gate is refused, and
    // the gate counts the handshake Chromium broke off.
    let mut untrusting = Page::open("data:text/html,untrusting").await;
    let outcome = untrusting
        .eval(&format!(
            "new Promise((r) => {{ const ws = new WebSocket('wss://{}/mqtt', ['mqtt']); \
             ws.onopen = () => r('open'); ws.onerror = () => r('refused'); }})",
            d.ws
        ))
        .await;
    assert_eq!(outcome, "refused", "a self-signed certificate was trusted");
    drop(untrusting);
    common::wait_for(
        "the refused TLS handshake counted",
        Duration::from_secs(5),
        || d.app.gate_stats().is_some_and(|s| s.tls_refused >= 1),
    )
    .await;
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_sha256(&cert)
    );
    let lines = chat_in_chromium(&origin, "brw-wss", &[trust]).await;
    assert_chat(&d, &lines, "brw-wss", "wss").await;
    d.app.shutdown().await;
}
