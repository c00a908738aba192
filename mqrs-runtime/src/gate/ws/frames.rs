//! The byte stream inside a WebSocket connection (RFC 6455 §5), as the connection state machine
//! reads and writes it: reading yields the payload bytes of binary frames as they arrive (an
//! MQTT packet may span frames, a frame may hold several packets), never a whole frame
//! buffered first, so the gate's byte budgets and packet timeout hold exactly as over TCP;
//! writing sends each write as one binary frame. Pings are answered, a close is echoed and
//! read as the end of the stream; anything else a client may not send (text, unmasked or
//! reserved frames, a control frame split or over 125 bytes) fails the read with a
//! [`Violation`], after a close frame saying why. Frame headers are read and written by
//! `tungstenite`'s codec.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Encoded frames waiting to be written before a write waits for them: about one batch of
/// the gate's writer.
const OUT_HIGH: usize = 64 * 1024;

/// Most bytes of answers to control frames (pongs) that may wait for a client that does not
/// read them; past it the client is flooding pings.
const OUT_CONTROL_MAX: usize = 1 << 20;

/// Bytes read from the socket at a time while the client keeps the socket full.
const READ_CHUNK: usize = 8 * 1024;

/// Bytes read at a time otherwise: an idle connection keeps only this much room.
const READ_SMALL: usize = 1024;

/// A client broke the WebSocket protocol; carried inside the `io::Error` a read fails with.
#[derive(Debug, thiserror::Error)]
#[error("WebSocket protocol violation: {0}")]
pub(crate) struct Violation(pub(crate) &'static str);

/// The violation an I/O error carries, if it is one.
pub(crate) fn violation(e: &io::Error) -> Option<&'static str> {
    e.get_ref()?.downcast_ref::<Violation>().map(|v| v.0)
}

/// Where the reader is in the frame sequence.
#[derive(Debug)]
enum Reading {
    /// Between frames.
    Header,
    /// Inside a data frame's payload: `left` bytes to come, unmasked with `mask` from `phase`.
    Payload {
        left: u64,
        mask: [u8; 4],
        phase: usize,
    },
    /// A control frame, answered once its `len` bytes are all in.
    Control {
        op: Control,
        len: usize,
        mask: [u8; 4],
    },
}

/// MQTT's bytes over an open WebSocket connection.
#[derive(Debug)]
pub(crate) struct WsStream<S> {
    io: S,
    /// Bytes received and not yet decoded.
    raw: BytesMut,
    reading: Reading,
    /// Inside a binary message split over frames: continuation frames come next.
    in_message: bool,
    /// The client sent its close frame, or its end of the stream.
    peer_closed: bool,
    /// Frames encoded and not yet written.
    out: BytesMut,
    close_sent: bool,
    /// The last read filled all the room it had: read in larger chunks.
    busy: bool,
}

/// What one decoding step found.
enum Step {
    /// Payload bytes were put in the caller's buffer.
    Data,
    /// The stream ended (a close frame).
    End,
    /// More bytes from the socket are needed.
    More,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// The stream over `io`, whose handshake is done; `early` holds bytes the client sent
    /// right after its handshake request.
    pub(crate) fn new(io: S, early: BytesMut) -> Self {
        WsStream {
            io,
            raw: early,
            reading: Reading::Header,
            in_message: false,
            peer_closed: false,
            out: BytesMut::new(),
            close_sent: false,
            busy: false,
        }
    }

