//! RPC through the runtime without the gate: by name and by typed client, `&Session` handlers,
//! timeouts, unknown targets, bad arguments, panics, and spans on failure.

mod common;

use std::time::Duration;

use mqrs_runtime::trace::TraceQuery;
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session};
use serde::{Deserialize, Serialize};

pub struct Calc {
    app: App,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Pair {
    a: i64,
    b: i64,
}

#[rpc_module(name = "Calc")]
impl Calc {
    /// Adds two numbers.
    #[rpc]
    async fn add(&self, _session: &Session, a: i64, b: i64) -> Result<i64, String> {
        Ok(a + b)
    }

    #[rpc]
    async fn swap(&self, _session: Session, p: Pair) -> Result<Pair, String> {
        Ok(Pair { a: p.b, b: p.a })
    }

    #[rpc]
    async fn slow(&self, _session: Session, ms: u64) -> Result<(), String> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }

    #[rpc]
    async fn fail(&self, _session: Session) -> Result<(), String> {
        Err("it failed on purpose".into())
    }

    #[rpc]
    async fn boom(&self, _session: Session) -> Result<(), String> {
        panic!("boom");
    }

    #[rpc]
    async fn whoami(&self, session: Session) -> Result<String, String> {
        Ok(session.userid().to_string())
    }

    /// Calls `add` through the typed client, one level deeper.
    #[rpc]
    async fn add_via_client(&self, session: Session, a: i64) -> Result<i64, RpcError> {
        CalcClient::new(&self.app).add(&session, a, 1).await
    }
}

fn app(timeout_ms: u64) -> App {
    let app = App::new(common::in_process_config(timeout_ms));
    app.add_module(Calc { app: app.clone() })
        .expect("module added");
    app
}

fn user(name: &str) -> Session {
    let mut s = Session::default();
    s.set_userid(name);
    s
}

#[tokio::test]
async fn calls_by_name_and_by_typed_client() {
    let app = app(1000);
    let s = user("u");
    let sum: i64 = app.call("Calc", "add", &s, (2, 3)).await.expect("add");
    assert_eq!(sum, 5);
    let c = CalcClient::new(&app);
    assert_eq!(c.add(&s, 40, 2).await.expect("typed"), 42);
    assert_eq!(
        c.swap(&s, Pair { a: 1, b: 2 }).await.expect("swap"),
        Pair { a: 2, b: 1 }
    );
    assert_eq!(c.whoami(&s).await.expect("whoami"), "u");
    assert_eq!(c.add_via_client(&s, 9).await.expect("nested"), 10);
    assert_eq!(
        app.handlers(),
        [
            "Calc/add",
            "Calc/add_via_client",
            "Calc/boom",
            "Calc/fail",
            "Calc/slow",
            "Calc/swap",
            "Calc/whoami"
        ]
    );
}

#[tokio::test]
async fn errors_are_clear_values() {
    let app = app(100);
    let s = Session::default();
    let e = app
        .call::<_, ()>("Nope", "x", &s, ())
        .await
        .expect_err("unknown module");
    assert_eq!(e, RpcError::UnknownModule("Nope".into()));
    let e = app
        .call::<_, ()>("Calc", "nope", &s, ())
        .await
        .expect_err("unknown method");
    assert_eq!(e.to_string(), "module `Calc` has no handler `nope`");
    let e = app
        .call::<_, i64>("Calc", "add", &s, ("x", 1))
        .await
        .expect_err("bad args");
    assert!(matches!(e, RpcError::BadArgs { .. }), "{e:?}");
    assert!(e.to_string().contains("Calc/add"), "{e}");
    let e = app
        .call::<_, i64>("Calc", "add", &s, (1,))
        .await
        .expect_err("too few args");
    assert!(matches!(e, RpcError::BadArgs { .. }), "{e:?}");
    let e = app
        .call::<_, ()>("Calc", "fail", &s, ())
        .await
        .expect_err("handler error");
    assert_eq!(e, RpcError::Handler("it failed on purpose".into()));
    let e = app
        .call::<_, String>("Calc", "add", &s, (1, 2))
        .await
        .expect_err("wrong reply type");
    assert!(matches!(e, RpcError::BadReply { .. }), "{e:?}");
    let e = app
        .call::<_, ()>("Calc", "slow", &s, (1000,))
        .await
        .expect_err("timeout");
    assert_eq!(e.to_string(), "call to `Calc/slow` timed out after 100ms");
    let e = app
        .call::<_, ()>("Calc", "boom", &s, ())
        .await
        .expect_err("panic contained");
    assert_eq!(e, RpcError::Panicked("Calc/boom".into()));
    // Still serving after a panic.
    let ok: i64 = app.call("Calc", "add", &s, (1, 1)).await.expect("alive");
    assert_eq!(ok, 2);
}

