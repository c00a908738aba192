//! The write side of the broker connection: whoever sends a packet encodes it into one shared
//! buffer, and one task writes that buffer to the socket. Every packet that is ready by the
//! time the previous write finished goes out in the next one, so under load many requests
//! and replies share a `write` (rumqttc's event loop flushed after each). Bounded in bytes:
//! past the bound, [`Sender::try_publish`] refuses and [`Sender::publish`] waits. QoS 1
//! publishes take a packet id within the broker's Receive Maximum.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use mqrs_base::sync::Locked;
use rumqttc::v5::mqttbytes::v5::{
    Disconnect, DisconnectReasonCode, Filter, PingReq, PubAck, Publish, PublishProperties,
    Subscribe, Unsubscribe,
};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

/// Why a packet was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The connection is closed (or closing).
    #[error("the broker connection is closed: {0}")]
    Closed(String),
    /// The send buffer is at its bound.
    #[error("the send queue to the broker is full")]
    Full,
    /// The packet is larger than the broker accepts.
    #[error("the packet is larger than the broker accepts ({0})")]
    Encode(String),
}

/// Whether a packet takes a packet id.
#[derive(Clone, Copy)]
enum Id {
    /// It has none (QoS 0 publish, acknowledgements, ping, disconnect).
    None,
    /// One until its acknowledgement (subscribe, unsubscribe).
    Packet,
    /// One, and a place in the broker's Receive Maximum, until its PUBACK.
    Qos1,
}

/// What the buffer's users share, behind one lock.
struct State {
    /// Encoded packets not yet handed to the writer.
    buf: BytesMut,
    /// Set once the connection is closed (why), or closing (`DISCONNECT` queued).
    closed: Option<String>,
    /// The writer ends once the buffer is empty.
    closing: bool,
    /// Packet ids in use (QoS 1 publishes, subscriptions), and where the search starts.
    ids: HashSet<u16>,
    next_id: u16,
    /// The packet ids of unacknowledged QoS 1 publishes.
    qos1: HashSet<u16>,
}

/// The shared send buffer of one broker connection.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Packets to write (or the end), for the writer.
    ready: Notify,
    /// The buffer went below its bound (or closed), for waiting senders.
    room: Notify,
    /// Bytes the buffer holds before publishes are refused or wait.
    limit: usize,
    /// The buffer closed, for the reader.
    gone: Notify,
    /// The broker's Maximum Packet Size; 0 when it named none.
    max_packet: u32,
    /// QoS 1 publishes the broker may still take unacknowledged (its Receive Maximum).
    inflight: Semaphore,
}

