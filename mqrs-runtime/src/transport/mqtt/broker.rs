//! The embedded broker: a standard MQTT 5 (and 3.1.1) broker inside the process, so one
//! command runs a whole deployment and other processes can join it on a loopback port; and the
//! limits that keep any client of it from exhausting the process it shares with the gate.
//!
//! It is the `mqtt5` crate's broker: async on the app's tokio runtime, MQTT 5 with shared
//! subscriptions, a clean shutdown that the app awaits (rumqttd, the other embeddable broker,
//! blocks forever with no shutdown and pulls older axum/hyper/rustls). Persistence and `$SYS`
//! topics are off: calls are short-lived and bounded by their deadlines.
//!
//! Limits (`[broker] embedded_*`): retained messages in count and bytes (topic and payload, all
//! of them together), topic names and subscription filters in bytes, subscriptions a client,
//! messages and bytes waiting for one client, packet size, topic aliases and QoS 1 messages in
//! flight; QoS 2 is not offered (a QoS 2 publish is answered "QoS not supported"). A client that goes over the retained or topic limits is refused, counted and
//! disconnected; a subscription over the count gets its SUBACK refusal and is counted. The
//! process lives either way.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mqrs_base::sync::Locked;
use mqtt5::broker::router::MessageRouter;
use mqtt5::broker::{
    AllowAllAuthProvider, AuthProvider, AuthResult, BrokerConfig, BrokerEventHandler,
    BrokerShutdownHandle, ClientPublishEvent, ClientSubscribeEvent, MqttBroker, PublishAction,
    RetainedSetEvent, StorageConfig, SubAckReasonCode,
};
use tokio::task::JoinHandle;

use crate::config::BrokerSection;

/// Most topic aliases a client may set (each holds a topic name for the connection's life).
const MAX_TOPIC_ALIASES: u16 = 32;

/// Most QoS 1 publishes of one client awaiting their acknowledgement (the receive maximum).
/// QoS 2 is not offered: mqrs uses QoS 0 and 1, and a QoS 2 publish is only released (and
/// stored, if retained) at its PUBREL, past the checks made at its PUBLISH.
const MAX_IN_FLIGHT: u16 = 256;

/// What the embedded broker's limits refused, and the retained messages it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EmbeddedBrokerStats {
    /// Retained publishes refused: past the count or the bytes of all retained messages.
    pub retained_refused: u64,
    /// Publishes and subscriptions refused for a topic or filter longer than allowed.
    pub topics_refused: u64,
    /// Subscriptions refused because their client held the most allowed.
    pub subscriptions_refused: u64,
    /// Clients disconnected for going over a limit.
    pub clients_disconnected: u64,
    /// Retained messages held now.
    pub retained: u64,
    /// Bytes (topic and payload) of the retained messages held now.
    pub retained_bytes: u64,
}

/// The limits' shared state: settings, counters, and the retained messages' sizes by topic.
pub(crate) struct BrokerLimits {
    max_retained: usize,
    max_retained_bytes: usize,
    max_topic_bytes: usize,
    retained: Mutex<Retained>,
    counters: Counters,
    /// Filled once the broker is made: what disconnects a client.
    router: OnceLock<Arc<MessageRouter>>,
}

mqrs_base::counters! {
    /// The counters behind [`EmbeddedBrokerStats`].
    struct Counters => EmbeddedBrokerStats {
        retained_refused,
        topics_refused,
        subscriptions_refused,
        clients_disconnected,
    }
}

#[derive(Default)]
struct Retained {
    sizes: HashMap<Arc<str>, usize>,
    bytes: usize,
}

impl BrokerLimits {
    /// The counters and the retained messages held now.
    pub(crate) fn stats(&self) -> EmbeddedBrokerStats {
        let r = self.retained.locked();
        self.counters.snapshot_onto(EmbeddedBrokerStats {
            retained: r.sizes.len() as u64,
            retained_bytes: r.bytes as u64,
            ..EmbeddedBrokerStats::default()
        })
    }