#[tokio::test]
async fn failed_and_timed_out_calls_end_their_spans_with_error_status() {
    let app = app(100);
    let root = app.start_trace("test", &user("t"));
    let s = root.session().clone();
    let _ = app.call::<_, ()>("Calc", "fail", &s, ()).await;
    let _ = app.call::<_, ()>("Calc", "slow", &s, (1000,)).await;
    let _ = app.call::<_, ()>("Nope", "x", &s, ()).await;
    let store = app.trace_store().expect("store");
    let all = |op: &str| -> Vec<mqrs_runtime::trace::StoredSpan> {
        store
            .find(&TraceQuery {
                limit: 10,
                ..Default::default()
            })
            .into_iter()
            .flat_map(|t| t.spans)
            .filter(|sp| sp.name == op)
            .collect()
    };
    let fail = all("Calc/fail");
    assert_eq!(fail.len(), 2, "client and server span: {fail:?}");
    for sp in &fail {
        assert_eq!(sp.error.as_deref(), Some("it failed on purpose"));
        assert_eq!(
            sp.tag("error.type").map(|v| v.as_str()),
            Some("handler_error".into())
        );
    }
    let slow = all("Calc/slow");
    assert_eq!(
        slow.len(),
        2,
        "the cancelled server span still ends: {slow:?}"
    );
    let server = slow
        .iter()
        .find(|sp| sp.kind == "server")
        .expect("server span");
    assert_eq!(
        server.error.as_deref(),
        Some("cancelled: the caller stopped waiting")
    );
    let client = slow
        .iter()
        .find(|sp| sp.kind == "client")
        .expect("client span");
    assert!(client
        .error
        .as_deref()
        .is_some_and(|e| e.contains("timed out")));
    assert!(client.duration_us >= 100_000);
    let nope = all("Nope/x");
    assert_eq!(nope.len(), 1);
    assert_eq!(
        nope[0].tag("error.type").map(|v| v.as_str()),
        Some("unknown_module".into())
    );
}

