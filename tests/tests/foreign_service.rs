//! The wire convention (docs/wire-protocol.md), checked by a module written in Python with Eclipse Paho (MQTT 5)
//! that knows nothing of mqrs but that convention: mqrs calls it (arguments, session, trace
//! context, deadline, errors with their kind), it calls an mqrs module back, and its presence
//! and last will make it appear in and vanish from the app's view of the cluster.

mod common;

use std::time::{Duration, Instant};

use common::tools;
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The Rust module the Python one calls.
pub struct Greeter;

#[rpc_module]
impl Greeter {
    #[rpc]
    async fn hello(&self, session: Session, name: String) -> Result<String, String> {
        let state = session.tracestate().unwrap_or_default();
        Ok(format!(
            "hello {name}, from {}, tracestate {state}",
            session.userid()
        ))
    }
}

/// The Python module's next line of output.
async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the Python module answers in time")
        .expect("read")
        .expect("the Python module is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_module_joins_by_the_wire_convention() {
    let python = tools::test_python();
    let mut cfg = Config::ephemeral();
    cfg.gate.enabled = false;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    let app = App::builder()
        .config(cfg)
        .module(|_| Greeter)
        .build()
        .expect("app");
    let port = app
        .start()
        .await
        .expect("start")
        .broker
        .expect("embedded broker")
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/py_module.py");
    let mut py = tokio::process::Command::new(python)
        .args([script, &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python module");
    let mut lines = BufReader::new(py.stdout.take().expect("stdout")).lines();
    assert_eq!(next_line(&mut lines).await, "ready");
    // Python called the Rust module: a JSON reply {"ok": ...} with its correlation.
    let reply = next_line(&mut lines).await;
    let v: Value = serde_json::from_str(reply.trim_start_matches("reply ")).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({"ok": "hello py, from py-caller, tracestate vendor=abc"})
    );
    // Its trace context, given only as user properties, is the parent of the handler's span.
    // (The SERVER span is delivered just after the reply is sent, so it may be a moment behind.)
    let store = app.trace_store().expect("store");
    let server_span = || {
        store
            .trace(0x0af7651916cd43dd8448eb211c80319c)
            .and_then(|t| t.spans.into_iter().find(|s| s.name == "Greeter/hello"))
    };
    common::wait_for("the SERVER span", Duration::from_secs(5), || {
        server_span().is_some()
    })
    .await;
    let server = server_span().expect("the SERVER span joined the Python caller's trace");
    assert_eq!(server.parent_span_id, Some(0xb7ad6b7169203331));

    // Rust calls Python, once its presence has arrived.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.cluster().contains_key("py-1") {
        assert!(Instant::now() < deadline, "no presence from py-1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = Session::default();
    let sum: i64 = app.call("Py", "add", &s, (2, 3)).await.expect("add");
    assert_eq!(sum, 5);
    let pinned: i64 = app
        .call("Py@py-1", "add", &s, (4, 5))
        .await
        .expect("pinned");
    assert_eq!(pinned, 9);
    // What arrived with a traced call: the session, the trace context (as a user property and
    // in the session), the deadline (as a property and as message expiry).
    let mut user = Session::default();
    user.set_userid("ann");
    let root = app.start_trace("job", &user);
    let seen: Value = app
        .call("Py", "whoami", root.session(), ())
        .await
        .expect("whoami");
    let trace_id = root.session().trace_id().expect("traced");
    assert_eq!(seen["user"], "ann");
    let tp = seen["traceparent"]
        .as_str()
        .expect("traceparent user property");
    assert!(tp.starts_with("00-") && tp.contains(&trace_id), "{tp}");
    assert_eq!(seen["session_traceparent"], seen["traceparent"]);
    let timeout_ms = seen["timeout_ms"].as_u64().expect("mqrs-timeout-ms");
    assert!((2000..=3000).contains(&timeout_ms), "{seen}");
    assert_eq!(seen["expiry"], 3, "message expiry from the 3 s deadline");
    // Its errors keep their kind.
    let e = app
        .call::<_, ()>("Py", "divide", &s, ())
        .await
        .expect_err("unknown method");
    assert_eq!(
        e,
        RpcError::UnknownMethod {
            module: "Py".into(),
            method: "divide".into()
        }
    );
    // Killed, it vanishes by its last will: calls fail at once as an unknown module.
    py.kill().await.expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.cluster().contains_key("py-1") {
        assert!(Instant::now() < deadline, "py-1 still present");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = app
        .call::<_, i64>("Py", "add", &s, (1, 1))
        .await
        .expect_err("gone");
    assert_eq!(e, RpcError::UnknownModule("Py".into()));
    drop(root);
    app.shutdown().await;
}
