//! Raw MQTT bytes over a bare TCP socket, for tests that must control every byte and moment.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// An MQTT 3.1.1 CONNECT, client id `r`, clean session, keepalive 60 s.
pub const CONNECT_V4: &[u8] = &[
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'r',
];

/// An MQTT 3.1.1 CONNECT, client id `k`, clean session, keepalive `secs`.
pub fn connect_with_keepalive(secs: u16) -> Vec<u8> {
    let [hi, lo] = secs.to_be_bytes();
    vec![
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, hi, lo, 0, 1, b'k',
    ]
}

/// The CONNACK the gate sends on success.
pub const CONNACK_OK: &[u8] = &[0x20, 2, 0, 0];

/// PINGREQ.
pub const PINGREQ: &[u8] = &[0xC0, 0x00];

/// Reads until the peer closes; returns what it sent. Fails if it stays open past `limit`.
pub async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {limit:?}; got {out:?}"),
        }
    }
}

/// Reads exactly `n` bytes, failing the test if the connection closes or `limit` passes first.
pub async fn read_exact(s: &mut TcpStream, n: usize, limit: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => buf,
        Ok(Err(e)) => panic!("connection closed while waiting for {n} bytes: {e}"),
        Err(_) => panic!("no {n} bytes within {limit:?}"),
    }
}
