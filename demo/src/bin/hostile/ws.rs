//! Attacks on the gate's WebSocket listener (oversized and tiny frames, handshakes stalled or
//! refused, text frames) and on its TLS listener (stalled handshakes), and the count of the
//! connections the gate closed meanwhile ([`Closed`]). Frames are written here by hand, masked
//! as a client's must be, so the bench needs no WebSocket crate of its own.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use demo::raw::{
    connect_packet, publish_header, response_status, ws_frame, ws_header, ws_masked, ws_upgrade,
};

use super::{join, raw_from, Start, Target};

/// The first bytes of a TLS record holding a ClientHello that announces 512 bytes: its record
/// header, handshake header, version and the start of its random.
const HELLO_START: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5e, 0x11, 0xa7, 0x02,
];

/// Numbers the MQTT client ids of the attacks' connections.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Connections the gate closed during an attack, for the attacks that count them.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    counting: AtomicBool,
    n: AtomicU64,
}

impl Closed {
    /// Says the running attack counts the connections the gate closes.
    fn counting(&self) {
        self.counting.store(true, Ordering::Relaxed);
    }

    /// One more connection closed by the gate.
    fn one(&self) {
        self.n.fetch_add(1, Ordering::Relaxed);
    }

    /// The count as the table shows it: `-` for an attack that does not count.
    pub(crate) fn shown(&self) -> String {
        match self.counting.load(Ordering::Relaxed) {
            true => self.n.load(Ordering::Relaxed).to_string(),
            false => "-".into(),
        }
    }
}

/// What one connection of an attack does after it is open.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// WebSocket; one binary frame announcing 1 GiB, a CONNECT and a 1 MB PUBLISH trickled in.
    Oversized,
    /// WebSocket; a CONNECT, then PINGREQs as fast as it can, one byte per binary frame.
    TinyFrames,
    /// As `TinyFrames`, one byte per continuation frame of a message that never ends.
    TinyFragments,
    /// Half an HTTP upgrade request, then nothing.
    HalfHandshake,
    /// An upgrade request offering only the subprotocol `chat`.
    OtherProtocol,
    /// WebSocket; a CONNECT in a text frame.
    Text,
    /// TLS; the first bytes of a ClientHello, then nothing.
    PartialHello,
    /// TLS port; nothing at all.
    Silent,
}

/// How one connection of an attack ended.
enum End {
    /// The gate closed it (its reads ended or failed, or a write failed).
    Closed,
    /// The attack ended first.
    Stopped,
    /// It could not be opened (or its WebSocket handshake was not accepted).
    Failed,
}

