//! TLS at the gate, with a self-signed certificate each test makes (rcgen): Eclipse Paho
//! (Python) and rumqttc verify it and run the chat over MQTT over TLS and over WSS; a client
//! that does not trust it, one that stalls in its handshake and one that speaks plain MQTT to
//! the TLS port are closed and counted; a missing, broken or mismatched certificate stops the
//! app at start with the path and the reason.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{start_demo, tools, Running};
use demo::client::GateClient;
use demo::harness::SelfSigned;
use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};

/// A self-signed certificate for `localhost` and 127.0.0.1 in PEM files, made for one test.
fn cert(name: &str) -> SelfSigned {
    SelfSigned::new(&format!("tls-{name}")).expect("certificate")
}

/// A rustls client that trusts `cert` only.
fn trusting(cert: &SelfSigned) -> TlsConfiguration {
    TlsConfiguration::Rustls(cert.client_config().expect("client config"))
}

/// The demo with TLS on: MQTT over TLS and WSS, plain MQTT on its own port.
async fn start_tls(cert: &SelfSigned, tweak: impl FnOnce(&mut mqrs_runtime::Config)) -> Running {
    let (c, k) = (cert.cert(), cert.key());
    start_demo(|cfg| {
        cfg.gate.tls_cert = Some(c);
        cfg.gate.tls_key = Some(k);
        tweak(cfg);
    })
    .await
}

