//! State shared by the transport's callers and its connection task: calls waiting for their
//! replies, the presence table, the counters ([`BrokerStats`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use mqrs_base::sync::{Locked, RwLocked};
use tokio::sync::oneshot;

use super::broker::EmbeddedBrokerStats;
use super::budget::Serving;
use super::outbox::Sender;
use super::presence::Presence;
use super::wire;
use crate::config::BrokerSection;
use crate::error::RpcError;
use crate::trace::sampling::{Keep, KeepReason};

/// Counters of the broker connection, read with [`App::broker_stats`](crate::App::broker_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BrokerStats {
    /// True while connected to a broker.
    pub connected: bool,
    /// Connections made (the first and every reconnection).
    pub connects: u64,
    /// Failed connection attempts and lost connections; the next node of a list is tried at
    /// once, and once every node has failed in a row, retries back off up to 5 s apart.
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

mqrs_base::counters! {
    /// The counters behind [`BrokerStats`], shared by the link's tasks.
    pub(super) struct Counters => BrokerStats {
        connects,
        connection_errors,
        calls_sent,
        calls_served,
        late_replies,
        malformed,
        refused_pending,
    }
}

/// Where the reply of one call is delivered.
pub(super) type ReplyTx = oneshot::Sender<Result<Vec<u8>, RpcError>>;
/// Where a caller waits for it.
pub(super) type ReplyRx = oneshot::Receiver<Result<Vec<u8>, RpcError>>;
/// A call waiting for its reply.
pub(super) struct Waiting {
    /// Where the reply goes.
    pub(super) tx: ReplyTx,
    /// `Module/method`, for errors.
    pub(super) method: Arc<str>,
    /// The keep mark of the caller's trace when the sampler skipped it (a reply can say to
    /// keep it).
    pub(super) keep: Option<Arc<Keep>>,
    /// The server the call is pinned to: when it is gone, the call fails at once.
    pub(super) server: Option<Arc<str>>,
    /// Published; false while the call waits for a connection (a lost connection fails only
    /// the calls it took).
    pub(super) sent: bool,
}

/// Calls waiting for a reply, by correlation id.
pub(super) type Pending = HashMap<u64, Waiting>;

/// State shared by the transport's callers and its connection task.
pub(super) struct Shared {
    pub(super) settings: BrokerSection,
    /// The Maximum Packet Size the broker announced in its CONNACK; 0 when it named none.
    pub(super) broker_max_packet: std::sync::atomic::AtomicU32,
    /// The app is stopping: this process no longer takes calls from others.
    pub(super) withdrawn: AtomicBool,
    /// The app has stopped serving (after withdrawing and finishing what it held).
    pub(super) gone: AtomicBool,
    /// What each connected process announced.
    pub(super) presence: RwLock<Presence>,
    pub(super) reply_topic: String,
    /// The current connection's sender, while connected.
    pub(super) client: RwLock<Option<Sender>>,
    pub(super) connected: AtomicBool,
    /// Turns true when a connection is ready for calls (subscribed, synced, announced), false
    /// when it is lost; calls and replies made meanwhile wait on it ([`Shared::sender_by`]).
    pub(super) up: tokio::sync::watch::Sender<bool>,
    pub(super) pending: Mutex<Pending>,
    pub(super) next_id: AtomicU64,
    pub(super) counters: Counters,
    /// What calls from other processes being served may hold at once.
    pub(super) serving: Serving,
    /// Announcing again over other words on this process's presence topic: once a second.
    pub(super) reannounce: Throttle,
    /// Warning that a request was refused for where its reply would go: once in 10 s.
    pub(super) refusal_warning: Throttle,
}

/// Lets something happen at most once per period.
#[derive(Default)]
pub(super) struct Throttle(Mutex<Option<std::time::Instant>>);

