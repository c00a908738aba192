//! Head sampling and keeping what matters, through the gate over real MQTT: a ratio of 0
//! leaves no trace of a successful request, while a failed or slow one is kept (the path from
//! the root to the failing or slow span, tagged `mqrs.kept`); per-operation ratios and the rate
//! limit; and `on_request_tracing` still decides first (a declined request is never recorded).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::spans;
use demo::client::GateClient;
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session};
use rumqttc::QoS;
use serde_json::Value;

/// The body of `HD_Slow`.
#[derive(serde::Deserialize)]
pub struct Sleep {
    ms: u64,
}

/// Handlers that succeed, fail, swallow a failure, or take their time.
pub struct Probe {
    app: App,
}

#[rpc_module]
impl Probe {
    #[rpc(name = "HD_Ok")]
    async fn ok_hd(&self, _session: Session) -> Result<u32, String> {
        Ok(1)
    }

    #[rpc]
    async fn ok(&self, _session: Session) -> Result<u32, String> {
        Ok(1)
    }

    #[rpc]
    async fn fail(&self, _session: Session) -> Result<(), String> {
        Err("refused on purpose".into())
    }

    /// Calls `fail` through `mid`: the error comes back up the whole chain.
    #[rpc(name = "HD_Chain")]
    async fn chain(&self, session: Session) -> Result<(), RpcError> {
        self.app.call("Probe", "mid", &session, ()).await
    }

    #[rpc]
    async fn mid(&self, session: Session) -> Result<(), RpcError> {
        self.app.call("Probe", "fail", &session, ()).await
    }

    /// Calls `ok`, then `fail`, and answers success anyway.
    #[rpc(name = "HD_Swallow")]
    async fn swallow(&self, session: Session) -> Result<&'static str, RpcError> {
        self.app.call::<_, u32>("Probe", "ok", &session, ()).await?;
        let failed = self
            .app
            .call::<_, ()>("Probe", "fail", &session, ())
            .await
            .is_err();
        Ok(if failed { "swallowed" } else { "no failure?" })
    }

    #[rpc(name = "HD_Slow")]
    async fn slow(&self, _session: Session, req: Sleep) -> Result<u64, String> {
        tokio::time::sleep(Duration::from_millis(req.ms)).await;
        Ok(req.ms)
    }
}

struct Running {
    app: App,
    gate: u16,
}

/// The login module and [`Probe`] behind a gate, with the demo's rule that guests are not
/// traced, and the sampling settings `tweak` sets.
async fn start(tweak: impl FnOnce(&mut Config)) -> Running {
    let mut cfg = Config::ephemeral();
    cfg.broker.url = mqrs_runtime::config::BrokerUrl::None;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    tweak(&mut cfg);
    let app = App::builder()
        .config(cfg)
        .module(demo::login::Login::new)
        .module(|app| Probe { app: app.clone() })
        .on_request_tracing(|session, _| !session.is_guest())
        .build()
        .expect("app builds");
    let addrs = app.start().await.expect("app starts");
    Running {
        gate: addrs.gate.expect("gate").port(),
        app,
    }
}

impl Running {
    async fn client(&self, user: Option<&str>) -> GateClient {
        let id = format!("sampling-{}", user.unwrap_or("guest"));
        let c = GateClient::connect(&id, "127.0.0.1", self.gate)
            .await
            .expect("connects");
        if let Some(user) = user {
            let body = serde_json::json!({"userName": user, "passWord": "pw"}).to_string();
            let r = c
                .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
                .await
                .expect("login reply");
            assert_eq!(r["Error"], "", "{r}");
        }
        c
    }

    fn traces(&self) -> usize {
        self.app.trace_store().expect("store").stats().traces
    }

    /// The stored trace `id` in Jaeger's JSON shape, once its root (which ends last) is in.
    async fn trace(&self, id: &str) -> Value {
        let store = self.app.trace_store().expect("store");
        let id128 = u128::from_str_radix(id, 16).expect("hex trace id");
        common::wait_for("the kept trace's root", Duration::from_secs(5), || {
            store
                .trace(id128)
                .is_some_and(|t| t.spans.iter().any(|s| s.parent_span_id.is_none()))
        })
        .await;
        mqrs_viewer::jaeger_trace(&store.trace(id128).expect("stored"))
    }
}

