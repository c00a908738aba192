//! [`MqttTransport`]: calls to modules of other processes, published on the module's request
//! topic with a reply address and a correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mqrs_base::sync::RwLocked;
use tokio::sync::oneshot;

use super::budget::Serving;
use super::outbox::Sender;
use super::presence::Presence;
use super::shared::{BrokerStats, Counters, PendingGuard, ReplyRx, Shared, Throttle, Waiting};
use super::wire;
use crate::config::BrokerSection;
use crate::error::RpcError;
use crate::transport::{Request, Target, Transport};

/// The transport to modules in other processes, through an MQTT 5 broker.
#[derive(Clone)]
pub struct MqttTransport {
    pub(super) shared: Arc<Shared>,
}

impl MqttTransport {
    /// A transport for the process `server_id`; it connects when the app starts.
    pub fn new(settings: BrokerSection, server_id: &str) -> Self {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let serving = Serving::new(&settings);
        MqttTransport {
            shared: Arc::new(Shared {
                reply_topic: format!("{}{server_id}/{nonce}", wire::REPLY_PREFIX),
                settings,
                broker_max_packet: std::sync::atomic::AtomicU32::new(0),
                withdrawn: AtomicBool::new(false),
                gone: AtomicBool::new(false),
                presence: RwLock::new(Presence::default()),
                client: RwLock::new(None),
                connected: AtomicBool::new(false),
                up: tokio::sync::watch::Sender::new(false),
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
        self.shared.counters.snapshot_onto(BrokerStats {
            connected: self.shared.connected.load(Ordering::Relaxed),
            pending: self.shared.pending().len() as u64,
            ..BrokerStats::default()
        })
    }

    /// The modules every connected process announced (this one included), by server id.
    pub fn announced(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.shared
            .presence
            .read_locked()
            .modules()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    fn client(&self) -> Option<Sender> {
        if !self.shared.connected.load(Ordering::Acquire) {
            return None;
        }
        self.shared.client.read_locked().clone()
    }

    /// Checks, encodes and publishes one call through `client`; `reply` is the pending entry
    /// to wait on. Without a connection ready (this process reconnecting: its broker node died,
    /// the broker restarts) the call waits for one, up to `[broker] connect_wait_ms` and its
    /// deadline, and is checked and sent then: it was not sent anywhere yet, so that is safe
    /// for any handler.
    fn send(
        &self,
        req: Request<'_>,
        reply: Option<(u64, ReplyRx)>,
        client: Option<Sender>,
    ) -> Result<BoxFuture<'static, Result<Vec<u8>, RpcError>>, RpcError> {
        if client.is_some() && !self.shared.announced(req.target) {
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
        let shared = self.shared.clone();
        let target = req.target.to_string();
        let guard = reply.as_ref().map(|(id, _)| PendingGuard {
            shared: shared.clone(),
            id: *id,
        });
        let out = Outgoing {
            topic,
            payload,
            target,
        };
        if let Some(client) = client {
            let props = sending(&shared, &reply, req.deadline, &req.session, traceparent);
            return Ok(async move {
                let _guard = guard;
                out.publish(&shared, &client, props, reply).await
            }
            .boxed());
        }
        let (session, deadline) = (req.session.clone(), req.deadline);
        let (module, server) = (
            req.target.module.to_string(),
            req.target.server_id.map(str::to_string),
        );
        let connect_wait = Duration::from_millis(shared.settings.connect_wait_ms);
        let until = deadline.instant().min(Instant::now() + connect_wait);
        Ok(async move {
            let _guard = guard;
            let mut reply = reply;
            // A waiting call fails early when the app stops or its pinned server leaves.
            let failed = async {
                match reply.as_mut() {
                    Some((_, rx)) => rx.await.unwrap_or_else(|_| Err(out.closed())),
                    None => std::future::pending().await,
                }
            };
            let client = tokio::select! {
                biased;
                r = failed => return r,
                c = shared.sender_by(until) => c,
            };
            let Some(client) = client else {
                return Err(RpcError::Unreachable {
                    target: out.target,
                    reason: "this process is not connected to the MQTT broker".into(),
                });
            };
            let target = Target {
                module: &module,
                server_id: server.as_deref(),
            };
            if !shared.announced(target) {
                return Err(RpcError::UnknownModule(out.target));
            }
            if let Some((id, rx)) = reply.as_mut() {
                let waiting = match shared.pending().get_mut(id) {
                    Some(w) => {
                        w.sent = true;
                        true
                    }
                    None => false,
                };
                // Failed meanwhile (its server left at the sync): never sent.
                if !waiting {
                    return rx.await.unwrap_or_else(|_| Err(out.closed()));
                }
            }
            let props = sending(&shared, &reply, deadline, &session, traceparent);
            out.publish(&shared, &client, props, reply).await
        }
        .boxed())
    }
}

/// A call is sent now: counts it and gives its properties (reply address, time left, trace
/// context).
fn sending(
    shared: &Shared,
    reply: &Option<(u64, ReplyRx)>,
    deadline: crate::deadline::Deadline,
    session: &crate::Session,
    traceparent: Option<String>,
) -> rumqttc::v5::mqttbytes::v5::PublishProperties {
    shared.counters.calls_sent.fetch_add(1, Ordering::Relaxed);
    let reply_to = reply
        .as_ref()
        .map(|(id, _)| (shared.reply_topic.as_str(), *id));
    wire::request_properties(reply_to, deadline, session, traceparent)
}

/// One encoded call on its way out.
struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    /// The target, for errors.
    target: String,
}

impl Outgoing {
    fn closed(&self) -> RpcError {
        RpcError::Unreachable {
            target: self.target.clone(),
            reason: "the broker connection closed".into(),
        }
    }

    /// Publishes the call and waits for its reply, if it has one.
    async fn publish(
        self,
        shared: &Shared,
        client: &Sender,
        props: rumqttc::v5::mqttbytes::v5::PublishProperties,
        reply: Option<(u64, ReplyRx)>,
    ) -> Result<Vec<u8>, RpcError> {
        client
            .publish(self.topic, shared.qos(), false, self.payload, Some(props))
            .await
            .map_err(|e| RpcError::Unreachable {
                target: self.target.clone(),
                reason: format!("cannot publish to the broker: {e}"),
            })?;
        match reply {
            None => Ok(Vec::new()),
            Some((_, rx)) => rx.await.unwrap_or_else(|_| {
                Err(RpcError::Unreachable {
                    target: self.target,
                    reason: "the broker connection closed".into(),
                })
            }),
        }
    }
}

impl Transport for MqttTransport {
    fn request(&self, req: Request<'_>) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let client = self.client();
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
            pending.insert(
                id,
                Waiting {
                    tx,
                    method,
                    keep: req.session.keep_mark(),
                    server: req.target.server_id.map(Arc::from),
                    sent: client.is_some(),
                },
            );
        }
        match self.send(req, Some((id, rx)), client) {
            Ok(fut) => fut,
            Err(e) => {
                self.shared.pending().remove(&id);
                futures_util::future::ready(Err(e)).boxed()
            }
        }
    }

    fn notify(&self, req: Request<'_>) -> Result<(), RpcError> {
        // A call without a reply does not wait for a connection: nothing would bound how many
        // wait at once.
        let client = self.client().ok_or_else(|| RpcError::Unreachable {
            target: req.target.to_string(),
            reason: "this process is not connected to the MQTT broker".into(),
        })?;
        let fut = self.send(req, None, Some(client))?;
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::warn!(error = %e, "call_nr through the broker failed");
            }
        });
        Ok(())
    }

    fn reaches(&self, target: crate::transport::Target<'_>, _method: &str) -> bool {
        // Presence names modules, not methods: a remote module's methods are its to refuse.
        self.shared.announced(target)
    }

    fn instances(&self, module: &str) -> usize {
        self.shared.presence.read_locked().instances(module)
    }

    fn pick(&self, module: &str, tried: &[Arc<str>]) -> Option<Arc<str>> {
        let now = std::time::Instant::now();
        self.shared.presence.read_locked().pick(module, tried, now)
    }

    fn pass_over(&self, instance: &str) {
        let now = std::time::Instant::now();
        self.shared.presence.read_locked().busy(instance, now);
    }

    fn linked(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    fn idempotent(&self, module: &str, method: &str) -> bool {
        self.shared
            .presence
            .read_locked()
            .idempotent(module, method)
    }
}
