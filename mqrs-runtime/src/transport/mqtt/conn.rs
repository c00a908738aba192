//! One MQTT 5 connection to the broker, spoken directly over TCP with rumqttc's packet codec:
//! `CONNECT`/`CONNACK` with a deadline, then packets read in batches by whoever polls (the
//! link task), QoS 1 publishes acknowledged, a `PINGREQ` every keep-alive period, and writes
//! coalesced by the [`Outbox`]'s writer task.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, LastWill, Packet,
};
use rumqttc::v5::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::outbox::{Outbox, Sender};

/// Why the connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The broker sent bytes that are not MQTT 5, or a packet over the size we accept.
    #[error("malformed packet from the broker: {0}")]
    Codec(String),
    /// The broker refused the connection.
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// Something did not happen in time.
    #[error("{0}")]
    Timeout(&'static str),
    /// The broker closed the connection (or sent `DISCONNECT`).
    #[error("{0}")]
    Closed(String),
}

/// What a connection asks the broker for.
pub(crate) struct Options {
    /// MQTT client id.
    pub(crate) client_id: String,
    /// Keep-alive period: a `PINGREQ` goes out this often, and a broker that stays silent
    /// for a whole period after one is given up.
    pub(crate) keep_alive: Duration,
    /// Longest wait for the TCP connection and the `CONNACK`.
    pub(crate) connect_timeout: Duration,
    /// Largest packet we take (announced to the broker as Maximum Packet Size).
    pub(crate) max_incoming: u32,
    /// The last will.
    pub(crate) will: Option<LastWill>,
    /// Bytes queued to send before publishes wait (or are refused).
    pub(crate) send_limit: usize,
}

/// A connected broker session: poll it for incoming packets; send through [`Connection::sender`].
pub(crate) struct Connection {
    rd: OwnedReadHalf,
    buf: BytesMut,
    out: Arc<Outbox>,
    writer: JoinHandle<()>,
    keep_alive: Duration,
    next_ping: Instant,
    /// A `PINGREQ` went out and nothing has been heard since.
    awaiting: bool,
    max_incoming: u32,
}

impl Connection {
    /// Connects to `host:port`, sends `CONNECT` and waits for a successful `CONNACK`.
    pub(crate) async fn open(
        host: &str,
        port: u16,
        opts: &Options,
    ) -> Result<(Connection, ConnAck), ConnError> {
        tokio::time::timeout(opts.connect_timeout, Self::handshake(host, port, opts))
            .await
            .map_err(|_| ConnError::Timeout("the broker did not accept the connection in time"))?
    }

    async fn handshake(
        host: &str,
        port: u16,
        opts: &Options,
    ) -> Result<(Connection, ConnAck), ConnError> {
        let tcp = TcpStream::connect((host, port)).await?;
        // Without it a request/reply pair stalls on delayed ACKs (about 40 ms each way).
        tcp.set_nodelay(true)?;
        let (mut rd, mut wr) = tcp.into_split();
        let keep_alive = u16::try_from(opts.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let mut props = ConnectProperties::new();
        props.max_packet_size = Some(opts.max_incoming);
        let connect = Packet::Connect(
            Connect {
                keep_alive,
                client_id: opts.client_id.clone(),
                clean_start: true,
                properties: Some(props),
            },
            opts.will.clone(),
            None,
        );
        let mut out = BytesMut::new();
        connect
            .write(&mut out, None)
            .map_err(|e| ConnError::Codec(e.to_string()))?;
        wr.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let ack = loop {
            match Packet::read(&mut buf, Some(opts.max_incoming)) {
                Ok(Packet::ConnAck(ack)) => break ack,
                Ok(other) => {
                    return Err(ConnError::Codec(format!("expected CONNACK, got {other:?}")))
                }
                Err(CodecError::InsufficientBytes(_)) => {
                    if rd.read_buf(&mut buf).await? == 0 {
                        return Err(ConnError::Closed(
                            "the broker closed the connection before its CONNACK".into(),
                        ));
                    }
                }
                Err(e) => return Err(ConnError::Codec(e.to_string())),
            }
        };
        if ack.code != ConnectReturnCode::Success {
            return Err(ConnError::Refused(ack.code));
        }
        let props = ack.properties.as_ref();
        let out = Arc::new(Outbox::new(
            opts.send_limit,
            props.and_then(|p| p.max_packet_size).unwrap_or(0),
            props.and_then(|p| p.receive_max).unwrap_or(u16::MAX),
        ));
        let writing = out.clone();
        let writer = tokio::spawn(async move {
            if let Err(e) = writing.write_to(wr).await {
                tracing::debug!(error = %e, "writing to the broker failed");
            }
        });
        // The broker may name a shorter keep-alive (Server Keep Alive).
        let keep_alive = props
            .and_then(|p| p.server_keep_alive)
            .map_or(opts.keep_alive, |s| Duration::from_secs(u64::from(s)));
        let conn = Connection {
            rd,
            buf,
            out,
            writer,
            keep_alive,
            next_ping: Instant::now() + keep_alive,
            awaiting: false,
            max_incoming: opts.max_incoming,
        };
        Ok((conn, ack))
    }

    /// A handle to send on this connection.
    pub(crate) fn sender(&self) -> Sender {
        Sender(self.out.clone())
    }

    /// The next packet from the broker. QoS 1 publishes are acknowledged here, and pings are
    /// sent and answered here; `PUBACK`s free their packet ids before they are returned.
    /// Cancel-safe: a packet partly read stays buffered for the next call.
    pub(crate) async fn poll(&mut self) -> Result<Packet, ConnError> {
        loop {
            match Packet::read(&mut self.buf, Some(self.max_incoming)) {
                Ok(p) => {
                    self.awaiting = false;
                    match &p {
                        Packet::Publish(publish) if publish.qos == QoS::AtLeastOnce => {
                            let _ = self.out.puback(publish.pkid);
                        }
                        Packet::PubAck(ack) => self.out.acknowledged(ack.pkid),
                        Packet::SubAck(ack) => self.out.acknowledged(ack.pkid),
                        Packet::UnsubAck(ack) => self.out.acknowledged(ack.pkid),
                        Packet::PingResp(_) => continue,
                        Packet::Disconnect(d) => {
                            return Err(ConnError::Closed(format!(
                                "the broker disconnected: {:?}",
                                d.reason_code
                            )))
                        }
                        _ => {}
                    }
                    return Ok(p);
                }
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(ConnError::Codec(e.to_string())),
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            tokio::select! {
                read = self.rd.read_buf(&mut self.buf) => {
                    if read? == 0 {
                        return Err(ConnError::Closed("the broker closed the connection".into()));
                    }
                }
                _ = tokio::time::sleep_until(self.next_ping) => {
                    if self.awaiting {
                        return Err(ConnError::Timeout("the broker did not answer a ping"));
                    }
                    self.out.ping().map_err(|e| ConnError::Closed(e.to_string()))?;
                    self.awaiting = true;
                    self.next_ping = Instant::now() + self.keep_alive;
                }
                _ = self.out.failed() => {
                    return Err(ConnError::Closed(self.out.why_closed()));
                }
            }
        }
    }

    /// Sends `DISCONNECT` after everything queued and waits up to `wait` for it to be written.
    pub(crate) async fn close(mut self, wait: Duration) {
        if self.sender().disconnect().is_ok() {
            let _ = tokio::time::timeout(wait, &mut self.writer).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.out.close("the connection was dropped");
        self.writer.abort();
    }
}