#[tokio::test]
async fn session_serializes_with_traceparent_and_back() {
    let app = app(1000);
    let root = app.start_trace("test", &user("t"));
    let s = root.session();
    let json = serde_json::to_value(s).expect("serialize");
    let tp = json["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_string();
    assert_eq!(tp.len(), 55);
    assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
    assert_eq!(json["userid"], "t");
    let back: Session = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back.traceparent().as_deref(), Some(tp.as_str()));
    assert_eq!(back.trace_id(), s.trace_id());
    assert!(back.is_traced());
    let plain = serde_json::to_value(Session::default()).expect("serialize");
    assert!(plain.get("traceparent").is_none());
    // Hostile session JSON: a bad traceparent is ignored, not trusted or panicked on.
    let bad: Session =
        serde_json::from_str(r#"{"userid":"x","traceparent":"00-zz-zz-01"}"#).expect("parse");
    assert!(!bad.is_traced());
}

pub struct Hooked {
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    fail: bool,
}

#[rpc_module(lifecycle)]
impl Hooked {
    #[rpc]
    async fn ping(&self, _session: Session) -> Result<(), String> {
        Ok(())
    }
}

impl mqrs_runtime::Lifecycle for Hooked {
    async fn on_start(&self, app: &App) -> Result<(), String> {
        self.log
            .lock()
            .expect("log")
            .push(format!("start {}", app.name()));
        if self.fail {
            return Err("database unreachable".into());
        }
        Ok(())
    }

    async fn on_stop(&self) {
        self.log.lock().expect("log").push("stop".into());
    }
}

#[tokio::test]
async fn lifecycle_hooks_run_on_start_and_shutdown() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let cfg = common::in_process_config(Config::default().rpc.timeout_ms);
    let app = App::new(cfg.clone());
    app.add_module(Hooked {
        log: log.clone(),
        fail: false,
    })
    .expect("added");
    let e = app
        .add_module(Hooked {
            log: log.clone(),
            fail: false,
        })
        .expect_err("twice");
    assert_eq!(e.to_string(), "a module named `Hooked` is already added");
    app.start().await.expect("starts");
    app.call::<_, ()>("Hooked", "ping", &Session::default(), ())
        .await
        .expect("ping");
    app.shutdown().await;
    assert_eq!(*log.lock().expect("log"), ["start mqrs", "stop"]);
    let e = app
        .call::<_, ()>("Hooked", "ping", &Session::default(), ())
        .await
        .expect_err("stopped");
    assert_eq!(e, RpcError::UnknownModule("Hooked".into()));

    let failing = App::new(cfg);
    failing
        .add_module(Hooked {
            log: log.clone(),
            fail: true,
        })
        .expect("added");
    let e = failing.start().await.expect_err("on_start failed");
    assert_eq!(
        e.to_string(),
        "module `Hooked` failed to start: database unreachable"
    );
}

/// A module whose declared handlers have no `inventory` registration, as when the linker drops
/// the crate that defines them.
pub struct Unlinked;

impl mqrs_runtime::Lifecycle for Unlinked {}

impl mqrs_runtime::RpcModule for Unlinked {
    const NAME: &'static str = "Unlinked";
    const METHODS: &'static [&'static str] = &["ghost"];
}

#[test]
fn missing_registrations_are_an_error_that_explains_the_linking_rule() {
    let app = App::new(Config::ephemeral());
    let e = app.add_module(Unlinked).expect_err("registrations missing");
    let text = e.to_string();
    assert!(
        text.contains("module `Unlinked` declares handlers [\"ghost\"]"),
        "{text}"
    );
    assert!(text.contains("reference the crate"), "{text}");
}

/// Same module name as `Calc`, different type: its handlers must not be mixed with Calc's.
pub struct OtherCalc;

#[rpc_module(name = "Calc")]
impl OtherCalc {
    #[rpc]
    async fn add(&self, _session: Session, a: i64, b: i64) -> Result<i64, String> {
        Ok(a * b)
    }
}

pub struct Gate;

#[rpc_module]
impl Gate {}

#[tokio::test]
async fn module_names_are_checked() {
    let app = App::new(Config::ephemeral());
    app.add_module(OtherCalc).expect("added");
    // Only OtherCalc's registration was taken, not Calc's seven handlers of the same name.
    assert_eq!(app.handlers(), ["Calc/add"]);
    let product: i64 = app
        .call("Calc", "add", &Session::default(), (6, 7))
        .await
        .expect("call");
    assert_eq!(product, 42);
    let e = app
        .add_module(Calc { app: app.clone() })
        .expect_err("name taken");
    assert_eq!(e.to_string(), "a module named `Calc` is already added");
    let e = app.add_module(Gate).expect_err("reserved");
    assert_eq!(
        e.to_string(),
        "the module name `Gate` is reserved for the built-in gate"
    );
}

pub struct Counter {
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[rpc_module]
impl Counter {
    #[rpc]
    async fn hit(&self, _session: Session, n: usize) -> Result<(), String> {
        self.hits.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn call_nr_runs_without_waiting_for_a_reply() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = App::new(Config::ephemeral());
    app.add_module(Counter { hits: hits.clone() })
        .expect("added");
    let s = Session::default();
    app.call_nr("Counter", "hit", &s, (2,));
    app.call_nr("Counter", "hit", &s, (3,));
    app.call_nr("Counter", "nope", &s, ()); // logged, not a panic
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hits.load(std::sync::atomic::Ordering::SeqCst) != 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "call_nr calls did not run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
