//! The gate with MQTT clients nobody on the team wrote: Eclipse Paho for Python and the C
//! `mosquitto_pub` (Debian's mosquitto-clients). README's test command, `cargo xtask test`,
//! installs both; without them these tests fail and say so.

mod common;

use std::time::Duration;

use common::{start_demo, tools};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_python_client_logs_in_joins_and_gets_traced_replies() {
    let d = start_demo(|_| {}).await;
    let lines = tools::paho_chat(d.gate.port(), "pat", &["tcp"]).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        lines[0]["reply"],
        serde_json::json!({"Result": {"userId": "pat"}, "Error": ""})
    );
    for l in &lines[1..3] {
        assert_eq!(l["reply"]["Error"], "", "{l}");
        assert_eq!(l["reply"]["Result"]["users"], serde_json::json!(["pat"]));
        let root = d.gate_span_of_join(&l["reply"]).await;
        assert_eq!(root.tag("user.id"), Some("pat".into()));
        assert_eq!(root.tag("network.transport"), Some("tcp".into()));
        assert_eq!(root.tag("url.scheme"), Some("mqtt".into()));
    }
    let err = lines[3]["reply"]["Error"].as_str().expect("error text");
    assert!(err.contains("not reachable from clients"), "{err}");
    d.app.shutdown().await;
}

/// Runs `mosquitto_pub` (the C client from Debian's mosquitto-clients) against the gate.
async fn mosquitto_pub(port: u16, args: &[&str]) -> std::process::Output {
    let exe = tools::require("mosquitto_pub", "mosquitto-clients");
    tools::run(
        tokio::process::Command::new(exe)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-i",
                "mosq-test",
            ])
            .args(args),
        Duration::from_secs(20),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_completes_qos_0_1_2_flows_and_v5_is_refused() {
    tools::require("mosquitto_pub", "mosquitto-clients");
    let d = start_demo(|_| {}).await;
    d.app.set_on_request_tracing(|_, _| true);
    let port = d.gate.port();
    for qos in ["0", "1", "2"] {
        let room = format!("{{\"roomName\":\"q{qos}\"}}");
        let out = mosquitto_pub(port, &["-q", qos, "-t", "Chat/HD_JoinChat", "-m", &room]).await;
        assert!(
            out.status.success(),
            "QoS {qos}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each publish reached the handler (traced, failing because nobody logged in).
    let store = d.app.trace_store().expect("store");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let q = mqrs_runtime::trace::TraceQuery {
            operation: Some("gate Chat/HD_JoinChat".into()),
            limit: 10,
            ..Default::default()
        };
        let roots: Vec<_> = store
            .find(&q)
            .into_iter()
            .flat_map(|t| t.spans)
            .filter(|s| s.parent_span_id.is_none())
            .collect();
        if roots.len() == 3 {
            assert!(roots.iter().all(|s| s
                .error
                .as_deref()
                .is_some_and(|e| e.contains("not logged in"))));
            let mut qos: Vec<String> = roots
                .iter()
                .filter_map(|s| s.tag("mqrs.qos").map(|v| v.as_str().into_owned()))
                .collect();
            qos.sort();
            assert_eq!(qos, ["0", "1", "2"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "saw {} of 3 requests",
            roots.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = mosquitto_pub(
        port,
        &["-V", "mqttv5", "-t", "Chat/HD_JoinChat", "-m", "{}"],
    )
    .await;
    assert!(!out.status.success(), "MQTT 5 must be refused");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("protocol") || err.contains("unsupported"),
        "{err}"
    );
    d.app.shutdown().await;
}
