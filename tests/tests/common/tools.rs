//! External programs the tests drive (Chromium, mosquitto, `mosquitto_pub`, Python with Paho
//! and the OpenTelemetry SDK): found or a
//! failure that names README's test command, and always run under a timeout.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

/// README's test command, which installs every tool below.
pub const TEST_COMMAND: &str = "cargo xtask test";

/// The path of `name`, or a test failure saying how to get it.
pub fn require(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` (Debian package {package}) is not installed; run README's test command, \
                 `{TEST_COMMAND}`, which installs it"
            )
        })
}

/// The Python that has Paho and the OpenTelemetry SDK: `$MQRS_PYTHON` (set by
/// `cargo xtask test`), else the virtual environment that command creates under `target/`.
pub fn test_python() -> PathBuf {
    if let Some(p) = std::env::var_os("MQRS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/test-env/bin/python"
    ));
    assert!(
        venv.is_file(),
        "the tests' Python packages (Paho, OpenTelemetry SDK) are not installed (no {} and no \
         MQRS_PYTHON); run README's test command, `{TEST_COMMAND}`, which installs them into a \
         virtual environment under target/",
        venv.display()
    );
    venv
}

/// The `node_modules` folder that has MQTT.js: `$MQRS_NODE_MODULES` (set by `cargo xtask
/// test`), else the one that command fills under `target/`.
pub fn test_node_modules() -> PathBuf {
    if let Some(p) = std::env::var_os("MQRS_NODE_MODULES") {
        return PathBuf::from(p);
    }
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/test-env/node/node_modules"
    ));
    assert!(
        dir.join("mqtt").is_dir(),
        "the tests' npm packages (MQTT.js) are not installed (no {} and no MQRS_NODE_MODULES); \
         run README's test command, `{TEST_COMMAND}`, which installs them under target/",
        dir.display()
    );
    dir
}

/// Runs `clients/mqttjs_chat.js` (MQTT.js under Node) as `user` against `url` (`ws://...`,
/// `wss://...`, `mqtt://...`), trusting the certificate in `ca` when given; the JSON lines it
/// printed, one per request.
pub async fn mqttjs_chat(url: &str, user: &str, ca: Option<&str>) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/mqttjs_chat.js");
    let node = require("node", "nodejs");
    let out = run(
        tokio::process::Command::new(node)
            .arg(script)
            .args([url, user])
            .args(ca)
            .env("NODE_PATH", test_node_modules()),
        Duration::from_secs(30),
    )
    .await;
    json_lines(&out, &format!("MQTT.js client ({url})"))
}

/// The JSON lines a client script printed, once it succeeded (else the test fails with what
/// it said).
fn json_lines(out: &Output, what: &str) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Runs `cmd` to completion, killing it and failing the test if it takes longer than `limit`.
pub async fn run(cmd: &mut tokio::process::Command, limit: Duration) -> Output {
    let what = format!("{:?}", cmd.as_std());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what} failed to run: {e}")),
        // Dropping the future drops the child, which kills it.
        Err(_) => panic!("{what} did not finish within {limit:?}; killed"),
    }
}

/// Runs `clients/paho_chat.py` (Eclipse Paho, Python) as `user` against the gate's `port`
/// with `args` (the transport, `tcp`, `ws`, `tls` or `wss`, then a CA file for TLS).
pub async fn paho_run(port: u16, user: &str, args: &[&str]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/paho_chat.py");
    run(
        tokio::process::Command::new(test_python())
            .args([script, &port.to_string(), user])
            .args(args),
        Duration::from_secs(30),
    )
    .await
}

/// [`paho_run`] that must succeed: the JSON lines it printed, one per request.
pub async fn paho_chat(port: u16, user: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = paho_run(port, user, args).await;
    json_lines(&out, &format!("paho client ({args:?})"))
}

/// What [`mqttjs_chat`] printed shows the chat working: login, join and say answered without
/// error, and the message heard back.
pub fn assert_mqttjs_chat(lines: &[serde_json::Value], user: &str) {
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["reply"]["Result"]["userId"], user, "{lines:?}");
    for l in &lines[..3] {
        assert_eq!(l["reply"]["Error"], "", "{l}");
    }
    assert_eq!(lines[3]["heard"], "Chat/OnSay");
    assert_eq!(lines[3]["body"]["from"], user);
    assert_eq!(lines[3]["body"]["text"], "hello from MQTT.js");
}

/// Runs the test Python on `tests/clients/{script}` with `args`; fails the test with the
/// script's stderr when it fails, and returns its stdout read as JSON.
pub async fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = run(
        tokio::process::Command::new(test_python())
            .arg(&path)
            .args(args),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `/metrics` at `url` as the Prometheus client library's parser reads it (`prom_scrape.py`).
pub async fn prom_scrape(url: &str) -> serde_json::Value {
    python_json("prom_scrape.py", &[url]).await
}
