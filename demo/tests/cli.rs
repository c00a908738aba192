//! The two demo binaries as a user runs them: `demo` starts, prints where it listens, serves
//! `client` over real MQTT, and stops gracefully on Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads a demo's log until every marker has appeared; returns what follows each, in order.
fn wait_for_lines(lines: &mut impl Iterator<Item = String>, markers: &[&str]) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; markers.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines.by_ref() {
        for (i, m) in markers.iter().enumerate() {
            if let Some(rest) = line.split(m).nth(1) {
                found[i] = Some(rest.trim().trim_end_matches('/').to_string());
            }
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
        assert!(Instant::now() < deadline, "demo did not log {markers:?}");
    }
    panic!("demo exited before logging {markers:?}");
}

/// Reads the demo's log until it names both listeners; returns (gate, viewer) addresses.
fn wait_for_listeners(lines: &mut impl Iterator<Item = String>) -> (String, String) {
    let v = wait_for_lines(
        lines,
        &["gate listening on mqtt://", "trace viewer on http://"],
    );
    (v[0].clone(), v[1].clone())
}

/// Every listener of the demo on a free port.
const FREE_PORTS: [&str; 10] = [
    "--gate",
    "127.0.0.1:0",
    "--ws",
    "127.0.0.1:0",
    "--viewer",
    "127.0.0.1:0",
    "--broker-listen",
    "127.0.0.1:0",
    "--collector",
    "127.0.0.1:0",
];

/// GET `path` from `addr`; the status and the JSON body.
fn http_get_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    demo::harness::http_get_json(addr, path).expect("GET from the viewer")
}

/// A running demo process, killed if a test fails before stopping it.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the demo binary with `args`, its log on a pipe.
fn start_demo(args: &[&str]) -> (Demo, impl Iterator<Item = String>) {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = demo.stdout.take().expect("stdout");
    (
        Demo(demo),
        BufReader::new(stdout).lines().map_while(Result::ok),
    )
}

/// Sends SIGINT and waits (up to 10 s) for a clean exit; returns the rest of the log.
fn interrupt(demo: Demo, lines: impl Iterator<Item = String>) -> Vec<String> {
    stop_with(demo, lines, "-INT")
}

