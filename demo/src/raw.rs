//! MQTT 3.1.1 and WebSocket client bytes written by hand, for the benchmarks' clients that
//! rumqttc cannot be: hostile ones (half packets, huge frames, stalls) and a lean one whose
//! cost is the same on every transport. Only what those clients send and the one answer they
//! read (the upgrade's status line); the gate decodes with its own code.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the local address `from` (any 127.0.0.x works on Linux
/// without setup), so many connections need not share one address's limits.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// MQTT's remaining length: 7 bits a byte, the high bit for "more".
pub fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return out;
        }
    }
}

/// An MQTT 3.1.1 CONNECT with client id `id`, clean session, keepalive `keepalive` seconds.
pub fn connect_packet(id: &str, keepalive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend(keepalive.to_be_bytes());
    body.extend((id.len() as u16).to_be_bytes());
    body.extend(id.as_bytes());
    let mut p = vec![0x10];
    p.extend(remaining_length(body.len()));
    p.extend(body);
    p
}

/// A PUBLISH (QoS 0) header for `topic` announcing `payload_len` bytes of payload.
pub fn publish_header(topic: &str, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x30];
    p.extend(remaining_length(2 + topic.len() + payload_len));
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic.as_bytes());
    p
}

/// A whole PUBLISH (QoS 0) of `payload` on `topic`.
pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = publish_header(topic, payload.len());
    p.extend(payload);
    p
}

/// The masking key of every client frame here (RFC 6455 wants one per frame; the server
/// must only unmask).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame header: `fin`, `opcode` (RFC 6455 numbers), masked, announcing `len` bytes.
pub fn ws_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match len {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65_536 => {
            out.push(0x80 | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend(n.to_be_bytes());
        }
    }
    out.extend(MASK);
    out
}

/// `data` masked as a client must, starting `phase` bytes into its frame's payload.
pub fn ws_masked(data: &[u8], phase: usize) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[(phase + i) % 4])
        .collect()
}

/// One whole client frame.
pub fn ws_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ws_header(fin, opcode, payload.len() as u64);
    out.extend(ws_masked(payload, 0));
    out
}

/// `payload` in one whole binary client frame: how MQTT travels over WebSocket.
pub fn ws_binary(payload: &[u8]) -> Vec<u8> {
    ws_frame(true, 2, payload)
}

/// An HTTP upgrade request for a WebSocket on `/mqtt` offering the subprotocol `protocol`.
pub fn ws_upgrade(protocol: &str) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
}

/// The status of the HTTP response head read from `s` (101: switched to WebSocket); 0 when
/// the connection ends first or the head is not HTTP. It may read past the head, which is
/// safe after an upgrade: the gate sends nothing before the client's CONNECT.
pub async fn response_status<S: AsyncReadExt + Unpin>(s: &mut S) -> u16 {
    let (mut head, mut buf) = (Vec::<u8>::new(), [0u8; 512]);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Starts an MQTT session over `s`: the WebSocket upgrade first when `ws` (refused unless the
/// answer is 101), then a CONNECT as `id` (in a binary frame over WebSocket). The CONNACK is
/// the caller's to read.
pub async fn start_mqtt<S>(s: &mut S, ws: bool, id: &str, keepalive: u16) -> Result<(), String>
where
    S: AsyncReadExt + AsyncWriteExt + Unpin,
{
    let connect = connect_packet(id, keepalive);
    let io = |e: std::io::Error| e.to_string();
    if !ws {
        return s.write_all(&connect).await.map_err(io);
    }
    s.write_all(ws_upgrade("mqtt").as_bytes())
        .await
        .map_err(io)?;
    match response_status(s).await {
        101 => s.write_all(&ws_binary(&connect)).await.map_err(io),
        0 => Err("the connection ended during the WebSocket upgrade".into()),
        status => Err(format!("WebSocket upgrade refused with HTTP {status}")),
    }
}