    /// Decodes what `raw` holds until payload bytes reach `buf`, the stream ends, or more
    /// bytes are needed.
    fn decode(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<Step> {
        loop {
            match &mut self.reading {
                Reading::Payload { left, mask, phase } => {
                    if self.raw.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = self
                        .raw
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX))
                        .min(buf.remaining());
                    // Unmasked in place and stepped over: splitting it off would make the
                    // buffer shared, an allocation per frame.
                    unmask(&mut self.raw[..n], *mask, *phase);
                    buf.put_slice(&self.raw[..n]);
                    self.raw.advance(n);
                    *phase = (*phase + n) % 4;
                    *left -= n as u64;
                    if *left == 0 {
                        self.reading = Reading::Header;
                    }
                    return Ok(Step::Data);
                }
                Reading::Header => {
                    let mut cur = Cursor::new(&self.raw[..]);
                    let (header, len) = match FrameHeader::parse(&mut cur) {
                        Ok(Some(h)) => h,
                        Ok(None) => return Ok(Step::More),
                        Err(tungstenite::Error::Protocol(ProtocolError::InvalidOpcode(_))) => {
                            return Err(self.fail(1002, "a reserved opcode"))
                        }
                        Err(_) => return Err(self.fail(1002, "a malformed frame header")),
                    };
                    let used = usize::try_from(cur.position()).unwrap_or(usize::MAX);
                    self.raw.advance(used.min(self.raw.len()));
                    self.reading = self.next_reading(&header, len)?;
                }
                Reading::Control { op, len, mask } => {
                    if self.raw.len() < *len {
                        return Ok(Step::More);
                    }
                    let (op, mask) = (*op, *mask);
                    let mut payload = self.raw.split_to(*len);
                    unmask(&mut payload, mask, 0);
                    self.reading = Reading::Header;
                    match op {
                        Control::Ping => {
                            if self.out.len() > OUT_CONTROL_MAX {
                                return Err(self.fail(1008, "pings sent faster than pongs read"));
                            }
                            encode(&mut self.out, OpCode::Control(Control::Pong), &payload);
                        }
                        Control::Close => {
                            self.peer_closed = true;
                            // Echo its status code (RFC 6455 §5.5.1), then the stream ends.
                            let code = payload.get(..2).unwrap_or(&[]).to_vec();
                            self.queue_close(&code);
                            return Ok(Step::End);
                        }
                        Control::Pong | Control::Reserved(_) => {}
                    }
                }
            }
        }
    }

    /// What comes after a frame header: its payload, a control frame, or a violation.
    fn next_reading(&mut self, h: &FrameHeader, len: u64) -> io::Result<Reading> {
        let Some(mask) = h.mask else {
            return Err(self.fail(1002, "an unmasked frame from a client"));
        };
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return Err(self.fail(1002, "reserved bits set (no extension was agreed)"));
        }
        match h.opcode {
            OpCode::Data(Data::Binary) if self.in_message => {
                Err(self.fail(1002, "a new message inside a fragmented one"))
            }
            OpCode::Data(Data::Continue) if !self.in_message => {
                Err(self.fail(1002, "a continuation frame outside a message"))
            }
            OpCode::Data(Data::Binary | Data::Continue) => {
                self.in_message = !h.is_final;
                Ok(if len == 0 {
                    Reading::Header
                } else {
                    Reading::Payload {
                        left: len,
                        mask,
                        phase: 0,
                    }
                })
            }
            OpCode::Data(Data::Text) => {
                Err(self.fail(1003, "a text frame (MQTT travels in binary frames)"))
            }
            // The header parser refuses these first; kept so every opcode has an answer.
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                Err(self.fail(1002, "a reserved opcode"))
            }
            OpCode::Control(op) => {
                if !h.is_final || len > 125 {
                    return Err(self.fail(1002, "a control frame split or over 125 bytes"));
                }
                Ok(Reading::Control {
                    op,
                    len: len as usize,
                    mask,
                })
            }
        }
    }

    /// Queues a close frame with `code` and says why the read fails.
    fn fail(&mut self, code: u16, why: &'static str) -> io::Error {
        self.queue_close(&code.to_be_bytes());
        io::Error::new(io::ErrorKind::InvalidData, Violation(why))
    }

    fn queue_close(&mut self, payload: &[u8]) {
        if !self.close_sent {
            self.close_sent = true;
            encode(&mut self.out, OpCode::Control(Control::Close), payload);
        }
    }

    /// Writes queued frames until none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        if self.out.capacity() > OUT_HIGH {
            // An idle connection keeps no large buffer.
            self.out = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// Appends one unmasked, final frame (as a server sends) to `out`.
fn encode(out: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut head = [0u8; 14];
    let mut w = Cursor::new(&mut head[..]);
    // Ten bytes at most without a mask: the 14-byte array always has room.
    if header.format(payload.len() as u64, &mut w).is_ok() {
        let n = usize::try_from(w.position()).unwrap_or(0);
        out.extend_from_slice(&head[..n]);
        out.extend_from_slice(payload);
    }
}

