//! Calls between processes through an MQTT 5 broker (rumqttc), and the broker a process can
//! embed (`broker.rs`). The topics, payloads and properties are in `wire.rs`; the connection
//! that sends, receives, reconnects and serves incoming calls is in `link.rs`.
//!
//! [`MqttTransport`] is the remote side of the app's router: a call to a module that does not
//! run in this process is published on the module's request topic with a reply address and a
//! correlation id; the reply (or its absence until the deadline) completes it. A reply whose
//! correlation is unknown, or that arrives after its caller gave up, is dropped and counted,
//! never delivered to another call.

pub(crate) mod broker;
mod link;
mod serve;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rumqttc::v5::AsyncClient;
use tokio::sync::oneshot;

use super::{Request, Transport};
use crate::config::BrokerSection;
use crate::error::RpcError;
use crate::trace::sampling::{Keep, KeepReason};

pub use broker::EmbeddedBrokerStats;
pub(crate) use link::Link;

/// `host` and `port` of `mqtt://host:port` (or `tcp://host:port`); the error says what is wrong.
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("broker url `{url}` must start with mqtt://"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("broker url `{url}` needs a port, e.g. mqtt://{rest}:1883"))?;
    let port: u16 = port
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("broker url `{url}`: `{port}` is not a port"))?;
    if host.is_empty() {
        return Err(format!("broker url `{url}` has no host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Counters of the broker connection, read with [`App::broker_stats`](crate::App::broker_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BrokerStats {
    /// True while connected to a broker.
    pub connected: bool,
    /// Connections made (the first and every reconnection).
    pub connects: u64,
    /// Failed connection attempts and lost connections; retries back off up to 5 s apart.
    pub connection_errors: u64,
    /// Calls sent to other processes.
    pub calls_sent: u64,
    /// Calls from other processes served here.
    pub calls_served: u64,
    /// Replies that arrived after their caller gave up, or whose correlation is unknown.
    pub late_replies: u64,
    /// Messages that were not a valid request or reply.
    pub malformed: u64,
    /// Calls refused because `max_pending` calls were already waiting.
    pub refused_pending: u64,
    /// Calls waiting for a reply now.
    pub pending: u64,
    /// The embedded broker's limits, when this process runs it.
    pub embedded: Option<EmbeddedBrokerStats>,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    connection_errors: AtomicU64,
    calls_sent: AtomicU64,
    calls_served: AtomicU64,
    late_replies: AtomicU64,
    malformed: AtomicU64,
    refused_pending: AtomicU64,
}

/// Where the reply of one call is delivered.
type ReplyTx = oneshot::Sender<Result<Vec<u8>, RpcError>>;
/// Where a caller waits for it.
type ReplyRx = oneshot::Receiver<Result<Vec<u8>, RpcError>>;
/// Calls waiting for a reply, by correlation id, with their `Module/method`.
/// A call waiting for its reply: where the reply goes, the method (for errors), and the keep
/// mark of the caller's trace when the sampler skipped it (a reply can say to keep it).
type Pending = HashMap<u64, (ReplyTx, Arc<str>, Option<Arc<Keep>>)>;

/// State shared by the transport's callers and its connection task.
struct Shared {
    settings: BrokerSection,
    /// The Maximum Packet Size the broker announced in its CONNACK; 0 when it named none.
    broker_max_packet: std::sync::atomic::AtomicU32,
    /// The app is stopping: this process no longer takes calls from others.
    withdrawn: AtomicBool,
    /// Modules each connected process announced, by server id.
    presence: RwLock<HashMap<String, Vec<String>>>,
    reply_topic: String,
    client: RwLock<Option<AsyncClient>>,
    connected: AtomicBool,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    counters: Counters,
    /// What calls from other processes being served may hold at once.
    serving: serve::Budget,
    /// Announcing again over other words on this process's presence topic: once a second.
    reannounce: Throttle,
    /// Warning that a request was refused for where its reply would go: once in 10 s.
    refusal_warning: Throttle,
}

/// Lets something happen at most once per period.
#[derive(Default)]
struct Throttle(Mutex<Option<std::time::Instant>>);

impl Throttle {
    /// True (and noted) when it did not happen in the last `period`.
    fn due(&self, period: std::time::Duration) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < period) {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes the call waiting for `id`; false when nobody waits (late or unknown). `kept`
    /// is the callee's word that the trace is kept there, so the caller keeps its part too.
    fn complete(&self, id: u64, payload: &[u8], kept: Option<KeepReason>) -> bool {
        let Some((tx, method, keep)) = self.pending().remove(&id) else {
            return false;
        };
        if let (Some(keep), Some(reason)) = (keep, kept) {
            keep.mark(reason);
        }
        let _ = tx.send(wire::decode_reply(payload, &method));
        true
    }

    /// Fails every waiting call, e.g. when the broker connection is lost.
    fn fail_all(&self, reason: &str) {
        let waiting: Vec<_> = self.pending().drain().collect();
        for (_, (tx, method, _)) in waiting {
            let _ = tx.send(Err(RpcError::Unreachable {
                target: method.to_string(),
                reason: reason.to_string(),
            }));
        }
    }

    /// True when some process announced `target` (on its pinned server, if any).
    fn announced(&self, target: super::Target<'_>) -> bool {
        let presence = self.presence.read().unwrap_or_else(|p| p.into_inner());
        let runs = |modules: &Vec<String>| modules.iter().any(|m| m == target.module);
        match target.server_id {
            Some(sid) => presence.get(sid).is_some_and(runs),
            None => presence.values().any(runs),
        }
    }

    /// Why a payload of `len` bytes to `topic` cannot be sent, if it cannot: over
    /// `[broker] max_payload`, or over the packet size the broker accepts (with room for the
    /// topic and properties), which would make the client drop the whole connection.
    fn too_big(&self, len: usize, topic: &str) -> Option<String> {
        let max = self.settings.max_payload;
        if len > max {
            return Some(format!(
                "it is {len} bytes, over the broker payload limit of {max} bytes ([broker] max_payload)"
            ));
        }
        let broker = self.broker_max_packet.load(Ordering::Relaxed) as usize;
        // Fixed header, topic, properties (reply topic, correlation, user properties).
        let overhead = 5 + 2 + topic.len() + 512;
        (broker > 0 && len + overhead > broker).then(|| {
            format!("it is {len} bytes; the broker accepts packets of at most {broker} bytes")
        })
    }

    fn qos(&self) -> rumqttc::v5::mqttbytes::QoS {
        if self.settings.qos == 0 {
            rumqttc::v5::mqttbytes::QoS::AtMostOnce
        } else {
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce
        }
    }
}

/// Removes a call from the pending map when its caller stops waiting.
struct PendingGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.pending().remove(&self.id);
    }
}

