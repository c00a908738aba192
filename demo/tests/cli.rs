//! The two demo binaries as a user runs them: `demo` starts, prints where it listens, serves
//! `client` over real MQTT, and stops gracefully on Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads the demo's log until it names both listeners; returns (gate, viewer) addresses.
fn wait_for_listeners(lines: &mut impl Iterator<Item = String>) -> (String, String) {
    let (mut gate, mut viewer) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines.by_ref() {
        if let Some(a) = line.split("mqtt://").nth(1) {
            gate = Some(a.trim().to_string());
        }
        if let Some(a) = line.split("trace viewer on http://").nth(1) {
            viewer = Some(a.trim().trim_end_matches('/').to_string());
        }
        if let (Some(g), Some(v)) = (&gate, &viewer) {
            return (g.clone(), v.clone());
        }
        assert!(
            Instant::now() < deadline,
            "demo did not report its listeners"
        );
    }
    panic!("demo exited before listening");
}

#[test]
fn demo_serves_the_client_and_stops_on_ctrl_c() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--gate", "127.0.0.1:0", "--viewer", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = demo.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let (gate, viewer) = wait_for_listeners(&mut lines);

    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args([
            "--gate",
            &gate,
            "--viewer",
            &format!("http://{viewer}"),
            "--users",
            "2",
            "--requests",
            "2",
        ])
        .output()
        .expect("run client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("HD_Login -> ").count(), 2, "{text}");
    let traced: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("http://{viewer}/trace/")))
        .collect();
    assert_eq!(traced.len(), 4, "every join is traced and linked: {text}");

    let status = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = demo.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "demo exit status {code}");
    let rest: Vec<String> = lines.collect();
    assert!(
        rest.iter().any(|l| l.contains("app stopped")),
        "graceful stop is logged: {rest:?}"
    );
}

#[test]
fn demo_explains_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--gate", "not-an-address"])
        .output()
        .expect("run demo");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--gate `not-an-address`"), "{err}");
    assert!(err.contains("usage: demo"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--gate", "127.0.0.1:1", "--users", "1"])
        .output()
        .expect("run client");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the demo running?"), "{err}");
}