impl Outbox {
    /// A buffer of at most about `limit` bytes, for a broker that takes packets of at most
    /// `max_packet` bytes (0: any) and `receive_max` unacknowledged QoS 1 publishes.
    pub(crate) fn new(limit: usize, max_packet: u32, receive_max: u16) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(16 * 1024),
                closed: None,
                closing: false,
                ids: HashSet::new(),
                next_id: 1,
                qos1: HashSet::new(),
            }),
            ready: Notify::new(),
            room: Notify::new(),
            gone: Notify::new(),
            limit,
            max_packet,
            inflight: Semaphore::new(usize::from(receive_max.max(1))),
        }
    }

    /// Appends one packet, encoded by `encode` given its packet id (0 when `id` is
    /// [`Id::None`]); `bounded` refuses it when the buffer is at its bound.
    fn push(
        &self,
        bounded: bool,
        id: Id,
        encode: impl FnOnce(&mut BytesMut, u16) -> Result<usize, String>,
    ) -> Result<(), SendError> {
        let mut st = self.state.locked();
        if let Some(why) = &st.closed {
            return Err(SendError::Closed(why.clone()));
        }
        if st.closing {
            return Err(SendError::Closed("it is closing".into()));
        }
        if bounded && st.buf.len() >= self.limit {
            return Err(SendError::Full);
        }
        let was_empty = st.buf.is_empty();
        let pkid = match id {
            Id::None => 0,
            Id::Packet => st.take_id().ok_or(SendError::Full)?,
            Id::Qos1 => {
                let pkid = st.take_id().ok_or(SendError::Full)?;
                st.qos1.insert(pkid);
                pkid
            }
        };
        let start = st.buf.len();
        if let Err(e) = encode(&mut st.buf, pkid) {
            st.buf.truncate(start);
            if pkid != 0 {
                st.ids.remove(&pkid);
                st.qos1.remove(&pkid);
            }
            return Err(SendError::Encode(e));
        }
        drop(st);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The broker acknowledged the QoS 1 publish `id`: its id and its place are free again.
    pub(crate) fn acknowledged(&self, id: u16) {
        let mut st = self.state.locked();
        st.ids.remove(&id);
        if st.qos1.remove(&id) {
            self.inflight.add_permits(1);
        }
    }

    /// Closes the buffer: senders are refused (and waiting ones woken) with `why`.
    pub(crate) fn close(&self, why: &str) {
        let mut st = self.state.locked();
        if st.closed.is_none() {
            st.closed = Some(why.to_string());
        }
        drop(st);
        self.ready.notify_one();
        self.room.notify_waiters();
        self.gone.notify_waiters();
        self.inflight.close();
    }

    /// Resolves once the buffer is closed (a write failed, or the connection was dropped).
    pub(crate) async fn failed(&self) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.state.locked().closed.is_some() {
                return;
            }
            gone.await;
        }
    }

    /// Why the buffer closed ("" while open).
    pub(crate) fn why_closed(&self) -> String {
        self.state.locked().closed.clone().unwrap_or_default()
    }

    /// Queues a `PUBACK` for the broker's QoS 1 publish `id`.
    pub(crate) fn puback(&self, id: u16) -> Result<(), SendError> {
        self.push(false, Id::None, |b, _| {
            PubAck::new(id, None).write(b).map_err(|e| e.to_string())
        })
    }

    /// Queues a `PINGREQ`.
    pub(crate) fn ping(&self) -> Result<(), SendError> {
        self.push(false, Id::None, |b, _| {
            PingReq::write(b).map_err(|e| e.to_string())
        })
    }

    /// Writes the buffer to `wr` until the connection closes or, once closing, the buffer is
    /// empty; then shuts `wr` down. A write error closes the buffer and is returned.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&self, mut wr: W) -> std::io::Result<()> {
        let mut chunk = BytesMut::with_capacity(16 * 1024);
        loop {
            {
                let mut st = self.state.locked();
                if st.buf.is_empty() {
                    if st.closed.is_some() || st.closing {
                        break;
                    }
                } else {
                    std::mem::swap(&mut st.buf, &mut chunk);
                }
            }
            if chunk.is_empty() {
                self.ready.notified().await;
                continue;
            }
            self.room.notify_waiters();
            if let Err(e) = wr.write_all(&chunk).await {
                self.close(&format!("cannot write to the broker: {e}"));
                return Err(e);
            }
            chunk.clear();
            // A burst of large packets does not keep its buffer for the connection's life.
            if chunk.capacity() > 1 << 20 {
                chunk = BytesMut::with_capacity(16 * 1024);
            }
        }
        wr.shutdown().await
    }
}

impl State {
    /// A packet id not in use (1..=65535), if any is free.
    fn take_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if self.ids.insert(id) {
                return Some(id);
            }
        }
        None
    }
}

/// A handle that queues packets on one broker connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Sender(pub(super) std::sync::Arc<Outbox>);

impl Sender {
    fn encode_publish(
        &self,
        publish: &Publish,
        buf: &mut BytesMut,
        id: u16,
    ) -> Result<usize, String> {
        let max = self.0.max_packet;
        if max > 0 && publish.size() > max as usize {
            return Err(format!(
                "{} bytes; the broker takes at most {max}",
                publish.size()
            ));
        }
        if id == 0 {
            publish.write(buf).map_err(|e| e.to_string())
        } else {
            let mut p = publish.clone();
            p.pkid = id;
            p.write(buf).map_err(|e| e.to_string())
        }
    }

