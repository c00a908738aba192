//! Modules in two apps that share only an MQTT broker, as two processes would: the embedded
//! broker of the first app, or a real mosquitto. The chat scenario works across them; the back
//! app exports its spans by OTLP to the front app's collector, so the front's Jaeger API shows
//! the same nested trace as the single-process demo. Errors keep their kind, late replies are
//! dropped and counted, oversized payloads fail clearly, and unknown targets fail at once.

mod common;

use std::time::{Duration, Instant};

use common::chat_tree::assert_chat_tree;
use common::mosquitto::Mosquitto;
use common::{spans, wait_for};
use demo::client::GateClient;
use demo::Parts;
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session};
use rumqttc::QoS;

/// A module with a slow and a large answer, for the fault cases, and a message to the client.
pub struct Probe {
    app: App,
}

/// What `Probe/HD_Notify` sends back to its client, on which topic.
#[derive(serde::Deserialize)]
struct Note {
    topic: String,
    text: String,
}

#[rpc_module]
impl Probe {
    /// Sends the client `text` on `topic` through its gate, in the other process.
    #[rpc(name = "HD_Notify")]
    async fn notify(&self, session: Session, note: Note) -> Result<(), String> {
        self.app
            .send(&session, note.topic, note.text)
            .await
            .map_err(|e| e.to_string())
    }

    #[rpc]
    async fn sleep(&self, _session: Session, ms: u64) -> Result<u64, String> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    #[rpc]
    async fn big(&self, _session: Session, bytes: usize) -> Result<String, String> {
        Ok("x".repeat(bytes))
    }

    #[rpc]
    async fn fail(&self, _session: Session) -> Result<(), String> {
        Err("refused on purpose".into())
    }
}

/// Which broker the two apps share.
enum Broker {
    /// The front app runs it embedded; the back app connects to it.
    Embedded,
    /// A mosquitto both connect to.
    Mosquitto(Mosquitto),
}

/// The front process (gate + chat, the viewer) and the back process (login + probe).
struct Split {
    front: App,
    back: App,
    gate_port: u16,
    viewer: std::net::SocketAddr,
    broker_port: u16,
    _broker: Broker,
}

fn cfg(server_id: &str, url: BrokerUrl, timeout_ms: u64) -> Config {
    let mut c = Config::ephemeral();
    c.app.server_id = server_id.into();
    c.broker.url = url;
    c.rpc.timeout_ms = timeout_ms;
    c
}

async fn split(broker: Broker, timeout_ms: u64) -> Split {
    split_with(broker, timeout_ms, |_| {}, |_| {}).await
}

/// As [`split`], with the front's and the back's settings adjusted.
async fn split_with(
    broker: Broker,
    timeout_ms: u64,
    front_tweak: impl FnOnce(&mut Config),
    back_tweak: impl FnOnce(&mut Config),
) -> Split {
    let url = |port: u16| BrokerUrl::Urls(vec![format!("mqtt://127.0.0.1:{port}")]);
    let front_url = match &broker {
        Broker::Embedded => BrokerUrl::Embedded,
        Broker::Mosquitto(m) => url(m.port),
    };
    let mut front_cfg = cfg("front", front_url, timeout_ms);
    front_tweak(&mut front_cfg);
    let front = demo::build(
        front_cfg,
        Parts {
            gate: true,
            login: false,
            chat: true,
        },
    )
    .expect("front app");
    let addrs = front.start().await.expect("front starts");
    let back_port = match &broker {
        Broker::Embedded => addrs.broker.expect("embedded broker").port(),
        Broker::Mosquitto(m) => m.port,
    };
    let mut back_cfg = cfg("back", url(back_port), timeout_ms);
    back_cfg.gate.enabled = false;
    // As `demo --otlp`: spans go to the front app's collector, none are kept here.
    back_cfg.trace.viewer = false;
    back_cfg.trace.store = false;
    back_cfg.trace.collector = false;
    back_cfg.trace.otlp_export = format!("http://{}", addrs.collector.expect("collector"));
    back_tweak(&mut back_cfg);
    let back = App::builder()
        .config(back_cfg)
        .module(demo::login::Login::new)
        .module(|app| Probe { app: app.clone() })
        .build()
        .expect("back app");
    back.start().await.expect("back starts");
    assert!(front.broker_stats().expect("mqtt").connected);
    assert!(back.broker_stats().expect("mqtt").connected);
    // Each learns the other's modules from its retained presence message.
    let runs = |app: &App, sid: &str, module: &str| {
        app.cluster()
            .get(sid)
            .is_some_and(|m| m.iter().any(|x| x == module))
    };
    wait_for("presence", Duration::from_secs(5), || {
        runs(&front, "back", "Probe")
            && runs(&back, "front", "Gate")
            && runs(&back, "front", "Chat")
    })
    .await;
    Split {
        gate_port: addrs.gate.expect("gate").port(),
        viewer: addrs.viewer.expect("viewer"),
        broker_port: back_port,
        front,
        back,
        _broker: broker,
    }
}

