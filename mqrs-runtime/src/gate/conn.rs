//! One client connection: the MQTT 3.1.1 state machine (CONNECT first, within a timeout; sizes
//! checked from the fixed header; keepalive), a bounded outgoing queue drained by a writer task,
//! and a bound on requests in flight. Generic over the byte stream, so WebSocket can reuse it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use mqrs_base::budget::{Budget, Share};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{check, Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::peer::{Peer, SLOW_READER_WAIT};
use super::state::Gate;
use crate::session::{Session, SessionData};

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT packet: {0}")]
    Codec(#[from] CodecError),
    #[error("connection closed in the middle of a packet")]
    TruncatedPacket,
    #[error("MQTT 5 CONNECT")]
    Mqtt5,
    #[error("MQTT protocol violation: {0}")]
    Protocol(super::rules::Violation),
    #[error("a packet started arriving and stopped")]
    Stalled,
    #[error("the client reads its replies too slowly")]
    SlowReader,
}

/// Reads one packet; `Ok(None)` on a clean end of stream between packets. With `first`, an
/// MQTT 5 CONNECT is recognised from its protocol level before the 3.1.1 decoder sees it.
///
/// Once part of a packet is in, the rest must arrive within `rest_within` of its first byte,
/// whatever it waits for meanwhile: the socket or the budget below.
///
/// A packet larger than [`LARGE_PACKET`] takes its size from the gate's budget for arriving
/// bytes before they are buffered (held until it is read whole), so many clients each sending
/// most of a large packet cannot together take more memory than that budget, and cannot take
/// the budget small requests use; a client that holds its share and stalls loses it at its
/// packet's deadline, so the clients waiting behind it get their turn.
async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
    first: bool,
    rest_within: Duration,
    total: &Budget,
) -> Result<Option<Packet>, ConnError> {
    let mut receiving: Option<Share> = None;
    // When the packet's first byte was in hand: bytes left over from the last read count
    // from now.
    let mut due = (!buf.is_empty()).then(|| Instant::now() + rest_within);
    loop {
        match check(buf.iter(), max) {
            Ok(header) => {
                let frame = &buf[..header.frame_length()];
                if first && connect_level(frame) == Some(5) {
                    return Err(ConnError::Mqtt5);
                }
                super::rules::check_frame(frame).map_err(ConnError::Protocol)?;
                return Ok(Some(Packet::read(buf, max)?));
            }
            Err(CodecError::InsufficientBytes(n)) => {
                let frame = buf.len() + n.min(max);
                if frame > LARGE_PACKET && receiving.is_none() {
                    let due = due.unwrap_or_else(|| Instant::now() + rest_within);
                    // The budget is never closed; if it were, read on without it.
                    receiving = tokio::time::timeout_at(due, total.take(frame))
                        .await
                        .map_err(|_| ConnError::Stalled)?;
                }
                // Room for what the packet still needs, and never less than a small read's
                // worth: splitting packets off the buffer's front eats its room, and reads of a
                // few bytes cost a system call each (and one more to find the socket empty).
                buf.reserve(n.min(max).max(IDLE_BUFFER));
            }
            Err(e) => return Err(e.into()),
        }
        let n = match due {
            None => rd.read_buf(buf).await?,
            Some(due) => tokio::time::timeout_at(due, rd.read_buf(buf))
                .await
                .map_err(|_| ConnError::Stalled)??,
        };
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ConnError::TruncatedPacket)
            };
        }
        due.get_or_insert_with(|| Instant::now() + rest_within);
    }
}

/// The protocol level of a complete CONNECT frame named "MQTT", if it is one.
fn connect_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    // Fixed header: one type byte, then 1 to 4 bytes of remaining length.
    let mut i = 1;
    while frame.get(i)? & 0x80 != 0 && i < 4 {
        i += 1;
    }
    let vh = i + 1;
    (frame.get(vh..vh + 6)? == [0, 4, b'M', b'Q', b'T', b'T'])
        .then(|| frame.get(vh + 6).copied())?
}