    /// Disconnects `client` (its connection task ends at its next turn) and counts it.
    fn disconnect(&self, client: &str, why: &str) {
        self.counters.clients_disconnected.fetch_add(1, Relaxed);
        tracing::warn!(client, "embedded broker: {why}; client disconnected");
        if let Some(router) = self.router.get().cloned() {
            let client = client.to_string();
            tokio::spawn(async move { router.disconnect_client(&client).await });
        }
    }

    /// True when a retained message of `bytes` on `topic` fits beside those held; it is then
    /// counted at once, before the broker stores it, so that publishes checked at the same
    /// time cannot all pass on the same room.
    fn retained_take(&self, topic: &str, bytes: usize) -> bool {
        let mut r = self.retained.locked();
        let old = r.sizes.get(topic).copied();
        let count = r.sizes.len() + usize::from(old.is_none());
        let fits = count <= self.max_retained
            && r.bytes - old.unwrap_or(0) + bytes <= self.max_retained_bytes;
        if fits {
            r.set(Arc::from(topic), bytes);
        }
        fits
    }
}

impl Retained {
    /// Records `bytes` held for `topic`, in place of what it held.
    fn set(&mut self, topic: Arc<str>, bytes: usize) {
        self.bytes += bytes;
        let old = self.sizes.insert(topic, bytes);
        self.bytes -= old.unwrap_or(0);
    }

    /// Forgets `topic`.
    fn clear(&mut self, topic: &str) {
        let old = self.sizes.remove(topic);
        self.bytes -= old.unwrap_or(0);
    }
}

/// Sees every publish and subscription the broker lets through, and the retained store's
/// changes.
struct Events(Arc<BrokerLimits>);

impl BrokerEventHandler for Events {
    fn on_client_publish<'a>(
        &'a self,
        e: ClientPublishEvent,
    ) -> Pin<Box<dyn Future<Output = PublishAction> + Send + 'a>> {
        Box::pin(async move {
            if !e.retain || e.payload.is_empty() {
                return PublishAction::Continue;
            }
            if self
                .0
                .retained_take(&e.topic, retained_size(&e.topic, &e.payload))
            {
                return PublishAction::Continue;
            }
            self.0.counters.retained_refused.fetch_add(1, Relaxed);
            self.0.disconnect(
                &e.client_id,
                "retained messages over [broker] embedded_max_retained or embedded_max_retained_bytes",
            );
            PublishAction::Handled
        })
    }

    fn on_retained_set<'a>(
        &'a self,
        e: RetainedSetEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // A publish was counted when let through; a retained will, and the broker's own
            // changes, are counted here.
            let mut r = self.0.retained.locked();
            if e.cleared {
                r.clear(&e.topic);
            } else {
                r.set(e.topic.clone(), retained_size(&e.topic, &e.payload));
            }
        })
    }

    fn on_client_subscribe<'a>(
        &'a self,
        e: ClientSubscribeEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let over = e
                .subscriptions
                .iter()
                .filter(|s| s.result == SubAckReasonCode::QuotaExceeded)
                .count();
            if over > 0 {
                self.0
                    .counters
                    .subscriptions_refused
                    .fetch_add(over as u64, Relaxed);
                tracing::debug!(client = %e.client_id, over, "embedded broker: subscriptions over [broker] embedded_max_subscriptions");
            }
        })
    }
}

/// Bytes a retained message is counted at: its topic and payload, and as much again as its
/// topic for the properties it may carry and the broker's own record of it.
fn retained_size(topic: &str, payload: &[u8]) -> usize {
    2 * topic.len() + payload.len() + 64
}

/// Lets every client in (the broker is private to the app, see docs/wire-protocol.md), and refuses topic
/// names and filters over the length limit.
struct TopicLimit(Arc<BrokerLimits>);

impl TopicLimit {
    fn allows(&self, client: &str, topic: &str) -> bool {
        if topic.len() <= self.0.max_topic_bytes {
            return true;
        }
        self.0.counters.topics_refused.fetch_add(1, Relaxed);
        self.0
            .disconnect(client, "a topic over [broker] embedded_max_topic_bytes");
        false
    }
}