impl Throttle {
    /// True (and noted) when it did not happen in the last `period`.
    pub(super) fn due(&self, period: std::time::Duration) -> bool {
        let mut last = self.0.locked();
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < period) {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl Shared {
    pub(super) fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.locked()
    }

    /// The connection's sender once it is ready for calls, waiting for a reconnection (the
    /// next node of a cluster taking over, a broker restarting) until `until`; `None` if
    /// none is ready by then or the app stops.
    pub(super) async fn sender_by(&self, until: std::time::Instant) -> Option<Sender> {
        let mut up = self.up.subscribe();
        let gone = || self.gone.load(Ordering::Acquire);
        loop {
            let ready =
                tokio::time::timeout_at(until.into(), up.wait_for(|up| *up || gone())).await;
            if !matches!(ready, Ok(Ok(_))) || gone() {
                return None;
            }
            let client = self.client.read_locked().clone();
            // Lost again between the wake-up and here: wait for the next one.
            if self.connected.load(Ordering::Acquire) {
                if let Some(client) = client {
                    return Some(client);
                }
            }
        }
    }

    /// Marks the connection ready for calls, or lost.
    pub(super) fn set_up(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        self.up.send_replace(up);
    }

    /// The app has stopped: nothing waits for a connection any more.
    pub(super) fn set_stopped(&self) {
        self.gone.store(true, Ordering::Release);
        self.set_up(false);
    }

    /// Completes the call waiting for `id`; false when nobody waits (late or unknown). `kept`
    /// is the callee's word that the trace is kept there, so the caller keeps its part too.
    pub(super) fn complete(&self, id: u64, payload: &[u8], kept: Option<KeepReason>) -> bool {
        let Some(w) = self.pending().remove(&id) else {
            return false;
        };
        if let (Some(keep), Some(reason)) = (w.keep, kept) {
            keep.mark(reason);
        }
        let reply = wire::decode_reply(payload, &w.method);
        if let (Err(RpcError::Unavailable(_)), Some(server)) = (&reply, &w.server) {
            // Busy there: calls pick other instances for a while.
            let now = std::time::Instant::now();
            self.presence.read_locked().busy(server, now);
        }
        let _ = w.tx.send(reply);
        true
    }

    /// Takes out of the pending map the calls `which` picks.
    fn take_pending(&self, which: impl Fn(&Waiting) -> bool) -> Vec<Waiting> {
        let mut pending = self.pending();
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, w)| which(w))
            .map(|(id, _)| *id)
            .collect();
        ids.iter().filter_map(|id| pending.remove(id)).collect()
    }

    /// Fails every call pinned to `server_id`, which is gone: no reply will come.
    pub(super) fn fail_pinned(&self, server_id: &str) {
        let gone = self.take_pending(|w| w.server.as_deref() == Some(server_id));
        for w in gone {
            let _ = w.tx.send(Err(RpcError::Unreachable {
                target: format!("{}@{server_id}", w.method),
                reason: format!("server `{server_id}` left before it replied"),
            }));
        }
    }

    /// Fails every call sent and waiting for its reply (the broker connection was lost: the
    /// reply cannot come); calls not sent yet go on waiting for a connection.
    pub(super) fn fail_sent(&self, reason: &str) {
        fail(self.take_pending(|w| w.sent), reason);
    }

    /// Fails every waiting call, sent or not (the app is stopping).
    pub(super) fn fail_all(&self, reason: &str) {
        let waiting = self.pending().drain().map(|(_, w)| w).collect();
        fail(waiting, reason);
    }

    /// True when some process announced `target` (on its pinned server, if any).
    pub(super) fn announced(&self, target: crate::transport::Target<'_>) -> bool {
        self.presence.read_locked().runs(target)
    }

    /// Why a payload of `len` bytes to `topic` cannot be sent, if it cannot: over
    /// `[broker] max_payload`, or over the packet size the broker accepts (with room for the
    /// topic and properties), which would make the client drop the whole connection.
    pub(super) fn too_big(&self, len: usize, topic: &str) -> Option<String> {
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

    pub(super) fn qos(&self) -> rumqttc::v5::mqttbytes::QoS {
        if self.settings.qos == 0 {
            rumqttc::v5::mqttbytes::QoS::AtMostOnce
        } else {
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce
        }
    }
}

/// Fails `waiting` calls, unreachable for `reason`.
fn fail(waiting: Vec<Waiting>, reason: &str) {
    for w in waiting {
        let _ = w.tx.send(Err(RpcError::Unreachable {
            target: w.method.to_string(),
            reason: reason.to_string(),
        }));
    }
}

/// Removes a call from the pending map when its caller stops waiting.
pub(super) struct PendingGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.pending().remove(&self.id);
    }
}