    /// Queues a publish without waiting: refused when the buffer is full, or (QoS 1) when the
    /// broker holds as many unacknowledged publishes as it takes.
    pub(crate) fn try_publish(
        &self,
        topic: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        properties: Option<PublishProperties>,
    ) -> Result<(), SendError> {
        let p = publish(topic, qos, retain, payload, properties);
        self.queue(&p, false)
    }

    /// Queues a publish, waiting while the buffer is full (or, QoS 1, for the broker's
    /// acknowledgements).
    pub(crate) async fn publish(
        &self,
        topic: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        properties: Option<PublishProperties>,
    ) -> Result<(), SendError> {
        self.send(&publish(topic, qos, retain, payload, properties))
            .await
    }

    /// Queues the publish `p` as [`Sender::publish`] does; `p` stays the caller's, to send
    /// again on another connection if this one is closed.
    pub(crate) async fn send(&self, p: &Publish) -> Result<(), SendError> {
        let qos = p.qos;
        if qos != QoS::AtMostOnce {
            let permit = self
                .0
                .inflight
                .acquire()
                .await
                .map_err(|_| SendError::Closed("the connection closed".into()))?;
            permit.forget();
        }
        let qos1 = qos != QoS::AtMostOnce;
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.queue(p, qos1) {
                Err(SendError::Full) => room.await,
                done => {
                    if qos1 && done.is_err() {
                        self.0.inflight.add_permits(1);
                    }
                    return done;
                }
            }
        }
    }

    /// Queues `p`; `holding` when a QoS 1 publish's inflight place is already taken (a
    /// place taken here is given back when the publish is not queued).
    fn queue(&self, p: &Publish, holding: bool) -> Result<(), SendError> {
        let qos1 = p.qos != QoS::AtMostOnce;
        if qos1 && !holding {
            match self.0.inflight.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(tokio::sync::TryAcquireError::Closed) => {
                    return Err(SendError::Closed("the connection closed".into()))
                }
                Err(tokio::sync::TryAcquireError::NoPermits) => return Err(SendError::Full),
            }
        }
        let id = if qos1 { Id::Qos1 } else { Id::None };
        let queued = self
            .0
            .push(true, id, |buf, id| self.encode_publish(p, buf, id));
        if qos1 && !holding && queued.is_err() {
            self.0.inflight.add_permits(1);
        }
        queued
    }

    /// Queues one `SUBSCRIBE` of `filters`.
    pub(crate) fn subscribe_many(&self, filters: Vec<Filter>) -> Result<(), SendError> {
        let sub = Subscribe::new_many(filters, None);
        self.0.push(false, Id::Packet, move |b, id| {
            let mut sub = sub;
            sub.pkid = id;
            sub.write(b).map_err(|e| e.to_string())
        })
    }

    /// Queues one `UNSUBSCRIBE` of `filter`.
    pub(crate) fn unsubscribe(&self, filter: String) -> Result<(), SendError> {
        let unsub = Unsubscribe::new(filter, None);
        self.0.push(false, Id::Packet, move |b, id| {
            let mut unsub = unsub;
            unsub.pkid = id;
            unsub.write(b).map_err(|e| e.to_string())
        })
    }

    /// Queues a `DISCONNECT` (normal), after which nothing more is taken and the writer ends
    /// once everything queued is written.
    pub(crate) fn disconnect(&self) -> Result<(), SendError> {
        self.0.push(false, Id::None, |b, _| {
            Disconnect::new(DisconnectReasonCode::NormalDisconnection)
                .write(b)
                .map_err(|e| e.to_string())
        })?;
        self.0.state.locked().closing = true;
        self.0.ready.notify_one();
        Ok(())
    }
}

