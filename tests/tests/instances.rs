//! Several instances of one module behind one broker, each an app of its own as a process
//! would be: a call of an idempotent handler that gets no reply from one instance in time is
//! sent again to another within its deadline, each attempt a CLIENT span of its own in the
//! trace; a handler not declared idempotent is never sent twice.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{spans, wait_for};
use demo::client::GateClient;
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{rpc, rpc_module, App, Config, Session, SessionData};
use rumqttc::QoS;

/// What one instance of `Store` was asked, and whether it hangs.
#[derive(Default)]
struct Seen {
    hang: AtomicBool,
    gets: AtomicUsize,
    puts: AtomicUsize,
}

/// A module run by two instances; `get` is safe to repeat, `put` is not.
pub struct Store {
    id: String,
    seen: Arc<Seen>,
}

impl Store {
    async fn answer(&self, count: &AtomicUsize) -> Result<String, String> {
        count.fetch_add(1, Ordering::SeqCst);
        if self.seen.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(self.id.clone())
    }
}

#[rpc_module]
impl Store {
    /// Reads: idempotent, so a caller may try another instance.
    #[rpc(idempotent)]
    async fn get(&self, _session: Session) -> Result<String, String> {
        self.answer(&self.seen.gets).await
    }

    /// Writes: never sent twice.
    #[rpc]
    async fn put(&self, _session: Session) -> Result<String, String> {
        self.answer(&self.seen.puts).await
    }
}

/// The gate's module, calling `Store` by its typed client and by name.
pub struct Front {
    app: App,
}

#[rpc_module]
impl Front {
    #[rpc(name = "HD_Get")]
    async fn get(&self, session: Session) -> Result<String, String> {
        StoreClient::new(&self.app)
            .get(&session)
            .await
            .map_err(|e| e.to_string())
    }

    /// By name: retried because every instance's presence declares `Store/get` idempotent.
    #[rpc(name = "HD_GetByName")]
    async fn get_by_name(&self, session: Session) -> Result<String, String> {
        self.app
            .call("Store", "get", &session, ())
            .await
            .map_err(|e| e.to_string())
    }

    #[rpc(name = "HD_Put")]
    async fn put(&self, session: Session) -> Result<String, String> {
        StoreClient::new(&self.app)
            .put(&session)
            .await
            .map_err(|e| e.to_string())
    }
}

fn cfg(server_id: &str, url: BrokerUrl, timeout_ms: u64) -> Config {
    let mut c = Config::ephemeral();
    c.app.server_id = server_id.into();
    c.broker.url = url;
    c.rpc.timeout_ms = timeout_ms;
    c
}

/// The front app (gate, viewer, embedded broker) and two instances of `Store`.
struct Fleet {
    front: App,
    instances: Vec<(App, Arc<Seen>)>,
    gate_port: u16,
    viewer: std::net::SocketAddr,
}

async fn fleet(timeout_ms: u64) -> Fleet {
    fleet_with(timeout_ms, |_| {}, |_| {}).await
}

/// As [`fleet`], with the front's settings adjusted by `tweak_front`, `store-b`'s by `tweak_b`.
async fn fleet_with(
    timeout_ms: u64,
    tweak_front: impl FnOnce(&mut Config),
    tweak_b: impl Fn(&mut Config),
) -> Fleet {
    let mut front_cfg = cfg("front", BrokerUrl::Embedded, timeout_ms);
    tweak_front(&mut front_cfg);
    let front = App::builder()
        .config(front_cfg)
        .module(|app| Front { app: app.clone() })
        .build()
        .expect("front app");
    let addrs = front.start().await.expect("front starts");
    let broker = addrs.broker.expect("embedded broker").port();
    let mut instances = Vec::new();
    for id in ["store-a", "store-b"] {
        let url = BrokerUrl::Urls(vec![format!("mqtt://127.0.0.1:{broker}")]);
        let mut c = cfg(id, url, timeout_ms);
        c.gate.enabled = false;
        // The hung handler does not finish: stop without waiting for it.
        c.gate.shutdown_grace_ms = 100;
        c.trace.viewer = false;
        c.trace.store = false;
        c.trace.collector = false;
        c.trace.otlp_export = format!("http://{}", addrs.collector.expect("collector"));
        if id == "store-b" {
            tweak_b(&mut c);
        }
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let app = App::builder()
            .config(c)
            .module(move |_| Store {
                id: id.to_string(),
                seen: s.clone(),
            })
            .build()
            .expect("instance app");
        app.start().await.expect("instance starts");
        instances.push((app, seen));
    }
    wait_for("both instances' presence", Duration::from_secs(5), || {
        let cluster = front.cluster();
        ["store-a", "store-b"].iter().all(|id| {
            cluster
                .get(*id)
                .is_some_and(|m| m.iter().any(|x| x == "Store"))
        })
    })
    .await;
    Fleet {
        gate_port: addrs.gate.expect("gate").port(),
        viewer: addrs.viewer.expect("viewer"),
        front,
        instances,
    }
}

