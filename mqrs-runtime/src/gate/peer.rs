//! What a connection shares with the gate ([`Peer`]): its session (facts, no trace) and its
//! bounded outgoing queue, through which requests, handlers and other processes reach the client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqrs_base::sync::Locked;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::sync::{mpsc, Notify};

use crate::red::{Kind, Red, Series};
use crate::session::Session;

/// Longest a reply waits for room in a client's full outgoing queue before the client counts
/// as not reading (and is closed).
pub(super) const SLOW_READER_WAIT: Duration = Duration::from_secs(10);

/// The state a connection shares with the gate: its session (facts, no trace) and its outgoing
/// queue. Each request takes a clone of the session: two reference counts, no copied strings.
pub(crate) struct Peer {
    pub(crate) data: Mutex<Session>,
    pub(super) tx: mpsc::Sender<Packet>,
    pub(super) next_pkid: Mutex<u16>,
    /// Payload bytes queued for the client and not yet written to its socket.
    pub(super) queued: Arc<AtomicUsize>,
    /// Most bytes that may wait for the client (`max_outgoing_bytes`).
    pub(super) max_queued: usize,
    /// Wakes the reader loop to close a client that does not read its replies.
    pub(super) slow: Notify,
    /// Wakes the reader loop to close a client the app kicked.
    pub(super) kicked: Notify,
    /// Its requests, whatever is sampled, when the gate keeps them.
    pub(super) history: Option<Arc<mqrs_base::history::ConnLog>>,
    /// The series of the route it asked for last (most clients repeat theirs), so counting a
    /// request seldom looks one up.
    pub(super) route: Mutex<Option<Box<LastRoute>>>,
}

/// A connection's last route and its series.
pub(super) struct LastRoute {
    module: Box<str>,
    handler: Box<str>,
    series: Arc<Series>,
}

impl Peer {
    /// Runs `f` on `service`'s (the gate's) SERVER series of `module/handler`, kept for this
    /// connection's next request to the same route.
    pub(super) fn route_series<R>(
        &self,
        red: &Red,
        service: &str,
        (module, handler): (&str, &str),
        f: impl FnOnce(&Series) -> R,
    ) -> R {
        let mut last = self.route.locked();
        if let Some(l) = last.as_deref() {
            if *l.module == *module && *l.handler == *handler {
                return f(&l.series);
            }
        }
        let series = red.series(Kind::Server, service, (module, handler), "gate ");
        let r = f(&series);
        *last = Some(Box::new(LastRoute {
            module: module.into(),
            handler: handler.into(),
            series,
        }));
        r
    }

    /// A fresh copy of the connection's session, with no trace context.
    pub(crate) fn session(&self) -> Session {
        self.data.locked().clone()
    }

    /// Queues a publish to the client; waits while the queue is full. False when the client is
    /// gone and the publish had nowhere to go.
    pub(crate) async fn publish(
        &self,
        topic: String,
        qos: QoS,
        payload: impl Into<bytes::Bytes>,
    ) -> bool {
        let payload = payload.into();
        let size = payload.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > self.max_queued {
            // The client asks faster than it reads: it is closed rather than buffered for.
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.slow.notify_one();
            return false;
        }
        let mut p = Publish::from_bytes(topic, qos, payload);
        if qos != QoS::AtMostOnce {
            let mut id = self.next_pkid.locked();
            *id = if *id == u16::MAX { 1 } else { *id + 1 };
            p.pkid = *id;
        }
        // A closed queue means the client is gone.
        self.queue(Packet::Publish(p), SLOW_READER_WAIT).await
    }

    /// Queues a packet for the client, waiting at most `wait` while its queue is full; a
    /// client whose queue stays full that long does not read, and is closed. False when the
    /// packet was not queued.
    pub(super) async fn queue(&self, p: Packet, wait: Duration) -> bool {
        match self.tx.send_timeout(p, wait).await {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.slow.notify_one();
                false
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    }
}