/// A publish packet (its packet id is given when it is queued).
pub(crate) fn publish(
    topic: impl Into<Bytes>,
    qos: QoS,
    retain: bool,
    payload: impl Into<Bytes>,
    properties: Option<PublishProperties>,
) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        pkid: 0,
        payload: payload.into(),
        properties,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use super::*;

    /// A socket that records each write it is given, and takes them only when let.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<std::sync::Mutex<Vec<usize>>>,
        open: Arc<std::sync::atomic::AtomicBool>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if !self.open.load(std::sync::atomic::Ordering::SeqCst) {
                // Not yet: asked again soon.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.writes.locked().push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn send(sender: &Sender, n: usize) -> Result<(), SendError> {
        let topic = format!("mqrs/call/M/f{n}");
        sender.try_publish(topic, QoS::AtMostOnce, false, vec![b'x'; 40], None)
    }

    #[tokio::test]
    async fn publishes_queued_during_a_write_go_out_in_the_next_one() {
        let outbox = Arc::new(Outbox::new(1 << 20, 0, 10));
        let sender = Sender(outbox.clone());
        let socket = Recorder::default();
        let writer = {
            let (outbox, socket) = (outbox.clone(), socket.clone());
            tokio::spawn(async move { outbox.write_to(socket).await })
        };
        send(&sender, 0).expect("queued");
        // The writer took the first publish and waits on the socket; 50 more queue up.
        tokio::task::yield_now().await;
        for n in 1..=50 {
            send(&sender, n).expect("queued");
        }
        socket.open.store(true, std::sync::atomic::Ordering::SeqCst);
        sender.disconnect().expect("queued");
        writer.await.expect("joins").expect("writes");
        let writes = socket.writes.locked().clone();
        assert_eq!(
            writes.len(),
            2,
            "one write for the first, one for the rest: {writes:?}"
        );
        assert!(writes[1] > 50 * 40, "{writes:?}");
        assert!(matches!(send(&sender, 99), Err(SendError::Closed(_))));
    }

    #[tokio::test]
    async fn the_buffer_bound_refuses_or_holds_publishes_until_the_writer_takes_them() {
        let outbox = Arc::new(Outbox::new(100, 0, 10));
        let sender = Sender(outbox.clone());
        send(&sender, 0).expect("under the bound");
        send(&sender, 1).expect("under the bound");
        assert_eq!(send(&sender, 2), Err(SendError::Full));
        let waiting = {
            let sender = sender.clone();
            tokio::spawn(async move {
                sender
                    .publish("t", QoS::AtMostOnce, false, vec![0u8; 4], None)
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a publish over the bound waits");
        let socket = Recorder::default();
        socket.open.store(true, std::sync::atomic::Ordering::SeqCst);
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.write_to(socket).await })
        };
        waiting
            .await
            .expect("joins")
            .expect("queued once there is room");
        outbox.close("done");
        writer.await.expect("joins").expect("writes");
    }

    #[tokio::test]
    async fn qos_1_publishes_stay_within_the_brokers_receive_maximum() {
        let outbox = Arc::new(Outbox::new(1 << 20, 0, 2));
        let sender = Sender(outbox.clone());
        let qos1 =
            |sender: &Sender| sender.try_publish("t", QoS::AtLeastOnce, false, vec![0u8; 4], None);
        qos1(&sender).expect("first");
        qos1(&sender).expect("second");
        assert_eq!(
            qos1(&sender),
            Err(SendError::Full),
            "a third waits for a PUBACK"
        );
        // Packet ids 1 and 2 are in use; acknowledging one frees its place.
        outbox.acknowledged(1);
        qos1(&sender).expect("after the PUBACK");
        assert_eq!(outbox.state.locked().qos1.len(), 2);
        // A SUBACK's id is not a publish's place.
        sender
            .subscribe_many(vec![Filter::new("a", QoS::AtMostOnce)])
            .expect("sub");
        outbox.acknowledged(4);
        assert_eq!(qos1(&sender), Err(SendError::Full));
    }

    #[test]
    fn a_publish_larger_than_the_broker_takes_is_refused_not_sent() {
        let outbox = Arc::new(Outbox::new(1 << 20, 100, 10));
        let sender = Sender(outbox.clone());
        let big = sender.try_publish("t", QoS::AtMostOnce, false, vec![0u8; 200], None);
        assert!(matches!(big, Err(SendError::Encode(_))), "{big:?}");
        assert!(outbox.state.locked().buf.is_empty());
        send(&sender, 1).expect("a small one still goes");
    }
}