/// The first of `traces` in which `pick` finds what it looks for, among the spans the viewer
/// at `viewer` holds of it (spans arrive by OTLP a moment after the reply).
async fn find_in_traces<T>(
    viewer: std::net::SocketAddr,
    traces: &[String],
    pick: impl Fn(&[common::Span]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for id in traces {
            let (status, body) = common::http_get(viewer, &format!("/api/traces/{id}")).await;
            if status == 200 {
                if let Some(found) = pick(&spans(&body["data"][0])) {
                    return found;
                }
            }
        }
        assert!(Instant::now() < deadline, "not found among {traces:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CLIENT spans of `Store/get` among `all`: one per attempt.
fn attempts(all: &[common::Span]) -> Vec<common::Span> {
    all.iter()
        .filter(|s| s.name == "Store/get" && s.kind == "client")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_instance_costs_an_idempotent_call_a_retry_and_others_their_error() {
    let f = fleet(2000).await;
    let (a, b) = (&f.instances[0].1, &f.instances[1].1);
    b.hang.store(true, Ordering::SeqCst);
    let c = GateClient::connect("retries", "127.0.0.1", f.gate_port)
        .await
        .expect("client connects");

    // Every read is answered by the live instance, within the 2 s deadline, whichever
    // instance was tried first (instances take turns, so a read went to the hung one).
    let mut traces = Vec::new();
    let reads = Instant::now();
    for route in ["Front/HD_Get", "Front/HD_GetByName"] {
        for _ in 0..4 {
            let t = Instant::now();
            let r = c
                .request(route, b"", QoS::AtLeastOnce)
                .await
                .expect("reply");
            assert_eq!(r["Error"], "", "{route}: {r}");
            assert_eq!(r["Result"], "store-a", "{route}: {r}");
            assert!(
                t.elapsed() < Duration::from_millis(1900),
                "{:?}",
                t.elapsed()
            );
            traces.push(r["TraceId"].as_str().expect("traced").to_string());
        }
    }
    // The hung instance cost one read half its deadline; then it was passed over for a while
    // (instances that did not answer in time, or said they are busy, are).
    let tried_hung = b.gets.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&tried_hung),
        "the hung instance was tried {tried_hung} times"
    );
    assert!(
        reads.elapsed() < Duration::from_secs(3),
        "{:?}",
        reads.elapsed()
    );
    assert_eq!(a.gets.load(Ordering::SeqCst), 8, "each read answered once");

    // Writes go out once each: those that reach the hung instance fail at the deadline.
    let mut failed = 0;
    for _ in 0..4 {
        let r = c
            .request("Front/HD_Put", b"", QoS::AtLeastOnce)
            .await
            .expect("reply");
        if r["Error"] != "" {
            assert!(
                r["Error"].as_str().is_some_and(|e| e.contains("timed out")),
                "{r}"
            );
            failed += 1;
        }
    }
    let (puts_a, puts_b) = (a.puts.load(Ordering::SeqCst), b.puts.load(Ordering::SeqCst));
    assert_eq!(puts_a + puts_b, 4, "never sent twice: {puts_a} + {puts_b}");
    assert_eq!(failed, puts_b, "every write to the hung instance failed");

    // A retried read's trace: two CLIENT spans under the handler's span, the first tried on
    // the hung instance and failed by its timeout, the second answered by the live one, whose
    // SERVER span nests under it.
    let (first, second, server) = find_in_traces(f.viewer, &traces, |all| {
        let [x, y] = &attempts(all)[..] else {
            return None;
        };
        let (first, second) = match x.tag("mqrs.rpc.attempt") == Some(1.into()) {
            true => (x.clone(), y.clone()),
            false => (y.clone(), x.clone()),
        };
        // The live instance's SERVER span, under the second attempt (the hung one's ends at
        // its attempt's deadline, under the first, when its handler is cut).
        let server = all.iter().find(|s| {
            s.name == "Store/get" && s.kind == "server" && s.parent.as_deref() == Some(&second.id)
        })?;
        Some((first, second, server.clone()))
    })
    .await;
    assert_eq!(first.tag("mqrs.rpc.attempt"), Some(1.into()));
    assert_eq!(first.tag("mqrs.server.id"), Some("store-b".into()));
    assert_eq!(first.tag("error.type"), Some("timeout".into()));
    assert_eq!(second.tag("mqrs.rpc.attempt"), Some(2.into()));
    assert_eq!(second.tag("mqrs.server.id"), Some("store-a".into()));
    assert_eq!(second.tag("error.type"), None);
    assert_eq!(
        first.parent, second.parent,
        "both attempts under the caller's span"
    );
    assert_eq!(server.service, "Store");
    assert_eq!(server.tag("error.type"), None);
    // The first attempt had half of the 2 s: its span ends about then.
    let half = first.duration as f64 / 1e6;
    assert!((0.9..1.5).contains(&half), "first attempt took {half} s");

    for (app, _) in f.instances {
        app.shutdown().await;
    }
    f.front.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_is_passed_over_and_its_refusals_retried_elsewhere_at_once() {
    // store-b serves one call at a time; a write pinned to it holds that place.
    let f = fleet_with(2000, |_| {}, |c| c.broker.max_pending = 1).await;
    let (a, b) = (&f.instances[0].1, &f.instances[1].1);
    b.hang.store(true, Ordering::SeqCst);
    let (front, session) = (f.front.clone(), Session::new(SessionData::default()));
    let held = tokio::spawn(async move {
        front
            .call::<_, String>("Store@store-b", "put", &session, ())
            .await
    });
    wait_for("store-b busy", Duration::from_secs(5), || {
        b.puts.load(Ordering::SeqCst) == 1
    })
    .await;

    // Reads: store-b answers "unavailable" at once, so a read that tries it first is sent to
    // store-a without waiting; after that store-b is passed over while it is busy.
    let c = GateClient::connect("busy", "127.0.0.1", f.gate_port)
        .await
        .expect("client connects");
    let mut traces = Vec::new();
    let t = Instant::now();
    for _ in 0..10 {
        let r = c
            .request("Front/HD_Get", b"", QoS::AtLeastOnce)
            .await
            .expect("reply");
        assert_eq!(r["Result"], "store-a", "{r}");
        traces.push(r["TraceId"].as_str().expect("traced").to_string());
    }
    let took = t.elapsed();
    assert!(took < Duration::from_millis(500), "10 reads took {took:?}");
    assert_eq!(a.gets.load(Ordering::SeqCst), 10);
    assert_eq!(
        b.gets.load(Ordering::SeqCst),
        0,
        "refused before its handler"
    );

    // Every read's attempts, from the traces: at most one went to the busy instance.
    let mut tried = Vec::new();
    for id in &traces {
        // Complete once the live instance's SERVER span is in.
        let on = find_in_traces(f.viewer, std::slice::from_ref(id), |all| {
            let served = all
                .iter()
                .any(|s| s.name == "Store/get" && s.kind == "server");
            served.then(|| {
                attempts(all)
                    .iter()
                    .map(|s| s.tag("mqrs.server.id"))
                    .collect::<Vec<_>>()
            })
        })
        .await;
        tried.push(on);
    }
    let on_b = tried
        .iter()
        .flatten()
        .filter(|s| s.as_ref() == Some(&"store-b".into()))
        .count();
    assert!(
        on_b <= 1,
        "the busy instance was tried {on_b} times: {tried:?}"
    );

    let held = held.await.expect("task");
    assert!(held.is_err(), "the held write ends at its deadline");
    for (app, _) in f.instances {
        app.shutdown().await;
    }
    f.front.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_read_takes_the_first_answer_and_drops_the_slow_attempt() {
    let f = fleet_with(2000, |c| c.rpc.hedge_after_ms = 50, |_| {}).await;
    let (a, b) = (&f.instances[0].1, &f.instances[1].1);
    b.hang.store(true, Ordering::SeqCst);
    let c = GateClient::connect("hedged", "127.0.0.1", f.gate_port)
        .await
        .expect("client connects");
    let mut traces = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let r = c
            .request("Front/HD_Get", b"", QoS::AtLeastOnce)
            .await
            .expect("reply");
        assert_eq!(r["Result"], "store-a", "{r}");
        // Not half the deadline, as without hedging: 50 ms and the live instance's answer.
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        traces.push(r["TraceId"].as_str().expect("traced").to_string());
    }
    assert_eq!(a.gets.load(Ordering::SeqCst), 6);
    assert!(
        b.gets.load(Ordering::SeqCst) >= 1,
        "the slow instance was tried"
    );

    // A hedged read: the slow attempt is marked cancelled, the second answered.
    let (slow, fast) = find_in_traces(f.viewer, &traces, |all| {
        let attempts = attempts(all);
        let by = |id: &str| {
            attempts
                .iter()
                .find(|s| s.tag("mqrs.server.id") == Some(id.into()))
                .cloned()
        };
        Some((by("store-b")?, by("store-a")?))
    })
    .await;
    assert_eq!(slow.tag("mqrs.rpc.attempt"), Some(1.into()));
    assert_eq!(slow.tag("mqrs.rpc.cancelled"), Some(true.into()));
    assert_eq!(fast.tag("mqrs.rpc.attempt"), Some(2.into()));
    assert_eq!(fast.tag("mqrs.rpc.cancelled"), None);
    assert!(
        fast.start >= slow.start + 50_000,
        "the second went 50 ms after the first"
    );

    for (app, _) in f.instances {
        app.shutdown().await;
    }
    f.front.shutdown().await;
}
