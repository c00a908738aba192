//! Where calls go and how long they may take: deadlines shrink along a call chain, a call whose
//! budget is used up is not sent, `Module@serverId` pins a server, calls to modules of this
//! process stay in it while the rest go to the remote transport, and `bind` addresses the gate
//! named in the session.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqrs_runtime::trace::TraceQuery;
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session, SessionData};
use mqrs_runtime::{Request, Transport};

pub struct Chain {
    app: App,
}

#[rpc_module]
impl Chain {
    /// Waits `ms`, then calls `inner` with the same session.
    #[rpc]
    async fn outer(&self, session: Session, ms: u64) -> Result<u64, RpcError> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ChainClient::new(&self.app).inner(&session).await
    }

    /// The budget this call got, in ms.
    #[rpc]
    async fn inner(&self, session: Session) -> Result<u64, String> {
        let left = session.remaining().ok_or("no deadline")?;
        Ok(left.as_millis() as u64)
    }

    /// Waits past its own deadline, then tries to call `inner`.
    #[rpc]
    async fn overstay(&self, session: Session) -> Result<String, String> {
        let app = self.app.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A detached task outlives the cancelled handler and keeps the session's deadline.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let r = ChainClient::new(&app).inner(&session).await;
            let _ = tx.send(r);
        });
        let _ = rx.await;
        Ok("unreachable: the caller stopped waiting at 300 ms".into())
    }
}

/// No broker: only the remote transports the tests give.
fn config(timeout_ms: u64) -> Config {
    common::in_process_config(timeout_ms)
}

/// An app running `Chain`, with calls limited to `timeout_ms`.
fn chain_app(timeout_ms: u64) -> App {
    App::builder()
        .config(config(timeout_ms))
        .module(|app| Chain { app: app.clone() })
        .build()
        .expect("app")
}

#[tokio::test]
async fn a_nested_call_gets_at_most_what_is_left_of_its_callers_budget() {
    let app = chain_app(1000);
    let s = Session::default();
    // Direct: the whole second, or a hair less.
    let left: u64 = app.call("Chain", "inner", &s, ()).await.expect("inner");
    assert!((900..=1000).contains(&left), "{left}");
    // Through `outer`, which first spends 400 ms: at most 600 left.
    let left: u64 = app
        .call("Chain", "outer", &s, (400u64,))
        .await
        .expect("outer");
    assert!((400..=600).contains(&left), "{left}");
    // A caller with its own, shorter deadline passes that on.
    let s = s.with_deadline(Instant::now() + Duration::from_millis(200));
    let left: u64 = app.call("Chain", "inner", &s, ()).await.expect("inner");
    assert!(left <= 200, "{left}");
}

#[tokio::test]
async fn a_call_whose_budget_is_used_up_is_not_sent_and_says_deadline_exceeded() {
    let app = chain_app(300);
    let store = app.trace_store().expect("store");
    let root = app.start_trace("job", &Session::default());
    let e = app
        .call::<_, String>("Chain", "overstay", root.session(), ())
        .await
        .expect_err("timed out");
    assert_eq!(e.kind(), "timeout", "{e}");
    // The detached task's call, made after the deadline, fails at the caller without running.
    let deadline = Instant::now() + Duration::from_secs(3);
    let client = loop {
        let spans: Vec<_> = store
            .find(&TraceQuery {
                operation: Some("Chain/inner".into()),
                limit: 10,
                ..Default::default()
            })
            .into_iter()
            .flat_map(|t| t.spans)
            .filter(|s| s.name == "Chain/inner")
            .collect();
        if let Some(c) = spans.iter().find(|s| s.kind == "client") {
            assert!(
                spans.iter().all(|s| s.kind != "server"),
                "inner must never run: {spans:?}"
            );
            break c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no client span for the late call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error_type = client.tag("error.type").map(|v| v.as_str());
    assert_eq!(error_type.as_deref(), Some("deadline_exceeded"));
    assert!(client
        .error
        .as_deref()
        .is_some_and(|e| e.contains("deadline exceeded")));
}

type Reply = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<u8>, RpcError>> + Send + 'static>,
>;

/// A remote transport that records what reaches it and answers `"remote"`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, String, Option<String>)>>,
}

impl Transport for Recorder {
    fn request(&self, req: Request<'_>) -> Reply {
        self.seen.lock().expect("lock").push((
            req.target.to_string(),
            req.method.to_string(),
            req.session.traceparent(),
        ));
        Box::pin(async { Ok(br#""remote""#.to_vec()) })
    }

    fn notify(&self, req: Request<'_>) -> Result<(), RpcError> {
        drop(self.request(req));
        Ok(())
    }
}

#[tokio::test]
async fn local_modules_stay_local_and_the_rest_goes_to_the_remote_transport() {
    let remote = Arc::new(Recorder::default());
    let mut cfg = config(1000);
    cfg.app.server_id = "here".into();
    let app = App::builder()
        .config(cfg)
        .remote(remote.clone())
        .module(|app| Chain { app: app.clone() })
        .build()
        .expect("app");
    let root = app.start_trace("job", &Session::default());
    let s = root.session();
    // A module of this process, pinned to this server or not: in-process.
    let left: u64 = app.call("Chain", "inner", s, ()).await.expect("local");
    assert!(left > 0);
    let _: u64 = app.call("Chain@here", "inner", s, ()).await.expect("local");
    // Pinned to another server, or a module this process lacks: remote, with the trace.
    let r: String = app
        .call("Chain@there", "inner", s, ())
        .await
        .expect("remote");
    assert_eq!(r, "remote");
    let _: String = app.call("Login", "track", s, ()).await.expect("remote");
    app.call_nr("Login", "track", s, ());
    let seen = remote.seen.lock().expect("lock").clone();
    let targets: Vec<(&str, &str)> = seen
        .iter()
        .map(|(t, m, _)| (t.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            ("Chain@there", "inner"),
            ("Login", "track"),
            ("Login", "track")
        ]
    );
    let trace_id = s.trace_id().expect("traced");
    for (_, _, tp) in &seen {
        let tp = tp
            .as_deref()
            .expect("trace context crosses to the remote side");
        assert!(tp.contains(&trace_id), "{tp}");
    }
}

#[tokio::test]
async fn without_a_remote_transport_other_targets_are_unknown() {
    let app = chain_app(1000);
    let s = Session::default();
    let e = app
        .call::<_, u64>("Chain@elsewhere", "inner", &s, ())
        .await
        .expect_err("not here");
    assert_eq!(e, RpcError::UnknownModule("Chain@elsewhere".into()));
    let e = app
        .call::<_, ()>("Nope", "x", &s, ())
        .await
        .expect_err("no such module");
    assert_eq!(e, RpcError::UnknownModule("Nope".into()));
}

#[tokio::test]
async fn bind_reaches_the_gate_named_in_the_session() {
    let remote = Arc::new(Recorder::default());
    let app = App::builder()
        .config(config(1000))
        .remote(remote.clone())
        .build()
        .expect("app");
    // The connection lives at gate `gate-7`, another process: Bind goes there.
    let mut s = Session::new(SessionData {
        sessionid: "c1".into(),
        serverid: "gate-7".into(),
        ..Default::default()
    });
    let _ = app.bind(&mut s, "ann").await;
    assert_eq!(s.userid(), "ann");
    let seen = remote.seen.lock().expect("lock").clone();
    assert_eq!(seen[0].0, "Gate@gate-7");
    assert_eq!(seen[0].1, "Bind");
}
