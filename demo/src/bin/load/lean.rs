//! A lean MQTT 3.1.1 client of this benchmark's own (`--client lean`): QoS 0 requests and
//! replies on the request topic over TCP, TLS, WebSocket or WSS, with the few lines of framing
//! each needs and nothing else, so that on a machine the client shares with the gate, a
//! transport's cost to the client does not decide the gate's throughput. rumqttc (the default)
//! is what users run; this one isolates the gate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use demo::raw::{publish, start_mqtt, ws_binary};

use crate::door::{Door, Kind};

/// The keepalive the clients ask for, seconds (a phase is far shorter).
const KEEPALIVE: u16 = 600;

/// A byte stream of any of the transports.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// One lean client connection.
pub struct LeanClient {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next: Mutex<u64>,
}

impl LeanClient {
    /// Connects through `door` as `id` and waits for the CONNACK.
    pub async fn connect(door: &Door, id: &str) -> Result<LeanClient, String> {
        let addr: SocketAddr = format!("{}:{}", door.host, door.port)
            .parse()
            .map_err(|e| format!("{}: {e}", door.host))?;
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut io: Box<dyn Io> = match door.kind {
            Kind::Tcp | Kind::Ws => Box::new(tcp),
            Kind::Tls | Kind::Wss => {
                let config = door.tls.clone().ok_or("TLS needs a certificate to trust")?;
                let name = ServerName::try_from(door.host.clone()).map_err(|e| e.to_string())?;
                let tls = TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Box::new(tls)
            }
        };
        let ws = matches!(door.kind, Kind::Ws | Kind::Wss);
        start_mqtt(&mut io, ws, id, KEEPALIVE).await?;
        let (mut rd, wr) = tokio::io::split(io);
        let mut incoming = Incoming::new(ws);
        match incoming.packet(&mut rd).await? {
            Some((0x20, body)) if body.get(1) == Some(&0) => {}
            other => return Err(format!("no CONNACK: {other:?}")),
        }
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(write_all(wr, rx, ws));
        tokio::spawn(read_replies(rd, incoming, pending.clone()));
        Ok(LeanClient {
            tx,
            pending,
            next: Mutex::new(0),
        })
    }

    /// Publishes `body` on `handler/<msgid>` (QoS 0) and waits for the reply on that topic.
    pub async fn request(&self, handler: &str, body: &[u8]) -> Result<Value, String> {
        let msgid = {
            let mut n = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let topic = format!("{handler}/{msgid}");
        let p = publish(&topic, body);
        let (done, reply) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.clone(), done);
        self.tx.send(p).await.map_err(|_| "connection closed")?;
        match tokio::time::timeout(Duration::from_secs(10), reply).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err("connection closed".into()),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&topic);
                Err(format!("no reply on {topic}"))
            }
        }
    }
}

/// Writes what is queued, several packets in one write (one frame over WebSocket); once the
/// client is dropped, a DISCONNECT, and the connection is closed.
async fn write_all<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Vec<u8>>, ws: bool) {
    let mut batch = Vec::new();
    while let Some(p) = rx.recv().await {
        batch.clear();
        batch.extend(p);
        while let Ok(p) = rx.try_recv() {
            batch.extend(p);
        }
        let out = if ws {
            ws_binary(&batch)
        } else {
            std::mem::take(&mut batch)
        };
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
    let disconnect = [0xe0, 0];
    let out = if ws {
        ws_binary(&disconnect)
    } else {
        disconnect.to_vec()
    };
    let _ = wr.write_all(&out).await;
    let _ = wr.shutdown().await;
}

/// Hands each reply to its waiting request.
async fn read_replies<R: AsyncRead + Unpin>(mut rd: R, mut incoming: Incoming, pending: Pending) {
    while let Ok(Some((kind, body))) = incoming.packet(&mut rd).await {
        if kind & 0xf0 != 0x30 || body.len() < 2 {
            continue;
        }
        let len = u16::from_be_bytes([body[0], body[1]]) as usize;
        let Some(topic) = body
            .get(2..2 + len)
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            continue;
        };
        let waiter = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
        if let Some(w) = waiter {
            let value = serde_json::from_slice(&body[2 + len..]).unwrap_or(Value::Null);
            let _ = w.send(value);
        }
    }
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// MQTT packets out of the bytes read, unwrapped from WebSocket frames first when `ws`.
struct Incoming {
    ws: bool,
    raw: BytesMut,
    mqtt: BytesMut,
}

impl Incoming {
    fn new(ws: bool) -> Incoming {
        Incoming {
            ws,
            raw: BytesMut::with_capacity(8192),
            mqtt: BytesMut::with_capacity(8192),
        }
    }

    /// The next packet: its first byte and its body; `None` at the end of the stream.
    async fn packet<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<(u8, BytesMut)>, String> {
        loop {
            if let Some(p) = self.mqtt_packet() {
                return Ok(Some(p));
            }
            if self.ws && self.unframe()? {
                continue;
            }
            let into = if self.ws {
                &mut self.raw
            } else {
                &mut self.mqtt
            };
            into.reserve(8192);
            if rd.read_buf(into).await.map_err(|e| e.to_string())? == 0 {
                return Ok(None);
            }
        }
    }

    /// One whole MQTT packet from the front of `mqtt`, if there is one.
    fn mqtt_packet(&mut self) -> Option<(u8, BytesMut)> {
        let (mut len, mut shift, mut i) = (0usize, 0, 1);
        loop {
            let b = *self.mqtt.get(i)?;
            len |= usize::from(b & 0x7f) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if self.mqtt.len() < i + len {
            return None;
        }
        let kind = self.mqtt[0];
        self.mqtt.advance(i);
        Some((kind, self.mqtt.split_to(len)))
    }

    /// Moves one whole frame's payload from `raw` to `mqtt`; false when none is whole yet.
    fn unframe(&mut self) -> Result<bool, String> {
        let r = &self.raw;
        if r.len() < 2 {
            return Ok(false);
        }
        if r[0] & 0x0f == 0x8 {
            return Err("the gate closed the WebSocket".into());
        }
        let (len, head) = match r[1] & 0x7f {
            126 if r.len() >= 4 => (u16::from_be_bytes([r[2], r[3]]) as usize, 4),
            127 if r.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&r[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => return Ok(false),
            n => (usize::from(n), 2),
        };
        if r.len() < head + len {
            return Ok(false);
        }
        let data = r[0] & 0x0f == 0x2 || r[0] & 0x0f == 0x0;
        self.raw.advance(head);
        let payload = self.raw.split_to(len);
        if data {
            self.mqtt.put_slice(&payload);
        }
        Ok(true)
    }
}
