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
    assert!(
        out.status.success(),
        "paho client ({args:?}) failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}