/// The transport to modules in other processes, through an MQTT 5 broker.
#[derive(Clone)]
pub struct MqttTransport {
    shared: Arc<Shared>,
}

impl MqttTransport {
    /// A transport for the process `server_id`; it connects when the app starts.
    pub fn new(settings: BrokerSection, server_id: &str) -> Self {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let serving = serve::Budget::new(&settings);
        MqttTransport {
            shared: Arc::new(Shared {
                reply_topic: format!("{}{server_id}/{nonce}", wire::REPLY_PREFIX),
                settings,
                broker_max_packet: std::sync::atomic::AtomicU32::new(0),
                withdrawn: AtomicBool::new(false),
                presence: RwLock::new(HashMap::new()),
                client: RwLock::new(None),
                connected: AtomicBool::new(false),
                pending: Mutex::new(HashMap::new()),
                // Correlation ids start at a random point, so one cannot be guessed from
                // outside without watching the traffic.
                next_id: AtomicU64::new(rand::random()),
                counters: Counters::default(),
                reannounce: Throttle::default(),
                refusal_warning: Throttle::default(),
                serving,
            }),
        }
    }

    /// The counters of the connection.
    pub fn stats(&self) -> BrokerStats {
        let c = &self.shared.counters;
        BrokerStats {
            connected: self.shared.connected.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            connection_errors: c.connection_errors.load(Ordering::Relaxed),
            calls_sent: c.calls_sent.load(Ordering::Relaxed),
            calls_served: c.calls_served.load(Ordering::Relaxed),
            late_replies: c.late_replies.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            refused_pending: c.refused_pending.load(Ordering::Relaxed),
            pending: self.shared.pending().len() as u64,
            embedded: None,
        }
    }