impl Split {
    async fn stop(self) {
        self.back.shutdown().await;
        self.front.shutdown().await;
    }
}

async fn chat_across_processes(broker: Broker) {
    let s = split(broker, 3000).await;
    let c = GateClient::connect("split-user", "127.0.0.1", s.gate_port)
        .await
        .expect("client connects");
    // HD_Login runs in the back app, whose `bind` reaches the front app's gate by server id.
    let body = serde_json::json!({"userName": "sam", "passWord": "pw"}).to_string();
    let r = c
        .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
        .await
        .expect("login reply");
    assert_eq!(r["Error"], "", "{r}");
    let r = common::join_chat(&c, "split", QoS::AtLeastOnce).await;
    assert_eq!(r["Error"], "", "{r}");
    assert_eq!(r["Result"]["users"], serde_json::json!(["sam"]), "{r}");
    let trace_id = r["TraceId"].as_str().expect("traced").to_string();

    // A handler in the back app sends the client a message through the front app's gate.
    let note = |topic: &str, text: &str| {
        serde_json::json!({"topic": topic, "text": text})
            .to_string()
            .into_bytes()
    };
    let r = c
        .request(
            "Probe/HD_Notify",
            &note("Probe/OnNotify", "hello"),
            QoS::AtLeastOnce,
        )
        .await
        .expect("notify reply");
    assert_eq!(r["Error"], "", "{r}");
    let (topic, payload) = c
        .message(Duration::from_secs(5))
        .await
        .expect("the message reaches the client");
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("Probe/OnNotify", &b"hello"[..])
    );
    // A topic no client may receive is refused with the reason, and nothing is sent.
    let r = c
        .request("Probe/HD_Notify", &note("Probe/#", "no"), QoS::AtLeastOnce)
        .await
        .expect("notify reply");
    assert!(
        r["Error"].as_str().is_some_and(|e| e.contains("wildcard")),
        "{r}"
    );
    assert!(c.message(Duration::from_millis(200)).await.is_none());
    // A session whose connection is not (or no longer) open: the error names it.
    let gone = Session::new(mqrs_runtime::SessionData {
        sessionid: "gone".into(),
        serverid: "front".into(),
        ..Default::default()
    });
    let e = s
        .back
        .send(&gone, "Probe/OnNotify", "late")
        .await
        .expect_err("no such client");
    assert!(
        e.to_string()
            .contains("no client connection with session id `gone`"),
        "{e}"
    );

    // The whole trace, both processes' spans, through the front app's Jaeger API.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let (status, body) = common::http_get(s.viewer, &format!("/api/traces/{trace_id}")).await;
        if status == 200 {
            let all = spans(&body["data"][0]);
            let complete = all.iter().any(|x| x.parent.is_none())
                && all
                    .iter()
                    .any(|x| x.name == "Login/track2" && x.kind == "server")
                && (all.len() == 9 || all.len() == 11);
            if complete {
                break all;
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} incomplete: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_chat_tree(&all, "sam");
    assert!(s.back.broker_stats().expect("stats").calls_served >= 2);
    assert!(
        s.front.broker_stats().expect("stats").calls_served >= 1,
        "Gate/Bind from back"
    );
    // Counted once the collector has answered, which may be just after the trace is complete.
    let stats = || s.back.export_stats().expect("the back app exports");
    let back_spans = all.iter().filter(|x| x.service == "Login").count() as u64;
    wait_for("export counters", Duration::from_secs(5), || {
        stats().exported >= back_spans
    })
    .await;
    assert_eq!((stats().dropped, stats().failed), (0, 0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_spans_two_processes_through_the_embedded_broker() {
    chat_across_processes(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_spans_two_processes_through_mosquitto() {
    chat_across_processes(Broker::Mosquitto(Mosquitto::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_across_the_broker() {
    let s = split(Broker::Embedded, 300).await;
    let session = Session::default();
    // Errors keep their kind across the broker.
    let e = s
        .front
        .call::<_, ()>("Probe", "fail", &session, ())
        .await
        .expect_err("handler error");
    assert_eq!(e, RpcError::Handler("refused on purpose".into()));
    let e = s
        .front
        .call::<_, ()>("Probe", "nothing", &session, ())
        .await
        .expect_err("unknown method");
    assert_eq!(e.kind(), "unknown_method", "{e}");

    // A reply after the caller gave up is dropped and counted, never given to another call.
    // The callee itself never answers past the deadline, so a spy on the broker plays the late
    // (and the unknown) replier, with the request's own response topic and correlation data.
    let (spy, mut incoming) = common::mqtt5_client(rumqttc::v5::MqttOptions::new(
        "spy",
        "127.0.0.1",
        s.broker_port,
    ));
    spy.subscribe(
        "mqrs/call/Probe/sleep",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await
    .expect("spy subscribes");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = s
        .front
        .call::<_, u64>("Probe", "sleep", &session, (600u64,))
        .await
        .expect_err("times out");
    assert_eq!(e.kind(), "timeout");
    let seen = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match incoming.recv().await {
                Some(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) => {
                    return p.properties.unwrap_or_default()
                }
                Some(_) => {}
                None => panic!("the spy's connection ended"),
            }
        }
    })
    .await
    .expect("the spy saw the request");
    let reply_to = seen.response_topic.clone().expect("response topic");
    for correlation in [seen.correlation_data.clone(), Some(vec![9u8; 8].into())] {
        let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
            correlation_data: correlation,
            ..Default::default()
        };
        spy.publish_with_properties(
            reply_to.clone(),
            rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            false,
            br#"{"ok": 999}"#.to_vec(),
            props,
        )
        .await
        .expect("spy replies");
    }
    let stats = || s.front.broker_stats().expect("stats");
    wait_for(
        "the late and the unknown reply",
        Duration::from_secs(5),
        || stats().late_replies == 2,
    )
    .await;
    let next: u64 = s
        .front
        .call("Probe", "sleep", &session, (1u64,))
        .await
        .expect("next call gets its own reply");
    assert_eq!(next, 1, "never the spy's 999");
    assert_eq!(stats().pending, 0, "no call left waiting");
    drop(incoming);

    // Oversized request: a clear error, and the connection carries on.
    let huge = "y".repeat(2 << 20);
    let e = s
        .front
        .call::<_, usize>("Probe", "big", &session, (huge,))
        .await
        .expect_err("too big");
    assert!(
        e.to_string().contains("over the broker payload limit"),
        "{e}"
    );
    // Oversized reply: the callee answers with an error saying so.
    let e = s
        .front
        .call::<_, String>("Probe", "big", &session, (2usize << 20,))
        .await
        .expect_err("reply too big");
    assert_eq!(e.kind(), "bad_reply", "{e}");
    assert!(
        e.to_string().contains("over the broker payload limit"),
        "{e}"
    );
    let ok: String = s
        .front
        .call("Probe", "big", &session, (3usize,))
        .await
        .expect("still connected");
    assert_eq!(ok, "xxx");

    // No process announced that module, or that server: unknown at once, not at the deadline.
    for target in ["Probe@nowhere", "Nowhere"] {
        let started = Instant::now();
        let e = s
            .front
            .call::<_, u64>(target, "sleep", &session, (1u64,))
            .await
            .expect_err("nobody serves it");
        assert_eq!(e, RpcError::UnknownModule(target.into()));
        assert!(started.elapsed() < Duration::from_millis(100));
    }
    assert_eq!(stats().pending, 0);

    // The back process stops: it withdraws its presence, so calls to it fail at once too.
    s.back.shutdown().await;
    wait_for("presence withdrawn", Duration::from_secs(5), || {
        !s.front.cluster().contains_key("back")
    })
    .await;
    let e = s
        .front
        .call::<_, u64>("Probe", "sleep", &session, (1u64,))
        .await
        .expect_err("gone");
    assert_eq!(e, RpcError::UnknownModule("Probe".into()));
    s.front.shutdown().await;
}

/// A foreign client's request that asks for its reply to go outside `mqrs/reply/`, or to carry
/// back more than 64 bytes of correlation data, is refused unserved and counted. The second
/// kind, with a long reply topic and an answer near the payload limit, would otherwise make a
/// reply too large for the broker, and the callee would lose its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_asking_for_harmful_replies_are_refused() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as QoS5;

    let s = split(Broker::Embedded, 3_000).await;
    let mut opts = rumqttc::v5::MqttOptions::new("intruder", "127.0.0.1", s.broker_port);
    opts.set_max_packet_size(Some(4 << 20));
    let (intruder, mut incoming) = common::mqtt5_client(opts);
    // The next packet it receives that `pick` takes, within 5 s.
    async fn next<T>(incoming: &mut common::Incoming, pick: impl Fn(Packet) -> Option<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match incoming.recv().await.map(&pick) {
                    Some(Some(t)) => return t,
                    Some(None) => {}
                    None => panic!("the intruder's connection ended"),
                }
            }
        })
        .await
        .expect("in time")
    }
    for filter in ["mqrs/reply/intruder/#", "elsewhere/#"] {
        intruder
            .subscribe(filter, QoS5::AtLeastOnce)
            .await
            .expect("subscribes");
    }
    for _ in 0..2 {
        next(&mut incoming, |p| {
            matches!(p, Packet::SubAck(_)).then_some(())
        })
        .await;
    }
    let stats = || s.back.broker_stats().expect("stats");
    let before = stats();
    let ask = |reply_to: String, correlation: Vec<u8>, bytes: usize| {
        let props = PublishProperties {
            response_topic: Some(reply_to),
            correlation_data: Some(correlation.into()),
            ..Default::default()
        };
        let body = format!(r#"{{"session":{{}},"args":[{bytes}]}}"#);
        let intruder = intruder.clone();
        async move {
            intruder
                .publish_with_properties(
                    "mqrs/call/Probe/big",
                    QoS5::AtLeastOnce,
                    false,
                    body,
                    props,
                )
                .await
                .expect("publishes");
        }
    };
    // Outside mqrs/reply/: the reply would go wherever the asker likes, under the callee's name.
    ask("elsewhere/x".into(), vec![1; 8], 3).await;
    // A long reply topic, 65,000 bytes of correlation and an answer just under the payload
    // limit (1 MiB): echoed back, they come to more than the broker takes in one packet.
    let long_topic = format!("mqrs/reply/intruder/{}", "t".repeat(600));
    ask(long_topic, vec![7; 65_000], (1 << 20) - 10).await;
    // Only the correlation is too long.
    ask("mqrs/reply/intruder/corr".into(), vec![7; 65], 3).await;
    // Well formed: answered.
    ask("mqrs/reply/intruder/ok".into(), vec![1; 8], 3).await;
    let topic = |p| match p {
        Packet::Publish(p) => Some(String::from_utf8_lossy(&p.topic).into_owned()),
        _ => None,
    };
    assert_eq!(next(&mut incoming, topic).await, "mqrs/reply/intruder/ok");
    wait_for("three refusals counted", Duration::from_secs(5), || {
        stats().malformed == before.malformed + 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(p) = incoming.try_recv() {
        assert_eq!(topic(p), None, "no reply to a refused request");
    }
    let after = stats();
    assert!(after.connected);
    assert_eq!(
        after.connects, before.connects,
        "the callee kept its connection"
    );
    assert_eq!(after.connection_errors, before.connection_errors);
    let ok: String = s
        .front
        .call("Probe", "big", &Session::default(), (3usize,))
        .await
        .expect("calls still served");
    assert_eq!(ok, "xxx");
    s.stop().await;
}

/// The sampling decision travels in the trace flags: the back process follows the front's
/// "skip" although its own ratio is 1.0. A span the back finds slow is kept there, and its
/// reply (`mqrs-kept`) makes the front keep its part of the path, although the front itself
/// keeps no slow traces: one whole kept trace across both processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_decision_and_keeping_cross_processes() {
    let s = split_with(
        Broker::Embedded,
        3000,
        |f| {
            f.trace.sample_ratio = 0.0;
            f.trace.keep_slow_ms = 0;
        },
        |b| b.trace.keep_slow_ms = 15,
    )
    .await;
    let store = s.front.trace_store().expect("front store");
    let id_of = |session: &Session| {
        u128::from_str_radix(&session.trace_id().expect("trace id"), 16).expect("hex")
    };
    let fast = s.front.start_trace("job fast", &Session::default());
    let fast_id = id_of(fast.session());
    let ms: u64 = s
        .front
        .call("Probe", "sleep", fast.session(), (0u64,))
        .await
        .expect("fast call");
    assert_eq!(ms, 0);
    drop(fast);
    let slow = s.front.start_trace("job slow", &Session::default());
    let slow_id = id_of(slow.session());
    let _: u64 = s
        .front
        .call("Probe", "sleep", slow.session(), (40u64,))
        .await
        .expect("slow call");
    drop(slow);
    wait_for(
        "the kept trace from both processes",
        Duration::from_secs(5),
        || store.trace(slow_id).is_some_and(|t| t.spans.len() >= 3),
    )
    .await;
    let t = store.trace(slow_id).expect("kept");
    let mut got: Vec<(String, &str, &str)> = t
        .spans
        .iter()
        .map(|sp| (sp.name.to_string(), sp.kind, &*sp.service))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("Probe/sleep".to_string(), "client", "mqrs"),
            ("Probe/sleep".to_string(), "server", "Probe"),
            ("job slow".to_string(), "internal", "mqrs"),
        ],
        "{t:#?}"
    );
    for sp in &t.spans {
        assert_eq!(
            sp.tag("mqrs.kept")
                .map(|v| v.as_str().into_owned())
                .as_deref(),
            Some("slow"),
            "{sp:#?}"
        );
    }
    // The back exports in order: had it recorded the fast call's span, it would be here.
    assert!(
        store.trace(fast_id).is_none(),
        "the back followed its own ratio instead of the trace flags: {:#?}",
        store.trace(fast_id)
    );
    s.stop().await;
}

/// With `[broker] qos = 1`, 200 calls at once through a mosquitto that announces a Receive
/// Maximum of 4 (`max_inflight_messages`): requests and replies take packet ids, wait for
/// PUBACKs, reuse the ids, and every call is answered on one connection. (mosquitto does not
/// enforce the maximum, so the bound itself is checked in the send buffer's unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_1_calls_through_a_broker_with_a_small_receive_maximum_all_complete() {
    let mosquitto = Mosquitto::start_with(
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port(),
        "max_inflight_messages 4",
    );
    let s = split_with(
        Broker::Mosquitto(mosquitto),
        5000,
        |c| c.broker.qos = 1,
        |c| c.broker.qos = 1,
    )
    .await;
    let calls = (0..200u64).map(|i| {
        let front = s.front.clone();
        tokio::spawn(async move {
            front
                .call::<_, u64>("Probe", "sleep", &Session::default(), (i % 3,))
                .await
        })
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.expect("joins"), Ok(i as u64 % 3), "call {i}");
    }
    let stats = s.front.broker_stats().expect("mqtt");
    assert!(stats.connected, "{stats:?}");
    assert_eq!(stats.connects, 1, "the connection held: {stats:?}");
    assert_eq!(s.back.broker_stats().expect("mqtt").connects, 1);
    s.stop().await;
}
