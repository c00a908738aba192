//! The floor under the split path: plain MQTT request/reply through the same broker, with no
//! mqrs code. Requesters are rumqttc clients like the gate's (one connection each, requests
//! on `bare/req/<client>/<n>`, replies on `bare/rep/<client>/<n>`); one responder, a process
//! of its own (`load --bare-responder HOST:PORT`) like the split's module process, answers
//! every request with a reply the size of the gate's.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demo::client::GateClient;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::door::Door;

/// What the responder answers: the size and shape of the gate's reply to `Chat/HD_CurrentRoom`.
const REPLY: &[u8] = br#"{"Result":{"room":"","members":0},"Error":""}"#;

/// Replies the responder may have queued for its connection before it drops more.
const QUEUE: usize = 65_536;

/// One requester connection.
pub struct Requester {
    client: GateClient,
    id: String,
    next: AtomicU64,
}

impl Requester {
    /// Connects to the broker at `door` as `id` and subscribes to its reply topics.
    pub async fn connect(door: &Door, id: &str) -> Result<Requester, String> {
        let client = GateClient::connect(id, &door.host, door.port)
            .await
            .map_err(|e| e.to_string())?;
        client
            .subscribe(&format!("bare/rep/{id}/+"))
            .await
            .map_err(|e| e.to_string())?;
        // The SUBACK is not waited for: the phase's warm-up second covers it.
        Ok(Requester {
            client,
            id: id.to_string(),
            next: AtomicU64::new(0),
        })
    }

    /// One request and its reply.
    pub async fn request(&self, body: &[u8]) -> Result<Value, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let topic = format!("bare/req/{}/{n}", self.id);
        let reply = format!("bare/rep/{}/{n}", self.id);
        self.client
            .request_via(&topic, &reply, body)
            .await
            .map_err(|e| e.to_string())
    }

    /// Disconnects.
    pub async fn close(self) {
        self.client.disconnect().await;
    }
}

/// A responder process beside this one; killed when dropped.
pub struct Responder {
    child: Child,
}

impl Responder {
    /// Starts `load --bare-responder broker` and waits until it has subscribed.
    pub fn start(broker: &str) -> Result<Responder, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["--bare-responder", broker])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the bare responder: {e}"))?;
        let mut out = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        let read = std::io::Read::read_to_string(&mut std::io::Read::take(&mut out, 6), &mut line);
        if read.is_err() || line != "ready\n" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the bare responder did not start on {broker}"));
        }
        Ok(Responder { child })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The responder process: answers every request on `bare/req/#` at `broker` until killed.
pub async fn respond(broker: &str) -> Result<(), String> {
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("`{broker}`: expected HOST:PORT"))?;
    let mut opts = MqttOptions::new(format!("bare-responder-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    // Replies go through rumqttc's request queue: a deep one, so the loop never waits on it.
    let (client, mut events) = AsyncClient::new(opts, QUEUE);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    let mut dropped = 0u64;
    loop {
        match events.poll().await.map_err(|e| format!("responder: {e}"))? {
            Event::Incoming(Packet::ConnAck(_)) => {
                client
                    .try_subscribe("bare/req/#", QoS::AtMostOnce)
                    .map_err(|e| e.to_string())?;
            }
            Event::Incoming(Packet::SubAck(_)) => println!("ready"),
            Event::Incoming(Packet::Publish(p)) => {
                let Some(rest) = p.topic.strip_prefix("bare/req/") else {
                    continue;
                };
                let reply = format!("bare/rep/{rest}");
                if client
                    .try_publish(reply, QoS::AtMostOnce, false, REPLY)
                    .is_err()
                {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        eprintln!("bare responder: {dropped} replies dropped (queue full)");
                    }
                }
            }
            _ => {}
        }
    }
}
