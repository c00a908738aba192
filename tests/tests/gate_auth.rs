//! Login on CONNECT: the app's connect hook accepts, accepts as a user, or refuses with the
//! MQTT 3.1.1 CONNACK codes 4 and 5, as rumqttc and mosquitto_pub (C) read them; an async
//! hook that calls a module is traced under its own `gate CONNECT` root; an address refused
//! again and again waits longer each time; the password never reaches the log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{spans, start_demo, tools, Running};
use demo::client::GateClient;
use mqrs_runtime::{Admission, ConnectInfo, Refusal};
use rumqttc::{ConnectReturnCode, Event, MqttOptions, Packet, QoS};

/// The demo's rule for these tests: `alice`/`right` is accepted as alice, `mallory` is not
/// authorized whatever her password, any other credentials are bad, no credentials is a guest.
async fn rule(c: ConnectInfo) -> Admission {
    match (
        c.username.as_deref(),
        c.password.as_ref().map(|p| p.expose()),
    ) {
        (Some("alice"), Some("right")) => Admission::AcceptAs("alice".into()),
        (Some("mallory"), _) => Admission::Refuse(Refusal::NotAuthorized),
        (None, None) => Admission::Accept,
        _ => Admission::Refuse(Refusal::BadCredentials),
    }
}

/// The CONNACK code rumqttc gets connecting as `id` with `login` (user name, password).
async fn connack(d: &Running, id: &str, login: Option<(&str, &str)>) -> ConnectReturnCode {
    let mut opts = MqttOptions::new(id, "127.0.0.1", d.gate.port());
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    let (_client, mut events) = rumqttc::AsyncClient::new(opts, 4);
    loop {
        match tokio::time::timeout(Duration::from_secs(15), events.poll())
            .await
            .expect("an answer to CONNECT")
        {
            Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code,
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
            Err(e) => panic!("{id}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_accepts_binds_a_user_or_refuses_with_codes_4_and_5() {
    let d = start_demo(|_| {}).await;
    d.app.set_on_connect(rule);
    assert_eq!(
        connack(&d, "c1", Some(("bob", "wrong"))).await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        connack(&d, "c2", Some(("mallory", "right"))).await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(connack(&d, "c3", None).await, ConnectReturnCode::Success);
    // Accepted as alice: her session is bound before any login call.
    let mut opts = MqttOptions::new("alice-1", "127.0.0.1", d.gate.port());
    opts.set_credentials("alice", "right");
    let alice = GateClient::connect_with(opts)
        .await
        .expect("alice connects");
    let r = common::join_chat(&alice, "auth", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "", "{r}");
    assert_eq!(r["Result"]["users"], serde_json::json!(["alice"]), "{r}");
    // mosquitto_pub (C) reads the refusal as MQTT says it.
    let exe = tools::require("mosquitto_pub", "mosquitto-clients");
    let out = tools::run(
        tokio::process::Command::new(exe).args([
            "-h",
            "127.0.0.1",
            "-p",
            &d.gate.port().to_string(),
            "-u",
            "bob",
            "-P",
            "wrong",
            "-t",
            "Chat/HD_CurrentRoom/1",
            "-m",
            "{}",
        ]),
        Duration::from_secs(20),
    )
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(said.contains("bad user name or password"), "{said}");
    let stats = d.app.gate_stats().expect("gate");
    assert_eq!(stats.connect_refused, 3, "{stats:?}");
    d.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_hook_calls_a_module_and_the_connect_is_a_trace_of_its_own() {
    let d = start_demo(|_| {}).await;
    let app = d.app.clone();
    d.app.set_on_connect(move |c: ConnectInfo| {
        let app = app.clone();
        async move {
            // Any module call stands for `Login/Authenticate`.
            match app
                .call::<_, String>("Login", "track", &c.session, ())
                .await
            {
                Ok(_) => Admission::AcceptAs(c.username.unwrap_or_default()),
                Err(_) => Admission::Refuse(Refusal::NotAuthorized),
            }
        }
    });
    let mut opts = MqttOptions::new("carol-1", "127.0.0.1", d.gate.port());
    opts.set_credentials("carol", "pw");
    let _carol = GateClient::connect_with(opts)
        .await
        .expect("carol connects");
    let deadline = Instant::now() + Duration::from_secs(5);
    let trace = loop {
        let (_, found) = d
            .get("/api/traces?service=Gate&operation=gate%20CONNECT&limit=5&lookback=1h")
            .await;
        if let Some(t) = found["data"].as_array().and_then(|a| a.first()).cloned() {
            if spans(&t).len() >= 3 {
                break t;
            }
        }
        assert!(Instant::now() < deadline, "no CONNECT trace: {found}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let all = spans(&trace);
    let root = all.iter().find(|s| s.parent.is_none()).expect("a root");
    assert_eq!(root.name, "gate CONNECT");
    assert_eq!(root.tag("user.name"), Some("carol".into()));
    assert_eq!(root.tag("mqrs.client_id"), Some("carol-1".into()));
    assert!(
        all.iter().any(|s| s.name.ends_with("Login/track")),
        "{:?}",
        all.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    d.app.shutdown().await;
}

/// Everything the app logs, at every level, since this binary started.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let make = move || Sink(sink.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(make)
            .with_ansi(false)
            .init();
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_refused_again_and_again_waits_longer_and_no_password_is_logged() {
    const SECRET: &str = "pw-that-must-never-be-logged-7f3a";
    let log = captured();
    let d = start_demo(|_| {}).await;
    d.app.set_on_connect(rule);
    let mut took = Vec::new();
    for i in 0..6 {
        let t = Instant::now();
        let code = connack(&d, &format!("guess-{i}"), Some(("bob", SECRET))).await;
        assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        took.push(t.elapsed());
    }
    // Three refusals are free; then 250 ms, 500 ms, 1 s before the CONNECT is even heard.
    assert!(
        took[..3].iter().all(|t| *t < Duration::from_millis(250)),
        "{took:?}"
    );
    assert!(took[5] >= Duration::from_millis(1000), "{took:?}");
    assert!(took[5] > took[4] && took[4] > took[3], "{took:?}");
    d.app.shutdown().await;
    let text = String::from_utf8_lossy(&log.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    assert!(text.contains("CONNECT refused"), "refusals are logged");
    assert!(!text.contains(SECRET), "the password reached the log");
}