/// The scheme on the gate's span of the `HD_JoinChat` traced in `lines`.
async fn scheme_of_join(d: &Running, lines: &[serde_json::Value]) -> Option<String> {
    let root = d.gate_span_of_join(&lines[1]["reply"]).await;
    root.tag("url.scheme")?.as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_verifies_the_certificate_over_tls_and_wss_and_runs_the_chat() {
    let cert = cert("paho");
    let d = start_tls(&cert, |_| {}).await;
    let tls = d.tls.expect("TLS listener");
    let ca = cert.cert().display().to_string();
    for (port, kind, scheme) in [(tls.port(), "tls", "mqtts"), (d.ws.port(), "wss", "wss")] {
        let user = format!("pat-{kind}");
        let lines = tools::paho_chat(port, &user, &[kind, &ca]).await;
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0]["reply"]["Result"]["userId"], user.as_str());
        assert_eq!(lines[1]["reply"]["Error"], "", "{lines:?}");
        assert_eq!(scheme_of_join(&d, &lines).await.as_deref(), Some(scheme));
    }
    // Plain MQTT still has its own port.
    let lines = tools::paho_chat(d.gate.port(), "pat-tcp", &["tcp"]).await;
    assert_eq!(scheme_of_join(&d, &lines).await.as_deref(), Some("mqtt"));
    // A client that checks the certificate against the system's roots refuses it; the gate
    // counts the failed handshake.
    let out = tools::paho_run(tls.port(), "untrusting", &["tls"]).await;
    assert!(
        !out.status.success(),
        "a self-signed certificate was trusted"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "{err}");
    common::wait_for(
        "the refused handshake counted",
        Duration::from_secs(5),
        || d.app.gate_stats().is_some_and(|s| s.tls_refused >= 1),
    )
    .await;
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqttjs_under_node_verifies_the_certificate_over_wss_and_tls() {
    let cert = cert("mqttjs");
    let d = start_tls(&cert, |_| {}).await;
    let ca = cert.cert().display().to_string();
    let tls = d.tls.expect("TLS listener");
    for (url, user) in [
        (format!("wss://127.0.0.1:{}/mqtt", d.ws.port()), "node-wss"),
        (format!("mqtts://127.0.0.1:{}", tls.port()), "node-tls"),
    ] {
        let lines = tools::mqttjs_chat(&url, user, Some(&ca)).await;
        tools::assert_mqttjs_chat(&lines, user);
    }
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_runs_requests_over_tls_websocket_and_wss() {
    let cert = cert("rumqttc");
    let d = start_tls(&cert, |_| {}).await;
    let tls = d.tls.expect("TLS listener");
    let ws_url = format!("127.0.0.1:{}/mqtt", d.ws.port());
    let mut over_tls = MqttOptions::new("rq-tls", "127.0.0.1", tls.port());
    over_tls.set_transport(Transport::tls_with_config(trusting(&cert)));
    let mut over_wss = MqttOptions::new("rq-wss", format!("wss://{ws_url}"), d.ws.port());
    over_wss.set_transport(Transport::wss_with_config(trusting(&cert)));
    for (name, opts) in [("tls", over_tls), ("wss", over_wss)] {
        let c = GateClient::connect_with(opts)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let body = serde_json::json!({"userName": format!("rq-{name}"), "passWord": "pw"});
        let r = c
            .request(
                "Login/HD_Login",
                body.to_string().as_bytes(),
                QoS::AtLeastOnce,
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r["Error"], "", "{name}: {r}");
        let r = c
            .request("Chat/HD_CurrentRoom", b"{}", QoS::AtMostOnce)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r["Error"], "", "{name}: {r}");
    }
    d.app.shutdown().await;

    // rumqttc over plain WebSocket, on a gate without TLS.
    let d = start_demo(|_| {}).await;
    let url = format!("ws://127.0.0.1:{}/mqtt", d.ws.port());
    let mut opts = MqttOptions::new("rq-ws", url, d.ws.port());
    opts.set_transport(Transport::Ws);
    let c = GateClient::connect_with(opts).await.expect("ws connects");
    let r = c
        .request("Chat/HD_CurrentRoom", b"{}", QoS::AtLeastOnce)
        .await
        .expect("reply over ws");
    assert_eq!(r["Error"], "", "{r}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_and_plain_mqtt_on_the_tls_port_are_closed_and_counted() {
    use tokio::io::AsyncWriteExt;
    let cert = cert("hostile");
    let d = start_tls(&cert, |c| c.gate.connect_timeout_ms = 500).await;
    let tls = d.tls.expect("TLS listener");
    // Connects and says nothing: closed at the connect timeout.
    let mut silent = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let t = std::time::Instant::now();
    common::raw::read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // Speaks MQTT without TLS: refused at once.
    let mut plain = tokio::net::TcpStream::connect(tls).await.expect("connect");
    plain
        .write_all(common::raw::CONNECT_V4)
        .await
        .expect("write");
    let back = common::raw::read_until_closed(&mut plain, Duration::from_secs(5)).await;
    assert!(
        !back.starts_with(&[0x20]),
        "a CONNACK over a TLS port: {back:?}"
    );
    // The same on the WSS port.
    let mut plain_ws = tokio::net::TcpStream::connect(d.ws).await.expect("connect");
    plain_ws
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    common::raw::read_until_closed(&mut plain_ws, Duration::from_secs(5)).await;
    common::wait_for("three refused handshakes", Duration::from_secs(5), || {
        d.app.gate_stats().is_some_and(|s| s.tls_refused == 3)
    })
    .await;
    // Meanwhile a client that trusts the certificate is served.
    let mut opts = MqttOptions::new("rq-after", "127.0.0.1", tls.port());
    opts.set_transport(Transport::tls_with_config(trusting(&cert)));
    let c = GateClient::connect_with(opts).await.expect("served");
    let r = c
        .request("Chat/HD_CurrentRoom", b"{}", QoS::AtMostOnce)
        .await
        .expect("reply");
    assert_eq!(r["Error"], "", "{r}");
    d.app.shutdown().await;
}

/// The error starting the demo with `cert` and `key` gives.
async fn start_error(cert: Option<&Path>, key: Option<&Path>) -> String {
    let mut cfg = mqrs_runtime::Config::ephemeral();
    cfg.gate.tls_cert = cert.map(Path::to_path_buf);
    cfg.gate.tls_key = key.map(Path::to_path_buf);
    cfg.trace.viewer = false;
    let app = demo::build_app(cfg).expect("builds");
    let e = app
        .start()
        .await
        .expect_err("starts without a usable certificate");
    app.shutdown().await;
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_broken_or_mismatched_certificate_stops_the_app_with_the_path_and_reason() {
    let good = cert("good");
    let other = cert("other");
    let missing = good.dir().join("nowhere.pem");
    let garbage = good.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let cases: [(Option<&Path>, Option<&Path>, &Path, &str); 5] = [
        (Some(&missing), Some(&good.key()), &missing, "No such file"),
        (
            Some(&garbage),
            Some(&good.key()),
            &garbage,
            "no CERTIFICATE",
        ),
        (
            Some(&good.cert()),
            Some(&garbage),
            &garbage,
            "no usable private key",
        ),
        (
            Some(&good.cert()),
            Some(&other.key()),
            &good.cert(),
            "does not fit the key",
        ),
        (Some(&good.cert()), None, &good.cert(), "set together"),
    ];
    for (cert, key, path, reason) in cases {
        let e = start_error(cert, key).await;
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(reason), "{reason}: {e}");
    }
}
