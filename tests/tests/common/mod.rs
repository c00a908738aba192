//! Shared helpers for the integration tests: start the demo app on free ports, talk HTTP to
//! the viewer, wait for traces to arrive.
#![allow(dead_code)]

pub mod browser;
pub mod chat_tree;
pub mod mosquitto;
pub mod raw;
pub mod tools;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use demo::client::GateClient;
use mqrs_runtime::{App, Config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What an MQTT 5 client receives, packet by packet, in order.
pub type Incoming = tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Packet>;

/// An MQTT 5 client (rumqttc) whose event loop is polled on a task of its own: every packet
/// it receives comes out of [`Incoming`]. The task ends with the connection, or with the first
/// packet after `Incoming` is dropped.
pub fn mqtt5_client(opts: rumqttc::v5::MqttOptions) -> (rumqttc::v5::AsyncClient, Incoming) {
    let (client, mut events) = rumqttc::v5::AsyncClient::new(opts, 16);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let rumqttc::v5::Event::Incoming(p) = ev {
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    (client, rx)
}

/// A running demo app and its addresses.
pub struct Running {
    pub app: App,
    pub gate: SocketAddr,
    /// The gate's MQTT over WebSocket listener.
    pub ws: SocketAddr,
    /// The gate's MQTT over TLS listener, when TLS is on.
    pub tls: Option<SocketAddr>,
    pub viewer: SocketAddr,
}

/// Starts the demo app (Gate, Login, Chat, viewer) on free loopback ports.
pub async fn start_demo(tweak: impl FnOnce(&mut Config)) -> Running {
    let mut cfg = Config::ephemeral();
    tweak(&mut cfg);
    let app = demo::build_app(cfg).expect("demo app builds");
    let addrs = app.start().await.expect("demo app starts");
    Running {
        app,
        gate: addrs.gate.expect("gate enabled"),
        ws: addrs.gate_ws.expect("WebSocket listener enabled"),
        tls: addrs.gate_tls,
        viewer: addrs.viewer.expect("viewer enabled"),
    }
}

impl Running {
    /// A connected client with a unique id.
    pub async fn client(&self, id: &str) -> GateClient {
        GateClient::connect(id, "127.0.0.1", self.gate.port())
            .await
            .expect("client connects to the gate")
    }

    /// A client that has logged in as `user`.
    pub async fn logged_in(&self, user: &str) -> GateClient {
        let c = self.client(&format!("test-{user}")).await;
        let body = serde_json::json!({"userName": user, "passWord": "pw"}).to_string();
        let r = c
            .request("Login/HD_Login", body.as_bytes(), rumqttc::QoS::AtLeastOnce)
            .await
            .expect("login reply");
        assert_eq!(r["Error"], "", "login failed: {r}");
        c
    }

    /// GET from the viewer; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        http_get(self.viewer, path).await
    }

    /// Waits until the trace has at least `min_spans` spans and returns it (Jaeger JSON).
    pub async fn wait_trace(&self, id: &str, min_spans: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = self.get(&format!("/api/traces/{id}")).await;
            if status == 200 {
                let t = body["data"][0].clone();
                if t["spans"].as_array().map_or(0, Vec::len) >= min_spans {
                    return t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "trace {id} did not reach {min_spans} spans: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Running {
    /// The gate's span of the `HD_JoinChat` whose reply is `reply` (which names its trace),
    /// once that trace has its root.
    pub async fn gate_span_of_join(&self, reply: &Value) -> Span {
        let id = reply["TraceId"].as_str().expect("HD_JoinChat traced");
        let t = self.wait_chat_trace(id).await;
        spans(&t)
            .into_iter()
            .find(|s| s.name == "gate Chat/HD_JoinChat")
            .expect("the gate's span")
    }

    /// Waits for a complete `HD_JoinChat` trace. The gate's root span ends last (after the
    /// reply), so in one process the trace is complete once the root is stored (a module
    /// served through the broker delivers its SERVER span just after its reply: across
    /// processes, wait for that span itself).
    pub async fn wait_chat_trace(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let t = self.wait_trace(id, 1).await;
            if spans(&t).iter().any(|s| s.parent.is_none()) {
                return t;
            }
            assert!(Instant::now() < deadline, "trace {id} has no root yet: {t}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Settings for an app whose calls stay in the process: no gate, no viewer, no broker; calls
/// limited to `timeout_ms`.
pub fn in_process_config(timeout_ms: u64) -> Config {
    let mut cfg = Config::ephemeral();
    cfg.rpc.timeout_ms = timeout_ms;
    cfg.gate.enabled = false;
    cfg.trace.viewer = false;
    cfg.broker.url = mqrs_runtime::config::BrokerUrl::None;
    cfg
}

/// Settings for server `server_id` on the broker nodes `ports`, in that order: no gate,
/// viewer or collector; calls limited to `timeout_ms`; 300 ms for the broker at start.
pub fn config_on(ports: &[u16], server_id: &str, timeout_ms: u64) -> Config {
    let mut c = Config::ephemeral();
    c.app.server_id = server_id.into();
    c.gate.enabled = false;
    c.trace.viewer = false;
    c.trace.collector = false;
    c.rpc.timeout_ms = timeout_ms;
    c.broker.url = mqrs_runtime::config::BrokerUrl::Urls(
        ports
            .iter()
            .map(|p| format!("mqtt://127.0.0.1:{p}"))
            .collect(),
    );
    c.broker.connect_wait_ms = 300;
    c
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Polls `check` every 20 ms until it holds; fails the test naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `Chat/HD_JoinChat` for `room` and returns the gate's reply.
pub async fn join_chat(c: &GateClient, room: &str, qos: rumqttc::QoS) -> Value {
    let body = serde_json::json!({ "roomName": room }).to_string();
    c.request("Chat/HD_JoinChat", body.as_bytes(), qos)
        .await
        .expect("HD_JoinChat reply")
}

/// A minimal HTTP/1.1 GET over a raw socket.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get_text(addr, path).await;
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

/// A minimal HTTP/1.1 POST; returns the status and the body as bytes.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write head");
    // A server may answer (413) and close before reading a large body.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response has a head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = buf[split + 4..].to_vec();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&String::from_utf8_lossy(&body)).into_bytes()
    } else {
        body
    };
    (status, body)
}

/// GET returning the status and the body as text.
pub async fn http_get_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect viewer");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    // Read to the end, or as far as `Content-Length` says: some servers (Chromium's DevTools)
    // keep the connection open whatever the request asks.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.expect("read response");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if len.is_some_and(|len| buf.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("HTTP response has a head");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A span of a Jaeger trace, by the fields tests look at.
#[derive(Debug, Clone)]
pub struct Span {
    pub id: String,
    pub parent: Option<String>,
    pub name: String,
    pub service: String,
    pub kind: String,
    pub start: u64,
    pub duration: u64,
    pub tags: Value,
}

impl Span {
    pub fn tag(&self, key: &str) -> Option<Value> {
        self.tags
            .as_array()?
            .iter()
            .find(|t| t["key"] == key)
            .map(|t| t["value"].clone())
    }
}

/// Flattens a Jaeger trace into spans.
pub fn spans(trace: &Value) -> Vec<Span> {
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            let pid = s["processID"].as_str().expect("processID");
            let tags = s["tags"].clone();
            let kind = tags
                .as_array()
                .and_then(|a| a.iter().find(|t| t["key"] == "span.kind"))
                .map(|t| t["value"].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            Span {
                id: s["spanID"].as_str().expect("spanID").to_string(),
                parent: s["references"][0]["spanID"].as_str().map(str::to_string),
                name: s["operationName"].as_str().expect("name").to_string(),
                service: trace["processes"][pid]["serviceName"]
                    .as_str()
                    .expect("service")
                    .to_string(),
                kind,
                start: s["startTime"].as_u64().expect("startTime"),
                duration: s["duration"].as_u64().expect("duration"),
                tags,
            }
        })
        .collect()
}