/// A fresh MQTT client id starting with `prefix`.
fn client_id(prefix: &str) -> String {
    format!("{prefix}{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A WebSocket to `addr` from `from`, its handshake (subprotocol `mqtt`) done.
async fn upgraded(from: IpAddr, addr: &str) -> Option<TcpStream> {
    let mut s = raw_from(from, addr).await?;
    s.write_all(ws_upgrade("mqtt").as_bytes()).await.ok()?;
    let status = tokio::time::timeout(Duration::from_secs(5), response_status(&mut s)).await;
    (status.ok()? == 101).then_some(s)
}

/// Writes all of `bytes` to `w`: whether it could, or `None` when the attack ended first.
async fn send<W: AsyncWrite + Unpin>(t: &Target, w: &mut W, bytes: &[u8]) -> Option<bool> {
    let mut write = std::pin::pin!(w.write_all(bytes));
    loop {
        tokio::select! {
            r = &mut write => return Some(r.is_ok()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if !t.running() {
                    return None;
                }
            }
        }
    }
}

/// Holds `s`, writing `trickle`'s bytes every its period when there is one, until the gate
/// closes it or the attack ends; what it reads is dropped.
async fn hold(t: &Target, s: &mut TcpStream, trickle: Option<(&[u8], Duration)>) -> End {
    let (mut buf, mut next) = ([0u8; 1024], Instant::now());
    while t.running() {
        if let Some((bytes, every)) = trickle.filter(|_| Instant::now() >= next) {
            next += every;
            match send(t, &mut *s, bytes).await {
                None => return End::Stopped,
                Some(false) => return End::Closed,
                Some(true) => {}
            }
        }
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return End::Closed;
        }
    }
    End::Stopped
}

/// A WebSocket that sends a CONNECT, then PINGREQs one byte per frame (continuation frames of
/// one endless message when `fragments`) as fast as the gate reads them; its replies are read
/// and dropped.
async fn tiny_frames(t: &Target, from: IpAddr, addr: &str, fragments: bool) -> End {
    let Some(s) = upgraded(from, addr).await else {
        return End::Failed;
    };
    let (mut rd, mut wr) = s.into_split();
    let mut opening = ws_frame(true, 2, &connect_packet(&client_id("tiny"), 0));
    if fragments {
        // An empty binary frame that is not final: continuation frames come next.
        opening.extend(ws_frame(false, 2, &[]));
    }
    let (opcode, fin) = if fragments { (0, false) } else { (2, true) };
    let batch: Vec<u8> = [0xc0u8, 0x00]
        .repeat(512)
        .iter()
        .flat_map(|b| ws_frame(fin, opcode, &[*b]))
        .collect();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let mut next = &opening;
    let end = loop {
        if reader.is_finished() {
            break End::Closed;
        }
        match send(t, &mut wr, next).await {
            None => break End::Stopped,
            Some(false) => break End::Closed,
            Some(true) => next = &batch,
        }
    };
    reader.abort();
    end
}

/// Opens one connection of `kind` from `from` to `addr` and holds it until it ends.
async fn session(t: &Target, kind: Kind, from: IpAddr, addr: &str) -> End {
    let (first, trickle): (Vec<u8>, Option<(Vec<u8>, Duration)>) = match kind {
        Kind::TinyFrames | Kind::TinyFragments => {
            return tiny_frames(t, from, addr, matches!(kind, Kind::TinyFragments)).await
        }
        Kind::Oversized => {
            let mut mqtt = connect_packet(&client_id("huge"), 0);
            mqtt.extend(publish_header("Chat/HD_JoinChat/1", 1_000_000));
            let mut first = ws_header(true, 2, 1 << 30);
            first.extend(ws_masked(&mqtt, 0));
            let trickle = ws_masked(&[b'x'; 1024], mqtt.len());
            (first, Some((trickle, Duration::from_millis(100))))
        }
        Kind::HalfHandshake => (
            b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n".to_vec(),
            None,
        ),
        Kind::OtherProtocol => (ws_upgrade("chat").into_bytes(), None),
        Kind::Text => (
            ws_frame(true, 1, &connect_packet(&client_id("text"), 0)),
            None,
        ),
        Kind::PartialHello => (HELLO_START.to_vec(), None),
        Kind::Silent => (Vec::new(), None),
    };
    let open = match kind {
        Kind::Oversized | Kind::Text => upgraded(from, addr).await,
        _ => raw_from(from, addr).await,
    };
    let Some(mut s) = open else {
        return End::Failed;
    };
    if !first.is_empty() && s.write_all(&first).await.is_err() {
        return End::Closed;
    }
    let trickle = trickle.as_ref().map(|(b, every)| (&b[..], *every));
    hold(t, &mut s, trickle).await
}

/// Keeps `n` connections of `kind` from `from` to `addr` (`None`: that listener is off),
/// opening another whenever one ends, until the attack ends; counts those the gate closed.
async fn churn(t: Target, addr: Option<String>, from: [u8; 4], n: usize, kind: Kind) {
    let Some(addr) = addr else {
        eprintln!("{kind:?}: the demo does not listen where this attack goes");
        return;
    };
    t.closed.counting();
    let from = IpAddr::from(from);
    let tasks = (0..n).map(|_| {
        let (t, addr) = (t.clone(), addr.clone());
        tokio::spawn(async move {
            while t.running() {
                match session(&t, kind, from, &addr).await {
                    End::Closed => t.closed.one(),
                    End::Failed => tokio::time::sleep(Duration::from_millis(200)).await,
                    End::Stopped => {}
                }
            }
        })
    });
    join(tasks.collect()).await;
}

/// The attacks on the gate's WebSocket listener, by name. Each source address keeps under the
/// gate's 256 connections per IP address.
pub(crate) fn attacks() -> Vec<(&'static str, Start)> {
    vec![
        (
            "200 WebSockets: a 1 GiB frame, MQTT trickled at 10 KiB/s",
            |t| {
                let ws = t.ws.clone();
                Box::pin(churn(t, ws, [127, 0, 0, 10], 200, Kind::Oversized))
            },
        ),
        ("32 WebSockets: PINGREQs flooded in 1-byte frames", |t| {
            Box::pin(async move {
                let ws = t.ws.clone();
                let frames = churn(t.clone(), ws.clone(), [127, 0, 0, 11], 16, Kind::TinyFrames);
                let fragments = churn(t, ws, [127, 0, 0, 12], 16, Kind::TinyFragments);
                tokio::join!(frames, fragments);
            })
        }),
        ("200 WebSocket handshakes stalled halfway", |t| {
            let ws = t.ws.clone();
            Box::pin(churn(t, ws, [127, 0, 0, 13], 200, Kind::HalfHandshake))
        }),
        (
            "8 loops: WebSocket handshakes offering only subprotocol chat",
            |t| {
                let ws = t.ws.clone();
                Box::pin(churn(t, ws, [127, 0, 0, 14], 8, Kind::OtherProtocol))
            },
        ),
        (
            "8 loops: WebSockets sending a CONNECT in a text frame",
            |t| {
                let ws = t.ws.clone();
                Box::pin(churn(t, ws, [127, 0, 0, 15], 8, Kind::Text))
            },
        ),
    ]
}

/// The attacks on the gate's TLS listener, by name; their demo runs with TLS on.
pub(crate) fn tls_attacks() -> Vec<(&'static str, Start)> {
    vec![(
        "300 TLS connections: 150 partial ClientHellos, 150 silent",
        |t| {
            Box::pin(async move {
                let tls = t.tls.clone();
                let hello = churn(
                    t.clone(),
                    tls.clone(),
                    [127, 0, 0, 16],
                    150,
                    Kind::PartialHello,
                );
                let silent = churn(t, tls, [127, 0, 0, 17], 150, Kind::Silent);
                tokio::join!(hello, silent);
            })
        },
    )]
}