/// Writes queued packets until every sender is gone; returns the write half, still open, so
/// the caller decides how to close.
async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Packet>,
    max: usize,
    queued: Arc<AtomicUsize>,
) -> Option<W> {
    // Small to start, and given back after a burst: idle clients are most of a gate's.
    let mut out = BytesMut::with_capacity(IDLE_BUFFER);
    while let Some(p) = rx.recv().await {
        let mut next = Some(p);
        let mut written = 0;
        // Batch whatever is already queued into one write.
        while let Some(p) = next {
            if let Packet::Publish(p) = &p {
                written += p.payload.len();
            }
            if let Err(e) = p.write(&mut out, max) {
                tracing::warn!(error = %e, "gate: cannot encode an outgoing packet; dropped");
            }
            next = if out.len() < 64 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        // A client that stops reading blocks the write: after a while it is given up.
        // Flushed too: a WebSocket or TLS stream may hold what it was given.
        let written_out = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        match tokio::time::timeout(SLOW_READER_WAIT, written_out).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
        queued.fetch_sub(written, Ordering::Relaxed);
        out.clear();
        if out.capacity() > KEPT_BUFFER {
            out = BytesMut::with_capacity(IDLE_BUFFER);
        }
    }
    Some(wr)
}

/// What a connection's read and write buffers start with, in bytes.
const IDLE_BUFFER: usize = 512;

/// Buffers grown past this for a large packet or a burst are given back once empty.
const KEPT_BUFFER: usize = 16 * 1024;

/// How long a stopping gate (or a kick) waits after a connection's last reply before closing it: some
/// clients (rumqttc among them) lose a packet that arrives together with the close.
const CLOSE_LINGER: Duration = Duration::from_millis(200);

/// Packets larger than this count against the gate's byte budget while they arrive.
const LARGE_PACKET: usize = 64 * 1024;

/// Requests of one connection waiting for their turn when they are handled in order; a client
/// that sends more waits (its socket is not read) until one is done.
const ORDERED_QUEUE: usize = 64;

/// A request's bytes, held against its connection's budget and the gate's until dropped.
struct Held {
    _own: Share,
    _total: Share,
    bytes: u64,
    counters: Arc<super::GateCounters>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counters
            .request_bytes_held
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Held {
    /// Waits for `bytes` of both budgets (a request larger than a budget takes all of it);
    /// `None` when a budget is closed.
    async fn take(
        own: &Budget,
        total: &Budget,
        bytes: usize,
        counters: &Arc<super::GateCounters>,
    ) -> Option<Held> {
        let own_p = own.take(bytes.max(1)).await?;
        let total_p = total.take(bytes.max(1)).await?;
        let bytes = bytes as u64;
        counters
            .request_bytes_held
            .fetch_add(bytes, Ordering::Relaxed);
        Some(Held {
            _own: own_p,
            _total: total_p,
            bytes,
            counters: counters.clone(),
        })
    }
}

/// Serves one client until it disconnects, breaks the protocol, goes silent, or the app stops.
pub(crate) async fn serve<S>(
    gate: Arc<Gate>,
    stream: S,
    network: &'static str,
    remote: std::net::SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let cfg = &gate.cfg;
    let peer = remote.to_string();
    let rest_within = Duration::from_millis(cfg.packet_timeout_ms.max(1));
    let arriving = &gate.arriving_bytes;
    let (mut rd, wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(IDLE_BUFFER);
    let first = tokio::select! {
        // A stopping gate does not wait for connections that have not even sent CONNECT.
        _ = shutdown.changed() => return Ok(()),
        // Boxed, as the admission below: a connection's future stays the size of its
        // steady state, not of the handshake it made once (it is held per idle client).
        r = Box::pin(tokio::time::timeout(
            Duration::from_millis(cfg.connect_timeout_ms),
            read_packet(&mut rd, &mut buf, cfg.max_packet_size, true, rest_within, arriving),
        )) => r,
    };
    let connect = match first {
        Ok(Ok(Some(Packet::Connect(c)))) if c.protocol == Protocol::V4 => {
            if c.client_id.is_empty() && !c.clean_session {
                // MQTT 3.1.1 §3.1.3.1: a zero-length client id needs a clean session.
                tracing::debug!(%peer, "gate: empty client id without clean session; refused");
                refuse(wr, &connack_v4(ConnectReturnCode::BadClientId)).await;
                return Ok(());
            }
            c
        }
        Ok(Ok(Some(Packet::Connect(_)))) | Ok(Err(ConnError::Mqtt5)) => {
            // An MQTT 5 client reads only a v5 CONNACK: reason 0x84, unsupported protocol version.
            tracing::debug!(%peer, "gate: MQTT 5 CONNECT refused; the gate speaks MQTT 3.1.1");
            refuse(wr, &[0x20, 0x03, 0x00, 0x84, 0x00]).await;
            return Ok(());
        }
        Ok(Err(ConnError::Codec(CodecError::InvalidProtocolLevel(_))))
        | Ok(Err(ConnError::Codec(CodecError::InvalidProtocol))) => {
            tracing::debug!(%peer, "gate: client asked for a protocol other than MQTT 3.1.1");
            refuse(wr, &connack_v4(ConnectReturnCode::RefusedProtocolVersion)).await;
            return Ok(());
        }
        Ok(Ok(Some(other))) => {
            tracing::debug!(%peer, packet = packet_name(&other), "gate: first packet is not CONNECT; closing");
            return Ok(());
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            tracing::debug!(%peer, "gate: no CONNECT within the connect timeout; closing");
            return Ok(());
        }
    };

    let sessionid = gate.new_session_id();
    let session = Session::new(SessionData {
        sessionid: sessionid.clone(),
        network: network.to_string(),
        ip: peer.clone(),
        serverid: gate.server_id.clone(),
        ..Default::default()
    });
    let session = tokio::select! {
        _ = shutdown.changed() => return Ok(()),
        r = Box::pin(super::connect::admit(&gate, &connect, remote, network, session)) => match r {
            Ok(s) => s,
            Err(code) => {
                refuse(wr, &connack_v4(code)).await;
                return Ok(());
            }
        },
    };
    let (tx, rx) = mpsc::channel(cfg.outgoing_queue.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let writer_task = tokio::spawn(writer(wr, rx, gate.max_outgoing(), queued.clone()));
    let history = gate.history.as_ref().map(|h| {
        let log = h.open(&sessionid);
        if !session.userid().is_empty() {
            h.set_user(&sessionid, session.userid());
        }
        log
    });
    let conn = Arc::new(Peer {
        history,
        route: Mutex::new(None),
        data: Mutex::new(session),
        tx: tx.clone(),
        next_pkid: Mutex::new(0),
        queued,
        max_queued: cfg.max_outgoing_bytes.max(1),
        slow: Notify::new(),
        kicked: Notify::new(),
    });
    gate.register(&sessionid, conn.clone());
    tracing::debug!(%peer, %sessionid, client_id = %connect.client_id, "gate: client connected");
    let _ = tx
        .send(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))
        .await;

    // Silence allowed: 1.5 times the keepalive the client asked for, never more than the
    // gate's own idle limit (which also covers keepalive 0, "no keepalive").
    let max_idle = Duration::from_millis(cfg.max_idle_ms.max(1));
    let keepalive = match connect.keep_alive {
        0 => max_idle,
        k => Duration::from_millis(u64::from(k) * 1500).min(max_idle),
    };
    // One request at a time (the default): a worker handles them in arrival order, so a
    // player's `HD_Login` is done before the `HD_JoinChat` sent right after it. More: each
    // request runs on its own, up to `max_inflight` at once, in no particular order.
    let ordered = (cfg.max_inflight <= 1).then(|| {
        let (req_tx, mut req_rx) = mpsc::channel::<(Publish, Held)>(ORDERED_QUEUE);
        let (g, c) = (gate.clone(), conn.clone());
        gate.spawn_contained("requests", async move {
            while let Some((p, held)) = req_rx.recv().await {
                // Boxed: the worker waits idle most of its life, small.
                Box::pin(super::request::handle(&g, &c, p)).await;
                drop(held);
            }
            // The connection is gone and its last request handled: modules hear of it now,
            // after everything the client sent.
            g.disconnected(&c.session());
        });
        req_tx
    });
    // Bytes of this connection's requests received and not yet handled.
    let own_bytes = Budget::new(cfg.max_request_bytes);
    let inflight = Budget::new(cfg.max_inflight);
    // QoS 2 packet ids received and not yet released; at most 65,535 entries by construction.
    let mut qos2_pending: HashSet<u16> = HashSet::new();
    let mut stopping = false;
    let result = loop {
        if buf.is_empty() && buf.capacity() > KEPT_BUFFER {
            buf = BytesMut::with_capacity(IDLE_BUFFER);
        }
        let read = read_packet(
            &mut rd,
            &mut buf,
            cfg.max_packet_size,
            false,
            rest_within,
            arriving,
        );
        let packet = tokio::select! {
            i = interrupted(&mut shutdown, &conn) => break i.end(&mut stopping),
            r = tokio::time::timeout(keepalive, read) => r.unwrap_or(Ok(None)),
        };
        let packet = match packet {
            Ok(Some(p)) => p,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let reply = match packet {
            Packet::Publish(p) => {
                if let Err(why) = super::rules::check_topic(&p.topic) {
                    break Err(ConnError::Protocol(why));
                }
                let ack = match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(p.pkid))),
                };
                // QoS 2 is exactly once: a packet id seen and not yet released by PUBREL is a
                // resend, acknowledged again but not handled again.
                let resend = p.qos == QoS::ExactlyOnce && !qos2_pending.insert(p.pkid);
                if let Some(ack) = ack {
                    if !conn.queue(ack, rest_within).await {
                        break Err(ConnError::SlowReader);
                    }
                }
                if resend {
                    continue;
                }
                // The request's bytes count against this connection's budget and the gate's
                // until it is handled; while either is spent, this client is not read.
                let cost = p.payload.len() + p.topic.len();
                let held = tokio::select! {
                    i = interrupted(&mut shutdown, &conn) => break i.end(&mut stopping),
                    h = Held::take(
                        &own_bytes,
                        &gate.request_bytes,
                        cost,
                        &gate.counters,
                    ) => match h {
                        Some(h) => h,
                        None => break Ok(()),
                    },
                };
                if let Some(queue) = &ordered {
                    // Waits while the queue is full: the client is throttled, not buffered.
                    tokio::select! {
                        i = interrupted(&mut shutdown, &conn) => break i.end(&mut stopping),
                        sent = queue.send((p, held)) => if sent.is_err() { break Ok(()) },
                    }
                    continue;
                }
                let permit = tokio::select! {
                    i = interrupted(&mut shutdown, &conn) => break i.end(&mut stopping),
                    p = inflight.take(1) => match p {
                        Some(p) => p,
                        None => break Ok(()),
                    },
                };
                let (g, conn) = (gate.clone(), conn.clone());
                gate.spawn_contained("request", async move {
                    let _permit = (permit, held);
                    super::request::handle(&g, &conn, p).await;
                });
                None
            }
            Packet::PubRel(r) => {
                qos2_pending.remove(&r.pkid);
                Some(Packet::PubComp(PubComp::new(r.pkid)))
            }
            Packet::Subscribe(s) => {
                let codes = s
                    .filters
                    .iter()
                    .map(|f| {
                        SubscribeReasonCode::Success(match f.qos {
                            QoS::AtMostOnce => QoS::AtMostOnce,
                            _ => QoS::AtLeastOnce,
                        })
                    })
                    .collect();
                Some(Packet::SubAck(SubAck::new(s.pkid, codes)))
            }
            Packet::Unsubscribe(u) => Some(Packet::UnsubAck(UnsubAck::new(u.pkid))),
            Packet::PingReq => Some(Packet::PingResp),
            Packet::Disconnect => break Ok(()),
            Packet::Connect(_) => {
                tracing::debug!(%peer, "gate: second CONNECT is a protocol violation; closing");
                break Ok(());
            }
            // Acks for our own QoS 1/2 replies: nothing is retransmitted, so nothing to track.
            _ => None,
        };
        if let Some(r) = reply {
            if !conn.queue(r, rest_within).await {
                break Err(ConnError::SlowReader);
            }
        }
    };
    gate.unregister(&sessionid);
    if let Some(h) = &conn.history {
        h.close(crate::trace::clock::now_ns() / 1_000_000);
    }
    if ordered.is_none() {
        gate.disconnected(&conn.session());
    }
    // The worker finishes what is queued, then lets the connection go.
    drop(ordered);
    drop(tx);
    drop(conn);
    if matches!(result, Err(ConnError::SlowReader)) {
        // Nothing queued for it will be read: close now.
        writer_task.abort();
    }
    Box::pin(close(rd, writer_task, stopping)).await;
    tracing::debug!(%peer, %sessionid, "gate: client disconnected");
    result
}

/// Closes a connection once its writer is done: in-flight requests hold the connection, and
/// the writer ends when the last one finishes. Boxed by the caller, so the connection's
/// future does not carry this state while it serves.
async fn close<R, W>(mut rd: R, writer_task: tokio::task::JoinHandle<Option<W>>, stopping: bool)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Ok(Some(mut wr)) = writer_task.await {
        if stopping {
            // The client closes first if it is quick about it; else the linger ends.
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        let _ = wr.shutdown().await;
    }
}

/// What ends a connection while it waits, other than its client's bytes.
enum Interrupted {
    /// The gate is stopping, or the app kicked the client: what was queued for it (a
    /// farewell message) is still written, and the close lingers so the client reads it.
    Stopping,
    /// The client reads its replies too slowly.
    SlowReader,
}

impl Interrupted {
    /// The connection's result; a stopping one is marked to linger on close.
    fn end(self, stopping: &mut bool) -> Result<(), ConnError> {
        match self {
            Interrupted::Stopping => {
                *stopping = true;
                Ok(())
            }
            Interrupted::SlowReader => Err(ConnError::SlowReader),
        }
    }
}

/// Waits until the gate stops, the client is found reading too slowly, or the app kicks it:
/// every wait of the connection's loop watches the same three.
async fn interrupted(shutdown: &mut watch::Receiver<bool>, conn: &Peer) -> Interrupted {
    tokio::select! {
        _ = shutdown.changed() => Interrupted::Stopping,
        () = conn.slow.notified() => Interrupted::SlowReader,
        () = conn.kicked.notified() => Interrupted::Stopping,
    }
}

/// Answers a CONNECT with a refusing CONNACK and closes.
async fn refuse<W: AsyncWrite + Unpin>(mut wr: W, connack: &[u8]) {
    let _ = wr.write_all(connack).await;
    let _ = wr.shutdown().await;
}

/// An MQTT 3.1.1 CONNACK with `code`.
fn connack_v4(code: ConnectReturnCode) -> BytesMut {
    let mut out = BytesMut::new();
    // Encoding a CONNACK into a growable buffer cannot fail.
    let _ = ConnAck::new(code, false).write(&mut out);
    out
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}