/// Sends `signal` (`-INT`, `-TERM`) and waits (up to 10 s) for a clean exit; returns the rest
/// of the log.
fn stop_with(mut demo: Demo, lines: impl Iterator<Item = String>, signal: &str) -> Vec<String> {
    let status = Command::new("kill")
        .args([signal, &demo.0.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = demo.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "demo did not stop after {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "demo exit status {code}");
    let rest: Vec<String> = lines.collect();
    assert!(
        rest.iter().any(|l| l.contains("app stopped")),
        "graceful stop is logged: {rest:?}"
    );
    rest
}

/// Runs the demo client with `args`; its output, after checking it succeeded.
fn client(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .output()
        .expect("run client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs the client against `gate`; returns its output after checking every join was traced.
fn run_client(gate: &str, viewer: &str, users: usize) -> String {
    let viewer_url = format!("http://{viewer}");
    let users_arg = users.to_string();
    let text = client(&[
        "--gate",
        gate,
        "--viewer",
        &viewer_url,
        "--users",
        &users_arg,
        "--requests",
        "2",
    ]);
    assert_eq!(text.matches("HD_Login -> ").count(), users, "{text}");
    let traced = text
        .lines()
        .filter(|l| l.contains(&format!("http://{viewer}/trace/")))
        .count();
    assert_eq!(traced, users * 2, "every join is traced and linked: {text}");
    text
}

#[test]
fn demo_serves_the_client_and_stops_on_ctrl_c() {
    let (demo, mut lines) = start_demo(&FREE_PORTS);
    let (gate, viewer) = wait_for_listeners(&mut lines);
    run_client(&gate, &viewer, 2);
    interrupt(demo, lines);
}

#[test]
fn the_client_talks_over_websocket_and_hears_what_it_says() {
    let (demo, mut lines) = start_demo(&FREE_PORTS);
    let ws = wait_for_lines(&mut lines, &["gate listening on ws://"]);
    let ws = ws[0].trim_end_matches("/mqtt");
    let text = client(&[
        "--ws",
        ws,
        "--users",
        "2",
        "--requests",
        "1",
        "--room",
        "cli",
        "--say",
        "hi from the client",
    ]);
    for user in ["user0", "user1"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{user} heard Chat/OnSay"))
                    && l.contains(&format!("\"from\":\"{user}\""))
                    && l.contains("hi from the client")),
            "{user} did not hear itself: {text}"
        );
    }
    interrupt(demo, lines);
}

#[test]
fn demo_split_over_two_processes_serves_the_client() {
    // As README shows: gate and chat with the embedded broker; login joins through it.
    let (front, mut front_log) =
        start_demo(&[&["--modules", "gate,chat"][..], &FREE_PORTS].concat());
    let found = wait_for_lines(
        &mut front_log,
        &[
            "embedded MQTT broker on mqtt://",
            "gate listening on mqtt://",
            "trace viewer on http://",
            "OTLP collector on http://",
        ],
    );
    let (broker, gate, viewer) = (&found[0], &found[1], &found[2]);
    let collector = found[3].trim_end_matches("/v1/traces");
    let (back, mut back_log) = start_demo(&[
        "--modules",
        "login",
        "--broker",
        &format!("mqtt://{broker}"),
        "--otlp",
        &format!("http://{collector}"),
    ]);
    wait_for_lines(&mut back_log, &["connected to the MQTT broker"]);
    // The first process has seen the second one's presence before the client asks.
    wait_for_lines(&mut front_log, &["a process joined server_id=login-"]);
    // Login's handlers run in the second process only.
    let text = run_client(gate, viewer, 2);
    assert!(text.contains(r#""userId":"user0""#), "{text}");
    let trace_id = text
        .split(&format!("http://{viewer}/trace/"))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a trace link")
        .to_string();
    // SIGTERM (what docker, systemd and Kubernetes send) stops as cleanly as Ctrl-C, and the
    // clean stop flushes the second process's spans to the first one's collector.
    let rest = stop_with(back, back_log, "-TERM");
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM: shutting down")),
        "{rest:?}"
    );
    let (status, trace) = http_get_json(viewer, &format!("/api/traces/{trace_id}"));
    assert_eq!(status, 200, "{trace}");
    let services = trace["data"][0]["processes"].to_string();
    assert!(
        services.contains("Login") && services.contains("Chat") && services.contains("Gate"),
        "one trace holds both processes' spans: {services}"
    );
    // The second process's RED metrics came by OTLP too: what Login served there is counted
    // here, as many as Chat (here) counted calling it.
    let (status, rows) = http_get_json(viewer, "/api/latency?lookback=5m");
    assert_eq!(status, 200, "{rows}");
    let count = |kind: &str, service: &str, op: &str| {
        rows["data"]
            .as_array()
            .and_then(|r| {
                r.iter().find(|r| {
                    r["kind"] == kind
                        && r["service"] == service
                        && r["operation"] == op
                        && r["source"] == "metrics"
                })
            })
            .and_then(|r| r["count"].as_u64())
    };
    let served = count("server", "Login", "Login/track");
    assert!(served.is_some_and(|n| n > 0), "{rows}");
    assert_eq!(served, count("client", "Chat", "Login/track"), "{rows}");
    assert_eq!(
        count("server", "Login", "Login/HD_Login"),
        Some(2),
        "{rows}"
    );
    interrupt(front, front_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_callee_process_gives_clients_an_error_reply_not_silence() {
    let (front, mut front_log) =
        start_demo(&[&["--modules", "gate,chat"][..], &FREE_PORTS].concat());
    let found = wait_for_lines(
        &mut front_log,
        &[
            "embedded MQTT broker on mqtt://",
            "gate listening on mqtt://",
        ],
    );
    let (broker, gate) = (found[0].clone(), found[1].clone());
    let (mut back, mut back_log) = start_demo(&[
        "--modules",
        "login",
        "--broker",
        &format!("mqtt://{broker}"),
        "--no-viewer",
    ]);
    wait_for_lines(&mut back_log, &["connected to the MQTT broker"]);
    wait_for_lines(&mut front_log, &["a process joined server_id=login-"]);
    let port: u16 = gate
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let c = demo::client::GateClient::connect("killed-callee", "127.0.0.1", port)
        .await
        .expect("connect");
    let login_body = serde_json::json!({"userName": "kim", "passWord": "pw"}).to_string();
    let login = || {
        c.request(
            "Login/HD_Login",
            login_body.as_bytes(),
            rumqttc::QoS::AtLeastOnce,
        )
    };
    let r = login().await.expect("reply");
    assert_eq!(r["Error"], "", "{r}");

    // SIGKILL: no clean stop, no presence withdrawn by the process itself.
    back.0.kill().expect("kill");
    let _ = back.0.wait();
    let started = Instant::now();
    let r = login()
        .await
        .expect("an error reply, within the call's deadline");
    let err = r["Error"].as_str().expect("error text");
    assert!(err.contains("Login"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The broker's last will withdraws the dead process's modules: then calls fail at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = Instant::now();
        let r = login().await.expect("reply");
        let err = r["Error"].as_str().unwrap_or_default().to_string();
        if err.contains("unknown module `Login`") {
            assert!(t.elapsed() < Duration::from_millis(500));
            break;
        }
        assert!(Instant::now() < deadline, "still `{err}`");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    interrupt(front, front_log);
}

#[test]
fn pid_runs_the_modules_the_settings_assign_to_that_process() {
    let dir = std::env::temp_dir().join(format!("mqrs-pid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let settings = dir.join("deploy.toml");
    std::fs::write(
        &settings,
        "[broker]\nurl = \"none\"\n[trace]\nviewer = false\ncollector = false\n\n\
         [processes.front]\nmodules = [\"gate\", \"chat\"]\n\
         [processes.back]\nmodules = [\"login\"]\nserver_id = \"login-7\"\n",
    )
    .expect("write settings");
    let path = settings.to_string_lossy().to_string();
    let (back, mut log) = start_demo(&["--config", &path, "--pid", "back"]);
    // The app listens for signals once it says it is running.
    let ready = wait_for_lines(&mut log, &["modules ready handlers=", "app running"]);
    assert!(ready[0].contains("Login/HD_Login"), "{ready:?}");
    assert!(
        !ready[0].contains("Chat/"),
        "only the modules of `back`: {ready:?}"
    );
    interrupt(back, log);

    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--config", &path, "--pid", "middle"])
        .output()
        .expect("run demo");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no process `middle` in [processes]; defined: back, front"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_explains_bad_arguments() {
    // Each case: flags, environment, and what the refusal (exit code 2) must say.
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            &["--gate", "not-an-address"],
            None,
            &["'not-an-address'", "--gate", "--help"],
        ),
        (
            &["--modules", "gate,lobby"],
            None,
            &["unknown module `lobby`"],
        ),
        (
            &["--broker", "localhost:1883"],
            None,
            &["must start with mqtt://"],
        ),
        // Every flag can come from the environment.
        (
            &[],
            Some(("MQRS_MODULES", "nothing")),
            &["unknown module `nothing`"],
        ),
    ];
    for (args, env, wants) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_demo"));
        cmd.args(args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run demo");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for want in wants {
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--gate", "127.0.0.1:1", "--users", "1"])
        .output()
        .expect("run client");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the demo running?"), "{err}");
}