    /// The modules every connected process announced (this one included), by server id.
    pub fn announced(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.shared
            .presence
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn client(&self) -> Option<AsyncClient> {
        if !self.shared.connected.load(Ordering::Acquire) {
            return None;
        }
        self.shared
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks, encodes and publishes one call; `reply` is the pending entry to wait on.
    fn send(
        &self,
        req: Request<'_>,
        reply: Option<(u64, ReplyRx)>,
    ) -> Result<BoxFuture<'static, Result<Vec<u8>, RpcError>>, RpcError> {
        let unreachable = |reason: String| RpcError::Unreachable {
            target: req.target.to_string(),
            reason,
        };
        let client = self.client().ok_or_else(|| {
            unreachable("this process is not connected to the MQTT broker".into())
        })?;
        if !self.shared.announced(req.target) {
            return Err(RpcError::UnknownModule(req.target.to_string()));
        }
        let method = || format!("{}/{}", req.target.module, req.method);
        let traceparent = req.session.traceparent();
        let payload = wire::encode_request(&req.session, traceparent.as_deref(), &req.args)
            .map_err(|reason| RpcError::BadArgs {
                method: method(),
                reason,
            })?;
        let topic = wire::call_topic(req.target, req.method);
        if let Some(why) = self.shared.too_big(payload.len(), &topic) {
            return Err(RpcError::BadArgs {
                method: method(),
                reason: format!("the request cannot go through the broker: {why}"),
            });
        }
        let reply_to = reply
            .as_ref()
            .map(|(id, _)| (self.shared.reply_topic.as_str(), *id));
        let props = wire::request_properties(reply_to, req.deadline, &req.session, traceparent);
        let qos = self.shared.qos();
        let target = req.target.to_string();
        self.shared
            .counters
            .calls_sent
            .fetch_add(1, Ordering::Relaxed);
        let guard = reply.as_ref().map(|(id, _)| PendingGuard {
            shared: self.shared.clone(),
            id: *id,
        });
        Ok(async move {
            let _guard = guard;
            client
                .publish_with_properties(topic, qos, false, payload, props)
                .await
                .map_err(|e| RpcError::Unreachable {
                    target: target.clone(),
                    reason: format!("cannot publish to the broker: {e}"),
                })?;
            match reply {
                None => Ok(Vec::new()),
                Some((_, rx)) => rx.await.unwrap_or_else(|_| {
                    Err(RpcError::Unreachable {
                        target,
                        reason: "the broker connection closed".into(),
                    })
                }),
            }
        }
        .boxed())
    }
}

impl Transport for MqttTransport {
    fn request(&self, req: Request<'_>) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.shared.pending();
            if pending.len() >= self.shared.settings.max_pending.max(1) {
                drop(pending);
                self.shared
                    .counters
                    .refused_pending
                    .fetch_add(1, Ordering::Relaxed);
                return futures_util::future::ready(Err(RpcError::Unavailable(format!(
                    "{} calls are already waiting for other processes ([broker] max_pending)",
                    self.shared.settings.max_pending
                ))))
                .boxed();
            }
            let method: Arc<str> = Arc::from(format!("{}/{}", req.target.module, req.method));
            pending.insert(id, (tx, method, req.session.keep_mark()));
        }
        match self.send(req, Some((id, rx))) {
            Ok(fut) => fut,
            Err(e) => {
                self.shared.pending().remove(&id);
                futures_util::future::ready(Err(e)).boxed()
            }
        }
    }

    fn notify(&self, req: Request<'_>) -> Result<(), RpcError> {
        let fut = self.send(req, None)?;
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::warn!(error = %e, "call_nr through the broker failed");
            }
        });
        Ok(())
    }

    fn reaches(&self, target: super::Target<'_>, _method: &str) -> bool {
        // Presence names modules, not methods: a remote module's methods are its to refuse.
        self.shared.announced(target)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883))
        );
        assert_eq!(parse_url("tcp://broker:1884/"), Ok(("broker".into(), 1884)));
        assert_eq!(parse_url("mqtt://[::1]:1883"), Ok(("::1".into(), 1883)));
        for bad in [
            "127.0.0.1:1883",
            "mqtt://host",
            "mqtt://:1883",
            "mqtt://h:x",
            "http://h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
