//! The gate with an MQTT client from another language: Eclipse Paho for Python
//! (`pip install paho-mqtt`, done by `.ci/run`). Set MQRS_SKIP_FOREIGN=1 to skip.

mod common;

use common::{spans, start_demo};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_python_client_logs_in_joins_and_gets_traced_replies() {
    if std::env::var_os("MQRS_SKIP_FOREIGN").is_some() {
        eprintln!("MQRS_SKIP_FOREIGN set: skipping the Paho client");
        return;
    }
    let d = start_demo(|_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/paho_chat.py");
    let port = d.gate.port().to_string();
    let out = tokio::process::Command::new("python3")
        .args([script, &port, "pat"])
        .output()
        .await
        .expect("python3 must be installed (with paho-mqtt), or set MQRS_SKIP_FOREIGN=1");
    assert!(
        out.status.success(),
        "paho client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        lines[0]["reply"],
        serde_json::json!({"Result": {"userId": "pat"}, "Error": ""})
    );
    for l in &lines[1..3] {
        assert_eq!(l["reply"]["Error"], "", "{l}");
        assert_eq!(l["reply"]["Result"]["users"], serde_json::json!(["pat"]));
        let id = l["reply"]["TraceId"].as_str().expect("traced");
        let t = d.wait_chat_trace(id).await;
        let all = spans(&t);
        assert!(all
            .iter()
            .any(|s| s.name == "gate Chat/HD_JoinChat" && s.tag("user.id") == Some("pat".into())));
    }
    let err = lines[3]["reply"]["Error"].as_str().expect("error text");
    assert!(err.contains("not reachable from clients"), "{err}");
    d.app.shutdown().await;
}