impl AuthProvider for TopicLimit {
    fn authenticate<'a>(
        &'a self,
        connect: &'a mqtt5::packet::connect::ConnectPacket,
        client_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = mqtt5::error::Result<AuthResult>> + Send + 'a>> {
        AllowAllAuthProvider.authenticate(connect, client_addr)
    }

    fn authorize_publish<'a>(
        &'a self,
        client_id: &str,
        _user_id: Option<&'a str>,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let ok = self.allows(client_id, topic);
        Box::pin(async move { ok })
    }

    fn authorize_subscribe<'a>(
        &'a self,
        client_id: &str,
        _user_id: Option<&'a str>,
        topic_filter: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let ok = self.allows(client_id, topic_filter);
        Box::pin(async move { ok })
    }
}

/// A running embedded broker.
pub(crate) struct EmbeddedBroker {
    addr: SocketAddr,
    shutdown: BrokerShutdownHandle,
    task: JoinHandle<()>,
    limits: Arc<BrokerLimits>,
}

impl EmbeddedBroker {
    /// Binds `addr` (port 0: any free port) and starts serving with the limits of `cfg`;
    /// packets over `max_packet` bytes close their connection.
    pub(crate) async fn start(
        addr: SocketAddr,
        max_packet: usize,
        cfg: &BrokerSection,
    ) -> Result<Self, String> {
        let limits = Arc::new(BrokerLimits {
            max_retained: cfg.embedded_max_retained,
            max_retained_bytes: cfg.embedded_max_retained_bytes,
            max_topic_bytes: cfg.embedded_max_topic_bytes,
            retained: Mutex::default(),
            counters: Counters::default(),
            router: OnceLock::new(),
        });
        let storage = StorageConfig {
            enable_persistence: false,
            max_queued_bytes_per_client: cfg.embedded_max_queued_bytes,
            ..StorageConfig::default()
        };
        let mut config = BrokerConfig::default()
            .with_bind_address(addr)
            .with_max_packet_size(max_packet.max(1024))
            .with_session_expiry(Duration::from_secs(60))
            .with_storage(storage)
            .with_sys_topics_enabled(false)
            .with_max_subscriptions_per_client(cfg.embedded_max_subscriptions.max(1))
            .with_client_channel_capacity(cfg.embedded_client_queue.max(1))
            // A backstop behind the limits above (which count and disconnect): a retained
            // will is not seen as a publish.
            .with_max_retained_messages(cfg.embedded_max_retained.saturating_add(64).max(1))
            // And on each retained message, wills too: a 16th of all retained bytes.
            .with_max_retained_message_size((cfg.embedded_max_retained_bytes / 16).max(1024))
            .with_maximum_qos(1)
            .with_event_handler(Arc::new(Events(limits.clone())));
        config.topic_alias_maximum = MAX_TOPIC_ALIASES;
        config.server_receive_maximum = Some(MAX_IN_FLIGHT);
        let mut broker = MqttBroker::with_config(config)
            .await
            .map_err(|e| e.to_string())?
            .with_auth_provider(Arc::new(TopicLimit(limits.clone())));
        let _ = limits.router.set(broker.router());
        let local = broker
            .local_addr()
            .ok_or_else(|| "the broker has no listener".to_string())?;
        let shutdown = broker.shutdown_handle();
        let mut ready = broker.ready_receiver();
        let task = tokio::spawn(async move {
            if let Err(e) = broker.run().await {
                tracing::error!(error = %e, "embedded MQTT broker stopped on error");
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r)).await;
        Ok(EmbeddedBroker {
            addr: local,
            shutdown,
            task,
            limits,
        })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its limits: what they refused, and the retained messages held.
    pub(crate) fn limits(&self) -> Arc<BrokerLimits> {
        self.limits.clone()
    }

    /// Stops it and waits (up to 5 s) until its connections are closed.
    pub(crate) async fn stop(self) {
        self.shutdown.shutdown();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            // Aborted, not detached: it must not keep the port.
            abort.abort();
            tracing::warn!("the embedded MQTT broker did not stop within 5 s; aborted");
        }
    }
}