async fn call(c: &GateClient, route: &str, body: &str) -> Value {
    c.request(route, body.as_bytes(), QoS::AtLeastOnce)
        .await
        .expect("reply")
}

/// `(name, kind)` of every span of a trace.
fn shape(trace: &Value) -> BTreeSet<(String, String)> {
    spans(trace).into_iter().map(|s| (s.name, s.kind)).collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Every span of the trace carries `mqrs.kept` = `reason`.
fn all_kept(trace: &Value, reason: &str) {
    for s in spans(trace) {
        assert_eq!(
            s.tag("mqrs.kept"),
            Some(Value::from(reason)),
            "`{}` {} is not marked as kept for {reason}",
            s.name,
            s.kind
        );
    }
}

#[tokio::test]
async fn ratio_zero_records_nothing_but_the_path_to_a_failure() {
    let r = start(|c| {
        c.trace.sample_ratio = 0.0;
        c.trace.keep_slow_ms = 0;
    })
    .await;
    let c = r.client(Some("ann")).await;
    for _ in 0..5 {
        let ok = call(&c, "Probe/HD_Ok", "{}").await;
        assert_eq!(ok["Result"], 1);
        assert!(ok.get("TraceId").is_none(), "skipped, so no trace: {ok}");
    }
    assert_eq!(r.traces(), 0, "successful skipped requests leave nothing");

    // An error on the way back up: every span from the root to `fail`, each marked.
    let chain = call(&c, "Probe/HD_Chain", "{}").await;
    assert!(chain["Error"]
        .as_str()
        .is_some_and(|e| e.contains("refused on purpose")));
    let id = chain["TraceId"].as_str().expect("a kept trace is named");
    let t = r.trace(id).await;
    assert_eq!(
        shape(&t),
        set(&[
            ("gate Probe/HD_Chain", "server"),
            ("Probe/HD_Chain", "client"),
            ("Probe/HD_Chain", "server"),
            ("Probe/mid", "client"),
            ("Probe/mid", "server"),
            ("Probe/fail", "client"),
            ("Probe/fail", "server"),
        ])
    );
    all_kept(&t, "error");
    // The trace is whole: every parent is in it.
    let all = spans(&t);
    let ids: BTreeSet<_> = all.iter().map(|s| s.id.clone()).collect();
    assert!(all
        .iter()
        .all(|s| s.parent.as_ref().is_none_or(|p| ids.contains(p))));

    // A failure the handler swallowed: the reply is a success, the trace is still kept, and
    // the successful call made before the failure is not part of it.
    let swallow = call(&c, "Probe/HD_Swallow", "{}").await;
    assert_eq!(swallow["Result"], "swallowed");
    let id = swallow["TraceId"].as_str().expect("kept, so named");
    let t = r.trace(id).await;
    assert_eq!(
        shape(&t),
        set(&[
            ("gate Probe/HD_Swallow", "server"),
            ("Probe/HD_Swallow", "client"),
            ("Probe/HD_Swallow", "server"),
            ("Probe/fail", "client"),
            ("Probe/fail", "server"),
        ])
    );
    all_kept(&t, "error");

    // The application's policy comes first: a guest's failure is never recorded.
    let before = r.traces();
    let guest = r.client(None).await;
    let g = call(&guest, "Probe/HD_Chain", "{}").await;
    assert!(g["Error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(g.get("TraceId").is_none(), "{g}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        r.traces(),
        before,
        "declined by on_request_tracing: nothing kept"
    );
    r.app.shutdown().await;
}

#[tokio::test]
async fn slow_requests_are_kept_when_skipped_and_fast_failures_are_not_without_keep_failed() {
    let r = start(|c| {
        c.trace.sample_ratio = 0.0;
        c.trace.keep_failed = false;
        c.trace.keep_slow_ms = 30;
    })
    .await;
    let c = r.client(Some("bob")).await;
    let fast = call(&c, "Probe/HD_Slow", r#"{"ms": 1}"#).await;
    assert!(fast.get("TraceId").is_none(), "{fast}");
    let failed = call(&c, "Probe/HD_Chain", "{}").await;
    assert!(failed.get("TraceId").is_none(), "{failed}");
    assert_eq!(r.traces(), 0);

    let slow = call(&c, "Probe/HD_Slow", r#"{"ms": 60}"#).await;
    assert_eq!(slow["Result"], 60);
    let id = slow["TraceId"].as_str().expect("slow, so kept and named");
    let t = r.trace(id).await;
    assert_eq!(
        shape(&t),
        set(&[
            ("gate Probe/HD_Slow", "server"),
            ("Probe/HD_Slow", "client"),
            ("Probe/HD_Slow", "server"),
        ])
    );
    all_kept(&t, "slow");
    assert_eq!(r.traces(), 1);
    r.app.shutdown().await;
}

#[tokio::test]
async fn per_operation_ratio_overrides_and_sampled_traces_are_whole_and_unmarked() {
    let r = start(|c| {
        c.trace.sample_operations.insert("Probe/HD_Ok".into(), 0.0);
        c.trace.keep_failed = false;
        c.trace.keep_slow_ms = 0;
    })
    .await;
    let c = r.client(Some("cy")).await;
    let before = r.traces();
    let ok = call(&c, "Probe/HD_Ok", "{}").await;
    assert!(ok.get("TraceId").is_none(), "HD_Ok is sampled at 0: {ok}");
    let swallow = call(&c, "Probe/HD_Swallow", "{}").await;
    let id = swallow["TraceId"]
        .as_str()
        .expect("sampled at the default 1.0");
    let t = r.trace(id).await;
    // Sampled: every span, the successful `ok` call included, and no `mqrs.kept` mark.
    assert_eq!(shape(&t).len(), 7, "{:?}", shape(&t));
    assert!(spans(&t).iter().all(|s| s.tag("mqrs.kept").is_none()));
    assert_eq!(r.traces(), before + 1);
    r.app.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_caps_new_traces_per_second() {
    let r = start(|c| {
        c.trace.max_traces_per_second = 3;
        c.trace.keep_failed = false;
        c.trace.keep_slow_ms = 0;
    })
    .await;
    // The login is a new trace too: wait for the bucket to fill up again.
    let c = r.client(Some("dee")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = r.traces();
    let started = std::time::Instant::now();
    let mut named = 0;
    for _ in 0..30 {
        let ok = call(&c, "Probe/HD_Ok", "{}").await;
        named += usize::from(ok.get("TraceId").is_some());
    }
    // A full bucket of 3, plus what refills (3 per second) while the 30 requests run.
    let refill = (started.elapsed().as_secs_f64() * 3.0).ceil() as usize;
    assert!(
        (3..=3 + refill).contains(&named),
        "{named} traces for 30 requests in {:?}",
        started.elapsed()
    );
    assert_eq!(
        r.traces(),
        before + named,
        "the replies name exactly the stored traces"
    );
    r.app.shutdown().await;
}

#[tokio::test]
async fn out_of_range_sampling_settings_refuse_to_start() {
    let mut cfg = Config::ephemeral();
    cfg.broker.url = mqrs_runtime::config::BrokerUrl::None;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    cfg.gate.enabled = false;
    cfg.trace.sample_ratio = 2.0;
    let app = App::builder().config(cfg).build().expect("builds");
    let e = app.start().await.expect_err("refused");
    assert!(e.to_string().contains("sample_ratio = 2"), "{e}");
    // Asked again, it is refused again: the settings are checked once, the refusal stays.
    let e = app.start().await.expect_err("refused again");
    assert!(e.to_string().contains("sample_ratio = 2"), "{e}");
}

#[tokio::test]
async fn an_otlp_endpoint_that_is_not_a_url_refuses_to_start_every_time() {
    let mut cfg = Config::ephemeral();
    cfg.broker.url = mqrs_runtime::config::BrokerUrl::None;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    cfg.gate.enabled = false;
    cfg.trace.otlp_export = "127.0.0.1:4318".into();
    let app = App::builder().config(cfg).build().expect("builds");
    for _ in 0..2 {
        let e = app.start().await.expect_err("refused");
        assert!(e.to_string().contains("127.0.0.1:4318"), "{e}");
    }
}