/// Unmasks `data` in place, `phase` bytes into the frame's payload.
fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(phase + i) % 4];
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.decode(buf) {
                Ok(Step::Data | Step::End) => {
                    // A pong or a close echo goes out if the socket takes it now; else with
                    // the next write.
                    let _ = this.poll_drain(cx);
                    return Poll::Ready(Ok(()));
                }
                Ok(Step::More) => {}
                Err(e) => {
                    let _ = this.poll_drain(cx);
                    return Poll::Ready(Err(e));
                }
            }
            if !this.out.is_empty() {
                // Pongs: written when the socket takes them (an error shows on the next write).
                let _ = this.poll_drain(cx);
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // Straight into `raw`'s spare room: no zeroed buffer, no second copy. Small room
            // unless the client fills it, and a large one given back once empty.
            if this.raw.is_empty() && this.raw.capacity() > OUT_HIGH {
                this.raw = BytesMut::new();
            }
            this.raw
                .reserve(if this.busy { READ_CHUNK } else { READ_SMALL });
            let room = this.raw.capacity() - this.raw.len();
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.raw
            ))?;
            this.busy = n == room;
            if n == 0 {
                this.peer_closed = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() >= OUT_HIGH {
            ready!(this.poll_drain(cx))?;
        }
        encode(&mut this.out, OpCode::Data(Data::Binary), data);
        // Written now if the socket takes it; what it does not take waits for the next write
        // or the flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.queue_close(&1000u16.to_be_bytes());
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client frame: masked, with `fin` and `opcode` (RFC 6455 numbers).
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// A server frame as the client reads it: (fin, opcode, payload).
    fn read_frame(bytes: &[u8]) -> Option<(bool, u8, Vec<u8>, usize)> {
        let (b0, b1) = (*bytes.first()?, *bytes.get(1)?);
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (len, at) = match b1 & 0x7f {
            126 => (
                u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = bytes.get(at..at + len)?.to_vec();
        Some((b0 & 0x80 != 0, b0 & 0x0f, payload, at + len))
    }

    async fn pair(early: &[u8]) -> (WsStream<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (WsStream::new(a, BytesMut::from(early)), b)
    }

    #[tokio::test]
    async fn payloads_of_split_and_joined_frames_read_as_one_stream() {
        let mut bytes = frame(false, 2, b"hel");
        bytes.extend(frame(false, 0, b""));
        bytes.extend(frame(true, 0, b"lo "));
        bytes.extend(frame(true, 9, b"ping!"));
        bytes.extend(frame(true, 2, &[b'w'; 70_000]));
        let (mut ws, mut client) = pair(&bytes[..5]).await;
        client.write_all(&bytes[5..]).await.expect("write");
        let mut got = vec![0u8; 6 + 70_000];
        ws.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..6], b"hello ");
        assert!(got[6..].iter().all(|&b| b == b'w'));
        // The ping was answered with a pong carrying its payload.
        let mut back = vec![0u8; 64];
        let n = client.read(&mut back).await.expect("pong");
        assert_eq!(
            read_frame(&back[..n]).map(|f| (f.1, f.2)),
            Some((0xA, b"ping!".to_vec()))
        );
    }

    #[tokio::test]
    async fn writes_are_binary_frames_and_a_close_is_echoed_then_reads_end() {
        let (mut ws, mut client) = pair(b"").await;
        ws.write_all(&[7u8; 300]).await.expect("write");
        ws.flush().await.expect("flush");
        let mut back = vec![0u8; 400];
        let n = client.read(&mut back).await.expect("frame");
        let (fin, op, payload, used) = read_frame(&back[..n]).expect("one frame");
        assert!(fin && op == 2 && payload == vec![7u8; 300] && used == n);
        client
            .write_all(&frame(true, 8, &1000u16.to_be_bytes()))
            .await
            .expect("close");
        let mut rest = Vec::new();
        assert_eq!(ws.read_to_end(&mut rest).await.expect("clean end"), 0);
        let n = client.read(&mut back).await.expect("close echo");
        assert_eq!(
            read_frame(&back[..n]).map(|f| (f.1, f.2)),
            Some((0x8, 1000u16.to_be_bytes().to_vec()))
        );
    }

    #[tokio::test]
    async fn what_a_client_may_not_send_fails_the_read_with_the_reason_and_a_close() {
        let unmasked = vec![0x82, 0x01, b'x'];
        let cases: [(Vec<u8>, &str, u16); 6] = [
            (frame(true, 1, b"{}"), "a text frame", 1003),
            (unmasked, "unmasked", 1002),
            (frame(true, 0, b"x"), "continuation frame outside", 1002),
            (frame(true, 3, b"x"), "reserved opcode", 1002),
            (frame(false, 9, b"x"), "control frame split", 1002),
            (frame(true, 9, &[0u8; 126]), "over 125 bytes", 1002),
        ];
        for (bytes, want, code) in cases {
            let (mut ws, mut client) = pair(&bytes).await;
            let mut buf = [0u8; 16];
            let e = ws.read(&mut buf).await.expect_err(want);
            let why = violation(&e).expect("a violation");
            assert!(why.contains(want), "{why} / {want}");
            let mut back = [0u8; 16];
            let n = client.read(&mut back).await.expect("close frame");
            assert_eq!(
                read_frame(&back[..n]).map(|f| (f.1, f.2)),
                Some((0x8, code.to_be_bytes().to_vec())),
                "{want}"
            );
        }
        // A new message inside a fragmented one.
        let mut bytes = frame(false, 2, b"a");
        bytes.extend(frame(true, 2, b"b"));
        let (mut ws, _client) = pair(&bytes).await;
        let mut buf = [0u8; 1];
        ws.read_exact(&mut buf).await.expect("first byte");
        let e = ws.read(&mut buf).await.expect_err("violation");
        assert_eq!(violation(&e), Some("a new message inside a fragmented one"));
    }

    #[tokio::test]
    async fn a_client_that_pings_and_never_reads_is_cut_off() {
        let (a, _b) = tokio::io::duplex(64);
        let mut ws = WsStream::new(a, BytesMut::new());
        let ping = frame(true, 9, &[1u8; 125]);
        let mut flood = BytesMut::new();
        while flood.len() < 2 * OUT_CONTROL_MAX {
            flood.extend_from_slice(&ping);
        }
        ws.raw = flood;
        let mut buf = [0u8; 16];
        let e = ws.read(&mut buf).await.expect_err("flood");
        assert_eq!(violation(&e), Some("pings sent faster than pongs read"));
    }
}
